#!/usr/bin/env python3
"""Make a test CA, a broker certificate and client certificates for config/mosquitto/.

    python3 config/mosquitto/make_certs.py DIR [--broker-host HOST ...] --client CN ...

Writes DIR/ca.crt (+ ca.key), DIR/broker.crt (+ broker.key) for the given host names and
addresses (default localhost and 127.0.0.1), and DIR/<CN>.crt (+ <CN>.key) per client: the
CN is the MQTT username the broker derives (use_identity_as_username), so a gateway's CN is
its gateway id and the collectors' is "collector". Private keys are written with mode 0600.
Uses only Python's ``cryptography`` package (no openssl binary needed). For tests and
trials: a production CA's key belongs offline, not next to the broker.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAYS = 825


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, pem)
    finally:
        os.close(fd)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meterlink test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server_names: list[str] | None = None,
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        )
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
    if server_names:
        alt: list[x509.GeneralName] = []
        for name in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), False)
    return builder.sign(signer, hashes.SHA256())


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make(out: Path, clients: list[str], broker_hosts: list[str], ca_name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    ca_key_path, ca_cert_path = out / "ca.key", out / "ca.crt"
    if ca_key_path.exists() and ca_cert_path.exists():  # more clients for an existing CA
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _cert(ca_name, ca_key, _name(ca_name), ca_key, ca=True)
        _write_key(ca_key_path, ca_key)
        _write_cert(ca_cert_path, ca_cert)
        written += [ca_cert_path, ca_key_path]
    if not (out / "broker.crt").exists():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(broker_hosts[0], key, ca_cert.subject, ca_key, server_names=broker_hosts)
        _write_key(out / "broker.key", key)
        _write_cert(out / "broker.crt", cert)
        written += [out / "broker.crt", out / "broker.key"]
    for cn in clients:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(cn, key, ca_cert.subject, ca_key, client=True)
        _write_key(out / f"{cn}.key", key)
        _write_cert(out / f"{cn}.crt", cert)
        written += [out / f"{cn}.crt", out / f"{cn}.key"]
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="folder for the files")
    parser.add_argument("--client", action="append", default=[], help="a client CN (repeat)")
    parser.add_argument("--broker-host", action="append", help="broker DNS name or IP (repeat)")
    parser.add_argument("--ca-name", default="meterlink test CA")
    args = parser.parse_args(argv)
    for cn in args.client:
        if not cn or "/" in cn or cn.startswith("."):
            parser.error(f"--client {cn!r}: not usable as a file name and MQTT username")
    hosts = args.broker_host or ["localhost", "127.0.0.1"]
    for path in make(args.out, args.client, hosts, args.ca_name):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
