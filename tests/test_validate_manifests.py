"""scripts/validate-manifests: the Kubernetes schema for built-in kinds, the CRDs for the rest."""

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from support import REPO

CRD_DIR = os.environ.get("HELLO_CRD_DIR")

CONFIGMAP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {LOG_FORMAT: json}
"""
CNPG_CLUSTER = """
apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata: {name: hello-db}
spec:
  instances: 3
  storage: {size: 10Gi}
"""

# Managed Service for Prometheus' kind, checked against k8s/gke-crds/ with or without HELLO_CRD_DIR.
POD_MONITORING = """
apiVersion: monitoring.googleapis.com/v1
kind: PodMonitoring
metadata: {name: hello-db, namespace: hello}
spec:
  selector:
    matchLabels: {cnpg.io/cluster: hello-db, cnpg.io/podRole: instance}
  endpoints:
    - port: metrics
      interval: 30s
  targetLabels:
    fromPod:
      - from: cnpg.io/instanceRole
        to: instance_role
"""


def validate(tmp_path, manifest, crd_dir=None):
    (tmp_path / "objects.yml").write_text(textwrap.dedent(manifest))
    env = {k: v for k, v in os.environ.items() if k != "HELLO_CRD_DIR"}
    if crd_dir:
        env["HELLO_CRD_DIR"] = str(crd_dir)
    result = subprocess.run(
        [REPO / "scripts" / "validate-manifests", tmp_path], env=env, capture_output=True, text=True, check=False
    )
    return result.returncode, result.stdout + result.stderr


@pytest.fixture
def crd_dir(tmp_path_factory):
    """A CRD folder: the pinned one when HELLO_CRD_DIR is set, else a small CRD written here."""
    if CRD_DIR:
        return Path(CRD_DIR)
    folder = tmp_path_factory.mktemp("crds")
    (folder / "cluster.yml").write_text(
        textwrap.dedent("""
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata: {name: clusters.postgresql.cnpg.io}
        spec:
          group: postgresql.cnpg.io
          names: {kind: Cluster, plural: clusters}
          scope: Namespaced
          versions:
            - name: v1
              served: true
              storage: true
              schema:
                openAPIV3Schema:
                  type: object
                  properties:
                    apiVersion: {type: string}
                    kind: {type: string}
                    metadata: {type: object}
                    spec:
                      type: object
                      required: [instances]
                      properties:
                        instances: {type: integer, minimum: 1}
                        storage:
                          type: object
                          properties:
                            size: {type: string}
    """)
    )
    return folder


def test_valid_objects_pass(tmp_path, crd_dir):
    code, output = validate(tmp_path, CONFIGMAP + "---" + CNPG_CLUSTER, crd_dir)
    assert code == 0, output
    assert "2 objects checked" in output and "0 invalid" in output


def test_unknown_field_in_a_builtin_kind_fails(tmp_path):
    code, output = validate(tmp_path, CONFIGMAP + "extra: true\n")
    assert code == 1
    assert "ConfigMap settings" in output and "'extra' was unexpected" in output


def test_wrong_type_in_a_builtin_kind_fails(tmp_path):
    code, output = validate(tmp_path, CONFIGMAP.replace("{LOG_FORMAT: json}", "[json]"))
    assert code == 1
    assert "data" in output


def test_custom_resource_is_checked_against_its_crd(tmp_path, crd_dir):
    code, output = validate(tmp_path, CNPG_CLUSTER.replace("instances: 3", "instances: 0"), crd_dir)
    assert code == 1
    assert "Cluster hello-db" in output and "spec.instances" in output


def test_unknown_field_in_a_custom_resource_fails(tmp_path, crd_dir):
    code, output = validate(tmp_path, CNPG_CLUSTER + "  instancez: 3\n", crd_dir)
    assert code == 1
    assert "'instancez' was unexpected" in output


def test_custom_resource_without_a_crd_fails(tmp_path, crd_dir):
    code, output = validate(tmp_path, "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", crd_dir)
    assert code == 1
    assert "unknown kind Widget in example.com/v1" in output


def test_without_crd_dir_it_warns_and_checks_builtin_kinds_only(tmp_path):
    code, output = validate(tmp_path, CONFIGMAP + "---" + CNPG_CLUSTER.replace("instances: 3", "instances: 0"))
    assert code == 0, output
    assert "WARNING: HELLO_CRD_DIR is not set" in output
    assert "skipped Cluster hello-db" in output


def test_missing_folder_is_a_usage_error(tmp_path):
    result = subprocess.run(
        [REPO / "scripts" / "validate-manifests", tmp_path / "nowhere"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "run scripts/render-manifests first" in result.stderr


def test_a_pod_monitoring_is_checked_against_the_repositorys_gke_schema(tmp_path):
    code, output = validate(tmp_path, POD_MONITORING)
    assert code == 0, output
    assert "1 objects checked" in output and "skipped" not in output


@pytest.mark.parametrize(
    "change, problem",
    [
        # An unknown field (a typo of `port`).
        (("    - port: metrics", "    - portName: metrics"), "'portName' was unexpected"),
        # A mistyped one: an interval that is no Prometheus duration.
        (("interval: 30s", "interval: 30"), "spec.endpoints.0.interval: 30 is not of type 'string'"),
        (("interval: 30s", "interval: 30sec"), "spec.endpoints.0.interval: '30sec' does not match"),
        # A port number out of range.
        (("port: metrics", "port: 0"), "spec.endpoints.0.port"),
        # A label the collectors reserve for themselves.
        (("to: instance_role", "to: namespace"), "spec.targetLabels.fromPod.0.to"),
        # The Prometheus Operator's field name in the GKE kind.
        (("  endpoints:", "  podMetricsEndpoints:"), "'endpoints' is a required property"),
    ],
)
def test_a_wrong_pod_monitoring_is_rejected(tmp_path, change, problem):
    code, output = validate(tmp_path, POD_MONITORING.replace(*change))
    assert code == 1, output
    assert "PodMonitoring hello-db" in output and problem in output
