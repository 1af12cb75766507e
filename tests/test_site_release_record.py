"""playbooks/site.yml hands the image it just pushed to the release in every region.

The release starts where the database's primary is, which after a switchover is the DR region,
so every region must know the digest of the record playbooks/image.yml wrote. A real
ansible-playbook run of site.yml, started at the task that reads the record (the plays before
it create clusters, build the image and run the database, which need Google Cloud), against a
copy of the production inventory whose repository root holds that record, and one read-only
test API per region (tests/support/kube_api.py) in which europe-west4 holds the primary. The run
gets to the release's first object in europe-west4 after its namespace, which the test API
refuses.
"""

import pytest
import yaml

from support.kube_api import PRODUCTION_CONTEXTS, SERVICES_PATH, RegionApi, cluster, run_playbook
from support.playbooks import REPO, copy_inventory

CONTEXTS = PRODUCTION_CONTEXTS
DIGEST = "sha256:" + "e" * 64
RECORD_TASK = "Read the record playbooks/image.yml wrote (digest, version, commit)"


@pytest.mark.slow  # a whole playbook run through many tasks
def test_the_release_after_a_switchover_starts_in_the_dr_region_with_the_image_record(ansible, tmp_path):
    # hello_repo_root is two folders above the inventory: tmp_path, with the real templates.
    (tmp_path / "inventories").mkdir()
    inventory = copy_inventory("production", tmp_path / "inventories")
    (tmp_path / "k8s").symlink_to(REPO / "k8s")
    record = tmp_path / "build" / "production" / "image.yml"
    record.parent.mkdir(parents=True)
    record.write_text(
        yaml.safe_dump({"hello_image_digest": DIGEST, "hello_image_version": "1.2.3", "hello_image_commit": "0123abc"})
    )
    apis = {region: RegionApi(cluster(region, "europe-west4")) for region in CONTEXTS}
    result = run_playbook(
        ansible,
        tmp_path,
        CONTEXTS,
        apis,
        "-i",
        inventory,
        "playbooks/site.yml",
        "--start-at-task",
        RECORD_TASK,
        "-e",
        "hello_confirm_environment=production",
    )
    output = result.stdout + result.stderr
    flat = " ".join(output.split())
    assert f"TASK [{RECORD_TASK}]" in output
    # The release where the primary now is got the record's digest: past its check, to its first write.
    assert "hello_image_digest is ''" not in flat
    assert "europe-west4: release: first release" in output
    assert ("PATCH", "/api/v1/namespaces/hello") in apis["europe-west4"].writes()
    # any_errors_fatal stops the run there: europe-west1, released after the primary's region,
    # is untouched, its Services not even read.
    assert apis["europe-west1"].writes() == []
    assert not any(path.split("?")[0] == SERVICES_PATH for _, path in apis["europe-west1"].requests)
    assert result.returncode != 0
