"""The Cloud Monitoring dashboard of each regional cluster, validated offline.

roles/hello_app renders k8s/hello/dashboard.json.j2 (hello_monitoring gmp) into
build/<env>/<host>/hello/dashboard.json: a Dashboard of the Cloud Monitoring API
(monitoring.googleapis.com/v1), PromQL charts over the series Managed Service for Prometheus
collects. It is checked against the API's own schema, the discovery document that
google-api-python-client 2.202.0 ships (googleapiclient/discovery_cache/documents/monitoring.v1.json),
with unknown fields refused, as the API refuses them; against the mosaic layout's rules from that
document's descriptions (48 columns at most, tiles inside the grid); and every PromQL query is
parsed by promtool.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources

import jsonschema
import pytest
import yaml

from support import REPO
from support.gcloud import FakeProject
from support.playbooks import write_role_tasks_play
from support.render import ENVIRONMENTS

DISCOVERY = resources.files("googleapiclient") / "discovery_cache" / "documents" / "monitoring.v1.json"
GKE_ENVIRONMENTS = [env for env in ENVIRONMENTS if env != "kind"]


def json_schema(discovery: dict, root: str) -> dict:
    """The discovery document's schemas as a JSON Schema of `root`, objects closed to unknown fields."""

    def convert(node: dict) -> dict:
        if "$ref" in node:
            return {"$ref": f"#/definitions/{node['$ref']}"}
        kind = node.get("type")
        out: dict = {}
        if kind in ("string", "boolean", "number", "integer", "array", "object"):
            out["type"] = kind
        if "enum" in node:
            out["enum"] = node["enum"]
        if kind == "array":
            out["items"] = convert(node["items"])
        if kind == "object":
            if "properties" in node:
                out["properties"] = {name: convert(child) for name, child in node["properties"].items()}
                out["additionalProperties"] = False
            elif "additionalProperties" in node:
                out["additionalProperties"] = convert(node["additionalProperties"])
        return out

    return {
        "$ref": f"#/definitions/{root}",
        "definitions": {name: convert(schema) for name, schema in discovery["schemas"].items()},
    }


@pytest.fixture(scope="module")
def dashboards(rendered_root) -> dict[tuple[str, str], dict]:
    found = {}
    for env in ENVIRONMENTS:
        for host in sorted((rendered_root / env).iterdir()):
            path = host / "hello" / "dashboard.json"
            if path.exists():
                found[(env, host.name)] = json.loads(path.read_text())
    return found


def test_every_gke_cluster_has_a_dashboard_and_kind_none(dashboards, rendered_root):
    hosts = {(env, host.name) for env in GKE_ENVIRONMENTS for host in (rendered_root / env).iterdir() if host.is_dir()}
    assert set(dashboards) == hosts
    assert dashboards[("production", "europe-west4")]["displayName"] == "hello production europe-west4"


def test_the_dashboards_follow_the_monitoring_api_schema(dashboards):
    discovery = json.loads(DISCOVERY.read_text())
    assert discovery["name"] == "monitoring" and discovery["version"] == "v1"
    validator = jsonschema.Draft7Validator(json_schema(discovery, "Dashboard"))
    for where, dashboard in dashboards.items():
        problems = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(dashboard)]
        assert not problems, (where, problems)
    # The schema refuses what the API refuses: a misspelt field.
    broken = json.loads(json.dumps(dashboards[("production", "europe-west1")]))
    broken["mosaicLayout"]["tiles"][0]["widget"]["xyChart"]["dataSet"] = []
    assert not validator.is_valid(broken)


def test_the_tiles_fit_the_mosaic_grid_without_overlapping(dashboards):
    for where, dashboard in dashboards.items():
        layout = dashboard["mosaicLayout"]
        assert 1 <= layout["columns"] <= 48, where
        cells = set()
        for tile in layout["tiles"]:
            assert tile["xPos"] >= 0 and tile["xPos"] + tile["width"] <= layout["columns"], (where, tile)
            mine = {
                (x, y)
                for x in range(tile["xPos"], tile["xPos"] + tile["width"])
                for y in range(tile["yPos"], tile["yPos"] + tile["height"])
            }
            assert not cells & mine, (where, tile["widget"]["title"])
            cells |= mine


def test_every_query_is_promql_of_its_own_cluster(dashboards, tmp_path):
    rules = []
    for (env, host), dashboard in dashboards.items():
        cluster = yaml.safe_load((REPO / "inventories" / env / "host_vars" / f"{host}.yml").read_text())[
            "gke_cluster_name"
        ]
        for tile in dashboard["mosaicLayout"]["tiles"]:
            for data_set in tile["widget"]["xyChart"]["dataSets"]:
                query = data_set["timeSeriesQuery"]["prometheusQuery"]
                assert f'cluster="{cluster}"' in query, (env, host, query)
                rules.append({"record": f"dashboard:query:{len(rules)}", "expr": query})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run scripts/bootstrap (Debian package prometheus)"
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


def test_a_release_creates_the_dashboards_then_replaces_them_only_when_they_change(ansible, tmp_path, gcloud_config):
    """roles/hello_app's dashboard step, run as a release runs it, against the project the gcloud
    test double keeps (tests/support/fake_gcloud.py, each command line parsed by the real gcloud)."""
    project = FakeProject(tmp_path, "production", gcloud_config)
    play = write_role_tasks_play(tmp_path / "play.yml", "hello_app", "dashboard", "Apply the dashboard")
    build = (
        "-e",
        f"hello_repo_root={REPO}",
        "-e",
        f"hello_k8s_build_dir={tmp_path}/build/{{{{ inventory_hostname }}}}",
    )

    def run(*extra):
        code, output, calls = project.run(*build, *extra, playbook=play)
        assert code == 0, output[-3000:]
        boards = json.loads(project.snapshot())["dashboards"]["hello-platform-production"]
        return [call[2] for call in calls if call[:2] == ["monitoring", "dashboards"]], boards

    verbs, boards = run()
    assert sorted(verbs) == ["create", "create", "list", "list"]
    assert sorted(board["displayName"] for board in boards.values()) == [
        "hello production europe-west1",
        "hello production europe-west4",
    ]
    verbs, unchanged = run()
    assert verbs == ["list", "list"] and unchanged == boards
    # A changed objective changes the thresholds drawn: each dashboard is replaced in place, by the
    # etag it was read with (the double refuses a stale one, as the API does).
    objective = ("-e", json.dumps({"hello_app_slo_availability_objective": 0.995}))
    verbs, replaced = run(*objective)
    assert sorted(verbs) == ["list", "list", "update", "update"]
    assert replaced.keys() == boards.keys()
    assert all(replaced[name]["etag"] != boards[name]["etag"] for name in boards)

    # Two dashboards under a cluster's name: the run cannot tell which is the cluster's and stops.
    state = json.loads(project.snapshot())
    twin = dict(next(iter(replaced.values())), name="projects/hello-platform-production/dashboards/twin")
    state["dashboards"]["hello-platform-production"][twin["name"]] = twin
    project.state.write_text(json.dumps(state))
    code, output, _ = project.run(*build, *objective, playbook=play)
    assert code != 0
    assert "this run cannot tell which is the cluster's" in " ".join(output.split())
    assert json.loads(project.snapshot()) == state
