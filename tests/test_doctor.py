"""playbooks/doctor.yml (roles/doctor): read-only checks of a project before a run.

Real ansible-playbook runs against the gcloud test double (support.gcloud, tests/support/
fake_gcloud.py, which has each command line parsed by the real gcloud CLI where installed). The
project passed is the one playbooks/cluster.yml builds from nothing, with the APIs enabled and
the bucket that playbooks/database.yml would create; the failures are what a first real run
met: an API off, the Gateway API off, no firewall rule for the webhooks, a bucket role missing.
"""

import json

import pytest
import yaml

from support.gcloud import FakeProject
from support.playbooks import REPO

PROJECT = "hello-platform-production"
BUCKET = f"{PROJECT}-hello-backups"
ACCOUNT = f"serviceAccount:hello-db@{PROJECT}.iam.gserviceaccount.com"
APIS = yaml.safe_load((REPO / "roles/doctor/defaults/main.yml").read_text())["doctor_required_apis"]
ROLES = yaml.safe_load((REPO / "group_vars/all/backups.yml").read_text())["hello_backups_bucket_roles"]
REGISTRY = f"europe-docker.pkg.dev/{PROJECT}/hello"
SERVICE_IMAGE = f"{REGISTRY}/hello@sha256:{'1' * 64}"
TOOLS_IMAGE = f"{REGISTRY}/pgtools@sha256:{'2' * 64}"


def flat(output):
    return " ".join(output.split())


def repository(name, mode="REMOTE_REPOSITORY", **docker):
    """An Artifact Registry repository as the API describes it (artifactregistry_v1_messages.py)."""
    found = {"name": f"projects/{PROJECT}/locations/europe/repositories/{name}", "format": "DOCKER", "mode": mode}
    if docker:
        found["remoteRepositoryConfig"] = {"dockerRepository": docker}
    return found


def edit_state(project, change):
    state = json.loads(project.state.read_text())
    change(state)
    project.state.write_text(json.dumps(state))


@pytest.fixture(scope="module")
def production(ansible, tmp_path_factory, gcloud_config):
    """Production after playbooks/cluster.yml and database.yml's cloud steps: what a doctor passes."""
    project = FakeProject(tmp_path_factory.mktemp("production"), "production", gcloud_config)
    code, output, _ = project.run()
    assert code == 0, output

    def built(state):
        state["services"][PROJECT] = APIS
        # playbooks/image.yml made the remote repository of ghcr.io; the others are still to come.
        state["repositories"] = {
            f"{PROJECT}/europe/ghcr": repository("ghcr", customRepository={"uri": "https://ghcr.io"}),
            # The service's repository, with the immutable tags playbooks/image.yml gives it.
            f"{PROJECT}/europe/hello": {
                **repository("hello", mode="STANDARD_REPOSITORY"),
                "dockerConfig": {"immutableTags": True},
            },
        }
        state["buckets"][BUCKET] = {
            "resource": {"name": BUCKET, "location": "EU"},
            "policy": {"bindings": [{"role": role, "members": [ACCOUNT]} for role in ROLES]},
        }
        # playbooks/image.yml pushed both images and recorded them.
        state["images"] = [SERVICE_IMAGE, TOOLS_IMAGE]

    edit_state(project, built)
    record = project.inventory.parent / "image.yml"
    record.write_text(
        yaml.safe_dump({"hello_image_reference": SERVICE_IMAGE, "hello_tools_image_reference": TOOLS_IMAGE})
    )
    project.record = ("-e", f"hello_image_record_file={record}")
    return project


def test_an_empty_project_is_told_what_to_enable_and_what_is_still_to_create(ansible, tmp_path, gcloud_config):
    project = FakeProject(tmp_path, "staging", gcloud_config)
    code, output, _ = project.run(playbook="doctor.yml")
    text = flat(output)
    assert code != 0
    missing = ", ".join(APIS)
    assert f"FAIL APIs enabled in hello-platform-staging: missing: {missing}" in text
    assert f"gcloud services enable {' '.join(APIS)} --project=hello-platform-staging" in text
    # Not failures: what the playbooks create themselves.
    assert "ok cluster hello-staging-europe-west1: not created yet (playbooks/cluster.yml creates it)" in text
    assert "not created yet (playbooks/database.yml creates it)" in text
    assert "ok images recorded in build/staging/image.yml: none recorded yet" in text
    assert "ok repository hello, immutable tags: not created yet (playbooks/image.yml creates it" in text
    assert "1 check(s) failed: APIs enabled in hello-platform-staging." in text
    assert project.snapshot() == ""


@pytest.mark.slow  # a whole playbook run through many tasks (the project's cluster.yml)
def test_a_project_the_playbooks_built_passes_every_check(ansible, production):
    before = production.snapshot()
    code, output, _ = production.run(*production.record, playbook="doctor.yml")
    assert code == 0, output
    assert "in the registry" in flat(output) and "not in the registry" not in flat(output)
    assert "FAIL" not in output
    assert (
        "ok remote repositories for ghcr.io, quay.io, docker.io: present: ghcr; playbooks/image.yml creates the others"
        in flat(output)
    )
    assert "ok repository hello, immutable tags: on" in flat(output)
    for region in ("europe-west1", "europe-west4"):
        for check in ("Workload Identity", "Gateway API", "firewall rule for admission webhooks"):
            assert f"ok cluster hello-production-{region}, {check}" in flat(output)
    assert production.snapshot() == before


@pytest.mark.slow  # a whole playbook run through many tasks (the project's cluster.yml)
def test_each_broken_prerequisite_is_reported_with_its_fix(ansible, production):
    def broken(state):
        state["services"][PROJECT] = [api for api in APIS if api != "monitoring.googleapis.com"]
        west4 = next(k for k in state["clusters"] if k.endswith("/hello-production-europe-west4"))
        state["clusters"][west4]["networkConfig"]["gatewayApiConfig"] = {"channel": "CHANNEL_DISABLED"}
        del state["firewalls"]["hello-production-europe-west1-webhooks"]
        state["buckets"][BUCKET]["policy"]["bindings"] = [
            {"role": "roles/storage.objectAdmin", "members": [ACCOUNT]},
        ]
        # A standard repository where the nodes expect quay.io's remote one, and a remote one of
        # another upstream under Docker Hub's name.
        state["repositories"][f"{PROJECT}/europe/quay"] = repository("quay", mode="STANDARD_REPOSITORY")
        state["repositories"][f"{PROJECT}/europe/docker-hub"] = repository(
            "docker-hub", customRepository={"uri": "https://mirror.gcr.io"}
        )
        # The recorded tools image was deleted from the registry since.
        state["images"].remove(TOOLS_IMAGE)
        # Someone turned the service repository's immutable tags off.
        state["repositories"][f"{PROJECT}/europe/hello"]["dockerConfig"] = {"immutableTags": False}

    edit_state(production, broken)
    before = production.snapshot()
    code, output, _ = production.run(*production.record, playbook="doctor.yml")
    text = flat(output)
    assert code != 0
    assert "7 check(s) failed" in text
    assert (
        "FAIL repository hello, immutable tags: off: its tags can be moved to other images and deleted -> "
        f"gcloud artifacts repositories update hello --immutable-tags --location=europe --project={PROJECT}"
    ) in text
    assert f"not in the registry: {TOOLS_IMAGE} -> ansible-playbook -i" in text
    assert "playbooks/image.yml (pushes them again and records what the registry serves)" in text
    assert (
        "FAIL remote repositories for ghcr.io, quay.io, docker.io: "
        "not Docker remote repositories of their registry: quay, docker-hub"
    ) in text
    assert f"gcloud artifacts repositories delete quay --location=europe --project={PROJECT}" in text
    assert f"gcloud services enable monitoring.googleapis.com --project={PROJECT}" in text
    assert (
        "FAIL cluster hello-production-europe-west4, Gateway API: channel CHANNEL_DISABLED -> gcloud container "
        f"clusters update hello-production-europe-west4 --project={PROJECT} --region=europe-west4 "
        "--gateway-api=standard"
    ) in text
    assert "FAIL cluster hello-production-europe-west1, firewall rule for admission webhooks" in text
    assert "playbooks/cluster.yml (it copies the rule GKE made for the control plane)" in text
    assert (
        f"gcloud storage buckets add-iam-policy-binding gs://{BUCKET} --member={ACCOUNT} "
        "--role=roles/storage.legacyBucketReader"
    ) in text
    assert "ok cluster hello-production-europe-west1, Gateway API" in text
    assert production.snapshot() == before
