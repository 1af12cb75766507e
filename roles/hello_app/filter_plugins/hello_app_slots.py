"""The blue-green slot logic of roles/hello_app, as Ansible filters.

The cluster is the only record of a release: the Service `hello` selects the live slot
(`slot: blue` or `slot: green`), and each slot is a Deployment `hello-<slot>` whose pods run
one image digest. These filters turn what the role reads from the cluster into a decision:

- ``hello_app_slot_state(services, deployments)`` normalises the k8s_info results into a
  state: ``{"live": slot or None, "slots": {slot: {"exists", "image", "digest", "replicas",
  "ready"}}}``.
- ``hello_app_release_plan(state, digest, ...)`` says what a release of ``digest`` does, or
  raises an error that explains a half-done release and how to resume or roll it back.
- ``hello_app_rollback_plan(state, ...)`` says what a rollback does, or why there is none.
- ``hello_app_served_digest(primary, done)`` says which digest the primary's region serves once
  its release or rollback ran, for the warm standby regions that follow it.

A plan is a dict: ``action`` (``release``, ``finish`` or ``none``), ``live`` (the slot users reach
now, None before the first release), ``target`` (the slot that will be live), ``previous``
(the slot that stops being live, None on a first release), ``target_replicas``, ``reason``.
"""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

SLOTS = ("blue", "green")
SLOT_LABEL = "slot"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def other_slot(slot):
    """The other slot: blue <-> green."""
    if slot not in SLOTS:
        raise AnsibleFilterError(f"'{slot}' is not a slot; the slots are {', '.join(SLOTS)}")
    return SLOTS[1 - SLOTS.index(slot)]


def image_digest(image):
    """The sha256 digest of an image reference `repository@sha256:...`, or None."""
    if not image or "@" not in image:
        return None
    digest = image.rsplit("@", 1)[1]
    return digest if DIGEST.match(digest) else None


def _resources(result):
    """The objects of a k8s_info result (a dict with `resources`) or a plain list."""
    if isinstance(result, dict):
        return result.get("resources", [])
    return list(result or [])


def slot_state(services, deployments, service_name="hello", deployment_prefix="hello-"):
    """Builds the state from k8s_info results of the Services and the slot Deployments."""
    live = None
    live_service = [s for s in _resources(services) if s["metadata"]["name"] == service_name]
    if live_service:
        selector = (live_service[0].get("spec") or {}).get("selector") or {}
        live = selector.get(SLOT_LABEL)
        if live not in SLOTS:
            raise AnsibleFilterError(
                f"Service {service_name} selects {selector}, which is not a slot (the selector "
                f"must hold {SLOT_LABEL}: blue or {SLOT_LABEL}: green). The Service is the record "
                f"of the live slot: set its selector's {SLOT_LABEL} to the slot that serves users "
                f"(kubectl edit service {service_name}), then run the playbook again."
            )
    slots = {slot: {"exists": False, "image": None, "digest": None, "replicas": 0, "ready": 0} for slot in SLOTS}
    for deployment in _resources(deployments):
        name = deployment["metadata"]["name"]
        slot = name[len(deployment_prefix) :] if name.startswith(deployment_prefix) else None
        if slot not in SLOTS:
            continue
        spec = deployment.get("spec") or {}
        containers = (((spec.get("template") or {}).get("spec") or {}).get("containers")) or [{}]
        image = containers[0].get("image")
        slots[slot] = {
            "exists": True,
            "image": image,
            "digest": image_digest(image),
            "replicas": int(spec.get("replicas") or 0),
            "ready": int((deployment.get("status") or {}).get("readyReplicas") or 0),
        }
    return {"live": live, "slots": slots}


def _check_state(state):
    if not isinstance(state, dict) or "slots" not in state or "live" not in state:
        raise AnsibleFilterError("the slot state must come from hello_app_slot_state")
    if state["live"] is not None and state["live"] not in SLOTS:
        raise AnsibleFilterError(f"live slot '{state['live']}' is not one of {', '.join(SLOTS)}")


def _target_replicas(state, live, minimum, maximum):
    """As many pods as the live slot runs now (the HPA's current answer to the load), bounded."""
    current = state["slots"][live]["replicas"] if live else 0
    return max(minimum, min(maximum, current))


def _describe(slot, info):
    digest = info["digest"] or info["image"] or "no image"
    return f"{slot} ({digest}, {info['replicas']} pod(s))"


def release_plan(state, digest, min_replicas=2, max_replicas=10, inventory="inventories/<env>"):
    """What releasing `digest` does from `state`; an error for a half-done release."""
    _check_state(state)
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise AnsibleFilterError(
            f"hello_image_digest is '{digest}': give the image digest to release as "
            "-e hello_image_digest=sha256:<64 hex digits> (playbooks/image.yml records it)."
        )
    live = state["live"]
    slots = state["slots"]
    if live is None:
        return {
            "action": "release",
            "live": None,
            "target": SLOTS[0],
            "previous": None,
            "target_replicas": _target_replicas(state, None, min_replicas, max_replicas),
            "reason": f"first release: Service hello does not exist yet, so {SLOTS[0]} becomes live",
        }
    idle = other_slot(live)
    if not slots[live]["exists"]:
        raise AnsibleFilterError(
            f"Service hello sends users to {live}, but Deployment hello-{live} does not exist, so "
            f"nothing serves them. Release into {live}'s place is unsafe to automate: recreate it "
            f"from the last good digest with kubectl, or delete Service hello so that the next "
            f"release starts afresh as a first release."
        )
    if slots[live]["digest"] == digest:
        if slots[idle]["replicas"] > 0:
            return {
                "action": "finish",
                "live": live,
                "target": live,
                "previous": idle,
                "target_replicas": slots[live]["replicas"],
                "reason": f"{digest} is already live in {live}; {idle} still runs "
                f"{slots[idle]['replicas']} pod(s) from a release that stopped before "
                f"its scale-down: scale {idle} to zero",
            }
        return {
            "action": "none",
            "live": live,
            "target": live,
            "previous": idle,
            "target_replicas": slots[live]["replicas"],
            "reason": f"{digest} is already live in {live}: nothing to release",
        }
    if slots[idle]["replicas"] > 0 and slots[idle]["digest"] != digest:
        raise AnsibleFilterError(
            f"A release is half-done (or another one is running now): Service hello sends users "
            f"to {_describe(live, slots[live])}, and the idle slot {_describe(idle, slots[idle])} "
            f"still runs. Resume it: to make {idle}'s image live, run ansible-playbook -i "
            f"{inventory} playbooks/deploy.yml -e hello_image_digest={slots[idle]['digest']}; "
            f"to keep {live} and finish (scale {idle} to zero), run it with "
            f"-e hello_image_digest={slots[live]['digest']}; to return users to {idle} at once, "
            f"run ansible-playbook -i {inventory} playbooks/rollback.yml. Then release {digest}."
        )
    resumed = slots[idle]["replicas"] > 0
    return {
        "action": "release",
        "live": live,
        "target": idle,
        "previous": live,
        "target_replicas": _target_replicas(state, live, min_replicas, max_replicas),
        "reason": (
            f"resume the release of {digest} already rolled onto {idle}"
            if resumed
            else f"{live} is live, so {digest} goes to the idle slot {idle}"
        ),
    }


def rollback_plan(state, min_replicas=2, max_replicas=10):
    """What a rollback does from `state`: make the idle slot live again, or an error."""
    _check_state(state)
    live = state["live"]
    if live is None:
        raise AnsibleFilterError(
            "Nothing to roll back: Service hello does not exist, so no release was ever made "
            "here. Release first with playbooks/deploy.yml -e hello_image_digest=sha256:..."
        )
    idle = other_slot(live)
    slots = state["slots"]
    if not slots[idle]["exists"] or not slots[idle]["digest"]:
        raise AnsibleFilterError(
            f"Nothing to roll back to: {live} is live and Deployment hello-{idle} "
            f"{'has no image digest' if slots[idle]['exists'] else 'does not exist'}, so there "
            f"is no previous release. Release a known good digest with playbooks/deploy.yml "
            f"-e hello_image_digest=sha256:... instead."
        )
    if slots[idle]["digest"] == slots[live]["digest"]:
        raise AnsibleFilterError(
            f"Nothing to roll back to: {idle} runs the live image {slots[live]['digest']} too. "
            f"Release a known good digest with playbooks/deploy.yml -e hello_image_digest=sha256:..."
        )
    scale_up = slots[idle]["replicas"] == 0
    return {
        "action": "release",
        "live": live,
        "target": idle,
        "previous": live,
        "target_replicas": (
            _target_replicas(state, live, min_replicas, max_replicas) if scale_up else slots[idle]["replicas"]
        ),
        "reason": (
            f"return users to {idle} ({slots[idle]['digest']})"
            + (", scaling it up from zero first" if scale_up else ", which still runs")
        ),
    }


def served_digest(primary, done):
    """The digest the primary's region serves once its release or rollback ran, from that
    host's variables (``hostvars[postgres_primary_host]``) and what the run does (``done``,
    hello_app_placement_done): the digest released, or the image of the slot the rollback made
    live. Empty before the rollback planned anything there."""
    if done == "released":
        return primary["hello_image_digest"]
    if "__hello_app_plan" not in primary:
        return ""
    return primary["__hello_app_state"]["slots"][primary["__hello_app_plan"]["target"]]["digest"]


class FilterModule:
    """Blue-green slot filters of roles/hello_app."""

    def filters(self):
        return {
            "hello_app_other_slot": other_slot,
            "hello_app_image_digest": image_digest,
            "hello_app_slot_state": slot_state,
            "hello_app_release_plan": release_plan,
            "hello_app_rollback_plan": rollback_plan,
            "hello_app_served_digest": served_digest,
        }
