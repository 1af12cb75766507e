"""roles/preflight refuses a bad environment before any play changes it.

Each case breaks one thing in a copy of a real inventory (or in the command line), runs the
role with ansible-playbook, and checks that the run fails with a message naming what to set
and where. The unbroken inventories pass, so every failure below is caused by its one change.
"""

import pytest
import yaml

from support.playbooks import REPO, ansible, copy_inventory, edit_vars, write_play


@pytest.fixture
def preflight_play(tmp_path):
    return write_play(tmp_path / "preflight.yml", roles=["preflight"])


def run_preflight(inventory, playbook, *extra):
    result = ansible("ansible-playbook", "-i", inventory, playbook, *extra)
    # One line per message, whatever the width of the output.
    return result.returncode, " ".join((result.stdout + result.stderr).split())


@pytest.mark.parametrize(
    ("env", "extra"),
    [
        ("staging", []),
        ("staging", ["-e", "hello_confirm_environment=staging"]),
        ("production", ["-e", "hello_confirm_environment=production"]),
    ],
)
def test_real_inventories_pass(ansible, tmp_path, preflight_play, env, extra):
    inventory = copy_inventory(env, tmp_path)
    code, output = run_preflight(inventory, preflight_play, *extra)
    assert code == 0, output
    assert "failed=0" in output


def test_dr_region_equal_to_primary_fails(ansible, tmp_path, preflight_play):
    inventory = copy_inventory("production", tmp_path)
    edit_vars(inventory / "group_vars/all/gcp.yml", gcp_dr_region="europe-west1")
    code, output = run_preflight(inventory, preflight_play, "-e", "hello_confirm_environment=production")
    assert code != 0
    assert "gcp_primary_region is 'europe-west1' and gcp_dr_region is 'europe-west1'" in output
    assert "set gcp_dr_region to a different region" in output
    assert f"in {inventory}/group_vars/all/gcp.yml" in output


def test_production_without_dr_region_fails(ansible, tmp_path, preflight_play):
    inventory = copy_inventory("production", tmp_path)
    edit_vars(inventory / "group_vars/all/gcp.yml", gcp_dr_region="")
    code, output = run_preflight(inventory, preflight_play, "-e", "hello_confirm_environment=production")
    assert code != 0
    assert "(required for production" in output


@pytest.mark.parametrize("project", ["", "Not A Project"])
def test_bad_project_fails(ansible, tmp_path, preflight_play, project):
    inventory = copy_inventory("staging", tmp_path)
    edit_vars(inventory / "group_vars/all/gcp.yml", gcp_project=project)
    code, output = run_preflight(inventory, preflight_play)
    assert code != 0
    assert f"gcp_project is '{project}': set it to the Google Cloud project ID of staging" in output
    assert f"in {inventory}/group_vars/all/gcp.yml" in output


def test_zone_outside_its_region_fails(ansible, tmp_path, preflight_play):
    inventory = copy_inventory("staging", tmp_path)
    edit_vars(
        inventory / "host_vars/europe-west1.yml", gke_zones=["europe-west1-b", "europe-west4-a", "europe-west1-d"]
    )
    code, output = run_preflight(inventory, preflight_play)
    assert code != 0
    assert "every zone must be a distinct zone of europe-west1" in output
    assert "europe-west4-a" in output
    assert f"fix gke_zones in {inventory}/host_vars/europe-west1.yml" in output


def test_cluster_region_other_than_its_group_fails(ansible, tmp_path, preflight_play):
    inventory = copy_inventory("production", tmp_path)
    edit_vars(
        inventory / "host_vars/europe-west4.yml",
        gke_region="europe-west3",
        gke_zones=["europe-west3-a", "europe-west3-b", "europe-west3-c"],
    )
    code, output = run_preflight(inventory, preflight_play, "-e", "hello_confirm_environment=production")
    assert code != 0
    assert "so its gke_region ('europe-west3') must equal gcp_dr_region ('europe-west4')" in output


def test_production_without_confirmation_fails(ansible, tmp_path, preflight_play):
    inventory = copy_inventory("production", tmp_path)
    code, output = run_preflight(inventory, preflight_play)
    assert code != 0
    assert "add -e hello_confirm_environment=production to the command line" in output


def test_production_render_needs_no_confirmation(ansible, tmp_path):
    inventory = copy_inventory("production", tmp_path)
    playbook = write_play(
        tmp_path / "read_only.yml", roles=[{"role": "preflight", "vars": {"preflight_changes_environment": False}}]
    )
    code, output = run_preflight(inventory, playbook)
    assert code == 0, output


@pytest.mark.parametrize(("env", "confirmed"), [("staging", "production"), ("production", "staging")])
def test_inventory_of_another_environment_than_confirmed_fails(ansible, tmp_path, preflight_play, env, confirmed):
    inventory = copy_inventory(env, tmp_path)
    code, output = run_preflight(inventory, preflight_play, "-e", f"hello_confirm_environment={confirmed}")
    assert code != 0
    assert f"This run uses the {env} inventory" in output
    assert f"Use the inventory of {confirmed} (-i inventories/{confirmed})" in output


def test_inventory_folder_named_after_another_environment_fails(ansible, tmp_path, preflight_play):
    inventory = copy_inventory("staging", tmp_path)
    renamed = inventory.rename(tmp_path / "qa")
    code, output = run_preflight(renamed, preflight_play)
    assert code != 0
    assert "sets hello_environment to 'staging'" in output


@pytest.mark.parametrize(
    ("file", "variable", "where"),
    [
        ("group_vars/all/gcp.yml", "gcp_project", "Set in inventories/<env>/group_vars/all/gcp.yml"),
        ("host_vars/europe-west1.yml", "gke_zones", "Set in inventories/<env>/host_vars/<host>.yml"),
    ],
)
def test_missing_required_variable_fails(ansible, tmp_path, preflight_play, file, variable, where):
    inventory = copy_inventory("staging", tmp_path)
    edit_vars(inventory / file, **{variable: ...})
    code, output = run_preflight(inventory, preflight_play)
    assert code != 0
    assert f"missing required arguments: {variable}" in output
    # The failure lists the role's argument spec, whose description says where to set it.
    assert where in output


def test_wrong_type_fails(ansible, tmp_path, preflight_play):
    inventory = copy_inventory("staging", tmp_path)
    edit_vars(inventory / "group_vars/all/environment.yml", hello_environment="prod")
    code, output = run_preflight(inventory, preflight_play)
    assert code != 0
    assert "value of hello_environment must be one of: staging, production, kind, got: prod" in output


def first_play(playbook):
    """The first play that runs, following imports (site.yml imports others, deploy.yml the
    plays it shares with rollback.yml)."""
    first = yaml.safe_load(playbook.read_text())[0]
    imported = first.get("ansible.builtin.import_playbook") or first.get("import_playbook")
    return first_play(playbook.parent / imported) if imported else first


def test_every_playbook_runs_preflight_first():
    playbooks = sorted((REPO / "playbooks").glob("*.yml"))
    assert playbooks
    for playbook in playbooks:
        first = first_play(playbook)
        roles = [r if isinstance(r, str) else r["role"] for r in first.get("roles", [])]
        assert roles[:1] == ["preflight"], f"{playbook.name}: the first play must run the preflight role first"
