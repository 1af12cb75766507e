"""playbooks/deploy.yml and rollback.yml switch users by HTTPRoute hello's weights, in real runs.

Staging's one region is a cluster that keeps what the runs apply and runs the few controllers a
release waits on (support.kube_release.ReleaseCluster: pods Ready at once, the NEG readiness
gate as GKE's NEG controller sets it, Jobs that complete with the check's RESULT line, the
Gateway's address), and the Gateway's load balancer is an HTTPS server on loopback that routes
each request by the route's weights to a Service with a serving pod, or answers 502. A client
sends requests through it for the whole of each run, as users would, and the post-promotion
check of the runs themselves goes through it too (hello_app_gateway_probe_port).

The cluster starts as one released before the slot Services existed: Service hello selects blue,
HTTPRoute hello sends everything to Service hello. The release must move users to green with no
failed request, then retire Service hello; the rollback returns them to blue the same way.

What this cannot show: the timing of GKE's load balancer (programming, health-check intervals,
draining), which the readiness gate's condition stands in for here; real pods starting.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time

import pytest

from support import REPO
from support.kube_api import cluster, fake_gcloud, write_kubeconfig
from support.kube_cluster import crds_of
from support.kube_release import ReleaseCluster
from support.tls import server_certificate

# Whole release runs, several per test: left out of `scripts/test fast`.
pytestmark = pytest.mark.slow

CONTEXT = "gke_hello-platform-staging_europe-west1_hello-staging-europe-west1"
HOST = "hello.staging.example.com"
REPOSITORY = "europe-docker.pkg.dev/hello-platform-staging/hello/hello"
OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64
SERVER = {"app.kubernetes.io/name": "hello", "app.kubernetes.io/component": "server"}
RELEASE = "version=1.0.0 commit=abc"
JOB_LOGS = {
    "hello-migrate": "",
    "hello-check-pre": f"RESULT ok {RELEASE}\n",
    "hello-check-post": f"RESULT ok requests=40 failures=0 {RELEASE}\n",
}


def standalone_cluster():
    found = cluster("europe-west1", "europe-west1")
    del found["spec"]["replica"]
    return found


def selector_model(api):
    """What a cluster released before the slot Services holds: Service hello selecting blue (and
    its GKE policies), HTTPRoute hello to Service hello, Gateway hello, blue running OLD."""
    labels = {**SERVER, "app.kubernetes.io/part-of": "hello-platform"}
    objects = [
        ("v1", "namespaces", "", "hello", {"kind": "Namespace", "metadata": {}}),
        (
            "v1",
            "services",
            "hello",
            "hello",
            {"kind": "Service", "metadata": {"labels": labels}, "spec": {"selector": {**SERVER, "slot": "blue"}}},
        ),
        ("networking.gke.io/v1", "healthcheckpolicies", "hello", "hello", {"kind": "HealthCheckPolicy", "spec": {}}),
        ("networking.gke.io/v1", "gcpbackendpolicies", "hello", "hello", {"kind": "GCPBackendPolicy", "spec": {}}),
        ("gateway.networking.k8s.io/v1", "gateways", "hello", "hello", {"kind": "Gateway", "spec": {}}),
        (
            "gateway.networking.k8s.io/v1",
            "httproutes",
            "hello",
            "hello",
            {
                "kind": "HTTPRoute",
                "metadata": {"labels": labels},
                "spec": {"rules": [{"backendRefs": [{"name": "hello", "port": 80}]}]},
            },
        ),
        (
            "apps/v1",
            "deployments",
            "hello",
            "hello-blue",
            {
                "kind": "Deployment",
                "metadata": {"labels": labels},
                "spec": {
                    "replicas": 2,
                    "template": {
                        "metadata": {"labels": {**SERVER, "slot": "blue"}},
                        "spec": {
                            "containers": [{"name": "hello", "image": f"{REPOSITORY}@{OLD}"}],
                            "readinessGates": [{"conditionType": "cloud.google.com/load-balancer-neg-ready"}],
                        },
                    },
                },
            },
        ),
        # Staging has no DR region: its Cluster is no replica cluster.
        ("postgresql.cnpg.io/v1", "clusters", "hello", "hello-db", standalone_cluster()),
        (
            "v1",
            "secrets",
            "hello",
            "hello-db-app",
            {
                "kind": "Secret",
                "data": {
                    key: base64.b64encode(b"postgresql://app@hello-db-rw/app").decode() for key in ("uri", "pooler_uri")
                },
            },
        ),
    ]
    for gv, plural, namespace, name, obj in objects:
        api.store((gv, plural, namespace, name), {"apiVersion": gv, **obj})
    api.timeline.clear()


class Users:
    """Requests through the load balancer every 20 ms until stopped; counts the answers."""

    def __init__(self, api):
        self.api, self.answers, self.stopped = api, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped.is_set():
            self.answers.append(self.api.answer()[0])
            time.sleep(0.02)

    def stop(self):
        self.stopped.set()
        self.thread.join()
        return self.answers


@pytest.fixture
def region(ansible, tmp_path):
    crd_dir = os.environ.get("HELLO_CRD_DIR")
    assert crd_dir, "HELLO_CRD_DIR names the pinned CRDs' folder (docs/testing.md)"
    certificate = server_certificate(HOST)
    (tmp_path / "ca.pem").write_bytes(certificate.ca)
    api = ReleaseCluster(crds_of(REPO / "k8s/gke-crds", crd_dir), certificate=certificate, job_logs=dict(JOB_LOGS))
    selector_model(api)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"europe-west1": CONTEXT}, {"europe-west1": api})
    bin_dir = fake_gcloud(tmp_path / "bin", tmp_path / "gcloud-calls.jsonl")

    def run(playbook, *extra):
        users = Users(api)
        result = ansible(
            "ansible-playbook",
            "-i",
            "inventories/staging",
            f"playbooks/{playbook}",
            "-e",
            json.dumps(
                {
                    "hello_app_hostnames": [HOST],
                    "hello_app_gateway_probe_port": api.balancer.port,
                    "hello_app_post_promotion_window_seconds": 1,
                    "hello_app_scale_down_delay_seconds": 0,
                    "hello_app_lb_health_timeout_seconds": 5,
                    "hello_k8s_build_dir": str(tmp_path / "build"),
                }
            ),
            *extra,
            env={
                "KUBECONFIG": str(kubeconfig),
                "K8S_AUTH_KUBECONFIG": str(kubeconfig),
                "PATH": f"{bin_dir}:{os.environ['PATH']}",
                # The load balancer's certificate is signed by the test's authority.
                "SSL_CERT_FILE": str(tmp_path / "ca.pem"),
            },
        )
        return result.returncode, " ".join((result.stdout + result.stderr).split()), users.stop()

    yield api, run
    api.close()


def routes(api):
    return [entry[1:] for entry in api.timeline if entry[0] == "route"]


def replicas(api, slot):
    return api.get("apps/v1", "deployments", f"hello-{slot}", "hello")["spec"]["replicas"]


def test_a_release_moves_users_from_service_hello_to_a_slot_and_the_rollback_back(region):
    api, run = region
    code, output, answers = run("deploy.yml", "-e", f"hello_image_digest={NEW}")
    assert code == 0, output
    # Users never met a backend without a serving pod.
    assert answers and set(answers) == {200}, f"{answers.count(502)} of {len(answers)} requests failed"
    # Each route change sent users only where pods served at that moment: today's weights with
    # both slot Services added at 0, the switch to green (Service hello kept at 0 until the check
    # passed), then Service hello taken out.
    assert [weights for weights, _ in routes(api)] == [
        {"hello-blue": 0, "hello-green": 0, "hello": 100},
        {"hello-blue": 0, "hello-green": 100, "hello": 0},
        {"hello-blue": 0, "hello-green": 100},
    ]
    for weights, serving in routes(api):
        assert {name for name, weight in weights.items() if weight > 0} <= serving
    # The release waited for the load balancer's report on green's pods, checked through the
    # Gateway's address with the route's host name, then retired Service hello and its policies.
    assert "Wait for the load balancer to report green healthy" in output
    assert f"requests to https://{HOST} through 127.0.0.1:{api.balancer.port} in 1 s, none failed" in output
    assert api.balancer.answers[200] >= 3
    for plural in ("services", "healthcheckpolicies", "gcpbackendpolicies"):
        gv = "v1" if plural == "services" else "networking.gke.io/v1"
        assert api.get(gv, plural, "hello", "hello") is None, plural
    assert (replicas(api, "blue"), replicas(api, "green")) == (0, 2)
    assert api.get("v1", "services", "hello-preview", "hello")["spec"]["selector"]["slot"] == "blue"

    # A second run of the same digest finds it live and changes no weight.
    code, output, answers = run("deploy.yml", "-e", f"hello_image_digest={NEW}")
    assert code == 0, output
    assert f"none: {NEW} is already live in green" in output
    assert len(routes(api)) == 3

    # The rollback scales blue up, waits for its pods' health, and moves the weights back.
    code, output, answers = run("rollback.yml")
    assert code == 0, output
    assert set(answers) == {200}, f"{answers.count(502)} of {len(answers)} requests failed"
    assert routes(api)[-1][0] == {"hello-blue": 100, "hello-green": 0}
    assert "hello-blue" in routes(api)[-1][1]
    assert (replicas(api, "blue"), replicas(api, "green")) == (2, 0)


def test_a_failed_post_promotion_check_returns_users_to_service_hello(region):
    api, run = region
    api.job_logs["hello-check-post"] = "GET /hello/releasecheck answered 500\nRESULT failed requests=9 failures=1\n"
    code, output, answers = run("deploy.yml", "-e", f"hello_image_digest={NEW}")
    assert code != 0
    assert "The post-promotion check failed" in output
    assert "Users were switched back to blue" in output
    assert set(answers) == {200}
    # Back on the Service they came from, which still exists; green keeps the failed release.
    assert routes(api)[-1][0] == {"hello-blue": 0, "hello-green": 0, "hello": 100}
    assert api.get("v1", "services", "hello", "hello") is not None
    assert (replicas(api, "blue"), replicas(api, "green")) == (2, 2)


def test_pods_the_load_balancer_did_not_report_healthy_keep_users_where_they_are(region):
    """A pod whose gate is True only because it is in no NEG, as GKE's controller also reports,
    is not healthy for the load balancer: the release stops before the switch and says why."""
    api, run = region
    # The slot Services never become backends: their pods are in no NEG.
    original = api.route_weights
    api.route_weights = lambda namespace="hello": {k: v for k, v in original(namespace).items() if k == "hello"}
    code, output, answers = run("deploy.yml", "-e", f"hello_image_digest={NEW}")
    assert code != 0
    assert "the load balancer does not report every pod of green healthy" in output
    assert "Pod does not belong to any NEG" in output
    assert "Users were not moved" in output
    assert set(answers) == {200}
    assert original() == {"hello-blue": 0, "hello-green": 0, "hello": 100}


def test_a_check_run_of_the_release_changes_nothing(region):
    """--check shows the release without making it: nothing is written, users stay where they are."""
    api, run = region
    before = {key: json.dumps(obj, sort_keys=True) for key, obj in api.objects.items()}
    code, output, answers = run("deploy.yml", "-e", f"hello_image_digest={NEW}", "--check")
    assert code == 0, output
    assert set(answers) == {200}
    assert routes(api) == []
    assert {key: json.dumps(obj, sort_keys=True) for key, obj in api.objects.items()} == before
