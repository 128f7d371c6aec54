"""The message catalogue: every message an actor can send, as typed pydantic models.

Messages are mostly ways to read or change an actor's tree atomically, so their parameters are
key-paths and plain values. Each class has a ``kind`` tag (its name) for the discriminated union
``Message`` and a stable small ``wire_id`` the codec may use instead of the name. Bulk data
(leaves, changes) travel as tuples rather than nested models: ``(path, revision, value)``.

Trees are addressed by ``tree``: a key-path in the receiver's aggregate view. Empty means the
receiver's own tree; ``stations/cs-17`` means the copy of station cs-17's tree that a local CSMS
holds (or relays). Paths inside a message are relative to that tree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from keypath import KeyPath
from object_model.access import Role
from object_model.blobs import BlobChunk, BlobChunkRequest, FirmwareUpdate
from object_model.energy_messages import EnergyAlert, S2Message
from object_model.errors import (
    DecryptionFailedError,
    ErrorCode,
    InvalidMessageError,
    ModelError,
    UnknownKindError,
    from_exception,
)
from object_model.message_base import (
    MAX_ITEMS,
    ROOT,
    Digest,
    Epoch,
    MessageBase,
    MessageId,
    Path,
    Pattern,
    Revision,
)
from object_model.monitoring import (
    MonitoringHistory,
    MonitoringQuery,
    MonitoringReport,
    MonitoringTaskSetup,
    TaskControl,
    TaskStatus,
)
from object_model.node_digests import SHAPE_BYTES, NodeDigests
from object_model.operations import RemoteOperation
from object_model.tree import (
    ChangeSet,
    Delete,
    Operation,
    TransactionCommitted,
    Write,
)

LeafItem = tuple[Path, Revision, Any]
"""``(path, revision of last change, value)``."""
DeleteItem = tuple[Path, Revision]
"""``(path, revision of the deletion)``."""


# -- generic access -------------------------------------------------------------------------------


class PropertyTreeDiscoveryRequest(MessageBase):
    """Discover part of a tree. Three modes, combinable:

    * ``patterns``: the leaves matching them (values, and types/access kinds if asked);
    * ``since_revision`` (with ``epoch``): only what changed after that revision, with
      deletions; the cheapest resynchronisation when the requester's copy has the same epoch;
    * ``digests_of``: the child digests of these nodes, one step of a digest descent,
      truncated to ``digest_bytes`` (the root digest is always whole, so a collision of short
      digests can only make a descent go round once more, never leave a copy wrong), answered
      in the same order; with ``shapes`` (the requester's ``children_shape`` of each node),
      nodes of the same shape come back without their children's names. With
      ``since_revision`` and ``digests_on_gap``, the digests are a fallback: answered only
      when the changes cannot be (so a copy that finds its source at another epoch starts the
      descent without another round trip, and one that does not pays nothing for them).

    Digests are *visible* digests (over what the requester may read), so a copy without the
    source's secrets compares equal.
    """

    kind: Literal["PropertyTreeDiscoveryRequest"] = "PropertyTreeDiscoveryRequest"
    wire_id: ClassVar[int] = 1
    tree: Path = KeyPath.root()
    patterns: list[Pattern] = Field(default_factory=list, max_length=256)
    include_values: bool = True
    include_types: bool = False
    epoch: Epoch | None = None
    since_revision: Revision | None = None
    digests_of: list[Path] = Field(default_factory=list, max_length=4096)
    digest_bytes: int = Field(16, ge=1, le=16)
    shapes: list[Annotated[bytes, Field(min_length=SHAPE_BYTES, max_length=SHAPE_BYTES)]] = (
        Field(default_factory=list, max_length=4096))
    digests_on_gap: bool = False

    @model_validator(mode="after")
    def _shapes_fit(self) -> PropertyTreeDiscoveryRequest:
        if self.shapes and len(self.shapes) != len(self.digests_of):
            raise ValueError(f"{len(self.shapes)} shapes for {len(self.digests_of)} nodes: "
                             "give one per node of digests_of, or none")
        if self.digests_on_gap and self.since_revision is None:
            raise ValueError("digests_on_gap makes digests_of a fallback for since_revision, "
                             "which is missing")
        return self


class PropertyTreeDiscoveryResponse(MessageBase):
    """The answer to a discovery. ``complete`` is False when ``since_revision`` could not be
    served (other epoch, or history compacted past it): compare digests instead.

    ``epoch``, ``revision`` and ``root_digest`` say where the tree stands; a pure digest step
    (only ``digests_of`` asked) leaves them out, since the descent's first and last answers
    carry them and each step would otherwise repeat 30 incompressible bytes."""

    kind: Literal["PropertyTreeDiscoveryResponse"] = "PropertyTreeDiscoveryResponse"
    wire_id: ClassVar[int] = 2
    tree: Path = KeyPath.root()
    epoch: Epoch | None = None
    revision: Revision | None = None
    root_digest: Digest | None = None
    complete: bool = True
    leaves: list[LeafItem] = Field(default_factory=list, max_length=MAX_ITEMS)
    deletes: list[DeleteItem] = Field(default_factory=list, max_length=MAX_ITEMS)
    types: list[tuple[Path, dict[str, Any]]] = Field(default_factory=list, max_length=MAX_ITEMS)
    digests: list[NodeDigests] = Field(default_factory=list, max_length=4096)


class PropertyValueRead(MessageBase):
    """Read the values at these paths (leaves, or whole subtrees as maps)."""

    kind: Literal["PropertyValueRead"] = "PropertyValueRead"
    wire_id: ClassVar[int] = 3
    tree: Path = KeyPath.root()
    paths: list[Path] = Field(min_length=1, max_length=4096)


class ReadFailure(MessageBase):
    path: Path
    code: ErrorCode
    text: str


class PropertyValueReadResponse(MessageBase):
    """Values read, each with the revision of its last change; failures listed per path."""

    kind: Literal["PropertyValueReadResponse"] = "PropertyValueReadResponse"
    wire_id: ClassVar[int] = 4
    tree: Path = KeyPath.root()
    epoch: Epoch
    revision: Revision
    values: list[LeafItem] = Field(default_factory=list, max_length=MAX_ITEMS)
    failures: list[ReadFailure] = Field(default_factory=list, max_length=4096)


class WriteItem(MessageBase):
    """One step of a write transaction: set ``value`` at ``path``, or delete ``path``. With
    ``text``, ``value`` is text that the receiver parses according to the type it declares at
    ``path`` (for command lines and configuration files, which do not know the schema). With
    ``sealed``, ``value`` is a secret sealed by the writer to the receiving station's key (the
    value, or its text with ``text``): relays pass it on unread, the station opens it
    (``actors.logic.sealed_values``)."""

    path: Path
    value: Any = None
    delete: bool = False
    text: bool = False
    sealed: bool = False

    @model_validator(mode="after")
    def _sealed_is_bytes(self) -> WriteItem:
        if self.sealed and (self.delete or not isinstance(self.value, bytes)):
            raise ValueError("a sealed write carries its sealed value as bytes, and deletes "
                             "nothing")
        return self


class PropertyValueWrite(MessageBase):
    """A transaction: all writes validated, then applied in order, or none.
    ``expected_revision`` makes it conditional on the tree not having moved on."""

    kind: Literal["PropertyValueWrite"] = "PropertyValueWrite"
    wire_id: ClassVar[int] = 5
    tree: Path = KeyPath.root()
    writes: list[WriteItem] = Field(min_length=1, max_length=MAX_ITEMS)
    expected_revision: Revision | None = None


    def operations(self, parse: Callable[[KeyPath, str], Any] | None = None) -> list[Operation]:
        """The tree operations of this transaction, in order; ``parse(path, text)`` turns
        text values into typed ones (``SchemaRegistry.parse_value``)."""
        ops: list[Operation] = []
        for w in self.writes:
            if w.sealed:  # only its station opens it (actors.logic.sealed_values)
                raise DecryptionFailedError("a sealed value reached a tree that cannot open "
                                            "it", path=w.path)
            if w.delete:
                ops.append(Delete(w.path))
            elif w.text:
                if parse is None or not isinstance(w.value, str):
                    raise InvalidMessageError("a text write needs a text value and a schema",
                                              path=w.path)
                ops.append(Write(w.path, parse(w.path, w.value)))
            else:
                ops.append(Write(w.path, w.value))
        return ops


class PropertyValueWriteResponse(MessageBase):
    """The transaction committed: the tree's revision after it, and whether anything changed."""

    kind: Literal["PropertyValueWriteResponse"] = "PropertyValueWriteResponse"
    wire_id: ClassVar[int] = 6
    tree: Path = KeyPath.root()
    epoch: Epoch
    revision: Revision
    changed: bool


class PropertyValueUpdate(MessageBase):
    """Change notification: what changed between two revisions of a tree.

    A copy at ``from_revision`` or later that applies it is at ``to_revision``; a copy behind
    ``from_revision`` has missed something and must resynchronise. ``root_digest``, when
    given, is the source's visible root digest at ``to_revision``: a copy whose digest differs
    after applying the update has drifted (whatever the cause) and must resynchronise."""

    kind: Literal["PropertyValueUpdate"] = "PropertyValueUpdate"
    wire_id: ClassVar[int] = 7
    tree: Path = KeyPath.root()
    epoch: Epoch
    from_revision: Revision
    to_revision: Revision
    upserts: list[LeafItem] = Field(default_factory=list, max_length=MAX_ITEMS)
    deletes: list[DeleteItem] = Field(default_factory=list, max_length=MAX_ITEMS)
    root_digest: Digest | None = None

    @classmethod
    def from_changes(cls, changes: ChangeSet, tree: KeyPath = ROOT, *,
                     root_digest: bytes | None = None) -> PropertyValueUpdate:
        return cls(
            tree=tree,
            root_digest=root_digest,
            epoch=changes.epoch,
            from_revision=changes.from_revision,
            to_revision=changes.to_revision,
            upserts=list(changes.upserts),
            deletes=list(changes.deletes),
        )

    @classmethod
    def from_commit(
        cls, event: TransactionCommitted, tree: KeyPath = ROOT
    ) -> PropertyValueUpdate:
        """The notification of one committed transaction."""
        rev = event.revision
        return cls(
            tree=tree,
            epoch=event.epoch,
            from_revision=rev - 1,
            to_revision=rev,
            upserts=[(p, rev, v) for p, v in event.upserts],
            deletes=[(p, rev) for p in event.deletes],
        )

    def to_changes(self) -> ChangeSet:
        return ChangeSet(
            epoch=self.epoch,
            from_revision=self.from_revision,
            to_revision=self.to_revision,
            upserts=tuple(self.upserts),
            deletes=tuple(self.deletes),
        )


# -- joining the network ---------------------------------------------------------------------------


class TreeInfo(MessageBase):
    """Where a tree stands: enough for the other side to decide how to resynchronise."""

    tree: Path = KeyPath.root()
    epoch: Epoch
    revision: Revision
    root_digest: Digest


class JoinNetworkRequest(MessageBase):
    """An actor asks to join (a station its CSMS, a local CSMS the cloud). ``proof`` shows that
    it holds the provisioning secret it was given, without the secret
    (``actors.logic.join_proof``); with certificates, ``csr`` asks for one (``proof`` then
    made with a one-time enrollment token, or with the key of the certificate it renews) and
    ``certificate`` shows the one it holds (its chain, leaf first, DER); ``trees`` where its trees (a station: its own; a local
    CSMS: its stations') stand, so the CSMS can resynchronise at once. ``secret`` is retired
    (it carried the secret in clear): it stays empty, and a CSMS refuses a request that fills
    it."""

    kind: Literal["JoinNetworkRequest"] = "JoinNetworkRequest"
    wire_id: ClassVar[int] = 11
    role: Role
    identity: dict[str, str] = Field(default_factory=dict, max_length=64)
    secret: str = Field("", max_length=256)
    trees: list[TreeInfo] = Field(default_factory=list, max_length=100_000)
    proof: bytes = Field(b"", max_length=64)
    csr: bytes = Field(b"", max_length=2048)
    certificate: list[Annotated[bytes, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=2)


class JoinNetworkResponse(MessageBase):
    """Admitted (a refusal is an ``ErrorReport`` with ``not_admitted``). ``heartbeat_s`` is how
    often the actor should show life when it has nothing else to say; ``certificate`` the
    chain issued for the request's ``csr``."""

    kind: Literal["JoinNetworkResponse"] = "JoinNetworkResponse"
    wire_id: ClassVar[int] = 12
    csms: str
    heartbeat_s: float = Field(30.0, gt=0, le=3600)
    certificate: list[Annotated[bytes, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=2)


# -- acknowledgement and errors -------------------------------------------------------------------


class Ack(MessageBase):
    """Confirms that the listed messages were received and processed."""

    kind: Literal["Ack"] = "Ack"
    wire_id: ClassVar[int] = 8
    message_ids: list[MessageId] = Field(min_length=1, max_length=4096)


class Pause(MessageBase):
    """Flow control from a receiver whose handlers cannot keep up: hold the state and bulk
    envelopes for it for ``hold_ms`` (``0``: send them again now), except ``credit_bytes`` of
    them, which may go now; so that the rest wait in the sender's priority queues rather than
    in the broker's and the sockets' FIFO buffers, where a critical envelope would queue
    behind them. Critical and control envelopes are never held. Sessions exchange it; no
    actor sees it."""

    kind: Literal["Pause"] = "Pause"
    wire_id: ClassVar[int] = 26
    hold_ms: int = Field(ge=0, le=10_000)
    credit_bytes: int = Field(0, ge=0, le=16 * 1024 * 1024)


class ErrorReport(MessageBase):
    """Why a message was rejected: a stable code, the message answered, the key-path concerned,
    a human-readable text and structured details for programs."""

    kind: Literal["ErrorReport"] = "ErrorReport"
    wire_id: ClassVar[int] = 9
    code: ErrorCode
    answers: MessageId | None = None
    path: str | None = None
    text: str = Field(max_length=4000)
    details: dict[str, Any] = Field(default_factory=dict)

    def to_exception(self) -> ModelError:
        """The exception this report stands for (to raise at the requester)."""
        from object_model.errors import error_class

        return error_class(self.code)(self.text, path=self.path, details=self.details)


BatchItem = Annotated[
    PropertyTreeDiscoveryRequest
    | PropertyTreeDiscoveryResponse
    | PropertyValueRead
    | PropertyValueReadResponse
    | PropertyValueWrite
    | PropertyValueWriteResponse
    | PropertyValueUpdate
    | Ack
    | ErrorReport,
    Field(discriminator="kind"),
]


class Batch(MessageBase):
    """Several messages that the receiver applies as one transaction: the writes of all its
    ``PropertyValueWrite`` items form a single tree transaction, in order, so either all of
    them take effect or none does. Batches do not nest."""

    kind: Literal["Batch"] = "Batch"
    wire_id: ClassVar[int] = 10
    tree: Path = KeyPath.root()
    items: list[BatchItem] = Field(min_length=1, max_length=1024)

    def operations(self, parse: Callable[[KeyPath, str], Any] | None = None) -> list[Operation]:
        """The tree operations of every write in the batch, in order."""
        ops: list[Operation] = []
        for item in self.items:
            if isinstance(item, PropertyValueWrite):
                ops.extend(item.operations(parse))
        return ops


FanOutItem = Annotated[
    PropertyValueWrite | MonitoringTaskSetup | TaskControl | FirmwareUpdate | RemoteOperation,
    Field(discriminator="kind"),
]

MAX_FAN_OUT = 10_000


class FanOutRequest(MessageBase):
    """One request for many stations, sent down the hierarchy once per link: ``item`` (a
    write, a monitoring setup, a task control or a firmware update, addressed to no tree) is
    handled by the receiver as if it had come once for each of its stations that ``stations``
    names (all of them when empty) and, at a cloud, that ``site`` answers for. Stations behind
    a site's local CSMS are reached through it with one ``FanOutRequest`` for the lot; the
    answer gathers one ``FanOutResult`` per station, so one operator's command to a site's
    thousand stations crosses the uplink once each way."""

    kind: Literal["FanOutRequest"] = "FanOutRequest"
    wire_id: ClassVar[int] = 24
    site: str | None = Field(None, min_length=1, max_length=256)
    stations: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=MAX_FAN_OUT)
    item: FanOutItem

    @model_validator(mode="after")
    def _item_has_no_tree(self) -> FanOutRequest:
        if self.item.tree.segments:
            raise ValueError(f"the item of a fan-out addresses each station's own tree, "
                             f"not {self.item.tree}")
        return self


class FanOutResult(MessageBase):
    """What one station (or whoever answers for it) said to a fan-out's item: ``error`` is
    ``None`` when it was done, and ``text`` says what came of it either way."""

    station: str = Field(min_length=1, max_length=256)
    error: ErrorCode | None = None
    text: str = Field("", max_length=500)


class FanOutResponse(MessageBase):
    """The answers of every station a ``FanOutRequest`` reached, in station order."""

    kind: Literal["FanOutResponse"] = "FanOutResponse"
    wire_id: ClassVar[int] = 25
    results: list[FanOutResult] = Field(default_factory=list, max_length=MAX_FAN_OUT)


Message = Annotated[
    Batch
    | JoinNetworkRequest
    | JoinNetworkResponse
    | PropertyTreeDiscoveryRequest
    | PropertyTreeDiscoveryResponse
    | PropertyValueRead
    | PropertyValueReadResponse
    | PropertyValueWrite
    | PropertyValueWriteResponse
    | PropertyValueUpdate
    | Ack
    | Pause
    | ErrorReport
    | MonitoringTaskSetup
    | TaskControl
    | MonitoringReport
    | MonitoringQuery
    | MonitoringHistory
    | BlobChunkRequest
    | BlobChunk
    | FirmwareUpdate
    | RemoteOperation
    | TaskStatus
    | EnergyAlert
    | S2Message
    | FanOutRequest
    | FanOutResponse,
    Field(discriminator="kind"),
]
"""Any message of the catalogue."""

MESSAGE_ADAPTER: TypeAdapter[Any] = TypeAdapter(Message)
MESSAGE_TYPES: dict[str, type[MessageBase]] = {
    cls.model_fields["kind"].default: cls
    for cls in MessageBase.__subclasses__()
    if "kind" in cls.model_fields
}
KINDS_BY_WIRE_ID: dict[int, str] = {cls.wire_id: kind for kind, cls in MESSAGE_TYPES.items()}
assert len(KINDS_BY_WIRE_ID) == len(MESSAGE_TYPES), "wire ids must be unique"


def decode_message(plain: Any) -> MessageBase:
    """A message from its plain form (a dict with ``kind``).

    ``UnknownKindError`` for a kind not in the catalogue, ``InvalidMessageError`` (with the
    offending fields in ``details``) for anything else that does not fit."""
    if not isinstance(plain, dict):
        raise InvalidMessageError(f"a message is a map, not {type(plain).__name__}")
    kind = plain.get("kind")
    if kind not in MESSAGE_TYPES:
        raise UnknownKindError(
            f"unknown message kind {kind!r:.60}", details={"known": sorted(MESSAGE_TYPES)}
        )
    try:
        return MESSAGE_ADAPTER.validate_python(plain)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0]
        loc = ".".join(str(x) for x in first["loc"][1:])
        raise InvalidMessageError(
            f"{kind}: {first['msg']}" + (f" (field {loc})" if loc else ""),
            details={"kind": kind, "errors": [
                {"field": ".".join(str(x) for x in e["loc"][1:]), "msg": e["msg"]}
                for e in errors[:20]
            ]},
        ) from None


def encode_message(message: MessageBase) -> dict[str, Any]:
    """The plain form of a message (key-paths as text), ready for any codec."""
    return message.model_dump(mode="python")


def error_report(exc: BaseException, *, answers: bytes | None = None) -> ErrorReport:
    """The ``ErrorReport`` for any exception: ours keep their code, path and details; a
    key-path parse error becomes invalid_keypath; anything else internal_error."""
    err = from_exception(exc)
    return ErrorReport(
        code=err.code, answers=answers, path=err.path, text=err.text[:4000],
        details=_plain_details(err.details),
    )


def _plain_details(details: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in details.items():
        if isinstance(v, (str, int, float, bool, type(None), bytes)):
            out[str(k)] = v
        elif isinstance(v, (list, tuple)):
            out[str(k)] = [x if isinstance(x, (str, int, float, bool, type(None), dict)) else str(x)
                           for x in v][:50]
        elif isinstance(v, dict):
            out[str(k)] = _plain_details(v)
        else:
            out[str(k)] = str(v)
    return out
