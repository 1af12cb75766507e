"""The service image and the tools image, built and pushed by the real playbook
(playbooks/image.yml, roles/image) to a real registry (Debian's docker-registry on a free loopback
port), then run by the digests it recorded.

The service is compiled with the Cargo profile `quick` (release without optimisation, see
service/Cargo.toml), which checks the same recipe in a fraction of a release build's time.
The build uses the base images named by HELLO_BUILDER_IMAGE / HELLO_RUNTIME_IMAGE (exported by
`scripts/airgap-images --print-env`, which scripts/test evaluates) and vendors the crates into
the build context, since Docker builds here cannot reach crates.io. The tools image is built on
HELLO_POSTGRES_IMAGE (PostgreSQL's client tools from Debian) instead of the official postgres
image. A cold build takes minutes; a rebuild reuses the layer cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from support import REPO
from support.docker import docker
from support.net import free_port, wait_for_port
from support.playbooks import ansible

PLAYBOOK_TIMEOUT = 75 * 60  # a cold release build on two busy cores, with margin
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)
CARGO_PROFILE = "quick"
SHELLS = {"sh", "bash", "dash", "ash", "busybox", "zsh"}
# The first test waits for the build.
pytestmark = pytest.mark.timeout(PLAYBOOK_TIMEOUT + 300)


class Registry:
    """Debian's docker-registry serving 127.0.0.1:``port`` from a temporary folder."""

    def __init__(self, root: Path):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        config = root / "config.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "version": 0.1,
                    "log": {"level": "warn"},
                    "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
                    "http": {"addr": self.address},
                }
            )
        )
        self.log = (root / "registry.log").open("w")
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_for_port(self.port, timeout=30)

    def manifest(self, repository: str, reference: str) -> tuple[str, bytes]:
        """The digest the registry announces for a tag, and the manifest's bytes."""
        request = urllib.request.Request(
            f"http://{self.address}/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.headers["Docker-Content-Digest"], response.read()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def registry(docker_engine):
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is missing: run scripts/bootstrap")
    with tempfile.TemporaryDirectory(prefix="hello-registry-") as root:
        server = Registry(Path(root))
        server.images = docker_engine
        yield server
        server.stop()


def run_image_playbook(registry: Registry, record: Path, **extra) -> subprocess.CompletedProcess:
    variables = {
        "image_registry": f"{registry.address}/hello",
        "image_builder_image": registry.images["HELLO_BUILDER_IMAGE"],
        "image_runtime_image": registry.images["HELLO_RUNTIME_IMAGE"],
        "image_tools_base_image": registry.images["HELLO_POSTGRES_IMAGE"],
        "image_tools_vendor_wheels": True,
        "image_vendor_crates": True,
        # The recipe without optimisation (service/Cargo.toml): the same binary's behaviour in
        # a fraction of the build time; images that ship are built with release.
        "image_cargo_profile": CARGO_PROFILE,
        # Others may be changing service/ in this checkout; the commit tag then says -dirty.
        "image_allow_dirty": True,
        "image_record_file": str(record),
        **extra,
    }
    return ansible(
        "ansible-playbook",
        "-i",
        "inventories/staging",
        "playbooks/image.yml",
        "-e",
        json.dumps(variables),
        timeout=PLAYBOOK_TIMEOUT,
    )


@pytest.fixture(scope="module")
def pushed(ansible, registry, tmp_path_factory):
    """The playbook's first run: its output, the record it wrote and how long it took."""
    record = tmp_path_factory.mktemp("image") / "image.yml"
    started = time.monotonic()
    run = run_image_playbook(registry, record)
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    return {"run": run, "record_file": record, "record": yaml.safe_load(record.read_text()), "seconds": elapsed}


def assert_is_a_commit_of_this_checkout(commit: str) -> None:
    """The recorded commit is HEAD or an ancestor of it (others may commit meanwhile), with
    "-dirty" when the build context had uncommitted changes."""
    sha, _, suffix = commit.partition("-")
    assert len(sha) == 40 and suffix in ("", "dirty"), commit
    ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", sha, "HEAD"], cwd=REPO, check=False)
    assert ancestor.returncode == 0, f"{sha} is not a commit of this checkout's history"


def crate_version() -> str:
    return tomllib.loads((REPO / "service" / "Cargo.toml").read_text())["package"]["version"]


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"} if data else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            payload = response.read()
            return response.status, json.loads(payload) if payload else {}
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def wait_for_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http("GET", url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s")


@pytest.fixture(scope="module")
def container(pushed):
    """The pushed image, run by digest, with its port published on loopback."""
    reference = pushed["record"]["hello_image_reference"]
    name = f"hello-image-test-{uuid.uuid4().hex[:8]}"
    docker("run", "--detach", "--name", name, "--publish", "127.0.0.1::8080", reference)
    try:
        port = docker("port", name, "8080/tcp").stdout.strip().splitlines()[0].rsplit(":", 1)[1]
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{base}/healthz")
        except TimeoutError:
            pytest.fail(
                "the container did not answer /healthz; its log:\n"
                + docker("logs", name, check=False).stdout[-3000:]
                + docker("logs", name, check=False).stderr[-3000:]
            )
        yield {"name": name, "url": base, "reference": reference}
    finally:
        docker("rm", "--force", name, check=False)


def test_the_playbook_records_the_digest_the_registry_serves(pushed, registry, measurement):
    record = pushed["record"]
    digest = record["hello_image_digest"]
    assert digest.startswith("sha256:") and len(digest) == 71, record
    assert record["hello_image_reference"] == f"{registry.address}/hello/hello@{digest}"
    assert record["hello_image_version"] == crate_version()
    assert_is_a_commit_of_this_checkout(record["hello_image_commit"])
    assert digest in pushed["run"].stdout

    # Both tags resolve to the recorded digest, and the manifest's bytes hash to it.
    for tag in (record["hello_image_version"], record["hello_image_commit"]):
        served, manifest = registry.manifest("hello/hello", tag)
        assert served == digest, tag
        assert "sha256:" + hashlib.sha256(manifest).hexdigest() == digest
    measurement(f"image playbook, first run: {pushed['seconds']:.0f}s")


def test_the_tools_image_is_pushed_and_recorded_beside_the_service(pushed, registry):
    """The database jobs run the tools image by the digest recorded with the service's: one
    record, one commit, both tags served with that digest."""
    record = pushed["record"]
    digest = record["hello_tools_image_digest"]
    assert digest.startswith("sha256:") and len(digest) == 71 and digest != record["hello_image_digest"], record
    assert record["hello_tools_image_reference"] == f"{registry.address}/hello/pgtools@{digest}"
    for tag in (record["hello_image_version"], record["hello_image_commit"]):
        served, manifest = registry.manifest("hello/pgtools", tag)
        assert served == digest, tag
        assert "sha256:" + hashlib.sha256(manifest).hexdigest() == digest


def test_the_tools_image_runs_its_commands_by_digest(pushed):
    reference = pushed["record"]["hello_tools_image_reference"]
    for command in (
        ["pg-dump-to-gcs", "--help"],
        ["restore-drill", "--help"],
        ["heartbeat", "--help"],
        ["pg_dump", "--version"],
    ):
        run = docker("run", "--rm", reference, *command, check=False)
        assert run.returncode == 0, (command, run.stdout[-2000:], run.stderr[-2000:])
    user = docker("inspect", "--format", "{{.Config.User}}", reference).stdout.strip()
    assert user not in ("", "0", "root"), user


def test_a_second_run_changes_nothing(ansible, pushed, registry):
    started = time.monotonic()
    again = run_image_playbook(registry, pushed["record_file"])
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-3000:]
    recap = again.stdout[again.stdout.index("PLAY RECAP") :]
    changed = [line for line in again.stdout.splitlines() if line.startswith(("changed:", "TASK ["))]
    assert "changed=0" in recap and "failed=0" in recap, recap + "\n".join(changed)
    assert yaml.safe_load(pushed["record_file"].read_text()) == pushed["record"]
    assert time.monotonic() - started < 300, "a rebuild without changes should come from the layer cache"


def test_the_container_serves_health_and_birthdays(container, pushed):
    status, health = http("GET", f"{container['url']}/healthz")
    assert status == 200
    assert health == {"status": "ok", "version": crate_version(), "commit": pushed["record"]["hello_image_commit"]}

    # The first check of the database runs beside the server's start: "unknown" until it ends.
    deadline = time.monotonic() + 10
    while (ready := http("GET", f"{container['url']}/readyz"))[1].get("database") == "unknown":
        assert time.monotonic() < deadline, ready
        time.sleep(0.2)
    assert ready == (200, {"status": "ready", "database": "ok"})
    status, _ = http("PUT", f"{container['url']}/hello/Imagetest", {"dateOfBirth": "1990-05-17"})
    assert status == 204
    status, greeting = http("GET", f"{container['url']}/hello/Imagetest")
    assert status == 200
    assert greeting["message"].startswith("Hello, Imagetest! ")


def test_the_container_runs_as_nonroot_65532(container):
    pid = docker("inspect", "--format", "{{.State.Pid}}", container["name"]).stdout.strip()
    uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
    assert uids.split()[1:] == ["65532"] * 4, uids
    assert docker("inspect", "--format", "{{.Config.User}}", container["reference"]).stdout.strip() == "65532:65532"


def test_the_health_check_subcommand_marks_the_container_healthy(container):
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        status = docker("inspect", "--format", "{{.State.Health.Status}}", container["name"]).stdout.strip()
        if status != "starting":
            break
        time.sleep(1)
    assert status == "healthy"


def test_the_image_has_no_shell_and_reports_its_size(pushed, tmp_path, measurement):
    reference = pushed["record"]["hello_image_reference"]
    created = docker("create", reference).stdout.strip()
    try:
        archive = tmp_path / "filesystem.tar"
        docker("export", "--output", str(archive), created, timeout=300)
        with tarfile.open(archive) as filesystem:
            names = filesystem.getnames()
    finally:
        docker("rm", created, check=False)
    assert "usr/local/bin/hello" in names
    shells = [name for name in names if Path(name).name in SHELLS]
    assert shells == []
    run_shell = docker("run", "--rm", "--entrypoint", "/bin/sh", reference, "-c", "true", check=False)
    assert run_shell.returncode != 0

    size = int(docker("image", "inspect", "--format", "{{.Size}}", reference).stdout)
    measurement(f"service image {reference.split('@')[0]}, Cargo profile {CARGO_PROFILE}: {size / 1e6:.1f} MB")
    assert size < 100e6


def test_a_bad_registry_is_refused_before_building(ansible, registry, tmp_path):
    run = run_image_playbook(registry, tmp_path / "image.yml", image_registry="Not a Registry/x")
    assert run.returncode != 0
    assert "image_registry is 'Not a Registry/x'" in run.stdout
    assert "Build the image" not in run.stdout


def test_an_unoptimised_build_is_refused_for_artifact_registry(ansible, registry, tmp_path):
    """Images for Artifact Registry are what clusters run: only `release` builds go there."""
    run = run_image_playbook(
        registry, tmp_path / "image.yml", image_registry="europe-docker.pkg.dev/hello-platform-staging/hello"
    )
    assert run.returncode != 0
    assert (
        f"image_cargo_profile is '{CARGO_PROFILE}': images for Artifact Registry are built with release" in run.stdout
    )
    assert "Vendor the crates" not in run.stdout


def compose_command() -> list[str]:
    if docker("compose", "version", check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor docker-compose is installed")


def test_compose_runs_the_image_with_postgresql(docker_engine, pushed):
    """compose.yaml, with the pushed image and the PostgreSQL image of the tests."""
    port = free_port()
    project = f"hello-image-test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "HELLO_IMAGE": pushed["record"]["hello_image_reference"],
        "HELLO_POSTGRES_IMAGE": docker_engine["HELLO_POSTGRES_IMAGE"],
        "HELLO_DB_PASSWORD": uuid.uuid4().hex,
        "HELLO_PORT": str(port),
    }
    compose = [*compose_command(), "--project-name", project, "--file", str(REPO / "compose.yaml")]
    try:
        up = subprocess.run(
            [*compose, "up", "--detach", "--no-build"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{base}/readyz", timeout=90)
        except TimeoutError:
            logs = subprocess.run([*compose, "logs"], env=env, capture_output=True, text=True, timeout=60, check=False)
            pytest.fail("the service never became ready:\n" + logs.stdout[-4000:])
        assert http("PUT", f"{base}/hello/Composetest", {"dateOfBirth": "1985-02-28"})[0] == 204
        status, greeting = http("GET", f"{base}/hello/Composetest")
        assert status == 200 and greeting["message"].startswith("Hello, Composetest! ")
        # The birthday is in PostgreSQL, not in the container's SQLite file.
        rows = subprocess.run(
            [
                *compose,
                "exec",
                "-T",
                "db",
                "psql",
                "--username=hello",
                "--dbname=hello",
                "--tuples-only",
                "--no-align",
                "--command",
                "select date_of_birth from users where username = 'Composetest'",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert rows.stdout.strip() == "1985-02-28", rows.stdout + rows.stderr
    finally:
        subprocess.run(
            [*compose, "down", "--volumes", "--timeout", "5"], env=env, capture_output=True, timeout=120, check=False
        )
