"""TLS to PostgreSQL with verification, against a real server from the host's binaries.

The server serves a certificate for ``localhost`` signed by a certificate authority made here
(as CloudNativePG signs its server certificate with the Cluster's ``<cluster>-ca``; 1.30.0
``internal/controller/cluster_pki.go``, ``ensureServerLeafCertificate``), and its client
authentication rules are roles/postgres's ``postgres_pg_hba``, placed before the default rule as
CloudNativePG 1.30.0 places user-defined rules (``pkg/postgres/configuration.go``,
``hbaTemplateString``). The service's release binary and libpq (the backup and drill tools'
driver) connect with the connection string's form roles/postgres writes into the app secret
(``sslmode=verify-full&sslrootcert=<CA file>``), and refuse a server whose certificate does not
name the host they were asked to reach.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
import requests
import yaml

from support import REPO
from support.postgres import SUPERUSER_PASSWORD, start_postgres_server
from support.tls import server_certificate

POSTGRES_DEFAULTS = REPO / "roles" / "postgres" / "defaults" / "main.yml"


@pytest.fixture(scope="module")
def tls_server():
    """(server, path of the CA certificate): a server for the host name ``localhost`` only."""
    hba_rules = yaml.safe_load(POSTGRES_DEFAULTS.read_text())["postgres_pg_hba"]
    tls = server_certificate("localhost")
    server = start_postgres_server(tls=tls, hba_rules=hba_rules)
    folder = Path(tempfile.mkdtemp(prefix="hello-ca-"))
    ca = folder / "ca.crt"
    ca.write_bytes(tls.ca)
    server.create_database("tls")
    yield server, ca
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


def url(server, ca: Path, host: str, sslmode: str = "verify-full") -> str:
    """The app secret's form of connection string (roles/postgres/tasks/app_secret.yml)."""
    return f"postgresql://postgres:{SUPERUSER_PASSWORD}@{host}:{server.port}/tls?sslmode={sslmode}&sslrootcert={ca}"


def test_the_service_verifies_the_server_and_serves_over_tls(tls_server, hello_service):
    server, ca = tls_server
    service = hello_service(url(server, ca, "localhost"))  # migrates on start, then ready
    assert requests.put(service.url("/hello/tls"), json={"dateOfBirth": "1990-05-17"}, timeout=10).status_code == 204
    assert requests.get(service.url("/hello/tls"), timeout=10).status_code == 200
    sessions = server.psql(
        "select count(*) from pg_stat_ssl join pg_stat_activity using (pid) where datname = 'tls' and ssl"
    )
    assert int(sessions) >= 1, "the service's sessions must be encrypted"


def migrate(hello_binary, database_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "DATABASE_CONNECT_TIMEOUT": "5s"}
    return subprocess.run([str(hello_binary), "migrate"], env=env, capture_output=True, text=True, timeout=60)


def test_the_service_refuses_a_certificate_that_does_not_name_the_host(tls_server, hello_binary):
    server, ca = tls_server
    # 127.0.0.1 is the same server, but its certificate names only localhost.
    done = migrate(hello_binary, url(server, ca, "127.0.0.1"))
    assert done.returncode != 0, "hello migrate must not trust a certificate for another host"
    assert 'certificate not valid for name "127.0.0.1"' in done.stderr, done.stderr


def test_the_service_refuses_a_server_another_ca_signed(tls_server, hello_binary, tmp_path):
    server, _ = tls_server
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_bytes(server_certificate("localhost").ca)
    done = migrate(hello_binary, url(server, other_ca, "localhost"))
    assert done.returncode != 0, "hello migrate must not trust a certificate its CA did not sign"
    assert "invalid peer certificate" in done.stderr, done.stderr


def test_libpq_verifies_the_server_with_the_same_connection_string(tls_server):
    server, ca = tls_server
    with psycopg.connect(url(server, ca, "localhost")) as connection:
        assert connection.pgconn.ssl_in_use
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        psycopg.connect(url(server, ca, "127.0.0.1")).close()


def test_the_server_refuses_connections_without_tls(tls_server):
    server, ca = tls_server
    with pytest.raises(psycopg.OperationalError, match="rejects connection"):
        psycopg.connect(url(server, ca, "localhost", sslmode="disable")).close()
