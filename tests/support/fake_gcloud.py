#!/usr/bin/env python3
"""A stand-in for `gcloud`, for testing roles/gke_cluster without Google Cloud.

It is a test double, not an emulator: it answers only the commands the roles run, and keeps
the project's state (clusters, node pools, service accounts, IAM bindings, firewall rules,
enabled APIs, buckets) in a JSON file, shaped like the answers of the APIs the roles read.

What makes its answers worth something: before answering, it hands the same command line to
the real gcloud (FAKE_GCLOUD_REAL) with an empty configuration. The real gcloud parses and
checks every flag and value, then stops because no account is logged in; any other error
(an unknown flag, a bad value, flags that cannot go together) is passed on and fails the run.

Environment: FAKE_GCLOUD_STATE (state file), FAKE_GCLOUD_LOG (one JSON argv per line),
FAKE_GCLOUD_REAL (path of the real gcloud; unset skips the check), FAKE_GCLOUD_CONFIG (empty
folder for the real gcloud's configuration; it also remembers the command lines already checked).
"""

import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

NO_ACCOUNT = "You do not currently have an active account selected"
# gcloud 528.0.0 lib/googlecloudsdk/api_lib/dns/transaction_util.py, TransactionFile.
NO_TRANSACTION = "Transaction not found at"
TRANSACTION_FILE = "--transaction-file=/nonexistent/fake-gcloud-transaction.yaml"
EFFECTS = {"NoSchedule": "NO_SCHEDULE", "PreferNoSchedule": "PREFER_NO_SCHEDULE", "NoExecute": "NO_EXECUTE"}


def fail(message, code=1):
    print(f"ERROR: {message}", file=sys.stderr)
    sys.exit(code)


def check_with_real_gcloud(argv):
    real = os.environ.get("FAKE_GCLOUD_REAL")
    if not real:
        return
    # The real gcloud takes a second or more to start: each distinct command line is checked once.
    checked = Path(os.environ["FAKE_GCLOUD_CONFIG"]) / "checked-command-lines"
    # A transaction's add and remove edit the local file without asking the API (gcloud 528.0.0
    # lib/surface/dns/record_sets/transaction/add.py): the real gcloud is given a file that does
    # not exist instead, and stops there, after checking the command line, the way it stops
    # without an account elsewhere.
    argv = [TRANSACTION_FILE if arg.startswith("--transaction-file=") else arg for arg in argv]
    line = json.dumps(argv)
    if checked.exists() and line in checked.read_text().splitlines():
        return
    env = {**os.environ, "CLOUDSDK_CONFIG": os.environ["FAKE_GCLOUD_CONFIG"], "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    result = subprocess.run([real, *argv], env=env, capture_output=True, text=True, check=False)
    if NO_ACCOUNT not in result.stderr and NO_TRANSACTION not in result.stderr:
        sys.stderr.write(f"fake gcloud: the real gcloud rejects this command line:\n{result.stderr}")
        sys.exit(2)
    with checked.open("a") as record:
        record.write(line + "\n")


def parse(argv):
    positional, flags = [], {}
    for arg in argv:
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            flags[name] = value if "=" in arg else True
        else:
            positional.append(arg)
    return positional, flags


def labels_of(text):
    return dict(item.split("=", 1) for item in text.split(",") if item)


def taints_of(text):
    taints = []
    for item in filter(None, text.split(",")):
        key_value, effect = item.rsplit(":", 1)
        key, value = key_value.split("=", 1)
        taints.append({"key": key, "value": value, "effect": EFFECTS[effect]})
    return taints


def autoscaling_of(flags):
    if "enable-autoscaling" not in flags:
        return {}
    return {
        "enabled": True,
        "minNodeCount": int(flags["min-nodes"]),
        "maxNodeCount": int(flags["max-nodes"]),
        "locationPolicy": flags.get("location-policy", "BALANCED"),
    }


def node_pool(name, flags, zones):
    pool = {
        "name": name,
        "locations": zones,
        "initialNodeCount": int(flags.get("num-nodes", 3)),
        "status": "RUNNING",
        "config": {
            "machineType": flags.get("machine-type", "e2-medium"),
            "diskType": flags.get("disk-type", "pd-balanced"),
            "diskSizeGb": int(flags.get("disk-size", 100)),
            "serviceAccount": flags.get("service-account", "default"),
            "workloadMetadataConfig": {"mode": flags.get("workload-metadata", "GKE_METADATA")},
        },
        "management": {"autoUpgrade": True, "autoRepair": True},
    }
    if flags.get("node-labels"):
        pool["config"]["labels"] = labels_of(flags["node-labels"])
    if flags.get("node-taints"):
        pool["config"]["taints"] = taints_of(flags["node-taints"])
    if autoscaling_of(flags):
        pool["autoscaling"] = autoscaling_of(flags)
    return pool


def authorized_networks(flags):
    cidrs = [c for c in str(flags.get("master-authorized-networks", "")).split(",") if c]
    config = {"enabled": "enable-master-authorized-networks" in flags}
    if cidrs:
        config["cidrBlocks"] = [{"cidrBlock": c} for c in cidrs]
    return config


def gateway_api(flags):
    """networkConfig.gatewayApiConfig as the GKE API reports it: channel CHANNEL_STANDARD for
    --gateway-api=standard, CHANNEL_DISABLED for disabled; absent when never set, which means
    off (Google.Cloud.Container.V1 GatewayAPIConfig.Types.Channel: Unspecified, Disabled,
    Standard, Experimental)."""
    if "gateway-api" not in flags:
        return {}
    return {"gatewayApiConfig": {"channel": f"CHANNEL_{flags['gateway-api'].upper()}"}}


def gke_master_rule(state, cluster, flags):
    """The firewall rule GKE creates with a cluster that has private nodes: from the control
    plane's range to the cluster's nodes (by their network tag), TCP 443 and 10250 only
    (cloud.google.com/kubernetes-engine/docs/how-to/private-clusters, "Adding firewall rules
    for specific use cases"; cloud.google.com/service-mesh/docs/private-cluster-open-port)."""
    tag = f"gke-{cluster}-{hashlib.sha256(cluster.encode()).hexdigest()[:8]}"
    network = f"https://www.googleapis.com/compute/v1/projects/{flags['project']}/global/networks/{flags['network']}"
    state["firewalls"][f"{tag}-master"] = {
        "name": f"{tag}-master",
        "network": network,
        "direction": "INGRESS",
        "priority": 1000,
        "sourceRanges": [flags.get("master-ipv4-cidr") or "172.16.0.0/28"],
        "allowed": [{"IPProtocol": "tcp", "ports": ["443", "10250"]}],
        "targetTags": [f"{tag}-node"],
    }


def allowed_of(text):
    """--rules=tcp:9443,8443 as the Compute API reports it."""
    protocol, _, ports = text.partition(":")
    return [{"IPProtocol": protocol, "ports": ports.split(",")}]


def firewall_rules(state, verb, positional, flags):
    rules = state["firewalls"]
    if verb == "list":
        field, op, value = re.match(r"(\w+)([~=])(.*)", flags["filter"]).groups()
        if field != "name":
            fail(f"fake gcloud: a filter on {field} is not simulated", 3)
        match = (lambda name: re.search(value, name)) if op == "~" else (lambda name: name == value)
        print(json.dumps([rule for name, rule in sorted(rules.items()) if match(name)]))
    elif verb == "create":
        name = positional[0]
        if name in rules:
            fail(f"(gcloud.compute.firewall-rules.create) The resource '{name}' already exists")
        rules[name] = {
            "name": name,
            "network": flags["network"],
            "direction": flags.get("direction", "INGRESS"),
            "priority": 1000,
            "sourceRanges": flags["source-ranges"].split(","),
            "allowed": allowed_of(flags["rules"]),
            "targetTags": flags["target-tags"].split(","),
        }
    elif verb == "update":
        rule = rules.get(positional[0])
        if rule is None:
            fail(f"(gcloud.compute.firewall-rules.update) The resource '{positional[0]}' was not found")
        if "rules" in flags:
            rule["allowed"] = allowed_of(flags["rules"])
        if "source-ranges" in flags:
            rule["sourceRanges"] = flags["source-ranges"].split(",")
        if "target-tags" in flags:
            rule["targetTags"] = flags["target-tags"].split(",")
    else:
        fail(f"fake gcloud: compute firewall-rules {verb} is not simulated", 3)


def services(state, verb, positional, flags):
    """`services list --enabled`: the project's enabled APIs, as Service Usage lists them."""
    if verb != "list" or "enabled" not in flags:
        fail(f"fake gcloud: services {verb} is not simulated", 3)
    project = flags["project"]
    print(json.dumps([{"config": {"name": name}, "state": "ENABLED"} for name in state["services"].get(project, [])]))


def buckets(state, verb, positional, flags):
    """`storage buckets describe|create|update|get-iam-policy|add-iam-policy-binding gs://<bucket>`:
    the bucket as the JSON API's Bucket resource (`describe --raw`: location, customPlacementConfig,
    versioning, softDeletePolicy, lifecycle) and its IAM policy."""
    name = positional[0].removeprefix("gs://")
    bucket = state["buckets"].get(name)
    if verb == "create":
        if bucket is not None:
            fail("(gcloud.storage.buckets.create) HTTPError 409: The requested bucket name is not available.")
        resource = {"name": name, "location": flags["location"].upper()}
        if flags.get("placement"):
            resource["customPlacementConfig"] = {"dataLocations": flags["placement"].upper().split(",")}
        state["buckets"][name] = {"resource": resource, "policy": {"etag": "CAE=", "version": 1, "bindings": []}}
        bucket = state["buckets"][name]
    if bucket is None:
        fail(f"(gcloud.storage.buckets.{verb}) gs://{name} not found: 404.")
    resource = bucket["resource"]
    if "soft-delete-duration" in flags:
        days = int(flags["soft-delete-duration"].removesuffix("d"))
        resource["softDeletePolicy"] = {"retentionDurationSeconds": str(days * 86400)}
    if verb == "describe":
        print(json.dumps(resource))
    elif verb == "update":
        if "versioning" in flags:
            resource["versioning"] = {"enabled": True}
        if "lifecycle-file" in flags:
            resource["lifecycle"] = json.loads(Path(flags["lifecycle-file"]).read_text())
    elif verb == "get-iam-policy":
        print(json.dumps(bucket["policy"]))
    elif verb == "add-iam-policy-binding":
        add_binding(bucket["policy"], flags)
    elif verb != "create":
        fail(f"fake gcloud: storage buckets {verb} is not simulated", 3)


def immutable_tags(repository, flags):
    """--immutable-tags / --no-immutable-tags as the API's dockerConfig.immutableTags (the SDK's
    surface/artifacts/repositories create.yaml and update.yaml: a bool flag, Docker only)."""
    for flag, value in (("immutable-tags", True), ("no-immutable-tags", False)):
        if flag in flags:
            if repository["format"] != "DOCKER":
                fail("INVALID_ARGUMENT: immutable tags apply to Docker repositories only")
            repository["dockerConfig"] = {"immutableTags": value}


def repositories(state, verb, positional, flags):
    """`artifacts repositories describe|create|update`: Artifact Registry repositories, shaped as
    the API's Repository (artifactregistry_v1_messages.py of the gcloud SDK: mode, format,
    dockerConfig.immutableTags, remoteRepositoryConfig.dockerRepository.publicRepository
    DOCKER_HUB or customRepository.uri)."""
    name = positional[0]
    key = f"{flags['project']}/{flags['location']}/{name}"
    resource = f"projects/{flags['project']}/locations/{flags['location']}/repositories/{name}"
    if verb == "describe":
        if key not in state["repositories"]:
            fail(f"NOT_FOUND: Requested entity was not found. (resource {resource})")
        print(json.dumps(state["repositories"][key]))
    elif verb == "create":
        if key in state["repositories"]:
            fail(f"ALREADY_EXISTS: the repository already exists (resource {resource})")
        repository = {"name": resource, "format": flags["repository-format"].upper(), "mode": "STANDARD_REPOSITORY"}
        if flags.get("mode") == "remote-repository":
            upstream = flags["remote-docker-repo"]
            docker = (
                {"publicRepository": upstream.upper().replace("-", "_")}
                if upstream == "docker-hub"
                else {"customRepository": {"uri": upstream}}
            )
            repository.update(mode="REMOTE_REPOSITORY", remoteRepositoryConfig={"dockerRepository": docker})
        immutable_tags(repository, flags)
        state["repositories"][key] = repository
    elif verb == "update":
        if key not in state["repositories"]:
            fail(f"NOT_FOUND: Requested entity was not found. (resource {resource})")
        immutable_tags(state["repositories"][key], flags)
    else:
        fail(f"fake gcloud: artifacts repositories {verb} is not simulated", 3)


def docker_images(state, verb, positional, flags):
    """`artifacts docker images describe <image>@<digest>`: an image the registry holds (state
    "images", references by digest), or NOT_FOUND as Artifact Registry answers."""
    if verb != "describe":
        fail(f"fake gcloud: artifacts docker images {verb} is not simulated", 3)
    reference = positional[0]
    if reference not in state["images"]:
        fail(f"NOT_FOUND: Requested entity was not found. (image {reference})")
    print(json.dumps({"image_summary": {"fully_qualified_digest": reference, "digest": reference.split("@")[1]}}))


def dashboards(state, verb, positional, flags):
    """`monitoring dashboards list|create|update`: the project's Cloud Monitoring dashboards, shaped
    as the API's Dashboard (monitoring.v1 discovery document: name projects/<p>/dashboards/<id>,
    an etag the server sets and an update must carry: the update applies only to the version read)."""
    project = flags["project"]
    boards = state["dashboards"].setdefault(project, {})
    if verb == "list":
        print(json.dumps(list(boards.values())))
        return
    config = json.loads(Path(flags["config-from-file"]).read_text())
    if verb == "create":
        if "etag" in config:
            fail("INVALID_ARGUMENT: etag should not be passed during dashboard creation")
        name = f"projects/{project}/dashboards/{hashlib.sha256(json.dumps(config).encode()).hexdigest()[:12]}"
    elif verb == "update":
        name = positional[0]
        if name not in boards:
            fail(f"NOT_FOUND: Requested entity was not found. (resource {name})")
        if config.get("etag", boards[name]["etag"]) != boards[name]["etag"]:
            fail("ABORTED: etag mismatch: the dashboard changed since it was read")
    else:
        fail(f"fake gcloud: monitoring dashboards {verb} is not simulated", 3)
    etag = hashlib.sha256(f"{name}{json.dumps(config)}{len(boards)}".encode()).hexdigest()[:32]
    boards[name] = {**config, "name": name, "etag": etag}


def clusters(state, verb, positional, flags):
    name = positional[0]
    key = f"{flags['project']}/{flags['region']}/{name}"
    cluster = state["clusters"].get(key)
    if verb == "describe":
        if cluster is None:
            fail(
                f"(gcloud.container.clusters.describe) ResponseError: code=404, message=Not found: "
                f"projects/{flags['project']}/locations/{flags['region']}/clusters/{name}."
            )
        print(json.dumps(cluster))
    elif verb == "create":
        if cluster is not None:
            fail("(gcloud.container.clusters.create) ResponseError: code=409, message=Already exists")
        zones = flags["node-locations"].split(",")
        state["clusters"][key] = {
            "name": name,
            "location": flags["region"],
            "locations": zones,
            "status": "RUNNING",
            "releaseChannel": {"channel": flags["release-channel"].upper()},
            "workloadIdentityConfig": {"workloadPool": flags["workload-pool"]},
            "privateClusterConfig": {"enablePrivateNodes": "enable-private-nodes" in flags},
            "networkConfig": {
                "datapathProvider": "ADVANCED_DATAPATH" if "enable-dataplane-v2" in flags else "LEGACY_DATAPATH",
                **gateway_api(flags),
            },
            "masterAuthorizedNetworksConfig": authorized_networks(flags),
            # Managed collection is on by default since GKE 1.27, unless switched off.
            "monitoringConfig": {
                "managedPrometheusConfig": {
                    "enabled": "no-enable-managed-prometheus" not in flags and "disable-managed-prometheus" not in flags
                }
            },
            "nodePools": [node_pool("default-pool", flags, zones)],
        }
        if "enable-private-nodes" in flags:
            gke_master_rule(state, name, flags)
    elif verb == "update":
        if cluster is None:
            fail("(gcloud.container.clusters.update) ResponseError: code=404, message=Not found")
        if "release-channel" in flags:
            cluster["releaseChannel"] = {"channel": flags["release-channel"].upper()}
        if "workload-pool" in flags:
            cluster["workloadIdentityConfig"] = {"workloadPool": flags["workload-pool"]}
        if "enable-master-authorized-networks" in flags:
            cluster["masterAuthorizedNetworksConfig"] = authorized_networks(flags)
        if "enable-managed-prometheus" in flags or "disable-managed-prometheus" in flags:
            cluster["monitoringConfig"] = {"managedPrometheusConfig": {"enabled": "enable-managed-prometheus" in flags}}
        if "gateway-api" in flags:
            cluster["networkConfig"].update(gateway_api(flags))
    else:
        fail(f"fake gcloud: container clusters {verb} is not simulated", 3)


def node_pools(state, verb, positional, flags):
    name = positional[0]
    cluster = state["clusters"].get(f"{flags['project']}/{flags['region']}/{flags['cluster']}")
    if cluster is None:
        fail("ResponseError: code=404, message=Not found: cluster")
    pools = {pool["name"]: pool for pool in cluster["nodePools"]}
    if verb == "create":
        if name in pools:
            fail("ResponseError: code=409, message=Already exists")
        cluster["nodePools"].append(node_pool(name, flags, flags.get("node-locations", "").split(",")))
    elif verb == "update":
        pool = pools[name]
        if "node-labels" in flags:
            pool["config"]["labels"] = labels_of(flags["node-labels"])
        if "node-taints" in flags:
            pool["config"]["taints"] = taints_of(flags["node-taints"])
        if "enable-autoscaling" in flags:
            pool["autoscaling"] = autoscaling_of(flags)
        if "no-enable-autoscaling" in flags:
            pool.pop("autoscaling", None)
    elif verb == "delete":
        if name not in pools:
            fail("ResponseError: code=404, message=Not found: node pool")
        cluster["nodePools"] = [pool for pool in cluster["nodePools"] if pool["name"] != name]
    else:
        fail(f"fake gcloud: container node-pools {verb} is not simulated", 3)


def service_accounts(state, verb, positional, flags):
    if verb == "describe":
        account = state["service_accounts"].get(positional[0])
        if account is None:
            fail(f"(gcloud.iam.service-accounts.describe) NOT_FOUND: Unknown service account {positional[0]}")
        print(json.dumps(account))
    elif verb == "create":
        email = f"{positional[0]}@{flags['project']}.iam.gserviceaccount.com"
        if email in state["service_accounts"]:
            fail("(gcloud.iam.service-accounts.create) ALREADY_EXISTS")
        state["service_accounts"][email] = {"email": email, "displayName": flags.get("display-name", "")}
    elif positional[0] not in state["service_accounts"]:
        fail(f"(gcloud.iam.service-accounts.{verb}) NOT_FOUND: Unknown service account {positional[0]}")
    elif not iam_policy(state, positional[0], verb, flags):
        fail(f"fake gcloud: iam service-accounts {verb} is not simulated", 3)


def iam_policy(state, resource, verb, flags):
    """`get-iam-policy` and `add-iam-policy-binding` of a project or a service account: the IAM
    policy kept per resource, one binding per role (no conditions)."""
    empty = {"etag": "BwX", "version": 1, "bindings": []}
    if verb == "get-iam-policy":
        print(json.dumps(state["policies"].get(resource, empty)))
        return True
    if verb == "add-iam-policy-binding":
        add_binding(state["policies"].setdefault(resource, empty), flags)
        return True
    return False


def add_binding(policy, flags):
    """Adds --member to the binding of --role (one binding per role, no conditions)."""
    binding = next((b for b in policy["bindings"] if b["role"] == flags["role"] and "condition" not in b), None)
    if binding is None:
        binding = {"role": flags["role"], "members": []}
        policy["bindings"].append(binding)
    if flags["member"] not in binding["members"]:
        binding["members"].append(flags["member"])


def projects(state, verb, positional, flags):
    if not iam_policy(state, positional[0], verb, flags):
        fail(f"fake gcloud: projects {verb} is not simulated", 3)


# -- Cloud DNS --------------------------------------------------------------------------------
# State "dns_zones": "<project>/<zone>" -> {"zone": the ManagedZone, "rrsets": [ResourceRecordSet],
# "changes": [Change]}, shaped as the API's resources (cloud.google.com/dns/docs/reference/v1/
# managedZones, resourceRecordSets, changes).


def record_set(name, rtype, ttl, rrdatas):
    return {"kind": "dns#resourceRecordSet", "name": name, "type": rtype, "ttl": int(ttl), "rrdatas": list(rrdatas)}


def same_record(a, b):
    """A deletion matches a record set when name, type, TTL and data are the same."""
    keys = ("name", "type", "ttl", "rrdatas")
    return {k: a.get(k) for k in keys} == {k: b.get(k) for k in keys}


def dns_zone(state, flags, command, name=None):
    """The zone named ``name`` (default: --zone) in --project, or the error gcloud prints for one
    that does not exist: "HTTPError 404: The 'parameters.managedZone' resource named '<zone>' does
    not exist." (as gcloud printed it for a missing zone: github.com/stacklok/sigstore-the-hard-way
    issue 10)."""
    name = name or flags["zone"]
    zone = state["dns_zones"].get(f"{flags['project']}/{name}")
    if zone is None:
        fail(f"({command}) HTTPError 404: The 'parameters.managedZone' resource named '{name}' does not exist.")
    return zone


def managed_zones(state, verb, positional, flags):
    """`dns managed-zones describe <zone>`: the ManagedZone (dnsName ends with a dot)."""
    if verb != "describe":
        fail(f"fake gcloud: dns managed-zones {verb} is not simulated", 3)
    zone = dns_zone(state, flags, "gcloud.dns.managed-zones.describe", name=positional[0])
    print(json.dumps(zone["zone"]))


def record_sets(state, verb, positional, flags):
    """`dns record-sets list --name --type`: the record sets of that exact name (and type)."""
    if verb != "list":
        fail(f"fake gcloud: dns record-sets {verb} is not simulated", 3)
    zone = dns_zone(state, flags, "gcloud.dns.record-sets.list")
    found = [r for r in zone["rrsets"] if r["name"] == flags["name"] and r["type"] == flags.get("type", r["type"])]
    print(json.dumps(found))


def next_soa(soa):
    """The SOA record with its serial (the third field) raised by one, as `transaction start` adds
    it (gcloud 528.0.0 lib/googlecloudsdk/api_lib/dns/import_util.py NextSOARecordSet)."""
    fields = soa["rrdatas"][0].split()
    fields[2] = str(int(fields[2]) + 1)
    return {**soa, "rrdatas": [" ".join(fields)]}


def transaction(state, verb, positional, flags):
    """`dns record-sets transaction start|remove|add|execute --transaction-file`, as gcloud 528.0.0
    lib/surface/dns/record_sets/transaction/*.py: start refuses an existing file and writes a change
    that raises the SOA serial; remove refuses a record that does not exist exactly as given; add
    appends an addition; execute sends the change (changes.create), prints it and removes the
    file. The file holds the change as JSON (which is YAML, the format gcloud writes)."""
    command = f"gcloud.dns.record-sets.transaction.{verb}"
    zone = dns_zone(state, flags, command)
    path = Path(flags.get("transaction-file", "transaction.yaml"))
    if verb == "start":
        if path.exists():
            fail(f"({command}) Transaction already exists at [{path}]")
        soa = next(r for r in zone["rrsets"] if r["type"] == "SOA")
        path.write_text(json.dumps({"additions": [next_soa(soa)], "deletions": [soa]}))
        return
    if not path.exists():
        fail(f"({command}) Transaction not found at [{path}]")
    change = json.loads(path.read_text())
    if verb in ("add", "remove"):
        record = record_set(flags["name"], flags["type"], flags["ttl"], positional)
        if verb == "remove":
            existing = [r for r in zone["rrsets"] if r["name"] == record["name"] and r["type"] == record["type"]]
            if not existing or not same_record(existing[0], record):
                fail(f"({command}) Record to be removed does not exist")
        change["additions" if verb == "add" else "deletions"].append(record)
        path.write_text(json.dumps(change))
    elif verb == "execute":
        print(json.dumps(create_change(zone, change)))
        path.unlink()
    else:
        fail(f"fake gcloud: dns record-sets transaction {verb} is not simulated", 3)


def create_change(zone, change):
    """changes.create: applied atomically or refused whole. Each deletion "must match existing
    data exactly" (cloud.google.com/dns/docs/reference/v1/changes, deletions[]); the stand-in's
    refusal is its own wording. An addition may not land on a record set of the same name and
    type that stays (answered 409 alreadyExists, see below). The change is kept with status "pending", which the
    first `changes describe` reports; later ones report "done"."""
    rrsets = list(zone["rrsets"])
    for deletion in change["deletions"]:
        match = [r for r in rrsets if same_record(r, deletion)]
        if not match:
            fail(
                "(gcloud.dns.record-sets.transaction.execute) HTTPError 412: the deletion of "
                f"{deletion['name']} {deletion['type']} does not match the existing record set exactly"
            )
        rrsets.remove(match[0])
    for addition in change["additions"]:
        if any(r["name"] == addition["name"] and r["type"] == addition["type"] for r in rrsets):
            # Cloud DNS's answer, as quoted in github.com/hashicorp/terraform-provider-google
            # issue 9112: 409, reason alreadyExists.
            fail(
                "(gcloud.dns.record-sets.transaction.execute) HTTPError 409: The resource 'entity.rrset' "
                f"named '{addition['name']} ({addition['type']})' already exists"
            )
        rrsets.append(addition)
    zone["rrsets"] = rrsets
    created = {
        "kind": "dns#change",
        "id": str(len(zone["changes"]) + 1),
        "additions": change["additions"],
        "deletions": change["deletions"],
        "startTime": "2026-01-01T00:00:00.000Z",
        "status": "pending",
        "describes": 0,
    }
    zone["changes"].append(created)
    return as_answered(created)


def as_answered(change):
    """A kept Change as the API answers it, without the stand-in's count of its reads."""
    return {k: v for k, v in change.items() if k != "describes"}


def changes(state, verb, positional, flags):
    """`dns record-sets changes describe <id>`: the Change, "pending" at the first read, then
    "done" (status: "done" or "pending", cloud.google.com/dns/docs/reference/v1/changes)."""
    if verb != "describe":
        fail(f"fake gcloud: dns record-sets changes {verb} is not simulated", 3)
    zone = dns_zone(state, flags, "gcloud.dns.record-sets.changes.describe")
    change = next((c for c in zone["changes"] if c["id"] == positional[0]), None)
    if change is None:
        fail(f"(gcloud.dns.record-sets.changes.describe) HTTPError 404: change {positional[0]} not found")
    change["describes"] += 1
    if change["describes"] > 1:
        change["status"] = "done"
    print(json.dumps(as_answered(change)))


def main():
    argv = sys.argv[1:]
    with open(os.environ["FAKE_GCLOUD_LOG"], "a") as log:
        log.write(json.dumps(argv) + "\n")
    check_with_real_gcloud(argv)

    state_file = Path(os.environ["FAKE_GCLOUD_STATE"])
    # Ansible runs the clusters of an environment in parallel: one command at a time.
    lock = open(f"{state_file}.lock", "w")  # noqa: SIM115 (held until the process exits)
    fcntl.flock(lock, fcntl.LOCK_EX)
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    for part in (
        "clusters",
        "service_accounts",
        "policies",
        "firewalls",
        "services",
        "buckets",
        "repositories",
        "dashboards",
        "dns_zones",
    ):
        state.setdefault(part, {})
    state.setdefault("images", [])
    unchanged = json.dumps(state)
    positional, flags = parse(argv)
    handlers = {
        ("container", "clusters"): clusters,
        ("container", "node-pools"): node_pools,
        ("iam", "service-accounts"): service_accounts,
        ("compute", "firewall-rules"): firewall_rules,
    }
    if positional[:1] == ["projects"]:
        projects(state, positional[1], positional[2:], flags)
    elif positional[:1] == ["services"]:
        services(state, positional[1], positional[2:], flags)
    elif positional[:2] == ["storage", "buckets"]:
        buckets(state, positional[2], positional[3:], flags)
    elif positional[:3] == ["artifacts", "docker", "images"]:
        docker_images(state, positional[3], positional[4:], flags)
    elif positional[:2] == ["monitoring", "dashboards"]:
        dashboards(state, positional[2], positional[3:], flags)
    elif positional[:4] == ["dns", "record-sets", "changes", "describe"]:
        changes(state, positional[3], positional[4:], flags)
    elif positional[:3] == ["dns", "record-sets", "transaction"]:
        transaction(state, positional[3], positional[4:], flags)
    elif positional[:2] == ["dns", "record-sets"]:
        record_sets(state, positional[2], positional[3:], flags)
    elif positional[:2] == ["dns", "managed-zones"]:
        managed_zones(state, positional[2], positional[3:], flags)
    elif positional[:2] == ["artifacts", "repositories"]:
        repositories(state, positional[2], positional[3:], flags)
    elif tuple(positional[:2]) in handlers:
        handlers[tuple(positional[:2])](state, positional[2], positional[3:], flags)
    else:
        fail(f"fake gcloud: {' '.join(argv)} is not simulated", 3)
    if json.dumps(state) != unchanged:
        state_file.write_text(json.dumps(state, indent=2))


if __name__ == "__main__":
    main()
