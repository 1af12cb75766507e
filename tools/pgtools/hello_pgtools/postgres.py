"""PostgreSQL through its client binaries: psql, pg_dump, pg_restore.

A connection is a libpq DSN: a URI (``postgresql://user:password@host:5432/db``; the
``postgres://`` form the service's DATABASE_URL uses works too) or a keyword string
(``host=... port=... dbname=...``). A URI's password is moved into PGPASSWORD so it never
shows on a command line, and every message prints the DSN with its password masked.
The binaries come from ``PG_BINDIR`` when set, else from PATH; none of them ever prompts
for a password (``--no-password``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

_URI_SCHEMES = ("postgresql://", "postgres://")


def _binary(name: str) -> str:
    bindir = os.environ.get("PG_BINDIR")
    if bindir:
        return str(Path(bindir) / name)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not on PATH; install the PostgreSQL client or set PG_BINDIR")
    return found


def _is_uri(dsn: str) -> bool:
    return dsn.startswith(_URI_SCHEMES)


def redact(dsn: str) -> str:
    """The DSN with its password replaced by ``***``, fit for messages and metadata."""
    if _is_uri(dsn):
        parts = urllib.parse.urlsplit(dsn)
        if parts.password is None:
            return dsn
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)


def with_database(dsn: str, database: str) -> str:
    """The same server and credentials, another database."""
    if _is_uri(dsn):
        parts = urllib.parse.urlsplit(dsn)
        return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(database)))
    # libpq keeps the last value of a repeated keyword.
    return f"{dsn} dbname='{database}'"


def database_name(dsn: str) -> str:
    """The database a DSN names; raises ValueError when it names none."""
    if _is_uri(dsn):
        name = urllib.parse.unquote(urllib.parse.urlsplit(dsn).path.lstrip("/"))
    else:
        found = re.findall(r"dbname\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn)
        name = found[-1].strip("'") if found else ""
    if not name:
        raise ValueError(f"the DSN {redact(dsn)} names no database")
    return name


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _libpq(dsn: str) -> tuple[str, dict[str, str]]:
    """(conninfo without a password, environment carrying it) for a child process."""
    env = dict(os.environ)
    if _is_uri(dsn):
        parts = urllib.parse.urlsplit(dsn)
        if parts.password is not None:
            env["PGPASSWORD"] = urllib.parse.unquote(parts.password)
            netloc = parts.netloc.replace(":" + parts.password + "@", "@", 1)
            dsn = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return dsn, env


def _summary(text: str, limit: int = 400) -> str:
    """A client's error output on one line: its first lines (the error and its hint)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    joined = " ".join(lines[:3]) or "no output"
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


class ClientError(Exception):
    """A PostgreSQL client binary exited non-zero; the message is its last error line."""


@dataclass(frozen=True)
class Database:
    """One database reached through a DSN."""

    dsn: str

    def __str__(self) -> str:
        return redact(self.dsn)

    def _run(self, argv: list[str], timeout: float | None = None) -> str:
        conninfo, env = _libpq(self.dsn)
        argv = [arg.replace("{dsn}", conninfo) for arg in argv]
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as error:
            raise ClientError(f"{Path(argv[0]).name} gave no answer in {timeout}s") from error
        if done.returncode != 0:
            raise ClientError(_summary(done.stderr or done.stdout))
        return done.stdout

    def query_json(self, sql: str, timeout: float = 60) -> object:
        """Run a query that returns one JSON value (one row, one column) and parse it."""
        out = self._run(
            [
                _binary("psql"),
                "--no-password",
                "--no-psqlrc",
                "--tuples-only",
                "--no-align",
                "--quiet",
                "--set=ON_ERROR_STOP=1",
                "--dbname={dsn}",
                "--command=" + sql,
            ],
            timeout,
        )
        return json.loads(out) if out.strip() else None

    def execute(self, sql: str, timeout: float = 60) -> None:
        self._run(
            [
                _binary("psql"),
                "--no-password",
                "--no-psqlrc",
                "--quiet",
                "--set=ON_ERROR_STOP=1",
                "--dbname={dsn}",
                "--command=" + sql,
            ],
            timeout,
        )

    def describe(self) -> dict:
        """Connect and report the database name, server version and address."""
        return self.query_json(
            "select json_build_object("
            "'database', current_database(),"
            "'server_version', current_setting('server_version'),"
            "'server_version_num', current_setting('server_version_num')::int,"
            "'address', coalesce(host(inet_server_addr()) || ':' || inet_server_port(), 'local socket'))"
        )

    def dump(self, destination: Path) -> None:
        """``pg_dump --format=custom`` of the whole database into a local file."""
        self._run(
            [_binary("pg_dump"), "--no-password", "--format=custom", "--file", str(destination), "--dbname={dsn}"]
        )

    def restore(self, archive: Path, jobs: int = 1) -> None:
        """``pg_restore`` an archive into this (empty) database, stopping at the first error.

        Owners and privileges are not restored: the target has its own roles.
        """
        self._run(
            [
                _binary("pg_restore"),
                "--no-password",
                "--exit-on-error",
                "--no-owner",
                "--no-privileges",
                f"--jobs={jobs}",
                "--dbname={dsn}",
                str(archive),
            ]
        )


def archive_entries(archive: Path) -> int:
    """Read a custom-format archive's table of contents; return how many entries it has.

    Raises ClientError when pg_restore cannot read the archive.
    """
    done = subprocess.run(
        [_binary("pg_restore"), "--list", str(archive)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ClientError(_summary(done.stderr or done.stdout))
    return sum(1 for line in done.stdout.splitlines() if line and not line.startswith(";"))


def pg_dump_version() -> str:
    done = subprocess.run([_binary("pg_dump"), "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"
