"""Canonical bytes for plain values: one encoding per value, decodable, bounded.

Leaf digests hash these bytes, so two actors that hold the same value always compute the same
digest; snapshots store them. Plain values are ``None``, ``bool``, ``int``, ``float``, ``str``,
``bytes``, lists of plain values and dicts with text keys. An int and a float are different
values (``1`` and ``1.0`` encode differently); dict keys are sorted, so insertion order does not
matter.

Layout: a one-byte tag, then for ints a zig-zag varint, for floats 8 bytes big-endian IEEE 754,
for text/bytes a varint length and the bytes, for lists/dicts a varint count and the items.
"""

from __future__ import annotations

import struct
from typing import Any

from object_model.errors import LimitExceededError, MalformedMessageError, WrongTypeError

MAX_DEPTH = 32

_pack_double = struct.Struct(">d").pack
_unpack_double = struct.Struct(">d").unpack_from


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _enc_int(v: int) -> bytes:
    z = (v << 1) if v >= 0 else ((-v << 1) - 1)
    return b"i" + _varint(z)


def _enc_str(v: str) -> bytes:
    b = v.encode("utf-8", "surrogatepass")
    return b"s" + _varint(len(b)) + b


def _enc_bytes(v: bytes) -> bytes:
    return b"b" + _varint(len(v)) + bytes(v)


_SCALARS: dict[type, Any] = {
    bool: lambda v: b"T" if v else b"F",
    int: _enc_int,
    float: lambda v: b"d" + _pack_double(v),
    str: _enc_str,
    bytes: _enc_bytes,
    bytearray: _enc_bytes,
    type(None): lambda v: b"N",
}


def encode(value: Any, _depth: int = 0) -> bytes:
    """The canonical bytes of a plain value; ``WrongTypeError`` for anything else."""
    enc = _SCALARS.get(type(value))
    if enc is not None:
        return enc(value)
    if _depth >= MAX_DEPTH:
        raise LimitExceededError(f"value nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, (list, tuple)):
        return b"l" + _varint(len(value)) + b"".join(encode(v, _depth + 1) for v in value)
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if type(k) is not str:
                raise WrongTypeError(f"dict key {k!r} is not text")
            items.append((_enc_str(k), encode(v, _depth + 1)))
        items.sort()
        return b"m" + _varint(len(items)) + b"".join(k + v for k, v in items)
    # subclasses of the scalar types (IntEnum, StrEnum...) encode as their base type
    for base, enc in _SCALARS.items():
        if isinstance(value, base) and base is not type(None):
            return enc(base(value))
    raise WrongTypeError(f"{type(value).__name__} is not a plain value")


_I, _S, _D, _T, _F, _N, _B, _L, _M = b"isdTFNblm"


def _varint_at(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    shift = n = 0
    end = len(data)
    while True:
        if pos >= end:
            raise MalformedMessageError("canonical varint truncated")
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return n, pos
        shift += 7
        if shift > 70:
            raise MalformedMessageError("canonical varint too long")


def _value_at(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    """The value at ``pos`` and the position after it (snapshots decode thousands of leaves:
    tags are compared as ints and one-byte varints are read inline)."""
    if pos >= len(data):
        raise MalformedMessageError("canonical value truncated")
    tag = data[pos]
    pos += 1
    if tag in (_S, _B, _I):
        n = data[pos] if pos < len(data) else 0x80
        if n < 0x80:
            pos += 1
        else:
            n, pos = _varint_at(data, pos)
        if tag == _I:
            return ((n >> 1) if not n & 1 else -((n + 1) >> 1)), pos
        end = pos + n
        if end > len(data):
            raise MalformedMessageError("canonical value truncated")
        if tag == _S:
            return data[pos:end].decode("utf-8", "surrogatepass"), end
        return data[pos:end], end
    if tag == _D:
        if pos + 8 > len(data):
            raise MalformedMessageError("canonical value truncated")
        return _unpack_double(data, pos)[0], pos + 8
    if tag == _T:
        return True, pos
    if tag == _F:
        return False, pos
    if tag == _N:
        return None, pos
    if tag not in (_L, _M):
        raise MalformedMessageError(f"unknown canonical tag {bytes((tag,))!r}")
    if depth >= MAX_DEPTH:
        raise LimitExceededError(f"value nested deeper than {MAX_DEPTH} levels")
    count, pos = _varint_at(data, pos)
    # every item takes at least one byte: a count beyond the bytes left is a lie
    if count > len(data) - pos:
        raise MalformedMessageError("canonical count exceeds the data")
    depth += 1
    if tag == _L:
        items = []
        for _ in range(count):
            item, pos = _value_at(data, pos, depth)
            items.append(item)
        return items, pos
    out: dict[str, Any] = {}
    for _ in range(count):
        key, pos = _value_at(data, pos, depth)
        if type(key) is not str:
            raise MalformedMessageError("canonical map key is not text")
        out[key], pos = _value_at(data, pos, depth)
    return out, pos


def decode(data: bytes) -> Any:
    """Inverse of ``encode``; ``MalformedMessageError`` on anything that is not one value."""
    data = bytes(data)
    value, pos = _value_at(data, 0, 0)
    if pos != len(data):
        raise MalformedMessageError("trailing bytes after canonical value")
    return value
