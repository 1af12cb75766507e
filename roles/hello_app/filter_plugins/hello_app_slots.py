"""The blue-green slot logic of roles/hello_app, as Ansible filters.

The cluster is the only record of a release. Users reach the service through HTTPRoute `hello`,
whose backends are the two slot Services `hello-blue` and `hello-green` (each selects its slot's
pods, `slot: blue` or `slot: green`): the live slot's has weight 100, the idle one's weight 0, so
that both stay attached to the load balancer and health-checked. Each slot is a Deployment
`hello-<slot>` whose pods run one image digest. A cluster released before the slot Services
existed sends users to Service `hello`, whose selector named the live slot: it is read as live
until a release retires it (``legacy``). These filters turn what the role reads from the cluster
into a decision:

- ``hello_app_slot_state(services, deployments, routes)`` normalises the k8s_info results into a
  state: ``{"live": slot or None, "legacy": bool, "route_live": slot, "hello" or None,
  "slots": {slot: {"exists", "image", "digest", "replicas", "ready"}}}``.
- ``hello_app_route_backends(live, legacy)`` gives the HTTPRoute's weighted backends that send
  every user to ``live`` (a slot, or "hello" for the legacy Service).
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


def _weight(backend):
    """A backendRef's weight: Gateway API's default is 1 ("If unspecified, weight defaults to
    1", HTTPBackendRef.weight in the standard CRDs)."""
    weight = backend.get("weight")
    return 1 if weight is None else int(weight)


def route_live_backend(routes, route_name="hello"):
    """The Service HTTPRoute `route_name` sends users to, None when there is no such route or it
    has no backend; an error when it splits users between several."""
    route = [r for r in _resources(routes) if r["metadata"]["name"] == route_name]
    if not route:
        return None
    backends = [b for rule in (route[0].get("spec") or {}).get("rules") or [] for b in rule.get("backendRefs") or []]
    weighted = sorted({b["name"] for b in backends if _weight(b) > 0})
    if len(weighted) > 1:
        raise AnsibleFilterError(
            f"HTTPRoute {route_name} splits users between Services {' and '.join(weighted)}; a release "
            f"never leaves it so, and the route's weights are the record of the live slot. Give the "
            f"Service of the slot that serves users weight 100 and every other backend weight 0 "
            f"(kubectl edit httproute {route_name}), then run the playbook again."
        )
    return weighted[0] if weighted else None


def _selected_slot(services, service_name):
    service = [s for s in _resources(services) if s["metadata"]["name"] == service_name]
    if not service:
        return None
    selector = (service[0].get("spec") or {}).get("selector") or {}
    slot = selector.get(SLOT_LABEL)
    if slot not in SLOTS:
        raise AnsibleFilterError(
            f"Service {service_name} selects {selector}, which is not a slot (the selector "
            f"must hold {SLOT_LABEL}: blue or {SLOT_LABEL}: green). Until a release retires it, this "
            f"Service is the record of the live slot: set its selector's {SLOT_LABEL} to the slot that "
            f"serves users (kubectl edit service {service_name}), then run the playbook again."
        )
    return slot


def slot_state(services, deployments, routes=None, service_name="hello", deployment_prefix="hello-"):
    """Builds the state from k8s_info results of the Services, the slot Deployments and the
    HTTPRoutes. The route's live backend names the live slot; where it is the legacy Service
    `hello` (or there is no route but that Service), its selector does. ``legacy``: Service
    `hello` still exists (a release retires it); ``route_live``: where the route sends users now
    (a slot, `hello`, or None)."""
    backend = route_live_backend(routes, service_name)
    selected = _selected_slot(services, service_name)
    if backend is None or backend == service_name:
        live = selected
        route_live = service_name if selected else None
    elif backend.startswith(deployment_prefix) and backend[len(deployment_prefix) :] in SLOTS:
        live = route_live = backend[len(deployment_prefix) :]
    else:
        raise AnsibleFilterError(
            f"HTTPRoute {service_name} sends users to Service {backend}, which is not a slot's Service "
            f"({', '.join(deployment_prefix + s for s in SLOTS)}). Give the Service of the slot that "
            f"serves users weight 100 and every other backend weight 0 (kubectl edit httproute "
            f"{service_name}), then run the playbook again."
        )
    legacy = selected is not None
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
    return {"live": live, "legacy": legacy, "route_live": route_live, "slots": slots}


def route_backends(live, legacy=False, service_name="hello"):
    """The HTTPRoute's backends that send every user to `live` (a slot, or `service_name` for the
    legacy Service): both slot Services always, so that both stay attached to the load balancer
    and health-checked, the live one with weight 100 and the other 0; the legacy Service too
    while it still exists (``legacy``). Gateway API: "If weight is set to 0, no traffic should be
    forwarded for this entry" (HTTPBackendRef.weight in the standard CRDs)."""
    if live not in (*SLOTS, service_name):
        raise AnsibleFilterError(f"'{live}' is neither a slot ({', '.join(SLOTS)}) nor Service {service_name}")
    backends = [{"name": f"hello-{slot}", "weight": 100 if live == slot else 0} for slot in SLOTS]
    if legacy or live == service_name:
        backends.append({"name": service_name, "weight": 100 if live == service_name else 0})
    return backends


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
            "reason": f"first release: HTTPRoute hello sends users nowhere yet, so {SLOTS[0]} becomes live",
        }
    idle = other_slot(live)
    if not slots[live]["exists"]:
        raise AnsibleFilterError(
            f"HTTPRoute hello sends users to {live}, but Deployment hello-{live} does not exist, so "
            f"nothing serves them. Release into {live}'s place is unsafe to automate: recreate it "
            f"from the last good digest with kubectl, or delete HTTPRoute hello (and Service hello, "
            f"if it is still there) so that the next release starts afresh as a first release."
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
            f"A release is half-done (or another one is running now): HTTPRoute hello sends users "
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
            "Nothing to roll back: HTTPRoute hello sends users nowhere, so no release was ever made "
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


def pods_unhealthy_for_load_balancer(pods, condition, reason, message_pattern):
    """The pods (k8s_info resources) whose readiness-gate ``condition`` does not say that the load
    balancer's health check reported them healthy (status True, ``reason``, a message matching
    ``message_pattern``), each as "name: what its condition says"."""
    unhealthy = []
    for pod in pods:
        found = [c for c in ((pod.get("status") or {}).get("conditions") or []) if c.get("type") == condition]
        if not found:
            unhealthy.append(f"{pod['metadata']['name']}: no {condition} condition yet")
            continue
        cond = found[0]
        message = cond.get("message") or ""
        if cond.get("status") != "True" or cond.get("reason") != reason or not re.match(message_pattern, message):
            unhealthy.append(f"{pod['metadata']['name']}: {cond.get('status')} {cond.get('reason')} {message}".strip())
    return unhealthy


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
            "hello_app_route_backends": route_backends,
            "hello_app_release_plan": release_plan,
            "hello_app_rollback_plan": rollback_plan,
            "hello_app_served_digest": served_digest,
            "hello_app_pods_unhealthy_for_load_balancer": pods_unhealthy_for_load_balancer,
        }
