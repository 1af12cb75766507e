"""Clients that try to exhaust the service rather than use it, against the release binary on
loopback: invented methods and paths (metric series)."""

from __future__ import annotations

import http.client
import random
import string
from pathlib import Path

import pytest


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'hello.db'}?mode=rwc"


def series(metrics: str) -> set[str]:
    """Each sample's name and labels, without its value."""
    return {line.rsplit(" ", 1)[0] for line in metrics.splitlines() if line and not line.startswith("#")}


def test_invented_methods_and_paths_add_no_metric_series(hello_service, sqlite_url, measurement):
    service = hello_service(sqlite_url)
    host, port = "127.0.0.1", service.port
    connection = http.client.HTTPConnection(host, port, timeout=10)

    def send(method: str, path: str) -> int:
        connection.request(method, path)
        response = connection.getresponse()
        response.read()
        return response.status

    # Every series a client can reach, once: each route, an unknown path, an unknown method.
    for method, path in [
        ("GET", "/hello/Ann"),
        ("PUT", "/hello/Ann"),
        ("DELETE", "/hello/Ann"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/openapi.json"),
        ("GET", "/nowhere"),
        ("BREW", "/hello/Ann"),
        ("BREW", "/nowhere"),
    ]:
        send(method, path)
    send("GET", "/metrics")
    connection.request("GET", "/metrics")
    before = connection.getresponse().read().decode()

    rng = random.Random(20261129)
    invented = 3000
    for number in range(invented):
        method = "".join(rng.choices(string.ascii_uppercase, k=40 if number % 100 else 4000))
        path = "/" + "".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(1, 200)))
        status = send(method, path if number % 2 else "/hello/" + path[1:])
        assert status in (400, 404, 405), f"{method[:20]}… {path}: {status}"

    connection.request("GET", "/metrics")
    after = connection.getresponse().read().decode()
    connection.close()
    assert series(after) == series(before), sorted(series(after) - series(before))[:5]
    # The counters' digits grow; the text does not, beyond them.
    assert len(after) - len(before) < 1024, f"/metrics grew from {len(before)} to {len(after)} bytes"
    assert 'method="other"' in after and 'route="other"' in after
    measurement(f"/metrics after {invented} invented methods and paths: {len(before)} → {len(after)} bytes")
