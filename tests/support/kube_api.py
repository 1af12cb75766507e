"""Regional Kubernetes API servers for playbook tests, as small HTTP servers on loopback ports.

What cannot run here is a GKE cluster. The playbooks that act across regions read each region's
CloudNativePG Cluster and the service's Services and Deployments through the Kubernetes API, so
each region is played by a ``RegionApi``: it answers API discovery, the read of one Cluster
(``cluster(...)`` builds one as CloudNativePG reports it) and the lists of the service's
Services and Deployments (``service_release(...)`` builds a live release), like an API server
would, and refuses every write with 405 while recording it. ``write_kubeconfig`` names one
context per region, as ``gcloud container clusters get-credentials`` would; a region given no
server does not answer, like a lost region. ``fake_gcloud(bin_dir, log)`` puts a stand-in
``gcloud`` on a PATH that records its command lines and succeeds.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

CLUSTER_PATH = "/apis/postgresql.cnpg.io/v1/namespaces/hello/clusters/hello-db"
SERVICES_PATH = "/api/v1/namespaces/hello/services"
DEPLOYMENTS_PATH = "/apis/apps/v1/namespaces/hello/deployments"
OTHER_REGION = {"europe-west1": "europe-west4", "europe-west4": "europe-west1"}


def cluster(region, primary_region, *, ready=True, archiving=True, ready_instances=3):
    """A Cluster object as CloudNativePG 1.30 reports it."""
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "hello-db", "namespace": "hello"},
        "spec": {
            "instances": 3,
            "bootstrap": {"initdb": {"database": "app", "owner": "app"}},
            "replica": {
                "self": f"hello-db-{region}",
                "primary": f"hello-db-{primary_region}",
                "source": f"hello-db-{OTHER_REGION.get(region, primary_region)}",
            },
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


def service_release(live, digest, image_repository="europe-docker.pkg.dev/p/hello/hello"):
    """The Services and Deployments of a region where slot ``live`` serves ``digest``."""
    labels = {"app.kubernetes.io/name": "hello"}
    services = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "hello", "namespace": "hello", "labels": labels},
            "spec": {"selector": {**labels, "slot": live}},
        }
    ]
    deployments = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"hello-{live}", "namespace": "hello", "labels": labels},
            "spec": {
                "replicas": 3,
                "template": {"spec": {"containers": [{"name": "hello", "image": f"{image_repository}@{digest}"}]}},
            },
            "status": {"readyReplicas": 3},
        }
    ]
    return {"services": services, "deployments": deployments}


def _resource(name, kind, verbs=("get", "list", "patch", "create", "update", "watch", "delete")):
    return {
        "name": name,
        "singularName": name.rstrip("s"),
        "namespaced": name != "namespaces",
        "kind": kind,
        "verbs": list(verbs),
    }


DISCOVERY = {
    "/version": {"major": "1", "minor": "34", "gitVersion": "v1.34.0"},
    "/api": {"kind": "APIVersions", "versions": ["v1"]},
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            _resource("namespaces", "Namespace"),
            _resource("services", "Service"),
            _resource("secrets", "Secret"),
            _resource("serviceaccounts", "ServiceAccount"),
            _resource("configmaps", "ConfigMap"),
        ],
    },
    "/apis": {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": name,
                "versions": [{"groupVersion": f"{name}/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": f"{name}/v1", "version": "v1"},
            }
            for name in ("postgresql.cnpg.io", "apps")
        ],
    },
    "/apis/postgresql.cnpg.io/v1": {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "postgresql.cnpg.io/v1",
        "resources": [
            _resource("clusters", "Cluster"),
            {
                "name": "clusters/status",
                "singularName": "",
                "namespaced": True,
                "kind": "Cluster",
                "verbs": ["get", "patch", "update"],
            },
            _resource("backups", "Backup", ("create", "get", "list", "watch")),
        ],
    },
    "/apis/apps/v1": {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "apps/v1",
        "resources": [_resource("deployments", "Deployment")],
    },
}


class RegionApi:
    """Answers the Kubernetes API calls kubernetes.core makes to read one region."""

    def __init__(self, cluster_object, release=None):
        self.cluster = cluster_object
        self.release = release or {"services": [], "deployments": []}
        self.requests = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                api.requests.append(("GET", self.path))
                self.reply(api.answer(self.path.split("?")[0]))

            def refuse_change(self):
                # Recorded, so a test can prove what a run tried to change, and where.
                api.requests.append((self.command, self.path))
                self.reply(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": "MethodNotAllowed",
                        "code": 405,
                        "message": "read-only test API",
                    }
                )

            do_POST = do_PUT = do_PATCH = do_DELETE = refuse_change

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
        if path in DISCOVERY:
            return DISCOVERY[path]
        if path == CLUSTER_PATH and self.cluster:
            return self.cluster
        if path == SERVICES_PATH:
            return {"kind": "ServiceList", "apiVersion": "v1", "metadata": {}, "items": self.release["services"]}
        if path == DEPLOYMENTS_PATH:
            return {
                "kind": "DeploymentList",
                "apiVersion": "apps/v1",
                "metadata": {},
                "items": self.release["deployments"],
            }
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "NotFound",
            "code": 404,
            "message": f"{path} not found",
        }

    def writes(self):
        """Every request that would have changed something, as (method, path without query)."""
        return [(method, path.split("?")[0]) for method, path in self.requests if method != "GET"]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def start_regions(regions, servers):
    """One RegionApi per region given: its Cluster, or (Cluster, release) where the service runs.
    Each is added to servers too, for the caller to close."""
    apis = {}
    for region, answer in regions.items():
        cluster_object, release = answer if isinstance(answer, tuple) else (answer, None)
        apis[region] = RegionApi(cluster_object, release)
        servers.append(apis[region])
    return apis


def write_kubeconfig(path, contexts, apis):
    """A kubeconfig with one context per region; a region without an API does not answer."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [],
        "contexts": [],
        "users": [{"name": "test", "user": {"token": "test"}}],
    }
    for region, context in contexts.items():
        # Nothing listens on port 9: the region is lost.
        server = apis[region].url if region in apis else "http://127.0.0.1:9"
        config["clusters"].append({"name": region, "cluster": {"server": server}})
        config["contexts"].append({"name": context, "context": {"cluster": region, "user": "test"}})
    config["current-context"] = next(iter(contexts.values()))
    Path(path).write_text(yaml.safe_dump(config))
    return Path(path)


def fake_gcloud(bin_dir, log):
    """A `gcloud` that records each command line (one JSON list a line) and succeeds."""
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"with open({str(log)!r}, 'a') as log:\n"
        "    log.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    gcloud.chmod(0o755)
    return bin_dir
