"""TLS on broker links: the project's CA, a managed Prosody that requires TLS, clients that
verify it and refuse to go on without it (issue 14, "TLS on every broker link")."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509

from actors.app.config import BrokerConfig
from actors.testing import Inbox
from broker_bridge.endpoint import Endpoint
from broker_bridge.pki import CertificateAuthority
from broker_bridge.prosody import ManagedProsody
from broker_bridge.xmpp import BrokerUnreachableError, XmppTransport, is_loopback
from object_model import PropertyValueUpdate


def test_the_ca_keeps_its_key_private_and_issues_certificates_naming_the_broker(
        tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    issued = ca.issue_server(tmp_path / "certs", "csms.local",
                             ["csms.local", "rooms.csms.local"], ["10.0.0.1"])
    assert stat.S_IMODE(issued.key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(issued.certificate.read_bytes())
    root = x509.load_pem_x509_certificate(ca.certificate_path.read_bytes())
    cert.verify_directly_issued_by(root)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["csms.local", "rooms.csms.local"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
    # the CA is loaded again, never replaced: what it issued stays valid
    again = CertificateAuthority(tmp_path / "ca")
    assert again.certificate_path.read_bytes() == ca.certificate_path.read_bytes()
    with pytest.raises(ValueError, match="at least one domain"):
        ca.issue_server(tmp_path / "certs", "x", [])


def test_plaintext_is_configurable_for_loopback_only() -> None:
    assert BrokerConfig().tls
    assert not BrokerConfig(tls=False, host="127.0.0.1").tls
    assert not BrokerConfig(tls=False, host="::1").tls
    with pytest.raises(ValueError, match="only for a broker on loopback"):
        BrokerConfig(tls=False, host="10.0.0.1")
    assert is_loopback("localhost") and not is_loopback("broker.example.test")


def _update(n: int) -> PropertyValueUpdate:
    return PropertyValueUpdate(epoch=n, from_revision=0, to_revision=1, upserts=[])


@pytest.mark.broker
async def test_a_managed_broker_requires_tls_and_its_clients_verify_it(
        managed_prosody: ManagedProsody) -> None:
    assert managed_prosody.tls
    settings = managed_prosody.xmpp_settings()
    assert settings.tls and settings.cafile is not None
    managed_prosody.create_accounts({"tls-a": "pw", "tls-b": "pw"})
    inbox = Inbox()
    async with Endpoint(XmppTransport.client(settings, "tls-a", "pw")) as a, \
            Endpoint(XmppTransport.client(settings, "tls-b", "pw")) as b:
        await b.register("tls-b", inbox)
        await a.register("tls-a", lambda env: None)
        a.send(source="tls-a", destination="tls-b", message=_update(5), reliable=True)
        await inbox.wait_for(1)
        encrypted = a.transport._stream.transport.get_extra_info("ssl_object")  # type: ignore[attr-defined]
        assert encrypted is not None and encrypted.version() in ("TLSv1.2", "TLSv1.3")
    assert inbox.numbers() == [5]
    # a client that would log in without TLS is refused by the broker
    plain = XmppTransport.client(settings.__class__(**{**settings.__dict__, "tls": False,
                                                        "connect_timeout_s": 2.0}),
                                 "tls-a", "pw")
    with pytest.raises(BrokerUnreachableError):
        await plain.start()


@pytest.mark.broker
async def test_a_broker_with_a_certificate_of_another_ca_is_refused_clearly(
        managed_prosody: ManagedProsody, tmp_path: Path) -> None:
    """Someone impersonating the broker with a certificate of any other CA gets no login."""
    managed_prosody.create_accounts({"tls-c": "pw"})
    other = CertificateAuthority(tmp_path / "other-ca")
    settings = managed_prosody.xmpp_settings(cafile=str(other.certificate_path),
                                             connect_timeout_s=2.0)
    transport = XmppTransport.client(settings, "tls-c", "pw")
    with pytest.raises(BrokerUnreachableError, match="certificate is not trusted"):
        await transport.start()


@pytest.mark.broker
async def test_a_client_requiring_tls_refuses_a_broker_that_offers_none(tmp_path: Path) -> None:
    """TLS stripping: a broker (or an attacker in the path) that does not offer STARTTLS gets
    no login at all, not even SCRAM's."""
    async with ManagedProsody(tmp_path / "plain", tls=False) as plain:
        plain.create_accounts({"tls-d": "pw"})
        settings = plain.xmpp_settings(tls=True, connect_timeout_s=2.0)
        transport = XmppTransport.client(settings, "tls-d", "pw")
        with pytest.raises(BrokerUnreachableError, match="did not offer STARTTLS"):
            await transport.start()
