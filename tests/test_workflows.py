"""The users' GitHub Actions (.github/) and their check, scripts/check-workflows.

The check runs for real (check-jsonschema, zizmor, validate-manifests) on a copy of the
repository's .github/ in a scratch tree; each failing case breaks one thing in that copy, so the
unbroken copy passing proves every failure below comes from its one change.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from support import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")


def load(path: Path) -> dict:
    # PyYAML reads the key `on` as the boolean True, as YAML 1.1 says.
    document = yaml.safe_load(path.read_text())
    document["on"] = document.pop(True, document.get("on"))
    return document


@pytest.fixture
def scratch(tmp_path):
    """A tree with the check's scripts, the virtualenv and a copy of .github/."""
    (tmp_path / "scripts").mkdir()
    for script in ("check-workflows", "validate-manifests"):
        shutil.copy2(REPO / "scripts" / script, tmp_path / "scripts" / script)
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    shutil.copytree(REPO / ".github", tmp_path / ".github")
    return tmp_path


def check(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(tree / "scripts" / "check-workflows")], capture_output=True, text=True, check=False)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_expected_workflows_exist():
    assert [path.name for path in WORKFLOWS] == ["ci.yml", "deploy.yml", "e2e-kind.yml", "restore-drill.yml"]


@pytest.mark.parametrize(
    ("path", "old", "new", "reported"),
    [
        pytest.param(
            "workflows/ci.yml", "runs-on: ubuntu-24.04", "runs-onn: ubuntu-24.04", "ci.yml", id="schema error"
        ),
        pytest.param(
            "workflows/e2e-kind.yml",
            "helm/kind-action@ef37e7f390d99f746eb8b610417061a60e82a6cc # v1.14.0",
            "helm/kind-action@v1.14.0",
            "unpinned-uses",
            id="action pinned to a tag",
        ),
        pytest.param(
            "workflows/ci.yml",
            "run: scripts/test images rust",
            'run: echo "${{ github.event.pull_request.title }}" && scripts/test images rust',
            "template-injection",
            id="expression expanded into a script",
        ),
        pytest.param(
            "kind/manifests/load-generator.yml",
            "restartPolicy: Never",
            "restartPolicyy: Never",
            "hello-load-generator",
            id="invalid Kubernetes object",
        ),
    ],
)
def test_one_broken_thing_fails_the_check(scratch, path, old, new, reported):
    edit(scratch / ".github" / path, old, new)
    result = check(scratch)
    assert result.returncode != 0
    assert reported in result.stdout + result.stderr


def test_no_workflow_at_all_fails_the_check(scratch):
    shutil.rmtree(scratch / ".github" / "workflows")
    result = check(scratch)
    assert result.returncode == 1
    assert "no workflow found" in result.stderr


@pytest.mark.parametrize(
    "path", [*WORKFLOWS, REPO / ".github/actions/python-tooling/action.yml"], ids=lambda path: path.name
)
def test_every_action_is_pinned_to_a_commit_with_its_version(path):
    uses = re.findall(r"uses:\s*(\S+(?: # \S+)?)", path.read_text())
    assert uses, f"{path.name} uses no action"
    for reference in uses:
        assert reference.startswith("./") or PINNED.match(reference), reference


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_every_job_asks_for_its_own_permissions_and_no_workflow_grants_any(path):
    workflow = load(path)
    assert workflow["permissions"] == {}
    for name, job in workflow["jobs"].items():
        assert job["permissions"].get("contents") == "read", name
        assert not set(job["permissions"].values()) - {"read", "write"}, name


def test_only_the_jobs_that_reach_google_cloud_may_request_an_oidc_token():
    token_jobs = {
        (path.name, name)
        for path in WORKFLOWS
        for name, job in load(path)["jobs"].items()
        if job["permissions"].get("id-token") == "write"
    }
    assert token_jobs == {("deploy.yml", "deploy"), ("restore-drill.yml", "drill")}


@pytest.mark.parametrize("name", ["deploy.yml", "restore-drill.yml"])
def test_google_cloud_is_reached_through_workload_identity_federation_only(name):
    text = (REPO / ".github/workflows" / name).read_text()
    assert "workload_identity_provider: ${{ vars.GCP_WORKLOAD_IDENTITY_PROVIDER }}" in text
    assert "service_account: ${{ vars.GCP_SERVICE_ACCOUNT }}" in text
    assert "credentials_json" not in text and "secrets." not in text
    # No cache another workflow could have written is restored into a job holding credentials.
    assert 'cache: "false"' in text


def test_deploy_offers_both_environments_one_release_at_a_time():
    workflow = load(REPO / ".github/workflows/deploy.yml")
    choice = workflow["on"]["workflow_dispatch"]["inputs"]["environment"]
    assert choice["type"] == "choice" and choice["options"] == ["staging", "production"]
    assert workflow["concurrency"] == {"group": "deploy-${{ inputs.environment }}", "cancel-in-progress": False}
    job = workflow["jobs"]["deploy"]
    assert job["environment"] == "${{ inputs.environment }}"
    # roles/preflight refuses to change production without this confirmation.
    assert "-e hello_confirm_environment=${{ inputs.environment }}" in job["env"]["PLAYBOOK_ARGS"]
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "ansible-playbook $PLAYBOOK_ARGS playbooks/image.yml" in runs
    assert 'ansible-playbook $PLAYBOOK_ARGS playbooks/deploy.yml -e "hello_image_digest=$HELLO_IMAGE_DIGEST"' in runs


def test_the_restore_drill_runs_weekly_and_keeps_its_report():
    workflow = load(REPO / ".github/workflows/restore-drill.yml")
    # Not the release environment: its required reviewers would hold every scheduled run.
    assert workflow["jobs"]["drill"]["environment"] == "restore-drill-${{ inputs.environment || 'production' }}"
    (schedule,) = workflow["on"]["schedule"]
    _minute, _hour, day_of_month, month, day_of_week = schedule["cron"].split()
    assert (day_of_month, month) == ("*", "*") and day_of_week.isdigit()
    upload = [
        step
        for step in workflow["jobs"]["drill"]["steps"]
        if step.get("uses", "").startswith("actions/upload-artifact@")
    ]
    assert upload and upload[0]["if"] == "always()"
    assert upload[0]["with"]["if-no-files-found"] == "error"


def test_ci_runs_every_stage_of_the_full_test_command():
    """The users' CI runs, across its jobs, every stage `scripts/test` runs by default."""
    script = (REPO / "scripts/test").read_text()
    full = re.search(r"^all_stages=\(([^)]*)\)$", script, re.M).group(1).split()
    commands = [
        step.get("run", "") for job in load(REPO / ".github/workflows/ci.yml")["jobs"].values() for step in job["steps"]
    ]
    ran = {stage for command in commands if command.startswith("scripts/test ") for stage in command.split()[1:]}
    assert "python" in full and "rust" in full
    assert set(full) <= ran, f"stages CI never runs: {set(full) - ran}"


@pytest.fixture
def record_tree(tmp_path):
    """A tree with .github/scripts/environment.py and an environment `rehearsal`."""
    (tmp_path / ".github" / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / ".github/scripts/environment.py", tmp_path / ".github/scripts")
    (tmp_path / "inventories" / "rehearsal").mkdir(parents=True)
    (tmp_path / "build" / "rehearsal").mkdir(parents=True)
    return tmp_path


def environment_script(tree: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REPO / ".venv/bin/python"), str(tree / ".github/scripts/environment.py"), *arguments],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_digest_is_read_from_the_image_playbooks_record(record_tree):
    digest = "sha256:" + "0123456789abcdef" * 4
    (record_tree / "build/rehearsal/image.yml").write_text(
        f'---\nhello_image_digest: {digest}\nhello_image_version: "0.1.0"\n'
    )
    result = environment_script(record_tree, "image-digest", "rehearsal")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == digest


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (None, "build/rehearsal/image.yml is missing: did playbooks/image.yml run for rehearsal?"),
        ("---\nhello_image_digest: latest\n", "holds no sha256 digest (found 'latest')"),
    ],
)
def test_a_missing_or_wrong_record_stops_the_release(record_tree, record, message):
    if record is not None:
        (record_tree / "build/rehearsal/image.yml").write_text(record)
    result = environment_script(record_tree, "image-digest", "rehearsal")
    assert result.returncode == 1
    assert message in result.stderr


def test_an_unknown_environment_is_refused(record_tree):
    result = environment_script(record_tree, "image-digest", "nowhere")
    assert result.returncode == 1
    assert "no inventory inventories/nowhere" in result.stderr


def fake_tools(tree: Path, **scripts: str) -> dict:
    """An environment whose PATH finds the given shell scripts first (e.g. gcloud=..., kubectl=...)."""
    folder = tree / "bin"
    folder.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (folder / name).write_text("#!/bin/sh\n" + body)
        (folder / name).chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


@pytest.fixture
def staging_tree(record_tree):
    """record_tree with the real staging inventory, the virtualenv (for ansible-inventory) and the
    release's reading of the live slot (roles/hello_app's filter, which the summary uses)."""
    shutil.copytree(REPO / "inventories/staging", record_tree / "inventories/staging")
    plugins = record_tree / "roles/hello_app/filter_plugins"
    plugins.mkdir(parents=True)
    shutil.copy2(REPO / "roles/hello_app/filter_plugins/hello_app_slots.py", plugins)
    (record_tree / ".venv").symlink_to(REPO / ".venv")
    return record_tree


STAGING_PROJECT = yaml.safe_load((REPO / "inventories/staging/group_vars/all/gcp.yml").read_text())["gcp_project"]


@pytest.mark.parametrize(
    ("gcloud_exit", "expected"),
    [
        (0, "kubeconfig contexts written for every cluster of staging"),
        (1, "no credentials for europe-west1: ERROR: permission denied on hello-staging-europe-west1"),
    ],
)
def test_credentials_are_fetched_for_every_cluster_of_the_inventory(staging_tree, gcloud_exit, expected):
    calls = staging_tree / "gcloud-calls"
    env = fake_tools(
        staging_tree,
        gcloud=f"""echo "$*" >> {calls}
[ {gcloud_exit} -eq 0 ] || {{ echo "ERROR: permission denied on $4" >&2; exit {gcloud_exit}; }}
""",
    )
    result = subprocess.run(
        [
            str(REPO / ".venv/bin/python"),
            str(staging_tree / ".github/scripts/environment.py"),
            "credentials",
            "staging",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert expected in result.stdout + result.stderr
    assert result.returncode == (0 if gcloud_exit == 0 else 1)
    assert calls.read_text().split() == [
        "container",
        "clusters",
        "get-credentials",
        "hello-staging-europe-west1",
        "--region=europe-west1",
        f"--project={STAGING_PROJECT}",
        "--quiet",
    ]


# HTTPRoute hello as a release leaves it: every user on green.
ROUTE = json.dumps(
    {
        "spec": {
            "rules": [
                {
                    "backendRefs": [
                        {"name": "hello-blue", "port": 80, "weight": 0},
                        {"name": "hello-green", "port": 80, "weight": 100},
                    ]
                }
            ]
        }
    }
)


def test_the_summary_shows_the_digest_and_the_slot_each_cluster_serves(staging_tree):
    digest = "sha256:" + "fedcba9876543210" * 4
    context = f"gke_{STAGING_PROJECT}_europe-west1_hello-staging-europe-west1"
    env = fake_tools(
        staging_tree,
        gcloud="exit 0\n",
        # Answers only the question the summary must ask: HTTPRoute hello's weights, in that context.
        kubectl=f"""query="--context {context} --namespace hello get httproute hello"
[ "$*" = "$query --output json" ] && printf '%s' '{ROUTE}' && exit 0
echo "unexpected: $*" >&2; exit 1
""",
    )
    env["HELLO_IMAGE_DIGEST"] = digest
    result = subprocess.run(
        [str(REPO / ".venv/bin/python"), str(staging_tree / ".github/scripts/environment.py"), "summary", "staging"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert f"Image digest: `{digest}`" in result.stdout
    assert "| hello-staging-europe-west1 | europe-west1 | green |" in result.stdout


def test_the_load_generator_runs_in_the_services_namespace():
    """The workflow applies the load generator in the service's namespace, whose Gateway it calls
    (tests/test_kind_gateway.py: through the Gateway only)."""
    allowed = yaml.safe_load((REPO / "inventories/kind/group_vars/all/hello_app.yml").read_text())
    e2e = load(REPO / ".github/workflows/e2e-kind.yml")
    assert e2e["env"]["HELLO_NAMESPACE"] == allowed.get("hello_app_namespace", "hello")


# Kubernetes minor versions CloudNativePG 1.30 supports (docs/src/supported_releases.md at v1.30.0).
CNPG_1_30_KUBERNETES = {"1.34", "1.35", "1.36"}
# Runtimes of helm/kind-action releases, by commit (action.yml, runs.using): v1.12.0 and v1.13.0
# run on node20, which GitHub's runners retire; v1.14.0 on node24.
KIND_ACTION_RUNTIMES = {
    "a1b0e391336a6ee6713a0583f8c6240d70863de3": "node20",
    "92086f6be054225fa813e0a4b13787fc9088faab": "node20",
    "ef37e7f390d99f746eb8b610417061a60e82a6cc": "node24",
}


# The node image each kind release creates clusters with, pinned by digest (kind's
# pkg/apis/config/defaults/image.go at that tag): a node image built for another kind release
# may not boot with it.
KIND_NODE_IMAGES = {
    "v0.31.0": "kindest/node:v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f",
}


def test_the_kind_rehearsal_runs_a_kubernetes_that_cloudnativepg_supports():
    e2e = load(REPO / ".github/workflows/e2e-kind.yml")
    steps = [step for job in e2e["jobs"].values() for step in job["steps"]]
    (kind,) = [step for step in steps if step.get("uses", "").startswith("helm/kind-action@")]
    commit = kind["uses"].split("@")[1]
    assert KIND_ACTION_RUNTIMES.get(commit) == "node24", f"{kind['uses']}: not a kind-action release on Node 24"
    env = e2e["env"]
    assert kind["with"]["node_image"] == "${{ env.KIND_NODE_IMAGE }}"
    node = re.fullmatch(r"kindest/node:v(\d+\.\d+)\.\d+@sha256:[0-9a-f]{64}", env["KIND_NODE_IMAGE"])
    assert node, f"the node image must be pinned by version and digest: {env['KIND_NODE_IMAGE']}"
    assert node.group(1) in CNPG_1_30_KUBERNETES
    assert kind["with"]["version"] == "${{ env.KIND_VERSION }}"
    assert KIND_NODE_IMAGES.get(env["KIND_VERSION"]) == env["KIND_NODE_IMAGE"], "not the kind release's own node image"
    # kubectl of the node's minor version (the version skew policy allows one more; the
    # rehearsal holds no reason to use it).
    kubectl = re.fullmatch(r"v(\d+\.\d+)\.\d+", env["KUBECTL_VERSION"])
    assert kind["with"]["kubectl_version"] == "${{ env.KUBECTL_VERSION }}"
    assert kubectl and kubectl.group(1) == node.group(1)


def test_a_failed_rehearsal_shows_the_events_and_why_each_pending_pod_waits():
    """Only on failure: the cluster's events, and for every Pending pod the scheduler's reason
    (its PodScheduled condition's message, such as "Insufficient cpu" or a spread constraint's
    missing label)."""
    e2e = load(REPO / ".github/workflows/e2e-kind.yml")
    steps = [step for job in e2e["jobs"].values() for step in job["steps"]]
    shown = " ".join(step["run"] for step in steps if step.get("if") == "failure()" and "run" in step)
    assert "kubectl get events --all-namespaces" in shown
    assert "--field-selector=status.phase=Pending" in shown
    assert '.status.conditions[?(@.type=="PodScheduled")].message' in shown


def test_the_kind_rehearsal_takes_the_tools_image_from_its_registry():
    """`kind load docker-image` fails with Docker's containerd image store (kind#3795, #4066):
    playbooks/image.yml pushes the tools image beside the service's, to the registry the nodes
    pull from, and the kind inventory names no other tools image than the recorded one."""
    e2e = load(REPO / ".github/workflows/e2e-kind.yml")
    settings = yaml.safe_load((REPO / ".github/kind/playbook-vars.yml").read_text())
    scripts = " ".join(step.get("run", "") for job in e2e["jobs"].values() for step in job["steps"])
    assert "kind load" not in scripts and "docker push" not in scripts
    assert settings["image_registry"].split("/")[0] == "kind-registry:5000"
    kind_vars = " ".join(path.read_text() for path in (REPO / "inventories/kind").rglob("*.yml"))
    assert "backups_logical_image" not in kind_vars and "restore_drill_tools_image" not in kind_vars
