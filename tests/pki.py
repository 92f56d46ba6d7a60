"""A throwaway certificate authority for TLS tests: a CA, a server certificate for 127.0.0.1, and a
client certificate, written as PEM files; server pairs for rotations, and what a TLS server serves."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    extensions: list[x509.ExtensionType],
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_pki(directory: Path, client_name: str = "alice") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue(
        "test-ca", ca_key, _name("test-ca"), ca_key, [x509.BasicConstraints(ca=True, path_length=None)]
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue(
        "etcd-server",
        server_key,
        ca.subject,
        ca_key,
        [
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
        ],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue(
        client_name,
        client_key,
        ca.subject,
        ca_key,
        [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])],
    )
    pki = Pki(*(directory / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")))
    for path, cert in ((pki.ca, ca), (pki.server_cert, server), (pki.client_cert, client)):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for path, key in ((pki.server_key, server_key), (pki.client_key, client_key)):
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return pki


def server_pair(common: str = "localhost") -> tuple[bytes, bytes]:
    """A self-signed server certificate for 127.0.0.1 and its key, as PEM: what a rotation writes."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = _issue(common, key, _name(common), key, [names])
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def der(pem: bytes | str) -> bytes:
    """A PEM certificate as DER, as a TLS peer presents it."""
    return ssl.PEM_cert_to_DER_cert(pem if isinstance(pem, str) else pem.decode())


def https_get(port: int) -> tuple[bytes, bytes]:
    """``GET /`` over TLS on 127.0.0.1 (the certificate not verified): the whole response, and the
    certificate the server presented (DER)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
        response = b""
        while chunk := tls.recv(4096):
            response += chunk
        certificate = tls.getpeercert(binary_form=True)
        assert certificate is not None
        return response, certificate
