"""Regional Kubernetes API servers for playbook tests, as small HTTP servers on loopback ports.

What cannot run here is a GKE cluster. The playbooks that act across regions read each region's
CloudNativePG Cluster and the service's Services and Deployments through the Kubernetes API, so
each region is played by a ``RegionApi``: it answers API discovery, the read of one Cluster
(``cluster(...)`` builds one as CloudNativePG reports it) and the lists of the service's
Services and Deployments (``service_release(...)`` builds a live release), like an API server
would, and refuses every write with 405 while recording it; a patch of the Cluster that
CloudNativePG's admission webhook would reject is refused with the webhook's 422 instead
(``cnpg_webhook_errors``). Namespaces are the exception, as on an empty cluster: a region's
namespaces are those of the objects it was given (none: an empty cluster) and the system ones; it
creates a namespace it is asked to, and refuses a create into one that does not exist with the
API server's 404 (``missing_namespace``), so a run that writes an object before its namespace
fails here as it would on a real cluster. ``write_kubeconfig`` names one
context per region, as ``gcloud container clusters get-credentials`` would; a region given no
server does not answer, like a lost region. ``fake_gcloud(bin_dir, log)`` puts a stand-in
``gcloud`` on a PATH that records its command lines and succeeds.
"""

import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

CLUSTER_PATH = "/apis/postgresql.cnpg.io/v1/namespaces/hello/clusters/hello-db"
SERVICES_PATH = "/api/v1/namespaces/hello/services"
DEPLOYMENTS_PATH = "/apis/apps/v1/namespaces/hello/deployments"
OTHER_REGION = {"europe-west1": "europe-west4", "europe-west4": "europe-west1"}
# The namespaces a cluster has before anything is applied: kube-apiserver's immortal ones and the
# node leases', and on GKE with managed collection those of Managed Service for Prometheus: its
# operator's, and the public one it reads the user's configuration from (DefaultOperatorNamespace,
# DefaultPublicNamespace in GoogleCloudPlatform/prometheus-engine, pkg/operator/operator.go).
SYSTEM_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease", "gmp-system", "gmp-public"})
NAMESPACE_PATH = re.compile(r"/api/v1/namespaces(?:/(?P<name>[^/]+))?")
NAMESPACED_PATH = re.compile(r"/apis?/(?:[^/]+/)*?namespaces/(?P<namespace>[^/]+)/[^/]+(?:/[^/]+)*")


# The kube-config contexts of the production inventory's clusters (hello_kube_context), by region.
PRODUCTION_CONTEXTS = {
    "europe-west1": "gke_hello-platform-production_europe-west1_hello-production-europe-west1",
    "europe-west4": "gke_hello-platform-production_europe-west4_hello-production-europe-west4",
}


def cluster(region, primary_region, *, ready=True, archiving=True, ready_instances=3, promotion_token=""):
    """A Cluster object as CloudNativePG 1.30 reports it; ``promotion_token`` is what an earlier
    switchover's promotion left in spec.replica.promotionToken."""
    replica = {
        "self": f"hello-db-{region}",
        "primary": f"hello-db-{primary_region}",
        "source": f"hello-db-{OTHER_REGION.get(region, primary_region)}",
    }
    if promotion_token:
        replica["promotionToken"] = promotion_token
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "hello-db", "namespace": "hello"},
        "spec": {
            "instances": 3,
            "bootstrap": {"initdb": {"database": "app", "owner": "app"}},
            "replica": replica,
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


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch: what the API server makes of a patch of a custom resource
    (kubernetes.core sends its strategic-merge attempt and then a merge patch; custom resources
    take only the latter, with the same result for these objects)."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def cnpg_webhook_errors(cluster_object):
    """What CloudNativePG 1.30.0's validating webhook says of a Cluster's replica stanza.

    Encodes internal/webhook/v1/cluster_webhook.go (validatePromotionToken) and
    api/v1/cluster_funcs.go (Cluster.IsReplica) at v1.30.0: a non-empty
    spec.replica.promotionToken is refused on a cluster that is a replica, that is one whose
    replica.self (else its name) is not replica.primary (or whose replica.enabled is true)."""
    replica = cluster_object.get("spec", {}).get("replica")
    if not replica or not replica.get("promotionToken"):
        return []
    if "enabled" in replica:
        is_replica = bool(replica["enabled"])
    else:
        is_replica = (replica.get("self") or cluster_object["metadata"]["name"]) != replica.get("primary")
    if is_replica:
        token = replica["promotionToken"]
        return [f'spec.replica.token: Invalid value: "{token}": promotionToken is only allowed for primary clusters']
    return []


def missing_namespace(name):
    """What kube-apiserver answers a create of an object into namespace ``name`` that does not
    exist. Encodes k8s.io/apiserver v0.35.0 (Kubernetes 1.35):
    pkg/admission/plugin/namespace/lifecycle/admission.go (Lifecycle.Admit, the
    NamespaceLifecycle plugin, enabled by default) returns, for a Create whose namespace neither
    its informer nor a live read finds, the live read's NotFound error, which
    k8s.io/apimachinery's pkg/api/errors/errors.go (NewNotFound) builds with the resource
    `namespaces` as details.kind; pkg/endpoints/handlers/patch.go (patcher.applyAdmission) admits
    a patch of an object that does not exist yet, as a server-side apply sends, as a Create.
    Updates and deletes pass this plugin (the object cannot exist anyway). A read of the missing
    namespace itself gets the same body."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'namespaces "{name}" not found',
        "reason": "NotFound",
        "details": {"name": name, "kind": "namespaces"},
        "code": 404,
    }


def _resource(name, kind, verbs=("get", "list", "patch", "create", "update", "watch", "delete")):
    return {
        "name": name,
        "singularName": name.rstrip("s"),
        "namespaced": name != "namespaces",
        "kind": kind,
        "verbs": list(verbs),
    }


def resource_list(group_version, resources):
    """The discovery document of one group version: the kinds it serves."""
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}


# The API groups served besides the core group (version v1 each), with the kinds the playbooks use.
_GROUPS = {
    "postgresql.cnpg.io": [
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
    "barmancloud.cnpg.io": [_resource("objectstores", "ObjectStore")],
    "apps": [_resource("deployments", "Deployment")],
    "discovery.k8s.io": [_resource("endpointslices", "EndpointSlice")],
    "networking.k8s.io": [_resource("networkpolicies", "NetworkPolicy")],
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
            for name in _GROUPS
        ],
    },
    **{f"/apis/{name}/v1": resource_list(f"{name}/v1", resources) for name, resources in _GROUPS.items()},
}


class RegionApi:
    """Answers the Kubernetes API calls kubernetes.core makes to read one region."""

    def __init__(self, cluster_object, release=None, *, accept_secrets=False):
        """``accept_secrets``: a server-side apply of a Secret succeeds (the API answers with
        the object, as an API server does), so a test sees what a run prints of one."""
        self.cluster = cluster_object
        self.accept_secrets = accept_secrets
        self.release = release or {"services": [], "deployments": []}
        given = [cluster_object] if cluster_object else []
        given += self.release["services"] + self.release["deployments"]
        self.namespaces = set(SYSTEM_NAMESPACES) | {obj["metadata"]["namespace"] for obj in given}
        self.requests = []
        # Secrets applied (accept_secrets): path -> the object as the run sent it.
        self.applied = {}
        self.webhook_refusals = []
        # The namespaces of the creates refused because the namespace did not exist.
        self.namespace_refusals = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                api.requests.append(("GET", self.path))
                self.reply(api.answer(self.path.split("?")[0]))

            def refuse_change(self):
                # Recorded, so a test can prove what a run tried to change, and where.
                api.requests.append((self.command, self.path))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?")[0]
                namespace = NAMESPACE_PATH.fullmatch(path)
                if namespace and self.command in ("POST", "PATCH", "PUT"):
                    name = namespace["name"] or yaml.safe_load(body)["metadata"]["name"]
                    # A dry run (--check) stores nothing: the namespace still does not exist after it.
                    dry_run = "dryRun=All" in self.path
                    self.reply(api.namespace(name) if dry_run else api.create_namespace(name))
                    return
                inside = NAMESPACED_PATH.fullmatch(path)
                creates = self.command == "POST" or (
                    self.command in ("PATCH", "PUT") and api.answer(path).get("kind") == "Status"
                )
                if inside and creates and inside["namespace"] not in api.namespaces:
                    api.namespace_refusals.append(inside["namespace"])
                    self.reply(missing_namespace(inside["namespace"]))
                    return
                # A namespace's own baseline (its default deny, with the namespace in one file) is
                # accepted like the namespace, so a run gets past it to the objects under test.
                accepted = (api.accept_secrets and "/secrets/" in path) or "/networkpolicies/" in path
                if accepted and self.command == "PATCH":
                    applied = json.loads(body)
                    applied["metadata"].setdefault("uid", "00000000-0000-0000-0000-000000000001")
                    applied["metadata"].setdefault("resourceVersion", "1")
                    api.applied[path] = applied
                    self.reply(applied)
                    return
                if self.command == "PATCH" and self.path.split("?")[0] == CLUSTER_PATH and api.cluster:
                    errors = cnpg_webhook_errors(merge_patch(api.cluster, json.loads(body or b"{}")))
                    if errors:
                        api.webhook_refusals.extend(errors)
                        self.reply(
                            {
                                "kind": "Status",
                                "apiVersion": "v1",
                                "status": "Failure",
                                "reason": "Invalid",
                                "code": 422,
                                "message": 'admission webhook "vcluster.cnpg.io" denied the request: '
                                + "; ".join(errors),
                            }
                        )
                        return
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

    def create_namespace(self, name):
        """Creates (or keeps) namespace ``name`` and answers with it, as the API server does."""
        self.namespaces.add(name)
        return self.namespace(name)

    @staticmethod
    def namespace(name):
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "uid": f"namespace-{name}", "resourceVersion": "1"},
            "status": {"phase": "Active"},
        }

    def answer(self, path):
        if path in DISCOVERY:
            return DISCOVERY[path]
        namespace = NAMESPACE_PATH.fullmatch(path)
        if namespace and namespace["name"]:
            name = namespace["name"]
            return self.namespace(name) if name in self.namespaces else missing_namespace(name)
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


def run_env(kubeconfig, bin_dir):
    """The environment of an ansible-playbook run against the test APIs of ``kubeconfig``, with
    the recording ``gcloud`` of ``bin_dir`` first on PATH."""
    return {
        "KUBECONFIG": str(kubeconfig),
        "K8S_AUTH_KUBECONFIG": str(kubeconfig),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }


def run_playbook(ansible, tmp_path, contexts, apis, *args):
    """``ansible-playbook *args`` against ``apis`` (region -> test API, each closed after the run),
    reached through ``contexts`` (region -> kube-config context), with the recording ``gcloud``
    (its calls in ``tmp_path/gcloud-calls.jsonl``)."""
    try:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", contexts, apis)
        bin_dir = fake_gcloud(tmp_path / "bin", tmp_path / "gcloud-calls.jsonl")
        return ansible("ansible-playbook", *args, env=run_env(kubeconfig, bin_dir))
    finally:
        for api in apis.values():
            api.close()


def fake_gcloud(bin_dir, log):
    """A `gcloud` that records each command line (one JSON list a line) and succeeds, listing nothing."""
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"with open({str(log)!r}, 'a') as log:\n"
        "    log.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        # A list in a project with nothing in it, as gcloud prints it with --format=json.
        "if 'list' in sys.argv[1:] and '--format=json' in sys.argv[1:]:\n"
        "    print('[]')\n"
    )
    gcloud.chmod(0o755)
    return bin_dir
