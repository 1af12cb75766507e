"""Throw-away PostgreSQL servers from the host's binaries (``HELLO_PG_BINDIR``, default
/usr/lib/postgresql/15/bin), on free loopback ports.

A server runs as the ``postgres`` user when the tests run as root, keeps its data in a temporary
directory, requires a password over TCP (scram-sha-256) and runs without fsync: these servers
hold test data only. ``PostgresServer`` has ``dsn(database)``, ``psql(sql, database)``,
``create_database(name, template=None)``, ``drop_database(name)``; ``RestartablePostgres`` stops
and starts one on the same port (a database restart). ``start_postgres_server(tls=..., hba_rules=...,
ident_rules=...)`` serves TLS with a given certificate (and verifies client certificates its CA
signed) and puts client authentication rules before the default one.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.net import free_port
from support.tls import ServerCertificate

PG_BINDIR = Path(os.environ.get("HELLO_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
SUPERUSER_PASSWORD = "drill-superuser-password"


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
            [
                str(PG_BINDIR / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
            env={**os.environ, "PGPASSWORD": self.password},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql on port {self.port} failed: {done.stderr.strip()}\nSQL: {sql}")
        return done.stdout.strip()

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database, empty or a copy of ``template`` (which must have no session open)."""
        copy = f' template "{template}"' if template else ""
        self.psql(f'create database "{name}"{copy}')
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f'drop database if exists "{name}" with (force)')

    def stop(self) -> None:
        subprocess.run(
            [
                *self._as_postgres,
                str(PG_BINDIR / "pg_ctl"),
                "stop",
                "-D",
                str(self.directory / "data"),
                "-m",
                "immediate",
                "-w",
            ],
            capture_output=True,
            check=False,
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


def _start(directory: Path, as_postgres: list[str], extra_options: str = "") -> PostgresServer:
    port = free_port()
    options = (
        f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={directory} "
        f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off {extra_options}"
    )
    started = subprocess.run(
        [
            *as_postgres,
            str(PG_BINDIR / "pg_ctl"),
            "start",
            "-D",
            str(directory / "data"),
            "-w",
            "-t",
            "60",
            "-l",
            str(directory / "server.log"),
            "-o",
            options,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    server = PostgresServer(port, directory, _as_postgres=as_postgres)
    if started.returncode != 0:
        log = directory / "server.log"
        details = log.read_text(errors="replace") if log.exists() else ""
        server.stop()
        pytest.fail(f"PostgreSQL did not start: {started.stderr}\n{details}")
    return server


def start_postgres_server(
    tls: ServerCertificate | None = None, hba_rules: Sequence[str] = (), ident_rules: Sequence[str] = ()
) -> PostgresServer:
    """initdb and start a new server in a temporary directory; the caller stops it. With ``tls``
    it serves TLS with that certificate and verifies the client certificates its CA signed
    (ssl_ca_file, as CloudNativePG 1.30.0 sets it to the Cluster's client CA); ``hba_rules`` go
    before the default rule (password over TCP), the order CloudNativePG writes its user-defined
    rules in; ``ident_rules`` are the lines of pg_ident.conf (user name maps)."""
    directory, as_postgres = _new_server_directory()
    pwfile = directory / "pwfile"
    pwfile.write_text(SUPERUSER_PASSWORD + "\n")
    owned_files = [pwfile]
    extra_options = ""
    if tls:
        (directory / "server.crt").write_bytes(tls.certificate)
        (directory / "server.key").write_bytes(tls.key)
        (directory / "client-ca.crt").write_bytes(tls.ca)
        # PostgreSQL refuses a key file others may read.
        (directory / "server.key").chmod(0o600)
        owned_files += [directory / "server.crt", directory / "server.key", directory / "client-ca.crt"]
        extra_options = (
            f"-c ssl=on -c ssl_cert_file={directory}/server.crt -c ssl_key_file={directory}/server.key"
            f" -c ssl_ca_file={directory}/client-ca.crt"
        )
    if as_postgres:
        for path in owned_files:
            shutil.chown(path, "postgres", "postgres")
    subprocess.run(
        [
            *as_postgres,
            str(PG_BINDIR / "initdb"),
            "-D",
            str(directory / "data"),
            "-U",
            "postgres",
            "--pwfile",
            str(pwfile),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ],
        check=True,
        capture_output=True,
    )
    if hba_rules:
        hba = directory / "data" / "pg_hba.conf"
        hba.write_text("\n".join(["local all all trust", *hba_rules, "host all all all scram-sha-256", ""]))
    if ident_rules:
        (directory / "data" / "pg_ident.conf").write_text("\n".join([*ident_rules, ""]))
    return _start(directory, as_postgres, extra_options)


def start_standby(primary: PostgresServer) -> PostgresServer:
    """A hot standby of ``primary`` (pg_basebackup, streaming): a copy still in recovery.
    The caller stops it."""
    directory, as_postgres = _new_server_directory()
    subprocess.run(
        [
            *as_postgres,
            "env",
            f"PGPASSWORD={primary.password}",
            str(PG_BINDIR / "pg_basebackup"),
            "-h",
            primary.host,
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(directory / "data"),
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
        ],
        check=True,
        capture_output=True,
    )
    return _start(directory, as_postgres)


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


class RestartablePostgres:
    """A server of its own that can go down and come back on the same port."""

    def __init__(self, server: PostgresServer):
        self.server = server

    def _pg_ctl(self, *args: str) -> None:
        data = self.server.directory / "data"
        done = subprocess.run(
            [*self.server._as_postgres, str(PG_BINDIR / "pg_ctl"), *args, "-D", str(data), "-w", "-t", "60"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {args[0]} failed: {done.stderr}")

    def stop_server(self) -> None:
        """A clean, fast shutdown: sessions are cut, committed work is kept."""
        self._pg_ctl("stop", "-m", "fast")

    def start_server(self) -> None:
        options = (
            f"-c port={self.server.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.server.directory}"
        )
        self._pg_ctl("start", "-l", str(self.server.directory / "server.log"), "-o", options)
