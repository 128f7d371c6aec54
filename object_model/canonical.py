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


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise MalformedMessageError("canonical value truncated")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def varint(self) -> int:
        shift = n = 0
        while True:
            if self.pos >= len(self.data):
                raise MalformedMessageError("canonical varint truncated")
            byte = self.data[self.pos]
            self.pos += 1
            n |= (byte & 0x7F) << shift
            if byte < 0x80:
                return n
            shift += 7
            if shift > 70:
                raise MalformedMessageError("canonical varint too long")

    def value(self, depth: int) -> Any:
        tag = self.take(1)
        if tag == b"i":
            z = self.varint()
            return (z >> 1) if not z & 1 else -((z + 1) >> 1)
        if tag == b"s":
            return self.take(self.varint()).decode("utf-8", "surrogatepass")
        if tag == b"d":
            return _unpack_double(self.take(8))[0]
        if tag == b"T":
            return True
        if tag == b"F":
            return False
        if tag == b"N":
            return None
        if tag == b"b":
            return bytes(self.take(self.varint()))
        if depth >= MAX_DEPTH:
            raise LimitExceededError(f"value nested deeper than {MAX_DEPTH} levels")
        if tag == b"l":
            count = self.varint()
            self._check_count(count)
            return [self.value(depth + 1) for _ in range(count)]
        if tag == b"m":
            count = self.varint()
            self._check_count(count)
            out: dict[str, Any] = {}
            for _ in range(count):
                key = self.value(depth + 1)
                if type(key) is not str:
                    raise MalformedMessageError("canonical map key is not text")
                out[key] = self.value(depth + 1)
            return out
        raise MalformedMessageError(f"unknown canonical tag {tag!r}")

    def _check_count(self, count: int) -> None:
        # every item takes at least one byte: a count beyond the bytes left is a lie
        if count > len(self.data) - self.pos:
            raise MalformedMessageError("canonical count exceeds the data")


def decode(data: bytes) -> Any:
    """Inverse of ``encode``; ``MalformedMessageError`` on anything that is not one value."""
    reader = _Reader(bytes(data))
    value = reader.value(0)
    if reader.pos != len(reader.data):
        raise MalformedMessageError("trailing bytes after canonical value")
    return value
