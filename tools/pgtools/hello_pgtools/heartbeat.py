"""Write one heartbeat row into the app database: the restore drills' RPO yardstick.

Run every minute by a CronJob in the primary region. Creates the table when it is missing:

  ops_heartbeat(written_at timestamptz primary key default clock_timestamp(), source text)

(readable by pg_monitor, so that the database's exporter reports the newest row), inserts a
row stamped by the database server's clock, and deletes rows older than --keep-days. A
restored copy's newest written_at, compared with the moment the drill started, is the
measured RPO: how much recent writing the restore lost.

Exit status: 0 written (the new row is printed as JSON), 1 a step failed (one line on
stderr), 2 bad usage.

Example: heartbeat --dsn "$DATABASE_URL" --source hello-db/europe-west1
"""

from __future__ import annotations

import argparse
import json
import sys

from .cli import EnvDefaults, non_negative_int, run
from .errors import StepFailed
from .postgres import ClientError, Database

PROG = "heartbeat"

# One statement, so the table, the row and the clean-up succeed or fail together.
WRITE_HEARTBEAT = """
create table if not exists ops_heartbeat (
    written_at timestamp with time zone primary key default clock_timestamp(),
    source text not null default ''
);
-- CloudNativePG's exporter (cnpg_metrics_exporter, a member of pg_monitor) reads the newest
-- row for the heartbeat alert (k8s/postgres/monitoring-queries.yml.j2).
grant select on ops_heartbeat to pg_monitor;
with removed as (
    delete from ops_heartbeat where written_at < now() - make_interval(days => {keep_days})
), written as (
    insert into ops_heartbeat (source) values ({source}) returning written_at, source
)
select json_build_object('written_at', written_at, 'source', source) from written;
"""


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    env = EnvDefaults()
    env.add(parser, "--dsn", "DATABASE_URL", "libpq DSN of the app database (primary)", required=True)
    env.add(parser, "--source", "HEARTBEAT_SOURCE", "who writes the row (cluster/region)", default="")
    env.add(
        parser,
        "--keep-days",
        "HEARTBEAT_KEEP_DAYS",
        "delete rows older than this many days",
        default="7",
        kind=non_negative_int,
    )
    args = parser.parse_args(argv)
    env.check(parser, args)
    db = Database(args.dsn)
    statement = WRITE_HEARTBEAT.format(keep_days=args.keep_days, source=sql_literal(args.source))
    try:
        row = db.query_json(statement)
    except ClientError as error:
        raise StepFailed(  # noqa: B904 (the cause is the message)
            "write-heartbeat",
            f"cannot write a heartbeat into {db}: {error}",
            "the DSN, that the server is a primary (not in recovery), and the user's CREATE/INSERT rights",
        )
    print(json.dumps(row))
    return 0


def main() -> None:
    """The console entry point ``heartbeat``."""
    run(PROG, lambda: command(sys.argv[1:]))


if __name__ == "__main__":
    main()
