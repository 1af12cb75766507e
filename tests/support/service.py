"""The service under test: its release binary, started the one way every test starts it.

``hello_binary()`` is the binary named by ``HELLO_BINARY`` (``scripts/test`` builds it once per
run and exports it); without it, the same build as scripts/test's (``cargo test --release
--no-run`` in service/, clippy-driver compiling the workspace's crates, in the same build folder)
makes it, so a single test can be run straight from pytest and shares its build with
``scripts/test rust``. (That command, not ``cargo build``: the integration tests' dependencies
unify other features, and a ``cargo build`` after it would compile much of the tree a second
time.) Always the release build: the debug build's unoptimised SCRAM handshake takes up to a
second per database connection on a busy machine, longer than the timeouts some tests measure.

``start_service(binary, database_url, log_dir, **settings)`` starts ``hello serve`` on a free
loopback port with ``settings`` as environment variables, waits until ``/readyz`` answers 200
and returns a ``HelloService``.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from support import REPO
from support.net import free_port

SERVICE_DIR = REPO / "service"


def cargo_target_dir() -> Path:
    """Cargo's build folder as scripts/test chooses it: CARGO_TARGET_DIR, else one per user of the
    machine, shared by every checkout (scripts/test says why)."""
    named = os.environ.get("CARGO_TARGET_DIR")
    if named:
        return Path(named).absolute()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hello-platform" / "cargo-target"


def hello_binary() -> Path:
    named = os.environ.get("HELLO_BINARY")
    if named:
        binary = Path(named)
        if not binary.is_file():
            pytest.fail(f"HELLO_BINARY={named} is not a file: build the service or unset HELLO_BINARY")
        return binary
    target = cargo_target_dir()
    built = subprocess.run(
        ["cargo", "test", "--release", "--locked", "--no-run"],
        cwd=SERVICE_DIR,
        env={
            **os.environ,
            "RUSTC_WORKSPACE_WRAPPER": "clippy-driver",
            "CLIPPY_ARGS": "-Dwarnings",
            "CARGO_TARGET_DIR": str(target),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"cargo build of the service failed:\n{built.stderr[-4000:]}")
    return target / "release" / "hello"


@dataclass
class HelloService:
    """A running ``hello serve``: ``url(path)``, ``metrics_url()``, ``pid``, ``sigterm()``, ``wait(timeout)``,
    ``log()``."""

    process: subprocess.Popen
    port: int
    metrics_port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

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


def start_service(binary: Path, database_url: str, log_dir: Path, **settings: str) -> HelloService:
    """The release binary serving on two free loopback ports, once ready. A port found free can be
    taken by another test before the service binds it: that start is tried again on other ports
    (three times at most); any other failure to start fails the test."""
    for _ in range(3):
        service = _start_service(binary, database_url, log_dir, **settings)
        if service is not None:
            return service
    pytest.fail("hello found its ports taken three times in a row")


def _start_service(binary: Path, database_url: str, log_dir: Path, **settings: str) -> HelloService | None:
    port = free_port()
    metrics_port = free_port()
    log_path = log_dir / f"hello-{port}.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LISTEN_ADDR": f"127.0.0.1:{port}",
        "METRICS_ADDR": f"127.0.0.1:{metrics_port}",
        "LOG_FORMAT": "json",
        # Request lines at info would be most of the log under load; warnings and errors stay.
        "RUST_LOG": "warn",
        **settings,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen([str(binary), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    service = HelloService(process, port, metrics_port, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            if "Address already in use" in service.log():
                return None
            pytest.fail(f"hello exited with {process.returncode} at start-up:\n{service.log()}")
        try:
            if requests.get(service.url("/readyz"), timeout=1).status_code == 200:
                return service
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    service.stop()
    pytest.fail(f"hello was not ready within 30s:\n{service.log()}")
