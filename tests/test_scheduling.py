"""Every rendered pod can find a node: what a pod requires of a node is a label the environment's
nodes carry.

kube-scheduler refuses a node that lacks the topologyKey of a DoNotSchedule spread constraint
("node(s) didn't match pod topology spread constraints (missing required label)",
UnschedulableAndUnresolvable: PodTopologySpread.Filter in kubernetes'
pkg/scheduler/framework/plugins/podtopologyspread/filtering.go, read at kubernetes commit
01c2588b; kubernetes/kubernetes#95812), so a pod whose required key no node carries stays
Pending, and a release waiting for it fails at its timeout. The same holds for the nodeSelector's
keys and CloudNativePG's required anti-affinity on ``spec.affinity.topologyKey``.

The labels of each environment's nodes:
- every node: the kubelet's preset labels (kubernetes.io/docs/reference/node/node-labels,
  "Node Labels Populated By The Kubelet", last modified 2025-04-04): kubernetes.io/arch,
  kubernetes.io/hostname, kubernetes.io/os, and, where the cloud provider knows them,
  node.kubernetes.io/instance-type, topology.kubernetes.io/region and topology.kubernetes.io/zone;
- GKE: the cloud provider knows them, so the zone is there ("Zonal topology is built into
  Kubernetes with the topology.kubernetes.io/zone: ZONE node label", GKE's "Place GKE Pods in
  specific zones", docs.cloud.google.com/kubernetes-engine/docs/how-to/gke-zonal-topology), with
  GKE's cloud.google.com/gke-nodepool and the labels roles/gke_cluster gives each node pool
  (``hello_node_pools``);
- kind (v0.31.0): the kubelet's own, without region or zone, and kubeadm's control-plane role; kind
  removes kubeadm's exclude-from-external-load-balancers from a lone node
  (pkg/cluster/internal/create/actions/kubeadminit/init.go) and its pools carry no label.
"""

import pytest
import yaml

from support import REPO
from support.render import ENVIRONMENTS

KUBELET_LABELS = {"kubernetes.io/arch", "kubernetes.io/hostname", "kubernetes.io/os"}
CLOUD_LABELS = {"node.kubernetes.io/instance-type", "topology.kubernetes.io/region", "topology.kubernetes.io/zone"}
GKE_LABELS = {"cloud.google.com/gke-nodepool"}
KIND_LABELS = {"node-role.kubernetes.io/control-plane"}


def node_pools(env):
    """hello_node_pools as the environment sees it: its own, else the shared one."""
    for path in (REPO / f"inventories/{env}/group_vars/all/node_pools.yml", REPO / "group_vars/all/node_pools.yml"):
        if path.exists():
            return yaml.safe_load(path.read_text())["hello_node_pools"]
    raise AssertionError("no hello_node_pools")


def node_labels(env):
    """The label keys that the nodes of ``env`` carry (see the module's doc)."""
    pools = {key for pool in node_pools(env).values() for key in pool["labels"]}
    if env == "kind":
        return KUBELET_LABELS | KIND_LABELS | pools
    return KUBELET_LABELS | CLOUD_LABELS | GKE_LABELS | pools


def required_keys(doc):
    """(what, key) of every node label a pod of ``doc`` cannot run without."""
    spec = doc.get("spec", {})
    template = spec.get("jobTemplate", {}).get("spec", spec).get("template")
    if template:
        pod = template["spec"]
        for constraint in pod.get("topologySpreadConstraints", []):
            # whenUnsatisfiable defaults to DoNotSchedule (k8s.io/api core/v1 TopologySpreadConstraint).
            if constraint.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule":
                yield "topologySpreadConstraints", constraint["topologyKey"]
        for key in pod.get("nodeSelector", {}):
            yield "nodeSelector", key
    affinity = spec.get("affinity", {}) if doc.get("kind") == "Cluster" else {}
    if affinity.get("podAntiAffinityType") == "required" and "topologyKey" in affinity:
        # CloudNativePG 1.30.0's Cluster CRD (spec.affinity.podAntiAffinityType): "required" can
        # leave instances pending when the existing nodes do not match the anti-affinity rule.
        yield "affinity.topologyKey", affinity["topologyKey"]


def unschedulable(objects, labels):
    """`<file>: <kind> <name> <what> <key>` for every required key no node carries."""
    return sorted(
        f"{name}: {doc['kind']} {doc['metadata']['name']} {what} {key}"
        for name, doc in objects
        for what, key in required_keys(doc)
        if key not in labels
    )


def rendered_objects(root, env):
    return [
        (path.relative_to(root / env).as_posix(), doc)
        for path in sorted((root / env).rglob("*.yml"))
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind")
    ]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_required_placement_key_is_a_label_of_the_environments_nodes(rendered_root, env):
    objects = rendered_objects(rendered_root, env)
    assert any(doc["kind"] == "Deployment" for _, doc in objects), f"{env}: no Deployment rendered"
    assert unschedulable(objects, node_labels(env)) == []


def test_a_zone_spread_that_must_hold_is_unschedulable_on_kind():
    """The check catches what kind's single node cannot meet (a slot spread over zones with
    DoNotSchedule), and takes the same spread on GKE."""
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "hello-blue"},
        "spec": {
            "template": {
                "spec": {
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "DoNotSchedule",
                        },
                        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"},
                    ]
                }
            }
        },
    }
    objects = [("hello/slot-blue.yml", deployment)]
    assert unschedulable(objects, node_labels("kind")) == [
        "hello/slot-blue.yml: Deployment hello-blue topologySpreadConstraints topology.kubernetes.io/zone"
    ]
    assert unschedulable(objects, node_labels("production")) == []
