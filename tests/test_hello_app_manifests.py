"""Policy over the service's rendered Kubernetes objects (roles/hello_app, k8s/hello/).

Both environments come from the run's one render of every environment (support.render: the
real playbooks/render.yml), every region of each (the service runs in every region: where the
database's primary is, and as a warm standby elsewhere), and every policy holds in each region.
Each policy is a function that returns the problems it finds, so that a later edit of a template
that loses a property fails here by name; the mutation tests at the end prove that every policy
can fail.
"""

import copy
import functools
import json
import os
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from support import REPO
from support.playbooks import ansible
from support.render import render

ENVIRONMENTS = ("staging", "production")
# Every region of each environment's inventory, as (environment, host).
REGIONS = (("staging", "europe-west1"), ("production", "europe-west1"), ("production", "europe-west4"))
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
SLOTS = ("blue", "green")


def load_objects(folder):
    objects = {}
    for path in sorted(Path(folder).rglob("*.yml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


@pytest.fixture(scope="module")
def rendered(rendered_root):
    """(env, host) -> the folder and objects of that region's service."""
    out = {}
    for env in ENVIRONMENTS:
        folders = sorted((rendered_root / env).glob("*/hello"))
        hosts = [host for e, host in REGIONS if e == env]
        assert [f.parent.name for f in folders] == hosts, f"{env}: the service renders in every region, found {folders}"
        for folder in folders:
            out[(env, folder.parent.name)] = {"folder": folder, "objects": load_objects(folder)}
    return out


@functools.cache
def hostvars(env, host=None):
    """A host's variables as the inventory resolves them; by default the primary region's."""
    result = ansible("ansible-inventory", "-i", f"inventories/{env}", "--list")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert sorted(data["gke_clusters"]["children"]) == ["dr_region", "primary_region"]
    regions = sorted(h for group in ("primary_region", "dr_region") for h in data.get(group, {}).get("hosts", []))
    assert regions == sorted(h for e, h in REGIONS if e == env), f"{env}: REGIONS is out of date"
    return data["_meta"]["hostvars"][host or data["primary_region"]["hosts"][0]]


# --- helpers over objects -------------------------------------------------------------------


def pod_templates(objects):
    """(name, pod spec, pod labels) of every Deployment and Job."""
    for (kind, name), doc in objects.items():
        if kind in ("Deployment", "Job"):
            template = doc["spec"]["template"]
            yield name, template["spec"], template["metadata"].get("labels", {})


def service_containers(objects):
    for name, spec, labels in pod_templates(objects):
        if labels.get("app.kubernetes.io/name") == "hello":
            for container in spec["containers"]:
                yield name, spec, container


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def seconds(value):
    match = re.fullmatch(r"(\d+)s", value)
    assert match, f"duration {value!r} is not in whole seconds"
    return int(match.group(1))


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


# --- the policies ---------------------------------------------------------------------------


def policy_slots(objects):
    problems = []
    for slot in SLOTS:
        deployment = objects.get(("Deployment", f"hello-{slot}"))
        if deployment is None:
            problems.append(f"Deployment hello-{slot} is missing")
            continue
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if selector.get("slot") != slot or labels.get("slot") != slot:
            problems.append(f"Deployment hello-{slot} must select and label its pods slot={slot}")
        if not selects(selector, labels):
            problems.append(f"Deployment hello-{slot}'s selector does not match its pods")
    return problems


def policy_services(objects):
    """Users move between slots by HTTPRoute hello's weights, never by a Service's selector: each
    slot has its own Service selecting only its pods, and no Service hello exists to switch."""
    problems = []
    if ("Service", "hello") in objects:
        problems.append("Service hello must not exist: a release switches HTTPRoute hello's weights, not a selector")
    preview = objects.get(("Service", "hello-preview"))
    route = objects.get(("HTTPRoute", "hello"))
    if not preview:
        problems.append("Service hello-preview is required")
    elif route:
        # The preview shows the idle slot: the one users do not reach.
        live = {b["name"] for rule in route["spec"]["rules"] for b in rule["backendRefs"] if b.get("weight", 1) > 0}
        if (
            preview["spec"]["selector"].get("slot") not in SLOTS
            or f"hello-{preview['spec']['selector']['slot']}" in live
        ):
            problems.append(f"Service hello-preview must select the idle slot, selects {preview['spec']['selector']}")
    services = [objects.get(("Service", f"hello-{slot}")) for slot in SLOTS]
    for slot, svc in zip(SLOTS, services, strict=True):
        if svc is None:
            problems.append(f"Service hello-{slot} is required")
            continue
        deployment = objects.get(("Deployment", f"hello-{slot}"))
        if svc["spec"]["selector"].get("slot") != slot:
            problems.append(f"Service hello-{slot} must select slot {slot}, selects {svc['spec']['selector']}")
        if deployment and not selects(svc["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"]):
            problems.append(f"Service hello-{slot} selects no pod of its slot")
    for svc in [*services, preview]:
        if svc and [p.get("targetPort") for p in svc["spec"]["ports"]] != ["http"]:
            problems.append(f"Service {svc['metadata']['name']} must target the pods' http port")
    return problems


def policy_entry_point(objects):
    """Gateway hello on GKE's external managed class; HTTPRoute hello sends the API's paths to both
    slot Services, weighted 100 (the live slot, blue in a first release's layout) and 0, so that
    both stay attached to the load balancer and health-checked (Gateway API v1.5.1, HTTPBackendRef
    .weight in the standard CRDs: "If weight is set to 0, no traffic should be forwarded for this
    entry"; an unset weight is 1); each slot Service has its HealthCheckPolicy on /readyz and
    GCPBackendPolicy, and the pods the readiness gate GKE's NEG controller feeds from the load
    balancer's health check (kubernetes/ingress-gce v1.41.1, pkg/neg/types/shared/types.go)."""
    problems = []
    gateway = objects.get(("Gateway", "hello"))
    route = objects.get(("HTTPRoute", "hello"))
    if not gateway or not route:
        return ["Gateway and HTTPRoute hello are required"]
    if gateway["spec"]["gatewayClassName"] not in (
        "gke-l7-global-external-managed",
        "gke-l7-regional-external-managed",
    ):
        problems.append(f"Gateway class {gateway['spec']['gatewayClassName']} is not a GKE external managed class")
    if [p["name"] for p in route["spec"]["parentRefs"]] != ["hello"]:
        problems.append("HTTPRoute hello must attach to Gateway hello")
    # Only the API's paths are public. A PathPrefix match takes whole path elements (Gateway API
    # v1.5.1, HTTPPathMatch in the standard CRDs: "the paths `/abc`, `/abc/`, and `/abc/def`
    # would all match the prefix `/abc`, but the path `/abcd` would not"), so /hello covers
    # /hello/<username> and nothing else; /healthz, /readyz and /metrics stay unrouted.
    matches = sorted(
        (match.get("path", {}).get("type"), match.get("path", {}).get("value"))
        for rule in route["spec"]["rules"]
        for match in rule.get("matches", [{}])
    )
    if matches != [("Exact", "/openapi.json"), ("PathPrefix", "/hello")]:
        problems.append(f"HTTPRoute hello must route only PathPrefix /hello and Exact /openapi.json, found {matches}")
    for rule in route["spec"]["rules"]:
        weights = {(b["name"], b.get("port")): b.get("weight", 1) for b in rule.get("backendRefs", [])}
        if weights != {("hello-blue", 80): 100, ("hello-green", 80): 0}:
            problems.append(
                f"HTTPRoute hello must send every user to one slot Service (weight 100) and keep the other "
                f"attached (weight 0), port 80, found {weights}"
            )
    problems += https_only(objects, gateway, route)
    for slot in SLOTS:
        health = objects.get(("HealthCheckPolicy", f"hello-{slot}"))
        backend = objects.get(("GCPBackendPolicy", f"hello-{slot}"))
        if not health or not backend:
            problems.append(f"HealthCheckPolicy and GCPBackendPolicy hello-{slot} are required")
            continue
        target = health["spec"]["targetRef"]
        http = health["spec"]["default"]["config"].get("httpHealthCheck", {})
        if (target["kind"], target["name"]) != ("Service", f"hello-{slot}") or http.get("requestPath") != "/readyz":
            problems.append(f"HealthCheckPolicy hello-{slot} must check /readyz of Service hello-{slot}'s pods")
        if (backend["spec"]["targetRef"]["kind"], backend["spec"]["targetRef"]["name"]) != ("Service", f"hello-{slot}"):
            problems.append(f"GCPBackendPolicy hello-{slot} must apply to Service hello-{slot}")
        gates = objects[("Deployment", f"hello-{slot}")]["spec"]["template"]["spec"].get("readinessGates", [])
        if {"conditionType": "cloud.google.com/load-balancer-neg-ready"} not in gates:
            problems.append(f"hello-{slot}'s pods need the load balancer's readiness gate")
    return problems


def https_only(objects, gateway, route):
    """HTTPS with the certificate map; plain HTTP only redirects. The API's route binds to the
    HTTPS listener by sectionName and adds HSTS with a ResponseHeaderModifier filter, which GKE's
    gke-l7-global-external-managed class implements ("GatewayClass capabilities",
    cloud.google.com/kubernetes-engine/docs/how-to/gatewayclass-capabilities, HTTPRoute filters);
    a GCPBackendPolicy has no field for response headers (k8s/gke-crds/networking.gke.io.yml)."""
    problems = []
    listeners = {(x["name"], x["protocol"], x["port"]) for x in gateway["spec"]["listeners"]}
    if listeners != {("http", "HTTP", 80), ("https", "HTTPS", 443)}:
        problems.append(f"Gateway hello must listen on HTTP 80 and HTTPS 443, found {sorted(listeners)}")
    if not gateway["metadata"].get("annotations", {}).get("networking.gke.io/certmap"):
        problems.append("Gateway hello must name its certificate map (networking.gke.io/certmap)")
    if [p.get("sectionName") for p in route["spec"]["parentRefs"]] != ["https"]:
        problems.append("HTTPRoute hello must bind to the HTTPS listener only (sectionName https)")
    hsts = [
        header["value"]
        for rule in route["spec"]["rules"]
        for f in rule.get("filters", [])
        if f["type"] == "ResponseHeaderModifier"
        for header in f["responseHeaderModifier"].get("set", [])
        if header["name"].lower() == "strict-transport-security"
    ]
    ages = [int(m.group(1)) for value in hsts for m in [re.match(r"max-age=(\d+)", value)] if m]
    if len(ages) != len(route["spec"]["rules"]) or min(ages, default=0) < 31536000:
        problems.append(f"every API answer must carry Strict-Transport-Security for a year or more, found {hsts}")
    redirect = objects.get(("HTTPRoute", "hello-https-redirect"))
    if not redirect:
        return [*problems, "HTTPRoute hello-https-redirect is required"]
    if [(p["name"], p.get("sectionName")) for p in redirect["spec"]["parentRefs"]] != [("hello", "http")]:
        problems.append("HTTPRoute hello-https-redirect must bind to the HTTP listener only")
    for rule in redirect["spec"]["rules"]:
        filters = [(f["type"], f.get("requestRedirect")) for f in rule.get("filters", [])]
        if (
            rule.get("backendRefs")
            or rule.get("matches")
            or filters != [("RequestRedirect", {"scheme": "https", "statusCode": 301})]
        ):
            problems.append(f"plain HTTP must only answer a 301 redirect to HTTPS, found {rule}")
    return problems


def policy_autoscaling_and_disruption(objects, zones):
    problems = []
    for slot in SLOTS:
        hpa = objects.get(("HorizontalPodAutoscaler", f"hello-{slot}"))
        pdb = objects.get(("PodDisruptionBudget", f"hello-{slot}"))
        deployment = objects.get(("Deployment", f"hello-{slot}"))
        if not hpa or not pdb or not deployment:
            problems.append(f"slot {slot} needs its HorizontalPodAutoscaler and PodDisruptionBudget")
            continue
        if hpa["spec"]["scaleTargetRef"]["name"] != f"hello-{slot}":
            problems.append(f"HPA hello-{slot} scales another Deployment")
        if not zones <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]:
            problems.append(f"HPA hello-{slot} must keep at least one pod per zone ({zones})")
        if (
            not selects(pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"])
            or pdb["spec"]["selector"]["matchLabels"].get("slot") != slot
        ):
            problems.append(f"PDB hello-{slot} must select exactly the slot's pods")
        if pdb["spec"].get("maxUnavailable") != 1:
            problems.append(f"PDB hello-{slot} must allow one disruption at a time (maxUnavailable: 1)")
    return problems


def policy_zone_spread(objects):
    problems = []
    for slot in SLOTS:
        spec = objects[("Deployment", f"hello-{slot}")]["spec"]["template"]
        zone = [
            c
            for c in spec["spec"].get("topologySpreadConstraints", [])
            if c["topologyKey"] == "topology.kubernetes.io/zone"
        ]
        if not zone or zone[0]["whenUnsatisfiable"] != "DoNotSchedule" or zone[0]["maxSkew"] != 1:
            problems.append(f"hello-{slot} must spread its pods evenly over zones (DoNotSchedule, maxSkew 1)")
        elif not selects(zone[0]["labelSelector"]["matchLabels"], spec["metadata"]["labels"]):
            problems.append(f"hello-{slot}'s zone spread does not select its own pods")
    return problems


def policy_service_account(objects):
    problems = []
    account = objects.get(("ServiceAccount", "hello"))
    if not account or account.get("automountServiceAccountToken") is not False:
        problems.append("ServiceAccount hello must exist with automountServiceAccountToken: false")
    for name, spec, labels in pod_templates(objects):
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: pods must not mount a service account token")
        if labels.get("app.kubernetes.io/name") == "hello" and spec.get("serviceAccountName") != "hello":
            problems.append(f"{name}: the service's pods run as ServiceAccount hello")
    return problems


def policy_security_context(objects):
    problems = []
    for name, spec, _ in pod_templates(objects):
        pod = spec.get("securityContext", {})
        if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: pod seccompProfile must be RuntimeDefault")
        for container in spec["containers"]:
            sc = container.get("securityContext", {})
            where = f"{name}/{container['name']}"
            if not (sc.get("runAsNonRoot") or pod.get("runAsNonRoot")):
                problems.append(f"{where}: must run as non-root")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem must be read-only")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: privilege escalation must be off")
            if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
                problems.append(f"{where}: must drop all capabilities and add none")
            if sc.get("privileged"):
                problems.append(f"{where}: must not be privileged")
    return problems


def policy_resources(objects):
    problems = []
    for name, spec, _ in pod_templates(objects):
        for container in spec["containers"]:
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                if set(resources.get(kind, {})) != {"cpu", "memory"}:
                    problems.append(f"{name}/{container['name']}: {kind} of cpu and memory are required")
    return problems


def policy_probes_and_shutdown(objects):
    problems = []
    for slot in SLOTS:
        spec = objects[("Deployment", f"hello-{slot}")]["spec"]["template"]["spec"]
        container = spec["containers"][0]
        if container.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
            problems.append(f"hello-{slot}: liveness must be GET /healthz")
        if container.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            problems.append(f"hello-{slot}: readiness must be GET /readyz")
        pre_stop = container.get("lifecycle", {}).get("preStop", {})
        if set(pre_stop) != {"sleep"}:
            problems.append(f"hello-{slot}: preStop must be the native sleep action")
            continue
        env = env_of(container)
        sleep = pre_stop["sleep"]["seconds"]
        drain = seconds(env["DRAIN_PERIOD"]["value"])
        shutdown = seconds(env["SHUTDOWN_TIMEOUT"]["value"])
        if spec["terminationGracePeriodSeconds"] <= sleep + drain + shutdown:
            problems.append(
                f"hello-{slot}: terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} "
                f"must exceed preStop sleep + drain + shutdown ({sleep} + {drain} + {shutdown})"
            )
        policy = objects.get(("GCPBackendPolicy", "hello"))
        if policy and policy["spec"]["default"]["connectionDraining"]["drainingTimeoutSec"] > sleep:
            problems.append("the load balancer's draining must end within the preStop sleep")
    return problems


# Failed probes in a row a pod survives without leaving the Service or the load balancer: a
# lost probe or a slow answer, twice. /readyz itself fails only while starting and draining.
TOLERATED_FAILURES = 2


def policy_blip_tolerance(objects):
    """Probes and the load balancer's health check tolerate a blip, yet take a pod that cannot
    answer out of traffic before the kubelet restarts it.

    The semantics, as upstream states them: a probe's failureThreshold is "Minimum consecutive
    failures for the probe to be considered failed after having succeeded" (Kubernetes 1.37
    OpenAPI, io.k8s.api.core.v1.Probe, as kubernetes-validate 1.37.0 ships it; checked by
    test_the_probe_semantics_relied_on_are_upstreams). A HealthCheckPolicy's spec.default is a
    Compute Engine health check (cloud.google.com/kubernetes-engine/docs/how-to/
    configure-gateway-resources, "Configure health check"), whose API (Compute Engine v1
    healthChecks, cloud.google.com/compute/docs/reference/rest/v1/healthChecks) says:
    unhealthyThreshold "A so-far healthy instance will be marked unhealthy after this many
    consecutive failures", healthyThreshold the same for successes, and "It is invalid for
    timeoutSec to have greater value than checkIntervalSec". A field left out takes the default
    those sources give."""
    problems = []
    # Seconds of failed liveness probes after which the kubelet restarts a slot's pod.
    restart_after = {}
    for slot in SLOTS:
        container = objects[("Deployment", f"hello-{slot}")]["spec"]["template"]["spec"]["containers"][0]
        readiness, liveness = container.get("readinessProbe", {}), container.get("livenessProbe", {})
        if not readiness or not liveness:
            problems.append(f"hello-{slot}: readiness and liveness probes are required")
            continue
        restart_after[slot] = liveness.get("failureThreshold", 3) * liveness.get("periodSeconds", 10)
        failures = readiness.get("failureThreshold", 3)
        if failures <= TOLERATED_FAILURES:
            problems.append(
                f"hello-{slot}: readiness failureThreshold {failures} takes a pod out on "
                f"{failures} failed probe(s); at least {TOLERATED_FAILURES + 1}"
            )
        if failures * readiness.get("periodSeconds", 10) >= restart_after[slot]:
            problems.append(f"hello-{slot}: an unanswering pod must be unready before liveness restarts it")
        if readiness.get("successThreshold", 1) != 1:
            problems.append(f"hello-{slot}: a pod must be ready again after one good answer")
    checks = [doc for (kind, _), doc in objects.items() if kind == "HealthCheckPolicy"]
    if not checks:
        problems.append("a HealthCheckPolicy is required")
    for doc in checks:
        name, check = doc["metadata"]["name"], doc["spec"]["default"]
        interval, timeout = check.get("checkIntervalSec", 5), check.get("timeoutSec", 5)
        unhealthy = check.get("unhealthyThreshold", 2)
        if timeout > interval:
            problems.append(f"HealthCheckPolicy {name}: timeoutSec {timeout} over checkIntervalSec {interval}")
        if unhealthy <= TOLERATED_FAILURES:
            problems.append(
                f"HealthCheckPolicy {name}: unhealthyThreshold {unhealthy} marks a pod unhealthy on "
                f"{unhealthy} failed check(s); at least {TOLERATED_FAILURES + 1}"
            )
        for slot, restart in restart_after.items():
            if unhealthy * interval >= restart:
                problems.append(
                    f"HealthCheckPolicy {name}: an unanswering pod of hello-{slot} must leave the load "
                    "balancer before liveness restarts it"
                )
        if check.get("healthyThreshold", 2) != 1:
            problems.append(f"HealthCheckPolicy {name}: a new slot must count as healthy after one good answer")
    return problems


def policy_database_url(objects, secret, key):
    problems = []
    for name, _, container in service_containers(objects):
        url = env_of(container).get("DATABASE_URL")
        ref = (url or {}).get("valueFrom", {}).get("secretKeyRef", {})
        if (ref.get("name"), ref.get("key")) != (secret, key) or "value" in (url or {}):
            problems.append(f"{name}: DATABASE_URL must come from Secret {secret} key {key}, found {url}")
    if any(kind == "Secret" for kind, _ in objects):
        problems.append("no Secret may be rendered into the build folder")
    return problems


def policy_images(objects):
    problems = []
    for name, _, container in service_containers(objects):
        if not DIGEST.search(container["image"]):
            problems.append(f"{name}: the service's image must be pinned by digest, found {container['image']}")
    return problems


GMP_COLLECTORS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gmp-system"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "collector"}},
}


def policy_network(objects, db_namespace, lb_ranges, remote_database_cidrs=()):
    """remote_database_cidrs: the other regions' ranges, where the primary may be (DR region only)."""
    problems = []
    policy = objects.get(("NetworkPolicy", "hello"))
    if not policy:
        return ["NetworkPolicy hello is required"]
    spec = policy["spec"]
    if sorted(spec.get("policyTypes", [])) != ["Egress", "Ingress"]:
        problems.append("the NetworkPolicy must restrict both ingress and egress")
    for name, _, labels in pod_templates(objects):
        is_service = labels.get("app.kubernetes.io/name") == "hello"
        if selects(spec["podSelector"]["matchLabels"], labels) != is_service:
            problems.append(f"{name}: the NetworkPolicy must cover exactly the service's pods")
    # The one peer from another namespace: Managed Service for Prometheus' collectors, which
    # scrape /metrics (k8s/hello/podmonitoring.yml.j2).
    sources = [peer for rule in spec["ingress"] for peer in rule["from"] if peer != GMP_COLLECTORS]
    cidrs = sorted(p["ipBlock"]["cidr"] for p in sources if "ipBlock" in p)
    pods = [p["podSelector"]["matchLabels"] for p in sources if "podSelector" in p]
    if cidrs != sorted(lb_ranges) or any("namespaceSelector" in p for p in sources):
        problems.append(f"ingress must come only from the load balancer's ranges {lb_ranges} and pods of the namespace")
    if {"app.kubernetes.io/name": "hello-release-check"} not in pods:
        problems.append("the release checks must be allowed to call the service")
    for rule in spec["ingress"]:
        wanted = "metrics" if GMP_COLLECTORS in rule["from"] else "http"
        if any(port["port"] != wanted for port in rule["ports"]):
            problems.append(f"ingress from {rule['from']} must be allowed to the {wanted} port only")
    allowed = set()
    for rule in spec["egress"]:
        for peer in rule["to"]:
            namespace = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
            pods_ = peer.get("podSelector", {}).get("matchLabels", {})
            block = peer.get("ipBlock")
            for port in rule["ports"]:
                allowed.add(
                    (
                        ("ipBlock", block["cidr"], tuple(block.get("except", [])))
                        if block
                        else (namespace, tuple(sorted(pods_.items())))
                    )
                    + (port["port"], port["protocol"])
                )
    database = (db_namespace, (("cnpg.io/cluster", "hello-db"),), 5432, "TCP")
    dns = {("kube-system", (("k8s-app", "kube-dns"),), 53, proto) for proto in ("UDP", "TCP")}
    remote = {("ipBlock", cidr, (), 5432, "TCP") for cidr in remote_database_cidrs}
    if allowed != {database} | dns | remote:
        problems.append(
            f"egress must reach only the database pods on 5432, DNS and the other regions' database "
            f"load balancers {sorted(remote_database_cidrs)} on 5432, found {sorted(allowed, key=str)}"
        )
    return problems


def remote_database_cidrs(vars_):
    """The other regions' ranges the inventory gives, with a DR region; none without."""
    if not vars_["gcp_dr_region"]:
        return []
    return [cidr for region, cidr in vars_["hello_app_database_region_cidrs"].items() if region != vars_["gke_region"]]


def policy_release_jobs(objects):
    problems = []
    jobs = {
        doc["metadata"]["name"].split("-")[1]
        + (
            "-" + doc["metadata"]["name"].split("-")[2] if doc["metadata"]["name"].startswith("hello-check") else ""
        ): doc
        for (kind, _), doc in objects.items()
        if kind == "Job"
    }
    migrate, pre, post = jobs.get("migrate"), jobs.get("check-pre"), jobs.get("check-post")
    if not (migrate and pre and post):
        return [f"the migration, pre- and post-promotion Jobs are required, found {sorted(jobs)}"]
    if migrate["spec"]["template"]["spec"]["containers"][0].get("args") != ["migrate"]:
        problems.append("the migration Job must run `hello migrate`")
    targets = {}
    # The post-promotion Job checks inside the cluster the slot just made live (blue in a first
    # release's layout); the role checks through the Gateway meanwhile (tasks/gateway_probe.yml).
    for job, service in ((pre, "hello-preview"), (post, "hello-blue")):
        pod = job["spec"]["template"]
        container = pod["spec"]["containers"][0]
        targets[service] = env_of(container)["TARGET"]["value"]
        if not targets[service].startswith(f"http://{service}."):
            problems.append(f"Job {job['metadata']['name']} must call Service {service}, calls {targets[service]}")
        if pod["metadata"]["labels"].get("app.kubernetes.io/name") != "hello-release-check":
            problems.append(f"Job {job['metadata']['name']}'s pods must be labelled as release checks")
        volumes = [v.get("configMap", {}).get("name") for v in pod["spec"]["volumes"]]
        if "hello-release-check" not in volumes:
            problems.append(f"Job {job['metadata']['name']} must run the script of ConfigMap hello-release-check")
        if job["spec"].get("backoffLimit") != 0:
            problems.append(f"Job {job['metadata']['name']} must not retry a failed check")
    if "WINDOW" not in env_of(post["spec"]["template"]["spec"]["containers"][0]):
        problems.append("the post-promotion check needs its window")
    return problems


def policies(objects, vars_):
    zones = len(vars_["gke_zones"])
    return {
        "slots": policy_slots(objects),
        "services": policy_services(objects),
        "entry point": policy_entry_point(objects),
        "autoscaling and disruption": policy_autoscaling_and_disruption(
            objects, zones if vars_["hello_environment"] == "production" else 1
        ),
        "zone spread": policy_zone_spread(objects),
        "service account": policy_service_account(objects),
        "security context": policy_security_context(objects),
        "resources": policy_resources(objects),
        "probes and shutdown": policy_probes_and_shutdown(objects),
        "blip tolerance": policy_blip_tolerance(objects),
        # Through PgBouncer where it runs (hello_db_pooler; roles/postgres writes the key then).
        "database url": policy_database_url(
            objects, "hello-db-app", "pooler_uri" if vars_["hello_db_pooler"] else "uri"
        ),
        "images": policy_images(objects),
        "network": policy_network(
            objects, vars_["hello_db_namespace"], ["35.191.0.0/16", "130.211.0.0/22"], remote_database_cidrs(vars_)
        ),
        "release jobs": policy_release_jobs(objects),
    }


def test_the_probe_semantics_relied_on_are_upstreams():
    """The Kubernetes rules the probe thresholds and their comments rely on, read from the
    OpenAPI schemas of Kubernetes 1.37 that kubernetes-validate 1.37.0 (requirements.txt) ships:
    failureThreshold counts consecutive failures and defaults to 3, periodSeconds defaults to
    10, and an endpoint is ready only when serving and not terminating (so a stopping pod leaves
    the Service whatever its readiness probe answers)."""
    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / "v1.37.0-local"
    probe = json.loads((schemas / "probe-v1.json").read_text())["properties"]
    assert probe["failureThreshold"]["description"].startswith(
        "Minimum consecutive failures for the probe to be considered failed after having succeeded. Defaults to 3."
    )
    assert "Default to 10 seconds" in probe["periodSeconds"]["description"]
    assert "Defaults to 1." in probe["successThreshold"]["description"]
    conditions = json.loads((schemas / "endpointconditions-discovery-v1.json").read_text())["properties"]
    assert "should be marked ready if it is serving and not terminating" in conditions["ready"]["description"]


@pytest.mark.parametrize(("env", "host"), REGIONS)
def test_every_policy_holds(ansible, rendered, env, host):
    results = policies(rendered[(env, host)]["objects"], hostvars(env, host))
    failing = {name: problems for name, problems in results.items() if problems}
    assert not failing, failing
    assert len(results) == 14


def remote_egress(objects):
    egress = objects[("NetworkPolicy", "hello")]["spec"]["egress"]
    return [rule for rule in egress if any("ipBlock" in peer for peer in rule["to"])]


@pytest.mark.parametrize(
    ("host", "other_range"), [("europe-west1", "10.164.0.0/20"), ("europe-west4", "10.132.0.0/20")]
)
def test_each_production_region_reaches_the_primary_in_the_other_region_only(ansible, rendered, host, other_range):
    """With a DR region the service may reach the other region's database load balancer on 5432 only.

    europe-west1 (the inventory's primary) reaches europe-west4's node subnetwork, and the DR
    region europe-west4, whose warm standby uses the primary in europe-west1, reaches
    europe-west1's and not its own.
    """
    remote = remote_egress(rendered[("production", host)]["objects"])
    assert remote == [{"to": [{"ipBlock": {"cidr": other_range}}], "ports": [{"port": 5432, "protocol": "TCP"}]}]
    own_range = hostvars("production", host)["hello_app_database_region_cidrs"][host]
    assert own_range != other_range
    assert own_range not in json.dumps(rendered[("production", host)]["objects"][("NetworkPolicy", "hello")])


def test_staging_without_a_dr_region_reaches_no_other_region(rendered):
    assert not remote_egress(rendered[("staging", "europe-west1")]["objects"])


def test_the_regions_differ_only_in_the_egress_to_the_other_region(rendered):
    west1, west4 = (rendered[("production", host)]["objects"] for host in ("europe-west1", "europe-west4"))
    assert west1.keys() == west4.keys()
    differing = sorted(key for key in west1 if west1[key] != west4[key])
    # The SLO alerts' summaries name their cluster and region.
    assert differing == [("NetworkPolicy", "hello"), ("Rules", "hello-slo")], differing


def test_a_dr_region_without_the_other_regions_ranges_is_refused(ansible, tmp_path):
    result = ansible(
        "ansible-playbook",
        "-i",
        "inventories/production",
        "playbooks/render.yml",
        "-e",
        f"hello_k8s_build_dir={tmp_path}/{{{{ inventory_hostname }}}}",
        "-e",
        json.dumps(
            {"hello_app_database_region_cidrs": {"europe-west1": "10.132.0.0/20", "europe-west4": "10.164.0.0/33"}}
        ),
    )
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "Set hello_app_database_region_cidrs in" in output
    assert "10.164.0.0/33" in output


# (policy, how a later edit could break it)
def _drop_readiness(o):
    del o[("Deployment", "hello-green")]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]


def _database_url_inline(o):
    env = o[("Deployment", "hello-blue")]["spec"]["template"]["spec"]["containers"][0]["env"]
    env[0] = {"name": "DATABASE_URL", "value": "postgres://app:secret@hello-db-rw:5432/app"}


def _short_grace(o):
    o[("Deployment", "hello-blue")]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 20


def _egress_anywhere(o):
    o[("NetworkPolicy", "hello")]["spec"]["egress"].append(
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
    )


def _no_way_to_the_remote_primary(o):
    egress = o[("NetworkPolicy", "hello")]["spec"]["egress"]
    egress[:] = [rule for rule in egress if not any("ipBlock" in peer for peer in rule["to"])]


def _remote_primary_on_any_port(o):
    for rule in o[("NetworkPolicy", "hello")]["spec"]["egress"]:
        if any("ipBlock" in peer for peer in rule["to"]):
            rule["ports"] = [{"port": 1, "endPort": 65535, "protocol": "TCP"}]


def _writable_root(o):
    o[("Job", next(n for k, n in o if k == "Job" and "check-pre" in n))]["spec"]["template"]["spec"]["containers"][0][
        "securityContext"
    ]["readOnlyRootFilesystem"] = False


def _image_by_tag(o):
    o[("Deployment", "hello-green")]["spec"]["template"]["spec"]["containers"][0]["image"] = "hello:latest"


def _both_services_on_blue(o):
    o[("Service", "hello-preview")]["spec"]["selector"]["slot"] = "blue"


def _no_zone_spread(o):
    o[("Deployment", "hello-blue")]["spec"]["template"]["spec"]["topologySpreadConstraints"].pop(0)


def _token_mounted(o):
    o[("ServiceAccount", "hello")]["automountServiceAccountToken"] = True


def _no_limits(o):
    del o[("Deployment", "hello-green")]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def _health_check_on_root(o):
    o[("HealthCheckPolicy", "hello-green")]["spec"]["default"]["config"]["httpHealthCheck"]["requestPath"] = "/"


def _switch_by_selector(o):
    o[("Service", "hello")] = copy.deepcopy(o[("Service", "hello-blue")])
    o[("Service", "hello")]["metadata"]["name"] = "hello"


def _slot_missing_from_the_route(o):
    o[("HTTPRoute", "hello")]["spec"]["rules"][0]["backendRefs"].pop(1)


def _route_splitting_users(o):
    for backend in o[("HTTPRoute", "hello")]["spec"]["rules"][0]["backendRefs"]:
        backend["weight"] = 50


def _idle_weight_unset(o):
    del o[("HTTPRoute", "hello")]["spec"]["rules"][0]["backendRefs"][1]["weight"]


def _no_readiness_gate(o):
    del o[("Deployment", "hello-green")]["spec"]["template"]["spec"]["readinessGates"]


def _slot_service_selecting_both(o):
    del o[("Service", "hello-green")]["spec"]["selector"]["slot"]


def _no_health_check_for_a_slot(o):
    del o[("HealthCheckPolicy", "hello-green")]


def _route_everything(o):
    o[("HTTPRoute", "hello")]["spec"]["rules"][0]["matches"].append({"path": {"type": "PathPrefix", "value": "/"}})


def _api_over_plain_http(o):
    o[("HTTPRoute", "hello")]["spec"]["parentRefs"][0]["sectionName"] = "http"


def _redirect_that_serves(o):
    o[("HTTPRoute", "hello-https-redirect")]["spec"]["rules"][0]["backendRefs"] = [{"name": "hello", "port": 80}]


def _no_hsts(o):
    del o[("HTTPRoute", "hello")]["spec"]["rules"][0]["filters"]


def _route_without_matches(o):
    del o[("HTTPRoute", "hello")]["spec"]["rules"][0]["matches"]


def _pdb_on_both_slots(o):
    del o[("PodDisruptionBudget", "hello-blue")]["spec"]["selector"]["matchLabels"]["slot"]


def _readiness_out_on_one_failure(o):
    probe = o[("Deployment", "hello-green")]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["failureThreshold"] = 1


def _readiness_slower_than_liveness(o):
    probe = o[("Deployment", "hello-blue")]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["periodSeconds"] = 10
    probe["failureThreshold"] = 3


def _unhealthy_on_two_failures(o):
    o[("HealthCheckPolicy", "hello-blue")]["spec"]["default"]["unhealthyThreshold"] = 2


def _health_check_timeout_over_interval(o):
    o[("HealthCheckPolicy", "hello-blue")]["spec"]["default"]["timeoutSec"] = 10


def _health_check_slower_than_liveness(o):
    o[("HealthCheckPolicy", "hello-blue")]["spec"]["default"]["checkIntervalSec"] = 10


def _new_slot_healthy_after_two_checks(o):
    del o[("HealthCheckPolicy", "hello-blue")]["spec"]["default"]["healthyThreshold"]


def _post_check_on_the_old_slot(o):
    job = o[("Job", next(n for k, n in o if k == "Job" and "check-post" in n))]
    env_of(job["spec"]["template"]["spec"]["containers"][0])["TARGET"]["value"] = "http://hello-green.hello.svc"


def _post_check_retried(o):
    o[("Job", next(n for k, n in o if k == "Job" and "check-post" in n))]["spec"]["backoffLimit"] = 3


MUTATIONS = [
    ("probes and shutdown", _drop_readiness),
    ("database url", _database_url_inline),
    ("probes and shutdown", _short_grace),
    ("network", _egress_anywhere),
    ("network", _no_way_to_the_remote_primary),
    ("network", _remote_primary_on_any_port),
    ("security context", _writable_root),
    ("images", _image_by_tag),
    ("services", _both_services_on_blue),
    ("zone spread", _no_zone_spread),
    ("service account", _token_mounted),
    ("resources", _no_limits),
    ("entry point", _health_check_on_root),
    ("services", _switch_by_selector),
    ("services", _slot_service_selecting_both),
    ("entry point", _slot_missing_from_the_route),
    ("entry point", _route_splitting_users),
    ("entry point", _idle_weight_unset),
    ("entry point", _no_readiness_gate),
    ("entry point", _no_health_check_for_a_slot),
    ("entry point", _route_everything),
    ("entry point", _route_without_matches),
    ("entry point", _api_over_plain_http),
    ("entry point", _redirect_that_serves),
    ("entry point", _no_hsts),
    ("autoscaling and disruption", _pdb_on_both_slots),
    ("release jobs", _post_check_retried),
    ("release jobs", _post_check_on_the_old_slot),
    ("blip tolerance", _readiness_out_on_one_failure),
    ("blip tolerance", _readiness_slower_than_liveness),
    ("blip tolerance", _unhealthy_on_two_failures),
    ("blip tolerance", _health_check_timeout_over_interval),
    ("blip tolerance", _health_check_slower_than_liveness),
    ("blip tolerance", _new_slot_healthy_after_two_checks),
]


@pytest.mark.parametrize(("policy", "mutate"), MUTATIONS, ids=[m.__name__.strip("_") for _, m in MUTATIONS])
def test_a_broken_object_is_caught(ansible, rendered, policy, mutate):
    objects = copy.deepcopy(rendered[("production", "europe-west1")]["objects"])
    mutate(objects)
    assert policies(objects, hostvars("production"))[policy], f"policy {policy!r} missed {mutate.__name__}"


@pytest.mark.slow  # a whole playbook run through many tasks
def test_off_gke_and_with_a_separate_database_namespace(ansible, tmp_path):
    """Off GKE (kind: another Gateway implementation) the Gateway and the weighted route render, but
    not GKE's policies nor its readiness gate, which no controller would set there (a pod would
    never be Ready); a database elsewhere moves the egress rule with it."""
    overrides = {"hello_app_gateway_class": "envoy", "hello_db_namespace": "database", "hello_app_namespace": "hello"}
    folder = render(tmp_path, "staging", json.dumps(overrides))
    objects = load_objects(next(folder.glob("*/hello")))
    assert {key for key in objects if key[0] in ("Gateway", "HTTPRoute")} == {
        ("Gateway", "hello"),
        ("HTTPRoute", "hello"),
        ("HTTPRoute", "hello-https-redirect"),
    }
    assert objects[("Gateway", "hello")]["spec"]["gatewayClassName"] == "envoy"
    assert not [key for key in objects if key[0] in ("HealthCheckPolicy", "GCPBackendPolicy")]
    for slot in SLOTS:
        assert "readinessGates" not in objects[("Deployment", f"hello-{slot}")]["spec"]["template"]["spec"]
    assert not policy_services(objects)
    assert not policy_network(objects, "database", ["35.191.0.0/16", "130.211.0.0/22"])
    assert policy_network(objects, "hello", ["35.191.0.0/16", "130.211.0.0/22"])
    assert objects[("Deployment", "hello-blue")]["metadata"]["namespace"] == "hello"


def test_the_post_promotion_check_goes_through_the_gateway():
    """After the switch, users' path is checked: the post-promotion block runs the probe through
    Gateway hello's address with the route's host name (tasks/gateway_probe.yml) beside the
    in-cluster Job, and any failure there switches users back (the block's rescue).
    tests/test_release_switch.py runs it; this keeps the wiring from being dropped unnoticed."""
    tasks = yaml.safe_load((REPO / "roles/hello_app/tasks/release.yml").read_text())
    (check,) = [t for t in tasks if t["name"].startswith("Check what users reach")]
    steps = [step for inner in check["block"] for step in inner.get("block", [])]
    probes = [s for s in steps if s.get("ansible.builtin.include_tasks") == "gateway_probe.yml"]
    assert probes and probes[0].get("when") == "not ansible_check_mode"
    assert any(s.get("ansible.builtin.include_tasks") == "switch.yml" for s in check["rescue"])
    probe_tasks = yaml.safe_load((REPO / "roles/hello_app/tasks/gateway_probe.yml").read_text())
    assert probe_tasks[0]["ansible.builtin.include_tasks"] == "gateway_address.yml"
    (probe,) = [t["hello_app_probe"] for t in probe_tasks if "hello_app_probe" in t]
    assert "__hello_app_gateway_address" in probe["address"]
    assert "hello_app_hostnames" in probe["hostname"]
    assert probe["scheme"] == "{{ 'https' if hello_app_gateway_certificate_map else 'http' }}"


def test_the_weight_rules_relied_on_are_the_gateway_apis():
    """The switch relies on two rules of HTTPBackendRef.weight, read from the pinned Gateway API
    v1.5.1 standard CRDs (HELLO_CRD_DIR): weight 0 forwards nothing (the idle slot stays a backend
    without traffic) and an unset weight is 1 (so the slot logic counts it as live)."""
    crds = yaml.safe_load_all((Path(os.environ["HELLO_CRD_DIR"]) / "gateway-api-1.5.1-standard.yaml").read_text())
    (route,) = [c for c in crds if c and c["metadata"]["name"] == "httproutes.gateway.networking.k8s.io"]
    (v1,) = [v for v in route["spec"]["versions"] if v["name"] == "v1"]
    rule = v1["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["rules"]["items"]
    weight = rule["properties"]["backendRefs"]["items"]["properties"]["weight"]
    text = " ".join(weight["description"].split())
    assert "If weight is set to 0, no traffic should be forwarded for this entry." in text
    assert "If unspecified, weight defaults to 1." in text
    assert weight.get("default") == 1 and weight["minimum"] == 0
