"""The enrollment book of a CSMS that issues certificates: the one-time tokens it was given
for the actors it may enroll, and every certificate it issued.

A token is kept as ``token_key(token)`` (``actors.logic.join_proof``), not as itself, with
the address it is for and when it lapses; the key checks proofs, and so could make them for
unspent tokens: the file is its owner's only (0600). A token spent by the same key whose
answer was lost is answered again with the certificate it was issued. ``enroll`` spends a
token and records the certificate issued for it in **one transaction**, together with the id
of the ``JoinNetworkRequest`` that asked: a token is spent exactly once, whatever crashes or
replays come, and a replayed request finds its id taken. A token presented again after it was
spent is told apart (``token_used``: someone else enrolled with it first, which the CSMS logs
loudly: the token was stolen, or the actor was enrolled twice).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from actors.logic.join_proof import token_key
from actors.runtime.storage.sqlite import SqliteFile
from broker_bridge.clock import WALL_CLOCK, Clock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (key BLOB PRIMARY KEY, address TEXT NOT NULL,
                                   expires_us INTEGER NOT NULL, used_us INTEGER,
                                   message_id BLOB);
CREATE TABLE IF NOT EXISTS issued (kid BLOB PRIMARY KEY, address TEXT NOT NULL,
                                   role TEXT NOT NULL, issued_us INTEGER NOT NULL,
                                   not_after_us INTEGER NOT NULL, message_id BLOB UNIQUE,
                                   certificate BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS tokens_by_address ON tokens (address);
"""


@dataclass(frozen=True)
class Spent:
    """Why a token did not admit: none matched (``unknown``), it was spent before
    (``token_used``), it lapsed (``expired``), or the request was taken before
    (``replayed``)."""

    reason: str


class EnrollmentBook(SqliteFile):
    """See the module docstring."""

    SCHEMA = _SCHEMA
    WHAT = "enrollment book"

    def __init__(self, path: Path | str, *, clock: Clock = WALL_CLOCK) -> None:
        super().__init__(path)
        self.clock = clock

    async def loaded(self, db: object) -> None:
        # what it keeps of a token checks proofs made with it: whoever reads the file could
        # make them for unspent tokens, so only its owner may
        for suffix in ("", "-wal", "-shm"):
            path = self.path.with_name(self.path.name + suffix)
            if path.exists():
                os.chmod(path, 0o600)

    async def add_token(self, address: str, *, ttl_s: float = 7 * 86_400,
                        token: str | None = None) -> str:
        """A new one-time token for ``address`` (returned: give it to the actor, out of
        band), lapsing after ``ttl_s``."""
        token = token or secrets.token_urlsafe(16)
        expires = self.clock.now_us() + int(ttl_s * 1e6)
        await self.db.execute("INSERT INTO tokens (key, address, expires_us) VALUES (?, ?, ?)",
                              (token_key(token), address, expires))
        return token

    async def enroll(self, address: str, proves: Callable[[bytes], bool] | None, *,
                     kid: bytes, role: str, message_id: bytes, not_after_us: int,
                     issue: Callable[[], bytes]) -> bytes | Spent:
        """Spend the token of ``address`` that ``proves`` accepts (given each candidate key;
        ``None``: a renewal, no token) and record what ``issue`` makes (the certificate)
        with ``message_id``, in one transaction; or say why not."""
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            outcome = await self._enroll(address, proves, kid=kid, role=role,
                                         message_id=message_id, not_after_us=not_after_us,
                                         issue=issue)
            await db.execute("COMMIT" if isinstance(outcome, bytes) else "ROLLBACK")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
        return outcome

    async def _enroll(self, address: str, proves: Callable[[bytes], bool] | None, *,
                      kid: bytes, role: str, message_id: bytes, not_after_us: int,
                      issue: Callable[[], bytes]) -> bytes | Spent:
        now, db = self.clock.now_us(), self.db
        taken = await db.execute_fetchall("SELECT 1 FROM issued WHERE message_id = ?",
                                          (message_id,))
        if taken:
            return Spent("replayed")
        match = None
        if proves is not None:
            rows = await db.execute_fetchall(
                "SELECT key, expires_us, used_us FROM tokens WHERE address = ?", (address,))
            match = next((row for row in rows if proves(bytes(row[0]))), None)
            if match is not None and match[2] is not None:
                # spent: by this very key (its answer was lost on the way)? answer again
                again = await db.execute_fetchall(
                    "SELECT certificate FROM issued WHERE address = ? AND kid = ?",
                    (address, kid))
                if again:
                    return bytes(next(iter(again))[0])
            if match is None or match[2] is not None or match[1] < now:
                return Spent("unknown" if match is None else
                             "token_used" if match[2] is not None else "expired")
            await db.execute("UPDATE tokens SET used_us = ?, message_id = ? WHERE key = ?",
                             (now, message_id, match[0]))
        certificate = issue()
        await db.execute(
            "INSERT OR REPLACE INTO issued (kid, address, role, issued_us, not_after_us, "
            "message_id, certificate) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kid, address, role, now, not_after_us, message_id, certificate))
        return certificate

    async def issued(self, address: str) -> list[tuple[bytes, int]]:
        """The key ids issued to ``address`` and when each lapses, oldest first."""
        async with self.db.execute("SELECT kid, not_after_us FROM issued WHERE address = ? "
                                   "ORDER BY issued_us", (address,)) as cursor:
            return [(bytes(kid), int(until)) for kid, until in await cursor.fetchall()]


__all__ = ["EnrollmentBook", "Spent"]
