"""The proofs a joining actor gives without sending what it holds: a provisioning secret,
or a one-time enrollment token.

A station joins its local CSMS, and a local CSMS the cloud, by showing that it was given the
secret its CSMS expects (until certificates issued at enrollment replace secrets; DESIGN.md
section 9). The secret itself never travels: the ``JoinNetworkRequest`` carries
``HMAC-SHA256(secret, context | sender | CSMS)``, so whoever reads the broker's traffic learns
nothing that admits another actor or admits anyone at another CSMS; the broker already vouches
for the sender's address (an account sends only as itself, a component only as addresses of
its domain). The CSMS compares in constant time, and a CSMS given no secret admits nobody:
an empty secret proves nothing.
"""

from __future__ import annotations

import hashlib
import hmac

from object_model.errors import NotAdmittedError
from object_model.messages import JoinNetworkRequest

CONTEXT = b"csms63110/join-proof/1"
TOKEN_CONTEXT = b"csms63110/enrollment-token/1"


def join_proof(secret: str, sender: str, csms: str) -> bytes:
    """What ``sender`` presents to ``csms`` to show it holds ``secret``."""
    message = b"\x00".join((CONTEXT, sender.encode("utf-8"), csms.encode("utf-8")))
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()


def proves(secret: str, proof: bytes, sender: str, csms: str) -> bool:
    """Whether ``proof`` shows that ``sender`` holds ``secret`` (never for an empty one)."""
    if not secret:
        return False
    return hmac.compare_digest(join_proof(secret, sender, csms), proof)


def check_join(secret: str, request: JoinNetworkRequest, sender: str, csms: str) -> None:
    """Admit ``request`` from ``sender`` at ``csms``, or raise ``NotAdmittedError``: for a
    request carrying a secret in clear, and for a missing or wrong proof (one answer for
    both, and for a CSMS that has no secret: a stranger learns nothing of its settings)."""
    if request.secret:
        raise NotAdmittedError(
            f"{sender}: a join carries a proof of the provisioning secret, never the secret "
            "itself (update the joining actor)")
    if not proves(secret, request.proof, sender, csms):
        raise NotAdmittedError(f"{sender}: wrong provisioning secret for {csms}")


def token_key(token: str) -> bytes:
    """What a CSMS keeps of an enrollment token: a key derived from it, good for checking
    proofs made with the token and for nothing else (the token itself is not stored)."""
    return hashlib.sha256(TOKEN_CONTEXT + b"\x00" + token.encode("utf-8")).digest()


def _bound(context: bytes, sender: str, csms: str, request_digest: bytes) -> bytes:
    return b"\x00".join((context, sender.encode("utf-8"), csms.encode("utf-8"),
                         request_digest))


def token_proof(key: bytes, sender: str, csms: str, request_digest: bytes) -> bytes:
    """What ``sender`` presents to ``csms`` with its certificate signing request (named by
    ``request_digest``) to show it holds the enrollment token whose ``token_key`` is ``key``:
    the proof admits that request only, at that CSMS only."""
    return hmac.new(key, _bound(TOKEN_CONTEXT, sender, csms, request_digest),
                    hashlib.sha256).digest()


__all__ = ["CONTEXT", "check_join", "join_proof", "proves", "token_key", "token_proof"]
