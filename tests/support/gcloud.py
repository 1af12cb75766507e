"""A Google Cloud project as tests/support/fake_gcloud.py keeps it, and ansible-playbook runs
against it with that stand-in on PATH as `gcloud`."""

import fnmatch
import json
import os
import shutil
import sys

from support.playbooks import REPO, ansible, copy_inventory

REAL_GCLOUD = shutil.which("gcloud")


class FakeProject:
    """One Google Cloud project as the fake gcloud sees it, and ansible-playbook runs against it."""

    def __init__(self, root, env, config):
        self.inventory = copy_inventory(env, root)
        self.env = env
        self.state = root / "gcloud-state.json"
        self.log = root / "gcloud-calls.jsonl"
        bin_dir = root / "bin"
        bin_dir.mkdir()
        gcloud = bin_dir / "gcloud"
        gcloud.write_text(f'#!/bin/sh\nexec {sys.executable} {REPO / "tests" / "support" / "fake_gcloud.py"} "$@"\n')
        gcloud.chmod(0o755)
        self.env_vars = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_GCLOUD_STATE": str(self.state),
            "FAKE_GCLOUD_LOG": str(self.log),
            "FAKE_GCLOUD_CONFIG": str(config),
        }
        # Without the gcloud CLI the command lines go unchecked; test_fake_gcloud_checks_command_lines
        # then reports itself skipped.
        if REAL_GCLOUD:
            self.env_vars["FAKE_GCLOUD_REAL"] = REAL_GCLOUD

    def run(self, *extra, playbook="cluster.yml"):
        """Runs a playbook (cluster.yml unless said); returns (exit code, output, the gcloud calls it made)."""
        self.log.write_text("")
        result = ansible(
            "ansible-playbook",
            "-i",
            self.inventory,
            REPO / "playbooks" / playbook,
            "-e",
            f"hello_confirm_environment={self.env}",
            *extra,
            env=self.env_vars,
        )
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        return result.returncode, result.stdout + result.stderr, calls

    def snapshot(self):
        return self.state.read_text() if self.state.exists() else ""

    def firewall(self, pattern):
        """The one firewall rule whose name matches the glob ``pattern``."""
        rules = json.loads(self.state.read_text())["firewalls"]
        (rule,) = [rule for name, rule in rules.items() if fnmatch.fnmatchcase(name, pattern)]
        return rule

    def cluster(self, name, region):
        project = json.loads(self.state.read_text())
        return next(c for key, c in project["clusters"].items() if key.endswith(f"/{region}/{name}"))
