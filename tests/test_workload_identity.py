"""The restore drill lets its Kubernetes service accounts act as its Google service account.

Workload Identity: a pod whose Kubernetes service account is annotated with a Google service
account gets that account's tokens only if the Google account's IAM policy grants
roles/iam.workloadIdentityUser to `serviceAccount:<project>.svc.id.goog[<namespace>/<name>]`.
The drill's recovery cluster and Jobs run in their own namespace, so the database's bindings do
not cover them. The task that grants them is taken verbatim from roles/restore_drill/tasks/main.yml
and run (with the role's defaults) against the project tests/support/fake_gcloud.py keeps, whose
command lines the real gcloud parses.
"""

import json

import yaml

from support.gcloud import FakeProject
from support.playbooks import REPO

TASK = "Let the drill's Kubernetes service accounts act as its Google service account"
ACCOUNT = "hello-db@hello-platform-staging.iam.gserviceaccount.com"


def test_the_drill_grants_its_accounts_once(ansible, tmp_path, gcloud_config):
    project = FakeProject(tmp_path, "staging", gcloud_config)
    project.state.write_text(json.dumps({"service_accounts": {ACCOUNT: {"email": ACCOUNT}}}))
    (task,) = [
        t for t in yaml.safe_load((REPO / "roles/restore_drill/tasks/main.yml").read_text()) if t["name"] == TASK
    ]
    play = tmp_path / "play.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "The drill's Workload Identity",
                    "hosts": "gke_clusters",
                    "gather_facts": False,
                    "vars_files": [str(REPO / "roles/restore_drill/defaults/main.yml")],
                    "tasks": [task],
                }
            ]
        )
    )

    code, output, calls = project.run(playbook=play)
    assert code == 0, output[-3000:]
    (binding,) = json.loads(project.snapshot())["policies"][ACCOUNT]["bindings"]
    assert binding == {
        "role": "roles/iam.workloadIdentityUser",
        "members": [
            "serviceAccount:hello-platform-staging.svc.id.goog[hello-drill/hello-db-drill]",
            "serviceAccount:hello-platform-staging.svc.id.goog[hello-drill/hello-restore-drill]",
        ],
    }
    assert [call[2] for call in calls].count("add-iam-policy-binding") == 2

    # A later drill reads the policy and changes nothing.
    code, output, calls = project.run(playbook=play)
    assert code == 0, output[-3000:]
    assert [call[2] for call in calls] == ["get-iam-policy"]
