"""A throw-away PgBouncer from the host's package (Debian's ``pgbouncer``, 1.18 on bookworm:
scripts/bootstrap installs it) in front of a test PostgreSQL server, on a free loopback port.

``start_pgbouncer(server, pool_mode=..., pool_size=...)`` starts it in the foreground (as the
``postgres`` user when the tests run as root: PgBouncer refuses to run as root) with the server's
superuser in its auth file; the caller stops it. ``PgBouncer.dsn(database)`` is the URL through it,
``PgBouncer.version`` what ``pgbouncer --version`` says. ``migrate_directly`` and
``SERVICE_SETTINGS`` put the service behind it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.net import free_port
from support.postgres import PostgresServer

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@dataclass
class PgBouncer:
    port: int
    directory: Path
    process: subprocess.Popen
    user: str
    password: str

    @property
    def version(self) -> tuple[int, int]:
        out = subprocess.run([PGBOUNCER, "--version"], capture_output=True, text=True, check=True).stdout
        found = re.search(r"PgBouncer (\d+)\.(\d+)", out)
        assert found, out
        return int(found.group(1)), int(found.group(2))

    def dsn(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


# The service's settings behind this PgBouncer in transaction pooling (1.18, before prepared
# statements there): no statement cache, and no migrations through it (see migrate_directly).
SERVICE_SETTINGS = {"DATABASE_STATEMENT_CACHE_CAPACITY": "0", "MIGRATE_ON_START": "false"}


def migrate_directly(hello_binary, database_url: str) -> None:
    """Applies the service's migrations straight to PostgreSQL at ``database_url``: they name
    their statements, which this PgBouncer cannot carry in transaction pooling."""
    subprocess.run([str(hello_binary), "migrate"], env={"DATABASE_URL": database_url}, check=True)


def start_pgbouncer(
    server: PostgresServer, pool_mode: str = "transaction", pool_size: int = 2, **parameters: str
) -> PgBouncer:
    """``parameters`` are more lines of its [pgbouncer] section, such as server_login_retry="1"."""
    if not Path(PGBOUNCER).exists():
        pytest.fail("no pgbouncer on this machine: run scripts/bootstrap")
    directory = Path(tempfile.mkdtemp(prefix="hello-pgbouncer-"))
    port = free_port()
    (directory / "userlist.txt").write_text(f'"postgres" "{server.password}"\n')
    (directory / "pgbouncer.ini").write_text(
        "\n".join(
            [
                "[databases]",
                f"* = host={server.host} port={server.port}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = scram-sha-256",
                f"auth_file = {directory}/userlist.txt",
                f"pool_mode = {pool_mode}",
                f"default_pool_size = {pool_size}",
                "max_client_conn = 100",
                # sqlx and libpq send these at start-up; PgBouncer refuses unknown ones.
                "ignore_startup_parameters = extra_float_digits,options",
                f"logfile = {directory}/pgbouncer.log",
                *(f"{name} = {value}" for name, value in parameters.items()),
                "",
            ]
        )
    )
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        for path in (directory, *directory.iterdir()):
            shutil.chown(path, "postgres", "postgres")
    process = subprocess.Popen(
        [*as_postgres, PGBOUNCER, str(directory / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    bouncer = PgBouncer(port, directory, process, "postgres", server.password)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = bouncer.log()
            bouncer.stop()
            pytest.fail(f"pgbouncer exited with {process.returncode}:\n{log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return bouncer
        except OSError:
            time.sleep(0.05)
    log = bouncer.log()
    bouncer.stop()
    pytest.fail(f"pgbouncer did not listen within 10s:\n{log}")
