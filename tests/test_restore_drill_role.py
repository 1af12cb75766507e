"""roles/restore_drill up to the cluster boundary, with real parts.

The role reads a drill's JSON report from its Job's log, where the pod's standard output (the
report) and standard error (progress and the metrics line) arrive on one stream. Here the
real restore-drill verifies a real PostgreSQL database with both streams on one pipe,
and the role's own expression (roles/restore_drill/vars/main.yml) must find in that log exactly
the report the script wrote to the GCS emulator. Without a cluster, a drill must stop at its
first precondition with a message naming the kubeconfig context. The backup preconditions are
judged by the role's own tasks on the objects a primary cluster could hold (ObjectStore status,
Backup objects), each failure naming its timestamps and what to check.
"""

import json
import os
import subprocess

import pytest
import yaml

from support import tool
from support.playbooks import RECORDED_TOOLS, REPO, ansible, copy_inventory, write_play, write_role_tasks_play

SCHEMA = """
create table users (username text primary key, date_of_birth date not null, updated_at timestamptz not null);
insert into users select 'user' || n, date '1990-01-01', now() from generate_series(1, 50) as n;
create table seaql_migrations (version varchar primary key, applied_at bigint not null);
insert into seaql_migrations values ('m20260101_000001_create_users', 1767225600);
"""


def drill_log(database, bucket: str, emulator, *extra: str) -> tuple[int, list[str]]:
    """Run restore-drill verify with stdout and stderr on one pipe, as a pod's log has them."""
    done = subprocess.run(
        [
            tool("restore-drill"),
            "verify",
            "--dsn",
            database.dsn,
            "--rto-seconds",
            "42.5",
            "--backup-id",
            "backup-20261128021500",
            "--cluster",
            "hello-db",
            "--environment",
            "test",
            "--report-bucket",
            bucket,
            "--max-rto-seconds",
            "1800",
            "--max-rpo-seconds",
            "600",
            "--table=users=50",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        env={**os.environ, **emulator.env()},
        timeout=120,
    )
    return done.returncode, done.stdout.splitlines()


def report_the_role_reads(tmp_path, log_lines: list[str]):
    """Evaluate the role's __restore_drill_report over ``log_lines`` with ansible-playbook."""
    (tmp_path / "log.json").write_text(json.dumps({"log_lines": log_lines}))
    out = tmp_path / "report.json"
    playbook = tmp_path / "read.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Read a drill report as the role does",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars_files": [str(REPO / "roles/restore_drill/vars/main.yml")],
                    "tasks": [
                        {
                            "name": "Read the log",
                            "ansible.builtin.set_fact": {
                                "__restore_drill_log": "{{ lookup('ansible.builtin.file', '%s') | from_json }}"
                                % (tmp_path / "log.json")
                            },
                        },
                        {
                            "name": "Write what the role reads as the report",
                            "ansible.builtin.copy": {
                                "content": "{{ __restore_drill_report | to_json }}",
                                "dest": str(out),
                                "mode": "0644",
                            },
                        },
                    ],
                }
            ],
            sort_keys=False,
        )
    )
    # The implicit localhost; ansible.cfg reads YAML inventories only.
    result = ansible("ansible-playbook", "-i", "inventories/staging", playbook)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text())


@pytest.fixture
def restored_copy(postgres_database):
    """A database as a restore leaves it: the service's tables and heartbeats."""
    postgres_database.psql(SCHEMA)
    written = subprocess.run(
        [tool("heartbeat"), "--dsn", postgres_database.dsn],
        capture_output=True,
        text=True,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    return postgres_database


@pytest.mark.parametrize(
    ("extra", "result"),
    [
        ((), "passed"),
        (("--expected-migration", "m20990101_000001_from_the_future"), "failed"),
    ],
)
def test_role_reads_the_report_from_a_real_drill_log(
    ansible, tmp_path, restored_copy, gcs_emulator, gcs_bucket, extra, result
):
    code, lines = drill_log(restored_copy, gcs_bucket, gcs_emulator, *extra)
    assert code == (0 if result == "passed" else 1), "\n".join(lines)
    # The log interleaves the progress and metrics lines with the report.
    assert any(line.startswith("restore-drill: event=restore_drill path=physical") for line in lines)

    read = report_the_role_reads(tmp_path, lines)

    (stored,) = gcs_emulator.client().list_blobs(gcs_bucket, prefix="drills/test/physical/")
    assert read == json.loads(stored.download_as_bytes())
    assert read["result"] == result
    assert read["rto_seconds"] == 42.5
    assert read["backups"] == [{"id": "backup-20261128021500"}]


def test_role_reads_no_report_from_a_log_without_one(ansible, tmp_path):
    lines = ["exec /usr/local/bin/restore-drill: no such file or directory"]
    assert report_the_role_reads(tmp_path, lines) is None


def test_drill_stops_when_the_target_cluster_does_not_answer(ansible, tmp_path):
    inventory = copy_inventory("staging", tmp_path)
    playbook = write_play(tmp_path / "drill.yml", roles=["restore_drill"])
    result = ansible(
        "ansible-playbook",
        "-i",
        inventory,
        playbook,
        *RECORDED_TOOLS,
        env={"KUBECONFIG": str(tmp_path / "no-such-kubeconfig")},
    )
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert (
        "The drill's target cluster europe-west1 does not answer through the kubeconfig context "
        "'gke_hello-platform-staging_europe-west1_hello-staging-europe-west1'"
    ) in output
    assert "gcloud container clusters get-credentials hello-staging-europe-west1 --region europe-west1" in output
    # Nothing was created or deleted.
    assert "Apply the recovery cluster" not in output
    assert "Remove what an interrupted earlier drill left behind" not in output


# -- preconditions: the backups read from the primary cluster, judged by the role --------------

STARTED = "2026-11-28T05:00:00Z"
ARCHIVE = "gs://hello-platform-staging-hello-backups/physical/europe-west1"


def backup(backup_id: str, stopped: str, phase: str = "completed") -> dict:
    return {
        "metadata": {"name": f"hello-db-{backup_id.lower()}"},
        "status": {"phase": phase, "backupId": backup_id, "stoppedAt": stopped},
    }


def judge(tmp_path, store_status: dict, backups: list[dict], destination: str = ARCHIVE, *extra: str):
    """Run the role's judge_backups.yml on what a primary cluster could hold; (exit, output)."""
    read = {
        "__restore_drill_started_at": STARTED,
        "__restore_drill_object_store": {
            "resources": [
                {
                    "metadata": {"name": "hello-db-europe-west1"},
                    "spec": {"configuration": {"destinationPath": destination}},
                    "status": store_status,
                }
            ]
        },
        "__restore_drill_source_objects": {
            "results": [
                {"resources": [{"metadata": {"name": "hello-db"}, "status": {"image": "postgres:17"}}]},
                {"resources": backups},
            ]
        },
    }
    (tmp_path / "read.json").write_text(json.dumps(read))
    playbook = write_role_tasks_play(tmp_path / "judge.yml", "restore_drill", "judge_backups", "Judge the backups")
    result = ansible(
        "ansible-playbook", "-i", "inventories/staging", playbook, "-e", f"@{tmp_path / 'read.json'}", *extra
    )
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def window(last_success: str) -> dict:
    return {"serverRecoveryWindow": {"hello-db": {"lastSuccessfulBackupTime": last_success}}}


def test_a_recent_backup_passes_and_names_the_backup(ansible, tmp_path):
    code, output = judge(
        tmp_path,
        window("2026-11-28T02:15:40Z"),
        [backup("20261127T021500", "2026-11-27T02:15:41Z"), backup("20261128T021500", "2026-11-28T02:15:40Z")],
    )
    assert code == 0, output
    assert "Newest base backup 20261128T021500 finished 2026-11-28T02:15:40Z, 9860s before the drill" in output


def test_an_old_backup_fails_the_drill_with_both_timestamps(ansible, tmp_path):
    code, output = judge(tmp_path, window("2026-11-26T05:00:00Z"), [backup("20261126T050000", "2026-11-26T05:00:00Z")])
    assert code != 0
    assert (
        "The newest successful base backup of hello-db finished at 2026-11-26T05:00:00Z, 172800s before the "
        "drill started (2026-11-28T05:00:00Z), more than restore_drill_max_backup_age_seconds (93600s)"
    ) in output


def test_no_backup_at_all_fails_the_drill(ansible, tmp_path):
    code, output = judge(tmp_path, {}, [backup("20261128T021500", "2026-11-28T02:15:40Z", phase="failed")])
    assert code != 0
    assert (
        "reports no successful backup of server hello-db (status.serverRecoveryWindow) "
        "and no Backup object has completed" in output
    )


def test_a_completed_backup_object_counts_when_the_store_has_no_status_yet(ansible, tmp_path):
    code, output = judge(tmp_path, {}, [backup("20261128T043000", "2026-11-28T04:30:00Z")])
    assert code == 0, output
    assert "Newest base backup 20261128T043000 finished 2026-11-28T04:30:00Z, 1800s before the drill" in output


def test_a_target_time_names_the_backup_before_it(ansible, tmp_path):
    code, output = judge(
        tmp_path,
        window("2026-11-28T04:15:00Z"),
        [backup("20261128T021500", "2026-11-28T02:15:00Z"), backup("20261128T041500", "2026-11-28T04:15:00Z")],
        ARCHIVE,
        "-e",
        "restore_drill_target_time=2026-11-28T03:00:00Z",
    )
    assert code == 0, output
    assert "Newest base backup 20261128T021500 finished 2026-11-28T04:15:00Z" in output


def test_an_object_store_writing_elsewhere_stops_the_drill(ansible, tmp_path):
    code, output = judge(tmp_path, window("2026-11-28T04:15:00Z"), [], "gs://somewhere-else/physical/europe-west1")
    assert code != 0
    assert (
        "writes to gs://somewhere-else/physical/europe-west1, but the drill would restore from "
        f"{ARCHIVE}: set restore_drill_source_destination_path"
    ) in output
