"""The release checks of roles/hello_app against the real service, over real sockets.

The check script is taken from the rendered ConfigMap hello-release-check (rendered by the
real playbooks/render.yml), and runs with /bin/sh and curl against the `hello` binary built
from service/ and serving an embedded SQLite database, as the check Jobs run it against the
preview and live Services. A draining server (after SIGTERM) makes the post-promotion check
fail, as a release whose new slot stops being ready must. The last test measures the
service's drain under load: every request sent during the drain period must succeed.
"""

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from ansible_helpers import REPO, ansible
from conftest import free_port, wait_for_port

SERVICE = REPO / "service"
BINARY = SERVICE / "target" / "debug" / "hello"
DRAIN_SECONDS = 3


@pytest.fixture(scope="module")
def hello_binary():
    build = subprocess.run(["cargo", "build", "--locked", "--bin", "hello"], cwd=SERVICE,
                           capture_output=True, text=True, timeout=1800, check=False)
    assert build.returncode == 0, build.stderr[-3000:]
    return BINARY


@pytest.fixture(scope="module")
def check_script(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    result = ansible("ansible-playbook", "-i", "inventories/staging", "playbooks/render.yml",
                     "-e", f"hello_k8s_build_dir={root}/{{{{ inventory_hostname }}}}")
    assert result.returncode == 0, result.stdout + result.stderr
    configmap = yaml.safe_load(next(root.glob("*/hello/configmap-release-check.yml")).read_text())
    script = root / "check.sh"
    script.write_text(configmap["data"]["check.sh"])
    return script


class Server:
    def __init__(self, binary, directory):
        self.port = free_port()
        self.process = subprocess.Popen(
            [str(binary), "serve"],
            env={**os.environ, "DATABASE_URL": f"sqlite://{directory}/hello.db?mode=rwc",
                 "LISTEN_ADDR": f"127.0.0.1:{self.port}", "DRAIN_PERIOD": f"{DRAIN_SECONDS}s",
                 "SHUTDOWN_TIMEOUT": "2s", "LOG_FORMAT": "json"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def get(self, path):
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def server(hello_binary, tmp_path):
    running = Server(hello_binary, tmp_path)
    yield running
    running.stop()


def run_check(script, mode, target, **env):
    result = subprocess.run(
        ["/bin/sh", str(script)],
        env={"PATH": os.environ["PATH"], "MODE": mode, "TARGET": target, "CHECK_USERNAME": "releasecheck",
             "EXPECT_RELEASE": "", "WINDOW": "2", "MAX_ERROR_PERMILLE": "1", **env},
        capture_output=True, text=True, timeout=120, check=False)
    last = (result.stdout.strip().splitlines() or [""])[-1]
    return result.returncode, last, result.stdout + result.stderr


def reported_release(server):
    status, body = server.get("/healthz")
    assert status == 200, body
    health = json.loads(body)
    return f"version={health['version']} commit={health['commit']}"


def test_pre_promotion_check_passes_and_reports_the_release(check_script, server):
    code, last, output = run_check(check_script, "pre", server.url)
    assert code == 0, output
    assert last == f"RESULT ok {reported_release(server)}"
    status, body = server.get("/hello/releasecheck")
    assert status == 200 and "releasecheck" in body, "the check user was written through the API"


def test_pre_promotion_check_fails_on_another_release(check_script, server):
    code, last, output = run_check(check_script, "pre", server.url, EXPECT_RELEASE="version=0.0.0 commit=other")
    assert code == 1, output
    assert last == (f"RESULT failed the new slot reports {reported_release(server)}, "
                    "not the release to deploy version=0.0.0 commit=other")


def test_post_promotion_check_passes_on_a_healthy_live_path(check_script, server):
    assert run_check(check_script, "pre", server.url)[0] == 0
    code, last, output = run_check(check_script, "post", server.url, EXPECT_RELEASE=reported_release(server))
    assert code == 0, output
    assert last.startswith("RESULT ok requests=") and " failures=0 permille=0 " in last
    assert int(last.split("requests=")[1].split()[0]) >= 4


def test_post_promotion_check_fails_when_the_live_path_answers_another_release(check_script, server):
    assert run_check(check_script, "pre", server.url)[0] == 0
    code, last, output = run_check(check_script, "post", server.url, EXPECT_RELEASE="version=9.9.9 commit=new")
    assert code == 1, output
    assert "but Service hello answered from version=" in last
    assert "not the new release version=9.9.9 commit=new" in last


def test_post_promotion_check_fails_while_the_live_slot_drains(check_script, server):
    assert run_check(check_script, "pre", server.url)[0] == 0
    server.process.send_signal(signal.SIGTERM)
    code, last, output = run_check(check_script, "post", server.url)
    assert code == 1, output
    assert last.startswith("RESULT failed requests=")
    assert "more than 1 per thousand failed" in last
    assert "GET /readyz answered 503" in output


def test_post_promotion_check_fails_when_nothing_answers(check_script):
    code, last, output = run_check(check_script, "post", f"http://127.0.0.1:{free_port()}", WINDOW="1")
    assert code == 1, output
    assert "answered 000" in output


def test_an_unknown_mode_is_refused(check_script):
    code, last, _ = run_check(check_script, "sideways", "http://127.0.0.1:9")
    assert code == 1
    assert last == "RESULT failed MODE must be pre or post, not 'sideways'"


def test_the_service_serves_every_request_through_its_drain_under_load(server, measurement):
    """Load from 8 clients; SIGTERM; every request sent during the drain period succeeds."""
    assert run_check_user(server)
    results = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(server.url + "/hello/loadcheck", timeout=5) as response:
                    results.append((started, response.status))
            except urllib.error.HTTPError as error:
                results.append((started, error.code))
            except OSError:
                results.append((started, 0))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    sigterm_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    readyz_503_after = None
    while time.monotonic() < sigterm_at + DRAIN_SECONDS - 0.5:
        if readyz_503_after is None and server.get("/readyz")[0] == 503:
            readyz_503_after = time.monotonic() - sigterm_at
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join()
    during_drain = [status for started, status in results if started >= sigterm_at]
    failed = [status for status in during_drain if status != 200]
    measurement(f"hello drain under load (8 clients, DRAIN_PERIOD={DRAIN_SECONDS}s): "
                f"{len(results)} requests, {len(during_drain)} sent after SIGTERM, {len(failed)} failed; "
                f"/readyz 503 {readyz_503_after:.2f}s after SIGTERM")
    assert readyz_503_after is not None and readyz_503_after < 1, "readyz must turn 503 at once"
    assert len(during_drain) >= 50, "the load must cover the drain"
    assert not failed, f"{len(failed)} of {len(during_drain)} requests failed during the drain: {failed[:5]}"
    assert server.process.wait(timeout=DRAIN_SECONDS + 5) == 0


def run_check_user(server):
    request = urllib.request.Request(server.url + "/hello/loadcheck", method="PUT",
                                     data=b'{"dateOfBirth": "1990-05-17"}',
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status == 204
