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
  acmesolver.image .repository, its startupapicheck Job off; cloudnative-pg 0.29.0 image.repository;
  plugin-barman-cloud 0.7.0 image and sidecarImage .registry + .repository).
- every image the GKE environments run is named by digest (<reference>@sha256:<64 hex>, which
  Kubernetes and containerd accept after a tag as well), in the rendered objects and in the
  references the pinned charts build from the values the postgres role passes them: cert-manager
  v1.19.1 deploy/charts/cert-manager/templates/_helpers.tpl ("image": <repository>@<digest>, or
  :<tag>, default the appVersion, when no digest is set); cloudnative-pg 0.29.0
  charts/cloudnative-pg/templates/deployment.yaml (image and OPERATOR_IMAGE_NAME:
  <repository>:<tag | default appVersion 1.30.0>); plugin-barman-cloud 0.7.0
  charts/plugin-barman-cloud/templates/deployment.yaml and configmap.yaml (SIDECAR_IMAGE):
  <registry>/<repository>:<tag | default appVersion v0.13.0>; the tag keys are free strings in
  both charts' values.schema.json. Not one image keeps a tag alone.
- the service's repository (roles/image, artifact_registry.yml) has immutable tags: created with
  `gcloud artifacts repositories create --immutable-tags`, an existing one without them updated
  with `gcloud artifacts repositories update --immutable-tags` (both flags in the reference of
  SDK 528.0.0, surface/artifacts/repositories/create.yaml and update.yaml: api_field
  repository.dockerConfig.immutableTags; "Update repository settings",
  cloud.google.com/artifact-registry/docs/repositories/update-repo-settings: immutable image
  tags are a setting of Docker repositories, which then refuse to delete a tagged image, remove a
  tag, or push a tag already used by another image). The remote repositories are created without
  it: nothing is pushed to them, Artifact Registry fills them by caching what the upstream serves
  ("Remote repositories overview", cloud.google.com/artifact-registry/docs/repositories/
  remote-overview), so the setting's protections have nothing to act on, and the pods name
  third-party images by digest anyway.
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
BY_DIGEST = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
# The charts' appVersion, the tag each chart uses where the values give none.
CHART_APP_VERSIONS = {"cert-manager": "v1.19.1", "cnpg": "1.30.0", "barman": "v0.13.0"}


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
        # A tag and a digest: the digest decides, the tag is kept for the reader.
        (
            "ghcr.io/cloudnative-pg/postgresql:17.11-standard-bookworm@sha256:" + "c" * 64,
            "europe-docker.pkg.dev/p/ghcr/cloudnative-pg/postgresql:17.11-standard-bookworm@sha256:" + "c" * 64,
        ),
        (
            "curlimages/curl:8.14.1@sha256:" + "d" * 64,
            "europe-docker.pkg.dev/p/docker-hub/curlimages/curl:8.14.1@sha256:" + "d" * 64,
        ),
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


def run_image_tasks(project, tasks_from):
    """Runs roles/image's tasks file ``tasks_from`` against the project."""
    playbook = write_play(
        project.inventory.parent / f"{tasks_from}.yml",
        tasks=[
            {"name": f"Run {tasks_from}", "ansible.builtin.include_role": {"name": "image", "tasks_from": tasks_from}}
        ],
    )
    return project.run(playbook=str(playbook))


def run_remote_repositories(project):
    return run_image_tasks(project, "remote_repositories")


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
        # Nothing is pushed to a remote repository: immutable tags are the service repository's.
        assert "--immutable-tags" not in call

    again_code, again, again_calls = run_remote_repositories(project)
    assert again_code == 0, again
    assert not [call for call in again_calls if call[:3] == ["artifacts", "repositories", "create"]]
    assert "changed=0" in again[again.index("PLAY RECAP") :]


def run_service_repository(project):
    return run_image_tasks(project, "artifact_registry")


def repository_changes(calls):
    return [
        call
        for call in calls
        if call[:3] in (["artifacts", "repositories", "create"], ["artifacts", "repositories", "update"])
    ]


def test_the_service_repository_is_created_with_immutable_tags(ansible, tmp_path, gcloud_config):
    project = FakeProject(tmp_path, "staging", gcloud_config)
    code, output, calls = run_service_repository(project)
    assert code == 0, output
    (create,) = repository_changes(calls)
    assert create[:4] == ["artifacts", "repositories", "create", "hello"]
    assert "--immutable-tags" in create and "--repository-format=docker" in create
    repository = json.loads(project.state.read_text())["repositories"]["hello-platform-staging/europe/hello"]
    assert repository["dockerConfig"] == {"immutableTags": True}

    again_code, again, again_calls = run_service_repository(project)
    assert again_code == 0, again
    assert repository_changes(again_calls) == []
    assert "changed=0" in again[again.index("PLAY RECAP") :]


def test_an_existing_service_repository_gets_immutable_tags_once(ansible, tmp_path, gcloud_config):
    project = FakeProject(tmp_path, "staging", gcloud_config)
    name = "projects/hello-platform-staging/locations/europe/repositories/hello"
    project.state.write_text(
        json.dumps(
            {
                "repositories": {
                    "hello-platform-staging/europe/hello": {
                        "name": name,
                        "format": "DOCKER",
                        "mode": "STANDARD_REPOSITORY",
                        "dockerConfig": {"immutableTags": False},
                    }
                }
            }
        )
    )
    code, output, calls = run_service_repository(project)
    assert code == 0, output
    assert repository_changes(calls) == [
        [
            "artifacts",
            "repositories",
            "update",
            "hello",
            "--project=hello-platform-staging",
            "--location=europe",
            "--immutable-tags",
        ]
    ]
    repository = json.loads(project.state.read_text())["repositories"]["hello-platform-staging/europe/hello"]
    assert repository["dockerConfig"] == {"immutableTags": True}

    again_code, again, again_calls = run_service_repository(project)
    assert again_code == 0, again
    assert repository_changes(again_calls) == []


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


def rendered_images(rendered_root, env):
    """Every image reference of the objects rendered for ``env``."""
    images = set()
    for path in (rendered_root / env).rglob("*.yml"):
        for document in yaml.safe_load_all(path.read_text()):
            images.update(images_of(document))
    assert images, f"no image in the objects rendered for {env}"
    return images


@pytest.mark.parametrize("env", GKE_ENVIRONMENTS)
def test_every_rendered_image_is_pulled_from_artifact_registry(rendered_root, env):
    images = rendered_images(rendered_root, env)
    # Rendered without an image record, the tools image is the placeholder the roles refuse to
    # apply (group_vars/all/images.yml; tests/test_database_playbooks.py proves the refusal).
    images.discard(UNRECORDED)
    outside = sorted(image for image in images if not re.match(r"^(europe|us|asia)-docker\.pkg\.dev/", image))
    assert outside == [], f"{env}: private nodes cannot pull these: {outside}"


@pytest.fixture(scope="module")
def chart_values(ansible, tmp_path_factory):
    """The chart values and the operand image the postgres role passes, per GKE environment."""
    values = {}
    for env in GKE_ENVIRONMENTS:
        folder = tmp_path_factory.mktemp(f"values-{env}")
        playbook = write_play(
            folder / "values.yml",
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
                        "dest": str(folder / "values.json"),
                        "mode": "0644",
                        "content": "{{ {'cert-manager': __postgres_cert_manager_values,"
                        " 'cnpg': __postgres_cnpg_values, 'barman': __postgres_barman_plugin_values,"
                        " 'postgres': __postgres_image} | to_json }}",
                    },
                },
            ],
        )
        result = run_ansible("ansible-playbook", "-i", f"inventories/{env}", playbook, "--limit", "primary_region")
        assert result.returncode == 0, result.stdout + result.stderr
        values[env] = json.loads((folder / "values.json").read_text())
    return values


# The chart's components that run an image; its post-install check Job (startupapicheck) is turned
# off by the values (cert-manager v1.19.1 deploy/charts/cert-manager/templates/startupapicheck-job.yaml
# renders only with startupapicheck.enabled, values.yaml default true).
CERT_MANAGER_COMPONENTS = ("controller", "webhook", "cainjector", "acmesolver")


def chart_images(values):
    """The image references the pinned charts build from these values (the templates cited above)."""
    images = {}
    cert_manager = values["cert-manager"]
    for component in CERT_MANAGER_COMPONENTS:
        image = (cert_manager if component == "controller" else cert_manager[component])["image"]
        name = (f"{image['registry']}/" if image.get("registry") else "") + image["repository"]
        version = (
            f"@{image['digest']}"
            if image.get("digest")
            else f":{image.get('tag') or CHART_APP_VERSIONS['cert-manager']}"
        )
        images[f"cert-manager {component}"] = name + version
    cnpg = values["cnpg"]["image"]
    images["cloudnative-pg operator"] = f"{cnpg['repository']}:{cnpg.get('tag') or CHART_APP_VERSIONS['cnpg']}"
    for key in ("image", "sidecarImage"):
        image = values["barman"][key]
        tag = image.get("tag") or CHART_APP_VERSIONS["barman"]
        images[f"plugin-barman-cloud {key}"] = f"{image['registry']}/{image['repository']}:{tag}"
    images["postgresql operand"] = values["postgres"]
    return images


@pytest.mark.parametrize("env", GKE_ENVIRONMENTS)
def test_the_operators_charts_pull_through_the_remote_repositories(chart_values, env):
    values = chart_values[env]
    registry = f"europe-docker.pkg.dev/hello-platform-{env}"
    cert_manager = values["cert-manager"]
    for component in CERT_MANAGER_COMPONENTS:
        section = cert_manager if component == "controller" else cert_manager[component]
        assert section["image"]["repository"] == f"{registry}/quay/jetstack/cert-manager-{component}"
    assert values["cnpg"]["image"]["repository"] == f"{registry}/ghcr/cloudnative-pg/cloudnative-pg"
    for key, name in (("image", "plugin-barman-cloud"), ("sidecarImage", "plugin-barman-cloud-sidecar")):
        assert values["barman"][key]["registry"] == f"{registry}/ghcr"
        assert values["barman"][key]["repository"] == f"cloudnative-pg/{name}"
    assert values["postgres"].startswith(f"{registry}/ghcr/cloudnative-pg/postgresql:")
    assert all(image.startswith(f"{registry}/") for image in chart_images(values).values())


def by_tag(images, registry):
    """The references that name no digest, as {<path in the registry>: <tag>}."""
    found = {}
    for image in images:
        if BY_DIGEST.match(image):
            continue
        path, _, tag = image.removeprefix(f"{registry}/").rpartition(":")
        found[path] = tag
    return found


@pytest.mark.parametrize("env", GKE_ENVIRONMENTS)
def test_every_image_the_operators_charts_run_is_pinned_by_digest(chart_values, env):
    images = chart_images(chart_values[env])
    registry = f"europe-docker.pkg.dev/hello-platform-{env}"
    assert chart_values[env]["cert-manager"]["startupapicheck"]["enabled"] is False
    tagged = by_tag(images.values(), registry)
    assert tagged == {}, f"{env}: by tag, not digest: {tagged}; all: {images}"
    # The operator's reference is the one it gives the instances' init container: it carries the digest.
    assert BY_DIGEST.match(images["cloudnative-pg operator"]), images


@pytest.mark.parametrize("env", GKE_ENVIRONMENTS)
def test_every_rendered_image_is_pinned_by_digest(rendered_root, env):
    images = rendered_images(rendered_root, env)
    registry = f"europe-docker.pkg.dev/hello-platform-{env}"
    tagged = by_tag(images, registry)
    assert tagged == {}, f"{env}: by tag, not digest: {tagged}"
