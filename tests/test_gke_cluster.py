"""roles/gke_cluster through playbooks/cluster.yml, against a test double of gcloud.

There is no Google Cloud here. These tests put tests/support/fake_gcloud.py on PATH as `gcloud`: it
records every command line, has the real gcloud CLI parse it when installed (so a wrong flag fails the run), and
answers from a JSON state file. They test the role's command lines, its read-before-write
logic, idempotence (a second run changes nothing) and check mode (no command that writes).
They do not test GKE itself: whether GKE accepts these settings together, how long operations
take, or the answers of the real API beyond the fields the role reads.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from support.gcloud import REAL_GCLOUD, FakeProject
from support.playbooks import REPO, edit_vars

READ_ONLY = {
    ("container", "clusters", "describe"),
    ("iam", "service-accounts", "describe"),
    ("projects", "get-iam-policy"),
    ("compute", "firewall-rules", "list"),
}
# CloudNativePG 1.30.0's admission webhook: the operator listens on 9443
# (config/manager/manager.yaml: --webhook-port=9443; config/webhook/service.yaml: targetPort
# 9443) and the API server must reach it (config/webhook/manifests.yaml: failurePolicy: Fail).
CNPG_WEBHOOK_PORT = "9443"


def writes(calls):
    """The calls that change something: all but the read-only ones."""
    return [call for call in calls if not any(tuple(call[: len(verb)]) == verb for verb in READ_ONLY)]


def changed_counts(output):
    return {host: int(count) for host, count in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", output, re.M)}


def flag(call, name):
    return next(arg.split("=", 1)[1] for arg in call if arg.startswith(f"--{name}="))


@pytest.fixture(scope="module")
def production(ansible, tmp_path_factory, gcloud_config):
    """Production (two regions) created from nothing by a first run."""
    project = FakeProject(tmp_path_factory.mktemp("production"), "production", gcloud_config)
    project.first_run = project.run()
    return project


def test_check_mode_on_an_empty_project_only_reads(ansible, tmp_path, gcloud_config):
    project = FakeProject(tmp_path, "staging", gcloud_config)
    code, output, calls = project.run("--check")
    assert code == 0, output
    assert calls, "the probes must run under --check"
    assert writes(calls) == []
    assert project.snapshot() == ""


@pytest.mark.slow  # a whole playbook run through many tasks
def test_first_run_creates_clusters_pools_and_node_identity(ansible, production):
    code, output, calls = production.first_run
    assert code == 0, output
    verbs = [" ".join(a for a in call if not a.startswith("-"))[:60] for call in writes(calls)]
    # The project's service account and its roles once, then per region a cluster, two pools,
    # and the removal of the default pool.
    assert verbs.count("iam service-accounts create gke-nodes") == 1
    bindings = [call for call in calls if call[:2] == ["projects", "add-iam-policy-binding"]]
    assert sorted(flag(call, "role") for call in bindings) == [
        "roles/artifactregistry.reader",
        "roles/container.defaultNodeServiceAccount",
    ]
    for region, name in [
        ("europe-west1", "hello-production-europe-west1"),
        ("europe-west4", "hello-production-europe-west4"),
    ]:
        cluster = production.cluster(name, region)
        assert cluster["releaseChannel"] == {"channel": "REGULAR"}
        assert cluster["workloadIdentityConfig"] == {"workloadPool": "hello-platform-production.svc.id.goog"}
        assert cluster["privateClusterConfig"]["enablePrivateNodes"] is True
        assert cluster["networkConfig"]["datapathProvider"] == "ADVANCED_DATAPATH"
        # GKE's Gateway controller is off unless asked for (`--gateway-api`, in
        # cloud.google.com/kubernetes-engine/docs/how-to/deploying-gateways); without it the
        # GatewayClasses and the Gateway API's CRDs that roles/hello_app applies do not exist.
        assert cluster["networkConfig"]["gatewayApiConfig"] == {"channel": "CHANNEL_STANDARD"}
        assert len(cluster["locations"]) == 3 and all(z.startswith(region) for z in cluster["locations"])
        # GKE's own rule lets the control plane reach the nodes on 443 and 10250 only; the
        # role's rule adds the webhook port, from the same range to the same nodes, nothing more.
        master, webhooks = production.firewall(f"gke-{name}-*-master"), production.firewall(f"{name}-webhooks")
        assert webhooks["allowed"] == [{"IPProtocol": "tcp", "ports": [CNPG_WEBHOOK_PORT]}]
        assert webhooks["direction"] == "INGRESS" and webhooks["network"] == master["network"]
        assert webhooks["sourceRanges"] == master["sourceRanges"] and "0.0.0.0/0" not in webhooks["sourceRanges"]
        assert webhooks["targetTags"] == master["targetTags"]
        pools = {pool["name"]: pool for pool in cluster["nodePools"]}
        assert sorted(pools) == ["app", "postgres"]
        postgres, app = pools["postgres"], pools["app"]
        assert postgres["initialNodeCount"] == 1 and "autoscaling" not in postgres
        assert postgres["config"]["labels"] == {"hello-platform/workload": "postgres"}
        assert postgres["config"]["taints"] == [
            {"key": "hello-platform/workload", "value": "postgres", "effect": "NO_SCHEDULE"}
        ]
        assert app["autoscaling"] == {
            "enabled": True,
            "minNodeCount": 1,
            "maxNodeCount": 3,
            "locationPolicy": "BALANCED",
        }
        assert "taints" not in app["config"]
        for pool in (postgres, app):
            assert pool["config"]["serviceAccount"] == "gke-nodes@hello-platform-production.iam.gserviceaccount.com"
            assert pool["config"]["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}


@pytest.mark.slow  # a whole playbook run through many tasks
def test_clusters_are_created_with_managed_prometheus_collection(ansible, production):
    _, _, calls = production.first_run
    creates = [call for call in calls if call[:3] == ["container", "clusters", "create"]]
    assert len(creates) == 2
    for call in creates:
        assert "--enable-managed-prometheus" in call, call
    for region, name in [
        ("europe-west1", "hello-production-europe-west1"),
        ("europe-west4", "hello-production-europe-west4"),
    ]:
        assert production.cluster(name, region)["monitoringConfig"] == {"managedPrometheusConfig": {"enabled": True}}


@pytest.mark.slow  # a whole playbook run through many tasks
def test_settings_switched_off_by_hand_are_switched_back_on_each_alone(ansible, production):
    # Managed collection off in europe-west1, the Gateway API off in europe-west4, and the
    # webhook rule of europe-west1 opened to the world.
    state = json.loads(production.state.read_text())
    state["firewalls"]["hello-production-europe-west1-webhooks"]["sourceRanges"] = ["0.0.0.0/0"]
    west1 = next(k for k in state["clusters"] if k.endswith("/europe-west1/hello-production-europe-west1"))
    west4 = next(k for k in state["clusters"] if k.endswith("/europe-west4/hello-production-europe-west4"))
    state["clusters"][west1]["monitoringConfig"] = {"managedPrometheusConfig": {}}
    state["clusters"][west4]["networkConfig"]["gatewayApiConfig"] = {"channel": "CHANNEL_DISABLED"}
    production.state.write_text(json.dumps(state))
    before = production.snapshot()
    code, output, calls = production.run("--check")
    assert code == 0, output
    assert writes(calls) == [] and production.snapshot() == before

    code, output, calls = production.run()
    assert code == 0, output
    master = production.firewall("gke-hello-production-europe-west1-*-master")
    assert sorted(writes(calls)) == [
        [
            "compute",
            "firewall-rules",
            "update",
            "hello-production-europe-west1-webhooks",
            "--project=hello-platform-production",
            f"--rules=tcp:{CNPG_WEBHOOK_PORT}",
            f"--source-ranges={','.join(master['sourceRanges'])}",
            f"--target-tags={','.join(master['targetTags'])}",
            "--quiet",
        ],
        [
            "container",
            "clusters",
            "update",
            "hello-production-europe-west1",
            "--project=hello-platform-production",
            "--region=europe-west1",
            "--enable-managed-prometheus",
            "--quiet",
        ],
        [
            "container",
            "clusters",
            "update",
            "hello-production-europe-west4",
            "--project=hello-platform-production",
            "--region=europe-west4",
            "--gateway-api=standard",
            "--quiet",
        ],
    ]
    assert changed_counts(output) == {"europe-west1": 2, "europe-west4": 1}
    assert production.firewall("hello-production-europe-west1-webhooks")["sourceRanges"] == master["sourceRanges"]
    assert production.cluster("hello-production-europe-west1", "europe-west1")["monitoringConfig"] == {
        "managedPrometheusConfig": {"enabled": True}
    }
    assert production.cluster("hello-production-europe-west4", "europe-west4")["networkConfig"]["gatewayApiConfig"] == {
        "channel": "CHANNEL_STANDARD"
    }

    code, output, calls = production.run()
    assert code == 0 and writes(calls) == [], output


@pytest.mark.slow  # a whole playbook run through many tasks
def test_second_run_changes_nothing(ansible, production):
    code, output, calls = production.run()
    assert code == 0, output
    assert writes(calls) == []
    assert changed_counts(output) == {"europe-west1": 0, "europe-west4": 0}


@pytest.mark.slow  # a whole playbook run through many tasks
def test_a_changed_pool_size_is_previewed_by_check_then_applied_alone(ansible, production):
    edit_vars(production.inventory / "host_vars/europe-west4.yml", gke_cluster_app_pool_max_nodes_per_zone=5)
    before = production.snapshot()
    code, output, calls = production.run("--check")
    assert code == 0, output
    assert writes(calls) == []
    assert production.snapshot() == before

    code, output, calls = production.run()
    assert code == 0, output
    assert [call[:4] for call in writes(calls)] == [["container", "node-pools", "update", "app"]]
    assert flag(writes(calls)[0], "max-nodes") == "5"
    assert flag(writes(calls)[0], "region") == "europe-west4"
    assert changed_counts(output) == {"europe-west1": 0, "europe-west4": 1}

    code, output, calls = production.run()
    assert code == 0 and writes(calls) == [], output


@pytest.mark.slow  # a whole playbook run through many tasks
def test_a_changed_machine_type_stops_the_run_with_an_explanation(ansible, production):
    edit_vars(
        production.inventory / "host_vars/europe-west1.yml", gke_cluster_postgres_pool_machine_type="n2-highmem-8"
    )
    try:
        code, output, calls = production.run()
    finally:
        edit_vars(production.inventory / "host_vars/europe-west1.yml", gke_cluster_postgres_pool_machine_type=...)
    assert code != 0
    assert writes(calls) == []
    text = " ".join(output.split())
    assert "Node pool postgres of hello-production-europe-west1 runs n2-standard-4" in text
    assert "Changing these recreates every node of the pool" in text


@pytest.mark.skipif(REAL_GCLOUD is None, reason="the gcloud CLI is not installed: command lines are not checked")
def test_fake_gcloud_checks_command_lines(ansible, tmp_path, gcloud_config):
    """The double refuses what the real gcloud refuses, so the runs above used only valid commands."""
    project = FakeProject(tmp_path, "staging", gcloud_config)
    command = [
        sys.executable,
        REPO / "tests" / "support" / "fake_gcloud.py",
        "container",
        "clusters",
        "create",
        "c",
        "--project=p-123456",
        "--region=europe-west1",
        "--release-channel=sometimes",
    ]
    result = subprocess.run(
        command, env={**os.environ, **project.env_vars}, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "the real gcloud rejects this command line" in result.stderr
    assert "--release-channel: sometimes must be one of" in result.stderr
    assert project.snapshot() == ""


@pytest.mark.slow  # a whole playbook run through many tasks
def test_a_changed_channel_label_and_taint_become_one_update_each(ansible, production):
    host_vars = production.inventory / "host_vars/europe-west1.yml"
    pools = {
        "postgres": {
            "name": "postgres",
            "labels": {"hello-platform/workload": "postgres"},
            "taint": {"key": "hello-platform/workload", "value": "postgres", "effect": "NoExecute"},
        },
        "app": {"name": "app", "labels": {"hello-platform/workload": "app", "tier": "web"}},
    }
    edit_vars(host_vars, gke_cluster_release_channel="stable", hello_node_pools=pools)
    try:
        code, output, calls = production.run()
        assert code == 0, output
        updates = sorted(
            [*call[:4], next(a for a in call if a.startswith(("--release-channel", "--node-")))]
            for call in writes(calls)
        )
        assert updates == [
            ["container", "clusters", "update", "hello-production-europe-west1", "--release-channel=stable"],
            ["container", "node-pools", "update", "app", "--node-labels=hello-platform/workload=app,tier=web"],
            [
                "container",
                "node-pools",
                "update",
                "postgres",
                "--node-taints=hello-platform/workload=postgres:NoExecute",
            ],
        ]
        code, output, calls = production.run()
        assert code == 0 and writes(calls) == [], output
    finally:
        edit_vars(host_vars, gke_cluster_release_channel=..., hello_node_pools=...)
