"""Third-party images reach GKE's private nodes through Artifact Registry remote repositories.

Clusters are created with --enable-private-nodes: the nodes have no external address and no
route to the Internet ("Private nodes have no outbound Internet access", GKE's documentation on
private clusters), so ghcr.io, quay.io and Docker Hub cannot be reached from them. A remote
repository is a proxy on Artifact Registry's side ("Create remote repositories", Artifact
Registry documentation): the nodes pull from <location>-docker.pkg.dev, which their service
account may read (roles/gke_cluster grants roles/artifactregistry.reader).

What is encoded here, each where it can fail:
- the reference rewriting (filter_plugins/hello_images.py) follows the way runtimes split a
  reference into registry and path: splitDockerDomain in distribution/reference's normalize.go
  (commit aeed5e66379bfcdf3b4c1393f132f90096bf7f8d);
- the repositories are created with flags the real gcloud (SDK 528.0.0 here) accepts: the
  gcloud test double hands every command line to it, and `--remote-docker-repo` takes the
  docker-hub preset or an http(s) registry address (its --help); describe answers are shaped
  as the API's Repository (mode REMOTE_REPOSITORY, remoteRepositoryConfig.dockerRepository
  .publicRepository DOCKER_HUB or .customRepository.uri: the SDK's artifactregistry_v1_messages.py);
- every image the rendered objects and the operators' chart values name, in the GKE
  environments, is pulled from Artifact Registry (the chart values keys are those of the pinned
  charts' values.yaml: cert-manager v1.19.1 image/webhook.image/cainjector.image/
  startupapicheck.image/acmesolver.image .repository; cloudnative-pg 0.29.0 image.repository;
  plugin-barman-cloud 0.7.0 image and sidecarImage .registry + .repository).
Not exercised: a real pull through a remote repository, which needs a project.
"""

import importlib.util
import json
import re

import pytest
import yaml

from support.gcloud import FakeProject
from support.playbooks import REPO, write_play
from support.playbooks import ansible as run_ansible

spec = importlib.util.spec_from_file_location("hello_images", REPO / "filter_plugins" / "hello_images.py")
hello_images = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hello_images)

MIRRORS = yaml.safe_load((REPO / "group_vars/all/images.yml").read_text())["hello_image_mirrors"]
REGISTRY = "europe-docker.pkg.dev/p"
GKE_ENVIRONMENTS = ("production", "staging")
UNRECORDED = "unrecorded.invalid/pgtools@sha256:" + "0" * 64


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (
            "ghcr.io/cloudnative-pg/postgresql:17.6-standard-bookworm",
            "europe-docker.pkg.dev/p/ghcr/cloudnative-pg/postgresql:17.6-standard-bookworm",
        ),
        ("quay.io/jetstack/cert-manager-controller", "europe-docker.pkg.dev/p/quay/jetstack/cert-manager-controller"),
        # Docker Hub: a user's image, an official image (library/), the legacy host, a digest.
        ("curlimages/curl:8.14.1", "europe-docker.pkg.dev/p/docker-hub/curlimages/curl:8.14.1"),
        ("postgres:17", "europe-docker.pkg.dev/p/docker-hub/library/postgres:17"),
        ("index.docker.io/library/busybox", "europe-docker.pkg.dev/p/docker-hub/library/busybox"),
        ("docker.io/x/y@sha256:" + "a" * 64, "europe-docker.pkg.dev/p/docker-hub/x/y@sha256:" + "a" * 64),
        # Registries without a remote repository are left alone: the project's own, a local one.
        (
            "europe-docker.pkg.dev/p/hello/hello@sha256:" + "b" * 64,
            "europe-docker.pkg.dev/p/hello/hello@sha256:" + "b" * 64,
        ),
        ("localhost/hello-pgtools:kind", "localhost/hello-pgtools:kind"),
        ("kind-registry:5000/hello/hello", "kind-registry:5000/hello/hello"),
        # A capitalised first part is a registry host, not a Docker Hub user.
        ("Registry/x/y:1", "Registry/x/y:1"),
    ],
)
def test_references_are_rewritten_as_runtimes_resolve_them(reference, expected):
    assert hello_images.hello_mirrored(reference, MIRRORS, REGISTRY) == expected


def test_without_mirrors_every_reference_is_kept():
    assert hello_images.hello_mirrored("curlimages/curl:8.14.1", {}, REGISTRY) == "curlimages/curl:8.14.1"
    assert hello_images.hello_mirrored_registry("ghcr.io", {}, REGISTRY) == "ghcr.io"
    assert hello_images.hello_mirrored_registry("ghcr.io", MIRRORS, REGISTRY) == "europe-docker.pkg.dev/p/ghcr"


def run_remote_repositories(project):
    playbook = write_play(
        project.inventory.parent / "mirrors.yml",
        tasks=[
            {
                "name": "Ensure the remote repositories",
                "ansible.builtin.include_role": {"name": "image", "tasks_from": "remote_repositories"},
            }
        ],
    )
    return project.run(playbook=str(playbook))


def test_the_remote_repositories_are_created_once_with_flags_gcloud_accepts(ansible, tmp_path, gcloud_config):
    project = FakeProject(tmp_path, "staging", gcloud_config)
    code, output, calls = run_remote_repositories(project)
    assert code == 0, output
    creates = {call[3]: call for call in calls if call[:3] == ["artifacts", "repositories", "create"]}
    assert set(creates) == {mirror["repository"] for mirror in MIRRORS.values()}
    for mirror in MIRRORS.values():
        call = creates[mirror["repository"]]
        assert "--mode=remote-repository" in call and "--repository-format=docker" in call
        assert f"--remote-docker-repo={mirror['upstream']}" in call
        assert "--location=europe" in call and "--project=hello-platform-staging" in call

    again_code, again, again_calls = run_remote_repositories(project)
    assert again_code == 0, again
    assert not [call for call in again_calls if call[:3] == ["artifacts", "repositories", "create"]]
    assert "changed=0" in again[again.index("PLAY RECAP") :]


def test_a_repository_of_that_name_that_proxies_something_else_stops_the_run(ansible, tmp_path, gcloud_config):
    project = FakeProject(tmp_path, "staging", gcloud_config)
    project.state.write_text(
        json.dumps(
            {
                "repositories": {
                    "hello-platform-staging/europe/quay": {
                        "name": "projects/hello-platform-staging/locations/europe/repositories/quay",
                        "format": "DOCKER",
                        "mode": "STANDARD_REPOSITORY",
                    }
                }
            }
        )
    )
    code, output, calls = run_remote_repositories(project)
    text = " ".join(output.split())
    assert code != 0
    assert (
        "Artifact Registry repository quay in europe (hello-platform-staging) exists as a DOCKER STANDARD_REPOSITORY"
        in text
    )
    assert "not as the Docker remote repository of 'https://quay.io'" in text
    assert not [call for call in calls if call[:3] == ["artifacts", "repositories", "create"]]


def images_of(document):
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("image", "imageName") and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    return found


@pytest.mark.parametrize("env", GKE_ENVIRONMENTS)
def test_every_rendered_image_is_pulled_from_artifact_registry(rendered_root, env):
    images = set()
    for path in (rendered_root / env).rglob("*.yml"):
        for document in yaml.safe_load_all(path.read_text()):
            images.update(images_of(document))
    assert images, f"no image in the objects rendered for {env}"
    # Rendered without an image record, the tools image is the placeholder the roles refuse to
    # apply (group_vars/all/images.yml; tests/test_database_playbooks.py proves the refusal).
    images.discard(UNRECORDED)
    outside = sorted(image for image in images if not re.match(r"^(europe|us|asia)-docker\.pkg\.dev/", image))
    assert outside == [], f"{env}: private nodes cannot pull these: {outside}"


@pytest.mark.parametrize("env", GKE_ENVIRONMENTS)
def test_the_operators_charts_pull_through_the_remote_repositories(ansible, tmp_path, env):
    playbook = write_play(
        tmp_path / "values.yml",
        tasks=[
            {
                "name": "Read the postgres role's defaults",
                "ansible.builtin.include_vars": str(REPO / "roles/postgres/defaults/main.yml"),
            },
            {
                "name": "Read the postgres role's chart values",
                "ansible.builtin.include_vars": str(REPO / "roles/postgres/vars/main.yml"),
            },
            {
                "name": "Write them",
                "ansible.builtin.copy": {
                    "dest": str(tmp_path / "values.json"),
                    "mode": "0644",
                    "content": "{{ {'cert-manager': __postgres_cert_manager_values, 'cnpg': __postgres_cnpg_values,"
                    " 'barman': __postgres_barman_plugin_values, 'postgres': __postgres_image} | to_json }}",
                },
            },
        ],
    )
    result = run_ansible("ansible-playbook", "-i", f"inventories/{env}", playbook, "--limit", "primary_region")
    assert result.returncode == 0, result.stdout + result.stderr
    values = json.loads((tmp_path / "values.json").read_text())
    registry = f"europe-docker.pkg.dev/hello-platform-{env}"
    cert_manager = values["cert-manager"]
    for component in ("controller", "webhook", "cainjector", "startupapicheck", "acmesolver"):
        section = cert_manager if component == "controller" else cert_manager[component]
        assert section["image"]["repository"] == f"{registry}/quay/jetstack/cert-manager-{component}"
    assert values["cnpg"]["image"]["repository"] == f"{registry}/ghcr/cloudnative-pg/cloudnative-pg"
    for key, name in (("image", "plugin-barman-cloud"), ("sidecarImage", "plugin-barman-cloud-sidecar")):
        assert values["barman"][key]["registry"] == f"{registry}/ghcr"
        assert values["barman"][key]["repository"] == f"cloudnative-pg/{name}"
    assert values["postgres"].startswith(f"{registry}/ghcr/cloudnative-pg/postgresql:")
