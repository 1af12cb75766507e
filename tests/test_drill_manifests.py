"""Policy of the restore drill's Kubernetes objects, as every inventory renders them.

Each environment's objects are read from the run's one render of every environment
(support.render: the real playbooks/render.yml), and rendered again only where a test changes an
input. The rules: the
recovery Cluster bootstraps from the object store the primary archives into and can never
write into it, a target time reaches recoveryTarget, every throw-away object carries the label
the clean-up deletes by, the heartbeat runs every minute in the primary's namespace, and
the environments differ only where they must (kind: fake GCS server, kind's storage class).
"""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from support import tool
from support.playbooks import REPO, ansible, write_play

ENVIRONMENTS = sorted(p.name for p in (REPO / "inventories").iterdir() if (p / "hosts.yml").is_file())
TARGET_TIME = "2026-11-28T03:00:00Z"
CLEANUP_LABEL = "hello-platform/drill-id"
DRILL_FILES = {"namespace", "network-policy", "service-account", "object-store", "cluster", "verify-job", "logical-job"}
# Where alerts are evaluated (every environment but kind), the drills' Pushgateway and alerts too.
MONITORED_FILES = {"pushgateway", "rules"}


COMPONENTS = ("backups", "drill")


def read_build(build: Path) -> dict[str, dict[str, list[dict]]]:
    """The drill's and the backups' objects of a build folder; {host: {file stem: [objects]}}."""
    rendered = {}
    for host in sorted(p for p in build.iterdir() if p.is_dir()):
        rendered[host.name] = {
            path.relative_to(host).with_suffix("").as_posix(): [
                doc for doc in yaml.safe_load_all(path.read_text()) if doc
            ]
            for component in COMPONENTS
            for path in (host / component).rglob("*.yml")
        }
    return rendered


def render(root: Path, env: str, *extra: str) -> dict[str, dict[str, list[dict]]]:
    """Render the drill's and the backups' objects of ``env`` with changed inputs."""
    play = write_play(
        root / "render.yml",
        tasks=[
            {
                "name": f"Render the {role} objects",
                "ansible.builtin.include_role": {"name": role, "tasks_from": "render"},
            }
            for role in ("backups", "restore_drill")
        ],
    )
    build = root / "build"
    result = ansible(
        "ansible-playbook",
        "-i",
        f"inventories/{env}",
        play,
        "-e",
        f"hello_k8s_build_dir={build}/{{{{ inventory_hostname }}}}",
        *extra,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return read_build(build)


def hosts_of(env: str) -> tuple[str, str]:
    """(primary host, drill host): the drill restores in the DR cluster, else in the primary's."""
    result = ansible("ansible-inventory", "-i", f"inventories/{env}", "--list")
    assert result.returncode == 0, result.stderr
    inventory = json.loads(result.stdout)
    primary = inventory["primary_region"]["hosts"][0]
    dr = inventory.get("dr_region", {}).get("hosts", [])
    return primary, (dr[0] if dr else primary)


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def environment(ansible, request, rendered_root):
    env = request.param
    primary, target = hosts_of(env)
    rendered = read_build(rendered_root / env)
    drill = {name.removeprefix("drill/"): docs for name, docs in rendered[target].items() if name.startswith("drill/")}
    return {"env": env, "primary": primary, "target": target, "rendered": rendered, "drill": drill}


def one(docs: list[dict], kind: str) -> dict:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def labels(doc: dict) -> dict:
    return doc["metadata"].get("labels") or {}


def test_drill_objects_render_on_the_drill_cluster_and_the_heartbeat_on_the_primary(environment):
    rendered, target, primary = environment["rendered"], environment["target"], environment["primary"]
    monitored = MONITORED_FILES if environment["env"] != "kind" else set()
    assert set(environment["drill"]) == DRILL_FILES | monitored | (
        {"heartbeat-cronjob"} if target == primary else set()
    )
    assert "drill/heartbeat-cronjob" in rendered[primary]
    for host, files in rendered.items():
        if host != target:
            assert not (DRILL_FILES | MONITORED_FILES) & {name.removeprefix("drill/") for name in files}, host


def test_recovery_bootstraps_from_the_object_store_the_primary_archives_into(environment):
    drill = environment["drill"]
    cluster = one(drill["cluster"], "Cluster")
    store = one(drill["object-store"], "ObjectStore")
    recovery = cluster["spec"]["bootstrap"]["recovery"]
    assert set(cluster["spec"]["bootstrap"]) == {"recovery"}
    (origin,) = cluster["spec"]["externalClusters"]
    assert recovery["source"] == origin["name"]
    assert origin["plugin"]["name"] == "barman-cloud.cloudnative-pg.io"
    assert origin["plugin"]["parameters"] == {"barmanObjectName": store["metadata"]["name"], "serverName": "hello-db"}
    assert store["metadata"]["namespace"] == cluster["metadata"]["namespace"]
    assert (recovery["database"], recovery["owner"]) == ("app", "app")

    # The primary's own ObjectStore, as roles/backups renders it in the primary cluster.
    primary_stores = {
        doc["metadata"]["name"]: doc
        for doc in environment["rendered"][environment["primary"]]["backups/object-stores"]
        if doc["kind"] == "ObjectStore"
    }
    archive = primary_stores[f"hello-db-{environment['primary']}"]
    assert store["spec"]["configuration"]["destinationPath"] == archive["spec"]["configuration"]["destinationPath"]
    # The same way in: Workload Identity on GKE; an (empty) credentials file in its own namespace for an emulator.
    drill_credentials = store["spec"]["configuration"]["googleCredentials"]
    assert drill_credentials.keys() == archive["spec"]["configuration"]["googleCredentials"].keys()
    sidecar_env = archive["spec"].get("instanceSidecarConfiguration", {}).get("env")
    assert store["spec"].get("instanceSidecarConfiguration", {}).get("env") == sidecar_env


def test_drill_cluster_can_never_write_into_the_archive(environment):
    drill = environment["drill"]
    cluster = one(drill["cluster"], "Cluster")
    store = one(drill["object-store"], "ObjectStore")
    assert "plugins" not in cluster["spec"], "a plugin on the drill cluster could archive WAL"
    assert "backup" not in cluster["spec"], "the drill cluster must take no backups"
    assert not any(
        entry.get("plugin", {}).get("isWALArchiver") or "barmanObjectStore" in entry
        for entry in cluster["spec"]["externalClusters"]
    )
    # A retention policy would make the plugin delete the primary's backups.
    assert "retentionPolicy" not in store["spec"]
    assert "wal" not in store["spec"]["configuration"] and "data" not in store["spec"]["configuration"]


def test_without_target_time_the_drill_recovers_the_newest_state(environment):
    cluster = one(environment["drill"]["cluster"], "Cluster")
    assert "recoveryTarget" not in cluster["spec"]["bootstrap"]["recovery"]


@pytest.mark.slow  # a whole playbook run through many tasks
def test_target_time_reaches_the_recovery_and_the_rpo(ansible, tmp_path):
    _, target = hosts_of("production")
    drill = {
        name.removeprefix("drill/"): docs
        for name, docs in render(tmp_path, "production", "-e", f"restore_drill_target_time={TARGET_TIME}")[
            target
        ].items()
    }
    cluster = one(drill["cluster"], "Cluster")
    assert cluster["spec"]["bootstrap"]["recovery"]["recoveryTarget"] == {"targetTime": TARGET_TIME}
    # The physical RPO is measured against the moment the restore aimed at.
    args = one(drill["verify-job"], "Job")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--started-at") + 1] == TARGET_TIME


def test_a_malformed_target_time_is_refused_before_anything_runs(ansible, tmp_path):
    play = write_play(tmp_path / "drill.yml", roles=["restore_drill"])
    result = ansible("ansible-playbook", "-i", "inventories/staging", play, "-e", "restore_drill_target_time=yesterday")
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "restore_drill_target_time ('yesterday') must be empty or an RFC 3339 time in UTC" in output
    assert "Reach the target cluster" not in output


def test_every_throwaway_object_carries_the_label_the_cleanup_deletes_by(environment):
    drill = environment["drill"]
    cleanup = yaml.safe_load((REPO / "roles/restore_drill/tasks/cleanup.yml").read_text())
    deleting = next(
        task for task in cleanup if "kubernetes.core.k8s" in task and task["kubernetes.core.k8s"]["state"] == "absent"
    )
    role_vars = yaml.safe_load((REPO / "roles/restore_drill/vars/main.yml").read_text())
    assert role_vars["__restore_drill_cleanup_selector"] == CLEANUP_LABEL
    deleted_kinds = {item["kind"] for item in deleting["loop"]}

    kept = {"Namespace", "ServiceAccount", "NetworkPolicy"}
    for name, docs in drill.items():
        for doc in docs:
            # The heartbeat and the Pushgateway with its alerts outlive every drill.
            if doc["kind"] in kept or name in {"heartbeat-cronjob"} | MONITORED_FILES:
                continue
            assert CLEANUP_LABEL in labels(doc), f"{doc['kind']} {doc['metadata']['name']} lacks {CLEANUP_LABEL}"
            assert doc["kind"] in deleted_kinds, f"the clean-up never deletes {doc['kind']}"
    cluster = one(drill["cluster"], "Cluster")
    # CloudNativePG copies these to the PVCs and pods, which the clean-up deletes too.
    assert CLEANUP_LABEL in cluster["spec"]["inheritedMetadata"]["labels"]
    assert "PersistentVolumeClaim" in deleted_kinds
    for job in ("verify-job", "logical-job"):
        assert CLEANUP_LABEL in labels(one(drill[job], "Job")["spec"]["template"])


def test_heartbeat_runs_every_minute_in_the_primary_database_namespace(environment):
    cronjob = one(environment["rendered"][environment["primary"]]["drill/heartbeat-cronjob"], "CronJob")
    assert cronjob["spec"]["schedule"] == "* * * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert cronjob["metadata"]["namespace"] == "hello"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["heartbeat"]
    database_url = next(env for env in container["env"] if env["name"] == "DATABASE_URL")
    assert database_url["valueFrom"]["secretKeyRef"] == {"name": "hello-db-app", "key": "uri"}


def test_jobs_run_the_repository_drill_script_against_the_recovery_cluster(environment):
    drill = environment["drill"]
    cluster_name = one(drill["cluster"], "Cluster")["metadata"]["name"]
    for job_file, command in (("verify-job", "verify"), ("logical-job", "logical")):
        job = one(drill[job_file], "Job")
        assert job["spec"]["backoffLimit"] == 0
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["restore-drill"]
        assert container["args"][0] == command
        dsn_flag = "--dsn" if command == "verify" else "--target-dsn"
        assert container["args"][container["args"].index(dsn_flag) + 1].startswith(
            f"postgresql://{cluster_name}-rw:5432/"
        )
        secrets = {env["valueFrom"]["secretKeyRef"]["name"] for env in container["env"] if "valueFrom" in env}
        assert secrets == {f"{cluster_name}-superuser"}
        # Check the script accepts every argument the role passes (its own parser, no cluster).
        done = subprocess.run(
            [tool("restore-drill"), *container["args"], "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr


def test_the_jobs_push_to_the_pushgateway_the_collectors_scrape(environment):
    """Where alerts are evaluated, the drills' figures outlive their Jobs in a Pushgateway beside
    them: the Jobs push to its Service, its policy lets them (and the managed collectors) in, and
    a PodMonitoring scrapes it; kind runs none and the Jobs push nowhere."""
    drill = environment["drill"]
    container = one(drill["verify-job"], "Job")["spec"]["template"]
    env = {e["name"]: e.get("value") for e in container["spec"]["containers"][0]["env"]}
    if environment["env"] == "kind":
        assert "DRILL_PUSHGATEWAY_URL" not in env
        return
    objects = drill["pushgateway"]
    service, deployment = one(objects, "Service"), one(objects, "Deployment")
    namespace = service["metadata"]["namespace"]
    assert env["DRILL_PUSHGATEWAY_URL"] == f"http://{service['metadata']['name']}.{namespace}.svc:9091"
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (gateway,) = pod["spec"]["containers"]
    assert gateway["image"].startswith("europe-docker.pkg.dev/") and "/docker-hub/prom/pushgateway:" in gateway["image"]
    # Its history survives a restart: a lost one would read as "no drill ever".
    assert "--persistence.file=/data/metrics" in gateway["args"]
    claim = one(objects, "PersistentVolumeClaim")["metadata"]["name"]
    assert pod["spec"]["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    monitoring = one(objects, "PodMonitoring")
    assert monitoring["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert monitoring["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["targetPort"]
    (ingress,) = one(objects, "NetworkPolicy")["spec"]["ingress"]
    drill_pods = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "hello-drill"}},
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/component": container["metadata"]["labels"]["app.kubernetes.io/component"]
            }
        },
    }
    assert drill_pods in ingress["from"]


def test_environments_differ_only_where_they_must(environment):
    drill, env = environment["drill"], environment["env"]
    cluster = one(drill["cluster"], "Cluster")
    store = one(drill["object-store"], "ObjectStore")
    job_env = {
        e["name"]: e.get("value")
        for e in one(drill["verify-job"], "Job")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    if env == "kind":
        emulator = "http://fake-gcs-server.fake-gcs.svc.cluster.local:4443"
        assert cluster["spec"]["storage"]["storageClass"] == "standard"
        assert cluster["spec"]["affinity"]["nodeSelector"] == {}
        assert "serviceAccountTemplate" not in cluster["spec"]
        assert store["spec"]["instanceSidecarConfiguration"]["env"] == [
            {"name": "STORAGE_EMULATOR_HOST", "value": emulator}
        ]
        secret = one(drill["object-store"], "Secret")
        assert (
            store["spec"]["configuration"]["googleCredentials"]["applicationCredentials"]["name"]
            == secret["metadata"]["name"]
        )
        assert job_env["STORAGE_EMULATOR_HOST"] == emulator
    else:
        assert cluster["spec"]["storage"]["storageClass"] == "standard-rwo"
        assert cluster["spec"]["affinity"]["nodeSelector"] == {"hello-platform/workload": "postgres"}
        assert store["spec"]["configuration"]["googleCredentials"] == {"gkeEnvironment": True}
        annotation = cluster["spec"]["serviceAccountTemplate"]["metadata"]["annotations"][
            "iam.gke.io/gcp-service-account"
        ]
        assert annotation == f"hello-db@hello-platform-{env}.iam.gserviceaccount.com"
        assert "STORAGE_EMULATOR_HOST" not in job_env
