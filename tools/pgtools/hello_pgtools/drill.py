"""Restore drills: verify a restored database, measure RTO and RPO, report.

The verification is the same for both paths (a CloudNativePG recovery cluster, or a
pg_dump restored into a scratch database): not in recovery, the migration table at the
expected version, row counts of the app tables, the newest heartbeat giving the RPO against
the moment the drill started, and the RTO against its threshold.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import logical
from .errors import StepFailed
from .gcs import Gcs, GcsError
from .postgres import ClientError, Database, quote_identifier, with_database

REPORT_FORMAT = 1
HEARTBEAT_TABLE = "ops_heartbeat"
MIGRATION_TABLE = "seaql_migrations"


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Thresholds:
    rto_seconds: float
    rpo_seconds: float
    backup_age_seconds: float | None = None


@dataclass
class TableMinimum:
    """``--table users=10``: the table must exist and hold at least ``minimum`` rows."""

    table: str
    minimum: int = 0

    @classmethod
    def parse(cls, text: str) -> TableMinimum:
        """TABLE or TABLE=MINIMUM_ROWS"""
        table, _, minimum = text.partition("=")
        if not table or (minimum and not minimum.isdigit()):
            raise ValueError(text)
        return cls(table, int(minimum or 0))


@dataclass
class Drill:
    """The record of one drill; ``report()`` is the JSON document published."""

    path: str
    environment: str
    cluster: str
    database: str
    started_at: dt.datetime
    thresholds: Thresholds
    checks: list[Check] = field(default_factory=list)
    backups: list[dict] = field(default_factory=list)
    finished_at: dt.datetime | None = None
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    data_size_bytes: int | None = None
    row_counts: dict[str, int] = field(default_factory=dict)
    migration_version: str | None = None
    newest_heartbeat: str | None = None
    report_location: str | None = None

    def record(self, name: str, passed: bool, detail: str) -> bool:
        self.checks.append(Check(name, passed, detail))
        return passed

    def record_failure(self, failure: StepFailed) -> None:
        self.record(failure.step, False, f"{failure.problem} (check: {failure.check})")

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    @property
    def failure(self) -> str | None:
        failed = [check for check in self.checks if not check.passed]
        if not self.checks:
            return "no check ran"
        return f"{failed[0].name}: {failed[0].detail}" if failed else None

    def report(self) -> dict:
        return {
            "report": "hello-restore-drill",
            "format": REPORT_FORMAT,
            "path": self.path,
            "environment": self.environment,
            "cluster": self.cluster,
            "database": self.database,
            "started_at": logical.iso(self.started_at),
            "finished_at": logical.iso(self.finished_at) if self.finished_at else None,
            "rto_seconds": _round(self.rto_seconds),
            "rpo_seconds": _round(self.rpo_seconds),
            "thresholds": asdict(self.thresholds),
            "backups": self.backups,
            "data_size_bytes": self.data_size_bytes,
            "row_counts": self.row_counts,
            "migration_version": self.migration_version,
            "newest_heartbeat": self.newest_heartbeat,
            "checks": [asdict(check) for check in self.checks],
            "result": "passed" if self.passed else "failed",
            "failure": self.failure,
            "report_location": self.report_location,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def verify(drill: Drill, db: Database, expected_migration: str | None, tables: list[TableMinimum]) -> None:
    """Run the checks on a restored database and record them, with the RPO and RTO."""
    try:
        state = db.query_json(
            "select json_build_object('in_recovery', pg_is_in_recovery(),"
            " 'size', pg_database_size(current_database()), 'version', current_setting('server_version'))"
        )
    except ClientError as error:
        drill.record("connect", False, f"cannot query the restored database {db}: {error}")
        return
    drill.record("connect", True, f"{db}, PostgreSQL {state['version']}")
    drill.data_size_bytes = state["size"]
    drill.record(
        "not-in-recovery",
        not state["in_recovery"],
        "pg_is_in_recovery() is false: the copy accepts writes"
        if not state["in_recovery"]
        else "pg_is_in_recovery() is true: the copy is still replaying WAL or is a standby",
    )
    _check_migrations(drill, db, expected_migration)
    for wanted in tables:
        _check_rows(drill, db, wanted)
    _check_heartbeat(drill, db)
    if drill.rto_seconds is None:
        drill.record("rto", False, "the restore time was not measured")
    else:
        drill.record(
            "rto",
            drill.rto_seconds <= drill.thresholds.rto_seconds,
            f"restored in {drill.rto_seconds:.1f}s, threshold {drill.thresholds.rto_seconds:g}s",
        )


def _check_migrations(drill: Drill, db: Database, expected: str | None) -> None:
    try:
        newest = db.query_json(f"select to_json(max(version)) from {MIGRATION_TABLE}")
    except ClientError as error:
        drill.record("migration-version", False, f"cannot read {MIGRATION_TABLE}: {error}")
        return
    drill.migration_version = newest
    if newest is None:
        drill.record("migration-version", False, f"{MIGRATION_TABLE} is empty: no migration was ever applied")
    elif expected and newest != expected:
        drill.record("migration-version", False, f"newest migration {newest}, expected {expected}")
    else:
        drill.record(
            "migration-version",
            True,
            f"newest migration {newest}" + ("" if expected else " (no expected version given)"),
        )


def _check_rows(drill: Drill, db: Database, wanted: TableMinimum) -> None:
    name = f"row-count:{wanted.table}"
    try:
        count = db.query_json(f"select to_json(count(*)) from {quote_identifier(wanted.table)}")
    except ClientError as error:
        drill.record(name, False, f"cannot count {wanted.table}: {error}")
        return
    drill.row_counts[wanted.table] = count
    drill.record(name, count >= wanted.minimum, f"{count} rows, at least {wanted.minimum} expected")


def _check_heartbeat(drill: Drill, db: Database) -> None:
    try:
        newest = db.query_json(f"select to_json(max(written_at)) from {HEARTBEAT_TABLE}")
    except ClientError as error:
        drill.record(
            "heartbeat-rpo", False, f"cannot read {HEARTBEAT_TABLE}: {error} (is the heartbeat CronJob running?)"
        )
        return
    if newest is None:
        drill.record("heartbeat-rpo", False, f"{HEARTBEAT_TABLE} is empty (is the heartbeat CronJob running?)")
        return
    written = dt.datetime.fromisoformat(newest)
    drill.newest_heartbeat = logical.iso(written)
    drill.rpo_seconds = (drill.started_at - written).total_seconds()
    limit = drill.thresholds.rpo_seconds
    drill.record(
        "heartbeat-rpo",
        drill.rpo_seconds <= limit,
        f"newest heartbeat {drill.newest_heartbeat}, drill started {logical.iso(drill.started_at)}: "
        f"RPO {drill.rpo_seconds:.1f}s, threshold {limit:g}s",
    )


def run_logical(
    drill: Drill,
    gcs: Gcs,
    folder: logical.DumpFolder,
    target: Database,
    scratch: str,
    expected_migration: str | None,
    tables: list[TableMinimum],
    keep_scratch: bool,
    log: Callable[[str], None],
) -> None:
    """Restore the newest dump of ``folder`` into database ``scratch`` on the target's server,
    verify it, and drop it again (unless ``keep_scratch``)."""
    clock = time.monotonic()
    copy = Database(with_database(target.dsn, scratch))
    created = False
    try:
        item = logical.newest_dump(gcs, folder)
        taken = logical.dump_time(item.name)
        drill.backups.append(
            {
                "id": f"gs://{folder.bucket}/{item.name}",
                "generation": str(item.generation),
                "size_bytes": item.size,
                "md5": item.md5_hash,
                "taken_at": logical.iso(taken),
            }
        )
        age = (drill.started_at - taken).total_seconds()
        limit = drill.thresholds.backup_age_seconds
        drill.record(
            "backup-age",
            limit is None or age <= limit,
            f"newest dump taken {logical.iso(taken)}, {age:.0f}s before the drill"
            + (f", threshold {limit:g}s" if limit is not None else ""),
        )
        log(f"restoring gs://{folder.bucket}/{item.name} into database {scratch!r} of {target}")
        with tempfile.TemporaryDirectory(prefix="restore-drill-") as tmp:
            archive = Path(tmp) / "database.dump"
            entries = logical.download(gcs, item, archive)
            drill.record("download", True, f"{item.size} bytes, MD5 matches GCS, {entries} archive entries")
            logical.drop_database(copy)
            logical.create_database(copy)
            created = True
            logical.restore(archive, copy, drill.backups[-1]["id"])
        drill.rto_seconds = time.monotonic() - clock
        drill.record("restore", True, f"pg_restore into {scratch!r} finished")
        verify(drill, copy, expected_migration, tables)
    except StepFailed as failure:
        drill.record_failure(failure)
    finally:
        if created and not keep_scratch:
            try:
                logical.drop_database(copy)
            except StepFailed as failure:
                drill.record_failure(failure)


def metrics_line(drill: Drill) -> str:
    """One fixed-format line (logfmt) for log-based metrics."""

    def number(value) -> str:
        return "NaN" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    fields = {
        "event": "restore_drill",
        "path": drill.path,
        "environment": drill.environment or "unknown",
        "cluster": drill.cluster,
        "result": "passed" if drill.passed else "failed",
        "success": 1 if drill.passed else 0,
        "rto_seconds": number(drill.rto_seconds),
        "rpo_seconds": number(drill.rpo_seconds),
        "data_size_bytes": number(drill.data_size_bytes),
        "started_at": logical.iso(drill.started_at),
        "report": drill.report_location or "none",
    }
    return " ".join(f"{key}={value}" for key, value in fields.items())


def push_metrics(drill: Drill, url: str, timeout: float = 30) -> None:
    """PUT the drill's figures to a Prometheus Pushgateway (grouped by environment and path)."""
    finished = (drill.finished_at or logical.utc_now()).timestamp()
    gauges = {
        "hello_restore_drill_success": 1 if drill.passed else 0,
        "hello_restore_drill_rto_seconds": drill.rto_seconds,
        "hello_restore_drill_rpo_seconds": drill.rpo_seconds,
        "hello_restore_drill_data_size_bytes": drill.data_size_bytes,
        "hello_restore_drill_last_run_timestamp_seconds": finished,
    }
    lines = []
    for name, value in gauges.items():
        lines.append(f"# TYPE {name} gauge")
        lines.append(f"{name} {'NaN' if value is None or (isinstance(value, float) and math.isnan(value)) else value}")
    group = "/".join(
        urllib.parse.quote(part, safe="")
        for part in ("job", "hello_restore_drill", "environment", drill.environment or "unknown", "path", drill.path)
    )
    request = urllib.request.Request(
        f"{url.rstrip('/')}/metrics/{group}",
        data=("\n".join(lines) + "\n").encode(),
        headers={"Content-Type": "text/plain; version=0.0.4"},
        method="PUT",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            pass
    except (urllib.error.URLError, OSError) as error:
        raise StepFailed(
            "publish-metrics",
            f"cannot push to the Pushgateway {url}: {error}",
            "the Pushgateway URL and that it is reachable from where the drill runs",
        ) from error


def publish_report(drill: Drill, gcs: Gcs, bucket: str, prefix: str) -> str:
    """Write the report to gs://bucket/prefix/<environment>/<path>/<start>.json; return its URL."""
    name = (
        f"{prefix.strip('/')}/{drill.environment or 'unknown'}/{drill.path}/"
        f"{drill.started_at.strftime(logical.TIMESTAMP_FORMAT)}.json"
    )
    location = f"gs://{bucket}/{name}"
    drill.report_location = location
    body = json.dumps(drill.report(), indent=2).encode()
    try:
        gcs.upload(
            bucket,
            name,
            body,
            "application/json",
            {"hello-result": "passed" if drill.passed else "failed"},
            if_generation_match=None,
        )
    except GcsError as error:
        drill.report_location = None
        raise StepFailed(
            "publish-report",
            f"cannot write {location}: {error}",
            "the report bucket and the drill's write access to it",
        ) from error
    return location
