"""pg-dump-to-gcs (hello_pgtools, installed from tools/pgtools) against a real PostgreSQL server
and a GCS emulator.

The round trip dumps a seeded database, uploads it, lists, downloads and restores it into a
database on another server, and compares the data row by row. Every other test provokes one
failure and checks the exit status, the step named in the message, and that no object that
looks like a good dump was left behind. Most run the installed command as the CronJob does;
where a failure takes the library's retries to show, hello_pgtools.logical is called directly
with a short retry deadline.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import uuid

import pytest
from google.cloud.storage.retry import DEFAULT_RETRY

from hello_pgtools import logical
from hello_pgtools.errors import StepFailed
from hello_pgtools.gcs import Gcs
from hello_pgtools.postgres import Database
from support import REPO, run_script, run_tool
from support.metadata import workload_identity_env
from support.net import free_port
from support.postgres import TestDatabase

CLUSTER = "hello-db"
SEED_USERS = 5000

SCHEMA_AND_DATA = f"""
create table users (
    username text primary key,
    date_of_birth date not null,
    updated_at timestamp with time zone not null
);
insert into users
select 'user' || n, date '1970-01-01' + (n % 15000), timestamptz '2026-01-01 00:00:00+00' + n * interval '1 minute'
from generate_series(1, {SEED_USERS}) as n;
insert into users values ('Zoë ''quoted'' "name"', '2000-02-29', '2026-11-28 12:00:00.123456+00');
create table seaql_migrations (version varchar not null primary key, applied_at bigint not null);
insert into seaql_migrations values ('m20260101_000001_create_users', 1767225600);
create table documents (id bigserial primary key, body jsonb not null, blob bytea);
insert into documents (body, blob) select jsonb_build_object('n', n, 'tags', jsonb_build_array('a', n)),
    decode(md5(n::text), 'hex') from generate_series(1, 300) as n;
"""


def rows(database, table: str, order_by: str) -> list[str]:
    """Every row of a table as text, in a stable order."""
    return database.psql(f"select t::text from {table} t order by {order_by}").splitlines()


def backup(dsn: str, bucket: str, env: dict, *extra: str):
    return run_tool("pg-dump-to-gcs", "backup", "--dsn", dsn, "--bucket", bucket, "--cluster", CLUSTER, *extra, env=env)


def object_names(gcs_emulator, bucket: str) -> list[str]:
    """What the emulator holds, read through google-cloud-storage rather than the script."""
    return sorted(blob.name for blob in gcs_emulator.client().list_blobs(bucket))


@pytest.fixture
def seeded_database(database_from):
    """A copy of a template seeded once per run."""
    return database_from(SCHEMA_AND_DATA)


def test_backup_list_download_restore_round_trip(
    seeded_database, scratch_postgres_server, gcs_emulator, gcs_bucket, tmp_path, measurement
):
    env = gcs_emulator.env()
    done = backup(seeded_database.dsn, gcs_bucket, env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    name = summary["name"]
    assert name.startswith(f"logical/{CLUSTER}/{seeded_database.name}/") and name.endswith("Z.dump")
    assert summary["toc_entries"] > 5

    blob = gcs_emulator.client().bucket(gcs_bucket).get_blob(name)
    assert blob.md5_hash == summary["md5"]
    assert blob.size == summary["size_bytes"]
    assert blob.metadata["hello-database"] == seeded_database.name
    assert blob.metadata["hello-cluster"] == CLUSTER
    assert blob.metadata["hello-pg-server-version"].startswith("15")
    assert blob.metadata["hello-size-bytes"] == str(summary["size_bytes"])
    assert "***" in blob.metadata["hello-source"] and "drill-superuser-password" not in blob.metadata["hello-source"]
    measurement(
        f"pg-dump-to-gcs backup of {SEED_USERS + 1} users and 300 documents: "
        f"dump {summary['size_bytes']} bytes, dump + verify + upload in {summary['duration_seconds']}s"
    )

    where = ["--bucket", gcs_bucket, "--cluster", CLUSTER, "--database", seeded_database.name]
    listed = run_tool("pg-dump-to-gcs", "list", *where, "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [item["name"] for item in json.loads(listed.stdout)] == [name]

    output = tmp_path / "downloaded.dump"
    fetched = run_tool("pg-dump-to-gcs", "download", *where, "--output", str(output), env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert output.stat().st_size == summary["size_bytes"]

    target = "restored_" + uuid.uuid4().hex[:8]
    restored = run_tool(
        "pg-dump-to-gcs",
        "restore",
        *where,
        "--target-dsn",
        scratch_postgres_server.dsn(target),
        "--create-database",
        env=env,
    )
    assert restored.returncode == 0, restored.stderr
    try:
        copy = TestDatabase(scratch_postgres_server, target)
        for table, order in (("users", "username"), ("seaql_migrations", "version"), ("documents", "id")):
            original = rows(seeded_database, table, order)
            assert original, f"the seed left {table} empty"
            assert rows(copy, table, order) == original, f"{table} differs after the restore"
        # The sequence continues where the original stopped.
        assert copy.psql("select nextval('documents_id_seq')") == seeded_database.psql(
            "select nextval('documents_id_seq')"
        )
    finally:
        scratch_postgres_server.drop_database(target)


def test_wrong_password_fails_at_connect_and_uploads_nothing(
    postgres_database, postgres_server, gcs_emulator, gcs_bucket
):
    dsn = postgres_server.dsn(postgres_database.name, password="not-the-password")
    done = backup(dsn, gcs_bucket, gcs_emulator.env())
    assert done.returncode == 1
    assert "connect failed" in done.stderr and "password authentication failed" in done.stderr
    assert "not-the-password" not in done.stderr, "the message must not print the password"
    assert object_names(gcs_emulator, gcs_bucket) == []


def test_wrong_port_fails_at_connect(postgres_database, gcs_emulator, gcs_bucket):
    dsn = f"postgresql://postgres:x@127.0.0.1:{free_port()}/{postgres_database.name}"
    done = backup(dsn, gcs_bucket, gcs_emulator.env())
    assert done.returncode == 1
    assert done.stderr.startswith("pg-dump-to-gcs: connect failed") and "Connection refused" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, "one line, not a traceback"


def test_database_that_does_not_exist_fails_at_connect(postgres_server, gcs_emulator, gcs_bucket):
    done = backup(postgres_server.dsn("no_such_database"), gcs_bucket, gcs_emulator.env())
    assert done.returncode == 1
    assert "connect failed" in done.stderr and '"no_such_database" does not exist' in done.stderr


def test_a_user_who_may_not_read_a_table_fails_at_dump(seeded_database, postgres_server, gcs_emulator, gcs_bucket):
    role = "reader_" + uuid.uuid4().hex[:8]
    seeded_database.psql(f"create role {role} login password 'reader'; grant select on users to {role}")
    try:
        done = backup(
            postgres_server.dsn(seeded_database.name, user=role, password="reader"), gcs_bucket, gcs_emulator.env()
        )
        assert done.returncode == 1
        assert "dump failed: pg_dump of" in done.stderr and "permission denied" in done.stderr
        assert object_names(gcs_emulator, gcs_bucket) == []
    finally:
        seeded_database.psql(f"drop owned by {role}; drop role {role}")


def test_missing_bucket_fails_before_dumping(seeded_database, gcs_emulator):
    done = backup(seeded_database.dsn, "no-such-bucket", gcs_emulator.env())
    assert done.returncode == 1
    assert "bucket failed" in done.stderr and "no-such-bucket" in done.stderr and "exists" in done.stderr


def test_unreachable_storage_fails_at_bucket_after_the_retries(seeded_database, monkeypatch, tmp_path):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    gcs = Gcs(retry=DEFAULT_RETRY.with_timeout(3))
    with pytest.raises(StepFailed) as raised:
        logical.backup(gcs, Database(seeded_database.dsn), "any", "logical", CLUSTER, 30, 7, tmp_path)
    assert raised.value.step == "bucket"
    assert "no answer from" in raised.value.problem and "after 3 s of retries" in raised.value.problem


@pytest.mark.parametrize(
    ("fault", "offset", "reasons"),
    [
        pytest.param("flip_at", 10_000, ["upload failed", "MD5"], id="byte-altered-in-transit"),
        pytest.param(
            "garble_reply_md5",
            True,
            ["checksum failed: GCS stored", "the object was deleted"],
            id="stored-checksum-differs",
        ),
    ],
)
def test_a_damaged_upload_leaves_no_object(
    seeded_database, gcs_emulator, gcs_bucket, tcp_proxy, fault, offset, reasons
):
    proxy = tcp_proxy(gcs_emulator.port, **{fault: offset})
    done = backup(seeded_database.dsn, gcs_bucket, gcs_emulator.env(proxy.port))
    assert proxy.faults == 1, "the proxy never damaged an upload"
    assert done.returncode == 1
    assert all(reason in done.stderr for reason in reasons), done.stderr
    assert object_names(gcs_emulator, gcs_bucket) == []


def _put_fake_dump(gcs_emulator, bucket: str, database: str, started: dt.datetime, body: bytes = b"old") -> str:
    name = f"logical/{CLUSTER}/{database}/{started:%Y%m%dT%H%M%SZ}.dump"
    gcs_emulator.client().bucket(bucket).blob(name).upload_from_string(body)
    return name


def test_retention_deletes_old_dumps_but_keeps_the_newest(seeded_database, gcs_emulator, gcs_bucket):
    now = dt.datetime.now(dt.UTC)
    old = [
        _put_fake_dump(gcs_emulator, gcs_bucket, seeded_database.name, now - dt.timedelta(days=days))
        for days in (40, 50, 60)
    ]
    recent = _put_fake_dump(gcs_emulator, gcs_bucket, seeded_database.name, now - dt.timedelta(days=2))
    foreign = f"logical/{CLUSTER}/{seeded_database.name}/notes.txt"
    gcs_emulator.client().bucket(gcs_bucket).blob(foreign).upload_from_string(b"kept")

    done = backup(seeded_database.dsn, gcs_bucket, gcs_emulator.env(), "--retention-days", "30", "--keep-newest", "3")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    # Newest three: the new dump, the 2-day-old one, and the 40-day-old one (kept by count).
    assert sorted(summary["pruned"]) == sorted(old[1:])
    assert object_names(gcs_emulator, gcs_bucket) == sorted([summary["name"], recent, old[0], foreign])


def test_retention_never_deletes_the_newest_even_when_all_are_old(seeded_database, gcs_emulator, gcs_bucket):
    now = dt.datetime.now(dt.UTC)
    names = [
        _put_fake_dump(gcs_emulator, gcs_bucket, seeded_database.name, now - dt.timedelta(days=days))
        for days in (100, 200)
    ]
    where = ["--bucket", gcs_bucket, "--cluster", CLUSTER, "--database", seeded_database.name]
    done = run_tool(
        "pg-dump-to-gcs", "prune", *where, "--retention-days", "1", "--keep-newest", "1", env=gcs_emulator.env()
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pruned"] == [names[1]]
    assert object_names(gcs_emulator, gcs_bucket) == [names[0]]


def test_restore_refuses_a_corrupted_newest_dump(seeded_database, scratch_postgres_server, gcs_emulator, gcs_bucket):
    assert backup(seeded_database.dsn, gcs_bucket, gcs_emulator.env()).returncode == 0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    corrupted = _put_fake_dump(gcs_emulator, gcs_bucket, seeded_database.name, later, b"PGDMP but not really")
    target = "never_" + uuid.uuid4().hex[:8]
    done = run_tool(
        "pg-dump-to-gcs",
        "restore",
        "--bucket",
        gcs_bucket,
        "--cluster",
        CLUSTER,
        "--database",
        seeded_database.name,
        "--target-dsn",
        scratch_postgres_server.dsn(target),
        "--create-database",
        env=gcs_emulator.env(),
    )
    assert done.returncode == 1
    assert "verify-dump failed" in done.stderr and corrupted in done.stderr
    assert target not in scratch_postgres_server.psql("select datname from pg_database"), "nothing restored"


def test_restore_into_a_database_that_is_not_empty_fails(seeded_database, gcs_emulator, gcs_bucket):
    assert backup(seeded_database.dsn, gcs_bucket, gcs_emulator.env()).returncode == 0
    done = run_tool(
        "pg-dump-to-gcs",
        "restore",
        "--bucket",
        gcs_bucket,
        "--cluster",
        CLUSTER,
        "--database",
        seeded_database.name,
        "--target-dsn",
        seeded_database.dsn,
        env=gcs_emulator.env(),
    )
    assert done.returncode == 1
    assert "restore failed" in done.stderr and "already exists" in done.stderr


def test_restore_with_no_dump_names_the_folder(scratch_postgres_server, gcs_emulator, gcs_bucket):
    done = run_tool(
        "pg-dump-to-gcs",
        "restore",
        "--bucket",
        gcs_bucket,
        "--cluster",
        CLUSTER,
        "--database",
        "app",
        "--target-dsn",
        scratch_postgres_server.dsn("x"),
        env=gcs_emulator.env(),
    )
    assert done.returncode == 1
    assert f"find-dump failed: no dump under gs://{gcs_bucket}/logical/{CLUSTER}/app/" in done.stderr


def test_download_altered_in_transit_is_refused(seeded_database, gcs_emulator, gcs_bucket, tcp_proxy, tmp_path):
    assert backup(seeded_database.dsn, gcs_bucket, gcs_emulator.env()).returncode == 0
    proxy = tcp_proxy(gcs_emulator.port, flip_reply_at=5_000)
    done = run_tool(
        "pg-dump-to-gcs",
        "download",
        "--bucket",
        gcs_bucket,
        "--cluster",
        CLUSTER,
        "--database",
        seeded_database.name,
        "--output",
        str(tmp_path / "x.dump"),
        env=gcs_emulator.env(proxy.port),
    )
    assert proxy.faults == 1, "the proxy never altered a download"
    assert done.returncode == 1
    assert "checksum failed: downloaded gs://" in done.stderr and "GCS reports" in done.stderr


def test_without_workload_identity_the_backup_names_it(seeded_database, tmp_path):
    done = backup(seeded_database.dsn, "hello-backups", workload_identity_env(tmp_path))
    assert done.returncode == 1
    assert (
        "bucket failed: cannot reach gs://hello-backups: no Google credentials" in done.stderr
        and "Workload Identity must bind" in done.stderr
    )


def test_download_of_a_missing_object_fails(gcs_emulator, gcs_bucket, tmp_path):
    done = run_tool(
        "pg-dump-to-gcs",
        "download",
        "--bucket",
        gcs_bucket,
        "--cluster",
        CLUSTER,
        "--object",
        "logical/nope.dump",
        "--output",
        str(tmp_path / "x.dump"),
        env=gcs_emulator.env(),
    )
    assert done.returncode == 1
    assert "find-dump failed" in done.stderr and "HTTP 404" in done.stderr


def test_list_of_a_missing_bucket_fails(gcs_emulator):
    done = run_tool(
        "pg-dump-to-gcs", "list", "--bucket", "no-such-bucket", "--cluster", CLUSTER, env=gcs_emulator.env()
    )
    assert done.returncode == 1
    assert "list failed" in done.stderr and "HTTP 404" in done.stderr


def test_missing_settings_are_named(gcs_emulator):
    done = run_tool(
        "pg-dump-to-gcs",
        "backup",
        "--cluster",
        CLUSTER,
        env={**gcs_emulator.env(), "DATABASE_URL": "postgresql://x@127.0.0.1/x", "BACKUP_BUCKET": ""},
    )
    assert done.returncode == 2
    assert "--bucket is required: pass it or set BACKUP_BUCKET" in done.stderr
    done = run_tool(
        "pg-dump-to-gcs",
        "backup",
        "--bucket",
        "b",
        "--cluster",
        CLUSTER,
        "--dsn",
        "x",
        env={"BACKUP_KEEP_NEWEST": "-1"},
    )
    assert done.returncode == 2
    assert "BACKUP_KEEP_NEWEST='-1' is not valid" in done.stderr


def normalised(pin: str) -> str:
    """``name==version`` with the name as PyPI compares names (lower case, ``-`` for ``_``)."""
    name, _, version = pin.partition("==")
    return f"{name.lower().replace('_', '-')}=={version}"


def locked_pins() -> set[str]:
    """Every ``name==version`` tools/pgtools/requirements.lock pins, normalised."""
    lock = (REPO / "tools/pgtools/requirements.lock").read_text()
    return {normalised(pin) for pin in re.findall(r"^[A-Za-z0-9_.-]+==\S+", lock, flags=re.MULTILINE)}


def test_pgtools_image_runs_the_backup(docker_engine, seeded_database, gcs_emulator, gcs_bucket, tmp_path):
    """tools/pgtools/Dockerfile builds on the test PostgreSQL image, offline from the wheels of
    scripts/pgtools-deps (a build here reaches Debian's mirror but not PyPI), and its tools work
    inside. The context is the package's folder, which its .dockerignore filters (no caches)."""
    base = docker_engine["HELLO_POSTGRES_IMAGE"]
    # Into the build context's .wheels (git-ignored), again only when the lock changes.
    fetched = run_script("pgtools-deps", "wheels", timeout=600)
    assert fetched.returncode == 0, fetched.stderr
    # A fixed tag keeps Docker's layer cache warm for the next run.
    tag = "hello-pgtools:test"
    built = subprocess.run(
        ["docker", "build", "-q", "--build-arg", f"PGTOOLS_BASE_IMAGE={base}", "-t", tag, str(REPO / "tools/pgtools")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    frozen = subprocess.run(
        ["docker", "run", "--rm", tag, "/opt/hello-pgtools/bin/pip", "list", "--format=freeze", "--exclude", "pip"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert frozen.returncode == 0, frozen.stderr
    installed = {normalised(line) for line in frozen.stdout.split()}
    assert "hello-pgtools==1.0.0" in installed
    # Besides the package itself, the virtualenv's own setuptools (from Debian).
    others = {pin for pin in installed if not pin.startswith(("hello-pgtools==", "setuptools=="))}
    assert others == locked_pins(), "the image holds other packages than the lock"
    ran = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "host",
            "-e",
            f"STORAGE_EMULATOR_HOST={gcs_emulator.url}",
            "-e",
            f"DATABASE_URL={seeded_database.dsn}",
            "-e",
            f"BACKUP_BUCKET={gcs_bucket}",
            "-e",
            f"BACKUP_CLUSTER={CLUSTER}",
            tag,
            "pg-dump-to-gcs",
            "backup",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert object_names(gcs_emulator, gcs_bucket) == [json.loads(ran.stdout)["name"]]
