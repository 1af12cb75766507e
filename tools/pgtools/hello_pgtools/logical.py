"""Logical backups: ``pg_dump`` archives in GCS, their names, retention, download and restore.

An archive lives at ``gs://<bucket>/<prefix>/<cluster>/<database>/<UTC timestamp>.dump``,
the timestamp being when the dump started (``20261128T124238Z``), so names sort by age.
Every step raises StepFailed naming the step and what to check.
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from google.cloud.storage import Blob

from .errors import StepFailed
from .gcs import ChecksumMismatch, Gcs, GcsError, md5_base64
from .postgres import (
    ClientError,
    Database,
    archive_entries,
    database_name,
    pg_dump_version,
    quote_identifier,
    with_database,
)

TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_DUMP_NAME = re.compile(r"(\d{8}T\d{6}Z)\.dump")
CONTENT_TYPE = "application/vnd.postgresql.custom-dump"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class DumpFolder:
    """Where one database's dumps live."""

    bucket: str
    prefix: str
    cluster: str
    database: str

    @property
    def path(self) -> str:
        return f"{self.prefix.strip('/')}/{self.cluster}/{self.database}/"

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.path}"

    def object_name(self, started: dt.datetime) -> str:
        return self.path + started.strftime(TIMESTAMP_FORMAT) + ".dump"


def dump_time(name: str) -> dt.datetime | None:
    """The start time encoded in a dump's object name, or None for foreign objects."""
    match = _DUMP_NAME.fullmatch(name.rsplit("/", 1)[-1])
    if not match:
        return None
    return dt.datetime.strptime(match.group(1), TIMESTAMP_FORMAT).replace(tzinfo=dt.UTC)


def describe(blob: Blob) -> dict:
    """What ``list --json`` prints of a dump: the object's name, generation, size, MD5,
    creation time and metadata."""
    return {
        "name": blob.name,
        "generation": str(blob.generation),
        "size": blob.size,
        "md5Hash": blob.md5_hash,
        "timeCreated": iso(blob.time_created) if blob.time_created else None,
        "metadata": blob.metadata or {},
    }


def list_dumps(gcs: Gcs, folder: DumpFolder) -> list[Blob]:
    """The dumps in a folder, newest first; objects not named like a dump are ignored."""
    try:
        items = gcs.list_objects(folder.bucket, folder.path)
    except GcsError as error:
        raise StepFailed(
            "list",
            f"cannot list {folder}: {error}",
            "that the bucket exists and the service account may list it (roles/storage.objectViewer)",
        ) from error
    # Only direct children: a deeper "folder" belongs to someone else.
    dumps = [item for item in items if "/" not in item.name[len(folder.path) :] and dump_time(item.name)]
    return sorted(dumps, key=lambda item: item.name, reverse=True)


def newest_dump(gcs: Gcs, folder: DumpFolder) -> Blob:
    dumps = list_dumps(gcs, folder)
    if not dumps:
        raise StepFailed(
            "find-dump",
            f"no dump under {folder}",
            "that the logical backup CronJob ran and wrote to this bucket, cluster and database",
        )
    return dumps[0]


def prune(gcs: Gcs, folder: DumpFolder, retention_days: int, keep_newest: int, now: dt.datetime) -> list[str]:
    """Delete dumps older than ``retention_days``, always keeping the ``keep_newest`` newest.

    Returns the deleted object names.
    """
    cutoff = now - dt.timedelta(days=retention_days)
    deleted = []
    for item in list_dumps(gcs, folder)[keep_newest:]:
        if dump_time(item.name) < cutoff:
            try:
                gcs.delete_object(folder.bucket, item.name, item.generation)
            except GcsError as error:
                raise StepFailed(
                    "prune",
                    f"cannot delete gs://{folder.bucket}/{item.name}: {error}",
                    "that the service account may delete objects (roles/storage.objectUser)",
                ) from error
            deleted.append(item.name)
    return deleted


def _connect(db: Database) -> dict:
    try:
        return db.describe()
    except ClientError as error:
        raise StepFailed(
            "connect",
            f"cannot query {db}: {error}",
            "the DSN's host, port, user, password and database, and that the server accepts connections",
        ) from error


def _check_bucket(gcs: Gcs, bucket: str) -> None:
    try:
        gcs.get_bucket(bucket)
    except GcsError as error:
        hint = (
            f"that bucket {bucket!r} exists"
            if error.status == 404
            else "the service account's access to the bucket (Workload Identity binding, roles/storage.objectUser)"
        )
        raise StepFailed("bucket", f"cannot reach gs://{bucket}: {error}", hint) from error


def verify_archive(archive: Path, described_as: str) -> int:
    """pg_restore must read the archive's table of contents; return its entry count."""
    try:
        entries = archive_entries(archive)
    except ClientError as error:
        raise StepFailed(
            "verify-dump",
            f"{described_as} is not a readable pg_dump archive (pg_restore --list: {error})",
            "that the dump was written completely by pg_dump --format=custom; take a new dump",
        ) from error
    if entries == 0:
        raise StepFailed(
            "verify-dump", f"{described_as} has an empty table of contents", "that pg_dump dumped the right database"
        )
    return entries


def backup(
    gcs: Gcs,
    db: Database,
    bucket: str,
    prefix: str,
    cluster: str,
    retention_days: int,
    keep_newest: int,
    workdir: Path | None = None,
) -> dict:
    """Dump a database, verify the archive, upload it, check what GCS stored, prune old dumps.

    Returns a summary of the backup (object name, size, MD5, timings, pruned objects).
    """
    server = _connect(db)
    _check_bucket(gcs, bucket)
    folder = DumpFolder(bucket, prefix, cluster, server["database"])
    started = utc_now()
    clock = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pg-dump-", dir=workdir) as tmp:
        archive = Path(tmp) / "database.dump"
        try:
            db.dump(archive)
        except ClientError as error:
            raise StepFailed(
                "dump",
                f"pg_dump of {db} failed: {error}",
                "that the user may read every table, and that pg_dump's major version is at least the server's",
            ) from error
        entries = verify_archive(archive, f"the new dump of {db}")
        size = archive.stat().st_size
        md5 = md5_base64(archive)
        name = folder.object_name(started)
        metadata = {
            "hello-source": str(db),
            "hello-cluster": cluster,
            "hello-database": server["database"],
            "hello-pg-server-version": server["server_version"],
            "hello-pg-dump-version": pg_dump_version(),
            "hello-size-bytes": str(size),
            "hello-md5": md5,
            "hello-toc-entries": str(entries),
            "hello-started-at": iso(started),
        }
        try:
            stored = gcs.upload(bucket, name, archive, CONTENT_TYPE, metadata)
        except ChecksumMismatch as error:
            raise StepFailed(
                "checksum",
                f"GCS stored gs://{bucket}/{name} with another MD5 than the dump's {md5} ({error}); "
                "the object was deleted",
                "the network path to GCS and run the backup again",
            ) from error
        except GcsError as error:
            raise StepFailed(
                "upload",
                f"cannot upload gs://{bucket}/{name}: {error}",
                "the network path to GCS and the service account's write access; no object was created",
            ) from error
    pruned = prune(gcs, folder, retention_days, keep_newest, started)
    _record(db, f"gs://{bucket}/{name}", size)
    return {
        "object": f"gs://{bucket}/{name}",
        "name": name,
        "generation": str(stored.generation),
        "size_bytes": size,
        "md5": md5,
        "toc_entries": entries,
        "database": server["database"],
        "server_version": server["server_version"],
        "started_at": iso(started),
        "duration_seconds": round(time.monotonic() - clock, 3),
        "pruned": pruned,
    }


# The newest verified dump, recorded in the database it came from: CloudNativePG's exporter
# (a member of pg_monitor) reports it for the dump's age alert (k8s/postgres/monitoring-queries.yml.j2),
# in every region, since the row replicates like any other. One statement, one transaction.
RECORD_BACKUP = """
create table if not exists ops_logical_backup (
    finished_at timestamp with time zone primary key default clock_timestamp(),
    object text not null,
    size_bytes bigint not null
);
grant select on ops_logical_backup to pg_monitor;
delete from ops_logical_backup where finished_at < now() - interval '90 days';
insert into ops_logical_backup (object, size_bytes) values ({object}, {size});
"""


def _record(db: Database, uri: str, size: int) -> None:
    try:
        db.execute(RECORD_BACKUP.format(object="'" + uri.replace("'", "''") + "'", size=int(size)))
    except ClientError as error:
        raise StepFailed(
            "record",
            f"{uri} is stored and verified, but recording it in {db} failed: {error}",
            "that the server is the primary (not in recovery) and the user may create tables and insert",
        ) from error


def download(gcs: Gcs, item: Blob, destination: Path) -> int:
    """Download a dump object (the generation listed), check its MD5 against what GCS
    reports, read its contents list.

    Returns the archive's table-of-contents entry count.
    """
    url = f"gs://{item.bucket.name}/{item.name}"
    try:
        gcs.download(item, destination)
    except ChecksumMismatch as error:
        raise StepFailed(
            "checksum",
            f"downloaded {url} does not have the MD5 GCS reports, {item.md5_hash} ({error})",
            "the network path to GCS and download again",
        ) from error
    except GcsError as error:
        raise StepFailed(
            "download",
            f"cannot download {url}: {error}",
            "that the object still exists and the service account may read it (roles/storage.objectViewer)",
        ) from error
    return verify_archive(destination, url)


def restore(archive: Path, target: Database, described_as: str, jobs: int = 1) -> None:
    try:
        target.restore(archive, jobs)
    except ClientError as error:
        raise StepFailed(
            "restore",
            f"pg_restore of {described_as} into {target} failed: {error}",
            "that the target database exists and is empty, and that the archive is complete",
        ) from error


def _on_server_of(target: Database, step: str, statement: str, check: str) -> None:
    """Run ``statement`` (``{name}``: the target's quoted database name) through the
    'postgres' database of the target's server."""
    try:
        name = database_name(target.dsn)
    except ValueError as error:
        raise StepFailed(step, str(error), "add the database name to the target DSN") from error
    maintenance = Database(with_database(target.dsn, "postgres"))
    try:
        maintenance.execute(statement.format(name=quote_identifier(name)))
    except ClientError as error:
        raise StepFailed(step, f"database {name!r} on {maintenance}: {error}", check) from error


def create_database(target: Database) -> None:
    """Create the database a DSN names."""
    _on_server_of(
        target,
        "create-database",
        "create database {name}",
        "that the user may create databases and that no database of that name exists",
    )


def drop_database(target: Database) -> None:
    """Drop the database a DSN names, if it exists, disconnecting its sessions."""
    _on_server_of(
        target,
        "drop-database",
        "drop database if exists {name} with (force)",
        "that the user owns the database or is a superuser",
    )
