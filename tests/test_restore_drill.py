"""The restore drill's logical path and its verification, for real.

A "primary" database (on ``postgres_server``) holds the service's tables, its migration
table and heartbeats written by the installed heartbeat; pg-dump-to-gcs dumps it into the
GCS emulator; restore-drill restores the newest dump into a scratch database on a
separate server (``scratch_postgres_server``), verifies it, and writes its JSON report under
drills/ in the bucket. The negative tests break one thing each and expect a failed drill
with the reason in the report.

Run with ``-s`` to see the measured RTO, RPO and data size.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import re
import threading
from typing import ClassVar

import pytest

from support import run_tool
from support.net import free_port
from support.postgres import start_standby

CLUSTER = "hello-db"
ENVIRONMENT = "test"
# HELLO_DRILL_USERS scales the data set, to measure the figures on more data.
USERS = int(os.environ.get("HELLO_DRILL_USERS", "20000"))
NEWEST_MIGRATION = "m20260301_000002_add_updated_at"

SERVICE_SCHEMA = f"""
create table users (
    username text primary key,
    date_of_birth date not null,
    updated_at timestamp with time zone not null
);
insert into users
select 'user' || n, date '1960-01-01' + (n % 20000), now() - n * interval '1 second'
from generate_series(1, {USERS}) as n;
create table seaql_migrations (version varchar not null primary key, applied_at bigint not null);
insert into seaql_migrations values
    ('m20260101_000001_create_users', 1767225600), ('{NEWEST_MIGRATION}', 1772323200);
"""


def drill_args(primary, scratch_server, bucket: str, *extra: str) -> list[str]:
    return [
        "logical",
        "--bucket",
        bucket,
        "--cluster",
        CLUSTER,
        "--database",
        primary.name,
        "--target-dsn",
        scratch_server.dsn("postgres"),
        "--environment",
        ENVIRONMENT,
        "--max-rto-seconds",
        "300",
        "--max-rpo-seconds",
        "600",
        "--expected-migration",
        NEWEST_MIGRATION,
        "--table",
        f"users={USERS}",
        *extra,
    ]


def run_drill(args: list[str], env: dict):
    """Run the drill; return (exit status, report dict, stderr)."""
    done = run_tool("restore-drill", *args, env=env)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"restore-drill printed no JSON report (exit {done.returncode}): {done.stderr}")
    return done.returncode, report, done.stderr


def checks(report: dict) -> dict[str, bool]:
    return {check["name"]: check["passed"] for check in report["checks"]}


def stored_report(gcs_emulator, bucket: str, report: dict) -> dict:
    """The report as written to the bucket, found by listing drills/ (not by trusting the path)."""
    blobs = list(gcs_emulator.client().list_blobs(bucket, prefix=f"drills/{ENVIRONMENT}/{report['path']}/"))
    assert [f"gs://{bucket}/{blob.name}" for blob in blobs] == [report["report_location"]]
    return json.loads(blobs[0].download_as_bytes())


@pytest.fixture
def primary(database_from):
    """The app database in the primary region: service tables (a copy of a template seeded once
    per run) and two heartbeats."""
    database = database_from(SERVICE_SCHEMA)
    for _ in range(2):
        written = run_tool("heartbeat", "--dsn", database.dsn, "--source", "primary/test")
        assert written.returncode == 0, written.stderr
    return database


def take_dump(primary, bucket: str, env: dict) -> dict:
    done = run_tool("pg-dump-to-gcs", "backup", "--dsn", primary.dsn, "--bucket", bucket, "--cluster", CLUSTER, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class _Pushgateway(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str]]] = []

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.received.append((self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def pushgateway():
    """A minimal HTTP server that records what is PUT to it, like a Pushgateway would accept."""
    _Pushgateway.received = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Pushgateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, _Pushgateway.received
    server.shutdown()
    server.server_close()


def test_logical_drill_restores_the_newest_dump_and_reports(
    primary, scratch_postgres_server, gcs_emulator, gcs_bucket, pushgateway, measurement
):
    env = gcs_emulator.env()
    take_dump(primary, gcs_bucket, env)  # an older dump, which the drill must not pick
    primary.psql("insert into users values ('newest', '1990-05-17', now())")
    assert run_tool("heartbeat", "--dsn", primary.dsn).returncode == 0
    newest = take_dump(primary, gcs_bucket, {**env})
    server, received = pushgateway
    gateway = f"http://127.0.0.1:{server.server_port}"

    status, report, stderr = run_drill(
        [*drill_args(primary, scratch_postgres_server, gcs_bucket), "--table", "users=1", "--pushgateway-url", gateway],
        env,
    )

    assert status == 0, report["failure"]
    assert report["result"] == "passed" and report["failure"] is None
    assert all(checks(report).values())
    assert set(checks(report)) >= {
        "backup-age",
        "download",
        "restore",
        "connect",
        "not-in-recovery",
        "migration-version",
        "row-count:users",
        "heartbeat-rpo",
        "rto",
    }
    assert [backup["id"] for backup in report["backups"]] == [newest["object"]]
    assert report["row_counts"]["users"] == USERS + 1, "the newest dump has the newest row"
    assert report["migration_version"] == NEWEST_MIGRATION
    newest_heartbeat = primary.psql("select to_json(max(written_at)) from ops_heartbeat").strip('"')
    assert dt.datetime.fromisoformat(report["newest_heartbeat"]) == dt.datetime.fromisoformat(newest_heartbeat).replace(
        microsecond=0
    )
    assert 0 < report["rto_seconds"] < 300
    assert 0 <= report["rpo_seconds"] < 600
    assert report["data_size_bytes"] > int(primary.psql("select pg_relation_size('users')")), "the copy holds the data"
    assert stored_report(gcs_emulator, gcs_bucket, report) == report

    # The scratch database is gone again.
    assert "drill_" not in scratch_postgres_server.psql("select string_agg(datname, ',') from pg_database")
    line = re.search(
        r"^restore-drill: event=restore_drill path=logical environment=test cluster=hello-db "
        r"result=passed success=1 rto_seconds=[\d.]+ rpo_seconds=[\d.]+ data_size_bytes=\d+ ",
        stderr,
        re.M,
    )
    assert line, stderr
    ((path, body),) = received
    assert path == "/metrics/job/hello_restore_drill/environment/test/path/logical"
    assert "hello_restore_drill_success 1\n" in body
    assert f"hello_restore_drill_data_size_bytes {report['data_size_bytes']}\n" in body
    measurement(
        f"restore-drill logical: RTO {report['rto_seconds']}s, RPO {report['rpo_seconds']}s, "
        f"restored database {report['data_size_bytes']} bytes ({USERS + 1} users), "
        f"dump {report['backups'][0]['size_bytes']} bytes"
    )


def _put_dump(gcs_emulator, bucket: str, primary, body: bytes) -> str:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    name = f"logical/{CLUSTER}/{primary.name}/{later:%Y%m%dT%H%M%SZ}.dump"
    gcs_emulator.client().bucket(bucket).blob(name).upload_from_string(body)
    return name


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_drill_fails_when_the_newest_dump_is_damaged(
    primary, scratch_postgres_server, gcs_emulator, gcs_bucket, damage
):
    env = gcs_emulator.env()
    good = take_dump(primary, gcs_bucket, env)
    whole = gcs_emulator.client().bucket(gcs_bucket).blob(good["name"]).download_as_bytes()
    body = b"this is not a pg_dump archive" if damage == "garbage" else whole[: len(whole) // 2]
    damaged = _put_dump(gcs_emulator, gcs_bucket, primary, body)

    status, report, stderr = run_drill(drill_args(primary, scratch_postgres_server, gcs_bucket), env)

    assert status == 1
    assert report["result"] == "failed"
    assert report["backups"][0]["id"] == f"gs://{gcs_bucket}/{damaged}"
    failed = [name for name, passed in checks(report).items() if not passed]
    assert failed == (["verify-dump"] if damage == "garbage" else ["restore"]), report["checks"]
    assert damaged in report["failure"]
    assert f"drill FAILED: {report['failure']}" in stderr
    assert stored_report(gcs_emulator, gcs_bucket, report)["result"] == "failed"
    assert "drill_" not in scratch_postgres_server.psql("select string_agg(datname, ',') from pg_database")


def test_drill_fails_when_there_is_no_dump(primary, scratch_postgres_server, gcs_emulator, gcs_bucket):
    status, report, _ = run_drill(drill_args(primary, scratch_postgres_server, gcs_bucket), gcs_emulator.env())
    assert status == 1
    assert report["result"] == "failed"
    assert report["failure"].startswith(f"find-dump: no dump under gs://{gcs_bucket}/logical/{CLUSTER}/{primary.name}/")
    assert report["rto_seconds"] is None and report["backups"] == []
    assert stored_report(gcs_emulator, gcs_bucket, report)["failure"] == report["failure"]


def test_drill_fails_when_the_rpo_is_above_its_threshold(
    database_from, scratch_postgres_server, gcs_emulator, gcs_bucket
):
    postgres_database = database_from(SERVICE_SCHEMA)
    # The heartbeat writer stopped two hours ago.
    assert run_tool("heartbeat", "--dsn", postgres_database.dsn).returncode == 0
    postgres_database.psql("update ops_heartbeat set written_at = written_at - interval '2 hours'")
    take_dump(postgres_database, gcs_bucket, gcs_emulator.env())

    status, report, _ = run_drill(
        drill_args(postgres_database, scratch_postgres_server, gcs_bucket), gcs_emulator.env()
    )

    assert status == 1
    assert [name for name, passed in checks(report).items() if not passed] == ["heartbeat-rpo"]
    assert 7200 <= report["rpo_seconds"] < 7200 + 300
    assert report["failure"].startswith("heartbeat-rpo: newest heartbeat") and "threshold 600s" in report["failure"]


@pytest.mark.parametrize(
    ("extra", "failing", "reason"),
    [
        pytest.param(
            ["--expected-migration", "m20270101_000003_future"],
            "migration-version",
            "expected m20270101_000003_future",
            id="schema-behind",
        ),
        pytest.param(["--table", "users=1000000"], "row-count:users", "at least 1000000 expected", id="rows-missing"),
        pytest.param(["--max-rto-seconds", "0.001"], "rto", "threshold 0.001s", id="rto-too-slow"),
        pytest.param(["--started-at", "2099-01-01T00:00:00Z"], "backup-age", "threshold 93600s", id="dump-too-old"),
    ],
)
def test_drill_names_the_check_that_failed(
    primary, scratch_postgres_server, gcs_emulator, gcs_bucket, extra, failing, reason
):
    take_dump(primary, gcs_bucket, gcs_emulator.env())
    status, report, _ = run_drill(
        [*drill_args(primary, scratch_postgres_server, gcs_bucket), *extra], gcs_emulator.env()
    )
    assert status == 1
    assert not checks(report)[failing]
    assert report["failure"].startswith(failing + ":") and reason in report["failure"], report["failure"]


def test_verify_checks_a_database_restored_elsewhere(primary, gcs_emulator, gcs_bucket):
    """The physical path's role restores a CloudNativePG cluster and calls ``verify``."""
    started = dt.datetime.now(dt.UTC).isoformat()
    done = run_tool(
        "restore-drill",
        "verify",
        "--dsn",
        primary.dsn,
        "--started-at",
        started,
        "--rto-seconds",
        "412.5",
        "--backup-id",
        "backup-20261128020000",
        "--cluster",
        CLUSTER,
        "--environment",
        ENVIRONMENT,
        "--report-bucket",
        gcs_bucket,
        "--max-rto-seconds",
        "1800",
        "--max-rpo-seconds",
        "600",
        "--expected-migration",
        NEWEST_MIGRATION,
        env=gcs_emulator.env(),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["path"] == "physical" and report["result"] == "passed"
    assert report["rto_seconds"] == 412.5
    assert report["backups"] == [{"id": "backup-20261128020000"}]
    assert stored_report(gcs_emulator, gcs_bucket, report) == report


def test_verify_fails_on_a_copy_still_in_recovery(primary, postgres_server, gcs_emulator, gcs_bucket):
    standby = start_standby(postgres_server)
    try:
        done = run_tool(
            "restore-drill",
            "verify",
            "--dsn",
            standby.dsn(primary.name),
            "--rto-seconds",
            "10",
            "--cluster",
            CLUSTER,
            "--environment",
            ENVIRONMENT,
            "--report-bucket",
            gcs_bucket,
            "--max-rto-seconds",
            "1800",
            "--max-rpo-seconds",
            "600",
            env=gcs_emulator.env(),
        )
    finally:
        standby.stop()
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["failure"].startswith("not-in-recovery: pg_is_in_recovery() is true")
    assert checks(report)["heartbeat-rpo"], "the standby holds the primary's data"


def test_a_report_that_cannot_be_written_fails_the_drill(primary, gcs_emulator):
    done = run_tool(
        "restore-drill",
        "verify",
        "--dsn",
        primary.dsn,
        "--rto-seconds",
        "1",
        "--cluster",
        CLUSTER,
        "--report-bucket",
        "no-such-bucket",
        "--max-rto-seconds",
        "60",
        "--max-rpo-seconds",
        "600",
        env=gcs_emulator.env(),
    )
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["report_location"] is None and report["result"] == "failed"
    assert report["failure"].startswith("publish-report: cannot write gs://no-such-bucket/drills/unknown/physical/")
    assert "result=failed success=0" in done.stderr


def test_an_unreachable_pushgateway_fails_the_drill(primary, gcs_emulator, gcs_bucket):
    done = run_tool(
        "restore-drill",
        "verify",
        "--dsn",
        primary.dsn,
        "--rto-seconds",
        "1",
        "--cluster",
        CLUSTER,
        "--report-bucket",
        gcs_bucket,
        "--max-rto-seconds",
        "60",
        "--max-rpo-seconds",
        "600",
        "--pushgateway-url",
        f"http://127.0.0.1:{free_port()}",
        env=gcs_emulator.env(),
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["failure"].startswith("publish-metrics: cannot push")


def test_heartbeat_creates_its_table_and_prunes_old_rows(postgres_database):
    first = run_tool("heartbeat", "--dsn", postgres_database.dsn, "--source", "a")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["source"] == "a"
    postgres_database.psql("insert into ops_heartbeat values (now() - interval '8 days', 'ancient')")
    assert run_tool("heartbeat", "--dsn", postgres_database.dsn, "--keep-days", "7").returncode == 0
    assert postgres_database.psql("select string_agg(source, ',' order by written_at) from ops_heartbeat") == "a,"


def test_heartbeat_fails_loudly_on_a_bad_connection(postgres_server, postgres_database):
    done = run_tool("heartbeat", "--dsn", postgres_server.dsn(postgres_database.name, password="wrong"))
    assert done.returncode == 1
    assert (
        done.stderr.startswith("heartbeat: write-heartbeat failed:") and "password authentication failed" in done.stderr
    )


def test_heartbeat_refuses_to_write_on_a_standby(postgres_server, postgres_database):
    assert run_tool("heartbeat", "--dsn", postgres_database.dsn).returncode == 0
    standby = start_standby(postgres_server)
    try:
        done = run_tool("heartbeat", "--dsn", standby.dsn(postgres_database.name))
    finally:
        standby.stop()
    assert done.returncode == 1
    assert "write-heartbeat failed" in done.stderr and "read-only transaction" in done.stderr
