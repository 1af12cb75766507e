"""What the deploy and drill workflows need from an environment's inventory and clusters.

    environment.py image-digest ENV   print the digest playbooks/image.yml recorded for ENV
    environment.py credentials ENV    fetch kubeconfig credentials for every cluster of ENV
                                      (the playbooks address each cluster by its context)
    environment.py summary ENV        print a Markdown job summary: the released digest
                                      ($HELLO_IMAGE_DIGEST) and, for every cluster of ENV,
                                      the slot HTTPRoute `hello` sends users to

The clusters come from `ansible-inventory -i inventories/ENV`; gcloud must be authenticated.
The live slot is read from each cluster, the only record of it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# Where playbooks/image.yml records the digest it pushed (roles/image, image_record_file).
IMAGE_RECORD = "build/{environment}/image.yml"
SERVICE_NAMESPACE_VARIABLE = "hello_app_namespace"
DEFAULT_NAMESPACE = "hello"


def fail(message: str) -> None:
    print(f"environment.py: {message}", file=sys.stderr)
    sys.exit(1)


def image_digest(environment: str) -> str:
    record = ROOT / IMAGE_RECORD.format(environment=environment)
    if not record.is_file():
        fail(f"{record.relative_to(ROOT)} is missing: did playbooks/image.yml run for {environment}?")
    digest = str((yaml.safe_load(record.read_text()) or {}).get("hello_image_digest", ""))
    if not DIGEST.fullmatch(digest):
        fail(f"{record.relative_to(ROOT)} holds no sha256 digest (found {digest!r})")
    return digest


def clusters(environment: str) -> list[dict]:
    listing = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", f"inventories/{environment}", "--list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    inventory = json.loads(listing.stdout)
    hostvars = inventory.get("_meta", {}).get("hostvars", {})
    hosts = sorted(set(_group_hosts(inventory, "gke_clusters")))
    return [dict(hostvars.get(host, {}), inventory_hostname=host) for host in hosts]


def _group_hosts(inventory: dict, group: str):
    entry = inventory.get(group, {})
    yield from entry.get("hosts", [])
    for child in entry.get("children", []):
        yield from _group_hosts(inventory, child)


def fetch_credentials(cluster: dict) -> str | None:
    """Writes the cluster's kubeconfig context (gke_<project>_<region>_<name>); None when it
    worked, else gcloud's reason."""
    result = subprocess.run(
        [
            "gcloud",
            "container",
            "clusters",
            "get-credentials",
            str(cluster.get("gke_cluster_name")),
            f"--region={cluster.get('gke_region')}",
            f"--project={cluster.get('gcp_project')}",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 0:
        return None
    return (result.stderr.strip().splitlines() or ["gcloud failed"])[-1]


def credentials(environment: str) -> str:
    failures = {}
    for cluster in clusters(environment):
        reason = fetch_credentials(cluster)
        if reason is not None:
            failures[cluster["inventory_hostname"]] = reason
    if failures:
        fail("no credentials for " + "; ".join(f"{host}: {why}" for host, why in failures.items()))
    return f"kubeconfig contexts written for every cluster of {environment}"


# The release's own reading of HTTPRoute hello (roles/hello_app), so that the summary and the
# playbooks agree on which slot is live.
SLOT_LOGIC = ROOT / "roles" / "hello_app" / "filter_plugins" / "hello_app_slots.py"


def route_live_slot(route: dict) -> str | None:
    """The slot whose Service an HTTPRoute's backends weigh above 0, when exactly one does (the
    filter hello_app_slots.route_live_backend reads it); None otherwise."""
    spec = importlib.util.spec_from_file_location("hello_app_slots", SLOT_LOGIC)
    slots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(slots)
    try:
        backend = slots.route_live_backend({"resources": [{"metadata": {"name": "hello"}, **route}]})
    except slots.AnsibleFilterError:
        return None
    if backend in ("hello-blue", "hello-green"):
        return backend.removeprefix("hello-")
    return None


def live_slot(cluster: dict) -> str:
    """The slot HTTPRoute `hello` sends users to in one cluster (its weights are the record of
    the live slot), or why it could not be read."""
    reason = fetch_credentials(cluster)
    if reason is not None:
        return f"unknown (no credentials: {reason})"
    context = f"gke_{cluster.get('gcp_project')}_{cluster.get('gke_region')}_{cluster.get('gke_cluster_name')}"
    namespace = cluster.get(SERVICE_NAMESPACE_VARIABLE, DEFAULT_NAMESPACE)
    route = subprocess.run(
        ["kubectl", "--context", context, "--namespace", namespace, "get", "httproute", "hello", "--output", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if route.returncode != 0:
        return f"unknown ({route.stderr.strip() or 'HTTPRoute hello could not be read'})"
    slot = route_live_slot(json.loads(route.stdout))
    return slot or "unknown (HTTPRoute hello does not send every user to one slot's Service)"


def summary(environment: str) -> str:
    digest = os.environ.get("HELLO_IMAGE_DIGEST", "") or "(none)"
    lines = [
        f"## Release to {environment}",
        "",
        f"Image digest: `{digest}`",
        "",
        "| cluster | region | live slot |",
        "| --- | --- | --- |",
    ]
    for cluster in clusters(environment):
        lines.append(
            f"| {cluster.get('gke_cluster_name', cluster['inventory_hostname'])} "
            f"| {cluster.get('gke_region', '')} | {live_slot(cluster)} |"
        )
    return "\n".join(lines) + "\n"


def main(arguments: list[str]) -> int:
    commands = {"image-digest": image_digest, "credentials": credentials, "summary": summary}
    if len(arguments) != 2 or arguments[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    command, environment = arguments
    if not (ROOT / "inventories" / environment).is_dir():
        fail(f"no inventory inventories/{environment}")
    print(commands[command](environment))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
