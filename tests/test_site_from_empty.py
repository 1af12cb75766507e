"""playbooks/site.yml on the first day: every playbook it runs, in its order, from nothing.

Production's two regions each start as an empty cluster (``support.kube_cluster.ClusterApi``:
the system namespaces and the CRDs GKE installs, nothing else) and the project as the recording
gcloud stand-in holds a new one (``support.gcloud.FakeProject``: the required APIs enabled,
nothing created). The playbooks run one after the other in the order site.yml lists them, read
from site.yml itself, each as its own ansible-playbook run against the same clusters and
project, until the first step that needs a real controller. Then the same runs again: the
second changes nothing.

Where the run stops, and why (the boundary):

- The operators: ``postgres_install_operators`` is off, as where the cluster's owner installs
  them, and each cluster starts with the CRDs their charts install (CloudNativePG 1.30.0 and the
  Barman Cloud plugin 0.14.0, from HELLO_CRD_DIR). Their Helm install is not run: Helm is not
  installable here, and it waits for the operators' Deployments to become Available, which takes
  a controller.
- ``image.yml`` builds the service in Docker for minutes and pushes to Artifact Registry; it
  touches no cluster (tests/test_image.py runs it for real). Here its record, the file the
  playbooks after it read, is written as a run of it would write it.
- ``database.yml`` waits for CloudNativePG to act: the primary region for its Cluster to become
  Ready ("Wait for the Cluster to be ready"), then the DR region for the primary's first base
  backup. No controller runs here, so the first wait ends at its timeout (set to a second) and
  the run stops there: every host of the primary's play failed, so ansible-playbook ends, and
  the DR region has done everything before its replica play (its namespace, its object stores).
  What site.yml runs after database.yml is not reached.
"""

import copy
import json
import os
import re
from types import SimpleNamespace

import jinja2
import pytest
import yaml

from support.gcloud import FakeProject
from support.kube_api import PRODUCTION_CONTEXTS
from support.kube_cluster import ClusterApi, crds_of
from support.playbooks import REPO

ENV = "production"
PROJECT = "hello-platform-production"
APIS = yaml.safe_load((REPO / "roles/doctor/defaults/main.yml").read_text())["doctor_required_apis"]
SERVICE_IMAGE = f"europe-docker.pkg.dev/{PROJECT}/hello/hello@sha256:{'1' * 64}"
TOOLS_IMAGE = f"europe-docker.pkg.dev/{PROJECT}/hello/pgtools@sha256:{'2' * 64}"
RECEIVERS = {
    "page": {"pagerduty_configs": [{"routing_key": "pager-routing-key"}]},
    "ticket": {"webhook_configs": [{"url": "https://tickets.example.com/hook"}]},
}
# The first step that needs a real controller (see the module's doc): (host, task).
BOUNDARY = [("europe-west1", "postgres : Wait for the Cluster to be ready")]
BOUNDARY_PLAYBOOK = "database.yml"
NOT_RUN = {"image.yml": "builds in Docker; its record is written instead"}


def site_playbooks(environment):
    """The playbooks site.yml imports for ``environment``, in its order, with their `when`."""
    steps = []
    for entry in yaml.safe_load((REPO / "playbooks/site.yml").read_text()):
        playbook = entry.get("ansible.builtin.import_playbook")
        if playbook is None:
            continue
        when = entry.get("when", "true")
        if jinja2.Environment().compile_expression(when)(hello_environment=environment):
            steps.append(playbook)
    return steps


def gke_crds():
    """What a new GKE cluster of this project serves beyond the built-in kinds: Managed Service for
    Prometheus' and the Gateway policies' CRDs (k8s/gke-crds), the Gateway API's standard
    channel (cluster.yml enables it), and the operators' CRDs (see the module's doc)."""
    crd_dir = os.environ.get("HELLO_CRD_DIR")
    assert crd_dir, "HELLO_CRD_DIR names the pinned CRDs' folder (docs/testing.md)"
    return crds_of(REPO / "k8s/gke-crds", crd_dir)


class Site:
    """One project and one empty cluster per region, and the runs of site.yml's playbooks."""

    def __init__(self, root, gcloud_config):
        self.project = FakeProject(root, ENV, gcloud_config)
        # Each distinct command line is checked by the real gcloud in tests/test_gke_cluster.py;
        # here that would cost seconds per line.
        self.project.env_vars.pop("FAKE_GCLOUD_REAL", None)
        self.project.state.write_text(json.dumps({"services": {PROJECT: APIS}}))
        self.crds = gke_crds()
        self.clusters = {region: ClusterApi(self.crds) for region in PRODUCTION_CONTEXTS}
        kubeconfig = root / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": r, "cluster": {"server": c.url}} for r, c in self.clusters.items()],
                    "contexts": [
                        {"name": context, "context": {"cluster": region, "user": "test"}}
                        for region, context in PRODUCTION_CONTEXTS.items()
                    ],
                    "users": [{"name": "test", "user": {"token": "test"}}],
                    "current-context": next(iter(PRODUCTION_CONTEXTS.values())),
                }
            )
        )
        self.project.env_vars.update(KUBECONFIG=str(kubeconfig), K8S_AUTH_KUBECONFIG=str(kubeconfig))
        self.record = root / "image.yml"
        self.build = root / "build"
        self.secrets = root / "secrets.yml"
        self.secrets.write_text(
            yaml.safe_dump({"alerting_receivers": RECEIVERS, "postgres_app_password": "a-test-password-4711"})
        )

    def run_all(self):
        """Runs site.yml's playbooks in order up to the boundary; {playbook: (code, output)}."""
        results = {}
        for playbook in site_playbooks(ENV):
            if playbook in NOT_RUN:
                self.record.write_text(
                    yaml.safe_dump({"hello_image_reference": SERVICE_IMAGE, "hello_tools_image_reference": TOOLS_IMAGE})
                )
                continue
            code, output, _ = self.project.run(
                "-e",
                f"@{self.secrets}",
                "-e",
                f"hello_image_record_file={self.record}",
                "-e",
                json.dumps(
                    {
                        # The copied inventory's folder is not the repository's.
                        "hello_repo_root": str(REPO),
                        "hello_k8s_build_dir": f"{self.build}/{{{{ inventory_hostname }}}}",
                        "postgres_install_operators": False,
                        "postgres_cluster_wait_timeout": 1,
                    }
                ),
                playbook=playbook,
            )
            results[playbook] = (code, output)
            if playbook == BOUNDARY_PLAYBOOK:
                break
        return results

    def close(self):
        for cluster in self.clusters.values():
            cluster.close()


@pytest.fixture(scope="module")
def site(ansible, tmp_path_factory, gcloud_config):
    """Both runs, once for the module: the outputs of each and what each region held after each."""
    site = Site(tmp_path_factory.mktemp("site"), gcloud_config)
    try:
        first = site.run_all()
        after_first = {region: copy.deepcopy(cluster.objects) for region, cluster in site.clusters.items()}
        second = site.run_all()
        yield SimpleNamespace(
            first=first,
            second=second,
            after_first=after_first,
            after_second={region: cluster.objects for region, cluster in site.clusters.items()},
            clusters=site.clusters,
            project_state=site.project.state,
        )
    finally:
        site.close()


def recap(output):
    """{host: {counter: n}} of a run's PLAY RECAP."""
    lines = output.split("PLAY RECAP")[-1].strip().splitlines()
    return {
        line.split()[0]: {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}
        for line in lines
        if "ok=" in line
    }


def failed_tasks(output):
    """(host, task) of every task that failed, in the run's order."""
    failures, task = [], None
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line[6 : line.index("]")]
        found = re.match(r"(?:fatal|failed): \[([^\]]+)\]", line)
        if found:
            failures.append((found[1], task))
    return failures


def names(objects):
    return {f"{obj['kind']} {ns + '/' if ns else ''}{name}" for (_, _, ns, name), obj in objects.items()}


pytestmark = pytest.mark.slow  # whole playbook runs, one after the other


def test_site_runs_its_playbooks_in_order_from_empty_up_to_the_controller(site):
    order = [playbook for playbook in site_playbooks(ENV) if playbook not in NOT_RUN]
    assert list(site.first) == order[: order.index(BOUNDARY_PLAYBOOK) + 1]
    for playbook, (code, output) in site.first.items():
        if playbook != BOUNDARY_PLAYBOOK:
            assert code == 0, f"{playbook}:\n{output[-4000:]}"
    assert failed_tasks(site.first[BOUNDARY_PLAYBOOK][1]) == BOUNDARY, site.first[BOUNDARY_PLAYBOOK][1][-6000:]


def test_no_object_came_before_its_namespace(site):
    assert {region: cluster.namespace_refusals for region, cluster in site.clusters.items()} == {
        region: [] for region in site.clusters
    }


def test_each_region_holds_what_came_before_the_controller(site):
    both = {
        "Namespace hello",
        "NetworkPolicy hello/default-deny",
        "ObjectStore hello/hello-db-europe-west1",
        "ObjectStore hello/hello-db-europe-west4",
        "Secret gmp-public/alertmanager",
    }
    primary = names(site.after_first["europe-west1"])
    assert both | {"Cluster hello/hello-db", "Secret hello/hello-db-app"} <= primary
    dr = names(site.after_first["europe-west4"])
    assert both <= dr
    assert "Cluster hello/hello-db" not in dr


def test_the_second_run_changes_nothing(site):
    for playbook, (_, output) in site.second.items():
        changed = {host: counts["changed"] for host, counts in recap(output).items()}
        assert changed == dict.fromkeys(changed, 0), f"{playbook}:\n{output[-6000:]}"
    assert failed_tasks(site.second[BOUNDARY_PLAYBOOK][1]) == BOUNDARY
    # Not one object was written anew: every resourceVersion is the first run's.
    assert site.after_second == site.after_first


def test_the_project_holds_the_backup_bucket_and_its_account(site):
    """database.yml's cloud steps, through the recording gcloud: the bucket in its dual region,
    versioned, and the database's account with its roles on it (group_vars/all/backups.yml)."""
    state = json.loads(site.project_state.read_text())
    bucket = state["buckets"][f"{PROJECT}-hello-backups"]
    assert bucket["resource"]["customPlacementConfig"] == {"dataLocations": ["EUROPE-WEST1", "EUROPE-WEST4"]}
    assert bucket["resource"]["versioning"] == {"enabled": True}
    account = f"hello-db@{PROJECT}.iam.gserviceaccount.com"
    assert account in state["service_accounts"]
    roles = yaml.safe_load((REPO / "group_vars/all/backups.yml").read_text())["hello_backups_bucket_roles"]
    assert {b["role"] for b in bucket["policy"]["bindings"] if f"serviceAccount:{account}" in b["members"]} == set(
        roles
    )
