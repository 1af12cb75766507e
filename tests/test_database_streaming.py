"""The DR replica cluster's stream from the primary region, against a real PostgreSQL server.

In production each region's Cluster names the other member as an external cluster with
connection parameters and certificate Secrets (k8s/postgres/cluster.yml.j2). CloudNativePG
1.30.0 makes the designated primary's primary_conninfo of the source's entry
(pkg/management/postgres/instance_replica.go writeReplicaConfigurationForDesignatedPrimary):
its connectionParameters, plus sslcert, sslkey and sslrootcert, each a file holding the key the
selector names of the Secret it names (pkg/management/external/external.go
ConfigureConnectionToServer). PostgreSQL's WAL receiver connects with it for physical
replication.

The server here plays the primary region's primary: PostgreSQL from the host's binaries with
CloudNativePG's fixed client authentication rules and user map before the role's own
(``postgres_pg_hba``), a CA playing the primary's ``<cluster>-ca`` that signs its server
certificate, for the names CloudNativePG gives the rendered primary Cluster's certificate, and
the client certificate of ``streaming_replica`` (``<cluster>-replication``). The client connects
with the connection the rendered DR Cluster makes, as the WAL receiver does, and asks
IDENTIFY_SYSTEM; ``hostaddr`` stands in for the alias Service's address, while the host name
is still what the certificate is verified against.
"""

from __future__ import annotations

import psycopg
import pytest
import yaml
from psycopg.pq import ConnStatus, ExecStatus

from support import REPO
from support.postgres import start_postgres_server
from support.render import load_objects
from support.tls import client_certificate, new_authority, server_certificate

DEFAULTS = yaml.safe_load((REPO / "roles/postgres/defaults/main.yml").read_text())
SHARED = yaml.safe_load((REPO / "group_vars/all/database.yml").read_text())
CLUSTER = SHARED["hello_db_cluster_name"]
NAMESPACE = SHARED["hello_db_namespace"]
PRIMARY_REGION, DR_REGION = "europe-west1", "europe-west4"

# CloudNativePG 1.30.0, pkg/postgres/configuration.go: hbaTemplateString puts these fixed rules
# before the user's (so postgres_pg_hba's `hostnossl all all all reject` never sees them), and
# identTemplateString maps the certificate's common name to the user.
CNPG_FIXED_HBA = [
    "hostssl postgres streaming_replica all cert map=cnpg_streaming_replica",
    "hostssl replication streaming_replica all cert map=cnpg_streaming_replica",
]
CNPG_IDENT = ["cnpg_streaming_replica streaming_replica streaming_replica"]
# api/v1/cluster_types.go StreamingReplicationUser; internal/cmd/manager/instance/run/lifecycle/
# run.go configureStreamingReplicaUser creates it `LOGIN REPLICATION`, without a password.
REPLICATION_USER = "streaming_replica"
# The Secret of its client certificate, <cluster>-replication (api/v1/cluster_types.go
# ReplicationSecretSuffix), of type kubernetes.io/tls with the keys tls.crt and tls.key
# (pkg/certs/certs.go GenerateCertificateSecret, TLSCertKey, TLSPrivateKeyKey); the CA's
# certificate is <cluster>-ca, key ca.crt (DefaultServerCaSecretSuffix, CACertKey).
REPLICATION_SECRET_SUFFIX = "-replication"
TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY, CA_CERT_KEY = "tls.crt", "tls.key", "ca.crt"


def server_names(cluster: dict) -> list[str]:
    """The names CloudNativePG 1.30.0 gives a Cluster's server certificate
    (api/v1/cluster_funcs.go GetClusterAltDNSNames): each of its services -rw, -r, -ro (none
    disabled here) and each additional managed service as name, name.ns, name.ns.svc and
    name.ns.svc.cluster.local (KUBERNETES_CLUSTER_DOMAIN's default), then
    spec.certificates.serverAltDNSNames."""
    spec = cluster["spec"]
    assert not spec.get("managed", {}).get("services", {}).get("disabledDefaultServices")
    services = [f"{CLUSTER}-rw", f"{CLUSTER}-r", f"{CLUSTER}-ro"] + [
        extra["serviceTemplate"]["metadata"]["name"]
        for extra in spec.get("managed", {}).get("services", {}).get("additional", [])
    ]
    names = [
        name
        for service in services
        for name in (
            service,
            f"{service}.{NAMESPACE}",
            f"{service}.{NAMESPACE}.svc",
            f"{service}.{NAMESPACE}.svc.cluster.local",
        )
    ]
    return names + spec.get("certificates", {}).get("serverAltDNSNames", [])


def the_cluster(rendered_root, region: str) -> dict:
    (cluster,) = [
        o
        for o in load_objects(rendered_root / "production" / region / "postgres")
        if o["kind"] == "Cluster" and o["metadata"]["name"] == CLUSTER
    ]
    return cluster


@pytest.fixture(scope="module")
def clusters(rendered_root):
    return {region: the_cluster(rendered_root, region) for region in (PRIMARY_REGION, DR_REGION)}


@pytest.fixture(scope="module")
def primary_ca():
    return new_authority(CLUSTER)


@pytest.fixture(scope="module")
def primary_secrets(primary_ca):
    """The primary region's Secrets CloudNativePG makes, by name: {name: {key: PEM}}."""
    replication = client_certificate(primary_ca, REPLICATION_USER)
    return {
        f"{CLUSTER}-ca": {CA_CERT_KEY: primary_ca.pem},
        f"{CLUSTER}{REPLICATION_SECRET_SUFFIX}": {
            TLS_CERT_KEY: replication.certificate,
            TLS_PRIVATE_KEY_KEY: replication.key,
        },
    }


def start_primary(certificate):
    hba = CNPG_FIXED_HBA + DEFAULTS["postgres_pg_hba"]
    server = start_postgres_server(tls=certificate, hba_rules=hba, ident_rules=CNPG_IDENT)
    server.psql(f"CREATE USER {REPLICATION_USER} REPLICATION")
    return server


@pytest.fixture(scope="module")
def primary(clusters, primary_ca):
    """The primary, serving the certificate its rendered Cluster gets."""
    server = start_primary(server_certificate(*server_names(clusters[PRIMARY_REGION]), authority=primary_ca))
    yield server
    server.stop()


def dr_copies(primary_secrets) -> dict[str, dict[str, bytes]]:
    """The DR region's copies (roles/postgres tasks/primary_certificates.yml): the primary's CA
    certificate in hello_db_ca_secret, its client certificate in postgres_replication_secret."""
    return {
        SHARED["hello_db_ca_secret"].replace("{{ hello_db_cluster_name }}", CLUSTER): {
            CA_CERT_KEY: primary_secrets[f"{CLUSTER}-ca"][CA_CERT_KEY]
        },
        DEFAULTS["postgres_replication_secret"].replace("{{ hello_db_cluster_name }}", CLUSTER): primary_secrets[
            f"{CLUSTER}{REPLICATION_SECRET_SUFFIX}"
        ],
    }


def source_of(cluster: dict) -> dict:
    """The external cluster a replica Cluster follows (spec.replica.source)."""
    (source,) = [e for e in cluster["spec"]["externalClusters"] if e["name"] == cluster["spec"]["replica"]["source"]]
    return source


def primary_conninfo(external: dict, secrets: dict, folder) -> str:
    """What ConfigureConnectionToServer writes for ``external``: its connectionParameters, and
    each Secret key it selects dumped to a file of mode 0600."""
    parameters = dict(external["connectionParameters"])
    for field, option in (("sslCert", "sslcert"), ("sslKey", "sslkey"), ("sslRootCert", "sslrootcert")):
        selector = external.get(field)
        if selector is None:
            continue
        path = folder / f"{selector['name']}_{selector['key']}"
        path.write_bytes(secrets[selector["name"]][selector["key"]])
        path.chmod(0o600)
        parameters[option] = str(path)
    return psycopg.conninfo.make_conninfo(**parameters)


def stream(server, conninfo: str) -> tuple[str, str]:
    """Connects for physical replication as the WAL receiver does and asks IDENTIFY_SYSTEM.
    Returns the system identifier and, read while connected, the session's
    `usename|ssl|client_dn`; raises ConnectionError with libpq's message when refused."""
    conninfo = psycopg.conninfo.make_conninfo(conninfo, hostaddr=server.host, port=server.port, replication="true")
    connection = psycopg.pq.PGconn.connect(conninfo.encode())
    try:
        if connection.status != ConnStatus.OK:
            raise ConnectionError(connection.error_message.decode(errors="replace"))
        result = connection.exec_(b"IDENTIFY_SYSTEM")
        assert result.status == ExecStatus.TUPLES_OK, connection.error_message
        session = server.psql(
            "SELECT usename, ssl, client_dn FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
            "WHERE backend_type = 'walsender'"
        )
        return result.get_value(0, 0).decode(), session
    finally:
        connection.finish()


def test_the_dr_cluster_streams_from_the_primary_with_the_copied_certificates(
    clusters, primary, primary_secrets, tmp_path
):
    source = source_of(clusters[DR_REGION])
    parameters = source["connectionParameters"]
    assert parameters["user"] == REPLICATION_USER
    assert parameters["sslmode"] == "verify-full"
    # The alias Service (roles/postgres tasks/app_secret.yml) listens on 5432.
    assert parameters["port"] == "5432"
    system = primary.psql("SELECT system_identifier FROM pg_control_system()")
    identified, session = stream(primary, primary_conninfo(source, dr_copies(primary_secrets), tmp_path))
    assert identified == system
    # Encrypted, and authenticated by the certificate as streaming_replica.
    assert session == f"{REPLICATION_USER}|t|/CN={REPLICATION_USER}"


def test_verify_full_needs_the_alias_among_the_primary_certificates_names(
    clusters, primary_ca, primary_secrets, tmp_path
):
    source = source_of(clusters[DR_REGION])
    names = server_names(clusters[PRIMARY_REGION])
    alt_names = clusters[PRIMARY_REGION]["spec"]["certificates"]["serverAltDNSNames"]
    assert source["connectionParameters"]["host"] in alt_names
    # The same server without spec.certificates.serverAltDNSNames: only the Cluster's services.
    without = start_primary(server_certificate(*[n for n in names if n not in alt_names], authority=primary_ca))
    try:
        with pytest.raises(ConnectionError, match="does not match host name"):
            stream(without, primary_conninfo(source, dr_copies(primary_secrets), tmp_path))
    finally:
        without.stop()


def test_the_primary_admits_streaming_replica_only_with_a_certificate_its_ca_signed(
    clusters, primary, primary_secrets, tmp_path
):
    source = source_of(clusters[DR_REGION])
    copies = dr_copies(primary_secrets)
    # The DR region's own <cluster>-replication, which its own CA signed: the reason for a copy.
    # Both regions' CAs have the same subject (pkg/certs/certs.go CreateRootCA(cluster name,
    # namespace), the same in every region), so the primary finds its own CA by the issuer's
    # name and the signature does not verify.
    own = client_certificate(new_authority(CLUSTER), REPLICATION_USER)
    copied_name = source["sslCert"]["name"]
    foreign = {**copies, copied_name: {TLS_CERT_KEY: own.certificate, TLS_PRIVATE_KEY_KEY: own.key}}
    with pytest.raises(ConnectionError, match=r"SSL error: tlsv1 alert (decrypt error|unknown ca)"):
        stream(primary, primary_conninfo(source, foreign, tmp_path))
    # No client certificate at all: the `cert` rule refuses, and no password rule comes first.
    without_certificate = {k: v for k, v in source.items() if k not in ("sslCert", "sslKey")}
    with pytest.raises(ConnectionError, match="requires a valid client certificate"):
        stream(primary, primary_conninfo(without_certificate, copies, tmp_path))
