"""The site's boot CA and the boot server's certificate: seeds over HTTPS where the client can verify.

A node's seed holds its private host key; its token keeps the URL unguessable, and HTTPS keeps the
token and the seed off the wire. Firmware iPXE rarely carries a site CA, so the scripts stay on
HTTP; the installer or the installed OS (cloud-init) fetch the seed over HTTPS when the site's CA
is in their trust store (an installer image built with it; in the lab, the reimaged host's CA bundle).

The CA (EC P-256, ten years) and each server certificate (one year, the boot server's addresses as
IP SANs, reissued when missing, when its addresses change or within 30 days of expiry) live in the
site secret dir; keys are 0600, certificates 0644.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gpudc import secrets
from gpudc.files import write_atomic

CA_DAYS = 3650
SERVER_DAYS = 365
RENEW_DAYS = 30


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def ca_paths(site: str) -> tuple[Path, Path]:
    base = secrets.site_secret_dir(site)
    return base / "boot-ca.key", base / "boot-ca.crt"


def site_ca(site: str) -> tuple[Path, Path]:
    """(key, certificate) of the site's boot CA, made on first use."""
    key_path, cert_path = ca_paths(site)
    secrets.secret_file(key_path, lambda: _key_pem(ec.generate_private_key(ec.SECP256R1())))
    if not cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"gpudc boot CA of site {site}")])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        _write_cert(cert_path, cert)
    return key_path, cert_path


def server_files(site: str, addresses: list[str]) -> tuple[Path, Path]:
    """(certificate, key) of the boot server at `addresses`, issued by the site CA (reissued when
    missing, when the addresses differ or within RENEW_DAYS of expiry)."""
    ca_key_path, ca_cert_path = site_ca(site)
    base = secrets.site_secret_dir(site)
    cert_path, key_path = base / "boot-server.crt", base / "boot-server.key"
    wanted = sorted(ipaddress.ip_address(a) for a in addresses)
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        try:
            have = sorted(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                          .get_values_for_type(x509.IPAddress))
        except x509.ExtensionNotFound:
            have = []
        if have == wanted and cert.not_valid_after_utc - _now() > datetime.timedelta(days=RENEW_DAYS):
            return cert_path, key_path
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    key_path.unlink(missing_ok=True)
    secrets.secret_file(key_path, lambda: _key_pem(key))
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"gpudc boot server of site {site}")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(a) for a in wanted]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_cert(cert_path, cert)
    return cert_path, key_path
