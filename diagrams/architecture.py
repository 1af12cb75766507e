"""The architecture of hello-platform, as code.

Rendered by diagrams/render into architecture.dot (the Graphviz source, the reviewed form),
architecture.svg and architecture.png. Every node carries a fixed id so that the same source
always gives the same Graphviz source.
"""

from diagrams.gcp.compute import KubernetesEngine
from diagrams.gcp.devtools import ContainerRegistry
from diagrams.gcp.network import LoadBalancing
from diagrams.gcp.security import Iam
from diagrams.gcp.storage import Storage
from diagrams.k8s.compute import Cronjob, Deploy, Job
from diagrams.k8s.network import SVC, Ing
from diagrams.onprem.ci import GithubActions
from diagrams.onprem.client import Users
from diagrams.onprem.database import Postgresql
from diagrams.onprem.iac import Ansible

from diagrams import Cluster, Diagram, Edge

TITLE = "hello-platform"

# Edge styles: what a reader tells apart at a glance.
REQUEST = {"color": "#1a73e8"}
REPLICATION = {"color": "#188038"}
BACKUP = {"color": "#e37400"}
CONTROL = {"color": "#5f6368", "style": "dashed"}


class SourceOnlyDiagram(Diagram):
    """A Diagram that builds its Graphviz graph and renders nothing by itself.

    diagrams.Diagram renders on leaving its context and writes beside the working directory;
    diagrams/render does the rendering itself, from the normalised source.
    """

    def __exit__(self, exc_type, exc_value, traceback):
        from diagrams import setdiagram

        setdiagram(None)


def build() -> Diagram:
    """Draw the whole system and return the diagram (its Graphviz graph in `.dot`)."""
    with SourceOnlyDiagram(
        TITLE,
        filename="architecture",
        direction="LR",
        show=False,
        # Plain splines: Graphviz cannot label orthogonal or "curved" edges.
        graph_attr={"pad": "0.5", "fontsize": "20", "labelloc": "t", "splines": "spline"},
        node_attr={"fontsize": "12"},
        edge_attr={"fontsize": "11"},
    ) as diagram:
        consumer = Users("API consumer", nodeid="consumer")

        with Cluster("CI/CD: GitHub Actions"):
            workflows = GithubActions("ci · deploy\nrestore-drill · e2e-kind", nodeid="workflows")
            wif = Iam("Workload Identity\nFederation (no keys)", nodeid="wif")
            ansible = Ansible("ansible-playbook\nplaybooks/*.yml", nodeid="ansible")

        registry = ContainerRegistry("Artifact Registry\n(multi-region,\nimages by digest)", nodeid="registry")
        bucket = Storage(
            "GCS bucket\n(dual-region, versioned)\nWAL · base backups · pg_dump",
            nodeid="bucket",
        )

        with Cluster("region A (primary)"):
            gateway = LoadBalancing("GKE Gateway / LB", nodeid="gateway")
            with Cluster("regional GKE cluster A (zones a, b, c)"):
                gke_a = KubernetesEngine("GKE", nodeid="gke_a")
                route = Ing("HTTPRoute hello\n(weights: live 100, idle 0)", nodeid="route")
                svc_blue = SVC("Service hello-blue", nodeid="svc_blue")
                svc_green = SVC("Service hello-green", nodeid="svc_green")
                preview = SVC("Service hello-preview", nodeid="svc_preview")
                with Cluster("blue-green slots (3 zones, PDB, HPA)"):
                    blue = Deploy("hello-blue\n(live)", nodeid="blue")
                    green = Deploy("hello-green\n(next release)", nodeid="green")
                rw = SVC("hello-db-rw", nodeid="svc_db_rw")
                with Cluster("CloudNativePG Cluster hello-db (quorum sync, RPO 0)"):
                    with Cluster("zone a"):
                        primary = Postgresql("primary", nodeid="pg_primary")
                    with Cluster("zone b"):
                        standby_b = Postgresql("standby", nodeid="pg_standby_b")
                    with Cluster("zone c"):
                        standby_c = Postgresql("standby", nodeid="pg_standby_c")
                dump = Cronjob("pg_dump -Fc\nCronJob", nodeid="pg_dump")

        with Cluster("region B (disaster recovery)"), Cluster("regional GKE cluster B"):
            gke_b = KubernetesEngine("GKE", nodeid="gke_b")
            standby_app = Deploy(
                "hello (warm standby:\nsame digest, takes over\nwith the primary)",
                nodeid="standby_app",
            )
            replica = Postgresql(
                "replica Cluster hello-db\n(designated primary,\npromoted on region loss)",
                nodeid="pg_replica",
            )
            drill = Job(
                "restore drill\n(throw-away cluster:\nverify, RPO, RTO, delete)",
                nodeid="drill",
            )

        consumer >> Edge(label="HTTPS", **REQUEST) >> gateway >> Edge(**REQUEST) >> route
        # Both slot Services are always the route's backends (attached to the load balancer and
        # health-checked); the weights say which one users reach.
        route >> Edge(label="weight 100 (live)", **REQUEST) >> svc_blue >> Edge(**REQUEST) >> blue
        route >> Edge(label="weight 0 (idle)", style="dashed", **REQUEST) >> svc_green >> Edge(**REQUEST) >> green
        preview >> Edge(label="smoke test", **REQUEST) >> green
        [blue, green] >> Edge(**REQUEST) >> rw >> Edge(**REQUEST) >> primary
        primary >> Edge(label="synchronous\nstreaming", **REPLICATION) >> [standby_b, standby_c]
        primary >> Edge(label="WAL archive +\nbase backups\n(barman-cloud)", **BACKUP) >> bucket
        dump >> Edge(label="logical dump", **BACKUP) >> bucket
        primary >> Edge(label="streaming, TLS verify-full\n(cross-region internal LB)", **REPLICATION) >> replica
        bucket >> Edge(label="WAL replay\n(when streaming is down)", **REPLICATION) >> replica
        standby_app >> Edge(label="cross-region\ninternal LB", **REQUEST) >> rw
        bucket >> Edge(label="recovery", **BACKUP) >> drill

        workflows >> Edge(label="OIDC", **CONTROL) >> wif >> Edge(**CONTROL) >> ansible
        ansible >> Edge(label="image.yml", **CONTROL) >> registry
        ansible >> Edge(label="deploy · switchover\nfailover · drills", **CONTROL) >> [gke_a, gke_b]
        registry >> Edge(label="pull by digest", **CONTROL) >> [blue, green, standby_app]
    return diagram
