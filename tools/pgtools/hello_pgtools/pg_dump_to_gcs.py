"""Logical backups of a PostgreSQL database to Google Cloud Storage, and their way back.

  backup    pg_dump --format=custom into a local temporary file, check that pg_restore can
            read it, upload it as a resumable upload (GCS creates the object only when every
            byte has arrived and the MD5 declared up front matches), compare the MD5 GCS
            reports with the bytes sent, then delete dumps older than --retention-days while
            always keeping the --keep-newest newest, and record the dump in the dumped
            database (table ops_logical_backup, readable by pg_monitor: the exporter reports
            its age for an alert). The object is gs://BUCKET/PREFIX/CLUSTER/DATABASE/<UTC
            start>.dump with metadata hello-source, hello-database, hello-cluster,
            hello-pg-server-version, hello-pg-dump-version, hello-size-bytes, hello-md5,
            hello-toc-entries, hello-started-at. Prints a JSON summary on stdout.
  list      the dumps of one database, newest first (--json: name, generation, size, MD5,
            creation time and metadata of each)
  download  fetch a dump (--object, else the newest), check its MD5 and contents list
  restore   download as above, then pg_restore into --target-dsn (an empty database;
            --create-database creates it first); owners and privileges are not restored
  prune     apply the retention rule alone

Connections are libpq DSNs (postgresql://user:password@host:port/db or key=value form);
GCS access goes through google-cloud-storage, with STORAGE_EMULATOR_HOST (an emulator, no
credentials) or else google.auth.default()'s credentials: on GKE the metadata server (Workload
Identity), on a workstation `gcloud auth application-default login`.
Exit status: 0 done, 1 a step failed (one line on stderr: the step, the problem and what to
check), 2 bad usage.

Example (in the CronJob, DATABASE_URL from CloudNativePG's app secret):
  pg-dump-to-gcs backup --bucket hello-backups --cluster hello-db
  pg-dump-to-gcs restore --bucket hello-backups --cluster hello-db --database app \\
      --target-dsn postgresql://postgres@scratch:5432/restored --create-database
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from google.cloud.storage import Blob

from . import logical
from .cli import EnvDefaults, non_negative_int, positive_int, run
from .errors import StepFailed
from .gcs import Gcs, GcsError
from .postgres import Database

PROG = "pg-dump-to-gcs"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    env = EnvDefaults()

    def where(sub: argparse.ArgumentParser, with_database_flag: bool) -> None:
        env.add(sub, "--bucket", "BACKUP_BUCKET", "GCS bucket of the dumps", required=True)
        env.add(sub, "--prefix", "BACKUP_PREFIX", "folder of the dumps in the bucket", default="logical")
        env.add(sub, "--cluster", "BACKUP_CLUSTER", "name of the database cluster the dumps come from", required=True)
        if with_database_flag:
            env.add(sub, "--database", "BACKUP_DATABASE", "database whose dumps to use", default="app")

    def retention(sub: argparse.ArgumentParser) -> None:
        env.add(
            sub,
            "--retention-days",
            "BACKUP_RETENTION_DAYS",
            "delete dumps older than this many days",
            default="30",
            kind=non_negative_int,
        )
        env.add(
            sub,
            "--keep-newest",
            "BACKUP_KEEP_NEWEST",
            "but always keep this many newest dumps",
            default="7",
            kind=non_negative_int,
        )

    def which_object(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--object", help="object name of the dump (default: the newest of the database)")

    sub = commands.add_parser("backup", help="dump, verify, upload, prune")
    env.add(sub, "--dsn", "DATABASE_URL", "libpq DSN of the database to dump", required=True)
    where(sub, with_database_flag=False)
    retention(sub)
    sub.add_argument("--workdir", type=Path, help="directory for the temporary dump (default: $TMPDIR)")

    sub = commands.add_parser("list", help="list the dumps of a database, newest first")
    where(sub, with_database_flag=True)
    sub.add_argument("--json", action="store_true", help="print the GCS object resources as JSON")

    sub = commands.add_parser("download", help="download and verify a dump")
    where(sub, with_database_flag=True)
    which_object(sub)
    sub.add_argument("--output", type=Path, required=True, help="file to write the dump to")

    sub = commands.add_parser("restore", help="download, verify and pg_restore a dump")
    where(sub, with_database_flag=True)
    which_object(sub)
    env.add(sub, "--target-dsn", "RESTORE_DATABASE_URL", "libpq DSN of the database to restore into", required=True)
    sub.add_argument(
        "--create-database",
        action="store_true",
        help="create the target database first (through the server's 'postgres' database); fails if it exists",
    )
    sub.add_argument("--jobs", type=positive_int, default=1, help="parallel pg_restore jobs")

    sub = commands.add_parser("prune", help="apply the retention rule")
    where(sub, with_database_flag=True)
    retention(sub)

    args = parser.parse_args(argv)
    env.check(parser, args)
    return args


def _folder(args: argparse.Namespace) -> logical.DumpFolder:
    return logical.DumpFolder(args.bucket, args.prefix, args.cluster, args.database)


def _chosen_dump(gcs: Gcs, args: argparse.Namespace) -> Blob:
    folder = _folder(args)
    if not args.object:
        return logical.newest_dump(gcs, folder)
    try:
        return gcs.get_object(args.bucket, args.object)
    except GcsError as error:
        hint = (
            "the object name (pg-dump-to-gcs list shows them)"
            if error.status == 404
            else "the service account's read access to the bucket (roles/storage.objectViewer)"
        )
        raise StepFailed("find-dump", f"cannot read gs://{args.bucket}/{args.object}: {error}", hint) from error


def command(argv: list[str]) -> int:
    args = parse_args(argv)
    gcs = Gcs()
    if args.command == "backup":
        summary = logical.backup(
            gcs,
            Database(args.dsn),
            args.bucket,
            args.prefix,
            args.cluster,
            args.retention_days,
            args.keep_newest,
            args.workdir,
        )
        print(json.dumps(summary, indent=2))
        return 0
    if args.command == "list":
        dumps = logical.list_dumps(gcs, _folder(args))
        if args.json:
            print(json.dumps([logical.describe(item) for item in dumps], indent=2))
        else:
            for item in dumps:
                print(f"{item.name}\t{item.size}\t{logical.iso(item.time_created)}")
        return 0
    if args.command == "prune":
        deleted = logical.prune(gcs, _folder(args), args.retention_days, args.keep_newest, logical.utc_now())
        print(json.dumps({"pruned": deleted}, indent=2))
        return 0
    item = _chosen_dump(gcs, args)
    described = f"gs://{args.bucket}/{item.name}"
    if args.command == "download":
        entries = logical.download(gcs, item, args.output)
        print(json.dumps({"object": described, "file": str(args.output), "toc_entries": entries}, indent=2))
        return 0
    target = Database(args.target_dsn)
    with tempfile.TemporaryDirectory(prefix="pg-restore-") as tmp:
        archive = Path(tmp) / "database.dump"
        entries = logical.download(gcs, item, archive)
        if args.create_database:
            logical.create_database(target)
        logical.restore(archive, target, described, args.jobs)
    print(json.dumps({"object": described, "target": str(target), "toc_entries": entries}, indent=2))
    return 0


def main() -> None:
    """The console entry point ``pg-dump-to-gcs``."""
    run(PROG, lambda: command(sys.argv[1:]))


if __name__ == "__main__":
    main()
