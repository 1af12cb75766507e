"""A region whose cluster runs releases: ``support.kube_cluster.ClusterApi`` plus the few
controllers a release of the service waits on, and the load balancer users go through.

``ClusterApi`` keeps what a run applies but runs no controller, so a release would wait for its
slot's pods until its timeout. ``ReleaseCluster`` adds, each as small as the release needs and no
more (what it enforces is only what is written here):

- Deployments: the pods of the template's hash, ``spec.replicas`` of them, Ready at once; pods of
  another template or beyond the count are deleted (a rollout without surge, faster than real).
  The status a rollout's wait reads (observedGeneration, replicas, updated, ready, available).
- The NEG readiness gate, where a pod template has it, as GKE's NEG controller sets it
  (kubernetes/ingress-gce v1.41.1, pkg/neg/readiness/reflector.go): True with reason
  LoadBalancerNegReady and "Pod has become Healthy in NEG ..." for a pod that a backend Service of
  HTTPRoute hello selects (its NEG is attached to a backend service, and the health check passes
  here), and True with "Pod does not belong to any NEG" otherwise. Re-evaluated only when the pod
  is made, as the reflector stops tracking a pod once the condition is True.
- Jobs: complete at once, with a pod whose log is ``job_logs[<kind of Job>]`` (the release checks'
  RESULT lines) and the pod log API (``.../pods/<name>/log``) to read it.
- Gateway hello: ``status.addresses`` is the load balancer's address (127.0.0.1) once applied.
- ``LoadBalancer``: an HTTPS server on loopback that answers like the Gateway's load balancer: a
  request goes to the backend of HTTPRoute hello with weight above 0 (Gateway API: an unset
  weight is 1) and is answered 200 with the service's greeting if that Service selects at least
  one Ready pod (and, with the readiness gate, one the load balancer found healthy), else 502,
  "no healthy upstream". Its answers are counted (``answers``).

Every change of HTTPRoute hello, every deletion and every pod made or deleted is recorded in
``timeline``, with, for each route change, which Services had a serving pod at that moment.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

from support.kube_cluster import ClusterApi
from support.net import HttpServer

NEG_CONDITION = "cloud.google.com/load-balancer-neg-ready"


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class ReleaseCluster(ClusterApi):
    def __init__(self, crds=(), *, certificate=None, job_logs=None, **kwargs):
        self.timeline = []
        self.job_logs = job_logs or {}
        self.logs = {}
        super().__init__(crds, **kwargs)
        self.balancer = LoadBalancer(self, certificate)

    # --- the controllers ----------------------------------------------------------------------

    def store(self, key, obj, existing=None):
        stored = super().store(key, obj, existing)
        _, plural, namespace, name = key
        if plural == "deployments":
            self._roll(namespace, stored)
        elif plural == "jobs" and existing is None:
            self._complete(namespace, stored)
        elif plural == "gateways" and not stored.get("status", {}).get("addresses"):
            stored["status"] = {
                "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
                "conditions": [{"type": "Programmed", "status": "True", "reason": "Programmed"}],
            }
        elif plural == "httproutes" and name == "hello":
            self.timeline.append(("route", self.route_weights(), self.serving_services()))
        return stored

    def discovery(self, path):
        found = super().discovery(path)
        if path == "/apis/apps/v1" and found:
            # The scale subresource a scale-down goes through (autoscaling/v1 Scale).
            found["resources"].append(
                {
                    "name": "deployments/scale",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "Scale",
                    "group": "autoscaling",
                    "version": "v1",
                    "verbs": ["get", "patch", "update"],
                }
            )
        if path == "/api/v1" and found:
            # The pod log subresource the Jobs' logs are read through.
            found["resources"].append(
                {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]}
            )
        return found

    def handle(self, method, raw_path, content_type, body):
        path = raw_path.partition("?")[0]
        parts = path.strip("/").split("/")
        if method == "GET" and parts[-1] == "log" and len(parts) == 7 and parts[4] == "pods":
            log = self.logs.get((parts[3], parts[5]))
            if log is None:
                return self.json({"kind": "Status", "code": 404, "reason": "NotFound", "message": "no such pod"})
            return 200, "text/plain", log.encode()
        if method == "PATCH" and parts[-1] == "scale" and len(parts) == 8 and parts[5] == "deployments":
            key = ("apps/v1", "deployments", parts[4], parts[6])
            if key not in self.objects:
                return self.json({"kind": "Status", "code": 404, "reason": "NotFound", "message": "no such Deployment"})
            deployment = json.loads(json.dumps(self.objects[key]))
            deployment["spec"]["replicas"] = json.loads(body)["spec"]["replicas"]
            stored = self.store(key, deployment, self.objects[key])
            self.timeline.append(("scaled", parts[6], stored["spec"]["replicas"]))
            return self.json(
                {
                    "apiVersion": "autoscaling/v1",
                    "kind": "Scale",
                    "metadata": stored["metadata"],
                    "spec": {"replicas": stored["spec"]["replicas"]},
                }
            )
        answer = super().handle(method, raw_path, content_type, body)
        if method == "DELETE" and answer[0] == 200:
            self.timeline.append(("deleted", parts[-2], parts[-1]))
        return answer

    def _roll(self, namespace, deployment):
        spec = deployment["spec"]
        template = spec["template"]
        replicas = int(spec.get("replicas") or 0)
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        name = deployment["metadata"]["name"]
        wanted = {f"{name}-{digest}-{index}" for index in range(replicas)}
        for key in [k for k in self.objects if k[1] == "pods" and k[2] == namespace]:
            owner = self.objects[key]["metadata"].get("labels", {}).get("test/owner")
            if owner == name and key[3] not in wanted:
                del self.objects[key]
                self.timeline.append(("pod deleted", key[3]))
        for pod_name in sorted(wanted):
            if ("v1", "pods", namespace, pod_name) not in self.objects:
                self._make_pod(namespace, pod_name, template, name)
        deployment["status"] = {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }

    def _make_pod(self, namespace, name, template, owner):
        labels = {**template["metadata"].get("labels", {}), "test/owner": owner}
        conditions = [{"type": "Ready", "status": "True"}]
        if any(g.get("conditionType") == NEG_CONDITION for g in template["spec"].get("readinessGates", [])):
            backends = set(self.route_weights())
            in_neg = [
                svc
                for (gv, plural, ns, svc), obj in self.objects.items()
                if plural == "services" and ns == namespace and svc in backends
                if selects(obj["spec"].get("selector"), labels)
            ]
            message = (
                f'Pod has become Healthy in NEG "k8s1-{in_neg[0]}-80" attached to BackendService '
                f'"gkegw1-{in_neg[0]}-80". Marking condition "{NEG_CONDITION}" to True.'
                if in_neg
                else f'Pod does not belong to any NEG. Marking condition "{NEG_CONDITION}" to True.'
            )
            conditions.append(
                {"type": NEG_CONDITION, "status": "True", "reason": "LoadBalancerNegReady", "message": message}
            )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"labels": labels},
            "spec": template["spec"],
            "status": {"phase": "Running", "conditions": conditions},
        }
        super().store(("v1", "pods", namespace, name), pod)
        self.timeline.append(("pod made", name))

    def _complete(self, namespace, job):
        name = job["metadata"]["name"]
        kind = next((k for k in self.job_logs if name.startswith(k)), None)
        job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        pod_name = f"{name}-run"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"labels": {"batch.kubernetes.io/job-name": name}},
            "spec": job["spec"]["template"]["spec"],
            "status": {"phase": "Succeeded"},
        }
        super().store(("v1", "pods", namespace, pod_name), pod)
        self.logs[(namespace, pod_name)] = self.job_logs.get(kind, "") if kind else ""
        self.timeline.append(("job", name))

    # --- what users reach -----------------------------------------------------------------------

    def route_weights(self, namespace="hello"):
        route = self.objects.get(("gateway.networking.k8s.io/v1", "httproutes", namespace, "hello"))
        if route is None:
            return {}
        return {
            b["name"]: b.get("weight", 1)
            for rule in route["spec"].get("rules", [])
            for b in rule.get("backendRefs", [])
        }

    def serving_pods(self, service, namespace="hello"):
        """The pods of ``service`` the load balancer sends requests to."""
        found = self.objects.get(("v1", "services", namespace, service))
        if found is None:
            return []
        pods = []
        for (_, plural, ns, name), pod in self.objects.items():
            if (
                plural != "pods"
                or ns != namespace
                or not selects(found["spec"].get("selector"), pod["metadata"]["labels"])
            ):
                continue
            conditions = {c["type"]: c for c in pod.get("status", {}).get("conditions", [])}
            gated = any(g.get("conditionType") == NEG_CONDITION for g in pod["spec"].get("readinessGates", []))
            healthy = conditions.get(NEG_CONDITION, {}).get("message", "").startswith("Pod has become Healthy")
            if conditions.get("Ready", {}).get("status") == "True" and (healthy or not gated):
                pods.append(name)
        return pods

    def serving_services(self, namespace="hello"):
        return {
            name
            for (_, plural, ns, name) in self.objects
            if plural == "services" and ns == namespace and self.serving_pods(name, namespace)
        }

    def answer(self):
        """(status, body) of one request through the load balancer, as it is routed now."""
        with self.lock:
            live = [name for name, weight in self.route_weights().items() if weight > 0]
            serving = self.serving_pods(live[0]) if len(live) == 1 else []
            if serving:
                pod = serving[0]
                image = self.objects[("v1", "pods", "hello", pod)]["spec"]["containers"][0]["image"]
                return 200, json.dumps({"message": "Hello, releasecheck! Happy birthday!", "served_by": image})
            return 502, "no healthy upstream"

    def close(self):
        self.balancer.close()
        super().close()


class LoadBalancer(HttpServer):
    """The Gateway's load balancer on loopback, over HTTPS with ``certificate`` when given; counts
    its answers by status."""

    def __init__(self, cluster, certificate=None):
        self.answers = Counter()
        self.cluster = cluster
        super().__init__(self.respond, certificate)

    def respond(self, _request):
        status, body = self.cluster.answer()
        self.answers[status] += 1
        return status, body.encode()
