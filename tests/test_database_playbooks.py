"""The database playbooks' safety checks, run for real with ansible-playbook.

What cannot run here is a GKE cluster. The checks that guard a switchover or a failover read
each region's CloudNativePG Cluster (and the service's slots) through the Kubernetes API, so
each region is played by a small HTTP server on a loopback port (``support.kube_api.RegionApi``);
a kubeconfig names one context per region, as ``gcloud container clusters get-credentials``
would, and a stand-in ``gcloud`` records that the playbooks fetch them. A region with no
server does not answer, like a lost region. Every test asserts that the playbook stops, before
changing anything, with the message that tells the operator what to do.
"""

import base64
import json
import os
import urllib.error
import urllib.request

import pytest
import yaml

from support.kube_api import (
    CLUSTER_PATH,
    PRODUCTION_CONTEXTS,
    SERVICES_PATH,
    RegionApi,
    cluster,
    fake_gcloud,
    missing_namespace,
    run_playbook,
    service_release,
    start_regions,
    write_kubeconfig,
)
from support.kube_cluster import ClusterApi
from support.playbooks import RECORDED_TOOLS, REPO, ansible, write_play
from support.tls import client_certificate, new_authority

CONTEXTS = {
    "europe-west1": "gke_hello-platform-production_europe-west1_hello-production-europe-west1",
    "europe-west4": "gke_hello-platform-production_europe-west4_hello-production-europe-west4",
}
PASSWORD = "a-test-password-never-echoed-4711"
DIGEST = "sha256:" + "c" * 64


@pytest.fixture
def regions(tmp_path):
    """Starts a fake API per region given; returns the kubeconfig path and the servers.

    A region's value is its Cluster, or (Cluster, release) for a region where the service runs.
    """
    servers = []

    def start(**clusters_by_region):
        apis = start_regions(clusters_by_region, servers)
        return write_kubeconfig(tmp_path / "kubeconfig", CONTEXTS, apis), apis

    yield start
    for api in servers:
        api.close()


def writes(apis):
    """{region: [(method, path)]} of every request that would have changed something."""
    return {region: [r for r in api.requests if r[0] != "GET"] for region, api in apis.items()}


def run(playbook, env, kubeconfig, *extra):
    gcloud_log = kubeconfig.parent / "gcloud-calls.jsonl"
    bin_dir = fake_gcloud(kubeconfig.parent / "bin", gcloud_log)
    result = ansible(
        "ansible-playbook",
        "-i",
        f"inventories/{env}",
        f"playbooks/{playbook}",
        "-e",
        f"hello_confirm_environment={env}",
        *RECORDED_TOOLS,
        *extra,
        env={
            "KUBECONFIG": str(kubeconfig),
            "K8S_AUTH_KUBECONFIG": str(kubeconfig),
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
        },
    )
    return result.returncode, result.stdout + result.stderr


def test_database_refuses_without_the_app_password(ansible, regions):
    kubeconfig, _ = regions()
    code, output = run("database.yml", "staging", kubeconfig)
    assert code != 0
    assert "postgres_app_password is missing or unusable" in output
    assert "Ansible\nVault" in output or "Ansible Vault" in output


def test_database_refuses_a_bad_password_without_echoing_it(ansible, regions):
    kubeconfig, _ = regions()
    code, output = run("database.yml", "staging", kubeconfig, "-e", "postgres_app_password=short pw")
    assert code != 0
    assert "postgres_app_password is missing or unusable" in output
    assert "short pw" not in output


def test_switchover_refuses_an_environment_without_a_dr_region(ansible, regions):
    kubeconfig, _ = regions()
    code, output = run("switchover.yml", "staging", kubeconfig)
    assert code != 0
    assert "A switchover moves the primary between two regions" in output


def test_switchover_refuses_while_a_region_does_not_answer(ansible, regions):
    kubeconfig, apis = regions(**{"europe-west1": cluster("europe-west1", "europe-west1")})
    code, output = run("switchover.yml", "production", kubeconfig)
    assert code != 0
    assert "Refusing the switchover: europe-west4 is not healthy (its API server did not answer)" in output
    assert ("GET", CLUSTER_PATH) in apis["europe-west1"].requests


@pytest.mark.parametrize(
    ("unhealthy", "state", "shown"),
    [
        ("europe-west4", {"ready": False, "ready_instances": 2}, "2 of 3 instances ready"),
        ("europe-west1", {"archiving": False}, "'ContinuousArchiving': 'False'"),
    ],
)
def test_switchover_refuses_while_a_region_is_unhealthy(ansible, regions, unhealthy, state, shown):
    kubeconfig, _ = regions(
        **{region: cluster(region, "europe-west1", **(state if region == unhealthy else {})) for region in CONTEXTS}
    )
    code, output = run("switchover.yml", "production", kubeconfig)
    assert code != 0
    assert f"Refusing the switchover: {unhealthy} is not healthy" in output
    assert shown in " ".join(output.split())


def test_failover_needs_the_explicit_confirmation(ansible, regions):
    kubeconfig, _ = regions(**{"europe-west4": cluster("europe-west4", "europe-west1")})
    code, output = run("failover.yml", "production", kubeconfig)
    assert code != 0
    assert "confirm with -e postgres_failover_confirm=europe-west4" in output


def test_failover_refuses_a_wrong_confirmation(ansible, regions):
    kubeconfig, _ = regions(**{"europe-west4": cluster("europe-west4", "europe-west1")})
    code, output = run("failover.yml", "production", kubeconfig, "-e", "postgres_failover_confirm=europe-west1")
    assert code != 0
    assert "(got 'europe-west1')" in output


def test_failover_refuses_while_the_old_primary_still_answers_as_primary(ansible, regions):
    kubeconfig, apis = regions(
        **{
            "europe-west1": cluster("europe-west1", "europe-west1"),
            "europe-west4": cluster("europe-west4", "europe-west1"),
        }
    )
    code, output = run("failover.yml", "production", kubeconfig, "-e", "postgres_failover_confirm=europe-west4")
    assert code != 0
    assert "Refusing the failover: europe-west1 still answers" in output
    assert "two primaries" in output
    # Both regions were read, and nothing was written to either.
    for api in apis.values():
        assert ("GET", CLUSTER_PATH) in api.requests
        assert {method for method, _ in api.requests} == {"GET"}


def test_database_refuses_when_the_regions_disagree_on_the_primary(ansible, regions):
    kubeconfig, _ = regions(
        **{
            "europe-west1": cluster("europe-west1", "europe-west1"),
            "europe-west4": cluster("europe-west4", "europe-west4"),
        }
    )
    code, output = run("database.yml", "production", kubeconfig, "-e", f"postgres_app_password={PASSWORD}")
    assert code != 0
    assert "The regions disagree on which member holds the primary" in output
    assert PASSWORD not in output


@pytest.mark.slow  # a whole playbook run through many tasks
def test_switchover_with_both_regions_healthy_demotes_the_primary_region_first(ansible, regions):
    # europe-west1 became the primary by an earlier switchover, whose promotion left its token
    # in the Cluster: the demotion must clear it, or CloudNativePG's webhook refuses a replica
    # holding a promotion token and every second switchover fails (the stand-in API encodes it).
    kubeconfig, apis = regions(
        **{
            "europe-west1": cluster("europe-west1", "europe-west1", promotion_token="earlier-switchover-token"),
            "europe-west4": cluster("europe-west4", "europe-west1"),
        }
    )
    code, output = run("switchover.yml", "production", kubeconfig)
    # The test API refuses every write, so the run stops at the first one: the demotion.
    assert code != 0
    assert "Refusing" not in output
    assert "Demote the Cluster" in output
    # (kubernetes.core tries a second patch type when the first is refused.)
    assert writes(apis)["europe-west1"]
    assert set(writes(apis)["europe-west1"]) == {("PATCH", CLUSTER_PATH)}
    assert apis["europe-west1"].webhook_refusals == []
    assert writes(apis)["europe-west4"] == []
    # Before the demotion: both regions' credentials fetched, and both regions' slots read (for
    # the release the new primary's region may need).
    calls = [json.loads(line) for line in (kubeconfig.parent / "gcloud-calls.jsonl").read_text().splitlines()]
    assert sorted(call[3] for call in calls if call[:3] == ["container", "clusters", "get-credentials"]) == [
        "hello-production-europe-west1",
        "hello-production-europe-west4",
    ]
    for api in apis.values():
        assert any(method == "GET" and path.split("?")[0] == SERVICES_PATH for method, path in api.requests)


@pytest.mark.slow  # a whole playbook run through many tasks
def test_confirmed_failover_of_a_silent_region_promotes_the_other_one(ansible, regions):
    # The surviving region runs the service already (warm standby): no digest is needed.
    kubeconfig, apis = regions(
        **{"europe-west4": (cluster("europe-west4", "europe-west1"), service_release("green", DIGEST))}
    )
    code, output = run("failover.yml", "production", kubeconfig, "-e", "postgres_failover_confirm=europe-west4")
    # The test API refuses every write, so the run stops at the promotion, which it attempted.
    assert code != 0
    assert "Refusing" not in output
    assert "Promote the Cluster" in output
    assert writes(apis)["europe-west4"]
    assert set(writes(apis)["europe-west4"]) == {("PATCH", CLUSTER_PATH)}


def test_backup_runs_where_the_primary_is_after_a_switchover(ansible, regions):
    # After a switchover both Clusters name europe-west4's member as the primary.
    kubeconfig, apis = regions(
        **{
            "europe-west1": cluster("europe-west1", "europe-west4"),
            "europe-west4": cluster("europe-west4", "europe-west4"),
        }
    )
    code, output = run("backup.yml", "production", kubeconfig)
    # The test API refuses the write, so the run stops at creating the Backup, which it attempted.
    assert code != 0
    assert "Create the Backup" in output
    assert writes(apis)["europe-west1"] == []
    assert writes(apis)["europe-west4"]
    assert {(method, path.split("?")[0]) for method, path in writes(apis)["europe-west4"]} == {
        ("POST", "/apis/postgresql.cnpg.io/v1/namespaces/hello/backups")
    }


def test_failover_refuses_before_promoting_when_the_service_has_nothing_to_run(ansible, regions):
    # The service never ran in the surviving region, and the lost region cannot say its digest.
    kubeconfig, apis = regions(**{"europe-west4": cluster("europe-west4", "europe-west1")})
    code, output = run("failover.yml", "production", kubeconfig, "-e", "postgres_failover_confirm=europe-west4")
    flat = " ".join(output.split())
    assert code != 0
    assert "Nothing was promoted: the service does not run in europe-west4 yet" in flat
    assert "-e @build/production/image.yml" in flat
    assert "Promote the Cluster" not in output
    assert writes(apis)["europe-west4"] == []


@pytest.mark.slow  # a whole playbook run through many tasks
def test_failover_with_a_digest_promotes_a_region_where_the_service_never_ran(ansible, regions):
    kubeconfig, apis = regions(**{"europe-west4": cluster("europe-west4", "europe-west1")})
    code, output = run(
        "failover.yml",
        "production",
        kubeconfig,
        "-e",
        "postgres_failover_confirm=europe-west4",
        "-e",
        f"hello_image_digest={DIGEST}",
    )
    # The test API refuses every write, so the run stops at the promotion, which it attempted.
    assert code != 0
    assert "Nothing was promoted" not in output
    assert "Promote the Cluster" in output
    assert set(writes(apis)["europe-west4"]) == {("PATCH", CLUSTER_PATH)}


@pytest.mark.parametrize("playbook", ["switchover.yml", "failover.yml"])
def test_the_heartbeat_follows_the_primary(playbook):
    """The restore drills read their RPO from the newest heartbeat row a backup holds: a
    heartbeat left in the old primary's region writes into a read-only replica, and none writes
    where the primary is now. Each playbook that moves the primary moves it, after the promotion."""
    plays = yaml.safe_load((REPO / "playbooks" / playbook).read_text())
    steps = [
        (task.get("include_role", task.get("ansible.builtin.include_role", {})), task.get("vars", {}))
        for play in plays
        for task in play.get("tasks", [])
    ]
    names = [(role.get("name"), role.get("tasks_from")) for role, _ in steps]
    heartbeat = names.index(("restore_drill", "heartbeat"))
    assert steps[heartbeat][1] == {"restore_drill_source_host": "{{ postgres_new_primary_host }}"}
    promote = names.index(("postgres", "promote"))
    assert promote < heartbeat


def test_the_app_secret_never_reaches_the_terminal(ansible, tmp_path):
    """roles/postgres/tasks/app_secret.yml run with --diff -v (what an operator runs to see a
    change), against an API that accepts the Secret and answers with it as an API server does:
    neither the password, nor its base64, nor the connection string is printed."""
    api = RegionApi(cluster("europe-west1", "europe-west1"), accept_secrets=True)
    try:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"kind": "kind-hello"}, {"kind": api})
        play = write_play(
            tmp_path / "secret.yml",
            tasks=[
                {
                    "name": "Apply the app secret",
                    "ansible.builtin.include_role": {"name": "postgres", "tasks_from": "app_secret"},
                    "vars": {"postgres_primary_host": "{{ inventory_hostname }}", "postgres_app_password": PASSWORD},
                }
            ],
        )
        result = ansible(
            "ansible-playbook", "-i", "inventories/kind", play, "--diff", "-v", env={"KUBECONFIG": str(kubeconfig)}
        )
    finally:
        api.close()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert ("PATCH", "/api/v1/namespaces/hello/secrets/hello-db-app") in api.writes(), "the Secret was never applied"
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    assert PASSWORD not in output
    assert encoded not in output
    assert "postgresql://" not in output
    uri = f"postgresql://app:{PASSWORD}@hello-db-rw.hello.svc:5432/app?sslmode=verify-full&sslrootcert=/etc/hello-db-ca/ca.crt"
    assert base64.b64encode(uri.encode()).decode() not in output


def region_holding(secrets):
    """An empty cluster with the namespace hello and ``secrets`` ({name: {key: bytes}}) in it."""
    api = ClusterApi()
    api.store(("v1", "namespaces", "", "hello"), {"apiVersion": "v1", "kind": "Namespace", "metadata": {}})
    for name, data in secrets.items():
        encoded = {key: base64.b64encode(value).decode() for key, value in data.items()}
        kind = "kubernetes.io/tls" if "tls.crt" in data else "Opaque"
        secret = {"apiVersion": "v1", "kind": "Secret", "type": kind, "metadata": {}, "data": encoded}
        api.store(("v1", "secrets", "hello", name), secret)
    return api


def secret_data(api, name):
    """{key: bytes} of Secret ``name`` in hello, or None."""
    found = api.get("v1", "secrets", name, "hello")
    return found and {key: base64.b64decode(value) for key, value in found["data"].items()}


def copy_certificates(ansible, tmp_path, inventory, contexts, apis):
    """roles/postgres tasks/primary_certificates.yml, with --diff -v (what an operator runs to see
    a change), where postgres_primary_host is the inventory's first region."""
    play = write_play(
        tmp_path / "certificates.yml",
        tasks=[
            {
                "name": "Copy the primary's certificates",
                "ansible.builtin.include_role": {"name": "postgres", "tasks_from": "primary_certificates"},
                "vars": {"postgres_primary_host": "{{ groups['gke_clusters'][0] }}"},
            }
        ],
    )
    result = run_playbook(ansible, tmp_path, contexts, apis, "-i", f"inventories/{inventory}", play, "--diff", "-v")
    return result.returncode, result.stdout + result.stderr


def printed_anywhere(output, pem):
    """Whether any part of ``pem`` (a PEM file) or of its base64 reaches ``output``."""
    body = [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]
    return any(line in output for line in body) or base64.b64encode(pem).decode()[:40] in output


def test_the_primary_client_certificate_reaches_the_replica_region_and_never_the_terminal(ansible, tmp_path):
    """CloudNativePG 1.30.0 keeps a Cluster's streaming_replica certificate in <cluster>-replication
    (keys tls.crt, tls.key; api/v1/cluster_types.go ReplicationSecretSuffix, pkg/certs/certs.go
    GenerateCertificateSecret) and its CA in <cluster>-ca (ca.crt, and the CA's key ca.key). The
    replica region streams with a copy of the primary's under another name, since its own
    Cluster, of the same name, has its own <cluster>-replication; the primary region keeps the
    same copy for when it is demoted."""
    primary_ca = new_authority("hello-db")
    primary = client_certificate(primary_ca, "streaming_replica")
    dr_own = client_certificate(new_authority("hello-db"), "streaming_replica")
    primary_secrets = {
        "hello-db-ca": {"ca.crt": primary_ca.pem, "ca.key": b"the primary CA's private key"},
        "hello-db-replication": {"tls.crt": primary.certificate, "tls.key": primary.key},
    }
    apis = {
        "europe-west1": region_holding(primary_secrets),
        "europe-west4": region_holding(
            {"hello-db-replication": {"tls.crt": dr_own.certificate, "tls.key": dr_own.key}}
        ),
    }
    code, output = copy_certificates(ansible, tmp_path, "production", PRODUCTION_CONTEXTS, apis)
    assert code == 0, output[-4000:]
    for region, api in apis.items():
        copy = api.get("v1", "secrets", "hello-db-primary-replication", "hello")
        assert copy and copy["type"] == "kubernetes.io/tls", region
        assert secret_data(api, "hello-db-primary-replication") == primary_secrets["hello-db-replication"], region
        # Only the CA's certificate: its key stays where it is.
        assert secret_data(api, "hello-db-primary-ca") == {"ca.crt": primary_ca.pem}, region
    # The replica region's own Cluster keeps its own certificate.
    assert secret_data(apis["europe-west4"], "hello-db-replication") == {
        "tls.crt": dr_own.certificate,
        "tls.key": dr_own.key,
    }
    assert not printed_anywhere(output, primary.key)
    assert "the primary CA's private key" not in output
    assert base64.b64encode(b"the primary CA's private key").decode() not in output


def test_without_a_dr_region_the_copy_of_the_client_certificate_is_removed(ansible, tmp_path):
    authority = new_authority("hello-db")
    own = client_certificate(authority, "streaming_replica")
    api = region_holding(
        {
            "hello-db-ca": {"ca.crt": authority.pem, "ca.key": b"key"},
            "hello-db-replication": {"tls.crt": own.certificate, "tls.key": own.key},
            # Left from a time the environment had a DR region.
            "hello-db-primary-replication": {"tls.crt": own.certificate, "tls.key": own.key},
        }
    )
    code, output = copy_certificates(ansible, tmp_path, "kind", {"kind": "kind-hello"}, {"kind": api})
    assert code == 0, output[-4000:]
    assert secret_data(api, "hello-db-primary-replication") is None
    assert secret_data(api, "hello-db-primary-ca") == {"ca.crt": authority.pem}
    assert not printed_anywhere(output, own.key)


def test_database_refuses_to_schedule_jobs_without_a_recorded_tools_image(ansible, regions, tmp_path):
    """The logical backup CronJob runs the tools image by the digest playbooks/image.yml recorded:
    without a record the run stops before changing anything and says which playbook to run."""
    kubeconfig, apis = regions(
        **{
            "europe-west1": cluster("europe-west1", "europe-west1"),
            "europe-west4": cluster("europe-west4", "europe-west1"),
        }
    )
    code, output = run(
        "database.yml",
        "production",
        kubeconfig,
        "-e",
        f"postgres_app_password={PASSWORD}",
        "-e",
        f"hello_image_record_file={tmp_path / 'no-record.yml'}",
        "-e",
        "hello_tools_image_reference=",
    )
    flat = " ".join(output.split())
    assert code != 0
    assert (
        f"no tools image is recorded for production ({tmp_path / 'no-record.yml'}). Run playbooks/image.yml first"
        in flat
    )
    assert writes(apis) == {"europe-west1": [], "europe-west4": []}


def test_database_refuses_a_tools_image_given_by_tag(ansible, regions):
    kubeconfig, _ = regions(**{"europe-west1": cluster("europe-west1", "europe-west1")})
    code, output = run(
        "database.yml",
        "staging",
        kubeconfig,
        "-e",
        f"postgres_app_password={PASSWORD}",
        "-e",
        "backups_logical_image=x/pgtools:1",
    )
    assert code != 0
    assert "the logical backup CronJob runs an image by digest only" in " ".join(output.split())


def test_the_stand_in_api_refuses_a_create_into_a_missing_namespace_like_the_api_server():
    """support.kube_api.missing_namespace encodes NamespaceLifecycle (k8s.io/apiserver v0.35.0,
    cited there): the exact Status body, for a create and for a server-side apply that creates;
    once the namespace exists (a dry run does not create it), the same write reaches the
    read-only store."""
    api = RegionApi(None)

    def send(method, path, body):
        request = urllib.request.Request(api.url + path, data=json.dumps(body).encode(), method=method)
        request.add_header("Content-Type", "application/apply-patch+yaml")
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "hello"}}
    try:
        assert send("POST", "/api/v1/namespaces/hello/secrets", secret) == (
            404,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": 'namespaces "hello" not found',
                "reason": "NotFound",
                "details": {"name": "hello", "kind": "namespaces"},
                "code": 404,
            },
        )
        store = "/apis/barmancloud.cnpg.io/v1/namespaces/hello/objectstores/hello-db-kind"
        assert send("PATCH", f"{store}?fieldManager=x", {}) == (404, missing_namespace("hello"))
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hello"}}
        # A dry run (what --check sends) creates nothing.
        assert send("PATCH", "/api/v1/namespaces/hello?fieldManager=x&dryRun=All", namespace)[0] == 200
        assert send("PATCH", f"{store}?fieldManager=x", {})[0] == 404
        assert api.namespace_refusals == ["hello"] * 3
        assert send("PATCH", "/api/v1/namespaces/hello?fieldManager=x", namespace)[0] == 200
        code, status = send("POST", "/api/v1/namespaces/hello/secrets", secret)
        assert (code, status["reason"]) == (405, "MethodNotAllowed")
        # kube-system exists on every cluster.
        assert send("POST", "/api/v1/namespaces/kube-system/secrets", secret)[0] == 405
    finally:
        api.close()


@pytest.mark.slow  # a whole playbook run through many tasks
def test_database_on_an_empty_cluster_creates_the_namespace_before_the_object_stores(ansible, tmp_path):
    """A first run of database.yml on kind against an empty cluster that refuses a create into a
    missing namespace like the API server (support.kube_api): the object stores' namespace exists
    by the time they are applied. (The operators are left out, as where the cluster's owner
    installs them: Helm does not run here. The test API refuses the first object it is given.)"""
    api = RegionApi(None)
    try:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"kind": "kind-hello"}, {"kind": api})
        code, output = run(
            "database.yml",
            "kind",
            kubeconfig,
            "-e",
            f"postgres_app_password={PASSWORD}",
            "-e",
            json.dumps({"postgres_install_operators": False}),
        )
    finally:
        api.close()
    assert "TASK [backups : Apply the object stores]" in output
    # Without the namespace first: 'namespaces "hello" not found' (support.kube_api.missing_namespace).
    assert api.namespace_refusals == [], output[-3000:]
    assert "read-only test API" in output
    writes = api.writes()
    # The namespace, its network policies (in the namespace's file), then the first object store.
    assert writes[0] == ("PATCH", "/api/v1/namespaces/hello")
    assert all(path.startswith("/apis/networking.k8s.io/v1/namespaces/hello/") for _, path in writes[1:-1])
    assert writes[-1] == ("PATCH", "/apis/barmancloud.cnpg.io/v1/namespaces/hello/objectstores/hello-db-kind")
    assert code != 0
