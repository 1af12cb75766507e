"""What every environment's rendered objects promise about encryption and reachability.

Read from the shared render of every environment (support.render): each namespace of the
platform denies all traffic by default and its components' NetworkPolicies let through only the
flows they need (checked by evaluating the policies as Kubernetes does: a pod that a policy
selects for a direction is isolated in it, and a connection passes when one rule's peers and
ports admit it, on both ends); the database's clients connect with TLS and verify the server
against CloudNativePG's CA; and no pod of the platform mounts a service account token.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import yaml

from support import REPO
from support.render import ENVIRONMENTS

SHARED = {}
for path in sorted((REPO / "group_vars" / "all").glob("*.yml")):
    SHARED.update(yaml.safe_load(path.read_text()) or {})
DB_NAMESPACE = SHARED["hello_db_namespace"]
DB_CLUSTER = SHARED["hello_db_cluster_name"]
OPERATOR_NAMESPACE = SHARED["hello_db_operator_namespace"]
CA_DIRECTORY = SHARED["hello_db_ca_directory"]
APP_SECRET = f"{DB_CLUSTER}-app"
CA_SECRET = f"{DB_CLUSTER}-primary-ca"
PRIMARY_ALIAS = f"{DB_CLUSTER}-primary"
DRILL_DEFAULTS = yaml.safe_load((REPO / "roles/restore_drill/defaults/main.yml").read_text())
DRILL_CLUSTER = DRILL_DEFAULTS["restore_drill_cluster_name"]
DRILL_NAMESPACE = DRILL_DEFAULTS["restore_drill_namespace"]

# CloudNativePG 1.30.0 keeps a Cluster's certificate authority in the Secret <cluster>-ca, under
# the key ca.crt (api/v1/cluster_types.go DefaultServerCaSecretSuffix, pkg/certs/certs.go
# CACertKey), and signs with it the server certificate, whose names are the Cluster's services
# plus spec.certificates.serverAltDNSNames (api/v1/cluster_funcs.go GetClusterAltDNSNames).
CNPG_CA_SUFFIX = "-ca"
CNPG_CA_KEY = "ca.crt"

# The GKE metadata server, which Workload Identity's tokens come from, as "About Workload Identity
# Federation for GKE" (cloud.google.com/kubernetes-engine/docs/concepts/workload-identity,
# Restrictions) names it for clusters with network policies: 169.254.169.252/32 on port 988, and
# 169.254.169.254/32 on port 80 with GKE Dataplane V2.
METADATA_SERVER = [("169.254.169.252", 988), ("169.254.169.254", 80)]

POD_KINDS = {"Deployment", "Job", "CronJob", "Pod", "StatefulSet", "DaemonSet"}


@dataclass
class Pod:
    """A pod the objects create: its namespace, labels and named ports."""

    name: str
    namespace: str
    labels: dict
    spec: dict = field(default_factory=dict)

    def port_number(self, port: int | str) -> int | None:
        if isinstance(port, int):
            return port
        for container in self.spec.get("containers", []):
            for declared in container.get("ports", []):
                if declared.get("name") == port:
                    return declared["containerPort"]
        return None


def pod_templates(objects: list[dict]) -> Iterator[Pod]:
    for o in objects:
        if o["kind"] not in POD_KINDS:
            continue
        template = o["spec"]
        if o["kind"] == "CronJob":
            template = template["jobTemplate"]["spec"]
        template = o if o["kind"] == "Pod" else template["template"]
        yield Pod(
            f"{o['kind']} {o['metadata']['name']}",
            o["metadata"]["namespace"],
            template["metadata"].get("labels", {}),
            template["spec"],
        )


def selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


class Network:
    """The NetworkPolicies and Namespaces of one region, evaluated as Kubernetes does."""

    def __init__(self, objects: list[dict]):
        self.policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
        self.namespace_labels = {
            name: {**o["metadata"].get("labels", {}), "kubernetes.io/metadata.name": name}
            for o in objects
            if o["kind"] == "Namespace"
            for name in [o["metadata"]["name"]]
        }

    def _labels_of(self, namespace: str) -> dict:
        return self.namespace_labels.get(namespace, {"kubernetes.io/metadata.name": namespace})

    def _applying(self, pod: Pod, direction: str) -> list[dict]:
        return [
            p
            for p in self.policies
            if p["metadata"]["namespace"] == pod.namespace
            and direction in p["spec"].get("policyTypes", ["Ingress"])
            and selects(p["spec"]["podSelector"], pod.labels)
        ]

    def _peer_matches(self, peer: dict, policy_namespace: str, other: Pod | str) -> bool:
        if isinstance(other, str):
            block = peer.get("ipBlock")
            if not block:
                return False
            address = ipaddress.ip_address(other)
            return address in ipaddress.ip_network(block["cidr"]) and not any(
                address in ipaddress.ip_network(excepted) for excepted in block.get("except", [])
            )
        if "ipBlock" in peer:
            return False
        if "namespaceSelector" in peer:
            in_namespace = selects(peer["namespaceSelector"], self._labels_of(other.namespace))
        else:
            in_namespace = other.namespace == policy_namespace
        return in_namespace and selects(peer.get("podSelector", {}), other.labels)

    def _admits(self, pod: Pod, direction: str, other: Pod | str, port: int, port_owner: Pod | None) -> bool:
        policies = self._applying(pod, direction)
        if not policies:
            return True
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for policy in policies:
            for rule in policy["spec"].get(key, []):
                peers = rule.get(peers_key)
                if peers is not None and not any(
                    self._peer_matches(peer, policy["metadata"]["namespace"], other) for peer in peers
                ):
                    continue
                ports = rule.get("ports")
                if ports is None or any(
                    (port_owner.port_number(p["port"]) if port_owner else p["port"]) == port for p in ports
                ):
                    return True
        return False

    def allows(self, source: Pod, destination: Pod | str, port: int) -> bool:
        """Whether ``source`` may open a TCP connection to ``destination`` (a pod or an address)."""
        owner = destination if isinstance(destination, Pod) else None
        if not self._admits(source, "Egress", destination, port, owner):
            return False
        return not isinstance(destination, Pod) or self._admits(destination, "Ingress", source, port, destination)


def load(folder) -> list[dict]:
    return [doc for path in sorted(folder.rglob("*.yml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def regions(rendered_root) -> dict[str, list[dict]]:
    """ "<env>/<host>" -> every object rendered for that region."""
    return {
        f"{env}/{host.name}": load(host)
        for env in ENVIRONMENTS
        for host in sorted((rendered_root / env).iterdir())
        if host.is_dir()
    }


# -- default deny -----------------------------------------------------------------------------


def namespaces_without_default_deny(objects: list[dict]) -> list[str]:
    """The namespaces of the platform (any namespace an object is rendered into) that lack a
    policy isolating every pod in both directions and admitting nothing."""
    namespaces = {o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")}
    denied = {
        p["metadata"]["namespace"]
        for p in objects
        if p["kind"] == "NetworkPolicy"
        and p["spec"]["podSelector"] == {}
        and {"Ingress", "Egress"} <= set(p["spec"].get("policyTypes", []))
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    }
    return sorted(namespaces - denied)


# Namespaces the platform configures but whose pods a third-party chart runs, on kind only: Envoy
# Gateway's (roles/kind_gateway), where the rehearsal renders the EnvoyProxy its controller reads.
# Its flows (the controller to the API server, Envoy to the controller's xDS port, the node port)
# are the chart's, and a policy for them could only be proven on kind itself; the GKE
# environments have no such namespace (the load balancer is Google's).
THIRD_PARTY_ON_KIND = {"envoy-gateway-system"}


def test_every_namespace_of_the_platform_denies_by_default(regions):
    for region, objects in regions.items():
        exempt = THIRD_PARTY_ON_KIND if region.startswith("kind/") else set()
        assert set(namespaces_without_default_deny(objects)) <= exempt, region


def test_a_namespace_without_its_default_deny_is_caught(regions):
    objects = copy.deepcopy(regions["production/europe-west4"])
    kept = [
        o
        for o in objects
        if not (
            o["kind"] == "NetworkPolicy"
            and o["metadata"]["name"] == "default-deny"
            and o["metadata"]["namespace"] == DRILL_NAMESPACE
        )
    ]
    assert namespaces_without_default_deny(kept) == [DRILL_NAMESPACE]


# -- the flows each component needs, and no others ---------------------------------------------


def database_pod(cluster: str, namespace: str) -> Pod:
    return Pod(f"{cluster} instance", namespace, {"cnpg.io/cluster": cluster, "cnpg.io/podRole": "instance"})


def reads_app_secret(pod: Pod) -> bool:
    return any(
        env.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == APP_SECRET
        for container in pod.spec.get("containers", [])
        for env in container.get("env", [])
    )


def test_every_database_client_and_only_they_reach_the_database(regions):
    for region, objects in regions.items():
        network = Network(objects)
        database = database_pod(DB_CLUSTER, DB_NAMESPACE)
        pods = list(pod_templates(objects))
        clients = [pod for pod in pods if reads_app_secret(pod)]
        assert clients, region
        for pod in pods:
            assert network.allows(pod, database, 5432) == (pod in clients), f"{region}: {pod.name}"
        operator = Pod("operator", OPERATOR_NAMESPACE, {"app.kubernetes.io/name": "cloudnative-pg"})
        for port in (5432, 8000):  # CloudNativePG 1.30.0 docs/src/networking.md
            assert network.allows(operator, database, port), region
        assert network.allows(database, database_pod(DB_CLUSTER, DB_NAMESPACE), 5432), f"{region}: replication"


def test_the_drill_jobs_reach_their_recovery_cluster_and_not_the_primary(regions):
    drilled = {
        region: objects
        for region, objects in regions.items()
        if any(o["kind"] == "Job" and o["metadata"]["namespace"] == DRILL_NAMESPACE for o in objects)
    }
    assert drilled
    for region, objects in drilled.items():
        network = Network(objects)
        jobs = [pod for pod in pod_templates(objects) if pod.namespace == DRILL_NAMESPACE]
        for job in jobs:
            assert network.allows(job, database_pod(DRILL_CLUSTER, DRILL_NAMESPACE), 5432), f"{region}: {job.name}"
            assert not network.allows(job, database_pod(DB_CLUSTER, DB_NAMESPACE), 5432), f"{region}: {job.name}"


def test_only_the_pods_that_call_google_apis_reach_the_metadata_server(regions):
    # The database's instances (WAL archive, base backups), the logical backup and the drill's
    # Jobs act as Google service accounts through Workload Identity; the service does not.
    for region, objects in regions.items():
        network = Network(objects)
        callers = [database_pod(DB_CLUSTER, DB_NAMESPACE)] + [
            pod
            for pod in pod_templates(objects)
            if pod.labels.get("app.kubernetes.io/name") == "logical-backup" or pod.namespace == DRILL_NAMESPACE
        ]
        for caller in callers:
            for address, port in METADATA_SERVER:
                assert network.allows(caller, address, port), f"{region}: {caller.name} -> {address}:{port}"
        for pod in pod_templates(objects):
            if pod.labels.get("app.kubernetes.io/name") == "hello":
                assert not any(network.allows(pod, a, p) for a, p in METADATA_SERVER), f"{region}: {pod.name}"


def test_the_cross_region_load_balancer_admits_only_the_ranges_the_inventory_names(regions):
    inventory = yaml.safe_load((REPO / "inventories/production/group_vars/all/hello_app.yml").read_text())
    named = sorted(inventory["hello_app_database_region_cidrs"].values())
    for region in ("production/europe-west1", "production/europe-west4"):
        cluster = next(o for o in regions[region] if o["kind"] == "Cluster" and o["metadata"]["name"] == DB_CLUSTER)
        (service,) = cluster["spec"]["managed"]["services"]["additional"]
        assert sorted(service["serviceTemplate"]["spec"]["loadBalancerSourceRanges"]) == named, region
        network = Network(regions[region])
        database = database_pod(DB_CLUSTER, DB_NAMESPACE)
        other = next(
            cidr for name, cidr in inventory["hello_app_database_region_cidrs"].items() if name != region.split("/")[1]
        )
        remote_client = str(next(ipaddress.ip_network(other).hosts()))
        assert network._admits(database, "Ingress", remote_client, 5432, database), region
        assert not network._admits(database, "Ingress", "192.168.0.1", 5432, database), region


def test_each_regions_instances_reach_the_other_regions_load_balancer_to_stream(regions):
    """A replica cluster's designated primary streams from the primary region's cross-region
    load balancer, whose address is in that region's range (k8s/postgres/cluster.yml.j2)."""
    inventory = yaml.safe_load((REPO / "inventories/production/group_vars/all/hello_app.yml").read_text())
    cidrs = inventory["hello_app_database_region_cidrs"]
    database = database_pod(DB_CLUSTER, DB_NAMESPACE)
    for region in ("europe-west1", "europe-west4"):
        network = Network(regions[f"production/{region}"])
        (other,) = [cidr for name, cidr in cidrs.items() if name != region]
        load_balancer = str(next(ipaddress.ip_network(other).hosts()))
        assert network.allows(database, load_balancer, 5432), region
        # Only PostgreSQL's port, only in the regions' ranges.
        assert not network.allows(database, load_balancer, 5433), region
        assert not network.allows(database, "192.168.0.1", 5432), region
    # Without a DR region nothing streams across regions.
    staging = Network(regions["staging/europe-west1"])
    assert not any(staging.allows(database, str(next(ipaddress.ip_network(c).hosts())), 5432) for c in cidrs.values())


# -- TLS to the database ----------------------------------------------------------------------


def mounted_secret(pod: Pod, directory: str) -> tuple[str, list[str]] | None:
    """(secret name, keys) of the Secret volume mounted at ``directory`` in every container."""
    volumes = {v["name"]: v.get("secret") for v in pod.spec.get("volumes", [])}
    found = set()
    for container in pod.spec["containers"]:
        mounts = [m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == directory]
        if not mounts or not volumes.get(mounts[0]):
            return None
        secret = volumes[mounts[0]]
        found.add((secret["secretName"], tuple(i["key"] for i in secret.get("items", []))))
    return next(iter(found)) if len(found) == 1 else None


def test_every_database_client_mounts_the_certificate_authority_its_url_names(regions):
    for region, objects in regions.items():
        for pod in pod_templates(objects):
            if reads_app_secret(pod):
                # roles/postgres writes sslrootcert=<hello_db_ca_directory>/ca.crt into the URL.
                assert mounted_secret(pod, CA_DIRECTORY) == (CA_SECRET, (CNPG_CA_KEY,)), f"{region}: {pod.name}"


def test_the_drill_jobs_verify_their_recovery_cluster_against_its_own_ca(regions):
    for region, objects in regions.items():
        for pod in pod_templates(objects):
            if pod.namespace != DRILL_NAMESPACE:
                continue
            dsns = [a for c in pod.spec["containers"] for a in c.get("args", []) if a.startswith("postgresql://")]
            assert dsns, f"{region}: {pod.name}"
            for dsn in dsns:
                assert dsn.startswith(f"postgresql://{DRILL_CLUSTER}-rw:"), dsn  # a name the certificate holds
                assert "sslmode=verify-full" in dsn and f"sslrootcert={CA_DIRECTORY}/{CNPG_CA_KEY}" in dsn, dsn
            assert mounted_secret(pod, CA_DIRECTORY) == (DRILL_CLUSTER + CNPG_CA_SUFFIX, (CNPG_CA_KEY,)), pod.name


def test_the_server_certificate_names_the_primary_alias_and_only_tls_is_admitted(regions):
    for region, objects in regions.items():
        cluster = next(o for o in objects if o["kind"] == "Cluster" and o["metadata"]["name"] == DB_CLUSTER)
        certificates = cluster["spec"]["certificates"]
        # CloudNativePG 1.30.0 refuses serverAltDNSNames beside a serverTLSSecret
        # (internal/webhook/v1/cluster_webhook.go validateCerts): the operator signs the certificate.
        assert "serverTLSSecret" not in certificates
        assert f"{PRIMARY_ALIAS}.{DB_NAMESPACE}.svc" in certificates["serverAltDNSNames"], region
        # User rules come before CloudNativePG's default `host all all all <method>`
        # (pkg/postgres/configuration.go hbaTemplateString): the first must refuse plain TCP.
        hba = cluster["spec"]["postgresql"]["pg_hba"]
        assert hba[0].split() == ["hostnossl", "all", "all", "all", "reject"], region
        assert all(rule.split()[0] in {"hostssl", "hostnossl"} for rule in hba), region


# -- service account tokens ---------------------------------------------------------------------


def test_no_pod_of_the_platform_mounts_a_service_account_token(regions):
    # None of them calls the Kubernetes API; Workload Identity needs no token in the pod.
    for region, objects in regions.items():
        for pod in pod_templates(objects):
            assert pod.spec.get("automountServiceAccountToken") is False, f"{region}: {pod.name}"
        for account in (o for o in objects if o["kind"] == "ServiceAccount"):
            assert account.get("automountServiceAccountToken") is False, f"{region}: {account['metadata']['name']}"
