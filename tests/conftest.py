"""Shared fixtures of the repository-level tests: real servers on free loopback ports.

PostgreSQL
  ``postgres_server``          session-wide PostgreSQL 15 server (the "primary" of the tests)
  ``scratch_postgres_server``  a second, independent server (a restore or drill target)
  ``postgres_database``        a fresh, empty database on ``postgres_server``, dropped after
                               the test; its value is a ``TestDatabase``
  Each server is a ``PostgresServer``: ``dsn(database)``, ``psql(sql, database)``,
  ``create_database(name)``, ``drop_database(name)``. Servers come from the host binaries in
  ``HELLO_PG_BINDIR`` (default /usr/lib/postgresql/15/bin), run as the ``postgres`` user when
  the tests run as root, keep their data in a temporary directory, require a password over
  TCP (scram-sha-256) and are stopped and deleted at the end of the session.

Google Cloud Storage
  ``gcs_emulator``  session-wide ``gcp-storage-emulator`` (in memory): ``url``, ``env()``
                    (the environment a child process needs to use it), ``client()`` (a
                    google-cloud-storage client, to check independently what was stored),
                    ``create_bucket(name)``
  ``gcs_bucket``    a fresh bucket in the emulator for one test; its value is the name

Faults
  ``tcp_proxy``     factory: ``tcp_proxy(port, cut_after=N | flip_at=N | flip_reply_at=N |
                    garble_reply_md5=True)`` forwards to 127.0.0.1:port; for requests that
                    start with PUT it either closes the connection after N bytes or flips
                    the byte at offset N (or, with ``garble_reply_md5``, changes the MD5 the
                    reply reports), and for media downloads (``alt=media``) it flips byte N
                    of the reply; returns the
                    proxy (``port``, ``faults``: how many faults it caused). For
                    provoking interrupted and corrupted uploads.

Figures
  ``measurement``   ``measurement("logical drill RTO 1.2s ...")`` records a line that the
                    test run prints in a "measurements" section at its end (no ``-s`` needed)

``run_script(name, *args, env=...)`` runs one of the repository's ``scripts/`` and returns
the CompletedProcess (text, captured); ``REPO`` is the repository root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PG_BINDIR = Path(os.environ.get("HELLO_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
SUPERUSER_PASSWORD = "drill-superuser-password"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def run_script(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``scripts/<name>`` with ``args``; ``env`` is added to the current environment."""
    return subprocess.run(
        [str(REPO / "scripts" / name), *args],
        env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=timeout, check=False,
    )


# -- figures worth quoting ----------------------------------------------------------------

_MEASUREMENTS: list[str] = []


@pytest.fixture
def measurement():
    """Record a line of measured figures for the summary at the end of the run."""
    return _MEASUREMENTS.append


def pytest_terminal_summary(terminalreporter):
    if _MEASUREMENTS:
        terminalreporter.section("measurements")
        for line in _MEASUREMENTS:
            terminalreporter.write_line(line)


# -- PostgreSQL --------------------------------------------------------------------------


@dataclass
class PostgresServer:
    """A throw-away PostgreSQL server on 127.0.0.1:``port``; superuser ``postgres``."""

    port: int
    directory: Path
    password: str = SUPERUSER_PASSWORD
    host: str = "127.0.0.1"
    _as_postgres: list[str] = field(default_factory=list)

    def dsn(self, database: str = "postgres", user: str = "postgres", password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{user}:{secret}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser; return psql's unaligned, tuples-only output."""
        done = subprocess.run(
            [str(PG_BINDIR / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql],
            env={**os.environ, "PGPASSWORD": self.password},
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql on port {self.port} failed: {done.stderr.strip()}\nSQL: {sql}")
        return done.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f'create database "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f'drop database if exists "{name}" with (force)')

    def stop(self) -> None:
        subprocess.run(
            [*self._as_postgres, str(PG_BINDIR / "pg_ctl"), "stop", "-D", str(self.directory / "data"),
             "-m", "immediate", "-w"],
            capture_output=True, check=False,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


def _new_server_directory() -> tuple[Path, list[str]]:
    """A temporary directory the server's account owns, and the prefix that runs as it."""
    if not (PG_BINDIR / "initdb").exists():
        pytest.fail(f"no PostgreSQL server binaries in {PG_BINDIR}: run scripts/bootstrap or set HELLO_PG_BINDIR")
    directory = Path(tempfile.mkdtemp(prefix="hello-pg-"))
    if os.geteuid() != 0:
        return directory, []
    # initdb refuses to run as root.
    account = pwd.getpwnam("postgres")
    os.chown(directory, account.pw_uid, account.pw_gid)
    return directory, ["runuser", "-u", "postgres", "--"]


def _start(directory: Path, as_postgres: list[str]) -> PostgresServer:
    port = free_port()
    options = (f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={directory} "
               "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    started = subprocess.run(
        [*as_postgres, str(PG_BINDIR / "pg_ctl"), "start", "-D", str(directory / "data"), "-w", "-t", "60",
         "-l", str(directory / "server.log"), "-o", options],
        capture_output=True, text=True, check=False,
    )
    server = PostgresServer(port, directory, _as_postgres=as_postgres)
    if started.returncode != 0:
        log = directory / "server.log"
        details = log.read_text(errors="replace") if log.exists() else ""
        server.stop()
        pytest.fail(f"PostgreSQL did not start: {started.stderr}\n{details}")
    return server


def start_postgres_server() -> PostgresServer:
    """initdb and start a new server in a temporary directory; the caller stops it."""
    directory, as_postgres = _new_server_directory()
    pwfile = directory / "pwfile"
    pwfile.write_text(SUPERUSER_PASSWORD + "\n")
    if as_postgres:
        shutil.chown(pwfile, "postgres", "postgres")
    subprocess.run(
        [*as_postgres, str(PG_BINDIR / "initdb"), "-D", str(directory / "data"), "-U", "postgres",
         "--pwfile", str(pwfile), "--auth-local=trust", "--auth-host=scram-sha-256",
         "--encoding=UTF8", "--locale=C.UTF-8"],
        check=True, capture_output=True,
    )
    return _start(directory, as_postgres)


def start_standby(primary: PostgresServer) -> PostgresServer:
    """A hot standby of ``primary`` (pg_basebackup, streaming): a copy still in recovery.
    The caller stops it."""
    directory, as_postgres = _new_server_directory()
    subprocess.run(
        [*as_postgres, "env", f"PGPASSWORD={primary.password}", str(PG_BINDIR / "pg_basebackup"),
         "-h", primary.host, "-p", str(primary.port), "-U", "postgres", "-D", str(directory / "data"),
         "--write-recovery-conf", "--wal-method=stream", "--checkpoint=fast"],
        check=True, capture_output=True,
    )
    return _start(directory, as_postgres)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL 15 server for the whole session (see the module docstring)."""
    server = start_postgres_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def scratch_postgres_server():
    """A second PostgreSQL server, independent of ``postgres_server``."""
    server = start_postgres_server()
    yield server
    server.stop()


@dataclass
class TestDatabase:
    """A database on a ``PostgresServer``: ``name``, ``dsn`` (superuser), ``psql(sql)``."""

    __test__ = False
    server: PostgresServer
    name: str

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.name)

    def psql(self, sql: str) -> str:
        return self.server.psql(sql, self.name)


@pytest.fixture
def postgres_database(postgres_server):
    """A fresh empty database on ``postgres_server``, dropped after the test."""
    name = "test_" + uuid.uuid4().hex[:12]
    postgres_server.create_database(name)
    yield TestDatabase(postgres_server, name)
    postgres_server.drop_database(name)


# -- GCS emulator ------------------------------------------------------------------------


@dataclass
class GcsEmulator:
    """A running gcp-storage-emulator; ``host`` is ``127.0.0.1:<port>``."""

    port: int
    process: subprocess.Popen

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def env(self, port: int | None = None) -> dict[str, str]:
        """Environment for a child process to use the emulator (or a proxy on ``port``)."""
        return {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port or self.port}"}

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="hello-tests", credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(name)
        return name


@pytest.fixture(scope="session")
def gcs_emulator():
    """A gcp-storage-emulator on a free loopback port for the whole session."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
         "--port", str(port), "--in-memory", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
            assert answer.read() == b"OK"
        yield GcsEmulator(port, process)
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def gcs_bucket(gcs_emulator):
    """A fresh, empty bucket in the emulator; its name."""
    return gcs_emulator.create_bucket("hello-test-" + uuid.uuid4().hex[:12])


# -- fault injection -----------------------------------------------------------------------


class _FaultyProxy(threading.Thread):
    def __init__(
        self, target_port: int, cut_after: int | None, flip_at: int | None, flip_reply_at: int | None,
        garble_reply_md5: bool,
    ):
        super().__init__(daemon=True)
        self.garble_reply_md5 = garble_reply_md5
        self.target_port = target_port
        self.cut_after = cut_after
        self.flip_at = flip_at
        self.flip_reply_at = flip_reply_at
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.faults = 0

    def run(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        offset = 0
        is_put = None
        with client, upstream:
            while True:
                try:
                    data = client.recv(65536)
                except OSError:
                    return
                if not data:
                    try:
                        upstream.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                if is_put is None:
                    is_put = data.startswith(b"PUT ")
                    flip = self.flip_reply_at if b"alt=media" in data.split(b"\r\n", 1)[0] else None
                    garble = self.garble_reply_md5 and is_put
                    threading.Thread(target=self._pipe, args=(upstream, client, flip, garble), daemon=True).start()
                if is_put and self.cut_after is not None and offset + len(data) > self.cut_after:
                    upstream.sendall(data[: self.cut_after - offset])
                    self.faults += 1
                    # Drop both sides mid-body, as a network failure would.
                    for sock in (upstream, client):
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                    return
                if is_put and self.flip_at is not None and offset <= self.flip_at < offset + len(data):
                    data = bytearray(data)
                    data[self.flip_at - offset] ^= 0xFF
                    data = bytes(data)
                    self.faults += 1
                offset += len(data)
                upstream.sendall(data)

    def _pipe(self, source: socket.socket, sink: socket.socket, flip_at: int | None, garble_md5: bool = False) -> None:
        offset = 0
        try:
            while data := source.recv(65536):
                marker = data.find(b'"md5Hash": "') if garble_md5 else -1
                if marker >= 0:
                    # Same length, another base64 digit: the JSON stays valid, the MD5 is wrong.
                    at = marker + len(b'"md5Hash": "')
                    data = data[:at] + (b"B" if data[at:at + 1] == b"A" else b"A") + data[at + 1:]
                    garble_md5 = False
                    self.faults += 1
                if flip_at is not None and offset <= flip_at < offset + len(data):
                    data = bytearray(data)
                    data[flip_at - offset] ^= 0xFF
                    data = bytes(data)
                    self.faults += 1
                offset += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def tcp_proxy():
    """Factory of fault-injecting TCP proxies (see the module docstring); closed after the test."""
    proxies: list[_FaultyProxy] = []

    def start(
        target_port: int, cut_after: int | None = None, flip_at: int | None = None, flip_reply_at: int | None = None,
        garble_reply_md5: bool = False,
    ) -> _FaultyProxy:
        proxy = _FaultyProxy(target_port, cut_after, flip_at, flip_reply_at, garble_reply_md5)
        proxy.start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()
