"""The blue-green slot logic of roles/hello_app (its filter plugin), as tables of states.

Each state is built the way the role builds it: from k8s_info-shaped Services, Deployments and
HTTPRoutes through hello_app_slot_state. The last test runs the filters inside a real ansible-playbook,
so the plugin is proven to load from the role.
"""

import importlib.util
import re

import pytest
from ansible.errors import AnsibleFilterError

from support.playbooks import REPO

PLUGIN = REPO / "roles/hello_app/filter_plugins/hello_app_slots.py"
spec = importlib.util.spec_from_file_location("hello_app_slots", PLUGIN)
slots = importlib.util.module_from_spec(spec)
spec.loader.exec_module(slots)

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64
OTHER = "sha256:" + "c" * 64
REPOSITORY = "europe-docker.pkg.dev/p/hello/hello"


def service(name="hello", slot="blue"):
    selector = {"app.kubernetes.io/name": "hello"}
    if slot is not None:
        selector["slot"] = slot
    return {"metadata": {"name": name}, "spec": {"selector": selector}}


def deployment(slot, digest, replicas, ready=None):
    return {
        "metadata": {"name": f"hello-{slot}"},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "hello", "image": f"{REPOSITORY}@{digest}"}]}},
        },
        "status": {"readyReplicas": replicas if ready is None else ready},
    }


def route(weights, name="hello"):
    """HTTPRoute `name` with one rule whose backends are {service: weight or None (unset)}."""
    backends = [
        {"name": service, "port": 80, **({} if weight is None else {"weight": weight})}
        for service, weight in weights.items()
    ]
    return {"metadata": {"name": name}, "spec": {"rules": [{"backendRefs": backends}]}}


def state(live=None, blue=None, green=None):
    """live: the slot HTTPRoute hello weighs 100 (None: no route); blue/green: (digest, replicas)."""
    services = {"resources": [service(f"hello-{slot}", slot) for slot in slots.SLOTS] if live else []}
    routes = {
        "resources": [route({f"hello-{slot}": 100 if slot == live else 0 for slot in slots.SLOTS})] if live else []
    }
    deployments = {
        "resources": [deployment(slot, *spec) for slot, spec in (("blue", blue), ("green", green)) if spec is not None]
    }
    return slots.slot_state(services, deployments, routes)


# (case, state, expected action, live, target, previous, target replicas)
RELEASES = [
    ("first release ever", state(), "release", None, "blue", None, 2),
    ("first release interrupted before the switch", state(blue=(NEW, 2)), "release", None, "blue", None, 2),
    ("blue live, green never used", state("blue", blue=(OLD, 3)), "release", "blue", "green", "blue", 3),
    ("blue live, green scaled to zero", state("blue", (OLD, 4), (OTHER, 0)), "release", "blue", "green", "blue", 4),
    ("green live, blue scaled to zero", state("green", (OTHER, 0), (OLD, 2)), "release", "green", "blue", "green", 2),
    ("live slot below the minimum", state("blue", (OLD, 1), (OTHER, 0)), "release", "blue", "green", "blue", 2),
    ("live slot above the maximum", state("blue", (OLD, 30), (OTHER, 0)), "release", "blue", "green", "blue", 10),
    (
        "same digest rolled onto the idle slot, not switched: resume",
        state("blue", (OLD, 3), (NEW, 3)),
        "release",
        "blue",
        "green",
        "blue",
        3,
    ),
    (
        "digest already live, idle slot at zero: nothing to do",
        state("green", (OLD, 0), (NEW, 3)),
        "none",
        "green",
        "green",
        "blue",
        3,
    ),
    (
        "digest already live, old slot still up (stopped before scale-down): finish",
        state("green", (OLD, 3), (NEW, 3)),
        "finish",
        "green",
        "green",
        "blue",
        3,
    ),
]


@pytest.mark.parametrize(
    ("case", "current", "action", "live", "target", "previous", "replicas"), RELEASES, ids=[row[0] for row in RELEASES]
)
def test_release_plan(case, current, action, live, target, previous, replicas):
    plan = slots.release_plan(current, NEW, min_replicas=2, max_replicas=10)
    assert (plan["action"], plan["live"], plan["target"], plan["previous"], plan["target_replicas"]) == (
        action,
        live,
        target,
        previous,
        replicas,
    ), plan["reason"]


# (case, state, fragments of the error)
REFUSED_RELEASES = [
    (
        "another digest already running in the idle slot",
        state("blue", (OLD, 3), (OTHER, 3)),
        [
            "A release is half-done",
            "blue (" + OLD,
            "green (" + OTHER,
            f"playbooks/deploy.yml -e hello_image_digest={OTHER}",
            f"-e hello_image_digest={OLD}",
            "playbooks/rollback.yml",
            f"Then release {NEW}",
        ],
    ),
    (
        "live Deployment missing",
        state("green", blue=(OLD, 0)),
        ["HTTPRoute hello sends users to green, but Deployment hello-green does not exist"],
    ),
]


@pytest.mark.parametrize(("case", "current", "fragments"), REFUSED_RELEASES, ids=[row[0] for row in REFUSED_RELEASES])
def test_release_refused(case, current, fragments):
    with pytest.raises(AnsibleFilterError) as error:
        slots.release_plan(current, NEW, inventory="inventories/staging")
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.parametrize("digest", ["", "latest", "sha256:abc", "sha256:" + "A" * 64, None])
def test_release_refuses_a_bad_digest(digest):
    with pytest.raises(AnsibleFilterError, match="-e hello_image_digest=sha256:<64 hex digits>"):
        slots.release_plan(state(), digest)


def test_half_done_message_names_the_inventory():
    with pytest.raises(
        AnsibleFilterError, match=re.escape("ansible-playbook -i inventories/production playbooks/rollback.yml")
    ):
        slots.release_plan(state("blue", (OLD, 3), (OTHER, 3)), NEW, inventory="inventories/production")


# (case, state, live, target, target replicas)
ROLLBACKS = [
    ("old slot scaled to zero: scale it up to the live size", state("green", (OLD, 0), (NEW, 4)), "green", "blue", 4),
    ("old slot still up (within the scale-down delay)", state("green", (OLD, 3), (NEW, 5)), "green", "blue", 3),
    ("rolling back twice returns to the newer release", state("blue", (OLD, 2), (NEW, 0)), "blue", "green", 2),
]


@pytest.mark.parametrize(
    ("case", "current", "live", "target", "replicas"), ROLLBACKS, ids=[row[0] for row in ROLLBACKS]
)
def test_rollback_plan(case, current, live, target, replicas):
    plan = slots.rollback_plan(current, min_replicas=2, max_replicas=10)
    assert (plan["action"], plan["live"], plan["target"], plan["previous"], plan["target_replicas"]) == (
        "release",
        live,
        target,
        live,
        replicas,
    ), plan["reason"]


REFUSED_ROLLBACKS = [
    ("nothing ever released", state(), "no release was ever made here"),
    ("first release, no other slot", state("blue", blue=(NEW, 2)), "Deployment hello-green does not exist"),
    ("both slots run the same image", state("blue", (NEW, 2), (NEW, 0)), "runs the live image"),
]


@pytest.mark.parametrize(("case", "current", "fragment"), REFUSED_ROLLBACKS, ids=[row[0] for row in REFUSED_ROLLBACKS])
def test_rollback_refused(case, current, fragment):
    with pytest.raises(AnsibleFilterError, match="Nothing to roll back"):
        slots.rollback_plan(current)
    with pytest.raises(AnsibleFilterError) as error:
        slots.rollback_plan(current)
    assert fragment in str(error.value)


# What the primary's region serves once its part of the run is over, as its host's variables
# hold it: (case, the primary host's variables, hello_app_placement_done, digest).
SERVED = [
    ("a release serves the digest released", {"hello_image_digest": NEW}, "released", NEW),
    (
        "a rollback serves the slot it made live",
        {
            "hello_image_digest": "",
            "__hello_app_state": state("green", (OLD, 0), (NEW, 4)),
            "__hello_app_plan": {"target": "blue"},
        },
        "rolled back",
        OLD,
    ),
    ("a rollback that planned nothing yet serves nothing known", {"hello_image_digest": ""}, "rolled back", ""),
]


@pytest.mark.parametrize(("case", "primary", "done", "digest"), SERVED, ids=[row[0] for row in SERVED])
def test_served_digest(case, primary, done, digest):
    assert slots.served_digest(primary, done) == digest


def test_live_service_selecting_no_slot_is_refused():
    services = {"resources": [service(slot=None)]}
    with pytest.raises(AnsibleFilterError, match=r"which is not a slot.*\(kubectl edit service hello\)"):
        slots.slot_state(services, {"resources": []})


# (case, Services, HTTPRoutes, live slot, legacy, where the route sends users now): the route's
# weights are the record; a cluster of the selector model (users reach Service hello, whose
# selector names the live slot) is legacy until a release retires Service hello.
LIVE = [
    ("weights: green 100, blue 0", [], [route({"hello-blue": 0, "hello-green": 100})], "green", False, "green"),
    ("weights: unset weight counts as 1", [], [route({"hello-blue": None, "hello-green": 0})], "blue", False, "blue"),
    (
        "selector model: route to Service hello",
        [service(slot="green")],
        [route({"hello": None})],
        "green",
        True,
        "hello",
    ),
    (
        "half-migrated: Service hello still live beside the slots at 0",
        [service(slot="blue")],
        [route({"hello-blue": 0, "hello-green": 0, "hello": 100})],
        "blue",
        True,
        "hello",
    ),
    (
        "migrated, Service hello still at 0 (its retirement did not run)",
        [service(slot="blue")],
        [route({"hello-blue": 0, "hello-green": 100, "hello": 0})],
        "green",
        True,
        "green",
    ),
    ("selector model without a Gateway", [service(slot="blue")], [], "blue", True, "hello"),
    ("nothing yet", [], [], None, False, None),
    ("another route only", [], [route({"hello-green": 100}, name="other")], None, False, None),
]


@pytest.mark.parametrize(
    ("case", "services", "routes", "live", "legacy", "route_live"), LIVE, ids=[row[0] for row in LIVE]
)
def test_live_slot_from_the_route(case, services, routes, live, legacy, route_live):
    current = slots.slot_state({"resources": services}, {"resources": []}, {"resources": routes})
    assert (current["live"], current["legacy"], current["route_live"]) == (live, legacy, route_live)


@pytest.mark.parametrize(
    ("weights", "fragment"),
    [
        ({"hello-blue": 50, "hello-green": 50}, "splits users between Services hello-blue and hello-green"),
        ({"hello-blue": 0, "hello": 100, "hello-green": 1}, "splits users between Services hello and hello-green"),
        ({"hello-canary": 100}, "sends users to Service hello-canary, which is not a slot's Service"),
    ],
)
def test_a_route_no_release_leaves_is_refused(weights, fragment):
    with pytest.raises(AnsibleFilterError, match="kubectl edit httproute hello") as error:
        slots.slot_state({"resources": []}, {"resources": []}, {"resources": [route(weights)]})
    assert fragment in str(error.value)


@pytest.mark.parametrize(
    ("live", "legacy", "weights"),
    [
        ("blue", False, {"hello-blue": 100, "hello-green": 0}),
        ("green", False, {"hello-blue": 0, "hello-green": 100}),
        ("green", True, {"hello-blue": 0, "hello-green": 100, "hello": 0}),
        ("hello", True, {"hello-blue": 0, "hello-green": 0, "hello": 100}),
    ],
)
def test_route_backends_keep_both_slots_attached(live, legacy, weights):
    backends = slots.route_backends(live, legacy)
    assert {b["name"]: b["weight"] for b in backends} == weights
    # What the role renders reads back as the same live slot.
    rendered = route({b["name"]: b["weight"] for b in backends})
    read = slots.slot_state({"resources": [service(slot="blue")]}, {"resources": []}, {"resources": [rendered]})
    assert read["live"] == ("blue" if live == "hello" else live)


def test_route_backends_refuse_an_unknown_target():
    with pytest.raises(AnsibleFilterError, match="'red' is neither a slot"):
        slots.route_backends("red")


def test_state_reads_images_replicas_and_readiness():
    current = slots.slot_state(
        {"resources": []},
        {
            "resources": [
                deployment("green", NEW, 3, ready=1),
                deployment("blue", OLD, 0),
                {"metadata": {"name": "hello-load"}, "spec": {}},
            ]
        },
        {"resources": [route({"hello-blue": 0, "hello-green": 100})]},
    )
    assert current["live"] == "green"
    assert current["slots"]["green"] == {
        "exists": True,
        "image": f"{REPOSITORY}@{NEW}",
        "digest": NEW,
        "replicas": 3,
        "ready": 1,
    }
    assert current["slots"]["blue"]["replicas"] == 0


@pytest.mark.parametrize(
    ("image", "digest"),
    [(f"{REPOSITORY}@{NEW}", NEW), (f"{REPOSITORY}:1.0", None), (None, None), (f"{REPOSITORY}@sha256:12", None)],
)
def test_image_digest(image, digest):
    assert slots.image_digest(image) == digest


def test_other_slot():
    assert slots.other_slot("blue") == "green"
    assert slots.other_slot("green") == "blue"
    with pytest.raises(AnsibleFilterError, match="'red' is not a slot"):
        slots.other_slot("red")


def test_filters_load_in_a_real_play(ansible, tmp_path):
    """A play that lists the role finds its filter plugins (the role's tasks are skipped)."""
    playbook = tmp_path / "plan.yml"
    playbook.write_text(f"""\
- name: Plan a first release
  hosts: primary_region
  gather_facts: false
  roles:
    - role: hello_app
      tags: [never]
  tasks:
    - name: Print the plan
      ansible.builtin.debug:
        msg: "target={{{{ ({{'resources': []}} | hello_app_slot_state({{'resources': []}})
          | hello_app_release_plan('{NEW}')).target }}}}"
""")
    result = ansible("ansible-playbook", "-i", "inventories/staging", playbook)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "target=blue" in result.stdout
