"""inventories/kind: the local rehearsal environment fits the same roles as GKE's.

A real ansible-playbook run: preflight accepts kind as a changing (non-production) run; the
run's one render of every environment (support.render) then shows what kind needs: no node pool
selectors, kind's `standard` storage class, and every GCS client (the Barman Cloud plugin's
ObjectStores, the dump CronJob, the drill Jobs) pointed at the fake GCS server that
roles/kind_gcs runs, whose Service and bucket match.
"""

import urllib.parse
from collections import defaultdict

import pytest
import yaml

from support import REPO
from support.playbooks import write_play


@pytest.fixture(scope="module")
def kind_objects(rendered_root):
    """(path under the host's folder, object) of everything kind renders (the run's one render)."""
    build = rendered_root / "kind"
    return [
        (path.relative_to(build / "kind").as_posix(), doc)
        for path in sorted((build / "kind").rglob("*.yml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_preflight_accepts_a_changing_run_on_kind_without_confirmation(ansible, tmp_path):
    playbook = write_play(tmp_path / "preflight.yml", roles=["preflight"])
    result = ansible("ansible-playbook", "-i", "inventories/kind", playbook)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed=0" in result.stdout


def pod_specs(objects):
    for name, doc in objects:
        spec = doc.get("spec", {})
        template = spec.get("jobTemplate", {}).get("spec", spec).get("template")
        if template:
            yield name, doc, template["spec"]


def test_no_pod_is_tied_to_a_gke_node_pool(kind_objects):
    specs = list(pod_specs(kind_objects))
    assert specs, "no pod templates were rendered"
    for name, doc, spec in specs:
        assert not spec.get("nodeSelector"), (
            f"{name}: {doc['kind']} {doc['metadata']['name']} selects {spec['nodeSelector']}"
        )
    for name, doc in kind_objects:
        if doc["kind"] == "Cluster":
            assert not doc["spec"].get("affinity", {}).get("nodeSelector"), name


def test_every_volume_uses_kinds_storage_class(kind_objects):
    clusters = [(name, doc) for name, doc in kind_objects if doc["kind"] == "Cluster"]
    assert {name for name, _ in clusters} == {"postgres/cluster.yml", "drill/cluster.yml"}
    for name, cluster in clusters:
        for storage in ("storage", "walStorage"):
            if storage in cluster["spec"]:
                assert cluster["spec"][storage]["storageClass"] == "standard", f"{name} {storage}"


def test_every_gcs_client_uses_the_fake_gcs_server_that_kind_runs(kind_objects):
    (service,) = [doc for name, doc in kind_objects if name == "kind/fake-gcs-server.yml" and doc["kind"] == "Service"]
    (deployment,) = [doc for name, doc in kind_objects if doc["kind"] == "Deployment" and name.startswith("kind/")]
    url = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:{service['spec']['ports'][0]['port']}"

    emulator_settings = []
    for name, doc in kind_objects:
        if doc["kind"] == "ObjectStore":
            emulator_settings.append((name, doc["spec"]["instanceSidecarConfiguration"]["env"]))
            assert "applicationCredentials" in doc["spec"]["configuration"]["googleCredentials"], name
    for name, doc, spec in pod_specs(kind_objects):
        if (
            doc["metadata"]["namespace"] in ("hello", "hello-drill")
            and doc["kind"] in ("Job", "CronJob")
            and name.startswith(("backups/", "drill/"))
            and "heartbeat" not in name
        ):
            emulator_settings.append((name, spec["containers"][0]["env"]))
    assert len(emulator_settings) >= 4
    for name, env in emulator_settings:
        assert {"name": "STORAGE_EMULATOR_HOST", "value": url} in env, name

    # The bucket the backups and drills use exists in the server from the start.
    buckets = {
        mount["mountPath"].removeprefix("/storage/")
        for mount in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        if mount.get("subPath")
    }
    paths = [doc["spec"]["configuration"]["destinationPath"] for _, doc in kind_objects if doc["kind"] == "ObjectStore"]
    assert {urllib.parse.urlsplit(path).netloc for path in paths} <= buckets == {"hello-platform-kind-hello-backups"}


# CPU requested by what runs on kind's node besides this repository's objects, in millicores,
# from the upstream manifests: kubeadm's control plane (cmd/kubeadm/app/phases/controlplane/
# manifests.go: kube-apiserver 250m, kube-controller-manager 200m, kube-scheduler 100m; etcd
# 100m, cmd/kubeadm/app/phases/etcd/local.go), CoreDNS's two replicas at 100m (kubeadm's
# cmd/kubeadm/app/phases/addons/dns/manifests.go), kind v0.31.0's kindnet at 100m
# (pkg/build/nodeimage/const_cni.go), the Barman Cloud plugin at 10m (plugin-barman-cloud v0.14.0
# config/manager/manager.yaml); the charts of CloudNativePG (0.29.0) and the plugin (0.7.0) set
# `resources: {}`, as cert-manager's does.
KIND_SYSTEM_MILLICPU = 250 + 200 + 100 + 100 + 2 * 100 + 100 + 10
# A GitHub-hosted 2-vCPU runner; kind's node may be given all of it (kind reserves nothing).
RUNNER_MILLICPU = 2000
# Envoy Gateway's shutdown-manager, beside every Envoy: 10m, which no setting changes (envoyproxy/
# gateway v1.9.0, api/v1alpha1/shared_types.go DefaultShutdownManagerCPUResourceRequests, used by
# internal/infrastructure/kubernetes/proxy/resource.go).
ENVOY_SHUTDOWN_MANAGER_MILLICPU = 10


def millicpu(quantity) -> int:
    text = str(quantity)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def requested(spec) -> int:
    return sum(millicpu(c.get("resources", {}).get("requests", {}).get("cpu", 0)) for c in spec["containers"])


def envoy_gateway_cpu(objects) -> int:
    """Envoy Gateway's controller (roles/kind_gateway's chart values) and the Envoy pods of the
    one Gateway (the EnvoyProxy's replicas, each an Envoy and a shutdown-manager)."""
    (proxy,) = [doc for _, doc in objects if doc["kind"] == "EnvoyProxy"]
    deployment = proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]
    envoy = millicpu(deployment["container"]["resources"]["requests"]["cpu"]) + ENVOY_SHUTDOWN_MANAGER_MILLICPU
    defaults = yaml.safe_load((REPO / "roles/kind_gateway/defaults/main.yml").read_text())
    kind_vars = {}
    for path in (REPO / "inventories/kind").rglob("*.yml"):
        kind_vars.update(yaml.safe_load(path.read_text()) or {})
    controller = kind_vars.get("kind_gateway_controller_resources", defaults["kind_gateway_controller_resources"])
    return millicpu(controller["requests"]["cpu"]) + deployment["replicas"] * envoy


def test_the_rehearsal_fits_a_two_vcpu_runner(kind_objects, measurement):
    """At its busiest moments (a release: both slots and a release Job; the drill: the restored
    cluster and a drill Job), every CPU request on kind's one node fits the runner: past it the
    scheduler leaves pods Pending ("Insufficient cpu"). Envoy Gateway's controller and the
    Gateway's Envoy run throughout."""
    by_name = {(doc["kind"], doc["metadata"]["name"]): (name, doc) for name, doc in kind_objects}
    stores = {doc["metadata"]["name"]: doc for _, doc in kind_objects if doc["kind"] == "ObjectStore"}

    def cluster_cpu(doc):
        sidecar = 0
        for plugin in doc["spec"].get("plugins", []):
            store = stores.get(plugin.get("parameters", {}).get("barmanObjectName"), {})
            sidecar = millicpu(
                store.get("spec", {})
                .get("instanceSidecarConfiguration", {})
                .get("resources", {})
                .get("requests", {})
                .get("cpu", 0)
            )
        own = millicpu(doc["spec"].get("resources", {}).get("requests", {}).get("cpu", 0))
        return doc["spec"]["instances"] * (own + sidecar)

    database = cluster_cpu(by_name[("Cluster", "hello-db")][1])
    specs = list(pod_specs(kind_objects))
    # The live slot at its rendered size; a release raises the idle one to the same size.
    live = max(
        requested(spec) * doc["spec"]["replicas"]
        for _, doc, spec in specs
        if doc["kind"] == "Deployment" and doc["metadata"]["name"].startswith("hello-")
    )
    jobs = defaultdict(list)
    for name, doc, spec in specs:
        if doc["kind"] in ("Job", "CronJob"):
            jobs[name.split("/")[0]].append(requested(spec))
    fake_gcs = sum(requested(spec) for name, _, spec in specs if name.startswith("kind/"))
    heartbeat = next(requested(spec) for name, _, spec in specs if name.endswith("heartbeat-cronjob.yml"))
    gateway = envoy_gateway_cpu(kind_objects)
    always = KIND_SYSTEM_MILLICPU + database + fake_gcs + heartbeat + gateway
    phases = {
        "release": always + 2 * live + max(jobs["hello"]),
        "backup": always + live + max(jobs["backups"]),
        "drill": always + live + cluster_cpu(by_name[("Cluster", "hello-db-drill")][1]) + max(jobs["drill"]),
    }
    measurement(f"kind rehearsal: CPU requested at its busiest moments, in millicores of {RUNNER_MILLICPU}: {phases}")
    assert all(cpu <= RUNNER_MILLICPU for cpu in phases.values()), phases
