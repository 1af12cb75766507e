"""playbooks/deploy.yml and rollback.yml refuse bad input before they touch a cluster.

Real ansible-playbook runs against copies of the real inventories: each case breaks one input
and checks that the run stops with a message saying what to set, before any cluster call (no
cluster exists here, so a run that got further would fail differently).
"""

import json
import re

import pytest

from support.kube_api import RegionApi, write_kubeconfig
from support.playbooks import REPO, ansible, copy_inventory, write_play

DIGEST = "sha256:" + "b" * 64


def run(inventory, playbook, *extra):
    result = ansible("ansible-playbook", "-i", inventory, f"playbooks/{playbook}", *extra)
    return result.returncode, " ".join((result.stdout + result.stderr).split())


@pytest.mark.parametrize("digest", ["", "latest", "sha256:1234"])
def test_deploy_refuses_a_missing_or_bad_digest(ansible, tmp_path, digest):
    inventory = copy_inventory("staging", tmp_path)
    code, output = run(inventory, "deploy.yml", "-e", json.dumps({"hello_image_digest": digest}))
    assert code != 0
    assert f"hello_image_digest is '{digest}': give the digest to release on the command line" in output
    assert "Read the Services" not in output


def test_deploy_to_production_needs_the_confirmation(ansible, tmp_path):
    inventory = copy_inventory("production", tmp_path)
    code, output = run(inventory, "deploy.yml", "-e", f"hello_image_digest={DIGEST}")
    assert code != 0
    assert "add -e hello_confirm_environment=production to the command line" in output


@pytest.mark.parametrize("playbook", ["deploy.yml", "rollback.yml"])
def test_a_grace_period_shorter_than_the_shutdown_is_refused(ansible, tmp_path, playbook):
    inventory = copy_inventory("staging", tmp_path)
    code, output = run(
        inventory,
        playbook,
        "-e",
        f"hello_image_digest={DIGEST}",
        "-e",
        json.dumps({"hello_app_termination_grace_period_seconds": 30}),
    )
    assert code != 0
    assert "hello_app_termination_grace_period_seconds (30) must exceed the preStop sleep + drain period" in output
    assert f"in {inventory}/group_vars/all/hello_app.yml" in output


def test_a_wrong_type_is_refused_by_the_argument_spec(ansible, tmp_path):
    inventory = copy_inventory("staging", tmp_path)
    code, output = run(
        inventory,
        "deploy.yml",
        "-e",
        f"hello_image_digest={DIGEST}",
        "-e",
        json.dumps({"hello_app_zone_spread": "Sometimes"}),
    )
    assert code != 0
    assert "hello_app_zone_spread must be one of: DoNotSchedule, ScheduleAnyway" in output


@pytest.mark.parametrize("playbook", ["deploy.yml", "rollback.yml"])
def test_a_cluster_that_does_not_answer_is_refused_before_the_release(ansible, tmp_path, playbook):
    """With good input the run reads where the database's primary is first; with no cluster, it stops there."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    result = ansible(
        "ansible-playbook",
        "-i",
        "inventories/kind",
        f"playbooks/{playbook}",
        "-e",
        f"hello_image_digest={DIGEST}",
        env={"KUBECONFIG": str(kubeconfig)},
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "TASK [postgres : Read the Cluster]" in output
    assert "kind holds the database's primary (hello-db-kind) but does not answer" in " ".join(output.split())
    assert "Could not create API client" in output
    # kind has no other region: the message says what to check, not to fail over.
    assert "failover" not in " ".join(output.split())
    assert "TASK [hello_app : Read the Services]" not in output


@pytest.mark.parametrize(
    ("playbook", "stop"),
    [
        ("deploy.yml", None),
        ("rollback.yml", "Nothing to roll back: HTTPRoute hello sends users nowhere"),
    ],
)
@pytest.mark.slow  # a whole playbook run through many tasks
def test_valid_input_reaches_the_cluster(ansible, tmp_path, playbook, stop):
    """With a cluster that answers (a read-only test API, empty), the run gets to the service's slots."""
    api = RegionApi(None)
    try:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"kind": "kind-hello"}, {"kind": api})
        result = ansible(
            "ansible-playbook",
            "-i",
            "inventories/kind",
            f"playbooks/{playbook}",
            "-e",
            f"hello_image_digest={DIGEST}",
            env={"KUBECONFIG": str(kubeconfig)},
        )
    finally:
        api.close()
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "TASK [hello_app : Read the Services]" in output
    if playbook == "deploy.yml":
        # A first release on an empty cluster: the namespace first, so the next object's create
        # is not refused for a missing namespace (support.kube_api) but reaches the read-only API.
        assert "kind: release: first release" in output
        assert api.writes()[0] == ("PATCH", "/api/v1/namespaces/hello")
        assert api.writes()[1][1].startswith(("/api/v1/namespaces/hello/", "/apis/"))
        assert api.namespace_refusals == []
        assert "read-only test API" in output
        # Each step prints its duration, also the one that failed (filter_plugins/hello_steps.py).
        assert re.search(r"Render the objects: \d+\.\d s", output)
        assert re.search(r"Apply the namespace, policies, preview Service and entry point: \d+\.\d s", output)
    else:
        assert stop in " ".join(output.split())
        assert api.writes() == []


# --- the connection budget: every pod of both slots in every region, plus the reserve --------

BUDGET_TASK = "Check that the service's database connections fit in the database's max_connections"


@pytest.mark.parametrize("playbook", ["deploy.yml", "rollback.yml", "render.yml"])
def test_a_connection_budget_over_max_connections_is_refused_before_any_cluster_call(ansible, tmp_path, playbook):
    # Staging's database allows 100: without PgBouncer, 1 region x 2 slots x 5 pods x 10 + 20 =
    # 120 does not fit.
    inventory = copy_inventory("staging", tmp_path)
    code, output = run(
        inventory,
        playbook,
        "-e",
        f"hello_image_digest={DIGEST}",
        "-e",
        f"hello_k8s_build_dir={tmp_path}/build",
        "-e",
        json.dumps({"hello_app_max_replicas": 5, "hello_db_pooler": False}),
    )
    assert code != 0
    assert (
        "The service may open 120 connections to the database's primary, more than its max_connections "
        "(100): 1 region(s) x 2 slots (both run during a release) x hello_app_max_replicas (5) x "
        "hello_app_database_max_connections (10) + hello_app_database_connection_reserve (20)"
    ) in output
    assert f"Raise hello_db_max_connections in {inventory}/group_vars/all/postgres.yml" in output
    assert f"in {inventory}/group_vars/all/hello_app.yml" in output
    assert "Fetch" not in output and "Read the Cluster" not in output and "Render" not in output


def test_a_gateway_without_a_certificate_map_is_refused_before_any_cluster_call(ansible, tmp_path):
    code, output = run(
        "inventories/staging",
        "deploy.yml",
        "-e",
        f"hello_image_digest={DIGEST}",
        "-e",
        f"hello_k8s_build_dir={tmp_path}/build",
        "-e",
        json.dumps({"hello_app_gateway_certificate_map": ""}),
    )
    assert code != 0
    assert "staging has no certificate for its Gateway, so users would reach the service over plain HTTP" in output
    assert "Set hello_app_gateway_certificate_map in" in output
    assert "Fetch" not in output and "Read the Cluster" not in output and "Render" not in output


def test_https_without_host_names_is_refused_before_any_cluster_call(ansible, tmp_path):
    """A certificate is served and verified for a name: the post-promotion check could never pass."""
    code, output = run(
        "inventories/production",
        "deploy.yml",
        "-e",
        f"hello_image_digest={DIGEST}",
        "-e",
        "hello_confirm_environment=production",
        "-e",
        json.dumps({"hello_app_hostnames": []}),
    )
    assert code != 0
    assert (
        "production serves HTTPS with the certificate map hello-production, but hello_app_hostnames is empty" in output
    )
    assert "inventories/production/group_vars/all/hello_app.yml to the names the map" in output
    assert "Fetch" not in output and "Read the Cluster" not in output


@pytest.mark.parametrize(
    "extra, refusal",
    [
        # A DR region's warm standby reaches the same primary: production's two regions count
        # twice. Without PgBouncer, one region's pods would fit in 480 (2 x 12 x 10 + 20 = 260);
        # both regions' do not (500).
        (
            {"hello_db_max_connections": 480, "hello_db_pooler": False},
            "The service may open 500 connections to the database's primary, more than its max_connections "
            "(480): 2 region(s) x 2 slots",
        ),
        # Production's pods (480 connections) go through PgBouncer: only its server connections
        # count against max_connections, (2 instances + 1 surging) x 30 + 20 = 110 > 100.
        (
            {"hello_db_pooler_server_connections": 30},
            "PgBouncer may open 110 connections to the database's primary, more than its max_connections (100): "
            "(hello_db_pooler_instances (2) + 1 surging during a rollout) x hello_db_pooler_server_connections (30)",
        ),
        # The clients count against one instance: one region's 2 x 12 x 10 = 240 would fit in
        # 300, both regions' 480 do not.
        (
            {"hello_db_pooler_max_client_connections": 300},
            "The service may open 480 connections to PgBouncer, more than one instance accepts "
            "(hello_db_pooler_max_client_connections, 300), and one instance must take them all while "
            "another is drained or lost: 2 region(s) x 2 slots",
        ),
    ],
)
def test_the_budget_counts_every_regions_connections(ansible, tmp_path, extra, refusal):
    code, output = run(
        "inventories/production",
        "render.yml",
        "-e",
        f"hello_k8s_build_dir={tmp_path}/build",
        "-e",
        json.dumps(extra),
    )
    assert code != 0
    assert refusal in " ".join(output.split())
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize("env", sorted(p.name for p in (REPO / "inventories").iterdir() if p.is_dir()))
def test_every_shipped_inventory_fits_its_connection_budget(ansible, tmp_path, env):
    playbook = write_play(
        tmp_path / "checks.yml",
        tasks=[
            {
                "name": "Check the service's inputs",
                "ansible.builtin.include_role": {"name": "hello_app", "tasks_from": "checks"},
            }
        ],
    )
    result = ansible("ansible-playbook", "-i", f"inventories/{env}", playbook)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"TASK [hello_app : {BUDGET_TASK}]" in output
