"""The database playbooks' safety checks, run for real with ansible-playbook.

What cannot run here is a GKE cluster. The checks that guard a switchover or a failover read
each region's CloudNativePG Cluster through the Kubernetes API, so each region is played by a
small HTTP server on a loopback port that answers the API discovery and the one Cluster read,
like an API server would (``RegionApi``); a kubeconfig names one context per region, as
``gcloud container clusters get-credentials`` would. A region with no server does not answer,
like a lost region. Every test asserts that the playbook stops, before changing anything, with
the message that tells the operator what to do.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from ansible_helpers import ansible

CONTEXTS = {
    "europe-west1": "gke_hello-platform-production_europe-west1_hello-production-europe-west1",
    "europe-west4": "gke_hello-platform-production_europe-west4_hello-production-europe-west4",
}
PASSWORD = "a-test-password-never-echoed-4711"


def cluster(region, primary_region, *, ready=True, archiving=True, ready_instances=3):
    """A Cluster object as CloudNativePG 1.30 reports it."""
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "hello-db", "namespace": "hello"},
        "spec": {
            "instances": 3,
            "bootstrap": {"initdb": {"database": "app", "owner": "app"}},
            "replica": {"self": f"hello-db-{region}", "primary": f"hello-db-{primary_region}",
                        "source": f"hello-db-{'europe-west4' if region == 'europe-west1' else 'europe-west1'}"},
        },
        "status": {
            "phase": "Cluster in healthy state" if ready else "Waiting for the instances to become active",
            "readyInstances": ready_instances,
            "currentPrimary": "hello-db-1",
            "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"},
                {"type": "ContinuousArchiving", "status": "True" if archiving else "False"},
            ],
        },
    }


class RegionApi:
    """Answers the Kubernetes API calls kubernetes.core makes to read one Cluster."""

    def __init__(self, cluster_object):
        self.cluster = cluster_object
        self.requests = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                api.requests.append(("GET", self.path))
                self.reply(api.answer(self.path.split("?")[0]))

            def refuse_change(self):
                # Recorded, so a test can prove that a refused run changed nothing.
                api.requests.append((self.command, self.path))
                self.reply({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "MethodNotAllowed", "code": 405, "message": "read-only test API"})

            do_POST = do_PUT = do_PATCH = do_DELETE = refuse_change  # noqa: N815

            def reply(self, body):
                self.send_response(200 if body.get("kind") != "Status" else body["code"])
                payload = json.dumps(body).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path):
        if path == "/version":
            return {"major": "1", "minor": "34", "gitVersion": "v1.34.0"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"]}
        if path == "/api/v1":
            return {"kind": "APIResourceList", "groupVersion": "v1", "resources": []}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
                "name": "postgresql.cnpg.io",
                "versions": [{"groupVersion": "postgresql.cnpg.io/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "postgresql.cnpg.io/v1", "version": "v1"},
            }]}
        if path == "/apis/postgresql.cnpg.io/v1":
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "postgresql.cnpg.io/v1",
                    "resources": [{"name": "clusters", "singularName": "cluster", "namespaced": True,
                                   "kind": "Cluster", "verbs": ["get", "list", "patch", "update", "watch"]},
                                  {"name": "clusters/status", "singularName": "", "namespaced": True,
                                   "kind": "Cluster", "verbs": ["get", "patch", "update"]},
                                  {"name": "backups", "singularName": "backup", "namespaced": True,
                                   "kind": "Backup", "verbs": ["create", "get", "list", "watch"]}]}
        if path == "/apis/postgresql.cnpg.io/v1/namespaces/hello/clusters/hello-db" and self.cluster:
            return self.cluster
        return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                "message": f"{path} not found"}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def regions(tmp_path):
    """Starts a fake API per region given; returns the kubeconfig path and the servers."""
    servers = []

    def start(**clusters_by_region):
        config = {"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [], "users": [
            {"name": "test", "user": {"token": "test"}}]}
        apis = {}
        for region, context in CONTEXTS.items():
            if region in clusters_by_region:
                api = RegionApi(clusters_by_region[region])
                servers.append(api)
                apis[region] = api
                server = api.url
            else:
                # Nothing listens here: the region is lost.
                server = "http://127.0.0.1:9"
            config["clusters"].append({"name": region, "cluster": {"server": server}})
            config["contexts"].append({"name": context, "context": {"cluster": region, "user": "test"}})
        config["current-context"] = CONTEXTS["europe-west1"]
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return path, apis

    yield start
    for api in servers:
        api.close()


def writes(apis):
    """{region: [(method, path)]} of every request that would have changed something."""
    return {region: [r for r in api.requests if r[0] != "GET"] for region, api in apis.items()}


CLUSTER_PATH = "/apis/postgresql.cnpg.io/v1/namespaces/hello/clusters/hello-db"


def run(playbook, env, kubeconfig, *extra):
    result = ansible("ansible-playbook", "-i", f"inventories/{env}", f"playbooks/{playbook}",
                     "-e", f"hello_confirm_environment={env}", *extra,
                     env={"KUBECONFIG": str(kubeconfig), "K8S_AUTH_KUBECONFIG": str(kubeconfig)})
    return result.returncode, result.stdout + result.stderr


def test_database_refuses_without_the_app_password(regions):
    kubeconfig, _ = regions()
    code, output = run("database.yml", "staging", kubeconfig)
    assert code != 0
    assert "postgres_app_password is missing or unusable" in output
    assert "Ansible\nVault" in output or "Ansible Vault" in output


def test_database_refuses_a_bad_password_without_echoing_it(regions):
    kubeconfig, _ = regions()
    code, output = run("database.yml", "staging", kubeconfig, "-e", "postgres_app_password=short pw")
    assert code != 0
    assert "postgres_app_password is missing or unusable" in output
    assert "short pw" not in output


def test_switchover_refuses_an_environment_without_a_dr_region(regions):
    kubeconfig, _ = regions()
    code, output = run("switchover.yml", "staging", kubeconfig)
    assert code != 0
    assert "A switchover moves the primary between two regions" in output


def test_switchover_refuses_while_a_region_does_not_answer(regions):
    kubeconfig, apis = regions(**{"europe-west1": cluster("europe-west1", "europe-west1")})
    code, output = run("switchover.yml", "production", kubeconfig)
    assert code != 0
    assert "Refusing the switchover: europe-west4 is not healthy (its API server did not answer)" in output
    assert ("GET", CLUSTER_PATH) in apis["europe-west1"].requests


@pytest.mark.parametrize(("unhealthy", "state", "shown"), [
    ("europe-west4", {"ready": False, "ready_instances": 2}, "2 of 3 instances ready"),
    ("europe-west1", {"archiving": False}, "'ContinuousArchiving': 'False'"),
])
def test_switchover_refuses_while_a_region_is_unhealthy(regions, unhealthy, state, shown):
    kubeconfig, _ = regions(**{
        region: cluster(region, "europe-west1", **(state if region == unhealthy else {}))
        for region in CONTEXTS
    })
    code, output = run("switchover.yml", "production", kubeconfig)
    assert code != 0
    assert f"Refusing the switchover: {unhealthy} is not healthy" in output
    assert shown in " ".join(output.split())


def test_failover_needs_the_explicit_confirmation(regions):
    kubeconfig, _ = regions(**{"europe-west4": cluster("europe-west4", "europe-west1")})
    code, output = run("failover.yml", "production", kubeconfig)
    assert code != 0
    assert "confirm with -e postgres_failover_confirm=europe-west4" in output


def test_failover_refuses_a_wrong_confirmation(regions):
    kubeconfig, _ = regions(**{"europe-west4": cluster("europe-west4", "europe-west1")})
    code, output = run("failover.yml", "production", kubeconfig, "-e", "postgres_failover_confirm=europe-west1")
    assert code != 0
    assert "(got 'europe-west1')" in output


def test_failover_refuses_while_the_old_primary_still_answers_as_primary(regions):
    kubeconfig, apis = regions(**{
        "europe-west1": cluster("europe-west1", "europe-west1"),
        "europe-west4": cluster("europe-west4", "europe-west1"),
    })
    code, output = run("failover.yml", "production", kubeconfig, "-e", "postgres_failover_confirm=europe-west4")
    assert code != 0
    assert "Refusing the failover: europe-west1 still answers" in output
    assert "two primaries" in output
    # Both regions were read, and nothing was written to either.
    for api in apis.values():
        assert ("GET", CLUSTER_PATH) in api.requests
        assert {method for method, _ in api.requests} == {"GET"}


def test_database_refuses_when_the_regions_disagree_on_the_primary(regions):
    kubeconfig, _ = regions(**{
        "europe-west1": cluster("europe-west1", "europe-west1"),
        "europe-west4": cluster("europe-west4", "europe-west4"),
    })
    code, output = run("database.yml", "production", kubeconfig, "-e", f"postgres_app_password={PASSWORD}")
    assert code != 0
    assert "The regions disagree on which member holds the primary" in output
    assert PASSWORD not in output


def test_switchover_with_both_regions_healthy_demotes_the_primary_region_first(regions):
    kubeconfig, apis = regions(**{
        "europe-west1": cluster("europe-west1", "europe-west1"),
        "europe-west4": cluster("europe-west4", "europe-west1"),
    })
    code, output = run("switchover.yml", "production", kubeconfig)
    # The test API refuses every write, so the run stops at the first one: the demotion.
    assert code != 0
    assert "Refusing" not in output
    assert "Demote the Cluster" in output
    # (kubernetes.core tries a second patch type when the first is refused.)
    assert writes(apis)["europe-west1"]
    assert set(writes(apis)["europe-west1"]) == {("PATCH", CLUSTER_PATH)}
    assert writes(apis)["europe-west4"] == []


def test_confirmed_failover_of_a_silent_region_promotes_the_other_one(regions):
    kubeconfig, apis = regions(**{"europe-west4": cluster("europe-west4", "europe-west1")})
    code, output = run("failover.yml", "production", kubeconfig, "-e", "postgres_failover_confirm=europe-west4")
    # The test API refuses every write, so the run stops at the promotion, which it attempted.
    assert code != 0
    assert "Refusing" not in output
    assert "Promote the Cluster" in output
    assert writes(apis)["europe-west4"]
    assert set(writes(apis)["europe-west4"]) == {("PATCH", CLUSTER_PATH)}


def test_backup_runs_where_the_primary_is_after_a_switchover(regions):
    # After a switchover both Clusters name europe-west4's member as the primary.
    kubeconfig, apis = regions(**{
        "europe-west1": cluster("europe-west1", "europe-west4"),
        "europe-west4": cluster("europe-west4", "europe-west4"),
    })
    code, output = run("backup.yml", "production", kubeconfig)
    # The test API refuses the write, so the run stops at creating the Backup, which it attempted.
    assert code != 0
    assert "Create the Backup" in output
    assert writes(apis)["europe-west1"] == []
    assert writes(apis)["europe-west4"]
    assert {(method, path.split("?")[0]) for method, path in writes(apis)["europe-west4"]} == \
        {("POST", "/apis/postgresql.cnpg.io/v1/namespaces/hello/backups")}
