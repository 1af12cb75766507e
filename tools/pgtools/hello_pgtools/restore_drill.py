"""Restore drills: prove a backup by restoring it, checking it, timing it and reporting.

  logical   find the newest pg_dump under gs://BUCKET/PREFIX/CLUSTER/DATABASE/, check its age,
            download it (MD5 against GCS, contents list read by pg_restore), restore it into a
            scratch database on the drill server (--target-dsn: a user that may create
            databases), verify it, drop the scratch database. RTO = find + download + restore.
  verify    verify a database restored by someone else (the physical path: a CloudNativePG
            recovery Cluster); the caller measured the RTO (apply to Ready) and passes it with
            --rto-seconds, and names the backups it used with --backup-id.

Checks (each recorded with pass/fail and a detail): not in recovery (pg_is_in_recovery()),
the newest version in seaql_migrations (equal to --expected-migration when given), row
counts of each --table (TABLE or TABLE=MINIMUM, default: users), the newest
ops_heartbeat.written_at giving the RPO = drill start - newest heartbeat (at most
--max-rpo-seconds), the RTO (at most --max-rto-seconds); logical also: backup-age,
download, restore.

Output: the JSON report on stdout (report, format, path, environment, cluster, database,
started_at, finished_at, rto_seconds, rpo_seconds, thresholds, backups, data_size_bytes,
row_counts, migration_version, newest_heartbeat, checks[{name, passed, detail}], result
"passed"|"failed", failure, report_location), also written to
gs://REPORT_BUCKET/REPORT_PREFIX/ENVIRONMENT/PATH/<UTC start>.json; on stderr the progress
and one fixed-format line for log-based metrics:
  event=restore_drill path=logical environment=staging cluster=hello-db result=passed
  success=1 rto_seconds=12.345 rpo_seconds=61.200 data_size_bytes=8123456 started_at=...
  report=gs://...
With --pushgateway-url the same figures are PUT to a Prometheus Pushgateway as gauges
hello_restore_drill_{success,rto_seconds,rpo_seconds,data_size_bytes,last_run_timestamp_seconds}
(job hello_restore_drill, grouped by environment and path).

Exit status: 0 the drill passed and its report was written, 1 the drill failed (the reason
is the report's "failure", also printed on stderr; a report or metrics push that could not
be written fails the drill too, and the printed report says so), 2 bad usage. GCS access as
for pg-dump-to-gcs (STORAGE_EMULATOR_HOST, else google.auth.default(): on GKE the metadata
server, Workload Identity).

Examples:
  restore-drill logical --bucket hello-backups --cluster hello-db --database app \\
      --target-dsn "$DRILL_TARGET_DATABASE_URL" --environment staging \\
      --max-rto-seconds 1800 --max-rpo-seconds 90000 --expected-migration m20260101_000001_create_users
  restore-drill verify --dsn "$DRILL_DATABASE_URL" --started-at 2026-11-28T03:00:00Z \\
      --rto-seconds 412.5 --backup-id backup-20261128020000 --environment staging \\
      --cluster hello-db --report-bucket hello-backups --max-rto-seconds 1800 --max-rpo-seconds 600
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys

from . import drill as drills
from . import logical
from .cli import EnvDefaults, positive_float, run
from .errors import StepFailed
from .gcs import Gcs
from .postgres import Database

PROG = "restore-drill"


def timestamp(text: str) -> dt.datetime:
    """an ISO 8601 time with a zone, e.g. 2026-11-28T03:00:00Z"""
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(text)
    return moment


def seconds(text: str) -> float:
    """a number of seconds >= 0"""
    value = float(text)
    if not value >= 0:
        raise ValueError(text)
    return value


def path_name(text: str) -> str:
    """a lower-case name such as physical (letters, digits, dashes)"""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", text):
        raise ValueError(text)
    return text


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    env = EnvDefaults()

    def common(sub: argparse.ArgumentParser) -> None:
        env.add(sub, "--environment", "DRILL_ENVIRONMENT", "environment name for the report", default="unknown")
        env.add(
            sub, "--cluster", "BACKUP_CLUSTER", "name of the database cluster whose backups are drilled", required=True
        )
        env.add(sub, "--database", "BACKUP_DATABASE", "the app database", default="app")
        env.add(
            sub,
            "--started-at",
            "DRILL_STARTED_AT",
            "when the drill started, for the RPO (default: now)",
            kind=timestamp,
        )
        env.add(sub, "--max-rto-seconds", "DRILL_MAX_RTO_SECONDS", "RTO threshold", required=True, kind=positive_float)
        env.add(sub, "--max-rpo-seconds", "DRILL_MAX_RPO_SECONDS", "RPO threshold", required=True, kind=positive_float)
        env.add(sub, "--expected-migration", "DRILL_EXPECTED_MIGRATION", "newest seaql_migrations version expected")
        sub.add_argument(
            "--table",
            dest="tables",
            action="append",
            type=drills.TableMinimum.parse,
            metavar="TABLE[=MIN]",
            help="app table whose rows to count, optionally with a minimum (repeatable; default: users)",
        )
        env.add(sub, "--report-prefix", "DRILL_REPORT_PREFIX", "folder of the reports in the bucket", default="drills")
        env.add(sub, "--pushgateway-url", "DRILL_PUSHGATEWAY_URL", "Prometheus Pushgateway to push the figures to")

    sub = commands.add_parser("logical", help="restore the newest pg_dump into a scratch database and verify it")
    env.add(sub, "--bucket", "BACKUP_BUCKET", "GCS bucket of the dumps", required=True)
    env.add(sub, "--prefix", "BACKUP_PREFIX", "folder of the dumps in the bucket", default="logical")
    env.add(
        sub,
        "--target-dsn",
        "DRILL_TARGET_DATABASE_URL",
        "libpq DSN on the drill server, as a user that may create databases",
        required=True,
    )
    sub.add_argument(
        "--scratch-database", help="database to restore into (default: drill_<UTC start>); dropped first if it exists"
    )
    sub.add_argument("--keep-scratch-database", action="store_true", help="leave the scratch database for inspection")
    env.add(
        sub,
        "--max-backup-age-seconds",
        "DRILL_MAX_BACKUP_AGE_SECONDS",
        "fail when the newest dump is older",
        default="93600",
        kind=positive_float,
    )
    env.add(sub, "--report-bucket", "DRILL_REPORT_BUCKET", "bucket for the report (default: --bucket)")
    common(sub)

    sub = commands.add_parser("verify", help="verify a database restored by someone else (physical path)")
    env.add(sub, "--dsn", "DRILL_DATABASE_URL", "libpq DSN of the restored database", required=True)
    env.add(
        sub,
        "--rto-seconds",
        "DRILL_RTO_SECONDS",
        "measured time from restore start to a usable database",
        required=True,
        kind=seconds,
    )
    sub.add_argument(
        "--backup-id",
        dest="backup_ids",
        action="append",
        default=[],
        help="backup the restore used, for the report (repeatable)",
    )
    sub.add_argument(
        "--path",
        default="physical",
        type=path_name,
        help="name of the restore path in the report and the report's folder (default: physical)",
    )
    env.add(sub, "--report-bucket", "DRILL_REPORT_BUCKET", "bucket for the report", required=True)
    common(sub)

    args = parser.parse_args(argv)
    env.check(parser, args)
    args.tables = args.tables or [drills.TableMinimum("users")]
    args.started_at = args.started_at or logical.utc_now()
    return args


def log(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def command(argv: list[str]) -> int:
    args = parse_args(argv)
    gcs = Gcs()
    thresholds = drills.Thresholds(
        args.max_rto_seconds, args.max_rpo_seconds, getattr(args, "max_backup_age_seconds", None)
    )
    path = "logical" if args.command == "logical" else args.path
    drill = drills.Drill(path, args.environment, args.cluster, args.database, args.started_at, thresholds)
    if args.command == "logical":
        folder = logical.DumpFolder(args.bucket, args.prefix, args.cluster, args.database)
        scratch = args.scratch_database or "drill_" + args.started_at.strftime("%Y%m%d_%H%M%S")
        drills.run_logical(
            drill,
            gcs,
            folder,
            Database(args.target_dsn),
            scratch,
            args.expected_migration,
            args.tables,
            args.keep_scratch_database,
            log,
        )
        report_bucket = args.report_bucket or args.bucket
    else:
        drill.backups = [{"id": backup_id} for backup_id in args.backup_ids]
        drill.rto_seconds = args.rto_seconds
        drills.verify(drill, Database(args.dsn), args.expected_migration, args.tables)
        report_bucket = args.report_bucket
    drill.finished_at = logical.utc_now()
    if args.pushgateway_url:
        try:
            drills.push_metrics(drill, args.pushgateway_url)
        except StepFailed as failure:
            drill.record_failure(failure)
    try:
        drills.publish_report(drill, gcs, report_bucket, args.report_prefix)
    except StepFailed as failure:
        # A drill nobody can read about has not proven anything: it fails too.
        drill.record_failure(failure)
    print(json.dumps(drill.report(), indent=2))
    log(drills.metrics_line(drill))
    if not drill.passed:
        log(f"drill FAILED: {drill.failure}")
    return 0 if drill.passed else 1


def main() -> None:
    """The console entry point ``restore-drill``."""
    run(PROG, lambda: command(sys.argv[1:]))


if __name__ == "__main__":
    main()
