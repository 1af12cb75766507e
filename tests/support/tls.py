"""Certificate authorities and the certificates they sign, made for one test run (like the
``<cluster>-ca``, ``<cluster>-server`` and ``<cluster>-replication`` Secrets CloudNativePG makes
for a Cluster)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class ServerCertificate:
    """PEM: ``ca`` (the authority's certificate), ``certificate`` and ``key`` of the server."""

    ca: bytes
    certificate: bytes
    key: bytes


@dataclass(frozen=True)
class KeyPair:
    """PEM: a ``certificate`` and its ``key``."""

    certificate: bytes
    key: bytes


@dataclass(frozen=True)
class Authority:
    """A certificate authority that signs server and client certificates."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_authority(common_name: str = "test-ca") -> Authority:
    """A self-signed CA valid for a day, with a P-256 key as CloudNativePG 1.30.0 makes them
    (pkg/certs/certs.go)."""
    not_before, not_after = _validity()
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


def _leaf(authority: Authority, common_name: str, usage, dns_names=()) -> KeyPair:
    not_before, not_after = _validity()
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, True, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]), critical=False
        )
    certificate = builder.sign(authority.key, hashes.SHA256())
    return KeyPair(certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def server_certificate(*dns_names: str, authority: Authority | None = None) -> ServerCertificate:
    """A server certificate for ``dns_names`` (subject alternative names), valid for a day,
    signed by ``authority`` (a new one when not given)."""
    authority = authority or new_authority()
    pair = _leaf(authority, dns_names[0], ExtendedKeyUsageOID.SERVER_AUTH, dns_names)
    return ServerCertificate(ca=authority.pem, certificate=pair.certificate, key=pair.key)


def client_certificate(authority: Authority, user: str) -> KeyPair:
    """A client certificate for the database user ``user`` (its common name), signed by
    ``authority``, as CloudNativePG 1.30.0 signs the streaming_replica certificate with the
    Cluster's client CA (internal/controller/cluster_pki.go ensureReplicationClientLeafCertificate,
    pkg/certs/certs.go CertTypeClient)."""
    return _leaf(authority, user, ExtendedKeyUsageOID.CLIENT_AUTH)
