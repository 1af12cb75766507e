"""DNS after a switchover or a failover: roles/hello_app's take_over step points the service's host
names at the new primary region's Gateway through Cloud DNS, where the inventory names a managed
zone, and prints the step for the operator where it does not.

Each case runs the real ansible-playbook: one play that includes hello_app's ``take_over`` entry
in europe-west4 (production's DR region) of a copy of the production inventory, with the service
serving there already (its state given as the read step would have left it), against a stand-in
Kubernetes API holding Gateway ``hello`` with an address (``support.kube_cluster.ClusterApi``)
and the gcloud stand-in (``support.gcloud.FakeProject``), whose command lines the real gcloud
checks. The stand-in keeps the zone's record sets and changes, enforces Cloud DNS's rule that a
change's deletions match the existing record sets exactly, and reports a change ``pending`` at
its first read and ``done`` after, so the run's wait is exercised.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

from support import REPO
from support.gcloud import FakeProject
from support.kube_api import PRODUCTION_CONTEXTS
from support.kube_cluster import ClusterApi, crds_of
from support.playbooks import edit_vars, write_play

ENV = "production"
PROJECT = "hello-platform-production"
HOST = "europe-west4"
ZONE = "hello-public"
# Documentation names and addresses (RFC 2606, RFC 5737): no real domain.
DOMAIN = "hello.example.com."
HOSTNAMES = ["api.hello.example.com", "Hello.Example.com"]
RECORDS = ["api.hello.example.com.", "hello.example.com."]
GATEWAY_ADDRESS = "203.0.113.40"
OLD_ADDRESS = "198.51.100.10"
DIGEST = "sha256:" + "4" * 64
SOA = {
    "kind": "dns#resourceRecordSet",
    "name": DOMAIN,
    "type": "SOA",
    "ttl": 21600,
    "rrdatas": ["ns-cloud-a1.googledomains.com. cloud-dns-hostmaster.google.com. 1 21600 3600 259200 300"],
}
NS = {
    "kind": "dns#resourceRecordSet",
    "name": DOMAIN,
    "type": "NS",
    "ttl": 21600,
    "rrdatas": ["ns-cloud-a1.googledomains.com.", "ns-cloud-a2.googledomains.com."],
}


def a_record(name, address, ttl):
    return {"kind": "dns#resourceRecordSet", "name": name, "type": "A", "ttl": ttl, "rrdatas": [address]}


def gateway_crd():
    """The Gateway API's Gateway CRD (the pinned standard channel), serving gateway.networking.k8s.io/v1
    only: the stand-in API lists one version per group in its discovery."""
    (crd,) = [
        c for c in crds_of(os.environ["HELLO_CRD_DIR"]) if c["metadata"]["name"] == "gateways.gateway.networking.k8s.io"
    ]
    crd["spec"]["versions"] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return crd


class Region:
    """The project, europe-west4's cluster holding Gateway hello, and runs of take_over there."""

    def __init__(self, root, gcloud_config):
        self.project = FakeProject(root, ENV, gcloud_config)
        edit_vars(
            self.project.inventory / "group_vars/all/hello_app.yml",
            hello_app_hostnames=HOSTNAMES,
            hello_app_dns_managed_zone=ZONE,
            # A bound for the waits when something is wrong; the stand-ins answer at once.
            hello_app_dns_wait_seconds=9,
        )
        self.cluster = ClusterApi([gateway_crd()])
        self.cluster.store(
            ("gateway.networking.k8s.io/v1", "gateways", "hello", "hello"),
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": {},
                "spec": {"gatewayClassName": "gke-l7-global-external-managed", "listeners": []},
                "status": {"addresses": [{"type": "IPAddress", "value": GATEWAY_ADDRESS}]},
            },
        )
        kubeconfig = root / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": HOST, "cluster": {"server": self.cluster.url}}],
                    "contexts": [{"name": PRODUCTION_CONTEXTS[HOST], "context": {"cluster": HOST, "user": "test"}}],
                    "users": [{"name": "test", "user": {"token": "test"}}],
                    "current-context": PRODUCTION_CONTEXTS[HOST],
                }
            )
        )
        self.project.env_vars.update(KUBECONFIG=str(kubeconfig), K8S_AUTH_KUBECONFIG=str(kubeconfig))
        self.play = write_play(
            root / "take-over.yml",
            hosts=HOST,
            tasks=[
                {
                    "name": "Take over",
                    "ansible.builtin.include_role": {"name": "hello_app", "tasks_from": "take_over"},
                    "vars": {"hello_app_previous_host": "europe-west1"},
                },
                {"name": "Show the output", "ansible.builtin.debug": {"var": "hello_app_dns_pointed"}},
                {
                    "name": "Print the next steps of a failover",
                    "ansible.builtin.include_role": {"name": "postgres", "tasks_from": "failover_next_steps"},
                    "vars": {"postgres_new_primary_host": HOST, "postgres_old_primary_host": "europe-west1"},
                },
            ],
        )
        # What read_state.yml leaves before the move: this region serves a release (warm standby).
        self.extra = root / "extra.yml"
        self.extra.write_text(
            yaml.safe_dump(
                {
                    "__hello_app_state": {"live": "green", "slots": {"green": {"digest": DIGEST}}},
                    "hello_image_digest": DIGEST,
                    "hello_image_version": "",
                    "hello_image_commit": "",
                    # What roles/postgres's promotion read (printed in the failover's next steps).
                    "__postgres_new_primary": "hello-db-europe-west4",
                }
            )
        )

    def zone_with(self, *records):
        """Sets the project's one managed zone, holding SOA, NS and ``records``."""
        zone = {
            "kind": "dns#managedZone",
            "name": ZONE,
            "dnsName": DOMAIN,
            "visibility": "public",
            "nameServers": NS["rrdatas"],
        }
        state = {"dns_zones": {f"{PROJECT}/{ZONE}": {"zone": zone, "rrsets": [SOA, NS, *records], "changes": []}}}
        self.project.state.write_text(json.dumps(state))

    def zone(self):
        return json.loads(self.project.state.read_text())["dns_zones"][f"{PROJECT}/{ZONE}"]

    def a_records(self):
        return sorted((r for r in self.zone()["rrsets"] if r["type"] == "A"), key=lambda r: r["name"])

    def run(self, *extra, check_command_lines=False):
        """Runs the play; the real gcloud checks the gcloud command lines only when asked (it
        takes seconds per distinct line)."""
        real = self.project.env_vars.pop("FAKE_GCLOUD_REAL", None)
        if check_command_lines:
            assert real, "the gcloud CLI checks the stand-in's command lines: install it"
            self.project.env_vars["FAKE_GCLOUD_REAL"] = real
        try:
            return self.project.run("-e", f"@{self.extra}", *extra, playbook=self.play)
        finally:
            if real:
                self.project.env_vars["FAKE_GCLOUD_REAL"] = real

    def close(self):
        self.cluster.close()


@pytest.fixture(scope="module")
def region(ansible, tmp_path_factory, gcloud_config):
    made = Region(tmp_path_factory.mktemp("dns"), gcloud_config)
    yield made
    made.close()


def flat(output):
    return " ".join(output.split())


def recap(output):
    """The recap counters of europe-west4: {"ok": n, "changed": n, "failed": n, ...}."""
    line = next(line for line in output.splitlines() if line.startswith(HOST) and "ok=" in line)
    return {key: int(value) for key, value in (item.split("=") for item in line.split(":", 1)[1].split())}


def dns_changes(calls):
    return [call for call in calls if call[:4] == ["dns", "record-sets", "transaction", "execute"]]


def test_a_missing_record_is_created_with_the_gateway_address_and_waited_on(region):
    region.zone_with()
    code, output, calls = region.run()
    assert code == 0, output
    assert region.a_records() == [a_record(name, GATEWAY_ADDRESS, 60) for name in RECORDS]
    (change,) = region.zone()["changes"]
    assert change["status"] == "done"
    # One change for both host names, its SOA serial raised as gcloud's transaction does.
    assert [r["name"] for r in change["additions"] if r["type"] == "A"] == RECORDS
    assert [r["type"] for r in change["deletions"]] == ["SOA"]
    # Waited: read pending, then done.
    assert [c for c in calls if c[:4] == ["dns", "record-sets", "changes", "describe"]] == 2 * [
        ["dns", "record-sets", "changes", "describe", "1", "--format=json", f"--zone={ZONE}", f"--project={PROJECT}"]
    ]
    text = flat(output)
    assert (
        f"Pointed api.hello.example.com. A at {GATEWAY_ADDRESS} (TTL 60), was no record; Cloud DNS change 1 done"
        in text
    )
    assert f"Point DNS at the Gateway ({HOST}):" in text
    assert "hello_app_dns_pointed: true" in output
    assert "DNS is left to you" not in text
    assert "DNS too: this run pointed the service's host names at europe-west4's Gateway" in text.replace("''", "'")


def test_a_record_of_the_old_region_is_replaced_and_a_second_run_changes_nothing(region):
    region.zone_with(a_record(RECORDS[0], OLD_ADDRESS, 300), a_record(RECORDS[1], GATEWAY_ADDRESS, 60))
    # This run makes every gcloud command of the step: the real gcloud checks each command line.
    code, output, calls = region.run(check_command_lines=True)
    assert code == 0, output
    assert region.a_records() == [a_record(name, GATEWAY_ADDRESS, 60) for name in RECORDS]
    (change,) = region.zone()["changes"]
    # Only the record that differed; its deletion is the record as it was.
    assert a_record(RECORDS[0], OLD_ADDRESS, 300) in change["deletions"]
    assert [r for r in change["additions"] if r["type"] == "A"] == [a_record(RECORDS[0], GATEWAY_ADDRESS, 60)]
    assert f"was {OLD_ADDRESS} (TTL 300)" in flat(output)
    assert recap(output)["changed"] == 1

    code, output, calls = region.run()
    assert code == 0, output
    assert recap(output)["changed"] == 0
    assert dns_changes(calls) == []
    assert len(region.zone()["changes"]) == 1
    assert "point at 203.0.113.40 (TTL 60) already; DNS was not changed" in flat(output)


def test_a_missing_gateway_stops_the_step_before_any_cloud_dns_call(region):
    region.zone_with()
    key = ("gateway.networking.k8s.io/v1", "gateways", "hello", "hello")
    gateway = region.cluster.objects.pop(key)
    try:
        code, output, calls = region.run()
    finally:
        region.cluster.objects[key] = gateway
    text = flat(output)
    assert code != 0
    assert f"Gateway hello in hello ({HOST}) does not exist, so DNS was not changed" in text
    assert calls == []


def test_a_zone_that_does_not_exist_stops_the_step_with_the_fix(region):
    region.zone_with(a_record(RECORDS[0], OLD_ADDRESS, 300))
    before = region.project.snapshot()
    code, output, calls = region.run("-e", "hello_app_dns_managed_zone=hello-typo")
    text = flat(output)
    assert code != 0
    assert f"Cloud DNS could not read the managed zone hello-typo in project {PROJECT}" in text
    assert "The 'parameters.managedZone' resource named 'hello-typo' does not exist" in text
    assert "gcloud dns managed-zones create hello-typo" in text
    assert 'set hello_app_dns_managed_zone to "" to point DNS by hand' in text
    assert dns_changes(calls) == []
    assert region.project.snapshot() == before


def test_a_host_name_outside_the_zone_is_refused(region):
    region.zone_with()
    before = region.project.snapshot()
    code, output, calls = region.run(
        "-e", json.dumps({"hello_app_hostnames": ["api.hello.example.com", "www.example.org"]})
    )
    text = flat(output)
    assert code != 0
    assert f"These host names are not inside the managed zone {ZONE} ({DOMAIN}): www.example.org." in text
    assert not [c for c in calls if c[:3] == ["dns", "record-sets", "transaction"]]
    assert region.project.snapshot() == before


def test_without_a_zone_the_step_is_printed_for_the_operator(region):
    region.zone_with()
    before = region.project.snapshot()
    code, output, calls = region.run("-e", "hello_app_dns_managed_zone=")
    text = flat(output)
    assert code == 0, output
    assert "DNS is left to you" in text
    assert "point api.hello.example.com, Hello.Example.com at this region" in text
    assert "Left to you: point DNS at europe-west4's Gateway" in text.replace("''", "'")
    assert f"kubectl --context {PRODUCTION_CONTEXTS[HOST]} -n hello get gateway hello" in text
    assert "hello_app_dns_pointed: false" in output
    assert calls == []
    assert region.project.snapshot() == before


def test_the_stand_in_refuses_a_deletion_that_does_not_match_exactly(region, tmp_path):
    """Cloud DNS refuses a change whose deletion differs from the record set in any field (here the
    TTL): what makes the run's deletion of the record as it read it worth testing."""
    region.zone_with(a_record(RECORDS[0], OLD_ADDRESS, 300))
    stale = {
        "additions": [a_record(RECORDS[0], GATEWAY_ADDRESS, 60)],
        "deletions": [a_record(RECORDS[0], OLD_ADDRESS, 60)],
    }
    transaction = tmp_path / "transaction.yaml"
    transaction.write_text(json.dumps(stale))
    env = {**os.environ, **region.project.env_vars}
    env.pop("FAKE_GCLOUD_REAL", None)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests/support/fake_gcloud.py"),
            "dns",
            "record-sets",
            "transaction",
            "execute",
            f"--transaction-file={transaction}",
            f"--zone={ZONE}",
            f"--project={PROJECT}",
            "--format=json",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "does not match the existing record set exactly" in result.stderr
    assert region.a_records() == [a_record(RECORDS[0], OLD_ADDRESS, 300)]
    assert region.zone()["changes"] == []
