"""Roles talk through their documented interfaces, never through each other's private variables.

A variable named ``__<role>_…`` is internal to that role (STYLE.md, redhat-cop's good practices);
what other roles and playbooks may read is listed in the role's README, section "Interface", and
set in one place. A role's Kubernetes templates (``k8s/<component>/``) belong to the role that
renders them. A playbook reads no ``__`` variable at all: it passes a role its documented inputs.
Each Kubernetes object has one owner: one role's template renders it, whoever applies it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from support import REPO

ROLES = sorted(path.name for path in (REPO / "roles").iterdir() if path.is_dir())
# k8s/<component>/ -> the role that renders it.
TEMPLATE_OWNERS = {
    "hello": "hello_app",
    "postgres": "postgres",
    "backups": "backups",
    "drill": "restore_drill",
    "kind": "kind_gcs",
    "kind-gateway": "kind_gateway",
    "namespaces": "namespaces",
    "alerting": "alerting",
}
PRIVATE = re.compile(r"\b__(" + "|".join(ROLES) + r")_\w+")
ANY_PRIVATE = re.compile(r"\b__[a-z]\w*")
SOURCES = ("*.yml", "*.yaml", "*.j2")


def files(root: Path, folder: str):
    for pattern in SOURCES:
        yield from (root / folder).rglob(pattern)


def owner(root: Path, path: Path) -> str | None:
    parts = path.relative_to(root).parts
    if parts[0] == "roles":
        return parts[1]
    if parts[0] == "k8s":
        return TEMPLATE_OWNERS.get(parts[1])
    return None


def crossings(root: Path) -> list[str]:
    """Every place under ``root`` that reads a private variable it may not read."""
    found = []
    for folder in ("roles", "k8s", "group_vars", "inventories", "playbooks"):
        for path in files(root, folder):
            text = path.read_text()
            allowed = owner(root, path)
            pattern = ANY_PRIVATE if folder == "playbooks" else PRIVATE
            for match in pattern.finditer(text):
                if folder == "playbooks" or match.group(1) != allowed:
                    line = text.count("\n", 0, match.start()) + 1
                    found.append(f"{path.relative_to(root)}:{line} reads {match.group(0)}")
    return found


def test_no_private_variable_crosses_a_role_boundary():
    assert crossings(REPO) == []


def test_every_role_documents_its_interface():
    missing = [role for role in ROLES if "## Interface" not in (REPO / "roles" / role / "README.md").read_text()]
    assert missing == [], f"roles without an Interface section in their README: {missing}"


@pytest.mark.parametrize(
    ("path", "text", "expected"),
    [
        ("roles/hello_app/tasks/x.yml", "when: __postgres_reachable", "reads __postgres_reachable"),
        ("playbooks/x.yml", "vars:\n  __hello_app_step: 1", "playbooks/x.yml:2 reads __hello_app_step"),
        ("k8s/hello/x.yml.j2", "{{ __restore_drill_id }}", "reads __restore_drill_id"),
    ],
)
def test_the_check_finds_a_crossing(tmp_path, path, text, expected):
    """The check can fail: a tree holding one crossing is caught."""
    target = tmp_path / path
    target.parent.mkdir(parents=True)
    target.write_text(text)
    found = crossings(tmp_path)
    assert len(found) == 1 and expected in found[0], found


def test_a_role_reading_its_own_private_variables_is_no_crossing(tmp_path):
    (tmp_path / "roles/hello_app/tasks").mkdir(parents=True)
    (tmp_path / "roles/hello_app/tasks/x.yml").write_text("when: __hello_app_live_slot")
    (tmp_path / "k8s/drill").mkdir(parents=True)
    (tmp_path / "k8s/drill/x.yml.j2").write_text("{{ __restore_drill_id }}")
    assert crossings(tmp_path) == []


def owners_of_objects(host_dir: Path) -> dict[tuple[str, str, str], set[str]]:
    """(kind, namespace, name) -> the rendered components (k8s/<component>/) holding it."""
    owners = defaultdict(set)
    for path in sorted(host_dir.rglob("*.yml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and "kind" in document:
                metadata = document["metadata"]
                key = (document["kind"], metadata.get("namespace", ""), metadata["name"])
                owners[key].add(path.relative_to(host_dir).parts[0])
    return owners


def test_each_object_is_rendered_by_one_role(rendered_root):
    """Two templates of one object would take turns removing each other's fields: server-side
    apply with one field manager drops what the manager's latest apply no longer sets (the
    Pod Security labels of a namespace, say)."""
    shared = {}
    for host_dir in sorted(rendered_root.glob("*/*")):
        owners = owners_of_objects(host_dir)
        assert owners, f"nothing rendered in {host_dir}"
        shared.update({(host_dir.name, *key): sorted(o) for key, o in owners.items() if len(o) > 1})
    assert shared == {}


def test_the_one_owner_check_finds_an_object_rendered_twice(tmp_path):
    namespace = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: hello\n"
    for component in ("hello", "postgres"):
        (tmp_path / component).mkdir()
        (tmp_path / component / "namespace.yml").write_text(namespace)
    assert owners_of_objects(tmp_path) == {("Namespace", "", "hello"): {"hello", "postgres"}}
