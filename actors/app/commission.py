"""The operator's side of the certificates: its root, its sites' CAs, the certificates of the
actors it commissions itself, and revocation lists (``csms commission``, ``csms revoke``;
the demo plays the operator with the same code).

The root (``<directory>/root``: P-256, path length 1) is the anchor every actor is given. It
signs a CA for each site (``site-<local CSMS>``, issuing stations and resource managers only)
and the certificates of the CSMSs, resource managers and operators, written as
``<address>.chain`` into the key directory of the process that runs the actor, beside the
actor's private keys (made there first, never leaving it). Stations are not commissioned
here: they enroll at their first join with a one-time token (``csms enroll``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import msgpack

from actors.app.client import Connection, OperatorClient, with_client
from actors.app.signing import CHAIN_SUFFIX
from actors.runtime.storage.enrollment import EnrollmentBook
from actors.runtime.storage.keys import KeyStore
from broker_bridge.envelope import valid_address
from broker_bridge.pki import CertificateAuthority, site_authority, write_file
from broker_bridge.session.certificates import RevocationList
from keypath import KeyPath
from object_model.messages import PropertyValueWrite, PropertyValueWriteResponse, WriteItem

DAY_S = 86_400.0
CSMS_DAYS = 30.0
"""How long a commissioned certificate lasts (the operator commissions again before)."""


class Commissioning:
    """The operator's root in ``directory`` (made on first use), and what it issues."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.root = CertificateAuthority(self.directory / "root", "csms63110 operator root",
                                         path_length=1)

    @property
    def anchor(self) -> Path:
        """The root's certificate: what every actor trusts."""
        return self.root.certificate_path

    def site_ca(self, local_csms: str, stations: str) -> Path:
        """The directory of the CA of the site whose local CSMS is ``local_csms`` (made on
        first use), which names only addresses beginning with a prefix of ``stations``
        (``cs-site1-``, or several comma-separated: ``cs-site1-,ocpp-site1-``): give it to that
        CSMS as ``[signing] site_ca``."""
        directory = self.directory / f"site-{local_csms}"
        site_authority(directory, self.root, local_csms, stations)
        return directory

    def certify(self, key_dir: Path | str, address: str, role: str, *,
                days: float = CSMS_DAYS) -> Path:
        """A certificate for ``address`` as ``role``, for the keys in ``key_dir`` (made
        there if new), written beside them as ``<address>.chain``."""
        keys = KeyStore(key_dir)
        chain = self.root.chain(self.root.certify(
            address, role, keys.key(address), keys.recipient_key(address).public_key(),
            lifetime_s=days * DAY_S, now_us=time.time_ns() // 1000), self.root.certificate)
        path = Path(key_dir) / f"{address}{CHAIN_SUFFIX}"
        write_file(path, msgpack.packb(chain, use_bin_type=True), 0o644)
        return path

    def revocation_list(self, number: int, addresses: Iterable[str],
                        keys: Iterable[bytes] = ()) -> bytes:
        """A revocation list naming ``addresses`` and ``keys`` (key ids: a station's
        ``security/certificate_serial``), numbered ``number`` (higher than the last one
        published), signed by the root."""
        return RevocationList.make(self.root, number, addresses, time.time_ns() // 1000,
                                   keys).encode()


async def add_token(state_dir: Path | str, station: str, *, ttl_s: float = 7 * DAY_S) -> str:
    """A one-time enrollment token for ``station`` in the book of the local CSMS whose state
    is in ``state_dir`` (it may be running: the book is a SQLite file in WAL mode)."""
    if not valid_address(station):
        raise ValueError(f"{station!r} is not an actor address")
    async with EnrollmentBook(Path(state_dir) / "enrollment.db") as book:
        return await book.add_token(station, ttl_s=ttl_s)


async def publish_revocations(conn: Connection, data: bytes, actor: str = "cloud") -> str:
    """Write a revocation list to ``actor`` (the cloud: it passes it on to every site)."""

    async def work(client: OperatorClient) -> str:
        answer = await client.request(actor, PropertyValueWrite(writes=[WriteItem(
            path=KeyPath.parse("security/revocations"), value=data)]), timeout=15)
        assert isinstance(answer, PropertyValueWriteResponse)
        return f"{actor}: revocation list taken (revision {answer.revision})"

    return await with_client(conn, actor, work)


__all__ = ["Commissioning", "add_token", "publish_revocations"]
