"""The database tier's Kubernetes objects, rendered by the real roles for every environment.

Each environment's inventory renders roles/postgres and roles/backups (their tasks/render.yml,
through a real ansible-playbook run) into a temporary folder; the objects must validate against
the Kubernetes schema and the pinned CloudNativePG / Barman Cloud CRDs (scripts/validate-manifests),
and a policy over them checks what the design promises: three instances, one per zone, on the
PostgreSQL node pool, quorum synchronous replication with required durability, Guaranteed
resources, zonal storage, WAL archiving through the plugin, retention, the backup schedule from
the variable, the replica cluster's topology in the DR region, and no secret in any file.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from ansible_helpers import REPO, ansible, write_play

ENVIRONMENTS = ["staging", "production"]
PLUGIN = "barman-cloud.cloudnative-pg.io"


def crd_dir():
    configured = os.environ.get("HELLO_CRD_DIR")
    if configured:
        return configured
    beside = REPO.parent / "shared" / "crds"
    if beside.is_dir():
        return str(beside)
    pytest.fail("HELLO_CRD_DIR is not set and no shared/crds folder sits beside the repository: "
                "set HELLO_CRD_DIR to the folder of pinned CRD files")


def render(env, folder, *extra_vars):
    """Renders the roles' objects into folder/build/<host>/ and returns folder/build."""
    build = Path(folder) / "build"
    playbook = write_play(
        Path(folder) / "render-database.yml",
        tasks=[
            {"name": "Render the database objects",
             "ansible.builtin.include_role": {"name": "postgres", "tasks_from": "render"}},
            {"name": "Render the backup objects",
             "ansible.builtin.include_role": {"name": "backups", "tasks_from": "render"}},
        ],
    )
    args = ["-e", f"hello_k8s_build_dir={build}/{{{{ inventory_hostname }}}}"]
    for extra in extra_vars:
        args += ["-e", extra]
    result = ansible("ansible-playbook", "-i", f"inventories/{env}", playbook, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return build


def load_objects(folder):
    objects = []
    for path in sorted(Path(folder).rglob("*.yml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects.append(doc)
    return objects


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """{env: build folder} as the roles render them with the environment's own variables."""
    return {env: render(env, tmp_path_factory.mktemp(env)) for env in ENVIRONMENTS}


@pytest.fixture(scope="module")
def rendered(builds):
    """{env: {host: [objects]}}."""
    return {env: {host.name: load_objects(host) for host in build.iterdir() if host.is_dir()}
            for env, build in builds.items()}


# One render with operator choices set: a schedule, the PodMonitor, and a password that must
# not reach any file.
CUSTOM_SCHEDULE = "0 7 1 * * *"
PASSWORD = "rendered-files-never-hold-this-0123456789"


@pytest.fixture(scope="module")
def customised(tmp_path_factory):
    return render("production", tmp_path_factory.mktemp("custom"), f"backups_schedule='{CUSTOM_SCHEDULE}'",
                  "postgres_pod_monitor_enabled=true", f"postgres_app_password={PASSWORD}")


def one(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def clusters(rendered):
    for env, hosts in rendered.items():
        for host, objects in hosts.items():
            yield env, host, one(objects, "Cluster", "hello-db")


def test_every_environment_and_region_is_rendered(rendered):
    assert set(rendered["staging"]) == {"europe-west1"}
    assert set(rendered["production"]) == {"europe-west1", "europe-west4"}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_rendered_objects_validate_against_kubernetes_and_the_crds(builds, env):
    build = builds[env]
    result = subprocess.run(
        [str(REPO / "scripts" / "validate-manifests"), str(build)],
        env={**os.environ, "HELLO_CRD_DIR": crd_dir()},
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    checked = int(re.search(r"(\d+) objects checked", result.stdout).group(1))
    # Namespace, Cluster, ObjectStore(s), ScheduledBackup, ServiceAccount, CronJob per region.
    assert checked >= (6 if env == "staging" else 14)


def test_three_instances_one_per_zone_on_the_postgres_pool(rendered):
    for env, host, cluster in clusters(rendered):
        spec = cluster["spec"]
        assert spec["instances"] == 3, (env, host)
        affinity = spec["affinity"]
        assert affinity["enablePodAntiAffinity"] is True
        assert affinity["podAntiAffinityType"] == "required"
        assert affinity["topologyKey"] == "topology.kubernetes.io/zone"
        assert affinity["nodeSelector"] == {"hello-platform/workload": "postgres"}
        assert {"key": "hello-platform/workload", "operator": "Equal", "value": "postgres",
                "effect": "NoSchedule"} in affinity["tolerations"]


def test_quorum_synchronous_replication_with_required_durability(rendered):
    for _, _, cluster in clusters(rendered):
        synchronous = cluster["spec"]["postgresql"]["synchronous"]
        assert synchronous["method"] == "any"
        assert synchronous["number"] == 1
        assert synchronous["dataDurability"] == "required"


def test_resources_requests_equal_limits_everywhere(rendered):
    for env, hosts in rendered.items():
        for host, objects in hosts.items():
            cluster = one(objects, "Cluster")
            assert cluster["spec"]["resources"]["requests"] == cluster["spec"]["resources"]["limits"]
            for store in (o for o in objects if o["kind"] == "ObjectStore"):
                sidecar = store["spec"]["instanceSidecarConfiguration"]["resources"]
                assert sidecar["requests"] == sidecar["limits"]
            cronjob = one(objects, "CronJob")
            for container in cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]:
                assert container["resources"]["requests"] == container["resources"]["limits"], (env, host)


def test_zonal_storage_class_for_data_and_wal(rendered):
    for _, _, cluster in clusters(rendered):
        assert cluster["spec"]["storage"]["storageClass"] == "standard-rwo"
        assert cluster["spec"]["walStorage"]["storageClass"] == "standard-rwo"


def test_wal_archiving_through_the_plugin_into_the_regions_own_store(rendered):
    for env, host, cluster in clusters(rendered):
        plugins = cluster["spec"]["plugins"]
        assert plugins == [{"name": PLUGIN, "enabled": True, "isWALArchiver": True,
                            "parameters": {"barmanObjectName": f"hello-db-{host}"}}]
        assert "barmanObjectStore" not in cluster["spec"].get("backup", {})
        store = one(rendered[env][host], "ObjectStore", f"hello-db-{host}")
        bucket = f"hello-platform-{env}-hello-backups"
        assert store["spec"]["configuration"]["destinationPath"] == f"gs://{bucket}/physical/{host}"
        assert store["spec"]["configuration"]["googleCredentials"] == {"gkeEnvironment": True}
        annotations = cluster["spec"]["serviceAccountTemplate"]["metadata"]["annotations"]
        assert annotations["iam.gke.io/gcp-service-account"] == \
            f"hello-db@hello-platform-{env}.iam.gserviceaccount.com"


def test_object_store_retention_follows_the_environment(rendered):
    expected = {"staging": "7d", "production": "30d"}
    for env, hosts in rendered.items():
        for objects in hosts.values():
            stores = [o for o in objects if o["kind"] == "ObjectStore"]
            assert stores
            assert {s["spec"]["retentionPolicy"] for s in stores} == {expected[env]}


def test_scheduled_backup_uses_the_plugin_and_the_schedule_variable(customised):
    scheduled = one(load_objects(customised / "europe-west1"), "ScheduledBackup")
    assert scheduled["spec"]["schedule"] == CUSTOM_SCHEDULE
    assert scheduled["spec"]["method"] == "plugin"
    assert scheduled["spec"]["pluginConfiguration"] == {"name": PLUGIN}
    assert scheduled["spec"]["cluster"] == {"name": "hello-db"}


def test_default_schedule_is_daily(rendered):
    for hosts in rendered.values():
        for objects in hosts.values():
            seconds, minute, hour, day, month, weekday = one(objects, "ScheduledBackup")["spec"]["schedule"].split()
            assert (day, month, weekday) == ("*", "*", "*")
            assert hour.isdigit() and minute.isdigit() and seconds.isdigit()


def test_replica_cluster_topology_in_the_dr_region(rendered):
    production = rendered["production"]
    primary = one(production["europe-west1"], "Cluster")["spec"]
    replica = one(production["europe-west4"], "Cluster")["spec"]
    members = {"hello-db-europe-west1", "hello-db-europe-west4"}

    assert primary["replica"] == {"self": "hello-db-europe-west1", "primary": "hello-db-europe-west1",
                                  "source": "hello-db-europe-west4"}
    assert replica["replica"] == {"self": "hello-db-europe-west4", "primary": "hello-db-europe-west1",
                                  "source": "hello-db-europe-west1"}
    for spec in (primary, replica):
        external = {e["name"]: e["plugin"] for e in spec["externalClusters"]}
        assert set(external) == members
        for name, plugin in external.items():
            assert plugin["name"] == PLUGIN
            assert plugin["parameters"] == {"barmanObjectName": name, "serverName": "hello-db"}
    # The primary initialises the database; the replica starts from the primary's backups.
    assert primary["bootstrap"]["initdb"]["secret"] == {"name": "hello-db-app"}
    assert replica["bootstrap"]["recovery"]["source"] == "hello-db-europe-west1"
    assert replica["bootstrap"]["recovery"]["secret"] == {"name": "hello-db-app"}
    # Both regions hold both object stores, so either can follow the other.
    for region in ("europe-west1", "europe-west4"):
        names = {o["metadata"]["name"] for o in production[region] if o["kind"] == "ObjectStore"}
        assert names == {f"hello-db-{r}" for r in ("europe-west1", "europe-west4")}


def test_staging_has_no_distributed_topology(rendered):
    spec = one(rendered["staging"]["europe-west1"], "Cluster")["spec"]
    assert "replica" not in spec
    assert "externalClusters" not in spec
    assert "initdb" in spec["bootstrap"]


def test_logical_backup_runs_only_where_the_primary_is_through_workload_identity(rendered):
    production = rendered["production"]
    assert one(production["europe-west1"], "CronJob")["spec"]["suspend"] is False
    assert one(production["europe-west4"], "CronJob")["spec"]["suspend"] is True
    for env, hosts in rendered.items():
        for objects in hosts.values():
            account = one(objects, "ServiceAccount")
            assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == \
                f"hello-db@hello-platform-{env}.iam.gserviceaccount.com"
            pod = one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            assert pod["serviceAccountName"] == account["metadata"]["name"]
            container = pod["containers"][0]
            assert container["command"][:2] == ["pg-dump-to-gcs", "backup"]
            env_vars = {e["name"]: e for e in container["env"]}
            assert env_vars["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "hello-db-app", "key": "uri"}
            assert env_vars["BACKUP_BUCKET"]["value"] == f"hello-platform-{env}-hello-backups"


def test_a_switched_over_topology_renders_the_other_way_round(tmp_path):
    build = render("production", tmp_path, "hello_db_topology_primary=hello-db-europe-west4")
    old = one(load_objects(build / "europe-west1"), "Cluster")["spec"]["replica"]
    new = one(load_objects(build / "europe-west4"), "Cluster")["spec"]["replica"]
    assert old == {"self": "hello-db-europe-west1", "primary": "hello-db-europe-west4",
                   "source": "hello-db-europe-west4"}
    assert new == {"self": "hello-db-europe-west4", "primary": "hello-db-europe-west4",
                   "source": "hello-db-europe-west1"}
    assert one(load_objects(build / "europe-west4"), "CronJob")["spec"]["suspend"] is False


def test_pod_monitor_selects_the_instances_when_enabled(customised, rendered):
    monitor = one(load_objects(customised / "europe-west1"), "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == {"cnpg.io/cluster": "hello-db",
                                                          "cnpg.io/podRole": "instance"}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    # Off by default: GKE has no Prometheus Operator CRDs.
    assert not [o for o in rendered["production"]["europe-west1"] if o["kind"] == "PodMonitor"]


def test_no_secret_in_any_rendered_file(rendered, customised):
    for hosts in rendered.values():
        for objects in hosts.values():
            assert not [o for o in objects if o["kind"] == "Secret"]
    # Even with a password given, nothing rendered carries it.
    files = [path for path in customised.rglob("*") if path.is_file()]
    assert files
    for path in files:
        if path.is_file():
            text = path.read_text()
            assert PASSWORD not in text, path
            assert not re.search(r"postgres(ql)?://[^:/\s]+:[^@\s]+@", text), path
