"""Wire encoding of frames, envelopes and message bodies (msgpack), strict and bounded.

A *frame* is what one broker stanza carries: ``[1, envelope_bytes, ...]``, or, when that saves
at least a tenth, ``[2, zlib(msgpack([envelope_bytes, ...]))]``. Envelopes batched to one
destination repeat addresses, id prefixes, kinds and key-paths, so compression typically
divides the bytes the broker must parse by several, for well under a microsecond per envelope;
decompression is bounded (no zip bombs). Each envelope is encoded separately, so one bad
envelope never spoils its neighbours, and signatures can cover exactly one envelope.

An *envelope* is a msgpack array (field order below; trailing fields that hold their default
are left out, so an unreliable envelope costs about 60 bytes of header):

    0 version  1 id  2 source  3 destination  4 priority  5 timestamp_us  6 kind (wire id)
    7 body  8 flags (bit 0: reliable)  9 expires_us  10 correlation  11 stream
    12 stream_epoch  13 seq  14 base  15 chunk [index, count, total]  16 signature  17 encryption

A *body* is a catalogue message as a msgpack array of its fields in declaration order, without
``kind`` (the envelope has it) and without trailing defaults; a ``Batch``'s items are such
arrays too, each led by its kind's wire id. Message fields are therefore
append-only: never reorder or remove one (a test pins the order).

Decoding trusts nothing: total size, nesting depth, container and string sizes, every header
field's type and range, the protocol version and the message kind are checked, and every
violation is a ``ModelError`` whose ``ErrorCode`` says which. Where the header got far enough to
name the sender, ``details`` carries ``source`` and ``id`` so the receiver can answer it.
"""

from __future__ import annotations

import zlib
from enum import Enum
from typing import Any

import msgpack

from broker_bridge.envelope import PROTOCOL_VERSION, ChunkInfo, Envelope, Priority, valid_address
from keypath import KeyPath, KeyPattern
from object_model.errors import (
    InvalidMessageError,
    LimitExceededError,
    MalformedMessageError,
    MessageTooLargeError,
    ModelError,
    UnknownKindError,
    UnsupportedVersionError,
)
from object_model.messages import KINDS_BY_WIRE_ID, MESSAGE_TYPES, MessageBase, decode_message

FRAME_VERSION = 1
FRAME_COMPRESSED = 2
COMPRESS_ABOVE = 512  # smaller frames are sent as they are
MAX_FRAME_BYTES = 192 * 1024  # the broker's stanza limit is 256 kB, base64 adds a third
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 32
MAX_ITEMS = 200_000
MAX_TEXT = 65_536
_HEADER_FIELDS = 18
_WIRE_IDS = {kind: cls.wire_id for kind, cls in MESSAGE_TYPES.items()}


def _default(obj: Any) -> Any:
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, (KeyPath, KeyPattern)):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _reject_ext(code: int, data: bytes) -> Any:
    raise MalformedMessageError(f"msgpack extension type {code} is not allowed")


def _unpack(data: bytes, *, max_bytes: int, what: str) -> Any:
    if len(data) > max_bytes:
        raise MessageTooLargeError(
            f"{what} of {len(data)} bytes exceeds the limit of {max_bytes}",
            details={"size": len(data), "limit": max_bytes},
        )
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_reject_ext,
            max_str_len=min(max_bytes, MAX_TEXT),
            max_bin_len=max_bytes,
            max_array_len=MAX_ITEMS,
            max_map_len=MAX_ITEMS,
        )
    except ModelError:
        raise
    except Exception as exc:  # msgpack raises ValueError, StackError, UnicodeDecodeError...
        raise MalformedMessageError(f"{what} is not valid msgpack: {type(exc).__name__}: {exc}"[:300]
                                    ) from None


def _check_depth(value: Any, what: str) -> None:
    """Refuse arrays and maps nested ``MAX_DEPTH`` deep. Level by level, keeping only the
    containers (a discovery answer is thousands of scalars in small arrays: each is looked
    at once, by a comprehension, never put on a stack)."""
    level = [value] if isinstance(value, (list, dict)) else []
    depth = 0
    while level:
        if depth >= MAX_DEPTH:
            raise LimitExceededError(f"{what} nested deeper than {MAX_DEPTH} levels")
        level = [x for item in level for x in (item if isinstance(item, list) else item.values())
                 if isinstance(x, (list, dict))]
        depth += 1


# -- frames ---------------------------------------------------------------------------------------


MANIFEST_VERSION = 200
"""The first field of a frame item that is not an envelope but a frame signature's manifest
(``broker_bridge.session.signing``): it always comes first in its frame."""
_MANIFEST_HEAD = msgpack.packb(MANIFEST_VERSION)


def is_manifest(item: bytes) -> bool:
    """Whether a frame item is a manifest (a msgpack array whose first field is
    ``MANIFEST_VERSION``), told from its first bytes without decoding it."""
    return (len(item) > 3 and 0x90 <= item[0] <= 0x9F
            and item[1:1 + len(_MANIFEST_HEAD)] == _MANIFEST_HEAD)


def encode_frame(envelopes: list[bytes], *, compress: bool = False) -> bytes:
    """One frame holding already-encoded envelopes (compressed when asked and worth it)."""
    plain = msgpack.packb([FRAME_VERSION, *envelopes], use_bin_type=True)
    if compress and len(plain) > COMPRESS_ABOVE:
        packed = zlib.compress(msgpack.packb(envelopes, use_bin_type=True), 1)
        if len(packed) < len(plain) * 0.9:
            return msgpack.packb([FRAME_COMPRESSED, packed], use_bin_type=True)
    return plain


def frame_overhead(count: int) -> int:
    """Bytes a frame adds around ``count`` envelopes of up to 64 kB (array and bin headers)."""
    return 5 + 3 * count + 2


def decode_frame(data: bytes, max_bytes: int = MAX_FRAME_BYTES) -> list[bytes]:
    """The envelope byte strings of a frame (at most ``max_bytes``, compressed or not)."""
    value = _unpack(data, max_bytes=max_bytes, what="frame")
    if not isinstance(value, list) or not value:
        raise MalformedMessageError("a frame is a non-empty msgpack array")
    if value[0] == FRAME_COMPRESSED:
        if len(value) != 2 or type(value[1]) is not bytes:
            raise MalformedMessageError("a compressed frame is [2, zlib bytes]")
        inflater = zlib.decompressobj()
        try:
            plain = inflater.decompress(value[1], max_bytes + 1)
        except zlib.error as exc:
            raise MalformedMessageError(f"compressed frame does not inflate: {exc}") from None
        if len(plain) > max_bytes or inflater.unconsumed_tail or not inflater.eof:
            raise MessageTooLargeError(
                f"compressed frame inflates beyond {max_bytes} bytes or is truncated",
                details={"limit": max_bytes})
        items = _unpack(plain, max_bytes=max_bytes, what="frame")
        if not isinstance(items, list):
            raise MalformedMessageError("a compressed frame holds an array of envelopes")
    elif value[0] == FRAME_VERSION:
        items = value[1:]
    else:
        raise UnsupportedVersionError(
            f"frame version {value[0]!r:.20} is not {FRAME_VERSION} or {FRAME_COMPRESSED}",
            details={"supported": [FRAME_VERSION, FRAME_COMPRESSED]},
        )
    if not all(type(x) is bytes for x in items):
        raise MalformedMessageError("frame items must be encoded envelopes (bytes)")
    return items


# -- envelopes --------------------------------------------------------------------------------


_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def encode_envelope(env: Envelope) -> bytes:
    """The wire bytes of an envelope."""
    if (not env.reliable and env.expires_us is None and env.correlation is None
            and env.stream is None and not (env.stream_epoch or env.seq or env.base)
            and env.chunk is None and env.signature is None and env.encryption is None):
        # the common case (unreliable, plain): eight fields, nothing to trim
        return _pack([env.version, env.id, env.source, env.destination, env.priority,
                      env.timestamp_us, _WIRE_IDS[env.kind], env.body])
    fields: list[Any] = [
        env.version,
        env.id,
        env.source,
        env.destination,
        env.priority,
        env.timestamp_us,
        _WIRE_IDS[env.kind],
        env.body,
        1 if env.reliable else 0,
        env.expires_us,
        env.correlation,
        env.stream,
        env.stream_epoch,
        env.seq,
        env.base,
        None if env.chunk is None else [env.chunk.index, env.chunk.count, env.chunk.total_size],
        env.signature,
        env.encryption,
    ]
    last = len(fields)
    while last > 9 and fields[last - 1] == _TAIL_DEFAULTS[last - 1] and (
            fields[last - 1] is None) == (_TAIL_DEFAULTS[last - 1] is None):
        last -= 1  # trim only fields that hold exactly their default (0 is not None)
    return _pack(fields[:last])


_TAIL_DEFAULTS: list[Any] = [None] * 8 + [0, None, None, None, 0, 0, 0, None, None, None]


_PRIORITIES = tuple(Priority)
_U64 = 2**64
_OPTIONAL_TYPES: tuple[tuple[str, tuple[type, ...], Any], ...] = (
    # index 8.. : (name, accepted types, default)
    ("flags", (int,), 0),
    ("expires", (int, type(None)), None),
    ("correlation", (bytes, type(None)), None),
    ("stream", (str, type(None)), None),
    ("stream_epoch", (int,), 0),
    ("seq", (int,), 0),
    ("base", (int,), 0),
    ("chunk", (list, type(None)), None),
    ("signature", (bytes, type(None)), None),
    ("encryption", (bytes, type(None)), None),
)
_DEFAULT_TAIL = [default for _, _, default in _OPTIONAL_TYPES]


def _malformed(text: str, fields: list[Any]) -> ModelError:
    return MalformedMessageError(text, details=_context(fields))


def _context(fields: list[Any]) -> dict[str, Any]:
    """What an undecodable envelope still tells us about its sender, for the ErrorReport."""
    ctx: dict[str, Any] = {}
    if len(fields) > 1 and type(fields[1]) is bytes and len(fields[1]) == 16:
        ctx["id"] = fields[1]
    if len(fields) > 2 and type(fields[2]) is str and valid_address(fields[2]):
        ctx["source"] = fields[2]
    return ctx


def decode_envelope(data: bytes, max_bytes: int = MAX_FRAME_BYTES) -> Envelope:
    """An envelope from its wire bytes; raises a ``ModelError`` naming what is wrong.

    Written for speed (this runs for every envelope received): the common path checks each
    field inline; the slow path builds error context only when something is wrong."""
    fields = _unpack(data, max_bytes=max_bytes, what="envelope")
    if type(fields) is not list or not 8 <= len(fields) <= _HEADER_FIELDS:
        raise MalformedMessageError(f"an envelope is an array of 8 to {_HEADER_FIELDS} fields")
    version, msg_id, source, destination, priority, timestamp, wire_kind, body = fields[:8]
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersionError(
            f"envelope version {version!r:.20} is not {PROTOCOL_VERSION}",
            details=_context(fields) | {"supported": [PROTOCOL_VERSION]},
        )
    if type(msg_id) is not bytes or len(msg_id) != 16:
        raise _malformed("message id must be 16 bytes", fields)
    if not valid_address(source):
        raise _malformed(f"invalid source address {source!r:.40}", fields)
    if not valid_address(destination):
        raise _malformed(f"invalid destination address {destination!r:.40}", fields)
    if type(priority) is not int or not 0 <= priority <= 3:
        raise _malformed(f"priority {priority!r:.20} is not 0..3", fields)
    if type(timestamp) is not int or not 0 <= timestamp < _U64:
        raise _malformed("timestamp must be an unsigned 64-bit int", fields)
    kind = KINDS_BY_WIRE_ID.get(wire_kind) if type(wire_kind) is int else None
    if kind is None:
        raise UnknownKindError(f"unknown message kind {wire_kind!r:.20}",
                               details=_context(fields) | {"kind": str(wire_kind)[:20]})
    if type(body) is not bytes:
        raise _malformed("body must be bytes", fields)
    flags, expires, correlation, stream, stream_epoch, seq, base = 0, None, None, None, 0, 0, 0
    raw_chunk = sig = enc = None
    if len(fields) > 8:
        # only the fields present are checked; absent ones keep their defaults
        for index in range(8, len(fields)):
            name, kinds, _ = _OPTIONAL_TYPES[index - 8]
            value = fields[index]
            if type(value) not in kinds:
                raise _malformed(f"envelope field {name} has type {type(value).__name__}", fields)
            if type(value) is int and not 0 <= value < _U64:
                raise _malformed(f"envelope field {name} is out of range", fields)
        tail = fields[8:]
        tail += _DEFAULT_TAIL[len(tail):]
        flags, expires, correlation, stream, stream_epoch, seq, base, raw_chunk, sig, enc = tail
        if correlation is not None and len(correlation) != 16:
            raise _malformed("correlation id must be 16 bytes", fields)
        if stream is not None and len(stream) > 64:
            raise _malformed("stream name longer than 64 characters", fields)
    chunk = None
    if raw_chunk is not None:
        if (len(raw_chunk) != 3 or not all(type(x) is int for x in raw_chunk)
                or not 0 <= raw_chunk[0] < raw_chunk[1] or raw_chunk[2] < 0):
            raise _malformed("chunk must be [index < count, count, total]", fields)
        chunk = ChunkInfo(*raw_chunk)
    return Envelope(msg_id, source, destination, kind, body, _PRIORITIES[priority], timestamp,
                    expires, correlation, bool(flags & 1), stream, stream_epoch, seq, base,
                    chunk, sig, enc, version)


# -- message bodies ---------------------------------------------------------------------------


def _field_table(cls: type[MessageBase]) -> list[tuple[str, Any]]:
    table = []
    for name, info in cls.model_fields.items():
        if name == "kind":
            continue
        if info.is_required():
            default: Any = _REQUIRED
        else:
            default = info.get_default(call_default_factory=True)
            default = _default(default) if isinstance(default, (KeyPath, KeyPattern)) else default
        table.append((name, default))
    return table


_REQUIRED = object()
FIELDS: dict[str, list[tuple[str, Any]]] = {k: _field_table(c) for k, c in MESSAGE_TYPES.items()}


def _compact(plain: dict[str, Any]) -> list[Any]:
    """A message's plain form as its field array, trailing defaults left out; a Batch's items
    each as ``[wire id, *fields]`` (a batch of a hundred discovery requests must not spell
    out every field name a hundred times)."""
    kind = plain["kind"]
    table = FIELDS[kind]
    values = [plain[name] for name, _ in table]
    while values and table[len(values) - 1][1] is not _REQUIRED and values[-1] == table[
            len(values) - 1][1]:
        values.pop()
    if kind == "Batch":
        values[1] = [[_WIRE_IDS[item["kind"]], *_compact(item)] for item in values[1]]
    return values


def _expand(kind: str, values: Any) -> dict[str, Any]:
    """The plain form (a dict with ``kind``) of a field array; ``InvalidMessageError`` if it
    does not fit the kind's table."""
    table = FIELDS[kind]
    if not isinstance(values, list):
        raise InvalidMessageError(f"{kind} body is not an array of fields")
    if len(values) > len(table):
        raise InvalidMessageError(
            f"{kind} body has {len(values)} fields; this version knows {len(table)}"
        )
    plain = {name: value for (name, _), value in zip(table, values, strict=False)}
    plain["kind"] = kind
    if kind == "Batch" and isinstance(plain.get("items"), list):
        items = []
        for index, item in enumerate(plain["items"]):
            item_kind = (KINDS_BY_WIRE_ID.get(item[0]) if isinstance(item, list) and item
                         and type(item[0]) is int else None)
            if item_kind is None or item_kind == "Batch":
                raise InvalidMessageError(
                    f"Batch item {index} is not [kind, fields...] of a known, non-Batch kind",
                    details={"item": index})
            items.append(_expand(item_kind, item[1:]))
        plain["items"] = items
    return plain


def encode_body(message: MessageBase) -> bytes:
    """The body bytes of a catalogue message."""
    return msgpack.packb(_compact(message.model_dump(mode="python")), use_bin_type=True,
                         default=_default)


def decode_body(kind: str, data: bytes, max_bytes: int = MAX_BODY_BYTES) -> MessageBase:
    """The typed message of ``kind`` from body bytes (``InvalidMessageError`` and friends)."""
    if kind not in FIELDS:
        raise UnknownKindError(f"unknown message kind {kind!r:.40}")
    values = _unpack(data, max_bytes=max_bytes, what=f"{kind} body")
    _check_depth(values, f"{kind} body")
    return decode_message(_expand(kind, values))
