"""The database exporter's queries of this repository, run as CloudNativePG's exporter would.

k8s/postgres/monitoring-queries.yml.j2 adds two queries to the exporter in every instance
(spec.monitoring.customQueriesConfigMap): the newest heartbeat row and the newest verified
logical dump, which the heartbeat and backup-age alerts read. CloudNativePG 1.30.0 runs a
query's predicate_query first and the query only when it returns true, in each of
target_databases, as the role cnpg_metrics_exporter, which inherits pg_monitor
(pkg/management/postgres/metrics/parser.go and collector.go; docs/src/monitoring.md). Here the
rendered queries run the same way against a real PostgreSQL, as a role that is only a member
of pg_monitor, before and after heartbeat and pg-dump-to-gcs wrote their rows.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
import yaml

from support import run_tool
from support.postgres import PG_BINDIR

# The fields CloudNativePG 1.30.0 reads from a query (UserQuery, parser.go).
QUERY_FIELDS = {
    "query",
    "predicate_query",
    "metrics",
    "master",
    "primary",
    "cache_seconds",
    "runonserver",
    "target_databases",
    "name",
}


@pytest.fixture(scope="module")
def queries(rendered_root):
    path = rendered_root / "production" / "europe-west1" / "postgres" / "monitoring-queries.yml"
    (config_map,) = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return yaml.safe_load(config_map["data"]["queries"])


@pytest.fixture
def exporter(postgres_database):
    """Runs SQL in the test database as a login role that is only a member of pg_monitor."""
    role = "exporter_" + uuid.uuid4().hex[:8]
    postgres_database.psql(f"create role {role} login password 'exporter' in role pg_monitor")
    dsn = postgres_database.server.dsn(postgres_database.name, user=role, password="exporter")

    def run(sql: str) -> str:
        done = subprocess.run(
            [str(PG_BINDIR / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    yield run
    postgres_database.psql(f"drop owned by {role}; drop role {role}")


def collect(query: dict, run) -> str | None:
    """The metric's value as CloudNativePG collects it: nothing when the predicate is false."""
    assert set(query) <= QUERY_FIELDS
    if run(query["predicate_query"]) != "t":
        return None
    return run(query["query"])


def test_the_heartbeat_query_reports_the_newest_row_to_pg_monitor(queries, exporter, postgres_database):
    query = queries["ops_heartbeat"]
    assert query["target_databases"] == ["app"]
    assert [list(m) for m in query["metrics"]] == [["last_written_timestamp_seconds"]]
    # Before the first heartbeat the table is missing: the predicate keeps the query from failing.
    assert collect(query, exporter) is None
    written = run_tool("heartbeat", "--dsn", postgres_database.dsn, "--source", "test")
    assert written.returncode == 0, written.stderr
    value = collect(query, exporter)
    assert value is not None and abs(float(value) - time.time()) < 60


def test_the_logical_backup_query_reports_the_newest_verified_dump(
    queries, exporter, postgres_database, gcs_emulator, gcs_bucket
):
    query = queries["ops_logical_backup"]
    assert collect(query, exporter) is None
    postgres_database.psql("create table users (username text primary key); insert into users values ('Ann')")
    done = run_tool(
        "pg-dump-to-gcs",
        "backup",
        "--dsn",
        postgres_database.dsn,
        "--bucket",
        gcs_bucket,
        "--cluster",
        "hello-db",
        env=gcs_emulator.env(),
    )
    assert done.returncode == 0, done.stderr
    value = collect(query, exporter)
    assert value is not None and abs(float(value) - time.time()) < 60
    recorded = postgres_database.psql("select to_json(object) from ops_logical_backup")
    assert json.loads(recorded) == json.loads(done.stdout)["object"]
