"""playbooks/deploy.yml and rollback.yml refuse bad input before they touch a cluster.

Real ansible-playbook runs against copies of the real inventories: each case breaks one input
and checks that the run stops with a message saying what to set, before any cluster call (no
cluster exists here, so a run that got further would fail differently).
"""

import json

import pytest

from ansible_helpers import ansible, copy_inventory
from fake_kube_api import RegionApi, write_kubeconfig

DIGEST = "sha256:" + "b" * 64


def run(inventory, playbook, *extra):
    result = ansible("ansible-playbook", "-i", inventory, f"playbooks/{playbook}", *extra)
    return result.returncode, " ".join((result.stdout + result.stderr).split())


@pytest.mark.parametrize("digest", ["", "latest", "sha256:1234"])
def test_deploy_refuses_a_missing_or_bad_digest(tmp_path, digest):
    inventory = copy_inventory("staging", tmp_path)
    code, output = run(inventory, "deploy.yml", "-e", json.dumps({"hello_image_digest": digest}))
    assert code != 0
    assert f"hello_image_digest is '{digest}': give the digest to release on the command line" in output
    assert "Read the Services" not in output


def test_deploy_to_production_needs_the_confirmation(tmp_path):
    inventory = copy_inventory("production", tmp_path)
    code, output = run(inventory, "deploy.yml", "-e", f"hello_image_digest={DIGEST}")
    assert code != 0
    assert "add -e hello_confirm_environment=production to the command line" in output


@pytest.mark.parametrize("playbook", ["deploy.yml", "rollback.yml"])
def test_a_grace_period_shorter_than_the_shutdown_is_refused(tmp_path, playbook):
    inventory = copy_inventory("staging", tmp_path)
    code, output = run(inventory, playbook, "-e", f"hello_image_digest={DIGEST}",
                       "-e", json.dumps({"hello_app_termination_grace_period_seconds": 30}))
    assert code != 0
    assert "hello_app_termination_grace_period_seconds (30) must exceed the preStop sleep + drain period" in output
    assert f"in {inventory}/group_vars/all/hello_app.yml" in output


def test_a_wrong_type_is_refused_by_the_argument_spec(tmp_path):
    inventory = copy_inventory("staging", tmp_path)
    code, output = run(inventory, "deploy.yml", "-e", f"hello_image_digest={DIGEST}",
                       "-e", json.dumps({"hello_app_gateway_class": "nginx"}))
    assert code != 0
    assert "hello_app_gateway_class must be one of: gke-l7-global-external-managed" in output


@pytest.mark.parametrize("playbook", ["deploy.yml", "rollback.yml"])
def test_a_cluster_that_does_not_answer_is_refused_before_the_release(tmp_path, playbook):
    """With good input the run reads where the database's primary is first; with no cluster, it stops there."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    result = ansible("ansible-playbook", "-i", "inventories/kind", f"playbooks/{playbook}",
                     "-e", f"hello_image_digest={DIGEST}", env={"KUBECONFIG": str(kubeconfig)})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "TASK [postgres : Read the Cluster]" in output
    assert "kind holds the database's primary (hello-db-kind) but does not answer" in " ".join(output.split())
    assert "Could not create API client" in output
    # kind has no other region: the message says what to check, not to fail over.
    assert "failover" not in " ".join(output.split())
    assert "TASK [hello_app : Read the Services]" not in output


@pytest.mark.parametrize(("playbook", "stop"), [
    ("deploy.yml", None),
    ("rollback.yml", "Nothing to roll back: Service hello does not exist"),
])
def test_valid_input_reaches_the_cluster(tmp_path, playbook, stop):
    """With a cluster that answers (a read-only test API), the run gets to the service's slots."""
    api = RegionApi(None)
    try:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"kind": "kind-hello"}, {"kind": api})
        result = ansible("ansible-playbook", "-i", "inventories/kind", f"playbooks/{playbook}",
                         "-e", f"hello_image_digest={DIGEST}", env={"KUBECONFIG": str(kubeconfig)})
    finally:
        api.close()
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "TASK [hello_app : Read the Services]" in output
    if playbook == "deploy.yml":
        # A first release: its first write (the namespace) is what the test API refuses.
        assert "kind: release: first release" in output
        assert ("PATCH", "/api/v1/namespaces/hello") in api.writes()
    else:
        assert stop in " ".join(output.split())
        assert api.writes() == []
