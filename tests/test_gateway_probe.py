"""The users' side of the post-promotion check (roles/hello_app/library/hello_app_probe.py), run
as Ansible runs it, against real servers over real sockets.

A release checks what users reach through the Gateway's address with the route's host name, for
a window, and switches back on any failed request. Here the "Gateway" is a local HTTP server, and
an HTTPS one with a certificate for the host name only (as the load balancer serves it from the
certificate map): the probe must connect to the address yet ask for, and verify, the host name.
"""

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support.playbooks import ansible
from support.tls import server_certificate

HOST = "hello.example.com"
LIBRARY = "roles/hello_app/library"


class Gateway:
    """A server answering GET /hello/releasecheck, recording each request's Host header and the
    name each TLS handshake asked for; the requests whose numbers are in ``fail_at`` (from 1) are
    answered 502, as a load balancer without a healthy backend answers."""

    def __init__(self, certificate=None, tmp_path=None):
        self.hosts, self.tls_names, self.fail_at = [], [], set()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                gateway.hosts.append(self.headers.get("Host"))
                if len(gateway.hosts) in gateway.fail_at:
                    body, status = b"no healthy upstream", 502
                else:
                    body, status = (
                        json.dumps({"message": "Hello, releasecheck! Your birthday is in 3 days"}).encode(),
                        200,
                    )
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if certificate:
            (tmp_path / "cert.pem").write_bytes(certificate.certificate)
            (tmp_path / "key.pem").write_bytes(certificate.key)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
            context.sni_callback = lambda sock, name, ctx: gateway.tls_names.append(name)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def probe(tmp_path, **args):
    """Runs the module as a playbook's task does (the role's library, the configured strategy);
    returns (whether the task failed, its result)."""
    arguments = {"path": "/hello/releasecheck", "expect_body": "Hello, releasecheck!", "interval_seconds": 0.1, **args}
    result_file = tmp_path / "result.json"
    playbook = tmp_path / "probe.yml"
    play = {
        "name": "Probe",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {"name": "Probe", "hello_app_probe": arguments, "register": "probed", "ignore_errors": True},
            {
                "name": "Keep the result",
                "ansible.builtin.copy": {"content": "{{ probed | to_json }}", "dest": str(result_file), "mode": "0600"},
            },
        ],
    }
    playbook.write_text(json.dumps([play]))
    # As the inventories' hosts run: locally, with the Python that runs Ansible (group_vars/all).
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
    probed = json.loads(result_file.read_text())
    return bool(probed.get("failed")), probed


@pytest.fixture
def gateway():
    server = Gateway()
    yield server
    server.close()


def test_a_healthy_path_passes_with_the_host_name(ansible, gateway, tmp_path):
    failed, result = probe(tmp_path, address=gateway.address, hostname=HOST, window_seconds=1)
    assert not failed, result
    assert result["failures"] == 0
    assert result["requests"] >= 5
    assert set(gateway.hosts) == {HOST}
    assert len(gateway.hosts) == result["requests"]


def test_one_failed_request_fails_the_check(ansible, gateway, tmp_path):
    """Any failure counts: a single 502 among many good answers fails the window."""
    gateway.fail_at = {5}
    failed, result = probe(tmp_path, address=gateway.address, hostname=HOST, window_seconds=2)
    assert failed
    assert result["failures"] == 1
    assert result["requests"] > 10
    assert "answered 502, expected 200: no healthy upstream" in result["failure_lines"][0]
    assert f"of {result['requests']} requests to http://{HOST} through {gateway.address} failed" in result["msg"]


def test_an_answer_without_the_greeting_fails(ansible, gateway, tmp_path):
    failed, result = probe(tmp_path, address=gateway.address, window_seconds=0.2, expect_body="Hello, someoneelse!")
    assert failed
    assert "without 'Hello, someoneelse!'" in result["failure_lines"][0]


def test_no_answer_fails(ansible, gateway, tmp_path):
    address = gateway.address
    gateway.close()
    failed, result = probe(tmp_path, address=address, window_seconds=0.2, timeout_seconds=1)
    assert failed
    assert "no answer: ConnectionRefusedError" in result["failure_lines"][0]


def test_https_asks_for_and_verifies_the_host_name(ansible, tmp_path):
    """Over HTTPS the probe connects to the address, sends the host name in the handshake and
    verifies the certificate against it: a certificate for the host name only passes, and the
    same server fails when the probe is given another name."""
    certificate = server_certificate(HOST)
    (tmp_path / "ca.pem").write_bytes(certificate.ca)
    server = Gateway(certificate, tmp_path)
    try:
        failed, result = probe(
            tmp_path,
            address=server.address,
            scheme="https",
            hostname=HOST,
            ca_path=str(tmp_path / "ca.pem"),
            window_seconds=0.5,
        )
        assert not failed, result
        assert set(server.tls_names) == {HOST}
        failed, result = probe(
            tmp_path,
            address=server.address,
            scheme="https",
            hostname="other.example.com",
            ca_path=str(tmp_path / "ca.pem"),
            window_seconds=0.2,
        )
        assert failed
        assert "CERTIFICATE_VERIFY_FAILED" in result["failure_lines"][0]
    finally:
        server.close()
