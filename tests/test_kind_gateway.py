"""roles/kind_gateway: Envoy Gateway on kind, and the rehearsal's traffic through its Gateway.

The rules of Envoy Gateway that the role, the kind inventory and .github/workflows/e2e-kind.yml
rely on, each read in envoyproxy/gateway's source at the pinned tag, v1.9.0:

- the chart's controller claims GatewayClasses of controllerName
  gateway.envoyproxy.io/gatewayclass-controller (charts/gateway-helm/values.tmpl.yaml,
  config.envoyGateway.gateway.controllerName);
- a GatewayClass is Accepted only if its parametersRef has group gateway.envoyproxy.io, kind
  EnvoyProxy and a name (internal/provider/kubernetes/helpers.go, refsEnvoyProxy), and the
  EnvoyProxy is looked up in the ref's namespace, "default" when none is given
  (internal/provider/kubernetes/controller.go, processGatewayClassParamsRef);
- with the Envoy Service of type NodePort, a Gateway's status.addresses are the nodes' addresses
  (internal/gatewayapi/status/gateway.go, UpdateGatewayStatusProgrammedCondition, case
  corev1.ServiceTypeNodePort), so a client in the cluster, and the machine running kind, reach the
  Gateway at status.addresses[0] on the Service's node port for the listener's port, which the
  EnvoyProxy's Service patch fixes (a Service's ports merge by port, k8s.io/api core/v1
  ServiceSpec.Ports, patchMergeKey "port");
- the Envoy pods run in the controller's namespace unless the deploy mode is GatewayNamespace
  (internal/infrastructure/kubernetes/proxy_infra.go, GetResourceNamespace; the chart sets no
  deploy mode) and carry EnvoyAppLabel's three labels plus the owning Gateway's name and
  namespace (internal/infrastructure/kubernetes/proxy/resource.go, EnvoyAppLabel;
  internal/gatewayapi/helpers.go, GatewayOwnerLabels; translator.go, the label names);
- a listener port under 1024 is served by Envoy on the port + 10000 (internal/gatewayapi/
  listener.go and translator.go: minEphemeralPort 1024, wellKnownPortShift 10000): the port a
  NetworkPolicy towards the Envoy pods must allow;
- v1.9.0's default Envoy is docker.io/envoyproxy/envoy:distroless-v1.39.0
  (api/v1alpha1/shared_types.go);
- v1.9 supports Kubernetes 1.33 to 1.36 (site/content/en/news/releases/matrix.md).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from support import REPO
from support.playbooks import write_role_tasks_play

ROLE_DEFAULTS = yaml.safe_load((REPO / "roles/kind_gateway/defaults/main.yml").read_text())
KIND_HELLO_APP = yaml.safe_load((REPO / "inventories/kind/group_vars/all/hello_app.yml").read_text())
LOAD_GENERATOR = list(yaml.safe_load_all((REPO / ".github/kind/manifests/load-generator.yml").read_text()))
E2E_TEXT = (REPO / ".github/workflows/e2e-kind.yml").read_text()
E2E = yaml.safe_load(E2E_TEXT)
STEPS = [step for job in E2E["jobs"].values() for step in job["steps"]]

CONTROLLER_NAME = "gateway.envoyproxy.io/gatewayclass-controller"
ENVOY_APP_LABELS = {
    "app.kubernetes.io/name": "envoy",
    "app.kubernetes.io/component": "proxy",
    "app.kubernetes.io/managed-by": "envoy-gateway",
}
DEFAULT_ENVOY_PROXY_IMAGE = "docker.io/envoyproxy/envoy:distroless-v1.39.0"
SUPPORTED_KUBERNETES = {"v1.9": {"1.33", "1.34", "1.35", "1.36"}}


def envoy_pod_labels(gateway_namespace: str, gateway_name: str) -> dict:
    return {
        **ENVOY_APP_LABELS,
        "gateway.envoyproxy.io/owning-gateway-name": gateway_name,
        "gateway.envoyproxy.io/owning-gateway-namespace": gateway_namespace,
    }


def envoy_port(listener_port: int) -> int:
    return listener_port + 10000 if listener_port < 1024 else listener_port


def step(name_start: str) -> dict:
    (found,) = [s for s in STEPS if s.get("name", "").startswith(name_start)]
    return found


@pytest.fixture(scope="module")
def rendered(ansible, tmp_path_factory):
    """The role's own render (tasks/render.yml) with the kind inventory: (folder, objects by kind)."""
    root = tmp_path_factory.mktemp("kind-gateway")
    play = write_role_tasks_play(root / "render.yml", "kind_gateway", "render", "Render the GatewayClass")
    result = ansible("ansible-playbook", "-i", "inventories/kind", play, "-e", f"hello_k8s_build_dir={root}/build")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    folder = root / "build" / "kind-gateway"
    objects = {doc["kind"]: doc for doc in yaml.safe_load_all((folder / "gatewayclass.yml").read_text()) if doc}
    assert set(objects) == {"EnvoyProxy", "GatewayClass"}
    return folder, objects


def validate(path: Path) -> subprocess.CompletedProcess:
    crd_dir = os.environ.get("HELLO_CRD_DIR")
    assert crd_dir, "HELLO_CRD_DIR names the pinned CRDs' folder (docs/testing.md)"
    return subprocess.run(
        [str(REPO / "scripts/validate-manifests"), str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HELLO_CRD_DIR": crd_dir},
    )


def test_the_rendered_objects_validate(rendered):
    """The GatewayClass against the Gateway API's CRD (HELLO_CRD_DIR), the EnvoyProxy against
    the schema written from v1.9.0's EnvoyProxy API in k8s/kind-crds/."""
    folder, _ = rendered
    result = validate(folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 objects checked" in result.stdout and "0 invalid" in result.stdout


@pytest.mark.parametrize(
    ("old", "new", "reported"),
    [
        pytest.param("type: NodePort", "type: Internal", "EnvoyProxy envoy", id="service type"),
        pytest.param("replicas: 1", "replicas: 1\n        replica: 1", "EnvoyProxy envoy", id="unknown field"),
        pytest.param("EnvoyProxy\n    name:", "EnvoyProxy\n    nam:", "GatewayClass envoy", id="gatewayclass"),
    ],
)
def test_a_broken_object_fails_the_validation(rendered, tmp_path, old, new, reported):
    folder, _ = rendered
    text = (folder / "gatewayclass.yml").read_text()
    assert old in text
    (tmp_path / "gatewayclass.yml").write_text(text.replace(old, new, 1))
    result = validate(tmp_path)
    assert result.returncode == 1
    assert reported in result.stdout


def test_the_class_is_envoy_gateways_and_names_its_envoy_proxy(rendered):
    _, objects = rendered
    gateway_class, proxy = objects["GatewayClass"], objects["EnvoyProxy"]
    assert gateway_class["spec"]["controllerName"] == CONTROLLER_NAME
    reference = gateway_class["spec"]["parametersRef"]
    assert (reference["group"], reference["kind"]) == ("gateway.envoyproxy.io", "EnvoyProxy")
    # Without a namespace Envoy Gateway looks in "default", where the EnvoyProxy is not.
    assert (reference.get("namespace"), reference["name"]) == (
        proxy["metadata"]["namespace"],
        proxy["metadata"]["name"],
    )
    assert proxy["metadata"]["namespace"] == ROLE_DEFAULTS["kind_gateway_namespace"]
    # The service's Gateway on kind is of this class.
    assert KIND_HELLO_APP["hello_app_gateway_class"] == gateway_class["metadata"]["name"]


def test_the_envoy_service_is_a_node_port_and_the_load_goes_to_the_gateways_address(rendered):
    """kind has no load balancer: with a NodePort Envoy Service the Gateway's status.addresses
    hold the nodes' addresses (internal/gatewayapi/status/gateway.go at v1.9.0), which the
    workflow hands the load generator with the node port of the http listener's port and the
    route's host name; the release's post-promotion check, on the runner, calls the same address
    on the node port the EnvoyProxy fixes (hello_app_gateway_probe_port)."""
    _, objects = rendered
    assert objects["EnvoyProxy"]["spec"]["provider"]["type"] == "Kubernetes"
    service = objects["EnvoyProxy"]["spec"]["provider"]["kubernetes"]["envoyService"]
    assert service["type"] == "NodePort"
    assert service["patch"]["type"] == "StrategicMerge"
    assert service["patch"]["value"]["spec"]["ports"] == [
        {"port": 80, "nodePort": ROLE_DEFAULTS["kind_gateway_node_port"]}
    ]
    assert KIND_HELLO_APP["hello_app_gateway_probe_port"] == ROLE_DEFAULTS["kind_gateway_node_port"]
    assert 30000 <= ROLE_DEFAULTS["kind_gateway_node_port"] <= 32767
    start = step("Start the load generator")["run"]
    assert "wait gateway/hello --for=condition=Programmed" in start
    assert "get gateway hello -o 'jsonpath={.status.addresses[0].value}'" in start
    assert """get gateway hello -o 'jsonpath={.spec.listeners[?(@.name=="http")].port}'""" in start
    assert "jsonpath={.items[0].spec.ports[?(@.port==$listener)].nodePort}" in start
    assert "get httproute hello -o 'jsonpath={.spec.hostnames[0]}'" in start
    assert 'create configmap hello-load-generator --from-literal=target="http://$address:$port"' in start
    assert '--from-literal=host="$host"' in start
    # The ConfigMap is in place before the pod that reads it.
    assert start.index("create configmap") < start.index("load-generator.yml")
    (pod,) = [doc for doc in LOAD_GENERATOR if doc["kind"] == "Pod"]
    env = {item["name"]: item for item in pod["spec"]["containers"][0]["env"]}
    assert env["TARGET"]["valueFrom"]["configMapKeyRef"] == {"name": "hello-load-generator", "key": "target"}
    assert env["HOST"]["valueFrom"]["configMapKeyRef"] == {"name": "hello-load-generator", "key": "host"}


def test_the_load_generator_may_reach_the_gateways_envoy_and_not_the_service():
    """Its egress goes to the Envoy pods of Gateway hello, in Envoy Gateway's namespace, on the
    port Envoy serves the http listener's port 80 on; it is no client of the service's pods."""
    (policy,) = [doc for doc in LOAD_GENERATOR if doc["kind"] == "NetworkPolicy"]
    (pod,) = [doc for doc in LOAD_GENERATOR if doc["kind"] == "Pod"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Egress"]
    (rule,) = policy["spec"]["egress"]
    (peer,) = rule["to"]
    namespace = E2E["env"]["HELLO_NAMESPACE"]
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": ROLE_DEFAULTS["kind_gateway_namespace"]
    }
    assert peer["podSelector"]["matchLabels"] == envoy_pod_labels(namespace, "hello")
    assert rule["ports"] == [{"port": envoy_port(80), "protocol": "TCP"}]
    clients = KIND_HELLO_APP.get("hello_app_extra_client_pod_labels", [])
    assert not any(entry.items() <= pod["metadata"]["labels"].items() for entry in clients)


def test_the_kind_inventory_names_the_envoy_pods_of_gateway_hello():
    """The Envoy pods of Gateway hello, in Envoy Gateway's namespace and by the labels v1.9.0 gives
    them, are the Gateway's proxies the service admits on kind (hello_app_gateway_proxy_pods)."""
    namespace = E2E["env"]["HELLO_NAMESPACE"]
    assert {
        "namespace": ROLE_DEFAULTS["kind_gateway_namespace"],
        "labels": envoy_pod_labels(namespace, "hello"),
    } in KIND_HELLO_APP["hello_app_gateway_proxy_pods"]


def peer_admits(peer: dict, namespace_labels: dict, pod_labels: dict, own_namespace: bool) -> bool:
    """Whether one `from` peer of a NetworkPolicy admits a pod (NetworkPolicy's rules: a
    podSelector alone selects pods of the policy's own namespace)."""
    if "ipBlock" in peer:
        return False
    pods = peer.get("podSelector", {}).get("matchLabels", {})
    if "namespaceSelector" not in peer:
        return own_namespace and pods.items() <= pod_labels.items()
    namespaces = peer["namespaceSelector"].get("matchLabels", {})
    return namespaces.items() <= namespace_labels.items() and pods.items() <= pod_labels.items()


def test_the_peer_rule_reads_namespaces_as_kubernetes_does():
    pod = envoy_pod_labels("hello", "hello")
    other = {"kubernetes.io/metadata.name": "envoy-gateway-system"}
    assert not peer_admits({"podSelector": {"matchLabels": ENVOY_APP_LABELS}}, other, pod, own_namespace=False)
    assert peer_admits({"podSelector": {"matchLabels": ENVOY_APP_LABELS}}, other, pod, own_namespace=True)
    both = {"namespaceSelector": {"matchLabels": other}, "podSelector": {"matchLabels": ENVOY_APP_LABELS}}
    assert peer_admits(both, other, pod, own_namespace=False)
    assert not peer_admits(both, {"kubernetes.io/metadata.name": "hello"}, pod, own_namespace=True)


def test_the_services_network_policy_lets_the_gateways_envoy_in(rendered_root):
    """The service's NetworkPolicy on kind admits the Envoy pods of Gateway hello, from Envoy
    Gateway's namespace, on the service's port: every request through the Gateway comes from
    them."""
    folder = rendered_root / "kind" / "kind"
    objects = [doc for path in sorted(folder.rglob("*.yml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
    (gateway,) = [doc for doc in objects if doc["kind"] == "Gateway"]
    (policy,) = [doc for doc in objects if doc["kind"] == "NetworkPolicy" and doc["metadata"]["name"] == "hello"]
    namespace = gateway["metadata"]["namespace"]
    envoy_namespace = {"kubernetes.io/metadata.name": ROLE_DEFAULTS["kind_gateway_namespace"]}
    pod = envoy_pod_labels(namespace, gateway["metadata"]["name"])
    assert any(
        peer_admits(peer, envoy_namespace, pod, own_namespace=False)
        for rule in policy["spec"]["ingress"]
        for peer in rule.get("from", [])
    )


def test_the_gateway_on_kind_listens_where_the_load_generator_may_go(rendered_root):
    """The kind render's Gateway is of Envoy Gateway's class with an http listener whose Envoy
    port is the one the load generator's NetworkPolicy allows."""
    folder = rendered_root / "kind" / "kind"
    objects = [doc for path in sorted(folder.rglob("*.yml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
    (gateway,) = [doc for doc in objects if doc["kind"] == "Gateway"]
    assert gateway["spec"]["gatewayClassName"] == ROLE_DEFAULTS["kind_gateway_class"]
    (http,) = [listener for listener in gateway["spec"]["listeners"] if listener["name"] == "http"]
    (policy,) = [doc for doc in LOAD_GENERATOR if doc["kind"] == "NetworkPolicy"]
    assert policy["spec"]["egress"][0]["ports"][0]["port"] == envoy_port(http["port"])
    # GKE's own policies need GKE's controller: none on kind.
    assert not [doc for doc in objects if doc["apiVersion"].startswith("networking.gke.io/")]


def test_the_images_are_pinned_to_the_charts_release(rendered):
    _, objects = rendered
    proxy_image = objects["EnvoyProxy"]["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]["image"]
    assert proxy_image == ROLE_DEFAULTS["kind_gateway_proxy_image"]
    tag, digest = proxy_image.split("@")
    assert tag == DEFAULT_ENVOY_PROXY_IMAGE, "not the Envoy of the chart's release"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    # The controller (and shutdown-manager) image is the chart's own release.
    assert ROLE_DEFAULTS["kind_gateway_controller_image"] == (
        f"docker.io/envoyproxy/gateway:{ROLE_DEFAULTS['kind_gateway_chart_version']}"
    )


def test_the_chart_supports_the_kind_nodes_kubernetes():
    version = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", ROLE_DEFAULTS["kind_gateway_chart_version"])
    assert version, ROLE_DEFAULTS["kind_gateway_chart_version"]
    node = re.fullmatch(r"kindest/node:v(\d+\.\d+)\.\d+@sha256:[0-9a-f]{64}", E2E["env"]["KIND_NODE_IMAGE"])
    line = f"v{version.group(1)}.{version.group(2)}"
    assert node.group(1) in SUPPORTED_KUBERNETES.get(line, set()), f"Envoy Gateway {line} on Kubernetes {node.group(1)}"


def test_the_kind_playbook_installs_envoy_gateway_after_preflight():
    plays = yaml.safe_load((REPO / "playbooks/kind.yml").read_text())
    roles = [role["role"] for play in plays for role in play.get("roles", [])]
    assert roles[0] == "preflight" and "kind_gateway" in roles[1:]


# -- the live slot after the rollback, read from HTTPRoute hello's weights --------------------

ROUTE_QUERY = (
    "--namespace hello get httproute hello -o "
    'jsonpath={range .spec.rules[*].backendRefs[*]}{.name}={.weight}{"\\n"}{end}'
)
FIRST = "sha256:" + "1" * 64
SECOND = "sha256:" + "2" * 64


def run_live_slot_check(tmp_path: Path, weights: str, images: dict) -> subprocess.CompletedProcess:
    """The workflow's step, run by bash against a kubectl that answers the route's weights and
    each Deployment's image."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    answers = "\n".join(
        f'[ "$*" = "--namespace hello get deployment {name} -o jsonpath={{.spec.template.spec.containers[0].image}}" ]'
        f" && printf %s 'registry/hello@{digest}' && exit 0"
        for name, digest in images.items()
    )
    (bin_dir / "kubectl").write_text(
        f"""#!/bin/bash
[ "$*" = '{ROUTE_QUERY}' ] && printf '{weights}' && exit 0
{answers}
echo "unexpected: $*" >&2; exit 1
"""
    )
    (bin_dir / "kubectl").chmod(0o755)
    check = step("Check that the first release is live again")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HELLO_NAMESPACE": "hello",
        "FIRST_DIGEST": FIRST,
    }
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", check["run"]], capture_output=True, text=True, env=env, check=False
    )


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ("hello-blue=0\\nhello-green=100\\n", "live slot hello-green runs registry/hello@" + FIRST),
        ("hello-blue=100\\nhello-green=0\\nhello-blue=100\\nhello-green=0\\n", "error::after the rollback"),
        ("hello-blue=100\\nhello-green=100\\n", "gives weight 100 to both slots"),
        ("hello-blue=50\\nhello-green=50\\n", "sends weight '50' to 'hello-blue'"),
        ("hello-blue=0\\nhello-green=0\\n", "names no live slot"),
        ("hello-green=100\\n", "names no live slot"),
        ("hello=\\n", "sends weight '' to 'hello'"),
    ],
    ids=["green live", "blue live runs the second", "both", "split", "none", "one backend", "service hello"],
)
def test_the_live_slot_is_the_routes_backend_at_weight_100(tmp_path, weights, expected):
    result = run_live_slot_check(tmp_path, weights, {"hello-green": FIRST, "hello-blue": SECOND})
    assert expected in result.stdout, result.stdout + result.stderr
    assert result.returncode == (0 if expected.startswith("live slot") else 1), result.stdout + result.stderr


def test_the_live_slot_is_not_read_from_service_hellos_selector():
    check = step("Check that the first release is live again")["run"]
    assert "get service hello" not in check and "selector" not in check
    assert "get httproute hello" in check


# -- the load generator's script, with a curl that records its calls --------------------------


def run_load_generator(tmp_path: Path, host: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    (pod,) = [doc for doc in LOAD_GENERATOR if doc["kind"] == "Pod"]
    script = pod["spec"]["containers"][0]["args"][0]
    work = tmp_path / "pod"
    work.mkdir()
    script = script.replace("/tmp/", f"{work}/").replace("exec sleep 3600", "exit 0")
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # PUT answers 204, each GET 200 but the second (503); the third GET stops the loop.
    (bin_dir / "curl").write_text(
        f"""#!/bin/sh
printf '%s\\n' "$*" >> {calls}
case "$*" in *" PUT "*) printf 204; exit 0;; esac
n=$(grep -vc ' PUT ' {calls})
[ "$n" -ge 3 ] && touch {work}/stop
[ "$n" -eq 2 ] && printf 503 || printf 200
"""
    )
    (bin_dir / "curl").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TARGET": "http://10.96.0.7:80", "HOST": host}
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, check=False, timeout=30)
    return result, calls.read_text().splitlines()


@pytest.mark.parametrize("host", ["hello.example.com", ""])
def test_the_load_generator_calls_the_target_with_the_routes_host_and_counts_failures(tmp_path, host):
    result, calls = run_load_generator(tmp_path, host)
    assert result.returncode == 0, result.stderr
    assert len(calls) == 4
    assert all(call.endswith("http://10.96.0.7:80/hello/load-generator") for call in calls)
    if host:
        assert all(f"-H Host: {host}" in call for call in calls)
    else:
        assert not any("Host:" in call for call in calls)
    assert (tmp_path / "pod" / "result").read_text().strip() == "requests=3 failures=1"
    assert "GET http://10.96.0.7:80/hello/load-generator answered 503" in result.stdout
