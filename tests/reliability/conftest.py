"""Fixtures of the reliability suite: the real ``hello`` binary over real sockets, on a real
PostgreSQL from the host binaries (see ``tests/conftest.py``).

``hello_binary``          path of the service binary. ``HELLO_BINARY`` names one; otherwise
                          ``cargo build --release --locked`` in service/ builds the release
                          binary (cached in service/target/, shared with bench/run): the build
                          that is deployed. Not the debug build: its unoptimised SCRAM
                          handshake takes up to a second per database connection on a busy
                          machine, longer than the acquire timeouts whose effects these tests
                          time.
``hello_service``         factory: ``hello_service(database_url, **settings)`` starts the
                          binary on a free loopback port, waits until /readyz answers 200,
                          and returns a ``HelloService``; stopped after the test.
``restartable_postgres``  a PostgreSQL server of the test's own, with ``stop_server()`` and
                          ``start_server()`` on the same port (a database restart).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import PG_BINDIR, REPO, PostgresServer, free_port, start_postgres_server

SERVICE_DIR = REPO / "service"


@pytest.fixture(scope="session")
def hello_binary() -> Path:
    named = os.environ.get("HELLO_BINARY")
    if named:
        binary = Path(named)
        if not binary.is_file():
            pytest.fail(f"HELLO_BINARY={named} is not a file: build the service or unset HELLO_BINARY")
        return binary
    built = subprocess.run(
        ["cargo", "build", "--release", "--locked", "--bin", "hello"],
        cwd=SERVICE_DIR, capture_output=True, text=True, check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"cargo build of the service failed:\n{built.stderr[-4000:]}")
    return SERVICE_DIR / "target" / "release" / "hello"


@dataclass
class HelloService:
    """A running ``hello serve``; ``url(path)``, ``pid``, ``sigterm()``, ``wait(timeout)``."""

    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def sigterm(self) -> None:
        self.process.terminate()

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def hello_service(hello_binary, tmp_path):
    started: list[HelloService] = []

    def start(database_url: str, **settings: str) -> HelloService:
        port = free_port()
        log_path = tmp_path / f"hello-{port}.log"
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "LISTEN_ADDR": f"127.0.0.1:{port}",
            "LOG_FORMAT": "json",
            # Request lines at info would be most of the log under load; warnings and errors stay.
            "RUST_LOG": "warn",
            **settings,
        }
        with log_path.open("wb") as log:
            process = subprocess.Popen([str(hello_binary), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
        service = HelloService(process, port, log_path)
        started.append(service)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"hello exited with {process.returncode} at start-up:\n{service.log()}")
            try:
                if requests.get(service.url("/readyz"), timeout=1).status_code == 200:
                    return service
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        pytest.fail(f"hello was not ready within 30s:\n{service.log()}")

    yield start
    for service in started:
        service.stop()


class RestartablePostgres:
    """A server of its own that can go down and come back on the same port."""

    def __init__(self, server: PostgresServer):
        self.server = server

    def _pg_ctl(self, *args: str) -> None:
        data = self.server.directory / "data"
        done = subprocess.run(
            [*self.server._as_postgres, str(PG_BINDIR / "pg_ctl"), *args, "-D", str(data), "-w", "-t", "60"],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {args[0]} failed: {done.stderr}")

    def stop_server(self) -> None:
        """A clean, fast shutdown: sessions are cut, committed work is kept."""
        self._pg_ctl("stop", "-m", "fast")

    def start_server(self) -> None:
        options = (f"-c port={self.server.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.server.directory}")
        self._pg_ctl("start", "-l", str(self.server.directory / "server.log"), "-o", options)


@pytest.fixture
def restartable_postgres():
    server = start_postgres_server()
    try:
        yield RestartablePostgres(server)
    finally:
        server.stop()
