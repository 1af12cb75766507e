"""playbooks/deploy.yml and rollback.yml follow the database's primary across regions (the
release after a switchover, which starts in the DR region, is tested through site.yml in
test_site_release_record.py).

Real ansible-playbook runs against the production inventory (two regions). Each region is a
fake Kubernetes API on a loopback port (tests/support/kube_api.py) that answers the reads and
refuses every write but a namespace's, recording it: so a run shows where it would have changed
something, and a region with no server does not answer, like a lost region. A stand-in gcloud
records the credentials the playbooks fetch.
"""

import json
import os

import pytest

from support.kube_api import cluster, fake_gcloud, service_release, start_regions, write_kubeconfig

CONTEXTS = {
    "europe-west1": "gke_hello-platform-production_europe-west1_hello-production-europe-west1",
    "europe-west4": "gke_hello-platform-production_europe-west4_hello-production-europe-west4",
}
DIGEST = "sha256:" + "d" * 64
NAMESPACE_PATH = "/api/v1/namespaces/hello"


@pytest.fixture
def production(ansible, tmp_path):
    """start(region=Cluster or (Cluster, release), ...) -> run(playbook, *extra) -> (code, output, apis)."""
    servers = []

    def start(**regions):
        apis = start_regions(regions, servers)
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", CONTEXTS, apis)
        gcloud_log = tmp_path / "gcloud-calls.jsonl"
        bin_dir = fake_gcloud(tmp_path / "bin", gcloud_log)

        def run(playbook, *extra):
            result = ansible(
                "ansible-playbook",
                "-i",
                "inventories/production",
                f"playbooks/{playbook}",
                "-e",
                "hello_confirm_environment=production",
                *extra,
                env={
                    "KUBECONFIG": str(kubeconfig),
                    "K8S_AUTH_KUBECONFIG": str(kubeconfig),
                    "PATH": f"{bin_dir}:{os.environ['PATH']}",
                },
            )
            calls = [json.loads(line) for line in gcloud_log.read_text().splitlines()] if gcloud_log.exists() else []
            return result.returncode, result.stdout + result.stderr, apis, calls

        return run

    yield start
    for api in servers:
        api.close()


def flat(output):
    return " ".join(output.split())


@pytest.mark.parametrize(("playbook", "done"), [("deploy.yml", "released"), ("rollback.yml", "rolled back")])
def test_a_silent_primary_region_is_refused_before_any_release_task(ansible, production, playbook, done):
    # europe-west1 holds the primary (the surviving Cluster says so) and does not answer.
    run = production(**{"europe-west4": (cluster("europe-west4", "europe-west1"), service_release("blue", DIGEST))})
    code, output, apis, calls = run(playbook, "-e", f"hello_image_digest={DIGEST}")
    assert code != 0
    assert (
        f"Nothing was {done}: europe-west1 holds the database's primary (hello-db-europe-west1) but does not answer"
    ) in flat(output)
    assert "run playbooks/failover.yml first" in flat(output)
    assert "TASK [hello_app : Read the Services]" not in output
    assert apis["europe-west4"].writes() == []
    # The credentials of both regions were fetched before the topology was read.
    assert sorted(call[3] for call in calls if call[:3] == ["container", "clusters", "get-credentials"]) == [
        "hello-production-europe-west1",
        "hello-production-europe-west4",
    ]


@pytest.mark.slow  # a whole playbook run through many tasks
def test_a_silent_standby_region_is_skipped_loudly_and_the_primary_is_released(ansible, production):
    run = production(**{"europe-west1": cluster("europe-west1", "europe-west1")})
    code, output, apis, _ = run("deploy.yml", "-e", f"hello_image_digest={DIGEST}")
    assert ("WARNING: europe-west4 did not answer") in flat(output)
    assert "so the service there was NOT released in this run" in flat(output)
    assert f"playbooks/deploy.yml -e hello_image_digest={DIGEST} again" in flat(output)
    # The release in the primary's region went ahead (up to the first write the test API refuses).
    assert "europe-west1: release: first release" in output
    assert ("PATCH", NAMESPACE_PATH) in apis["europe-west1"].writes()
    assert code != 0
