"""support.kube_cluster.ClusterApi answers like kube-apiserver where the playbooks depend on it.

Each rule it encodes is cited where it is written (support.kube_cluster, support.kube_api): a
kind whose CRD is not installed is not served (a plain 404, and no discovery entry, so clients
stop before sending); a create into a missing namespace is refused (NamespaceLifecycle); what is
applied is kept, and applying it again changes nothing.
"""

import json
import os
import urllib.error
import urllib.request

import pytest
import yaml

from support.kube_api import missing_namespace
from support.kube_cluster import ClusterApi, crds_of
from support.playbooks import REPO, write_play

STORE = "/apis/barmancloud.cnpg.io/v1/namespaces/hello/objectstores/hello-db"
OBJECT_STORE = {
    "apiVersion": "barmancloud.cnpg.io/v1",
    "kind": "ObjectStore",
    "metadata": {"name": "hello-db", "namespace": "hello"},
    "spec": {"configuration": {"destinationPath": "gs://bucket/physical"}},
}


def barman_crds():
    crd_dir = os.environ.get("HELLO_CRD_DIR")
    assert crd_dir, "HELLO_CRD_DIR names the pinned CRDs' folder (docs/testing.md)"
    return crds_of(f"{crd_dir}/barman-cloud-plugin-0.14.0.yaml")


@pytest.fixture
def cluster_api():
    started = []

    def start(crds=()):
        started.append(ClusterApi(crds))
        return started[-1]

    yield start
    for api in started:
        api.close()


def send(api, method, path, body=None, content_type="application/apply-patch+yaml"):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(api.url + path, data=data, method=method)
    request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_a_kind_whose_crd_is_not_installed_is_not_served(cluster_api):
    """Without the Barman Cloud plugin's CRD, discovery does not list its group and a request
    under it gets the plain-text 404 of kube-apiserver's last handler
    (support.kube_cluster.unserved cites k8s.io/apiextensions-apiserver and k8s.io/apiserver
    v0.35.0). With the CRD installed, the same path answers as a resource: NotFound, then the
    object once applied."""
    api = cluster_api()
    groups = json.loads(send(api, "GET", "/apis")[2])["groups"]
    assert "barmancloud.cnpg.io" not in {group["name"] for group in groups}
    assert send(api, "GET", "/apis/barmancloud.cnpg.io/v1")[0] == 404
    assert send(api, "PATCH", f"{STORE}?fieldManager=x", OBJECT_STORE) == (
        404,
        "text/plain; charset=utf-8",
        b"404 page not found\n",
    )
    assert send(api, "PATCH", "/api/v1/namespaces/hello?fieldManager=x", {"metadata": {"name": "hello"}})[0] == 201

    crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/objectstores.barmancloud.cnpg.io"
    assert send(api, "GET", crd)[0] == 404

    installed = cluster_api(barman_crds())
    # The installed CRD is read as an object too (roles/postgres reads the metrics CRD so).
    assert send(installed, "GET", crd)[0] == 200
    send(installed, "PATCH", "/api/v1/namespaces/hello?fieldManager=x", {"metadata": {"name": "hello"}})
    code, _, body = send(installed, "GET", STORE)
    assert (code, json.loads(body)["message"]) == (404, 'objectstores.barmancloud.cnpg.io "hello-db" not found')
    assert send(installed, "PATCH", f"{STORE}?fieldManager=x", OBJECT_STORE)[0] == 201
    assert json.loads(send(installed, "GET", STORE)[2])["spec"] == OBJECT_STORE["spec"]


def test_a_create_into_a_missing_namespace_is_refused_then_kept_once_it_exists(cluster_api):
    api = cluster_api(barman_crds())
    code, _, body = send(api, "PATCH", f"{STORE}?fieldManager=x", OBJECT_STORE)
    assert (code, json.loads(body)) == (404, missing_namespace("hello"))
    assert api.namespace_refusals == ["hello"]
    # A dry run (what --check sends) creates nothing.
    send(api, "PATCH", "/api/v1/namespaces/hello?fieldManager=x&dryRun=All", {"metadata": {"name": "hello"}})
    assert send(api, "PATCH", f"{STORE}?fieldManager=x", OBJECT_STORE)[0] == 404
    send(api, "PATCH", "/api/v1/namespaces/hello?fieldManager=x", {"metadata": {"name": "hello"}})
    assert send(api, "PATCH", f"{STORE}?fieldManager=x", OBJECT_STORE)[0] == 201


def test_applying_the_same_object_again_changes_nothing(cluster_api):
    api = cluster_api()
    path = "/api/v1/namespaces/default/secrets/s"
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    first = json.loads(send(api, "PATCH", f"{path}?fieldManager=x", secret)[2])
    again = json.loads(send(api, "PATCH", f"{path}?fieldManager=x", secret)[2])
    assert again == first
    # The API server keeps stringData as data.
    assert first["data"] == {"k": "dg=="} and "stringData" not in first
    changed = json.loads(send(api, "PATCH", f"{path}?fieldManager=x", {**secret, "stringData": {"k": "w"}})[2])
    assert changed["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    assert changed["metadata"]["uid"] == first["metadata"]["uid"]
    assert send(api, "POST", "/api/v1/namespaces/default/secrets", secret)[0] == 409


def test_kubernetes_core_stops_at_a_kind_whose_crd_is_not_installed(ansible, cluster_api, tmp_path):
    """What a playbook sees: kubernetes.core finds no such kind in discovery and fails the task,
    sending nothing."""
    api = cluster_api()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": api.url}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "current-context": "c",
            }
        )
    )
    play = write_play(
        tmp_path / "play.yml",
        hosts="localhost",
        tasks=[
            {
                "name": "Apply an object store",
                "kubernetes.core.k8s": {
                    "definition": OBJECT_STORE,
                    "apply": True,
                    "server_side_apply": {"field_manager": "hello-platform"},
                },
            }
        ],
    )
    result = ansible(
        "ansible-playbook",
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={REPO / '.venv/bin/python'}",
        play,
        env={"KUBECONFIG": str(kubeconfig), "K8S_AUTH_KUBECONFIG": str(kubeconfig)},
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Failed to find exact match for barmancloud.cnpg.io/v1.ObjectStore" in output, output[-3000:]
    assert [method for method, _ in api.requests] == ["GET"] * len(api.requests)
