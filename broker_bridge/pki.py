"""The project's own certificate authorities: for TLS on every broker link, and the
operator's root and site CAs that certify actors (``issue_actor``; the certificates' format
and checks are ``broker_bridge.session.certificates``).

A deployment (or a managed broker, or a test) has one CA: a P-256 key and a self-signed
certificate kept in one directory (``ca.key`` readable by its owner only, ``ca.crt``). It
issues each broker a server certificate naming the broker's XMPP domains (clients check the
domain they log in to, as RFC 6120 asks) and the addresses it listens on. Clients verify the
broker against ``ca.crt`` alone (``XmppSettings.cafile``), never the system's store, so a
certificate from any public CA is no use to someone impersonating the broker.

Keys are made with ``cryptography``; files are written atomically (a scratch file renamed
into place) with mode 0600 for private keys, and an existing CA is loaded, never replaced,
so certificates issued before stay valid.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker_bridge.session.certificates import (
    ACTOR_URI,
    ISSUES_OID,
    RECIPIENT_OID,
    ROLE_OID,
    SCOPE_OID,
    SITE_ROLES,
    CertificateRequest,
    make_request,
    read_request,
)

CA_DAYS = 3650
SERVER_DAYS = 397  # what browsers accept for a server certificate
_PEM = serialization.Encoding.PEM
_DER = serialization.Encoding.DER


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as files."""

    certificate: Path
    key: Path


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically (a scratch file renamed into place) with
    ``mode``, whatever the umask: keys are written this way."""
    scratch = path.with_name(path.name + ".tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(scratch, mode)  # whatever the umask made of it
    os.replace(scratch, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CertificateAuthority:
    """The CA in ``directory`` (made there on first use; see the module docstring)."""

    def __init__(self, directory: Path | str, name: str = "csms63110 CA", *,
                 parent: CertificateAuthority | None = None, path_length: int = 0,
                 extensions: Sequence[x509.ExtensionType] = (), days: int = CA_DAYS) -> None:
        """``parent``: the CA that signs this one's certificate (it is self-signed without
        one); ``path_length``: how many CAs may stand below it; ``extensions``: more of
        them in its certificate (what it may issue, see ``certificates``)."""
        self.directory = Path(directory)
        self.certificate_path = self.directory / "ca.crt"
        self.key_path = self.directory / "ca.key"
        if self.certificate_path.exists() and self.key_path.exists():
            loaded = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{self.key_path} is not an EC key")
            self._key = loaded
            self._cert = x509.load_pem_x509_certificate(self.certificate_path.read_bytes())
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        issuer = subject if parent is None else parent.certificate.subject
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=days)))
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        cert = (builder
                .add_extension(x509.BasicConstraints(ca=True, path_length=path_length),
                               critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key if parent is None else parent._key, hashes.SHA256()))
        write_file(self.key_path, _key_pem(key), 0o600)
        write_file(self.certificate_path, cert.public_bytes(_PEM), 0o644)
        self._key, self._cert = key, cert

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    def sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        """``builder``'s certificate, issued by this CA (issuer name and key identifier
        filled in)."""
        return (builder.issuer_name(self._cert.subject)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self._key.public_key()), critical=False)
                .sign(self._key, hashes.SHA256()))

    def sign_bytes(self, data: bytes) -> bytes:
        """An ECDSA signature of ``data`` by this CA's key (what it publishes besides
        certificates: revocation lists)."""
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def issue_actor(self, request: CertificateRequest, role: str, *, lifetime_s: float,
                    now_us: int) -> bytes:
        """``request``'s actor certificate (DER; ``broker_bridge.session.certificates``),
        naming its address and ``role``, valid from now for ``lifetime_s`` (and from a little
        before: a tenth of that, at most five minutes, for clocks that lag)."""
        now = datetime.datetime.fromtimestamp(now_us / 1e6, datetime.UTC)
        lag = datetime.timedelta(seconds=min(300.0, lifetime_s / 10))
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                              request.address)]))
                   .public_key(request.key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - lag)
                   .not_valid_after(now + datetime.timedelta(seconds=lifetime_s))
                   .add_extension(x509.SubjectAlternativeName(
                       [x509.UniformResourceIdentifier(ACTOR_URI + request.address)]),
                       critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                                  critical=False)
                   .add_extension(x509.UnrecognizedExtension(ROLE_OID, role.encode()),
                                  critical=False))
        if request.recipient is not None:
            builder = builder.add_extension(x509.UnrecognizedExtension(
                RECIPIENT_OID, request.recipient.public_bytes_raw()), critical=False)
        return self.sign(builder).public_bytes(_DER)

    def certify(self, address: str, role: str, key: Ed25519PrivateKey,
                recipient: X25519PublicKey | None, *, lifetime_s: float,
                now_us: int) -> bytes:
        """A certificate for an actor this CA's holder commissions itself (a CSMS, an
        operator: its request never travels)."""
        return self.issue_actor(read_request(make_request(key, address, recipient)), role,
                                lifetime_s=lifetime_s, now_us=now_us)

    def chain(self, leaf: bytes, root: x509.Certificate) -> list[bytes]:
        """What an actor this CA certified shows: its certificate, then this CA's unless it
        is the ``root``."""
        if self._cert.subject == root.subject:
            return [leaf]
        return [leaf, self._cert.public_bytes(_DER)]

    def issue_server(self, directory: Path | str, stem: str, names: Sequence[str],
                     hosts: Sequence[str] = (), days: int = SERVER_DAYS) -> Issued:
        """A server certificate for ``names`` (DNS names: a broker's XMPP domains) and
        ``hosts`` (where it listens: IP addresses, or host names), written as ``<stem>.crt``
        and ``<stem>.key`` in ``directory``."""
        if not names:
            raise ValueError("a server certificate names at least one domain")
        ips = [h for h in dict.fromkeys(hosts) if _is_ip(h)]
        dns = dict.fromkeys([*names, *(h for h in hosts if not _is_ip(h))])
        alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
        return self._issue_tls(directory, stem, names[0], alt,
                               ExtendedKeyUsageOID.SERVER_AUTH, days)

    def issue_client(self, directory: Path | str, stem: str, name: str,
                     days: int = SERVER_DAYS) -> Issued:
        """A TLS client certificate naming ``name`` (its common name: an OCPP charger's
        identity, for security profile 3), written as ``<stem>.crt`` and ``<stem>.key``."""
        return self._issue_tls(directory, stem, name, [],
                               ExtendedKeyUsageOID.CLIENT_AUTH, days)

    def _issue_tls(self, directory: Path | str, stem: str, common_name: str,
                   alt: list[x509.GeneralName], usage: x509.ObjectIdentifier,
                   days: int) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = self.sign(builder)
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        issued = Issued(out / f"{stem}.crt", out / f"{stem}.key")
        write_file(issued.key, _key_pem(key), 0o600)
        write_file(issued.certificate, cert.public_bytes(_PEM), 0o644)
        return issued


def site_authority(directory: Path | str, root: CertificateAuthority, site_csms: str,
                   scope: str) -> CertificateAuthority:
    """The CA of the site whose local CSMS is ``site_csms`` (made under ``root`` on first
    use), which issues stations and resource managers only, whose addresses begin with a
    prefix of ``scope`` (comma-separated: ``cs-site1-,ocpp-site1-``): a compromised site
    names no other site's actors, nor the cloud or an operator."""
    if not [prefix for prefix in scope.split(",") if prefix]:
        raise ValueError("a site CA names the prefixes of the addresses it may issue")
    return CertificateAuthority(
        directory, f"site CA of {site_csms}", parent=root, path_length=0,
        extensions=[x509.UnrecognizedExtension(ISSUES_OID, ",".join(SITE_ROLES).encode()),
                    x509.UnrecognizedExtension(SCOPE_OID, scope.encode()),
                    x509.SubjectAlternativeName(
                        [x509.UniformResourceIdentifier(ACTOR_URI + site_csms)])],
        days=3 * 365)


def broker_certificate(ca: CertificateAuthority, state_dir: Path, domain: str,
                       host: str) -> Issued:
    """A managed broker's certificate, in ``state_dir/certs`` (where Prosody looks for a
    host's certificate by its name), for its domain, its rooms and the address it listens
    on: made once, then kept (every node of a cluster serves the same one)."""
    certs = state_dir / "certs"
    issued = Issued(certs / f"{domain}.crt", certs / f"{domain}.key")
    if issued.certificate.is_file() and issued.key.is_file():
        return issued
    return ca.issue_server(certs, domain, [domain, f"rooms.{domain}"], [host])


__all__ = ["CertificateAuthority", "Issued", "broker_certificate", "site_authority",
           "write_file"]
