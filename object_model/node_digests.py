"""The digests of a node's children, packed compactly for ``PropertyTreeDiscoveryResponse``:
what the digest descent of a resynchronisation compares level by level."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from object_model.errors import InvalidMessageError

NodeDigests = tuple[list[str], bytes, bytes]
"""The children of one node (the one at the same position of the request's ``digests_of``),
in name order, compactly: ``(names, leaf bitmap, digests)`` where bit ``i`` of the bitmap
(little-endian bytes) says whether child ``i`` is a leaf and ``digests`` is the children's
digests, each truncated to the requested length, concatenated. When the requester's shape of
the node (``children_shape``) matched, names and bitmap are left out (``[]``, ``b""``): its own
children are the source's, and only the digests come."""

SHAPE_BYTES = 4

ChildDigest = tuple[str, bool, bytes]
"""``(child name, is a leaf, digest)``: one entry of ``NodeDigests``, unpacked."""


def children_shape(children: list[tuple[str, bool, bytes]]) -> bytes:
    """A node's shape: a ``SHAPE_BYTES`` hash of its children's names and leaf flags (not their
    values), the same whichever order ``children`` come in."""
    h = hashlib.blake2b(digest_size=SHAPE_BYTES)
    for name, leaf, _ in sorted(children):
        h.update(name.encode())
        h.update(b"\x01" if leaf else b"\x00")
    return h.digest()


def pack_children(children: list[tuple[str, bool, bytes]], size: int,
                  shape: bytes | None = None) -> NodeDigests:
    """``NodeDigests`` for ``children`` (``(name, is_leaf, digest)``), digests cut to ``size``;
    without names if ``shape`` (the requester's) is theirs."""
    ordered = sorted(children)
    digests = b"".join(digest[:size] for _, _, digest in ordered)
    if shape is not None and ordered and shape == children_shape(ordered):
        return ([], b"", digests)
    bitmap = bytearray((len(ordered) + 7) // 8)
    for i, (_, leaf, _) in enumerate(ordered):
        if leaf:
            bitmap[i // 8] |= 1 << (i % 8)
    return ([name for name, _, _ in ordered], bytes(bitmap), digests)


def unpack_children(node: NodeDigests, size: int,
                    mine: Sequence[tuple[str, bool, bytes]] = ()) -> list[ChildDigest]:
    """The ``(name, is_leaf, digest)`` entries of ``NodeDigests``, names and leaf flags taken
    from ``mine`` (the requester's children) when the node came without them;
    ``InvalidMessageError`` if the parts do not fit together."""
    names, bitmap, digests = node
    if not names and digests:
        ordered = sorted(mine)
        if len(digests) != len(ordered) * size:
            raise InvalidMessageError(f"node digests do not fit the {len(ordered)} children of "
                                      "the shape they were answered for")
        return [(name, leaf, digests[i * size:(i + 1) * size])
                for i, (name, leaf, _) in enumerate(ordered)]
    if len(bitmap) != (len(names) + 7) // 8 or len(digests) != len(names) * size:
        raise InvalidMessageError(f"node digests do not fit {len(names)} children")
    return [(name, bool(bitmap[i // 8] >> (i % 8) & 1), digests[i * size:(i + 1) * size])
            for i, name in enumerate(names)]


__all__ = ["SHAPE_BYTES", "ChildDigest", "NodeDigests", "children_shape", "pack_children",
           "unpack_children"]
