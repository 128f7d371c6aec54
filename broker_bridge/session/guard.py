"""The envelope guard: the one sans-IO stage where end-to-end security plugs into the session.

Theory of operation
-------------------
The session hands the guard every envelope at its two edges:

* ``seal(envelope, now)`` on the way out, for every envelope the session queues (actors'
  messages, and the session's own acks and error reports), after its stream header is final and
  before it is encoded and chunked. A retransmission is sealed again, with its header as it is
  then (``base`` may have moved), so the guard sees exactly what the receiver will. Every chunk
  of a large message carries the seal of the whole.
* ``seal_chunk(piece)`` and ``open_chunk(piece, now)`` (optional): each piece of a large
  envelope sealed on its own and checked before it joins a reassembly, so a forged piece
  never spoils a genuine message; the whole is then opened as proven by its pieces.
* ``sign_frame(destination, items)`` as a frame is built: the guard may cover the envelopes
  ``seal`` left unsigned with one signature for the frame (a manifest item first in it), so a
  busy link pays one signature per frame, not per envelope.
* ``open_frame(manifests, entries, now)`` on the way in, for a frame that carries manifests:
  which of its items they prove, and by whom.
* ``open(envelope, now)`` on the way in, once a chunked message is reassembled and before
  anything acts on it: de-duplication, acknowledgements (an ``Ack`` settles nothing until it is
  opened), stream ordering, delivery or an answer. It returns the envelope to act on, or raises
  a ``ModelError`` whose code says why not (``BAD_SIGNATURE``, ``REPLAYED``, ``STALE``,
  ``DECRYPTION_FAILED`` ...). A refused envelope is counted (``refused_by_guard``), reported
  as an ``InputRejected`` event and otherwise dropped: never delivered, never acknowledged,
  so it leaves no trace in the dedupe window or a stream's position.
* ``answers(refusal, envelope)`` says whether the refusal may be answered with an
  ``ErrorReport`` to the envelope's source. Answering tells a genuine sender why its message
  failed (a key rollover, a skewed clock) and stops its retransmissions at once, since an
  ErrorReport is a final answer; but the source of a refused envelope is unproven, so an answer
  may go to someone who never sent it (reflection), and the code answered is an oracle (which
  keys are known, where the replay window stands). So the choice is the guard's, per code: the
  session asks, never answers a refused broadcast (anyone in a room may claim any source), and
  sends what it may answer through its per-sender rate limit. See DESIGN.md section 9 and
  SECURITY-NOTES.md ("Rejections", "Reflection of error traffic").

Contract: ``seal`` and ``open`` are pure functions of their arguments and the guard's own state
(keys, replay windows), with no I/O and no clock but ``now`` (microseconds, the session's time).
They keep ``id``, ``source``, ``destination``, ``kind``, ``reliable`` and the stream fields as
they are: the session matches acks, duplicates and streams on them. ``seal`` raising is a local
fault and reaches whoever made the session queue the envelope.
"""

from __future__ import annotations

from typing import Protocol

from broker_bridge.envelope import Envelope
from object_model.errors import ModelError


class EnvelopeGuard(Protocol):
    """Seals what a session sends and opens what it receives (see the module docstring).

    ``authenticates`` says whether ``open`` proves who sent an envelope. When it does, the
    session answers nothing it has not opened (a refusal for an unknown destination is met
    with silence: its claimed source is unproven) and takes no chunk for a duplicate before
    the whole message is opened; when it does not (``NullGuard``), a chunk of a message
    delivered before is acknowledged again at once, as without a guard."""

    authenticates: bool

    def seal(self, envelope: Envelope, now: int) -> Envelope:
        """The envelope as it must travel (signed, encrypted...). It may be left for
        ``sign_frame`` to cover (or, if it travels in chunks, ``seal_chunk`` each piece)."""
        ...

    def sign_frame(self, destination: str, items: list[tuple[Envelope, bytes]]) -> list[bytes]:
        """The items of a frame as they must travel: ``items`` (sealed envelopes and their
        bytes, in frame order), preceded by what covers those ``seal`` left unsigned."""
        ...

    def open_frame(self, manifests: list[bytes], entries: list[tuple[bytes, Envelope | None]],
                   now: int) -> dict[int, str]:
        """Which ``entries`` (a frame's items after its manifests: their bytes, and the
        envelope each decoded to) the ``manifests`` prove, by index: the signer of each."""
        ...

    def open(self, envelope: Envelope, now: int, *, framed_by: str | None = None) -> Envelope:
        """The envelope to act on; raises a ``ModelError`` to refuse it. ``framed_by``: the
        signer whose frame manifest covered its exact bytes (``open_frame``)."""
        ...

    def answers(self, refusal: ModelError, envelope: Envelope) -> bool:
        """Whether ``open``'s ``refusal`` of ``envelope`` may be answered with an ErrorReport
        (rate-limited) or must be met with silence."""
        ...

    def marks(self) -> dict[str, int] | None:
        """What the guard must find again after a restart (per sender: the newest timestamp
        it accepted), when it changed since the last call; ``None`` when it did not. The
        endpoint keeps it in its outbox."""
        ...

    def restore(self, marks: dict[str, int]) -> None:
        """``marks`` as the guard gave them before a restart."""
        ...


class NullGuard:
    """The default guard: envelopes pass unchanged both ways, nothing is refused."""

    authenticates = False

    def seal(self, envelope: Envelope, now: int) -> Envelope:
        return envelope

    def sign_frame(self, destination: str, items: list[tuple[Envelope, bytes]]) -> list[bytes]:
        return [encoded for _, encoded in items]

    def open_frame(self, manifests: list[bytes], entries: list[tuple[bytes, Envelope | None]],
                   now: int) -> dict[int, str]:
        return {}

    def open(self, envelope: Envelope, now: int, *, framed_by: str | None = None) -> Envelope:
        return envelope

    def answers(self, refusal: ModelError, envelope: Envelope) -> bool:
        return True  # never asked: it refuses nothing

    def marks(self) -> dict[str, int] | None:
        return None

    def restore(self, marks: dict[str, int]) -> None:
        pass


NULL_GUARD = NullGuard()
"""The shared default (it has no state)."""

__all__ = ["NULL_GUARD", "EnvelopeGuard", "NullGuard"]
