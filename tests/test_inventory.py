"""The inventories: both environments load the shared group_vars/ and override it.

`ansible-inventory --list` shows what Ansible resolved; a real play then prints the values a
task sees, so the loading mechanism is proven end to end, not only as inventory output.
"""

import json
import re

import pytest

from support.playbooks import REPO, SHARED_LINK, ansible, write_play

ENVIRONMENTS = sorted(p.name for p in (REPO / "inventories").iterdir() if p.is_dir())


def inventory_list(env):
    result = ansible("ansible-inventory", "-i", f"inventories/{env}", "--list")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_both_environments_exist():
    assert {"staging", "production"} <= set(ENVIRONMENTS)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_inventory_links_the_shared_group_vars(env):
    link = REPO / "inventories" / env / SHARED_LINK
    assert link.is_symlink(), f"{link} must link to the shared group_vars/all"
    assert link.resolve() == (REPO / "group_vars" / "all").resolve()


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_cluster_is_in_one_region_group(ansible, env):
    inventory = inventory_list(env)
    clusters = set(inventory["gke_clusters"]["children"])
    assert clusters == {"primary_region", "dr_region"}
    primary = inventory.get("primary_region", {}).get("hosts", [])
    dr = inventory.get("dr_region", {}).get("hosts", [])
    assert len(primary) == 1
    assert not set(primary) & set(dr)
    for host in primary + dr:
        hostvars = inventory["_meta"]["hostvars"][host]
        assert hostvars["hello_environment"] == env
        assert hostvars["ansible_connection"] == "local"
        assert {"gke_region", "gke_zones", "gke_cluster_name"} <= hostvars.keys()


def test_production_has_a_dr_region_and_staging_has_none(ansible):
    production = inventory_list("production")
    staging = inventory_list("staging")
    assert production["dr_region"]["hosts"] == ["europe-west4"]
    assert "hosts" not in staging.get("dr_region", {})
    assert production["_meta"]["hostvars"]["europe-west4"]["gcp_dr_region"] == "europe-west4"
    assert staging["_meta"]["hostvars"]["europe-west1"]["gcp_dr_region"] == ""


def test_inventory_list_shows_shared_default_and_environment_override(ansible):
    shared = (REPO / "group_vars/all/safety.yml").read_text()
    override = (REPO / "inventories/staging/group_vars/all/safety.yml").read_text()
    assert "hello_deletion_protection: true" in shared
    assert "hello_deletion_protection: false" in override

    production = inventory_list("production")["_meta"]["hostvars"]
    staging = inventory_list("staging")["_meta"]["hostvars"]
    # Production keeps the shared default; staging's own file overrides it.
    assert production["europe-west1"]["hello_deletion_protection"] is True
    assert production["europe-west4"]["hello_deletion_protection"] is True
    assert staging["europe-west1"]["hello_deletion_protection"] is False
    # A shared value that no environment overrides reaches both.
    assert production["europe-west1"]["hello_confirm_environment"] == ""
    assert staging["europe-west1"]["hello_confirm_environment"] == ""


@pytest.mark.parametrize(
    ("env", "host", "deletion_protection"),
    [
        ("staging", "europe-west1", "False"),
        ("production", "europe-west1", "True"),
        ("production", "europe-west4", "True"),
    ],
)
def test_a_play_sees_shared_default_and_environment_override(ansible, tmp_path, env, host, deletion_protection):
    playbook = write_play(
        tmp_path / "print.yml",
        tasks=[
            {
                "name": "Print the resolved variables",
                "ansible.builtin.debug": {
                    "msg": "RESOLVED {{ inventory_hostname }} protection={{ hello_deletion_protection }}"
                    " build={{ hello_k8s_build_dir }} connection={{ ansible_connection }}",
                },
            }
        ],
    )
    # JSON results keep each message on one line.
    result = ansible(
        "ansible-playbook", "-i", f"inventories/{env}", playbook, env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dict(re.findall(r'"RESOLVED (\S+) (.*)"', result.stdout))
    assert lines[host] == (f"protection={deletion_protection} build={REPO}/build/{env}/{host} connection=local")


def test_the_tools_image_is_the_recorded_one_or_a_placeholder_no_registry_holds(ansible, tmp_path):
    """group_vars/all/images.yml: the database jobs' image comes from the record playbooks/image.yml
    wrote; without one, a reference under the reserved .invalid domain (RFC 2606) renders, which
    roles/backups and roles/restore_drill refuse to apply."""
    playbook = write_play(
        tmp_path / "print.yml",
        tasks=[{"name": "Print the tools image", "ansible.builtin.debug": {"msg": "TOOLS {{ hello_tools_image }}"}}],
    )
    reference = "europe-docker.pkg.dev/p/hello/pgtools@sha256:" + "ab" * 32
    record = tmp_path / "image.yml"
    record.write_text(f"hello_image_digest: sha256:{'cd' * 32}\nhello_tools_image_reference: {reference}\n")
    for given, expected in (
        (record, reference),
        (tmp_path / "missing.yml", "unrecorded.invalid/pgtools@sha256:" + "0" * 64),
    ):
        result = ansible(
            "ansible-playbook",
            "-i",
            "inventories/staging",
            playbook,
            "-e",
            f"hello_image_record_file={given}",
            env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.findall(r'"TOOLS (\S+)"', result.stdout) == [expected], result.stdout[-2000:]
