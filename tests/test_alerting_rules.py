"""The alerting and recording rules every environment renders, checked by promtool.

The roles render Managed Service for Prometheus' Rules and ClusterRules (hello_monitoring gmp):
the service's SLOs (k8s/hello/rules.yml.j2), the database's alerts (k8s/postgres/), the backups'
(k8s/backups/) and, with a Pushgateway, the restore drills' (k8s/drill/). Their spec.groups are
Prometheus rule groups, so promtool, from Debian's prometheus package (scripts/bootstrap),
checks every one (``promtool check rules``) and runs the unit tests in tests/promtool/
(``promtool test rules``) against production's rules: synthetic series for each alert, which it
must fire on, and healthy ones it must stay silent on; the burn-rate pairs fire at the share of
the error budget docs/slos.md states. Annotations are left out of the unit tests' copy (promtool
would compare their text); the policy tests here read them instead: every alert carries a
severity, a summary naming its cluster and region, and a runbook_url to a section of
docs/runbooks/ that exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from support import REPO
from support.render import ENVIRONMENTS, load_objects

RULE_KINDS = ("Rules", "ClusterRules")
SEVERITIES = {"page", "ticket"}
PROMTOOL_TESTS = REPO / "tests" / "promtool"
# The rule file each unit test reads (tests/promtool/*.test.yml), by the object's name.
UNIT_TEST_FILES = {
    "hello-slo": "service.yml",
    "hello-db": "database.yml",
    "hello-db-backups": "backups.yml",
    "hello-restore-drill": "drill.yml",
}


def host_vars(env: str, host: str) -> dict:
    return yaml.safe_load((REPO / "inventories" / env / "host_vars" / f"{host}.yml").read_text())


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: run scripts/bootstrap (Debian package prometheus)"
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def rules(rendered_root) -> dict[tuple[str, str], list[dict]]:
    """{(env, host): every rule object rendered for that cluster}."""
    found = {}
    for env in ENVIRONMENTS:
        for host in sorted((rendered_root / env).iterdir()):
            if host.is_dir():
                found[(env, host.name)] = [o for o in load_objects(host) if o["kind"] in RULE_KINDS]
    return found


def alerts_of(objects: list[dict]) -> list[dict]:
    return [rule for o in objects for group in o["spec"]["groups"] for rule in group["rules"] if "alert" in rule]


def write_rule_file(path: Path, rule_object: dict, annotations: bool = True) -> Path:
    groups = rule_object["spec"]["groups"]
    if not annotations:
        groups = [
            {**group, "rules": [{k: v for k, v in rule.items() if k != "annotations"} for rule in group["rules"]]}
            for group in groups
        ]
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def test_every_gke_cluster_renders_the_slo_database_and_backup_rules(rules):
    for (env, host), objects in rules.items():
        names = {(o["kind"], o["metadata"]["name"]) for o in objects}
        if env == "kind":
            # kind runs no Prometheus (inventories/kind: hello_monitoring none).
            assert names == set(), f"kind renders rules: {names}"
            continue
        assert {("Rules", "hello-slo"), ("Rules", "hello-db"), ("Rules", "hello-db-backups")} <= names, (env, host)
        for o in objects:
            if o["kind"] == "Rules":
                assert o["metadata"]["namespace"] == "hello"
    # The drills' alerts go where the drills run, beside their Pushgateway: production's DR
    # region, staging's only region.
    drills = [key for key, objects in rules.items() if any(o["kind"] == "ClusterRules" for o in objects)]
    assert drills == [("production", "europe-west4"), ("staging", "europe-west1")]


def test_promtool_accepts_every_rendered_rule_group(rules, tmp_path):
    files = []
    for (env, host), objects in rules.items():
        for o in objects:
            files.append(write_rule_file(tmp_path / f"{env}-{host}-{o['metadata']['name']}.yml", o))
    assert len(files) >= 8
    checked = promtool("check", "rules", *map(str, files))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("SUCCESS") == len(files), checked.stdout


def production_rules(rules) -> list[dict]:
    """The rules the unit tests read: production's primary region, and the drills' from the DR region."""
    return rules[("production", "europe-west1")] + [
        o for o in rules[("production", "europe-west4")] if o["kind"] == "ClusterRules"
    ]


@pytest.mark.parametrize("unit_test", sorted(PROMTOOL_TESTS.glob("*.test.yml")), ids=lambda path: path.name)
def test_promtool_unit_tests_pass(rules, tmp_path, unit_test):
    for o in production_rules(rules):
        write_rule_file(tmp_path / UNIT_TEST_FILES[o["metadata"]["name"]], o, annotations=False)
    shutil.copy(unit_test, tmp_path / unit_test.name)
    ran = promtool("test", "rules", unit_test.name, cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout[-6000:] + ran.stderr[-3000:]
    assert "SUCCESS" in ran.stdout


def test_promtool_unit_tests_make_every_alert_fire_and_show_it_silent(rules):
    fires, silent = set(), set()
    for test in PROMTOOL_TESTS.glob("*.test.yml"):
        for case in yaml.safe_load(test.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check["exp_alerts"] else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in alerts_of(production_rules(rules))}
    assert alerts - fires == set(), "alerts no unit test makes fire"
    assert alerts - silent == set(), "alerts no unit test shows silent"
    assert fires - alerts == set(), "unit tests of alerts that are not rendered"


def test_every_alert_has_a_severity_a_summary_naming_its_cluster_and_region_and_a_runbook(rules):
    checked = 0
    for (env, host), objects in rules.items():
        where = host_vars(env, host)
        for alert in alerts_of(objects):
            name = alert["alert"]
            assert alert["labels"]["severity"] in SEVERITIES, (env, host, name)
            summary = alert["annotations"]["summary"]
            assert where["gke_cluster_name"] in summary and where["gke_region"] in summary, (env, host, name, summary)
            page, _, anchor = alert["annotations"]["runbook_url"].partition("#")
            assert page.startswith("docs/runbooks/") and anchor == name.lower(), (name, page, anchor)
            runbook = REPO / page
            assert runbook.is_file(), f"{name}: {page} does not exist"
            headings = re.findall(r"^#+ (.+)$", runbook.read_text(), flags=re.MULTILINE)
            assert name in headings, f"{name}: {page} has no section named after it"
            checked += 1
    assert checked > 40


def test_burn_rate_thresholds_are_the_objective_times_the_burn_rate(rules):
    """The workbook's burn rates for a 30-day period (14.4, 6, 3, 1), times production's budgets."""
    (slo,) = [o for o in rules[("production", "europe-west1")] if o["metadata"]["name"] == "hello-slo"]
    thresholds = {
        alert["alert"]: re.findall(r"ratio_rate(\w+) > ([0-9.]+) \* ([0-9.]+)", alert["expr"])
        for alert in alerts_of([slo])
        if "ErrorBudgetBurn" in alert["alert"]
    }
    assert thresholds["HelloAvailabilityErrorBudgetBurnFast"] == [
        ("1h", "14.4", "0.001"),
        ("5m", "14.4", "0.001"),
        ("6h", "6", "0.001"),
        ("30m", "6", "0.001"),
    ]
    assert thresholds["HelloLatencyErrorBudgetBurnSlow"] == [
        ("1d", "3", "0.01"),
        ("2h", "3", "0.01"),
        ("3d", "1", "0.01"),
        ("6h", "1", "0.01"),
    ]


def rust_display(value: float) -> str:
    """How Rust's `Display` writes an f64 (shortest round-trip digits, no exponent for these
    magnitudes, no `.0` on whole numbers): metrics-exporter-prometheus 0.18 writes a histogram's
    `le` label with it (src/formatting.rs, write_metric_line)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def test_latency_sli_reads_a_bucket_the_service_exports(rules):
    source = (REPO / "service" / "src" / "metrics.rs").read_text()
    (buckets,) = re.findall(r"DURATION_BUCKETS: &\[f64\] = &\[([^\]]+)\]", source)
    service_buckets = [float(b) for b in buckets.replace("\n", " ").split(",") if b.strip()]
    role_vars = yaml.safe_load((REPO / "roles" / "hello_app" / "vars" / "main.yml").read_text())
    assert role_vars["__hello_app_latency_buckets"] == service_buckets
    threshold = yaml.safe_load((REPO / "roles" / "hello_app" / "defaults" / "main.yml").read_text())[
        "hello_app_slo_latency_threshold_seconds"
    ]
    (slo,) = [o for o in rules[("production", "europe-west1")] if o["metadata"]["name"] == "hello-slo"]
    exprs = " ".join(rule["expr"] for group in slo["spec"]["groups"] for rule in group["rules"])
    assert set(re.findall(r'le="([^"]+)"', exprs)) == {rust_display(threshold)}


def test_the_service_pods_are_scraped_through_their_network_policy(rendered_root):
    objects = load_objects(rendered_root / "production" / "europe-west1" / "hello")
    (monitoring,) = [o for o in objects if o["kind"] == "PodMonitoring"]
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert len(deployments) == 2
    selector = monitoring["spec"]["selector"]["matchLabels"]
    for deployment in deployments:
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
    # GMP names the job after the PodMonitoring: the SLO's HelloMetricsAbsent reads up{job="hello"}.
    assert monitoring["metadata"]["name"] == "hello"
    # The service serves /metrics on its own port (METRICS_ADDR), which the pods name `metrics`.
    assert monitoring["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    for deployment in deployments:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
        assert {"name": "METRICS_ADDR", "value": "0.0.0.0:9090"} in container["env"]
    # The policy that admits traffic to the service's pods (beside the namespace's default deny
    # and the Jobs' own policies).
    pod_labels = deployments[0]["spec"]["template"]["metadata"]["labels"]
    (policy,) = [
        o
        for o in objects
        if o["kind"] == "NetworkPolicy"
        and o["spec"].get("ingress")
        and o["spec"]["podSelector"].get("matchLabels")
        and o["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    ]
    collectors = [
        rule
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
        if peer.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": "gmp-system"}
        and peer.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": "collector"}
    ]
    assert [rule["ports"] for rule in collectors] == [[{"port": "metrics", "protocol": "TCP"}]]
    kind = load_objects(rendered_root / "kind" / "kind" / "hello")
    assert not [o for o in kind if o["kind"] == "PodMonitoring"]
