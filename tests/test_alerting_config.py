"""playbooks/alerting.yml routes every cluster's alerts: pages to the page receiver, the rest to
the ticket receiver, through the managed Alertmanager of Managed Service for Prometheus.

The managed Alertmanager reads Secret `alertmanager`, key `alertmanager.yaml`, in namespace
`gmp-public` (GoogleCloudPlatform/prometheus-engine, pkg/operator/operator_config.go:
AlertmanagerPublicSecretName, AlertmanagerPublicSecretKey; pkg/operator/operator.go:
DefaultPublicNamespace). Real ansible-playbook runs of the production inventory against one
stand-in API per region (tests/support/kube_api.py); the configuration they apply is checked by
Alertmanager's own amtool (Debian's prometheus-alertmanager 0.25): it loads, and it routes each
severity where docs/slos.md says. The receivers hold keys, so no run may print them.
"""

import shutil
import subprocess

import yaml

from support.kube_api import PRODUCTION_CONTEXTS, RegionApi, cluster, run_playbook
from support.playbooks import REPO

CONTEXTS = PRODUCTION_CONTEXTS
SECRET_PATH = "/api/v1/namespaces/gmp-public/secrets/alertmanager"
PAGER_KEY = "pager-routing-key-4b1d9e"
TICKET_TOKEN = "ticket-token-77c2a0"
RECEIVERS = {
    "page": {"pagerduty_configs": [{"routing_key": PAGER_KEY}]},
    "ticket": {"webhook_configs": [{"url": f"https://tickets.example.com/hook?token={TICKET_TOKEN}"}]},
}


def amtool(*args):
    binary = shutil.which("amtool")
    assert binary, "amtool is missing: scripts/bootstrap installs Debian's prometheus-alertmanager"
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, check=False)


def run_alerting(ansible, tmp_path, receivers, *extra):
    secrets = tmp_path / "secrets.yml"
    secrets.write_text(yaml.safe_dump({"alerting_receivers": receivers}))
    apis = {region: RegionApi(cluster(region, "europe-west1"), accept_secrets=True) for region in CONTEXTS}
    result = run_playbook(
        ansible,
        tmp_path,
        CONTEXTS,
        apis,
        "-i",
        "inventories/production",
        "playbooks/alerting.yml",
        "-e",
        "hello_confirm_environment=production",
        "-e",
        f"@{secrets}",
        *extra,
    )
    return result, apis


def test_every_cluster_pages_for_page_and_tickets_the_rest_without_printing_a_key(ansible, tmp_path):
    result, apis = run_alerting(ansible, tmp_path, RECEIVERS, "--diff", "-v")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert PAGER_KEY not in output and TICKET_TOKEN not in output
    for region, api in apis.items():
        assert api.writes() == [("PATCH", SECRET_PATH)], region
        config = tmp_path / f"alertmanager-{region}.yaml"
        config.write_text(api.applied[SECRET_PATH]["stringData"]["alertmanager.yaml"])
        checked = amtool("check-config", config)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"({region})" in config.read_text()
        for labels, receiver in (
            (["severity=page", "alertname=HelloAvailabilityErrorBudgetBurnFast"], "page"),
            (["severity=ticket", "alertname=HelloBaseBackupTooOld"], "ticket"),
            (["alertname=HelloSomethingWithoutSeverity"], "ticket"),
        ):
            routed = amtool("config", "routes", "test", f"--config.file={config}", *labels)
            assert routed.stdout.strip() == receiver, (labels, routed.stdout, routed.stderr)
    # The check has teeth: a configuration whose route names a receiver it lacks is refused.
    broken = yaml.safe_load(config.read_text())
    broken["receivers"] = [r for r in broken["receivers"] if r["name"] != "page"]
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    assert amtool("check-config", tmp_path / "broken.yaml").returncode != 0


def test_a_run_without_both_receivers_stops_before_any_cluster_call(ansible, tmp_path):
    result, apis = run_alerting(ansible, tmp_path, {"page": RECEIVERS["page"]})
    flat = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "set alerting_receivers with a `page` and a `ticket` receiver" in flat
    assert "-e @secrets.yml" in flat
    assert all(api.requests == [] for api in apis.values())
    assert not (tmp_path / "gcloud-calls.jsonl").exists()


def test_the_role_is_in_site_before_the_database():
    site = yaml.safe_load((REPO / "playbooks/site.yml").read_text())
    plays = [play.get("ansible.builtin.import_playbook") for play in site]
    assert plays.index("alerting.yml") < plays.index("database.yml")
