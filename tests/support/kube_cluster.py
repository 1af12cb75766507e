"""An empty Kubernetes cluster of one region, as an API server that keeps what is applied to it.

``support.kube_api.RegionApi`` plays a region that already runs (it answers reads and refuses
writes); ``ClusterApi`` plays a region on the first day: no object but the system namespaces,
and the API groups of the built-in kinds and of the CustomResourceDefinitions it is given
(``crds_of``; each also readable as its CustomResourceDefinition, and one applied through the
API is served too), none else. It stores what a run creates, applies (server-side or with a
merge patch), replaces and deletes, and answers reads and lists (label selectors ``key=value``
and ``key``) from what it holds, so a second run of the same playbooks finds what the first made
and changes nothing. Like kube-apiserver it refuses:

- a create into a namespace that does not exist (``support.kube_api.missing_namespace``,
  NamespaceLifecycle);
- any request under an API group and version no installed CRD or built-in kind serves
  (``unserved``): a kind whose CRD is not installed;
- a create of an object that exists (409 AlreadyExists), a read, patch or delete of one that does
  not (404 NotFound, ``not_found``).

There is no controller: no status is ever written, no pod, no Job completes, no Deployment or
CloudNativePG Cluster becomes ready. A run waiting for one waits until its timeout: that is the
boundary of what a test can show with it.
"""

import base64
import copy
import itertools
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from support.kube_api import SYSTEM_NAMESPACES, merge_patch, missing_namespace, resource_list

# The built-in kinds the playbooks read or write, as (group/version, plural, kind, namespaced).
BUILTIN = [
    ("v1", "namespaces", "Namespace", False),
    ("v1", "nodes", "Node", False),
    ("v1", "configmaps", "ConfigMap", True),
    ("v1", "endpoints", "Endpoints", True),
    ("v1", "events", "Event", True),
    ("v1", "persistentvolumeclaims", "PersistentVolumeClaim", True),
    ("v1", "pods", "Pod", True),
    ("v1", "secrets", "Secret", True),
    ("v1", "serviceaccounts", "ServiceAccount", True),
    ("v1", "services", "Service", True),
    ("apps/v1", "deployments", "Deployment", True),
    ("apps/v1", "replicasets", "ReplicaSet", True),
    ("autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True),
    ("batch/v1", "cronjobs", "CronJob", True),
    ("batch/v1", "jobs", "Job", True),
    ("discovery.k8s.io/v1", "endpointslices", "EndpointSlice", True),
    ("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True),
    ("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", True),
    ("apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition", False),
]
# Set by the API server, never by a client.
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation")
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
RESOURCE_PATH = re.compile(
    r"/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>status))?"
)


def version_rank(version):
    """Orders API versions as Kubernetes prefers them: GA over beta over alpha, then by number."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (-1, 0, 0)
    return ({"alpha": 0, "beta": 1, None: 2}[match[2]], int(match[1]), int(match[3] or 0))


def crds_of(*paths):
    """The CustomResourceDefinitions in the YAML files ``paths`` (a folder: its *.yml, *.yaml)."""
    files = []
    for path in map(Path, paths):
        files += sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
    return [
        doc
        for file in files
        for doc in yaml.safe_load_all(file.read_text())
        if doc and doc.get("kind") == "CustomResourceDefinition"
    ]


def status(code, reason, message, details=None):
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message}
    body.update({"reason": reason, "code": code})
    if details:
        body["details"] = details
    return body


def not_found(group, plural, name):
    """k8s.io/apimachinery v0.35.0 pkg/api/errors/errors.go NewNotFound: `<resource>[.<group>]
    "<name>" not found`, what a read of an object that does not exist gets."""
    resource = f"{plural}.{group}" if group else plural
    details = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return status(404, "NotFound", f'{resource} "{name}" not found', details)


def unserved():
    """What kube-apiserver answers a request under an API group or version nothing serves: a
    custom resource whose CRD is not installed. Encodes k8s.io/apiextensions-apiserver v0.35.0
    pkg/apiserver/customresource_handler.go (crdHandler.ServeHTTP: no CRD named
    <resource>.<group> -> r.delegate.ServeHTTP) and k8s.io/apiserver v0.35.0
    pkg/util/notfoundhandler/not_found_handler.go (the end of the delegation chain, once the
    paths are installed: http.NotFound), so a plain-text 404, no Status object. Clients find no
    such kind in discovery either, and stop before sending."""
    return 404, "text/plain; charset=utf-8", b"404 page not found\n"


class ClusterApi:
    """An empty cluster of one region that keeps what runs apply to it (see the module doc)."""

    def __init__(self, crds=(), *, namespaces=SYSTEM_NAMESPACES, version="1.34"):
        self.crds = list(crds)
        self.version = version
        # (group/version, plural) -> (kind, namespaced)
        self.kinds = {(gv, plural): (kind, namespaced) for gv, plural, kind, namespaced in BUILTIN}
        # (group/version, plural, namespace or "", name) -> object
        self.objects = {}
        for crd in self.crds:
            self.install(crd)
        for name in namespaces:
            self.store(("v1", "namespaces", "", name), {"apiVersion": "v1", "kind": "Namespace", "metadata": {}})
        self.requests = []
        self.namespace_refusals = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    _versions = itertools.count(1)

    def install(self, crd):
        """Stores a CustomResourceDefinition and serves its kind, as the API server does once the
        CRD is established."""
        names = crd["spec"]["names"]
        for served in crd["spec"]["versions"]:
            if served.get("served", True):
                gv = f"{crd['spec']['group']}/{served['name']}"
                self.kinds[(gv, names["plural"])] = (names["kind"], crd["spec"]["scope"] == "Namespaced")
        key = ("apiextensions.k8s.io/v1", "customresourcedefinitions", "", crd["metadata"]["name"])
        return self.store(key, crd, self.objects.get(key))

    def store(self, key, obj, existing=None):
        _, _, namespace, name = key
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta["name"] = name
        if namespace:
            meta["namespace"] = namespace
        if obj.get("kind") == "Secret" and "stringData" in obj:
            # The API server folds stringData into data (k8s.io/api core/v1 Secret.StringData).
            data = obj.setdefault("data", {})
            for field, value in obj.pop("stringData").items():
                data[field] = base64.b64encode(value.encode()).decode()
        if obj.get("kind") == "Namespace":
            obj["status"] = {"phase": "Active"}
        for field in SERVER_FIELDS:
            meta.pop(field, None)
        if existing is not None:
            kept = {field: existing["metadata"][field] for field in SERVER_FIELDS}
            if obj == {**existing, "metadata": {k: v for k, v in existing["metadata"].items() if k not in kept}}:
                return existing
            meta.update(kept, generation=kept["generation"] + 1)
        else:
            meta.update(uid=f"{name}-{next(self._versions)}", creationTimestamp="2026-01-01T00:00:00Z", generation=1)
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[key] = obj
        return obj

    def discovery(self, path):
        if path == "/version":
            minor = self.version.split(".")[1]
            return {"major": "1", "minor": minor, "gitVersion": f"v{self.version}.0"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"]}
        groups = {}
        for gv in sorted({gv for gv, _ in self.kinds if "/" in gv}):
            groups.setdefault(gv.split("/")[0], []).append(gv.split("/")[1])
        if path == "/apis":
            # One entry per group with every version it serves, the stable one preferred (a group
            # listed once per version would hide all but one of them from a client).
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": group,
                        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                        "preferredVersion": {
                            "groupVersion": f"{group}/{max(versions, key=version_rank)}",
                            "version": max(versions, key=version_rank),
                        },
                    }
                    for group, versions in sorted(groups.items())
                ],
            }
        gv = path.removeprefix("/api/").removeprefix("/apis/")
        resources = [
            {
                "name": plural,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": VERBS,
            }
            for (served, plural), (kind, namespaced) in sorted(self.kinds.items())
            if served == gv
        ]
        if not resources:
            return None
        return resource_list(gv, resources)

    def list(self, gv, plural, namespace, query):
        selectors = [s for s in query.get("labelSelector", "").split(",") if s]
        items = []
        for (served, kind_plural, ns, _), obj in sorted(self.objects.items()):
            if (served, kind_plural) != (gv, plural) or (namespace and ns != namespace):
                continue
            labels = obj["metadata"].get("labels", {})
            if all(labels.get(s.split("=")[0]) == s.split("=", 1)[1] if "=" in s else s in labels for s in selectors):
                items.append(obj)
        kind = self.kinds[(gv, plural)][0]
        return {"kind": f"{kind}List", "apiVersion": gv, "metadata": {"resourceVersion": "1"}, "items": items}

    def handle(self, method, raw_path, content_type, body):
        """(code, content type, body bytes) of one request."""
        path, _, query_text = raw_path.partition("?")
        query = dict(urllib.parse.parse_qsl(query_text))
        if method == "GET" and path in ("/version", "/api", "/apis"):
            return self.json(self.discovery(path))
        parts = path.strip("/").split("/")
        if method == "GET" and len(parts) == {"api": 2, "apis": 3}.get(parts[0]):
            found = self.discovery(path)
            return self.json(found) if found else unserved()
        match = RESOURCE_PATH.fullmatch(path)
        gv = match and (match["core"] or f"{match['group']}/{match['version']}")
        if not match or (gv, match["plural"]) not in self.kinds:
            return unserved()
        plural, namespace, name = match["plural"], match["namespace"] or "", match["name"]
        kind, namespaced = self.kinds[(gv, plural)]
        if not namespaced and namespace:
            return unserved()
        group = "" if gv == "v1" else gv.split("/")[0]
        dry_run = query.get("dryRun") == "All"
        if method == "GET" and not name:
            return self.json(self.list(gv, plural, namespace, query))
        if method == "POST":
            obj = json.loads(body)
            name = obj["metadata"].get("name")
        if not name:
            return self.json(status(405, "MethodNotAllowed", "the server does not allow this method"))
        key = (gv, plural, namespace, name)
        existing = self.objects.get(key)
        if method == "GET":
            return self.json(existing or not_found(group, plural, name))
        if method == "DELETE":
            if existing is None:
                return self.json(not_found(group, plural, name))
            if not dry_run:
                del self.objects[key]
            return self.json(existing)
        creates = existing is None
        if creates and namespaced and ("v1", "namespaces", "", namespace) not in self.objects:
            self.namespace_refusals.append(namespace)
            return self.json(missing_namespace(namespace))
        if method == "POST" and not creates:
            return self.json(status(409, "AlreadyExists", f'{plural} "{name}" already exists'))
        if method in ("PUT", "PATCH") and creates and "apply-patch" not in content_type:
            return self.json(not_found(group, plural, name))
        if method == "PATCH" and "apply-patch" not in content_type:
            if "json-patch" in content_type:
                return self.json(status(415, "UnsupportedMediaType", "JSON patches are not kept by this test API"))
            obj = merge_patch(existing, json.loads(body))
        else:
            obj = json.loads(body)
        obj.setdefault("apiVersion", gv)
        obj.setdefault("kind", kind)
        if existing is not None and "status" in existing and "status" not in obj:
            obj["status"] = existing["status"]
        if dry_run:
            return self.json(obj)
        stored = self.install(obj) if kind == "CustomResourceDefinition" else self.store(key, obj, existing)
        return self.json(stored, 201 if creates else 200)

    @staticmethod
    def json(body, code=None):
        code = code or (body["code"] if body.get("kind") == "Status" else 200)
        return code, "application/json", json.dumps(body).encode()

    def handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with api.lock:
                    api.requests.append((self.command, self.path))
                    code, content_type, payload = api.handle(
                        self.command, self.path, self.headers.get("Content-Type", ""), body
                    )
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = answer

            def log_message(self, *args):
                pass

        return Handler

    def get(self, api_version, plural, name, namespace=""):
        return self.objects.get((api_version, plural, namespace, name))

    def names(self):
        """Every object the cluster holds, as `<kind> <namespace>/<name>`, sorted."""
        return sorted(
            f"{obj['kind']} {namespace + '/' if namespace else ''}{name}"
            for (_, _, namespace, name), obj in self.objects.items()
        )

    def writes(self):
        return [(method, path.split("?")[0]) for method, path in self.requests if method != "GET"]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
