"""The database tier's Kubernetes objects, rendered by the real roles for every environment.

Each environment's inventory renders roles/postgres and roles/backups (their tasks/render.yml,
through a real ansible-playbook run) into a temporary folder; the objects must validate against
the Kubernetes schema and the pinned CloudNativePG / Barman Cloud CRDs (scripts/validate-manifests),
and a policy over them checks what the design promises: three instances, one per zone, on the
PostgreSQL node pool, quorum synchronous replication with required durability, Guaranteed
resources, zonal storage, WAL archiving through the plugin, retention, the backup schedule from
the variable, the replica cluster's topology in the DR region, the metrics scrape object that
postgres_metrics chooses (and, against a stand-in API server, the check that the cluster serves
its kind), and no secret in any file.
"""

import copy
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from support.kube_api import RegionApi, write_kubeconfig
from support.playbooks import REPO, ansible, write_play, write_role_tasks_play

ENVIRONMENTS = ["staging", "production"]
PLUGIN = "barman-cloud.cloudnative-pg.io"


def render(env, folder, *extra_vars):
    """Renders the roles' objects into folder/build/<host>/ and returns folder/build."""
    build = Path(folder) / "build"
    playbook = write_play(
        Path(folder) / "render-database.yml",
        tasks=[
            {
                "name": "Render the database objects",
                "ansible.builtin.include_role": {"name": "postgres", "tasks_from": "render"},
            },
            {
                "name": "Render the backup objects",
                "ansible.builtin.include_role": {"name": "backups", "tasks_from": "render"},
            },
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


# The database tier's components in the shared render (support.render).
COMPONENTS = ("postgres", "backups")


@pytest.fixture(scope="module")
def rendered(rendered_root):
    """{env: {host: [objects of the database tier]}}."""
    return {
        env: {
            host.name: [o for component in COMPONENTS for o in load_objects(host / component)]
            for host in (rendered_root / env).iterdir()
            if host.is_dir()
        }
        for env in ENVIRONMENTS
    }


# One render with operator choices set: a schedule, the Prometheus Operator's PodMonitor
# scraping every minute, and a password that must not reach any file.
CUSTOM_SCHEDULE = "0 7 1 * * *"
PASSWORD = "rendered-files-never-hold-this-0123456789"


@pytest.fixture(scope="module")
def customised(ansible, tmp_path_factory):
    return render(
        "production",
        tmp_path_factory.mktemp("custom"),
        f"backups_schedule='{CUSTOM_SCHEDULE}'",
        "postgres_metrics=prometheus-operator",
        "postgres_metrics_interval=1m",
        f"postgres_app_password={PASSWORD}",
    )


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


def test_three_instances_one_per_zone_on_the_postgres_pool(rendered):
    for env, host, cluster in clusters(rendered):
        spec = cluster["spec"]
        assert spec["instances"] == 3, (env, host)
        affinity = spec["affinity"]
        assert affinity["enablePodAntiAffinity"] is True
        assert affinity["podAntiAffinityType"] == "required"
        assert affinity["topologyKey"] == "topology.kubernetes.io/zone"
        assert affinity["nodeSelector"] == {"hello-platform/workload": "postgres"}
        assert {
            "key": "hello-platform/workload",
            "operator": "Equal",
            "value": "postgres",
            "effect": "NoSchedule",
        } in affinity["tolerations"]


def test_quorum_synchronous_replication_with_required_durability(rendered):
    for _, _, cluster in clusters(rendered):
        synchronous = cluster["spec"]["postgresql"]["synchronous"]
        assert synchronous["method"] == "any"
        assert synchronous["number"] == 1
        assert synchronous["dataDurability"] == "required"


def test_max_connections_is_the_shared_value_the_service_is_checked_against(ansible, rendered, tmp_path):
    """One source of truth: hello_db_max_connections, the same in every region of an environment."""
    expected = {"staging": "100", "production": "100"}
    for env, host, cluster in clusters(rendered):
        # A string, as CloudNativePG's parameters map requires.
        assert cluster["spec"]["postgresql"]["parameters"]["max_connections"] == expected[env], (env, host)
    changed = load_objects(render("staging", tmp_path, "hello_db_max_connections=321"))
    assert one(changed, "Cluster", "hello-db")["spec"]["postgresql"]["parameters"]["max_connections"] == "321"


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
        assert plugins == [
            {
                "name": PLUGIN,
                "enabled": True,
                "isWALArchiver": True,
                "parameters": {"barmanObjectName": f"hello-db-{host}"},
            }
        ]
        assert "barmanObjectStore" not in cluster["spec"].get("backup", {})
        store = one(rendered[env][host], "ObjectStore", f"hello-db-{host}")
        bucket = f"hello-platform-{env}-hello-backups"
        assert store["spec"]["configuration"]["destinationPath"] == f"gs://{bucket}/physical/{host}"
        assert store["spec"]["configuration"]["googleCredentials"] == {"gkeEnvironment": True}
        annotations = cluster["spec"]["serviceAccountTemplate"]["metadata"]["annotations"]
        assert annotations["iam.gke.io/gcp-service-account"] == f"hello-db@hello-platform-{env}.iam.gserviceaccount.com"


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

    assert primary["replica"] == {
        "self": "hello-db-europe-west1",
        "primary": "hello-db-europe-west1",
        "source": "hello-db-europe-west4",
    }
    assert replica["replica"] == {
        "self": "hello-db-europe-west4",
        "primary": "hello-db-europe-west1",
        "source": "hello-db-europe-west1",
    }
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


# Each Cluster's entry for the other member: what the DR region's designated primary streams
# with (tests/test_database_streaming.py connects with it to a real server).
STREAMING = {
    "connectionParameters": {
        "host": "hello-db-primary.hello.svc",
        "port": "5432",
        "user": "streaming_replica",
        "dbname": "postgres",
        "sslmode": "verify-full",
    },
    "sslCert": {"name": "hello-db-primary-replication", "key": "tls.crt"},
    "sslKey": {"name": "hello-db-primary-replication", "key": "tls.key"},
    "sslRootCert": {"name": "hello-db-primary-ca", "key": "ca.crt"},
}


def test_the_dr_cluster_streams_from_its_source_and_keeps_its_archive(rendered):
    """CloudNativePG 1.30.0 docs/src/replica_cluster.md ("Configuring Replication", "Defining an
    External Cluster"): an external cluster with connectionParameters makes the designated
    primary stream (primary_conninfo), one with a plugin gives it the WAL archive
    (restore_command); with both, PostgreSQL streams and falls back to the archive."""
    production = rendered["production"]
    for region, objects in production.items():
        spec = one(objects, "Cluster")["spec"]
        own = f"hello-db-{region}"
        external = {e["name"]: e for e in spec["externalClusters"]}
        (other,) = set(external) - {own}
        # A Cluster never streams from itself; from the other member, while it holds the primary.
        assert set(external[own]) == {"name", "plugin"}, region
        assert {k: v for k, v in external[other].items() if k not in ("name", "plugin")} == STREAMING, region
        assert external[other]["plugin"]["parameters"]["barmanObjectName"] == other
    replica = one(production["europe-west4"], "Cluster")["spec"]
    (source,) = [e for e in replica["externalClusters"] if e["name"] == replica["replica"]["source"]]
    assert source["name"] == "hello-db-europe-west1"
    assert "connectionParameters" in source and "plugin" in source


def validate_against_the_pinned_crds(folder, objects):
    """scripts/validate-manifests over ``objects``, custom resources against HELLO_CRD_DIR."""
    crd_dir = os.environ.get("HELLO_CRD_DIR")
    assert crd_dir, "HELLO_CRD_DIR names the pinned CRDs' folder (docs/testing.md)"
    (folder / "objects.yml").write_text(yaml.safe_dump_all(objects))
    done = subprocess.run(
        [REPO / "scripts" / "validate-manifests", folder], capture_output=True, text=True, check=False
    )
    return done.returncode, done.stdout + done.stderr


def test_the_streaming_dr_cluster_is_valid_against_the_pinned_crd(rendered, tmp_path):
    cluster = one(rendered["production"]["europe-west4"], "Cluster")
    code, output = validate_against_the_pinned_crds(tmp_path, [cluster])
    assert code == 0, output
    assert "1 objects checked" in output and "0 invalid" in output, output
    # The check reaches the new fields: connectionParameters is a map of strings
    # (api/v1/cluster_types.go ExternalCluster), so a port given as a number is refused.
    broken = copy.deepcopy(cluster)
    broken["spec"]["externalClusters"][0]["connectionParameters"]["port"] = 5432
    code, output = validate_against_the_pinned_crds(tmp_path, [broken])
    assert code == 1 and "connectionParameters.port" in output, output


def test_logical_backup_runs_only_where_the_primary_is_through_workload_identity(rendered):
    production = rendered["production"]
    assert one(production["europe-west1"], "CronJob")["spec"]["suspend"] is False
    assert one(production["europe-west4"], "CronJob")["spec"]["suspend"] is True
    for env, hosts in rendered.items():
        for objects in hosts.values():
            account = one(objects, "ServiceAccount")
            assert (
                account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
                == f"hello-db@hello-platform-{env}.iam.gserviceaccount.com"
            )
            pod = one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            assert pod["serviceAccountName"] == account["metadata"]["name"]
            container = pod["containers"][0]
            assert container["command"][:2] == ["pg-dump-to-gcs", "backup"]
            env_vars = {e["name"]: e for e in container["env"]}
            assert env_vars["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "hello-db-app", "key": "uri"}
            assert env_vars["BACKUP_BUCKET"]["value"] == f"hello-platform-{env}-hello-backups"


@pytest.mark.slow  # a whole playbook run through many tasks
def test_a_switched_over_topology_renders_the_other_way_round(ansible, tmp_path):
    build = render("production", tmp_path, "hello_db_topology_primary=hello-db-europe-west4")
    old = one(load_objects(build / "europe-west1"), "Cluster")["spec"]["replica"]
    new = one(load_objects(build / "europe-west4"), "Cluster")["spec"]["replica"]
    assert old == {
        "self": "hello-db-europe-west1",
        "primary": "hello-db-europe-west4",
        "source": "hello-db-europe-west4",
    }
    assert new == {
        "self": "hello-db-europe-west4",
        "primary": "hello-db-europe-west4",
        "source": "hello-db-europe-west1",
    }
    assert one(load_objects(build / "europe-west4"), "CronJob")["spec"]["suspend"] is False
    # The demoted region streams from the new primary through the same alias and copies, which
    # playbooks/switchover.yml points at it (roles/postgres tasks/follow.yml).
    demoted = one(load_objects(build / "europe-west1"), "Cluster")["spec"]
    (source,) = [e for e in demoted["externalClusters"] if e["name"] == demoted["replica"]["source"]]
    assert source["name"] == "hello-db-europe-west4"
    assert {k: v for k, v in source.items() if k not in ("name", "plugin")} == STREAMING


INSTANCES_OF_THE_CLUSTER = {"cnpg.io/cluster": "hello-db", "cnpg.io/podRole": "instance"}
SCRAPE_KINDS = {"PodMonitoring", "PodMonitor"}


def kinds(objects):
    return [o["kind"] for o in objects]


def test_gke_environments_scrape_the_instances_with_managed_prometheus(rendered):
    for env, hosts in rendered.items():
        for host, objects in hosts.items():
            monitoring = one(objects, "PodMonitoring", "hello-db")
            assert monitoring["apiVersion"] == "monitoring.googleapis.com/v1"
            assert monitoring["metadata"]["namespace"] == "hello"
            # Only the Cluster's instance pods: no poolers, no jobs, no other Cluster.
            assert monitoring["spec"]["selector"] == {"matchLabels": INSTANCES_OF_THE_CLUSTER}, (env, host)
            assert monitoring["spec"]["endpoints"] == [{"port": "metrics", "interval": "30s"}]
            assert monitoring["spec"]["targetLabels"] == {
                "fromPod": [{"from": "cnpg.io/instanceRole", "to": "instance_role"}]
            }
            assert "PodMonitor" not in kinds(objects), (env, host)


def test_prometheus_operator_renders_the_pod_monitor_and_no_pod_monitoring(customised):
    for region in ("europe-west1", "europe-west4"):
        objects = load_objects(customised / region)
        monitor = one(objects, "PodMonitor", "hello-db")
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["spec"]["selector"] == {"matchLabels": INSTANCES_OF_THE_CLUSTER}
        assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "interval": "1m"}]
        assert "PodMonitoring" not in kinds(objects)


@pytest.mark.slow  # a whole playbook run through many tasks
def test_none_renders_no_scrape_object(ansible, tmp_path):
    build = render("production", tmp_path, "postgres_metrics=none")
    for region in ("europe-west1", "europe-west4"):
        objects = load_objects(build / region)
        assert one(objects, "Cluster", "hello-db")["kind"] == "Cluster"
        assert not SCRAPE_KINDS & set(kinds(objects))


def test_kind_renders_no_scrape_object(rendered_root):
    """kind has neither Managed Service for Prometheus nor a Prometheus Operator."""
    objects = [o for c in COMPONENTS for host in (rendered_root / "kind").iterdir() for o in load_objects(host / c)]
    assert one(objects, "Cluster", "hello-db")["kind"] == "Cluster"
    assert not SCRAPE_KINDS & set(kinds(objects))


def render_fails(tmp_path, *extra_vars):
    """Renders staging with extra variables that must stop the run; returns its output."""
    playbook = write_play(
        tmp_path / "render.yml",
        tasks=[
            {
                "name": "Render the database objects",
                "ansible.builtin.include_role": {"name": "postgres", "tasks_from": "render"},
            }
        ],
    )
    args = ["-e", f"hello_k8s_build_dir={tmp_path}/build"]
    for extra in extra_vars:
        args += ["-e", extra]
    result = ansible("ansible-playbook", "-i", "inventories/staging", playbook, *args)
    assert result.returncode != 0, result.stdout
    assert not (tmp_path / "build").exists()
    return " ".join((result.stdout + result.stderr).split())


def test_the_former_boolean_stops_the_run_and_names_its_replacement(ansible, tmp_path):
    output = render_fails(tmp_path, "postgres_pod_monitor_enabled=true")
    assert "postgres_pod_monitor_enabled is no longer read" in output
    assert "set postgres_metrics instead, to prometheus-operator for a PodMonitor" in output
    assert "inventories/staging/group_vars/all/postgres.yml" in output


def test_an_unknown_metrics_choice_is_refused(ansible, tmp_path):
    output = render_fails(tmp_path, "postgres_metrics=prometheus")
    assert "postgres_metrics" in output and "gmp, prometheus-operator, none" in output


@pytest.mark.parametrize("interval", ["30 seconds", "30", "30s1m"])
def test_an_interval_that_is_no_prometheus_duration_is_refused(ansible, tmp_path, interval):
    output = render_fails(tmp_path, f"postgres_metrics_interval='{interval}'")
    assert f"postgres_metrics_interval is {interval}, not a Prometheus duration" in output
    assert "such as 30s or 1m30s" in output


# The Pooler's objects, after the Cluster's, where hello_db_pooler is on (staging).
POOLER = ["pooler", "pooler-pdb", "pooler-networkpolicy"]


@pytest.mark.parametrize(
    "choice, expected",
    [
        (
            "gmp",
            [
                "networkpolicy",
                "monitoring-queries",
                "cluster",
                "podmonitoring",
                "rules",
                *POOLER,
                "pooler-podmonitoring",
            ],
        ),
        (
            "prometheus-operator",
            ["networkpolicy", "monitoring-queries", "cluster", "podmonitor", *POOLER, "pooler-podmonitor"],
        ),
        ("none", ["networkpolicy", "monitoring-queries", "cluster", *POOLER]),
    ],
)
def test_the_apply_task_applies_the_chosen_scrape_object(ansible, tmp_path, choice, expected):
    """tasks/main.yml applies what its loop names; evaluate that loop after a real render."""
    tasks = yaml.safe_load((REPO / "roles/postgres/tasks/main.yml").read_text())
    apply = next(t for t in tasks if t["name"].startswith("Apply the Cluster"))
    assert apply["kubernetes.core.k8s"]["src"] == "{{ hello_k8s_build_dir }}/postgres/{{ item }}.yml"
    build = tmp_path / "build"
    playbook = write_play(
        tmp_path / "apply-list.yml",
        hosts="europe-west1",
        tasks=[
            {
                "name": "Render the database objects",
                "ansible.builtin.include_role": {"name": "postgres", "tasks_from": "render"},
            },
            {
                # To a file: the YAML callback folds a long message over lines.
                "name": "Write down what the apply task loops over",
                "ansible.builtin.copy": {
                    "content": "{{ " + apply["loop"].strip("{} ") + " | to_json }}",
                    "dest": str(tmp_path / "applies.json"),
                    "mode": "0644",
                },
            },
        ],
    )
    result = ansible(
        "ansible-playbook",
        "-i",
        "inventories/staging",
        playbook,
        "-e",
        f"hello_k8s_build_dir={build}",
        "-e",
        f"postgres_metrics={choice}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    applied = json.loads((tmp_path / "applies.json").read_text())
    assert applied == expected
    # Each file it applies was rendered, and holds the kind the choice names.
    applied_kinds = [yaml.safe_load((build / "postgres" / f"{item}.yml").read_text())["kind"] for item in applied]
    pooler = ["Pooler", "PodDisruptionBudget", "NetworkPolicy"]
    expected_kinds = {
        "gmp": ["NetworkPolicy", "ConfigMap", "Cluster", "PodMonitoring", "Rules", *pooler, "PodMonitoring"],
        "prometheus-operator": ["NetworkPolicy", "ConfigMap", "Cluster", "PodMonitor", *pooler, "PodMonitor"],
        "none": ["NetworkPolicy", "ConfigMap", "Cluster", *pooler],
    }
    assert applied_kinds == expected_kinds[choice]


CRD_GROUP = "apiextensions.k8s.io"


class CrdApi(RegionApi):
    """A region's Kubernetes API that also serves discovery of CustomResourceDefinitions and,
    when given, the one named crd_name."""

    def __init__(self, crd_name=None):
        super().__init__(None)
        self.crd_name = crd_name

    def answer(self, path):
        if path == "/apis":
            groups = super().answer(path)
            version = {"groupVersion": f"{CRD_GROUP}/v1", "version": "v1"}
            return {
                **groups,
                "groups": [*groups["groups"], {"name": CRD_GROUP, "versions": [version], "preferredVersion": version}],
            }
        if path == f"/apis/{CRD_GROUP}/v1":
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": f"{CRD_GROUP}/v1",
                "resources": [
                    {
                        "name": "customresourcedefinitions",
                        "singularName": "customresourcedefinition",
                        "namespaced": False,
                        "kind": "CustomResourceDefinition",
                        "verbs": ["get", "list", "watch"],
                    }
                ],
            }
        if self.crd_name and path == f"/apis/{CRD_GROUP}/v1/customresourcedefinitions/{self.crd_name}":
            return {
                "apiVersion": f"{CRD_GROUP}/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": self.crd_name},
                "spec": {},
            }
        return super().answer(path)


def check_metrics_kind(tmp_path, api, choice):
    """Runs roles/postgres' metrics_check.yml for staging against api; returns (code, output)."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"staging": "test"}, {"staging": api})
    playbook = write_role_tasks_play(tmp_path / "check.yml", "postgres", "metrics_check", "Check the kind")
    result = ansible(
        "ansible-playbook",
        "-i",
        "inventories/staging",
        playbook,
        "-e",
        "hello_kube_context=test",
        "-e",
        f"postgres_metrics={choice}",
        env={"KUBECONFIG": str(kubeconfig), "K8S_AUTH_KUBECONFIG": str(kubeconfig)},
    )
    return result.returncode, " ".join((result.stdout + result.stderr).split())


@pytest.fixture
def crd_api():
    apis = []

    def start(crd_name=None):
        apis.append(CrdApi(crd_name))
        return apis[-1]

    yield start
    for api in apis:
        api.close()


def test_gmp_without_managed_collection_stops_before_applying_with_what_to_do(ansible, tmp_path, crd_api):
    api = crd_api()
    code, output = check_metrics_kind(tmp_path, api, "gmp")
    assert code != 0
    assert "has no podmonitorings.monitoring.googleapis.com CustomResourceDefinition" in output
    assert "--enable-managed-prometheus" in output and "set postgres_metrics to none" in output
    assert (
        "GET",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/podmonitorings.monitoring.googleapis.com",
    ) in api.requests
    assert api.writes() == []


@pytest.mark.parametrize(
    "choice, crd",
    [("gmp", "podmonitorings.monitoring.googleapis.com"), ("prometheus-operator", "podmonitors.monitoring.coreos.com")],
)
def test_a_served_scrape_kind_passes_the_check(ansible, tmp_path, crd_api, choice, crd):
    code, output = check_metrics_kind(tmp_path, crd_api(crd), choice)
    assert code == 0, output


def test_prometheus_operator_without_its_crds_stops(ansible, tmp_path, crd_api):
    # The GKE kind is there, the Prometheus Operator's is not.
    code, output = check_metrics_kind(
        tmp_path, crd_api("podmonitorings.monitoring.googleapis.com"), "prometheus-operator"
    )
    assert code != 0
    assert "has no podmonitors.monitoring.coreos.com CustomResourceDefinition" in output
    assert "Install the Prometheus Operator there" in output


def test_none_asks_the_cluster_nothing(ansible, tmp_path, crd_api):
    api = crd_api()
    code, output = check_metrics_kind(tmp_path, api, "none")
    assert code == 0, output
    assert api.requests == []


def test_no_secret_in_any_rendered_file(ansible, rendered, customised):
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


# -- the Pooler (PgBouncer) ------------------------------------------------------------------
#
# CloudNativePG 1.30.0 rules these tests rely on, read at tag v1.30.0:
# - pkg/specs/pgbouncer/deployments.go: the Pooler's pods carry cnpg.io/poolerName=<pooler> (the
#   Deployment's selector) and cnpg.io/cluster=<cluster>; their container port `metrics` is
#   9127 (pkg/management/url/url.go PgBouncerMetricsPort);
# - pkg/specs/pgbouncer/services.go: the Service is named after the Pooler and keeps the type a
#   serviceTemplate gives it;
# - pkg/management/pgbouncer/config/config.go: PgBouncer's database is host=<cluster>-<type>, its
#   default server_tls_sslmode is verify-ca and client_tls_sslmode prefer (so TLS on both sides
#   must be asked for), and it makes no PodDisruptionBudget (nor does the controller);
# - api/v1/pooler_funcs.go GetClientTLSSecretNameOrDefault: without clientTLSSecret the pooler
#   presents the Cluster's server certificate to its clients;
# - internal/webhook/v1/pooler_webhook.go: spec.pgbouncer.parameters only from
#   AllowedPgbouncerGenericConfigurationParameters, and a Pooler must not be named like its Cluster.
POOLER_NAME = "hello-db-pooler-rw"
POOLER_PODS = {"cnpg.io/poolerName": POOLER_NAME}
# The parameters this repository may set, each in the webhook's allowed list (pooler_webhook.go,
# v1.30.0); the ones the operator forces (listen_port, auth_file, the TLS files...) are not there.
WEBHOOK_ALLOWS = {
    "max_prepared_statements",
    "default_pool_size",
    "max_db_connections",
    "max_client_conn",
    "client_tls_sslmode",
    "server_tls_sslmode",
    "reserve_pool_size",
    "min_pool_size",
    "server_lifetime",
    "server_login_retry",
    "query_wait_timeout",
    "idle_transaction_timeout",
}


def pooler_problems(objects):
    """What the design promises of a region's Pooler, as a list of what is wrong."""
    problems = []
    poolers = [o for o in objects if o["kind"] == "Pooler"]
    if len(poolers) != 1:
        return [f"expected one Pooler, found {len(poolers)}"]
    pooler = poolers[0]
    spec = pooler["spec"]
    name = pooler["metadata"]["name"]
    cluster = spec["cluster"]["name"]
    if name == cluster:
        problems.append("the Pooler is named like its Cluster (the webhook refuses it)")
    if spec.get("type", "rw") != "rw":
        problems.append("the Pooler is not in front of the read-write service")
    if spec.get("instances", 1) < 2:
        problems.append("fewer than two PgBouncer instances")
    pgbouncer = spec["pgbouncer"]
    parameters = pgbouncer.get("parameters", {})
    if pgbouncer.get("poolMode", "session") != "transaction":
        problems.append("pool mode is not transaction")
    if int(parameters.get("max_prepared_statements", "0")) <= 0:
        problems.append("max_prepared_statements is off: the service's prepared statements would fail")
    if set(parameters) - WEBHOOK_ALLOWS:
        problems.append(f"parameters the webhook refuses: {sorted(set(parameters) - WEBHOOK_ALLOWS)}")
    if parameters.get("client_tls_sslmode") not in ("require", "verify-ca", "verify-full"):
        problems.append("clients may connect without TLS")
    if float(parameters.get("server_login_retry", "15")) > 2:
        problems.append("PgBouncer waits too long to reconnect after a failover (server_login_retry)")
    # 0 (PgBouncer's default) never frees a server connection held by a client gone silent
    # mid-transaction; longer than the service's recovery bound (15 s) would outlast it.
    if not 0 < float(parameters.get("idle_transaction_timeout", "0")) <= 10:
        problems.append("a client gone silent in a transaction holds its server connection (idle_transaction_timeout)")
    if parameters.get("server_tls_sslmode") != "verify-full":
        problems.append("PgBouncer does not verify PostgreSQL's host name")
    pod = spec.get("template", {}).get("spec", {})
    zone_spread = [
        c
        for c in pod.get("topologySpreadConstraints", [])
        if c["topologyKey"] == "topology.kubernetes.io/zone"
        and c.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule"
        and c.get("labelSelector", {}).get("matchLabels") == {"cnpg.io/poolerName": name}
    ]
    if not zone_spread:
        problems.append("the instances are not required to spread over zones")
    pdbs = [
        o
        for o in objects
        if o["kind"] == "PodDisruptionBudget"
        and o["spec"]["selector"].get("matchLabels") == {"cnpg.io/poolerName": name}
    ]
    if not pdbs or pdbs[0]["spec"].get("maxUnavailable", spec.get("instances", 1)) >= spec.get("instances", 1):
        problems.append("no disruption budget keeping a PgBouncer instance up")
    return problems


def gke_regions(rendered):
    for env, hosts in rendered.items():
        for host, objects in hosts.items():
            yield env, host, objects


def test_every_gke_region_has_a_pooler_as_the_design_promises(rendered):
    for env, host, objects in gke_regions(rendered):
        assert pooler_problems(objects) == [], (env, host)
        pooler = one(objects, "Pooler", POOLER_NAME)
        assert pooler["spec"]["cluster"] == {"name": "hello-db"}
        container = one_container(pooler)
        assert "/ghcr/cloudnative-pg/pgbouncer:1.25.1@sha256:" in container["image"], (env, host)
        assert container["resources"]["requests"] == container["resources"]["limits"]


def one_container(pooler):
    (container,) = pooler["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "pgbouncer"  # the container CloudNativePG merges the template into
    return container


@pytest.mark.parametrize(
    "break_it, problem",
    [
        (lambda p, o: p["spec"]["template"]["spec"].pop("topologySpreadConstraints"), "spread over zones"),
        (lambda p, o: o.remove(next(x for x in o if x["kind"] == "PodDisruptionBudget")), "disruption budget"),
        (lambda p, o: p["spec"].update(instances=1), "fewer than two"),
        (lambda p, o: p["spec"]["pgbouncer"].update(poolMode="session"), "pool mode"),
        (lambda p, o: p["spec"]["pgbouncer"]["parameters"].update(max_prepared_statements="0"), "prepared"),
        (lambda p, o: p["spec"]["pgbouncer"]["parameters"].update(listen_port="6432"), "webhook refuses"),
        (lambda p, o: p["spec"]["pgbouncer"]["parameters"].pop("client_tls_sslmode"), "without TLS"),
        (lambda p, o: p["spec"]["pgbouncer"]["parameters"].pop("server_login_retry"), "reconnect"),
        (lambda p, o: p["spec"]["pgbouncer"]["parameters"].pop("idle_transaction_timeout"), "gone silent"),
    ],
)
def test_the_pooler_policy_fails_without_what_it_checks(rendered, break_it, problem):
    objects = copy.deepcopy(rendered["staging"]["europe-west1"])
    break_it(next(o for o in objects if o["kind"] == "Pooler"), objects)
    assert any(problem in p for p in pooler_problems(objects)), pooler_problems(objects)


def test_the_pooler_is_valid_against_the_pinned_crd(rendered, tmp_path):
    pooler = one(rendered["production"]["europe-west4"], "Pooler")
    code, output = validate_against_the_pinned_crds(tmp_path, [pooler])
    assert code == 0 and "0 invalid" in output, output
    # spec.pgbouncer.poolMode is session or transaction only (the CRD's enum).
    broken = copy.deepcopy(pooler)
    broken["spec"]["pgbouncer"]["poolMode"] = "statement"
    code, output = validate_against_the_pinned_crds(tmp_path, [broken])
    assert code == 1 and "poolMode" in output, output


def test_the_server_certificate_names_the_pooler_and_its_cross_region_alias(rendered):
    for env, host, objects in gke_regions(rendered):
        names = one(objects, "Cluster")["spec"]["certificates"]["serverAltDNSNames"]
        for service in (POOLER_NAME, f"{POOLER_NAME}-primary"):
            assert f"{service}.hello.svc" in names, (env, host)


def test_the_pooler_is_reachable_across_regions_only_with_a_dr_region(rendered):
    for region in ("europe-west1", "europe-west4"):
        template = one(rendered["production"][region], "Pooler")["spec"]["serviceTemplate"]
        assert template["spec"]["type"] == "LoadBalancer"
        assert template["metadata"]["annotations"]["networking.gke.io/load-balancer-type"] == "Internal"
        assert template["spec"]["loadBalancerSourceRanges"]
    assert "serviceTemplate" not in one(rendered["staging"]["europe-west1"], "Pooler")["spec"]


def test_the_pooler_metrics_are_scraped_and_admitted(rendered):
    for env, host, objects in gke_regions(rendered):
        monitoring = one(objects, "PodMonitoring", POOLER_NAME)
        assert monitoring["spec"]["selector"] == {"matchLabels": POOLER_PODS}
        assert monitoring["spec"]["endpoints"] == [{"port": "metrics", "interval": "30s"}]
        policy = one(objects, "NetworkPolicy", POOLER_NAME)
        assert policy["spec"]["podSelector"] == {"matchLabels": POOLER_PODS}
        admitted = {
            (
                p["port"],
                r["from"][0].get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name"),
            )
            for r in policy["spec"]["ingress"]
            for p in r["ports"]
        }
        assert (9127, "gmp-system") in admitted, (env, host)


def test_kind_renders_no_pooler(rendered_root):
    objects = [o for c in COMPONENTS for host in (rendered_root / "kind").iterdir() for o in load_objects(host / c)]
    assert "Pooler" not in kinds(objects)
    assert "pooler" not in json.dumps(one(objects, "Cluster")["spec"]["certificates"])
