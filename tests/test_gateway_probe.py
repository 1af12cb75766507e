"""The users' side of the post-promotion check (roles/hello_app/library/hello_app_probe.py), run
as Ansible runs it, against real servers over real sockets.

A release checks what users reach through the Gateway's address with the route's host name, for
a window, and switches back on any failed request. Here the "Gateway" is a local HTTP server, and
an HTTPS one with a certificate for the host name only (as the load balancer serves it from the
certificate map): the probe must connect to the address yet ask for, and verify, the host name.
"""

import json

import pytest

from support.net import HttpServer, free_port
from support.playbooks import ansible
from support.tls import server_certificate

HOST = "hello.example.com"
LIBRARY = "roles/hello_app/library"


class Gateway(HttpServer):
    """A server answering GET /hello/releasecheck, recording each request's Host header and the
    name each TLS handshake asked for; the requests whose numbers are in ``fail_at`` (from 1) are
    answered 502, as a load balancer without a healthy backend answers."""

    def __init__(self, certificate=None):
        self.hosts, self.tls_names, self.fail_at = [], [], set()
        super().__init__(self.respond, certificate, self.tls_names.append)

    def respond(self, request):
        self.hosts.append(request.headers.get("Host"))
        if len(self.hosts) in self.fail_at:
            return 502, b"no healthy upstream"
        return 200, json.dumps({"message": "Hello, releasecheck! Your birthday is in 3 days"}).encode()


def probe_all(tmp_path, cases):
    """Runs the module once per case ({name: arguments}) in one playbook, as a playbook's task runs
    it (the role's library, the configured strategy, locally with the Python that runs Ansible,
    as group_vars/all sets for the inventories' hosts); {name: (whether it failed, its result)}."""
    tasks = []
    for name, args in cases.items():
        arguments = {"path": "/hello/releasecheck", "expect_body": "Hello, releasecheck!", "interval_seconds": 0.1}
        tasks.append({"name": name, "hello_app_probe": {**arguments, **args}, "register": name, "ignore_errors": True})
    results = tmp_path / "results.json"
    tasks.append(
        {
            "name": "Keep the results",
            "ansible.builtin.copy": {
                "content": "{{ {" + ", ".join(f"'{n}': {n}" for n in cases) + "} | to_json }}",
                "dest": str(results),
                "mode": "0600",
            },
        }
    )
    playbook = tmp_path / "probe.yml"
    playbook.write_text(json.dumps([{"name": "Probe", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    run = ansible(
        "ansible-playbook",
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        "ansible_python_interpreter={{ ansible_playbook_python }}",
        playbook,
        env={"ANSIBLE_LIBRARY": LIBRARY},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return {name: (bool(result.get("failed")), result) for name, result in json.loads(results.read_text()).items()}


@pytest.fixture(scope="module")
def probed(ansible, tmp_path_factory):
    """Every case in one run: (gateway or server, failed, result) by case."""
    tmp_path = tmp_path_factory.mktemp("probe")
    certificate = server_certificate(HOST)
    (tmp_path / "ca.pem").write_bytes(certificate.ca)
    healthy, failing_once, tls = Gateway(), Gateway(), Gateway(certificate)
    failing_once.fail_at = {5}
    ca = str(tmp_path / "ca.pem")
    cases = {
        "healthy": (healthy, {"address": healthy.address, "hostname": HOST, "window_seconds": 1}),
        "one_failure": (failing_once, {"address": failing_once.address, "hostname": HOST, "window_seconds": 2}),
        "no_greeting": (
            healthy,
            {"address": healthy.address, "window_seconds": 0.2, "expect_body": "Hello, someoneelse!"},
        ),
        "no_answer": (None, {"address": f"127.0.0.1:{free_port()}", "window_seconds": 0.2, "timeout_seconds": 1}),
        "https": (
            tls,
            {"address": tls.address, "scheme": "https", "hostname": HOST, "ca_path": ca, "window_seconds": 0.5},
        ),
        "https_other_name": (
            tls,
            {
                "address": tls.address,
                "scheme": "https",
                "hostname": "other.example.com",
                "ca_path": ca,
                "window_seconds": 0.2,
            },
        ),
    }
    try:
        results = probe_all(tmp_path, {name: args for name, (_, args) in cases.items()})
        yield {name: (server, *results[name]) for name, (server, _) in cases.items()}
    finally:
        for server in (healthy, failing_once, tls):
            server.close()


def test_a_healthy_path_passes_with_the_host_name(probed):
    gateway, failed, result = probed["healthy"]
    assert not failed, result
    assert result["failures"] == 0
    assert result["requests"] >= 5
    # Every request asked for the route's host name (the healthy server also serves one other case,
    # which sends its address's host).
    assert gateway.hosts.count(HOST) == result["requests"]


def test_one_failed_request_fails_the_check(probed):
    """Any failure counts: a single 502 among many good answers fails the window."""
    gateway, failed, result = probed["one_failure"]
    assert failed
    assert result["failures"] == 1
    assert result["requests"] > 10
    assert "answered 502, expected 200: no healthy upstream" in result["failure_lines"][0]
    assert f"of {result['requests']} requests to http://{HOST} through {gateway.address} failed" in result["msg"]


def test_an_answer_without_the_greeting_fails(probed):
    _, failed, result = probed["no_greeting"]
    assert failed
    assert "without 'Hello, someoneelse!'" in result["failure_lines"][0]


def test_no_answer_fails(probed):
    _, failed, result = probed["no_answer"]
    assert failed
    assert "no answer: ConnectionRefusedError" in result["failure_lines"][0]


def test_https_asks_for_and_verifies_the_host_name(probed):
    """Over HTTPS the probe connects to the address, sends the host name in the handshake and
    verifies the certificate against it: a certificate for the host name only passes, and the
    same server fails when the probe is given another name."""
    server, failed, result = probed["https"]
    assert not failed, result
    assert HOST in server.tls_names
    _, failed, result = probed["https_other_name"]
    assert failed
    assert "CERTIFICATE_VERIFY_FAILED" in result["failure_lines"][0]
