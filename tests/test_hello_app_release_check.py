"""The release checks of roles/hello_app against the real service, over real sockets.

The check script is taken from the rendered ConfigMap hello-release-check (the run's one render
of every environment, support.render), and runs with /bin/sh and curl against the `hello` binary built
from service/ (support.service) and serving an embedded SQLite database, as the check Jobs run it against the
preview Service and the new live slot's Service. A draining server (after SIGTERM) makes the post-promotion check
fail, as a release whose new slot stops being ready must; a new slot that cannot reach its
database fails the pre-promotion check although its /readyz answers 200.
"""

import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest
import yaml

from support.net import free_port

GREETING = "Hello, releasecheck! Happy birthday!"

DRAIN_SECONDS = 3


@pytest.fixture(scope="module")
def check_script(rendered_root, tmp_path_factory):
    rendered = next((rendered_root / "staging").glob("*/hello/configmap-release-check.yml"))
    configmap = yaml.safe_load(rendered.read_text())
    script = tmp_path_factory.mktemp("check") / "check.sh"
    script.write_text(configmap["data"]["check.sh"])
    return script


@pytest.fixture
def server(hello_service, tmp_path):
    """The service on an embedded SQLite database."""
    return hello_service(
        f"sqlite://{tmp_path}/hello.db?mode=rwc", DRAIN_PERIOD=f"{DRAIN_SECONDS}s", SHUTDOWN_TIMEOUT="2s"
    )


def get(server, path):
    try:
        with urllib.request.urlopen(server.url(path), timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def run_check(script, mode, target, **env):
    result = subprocess.run(
        ["/bin/sh", str(script)],
        env={
            "PATH": os.environ["PATH"],
            "MODE": mode,
            "TARGET": target,
            "CHECK_USERNAME": "releasecheck",
            "EXPECT_RELEASE": "",
            "WINDOW": "2",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    last = (result.stdout.strip().splitlines() or [""])[-1]
    return result.returncode, last, result.stdout + result.stderr


def reported_release(server):
    status, body = get(server, "/healthz")
    assert status == 200, body
    health = json.loads(body)
    return f"version={health['version']} commit={health['commit']}"


def test_pre_promotion_check_passes_and_reports_the_release(check_script, server):
    code, last, output = run_check(check_script, "pre", server.base_url)
    assert code == 0, output
    assert last == f"RESULT ok {reported_release(server)}"
    status, body = get(server, "/hello/releasecheck")
    assert (status, json.loads(body)) == (200, {"message": GREETING}), "saved through the API with today's date"


def test_pre_promotion_check_fails_while_the_new_slot_cannot_reach_its_database(check_script, hello_service):
    url = f"postgres://hello:secret@127.0.0.1:{free_port()}/hello"
    # Started at all: hello_service waits for /readyz 200, which no longer waits for the database.
    server = hello_service(url, MIGRATE_ON_START="false", DATABASE_CONNECT_TIMEOUT="300ms")
    code, last, output = run_check(check_script, "pre", server.base_url, READY_SECONDS="3")
    assert code == 1, output
    assert last == (
        'RESULT failed GET /readyz did not report the database ok in 3 s: {"status":"ready","database":"unavailable"}'
    )
    assert "PUT" not in output, "nothing is saved before the database answers"


def test_pre_promotion_check_fails_on_another_release(check_script, server):
    code, last, output = run_check(check_script, "pre", server.base_url, EXPECT_RELEASE="version=0.0.0 commit=other")
    assert code == 1, output
    assert last == (
        f"RESULT failed the new slot reports {reported_release(server)}, "
        "not the release to deploy version=0.0.0 commit=other"
    )


def test_post_promotion_check_passes_on_a_healthy_live_path(check_script, server):
    assert run_check(check_script, "pre", server.base_url)[0] == 0
    code, last, output = run_check(check_script, "post", server.base_url, EXPECT_RELEASE=reported_release(server))
    assert code == 0, output
    assert last.startswith("RESULT ok requests=") and " failures=0 " in last
    assert int(last.split("requests=")[1].split()[0]) >= 4


def test_post_promotion_check_fails_when_the_live_path_answers_another_release(check_script, server):
    assert run_check(check_script, "pre", server.base_url)[0] == 0
    code, last, output = run_check(check_script, "post", server.base_url, EXPECT_RELEASE="version=9.9.9 commit=new")
    assert code == 1, output
    assert f"but {server.base_url} answered from version=" in last
    assert "not the new release version=9.9.9 commit=new" in last


def test_post_promotion_check_fails_while_the_live_slot_drains(check_script, server):
    assert run_check(check_script, "pre", server.base_url)[0] == 0
    server.sigterm()
    code, last, output = run_check(check_script, "post", server.base_url)
    assert code == 1, output
    assert last.startswith("RESULT failed requests=")
    # Any failed request fails the check: users are switched back on one.
    assert last.endswith(": every request must succeed")
    assert "GET /readyz answered 503" in output


def test_post_promotion_check_fails_when_nothing_answers(check_script):
    code, _last, output = run_check(check_script, "post", f"http://127.0.0.1:{free_port()}", WINDOW="1")
    assert code == 1, output
    assert "answered 000" in output


def test_an_unknown_mode_is_refused(check_script):
    code, last, _ = run_check(check_script, "sideways", "http://127.0.0.1:9")
    assert code == 1
    assert last == "RESULT failed MODE must be pre or post, not 'sideways'"
