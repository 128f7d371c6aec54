"""KeyPath: the address of one node in an actor's object tree.

Text form: segments joined by ``/``, no leading or trailing slash; the root is the empty text.
Three characters are escaped inside a segment, RFC 6901 style, so that every path round-trips
through its text form and a path's text is also a pattern that matches exactly that path:

    ``~`` -> ``~0``    ``/`` -> ``~1``    ``*`` -> ``~2``

Segments are non-empty, hold at most ``MAX_SEGMENT_CHARS`` characters and no control characters
(C0, DEL, C1) or lone surrogates; a path has at most ``MAX_DEPTH`` segments. Anything else
(spaces, ``:``, non-ASCII) is allowed as is.

A segment may carry a namespace: everything before its first ``:`` (``com.acme:coolingLoop``,
``obis:1-0:1.8.0``, ``iec61850:MMXU1``). Standard names have none. Whether a namespace is
meaningful at a position (a record field) or not (a collection id) is the schema's business.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import cast, overload

from keypath.errors import KeyPathError

MAX_DEPTH = 64
MAX_SEGMENT_CHARS = 256
MAX_TEXT_CHARS = 8192
PARSED_CACHE = 16384

SEPARATOR = "/"
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_UNESCAPES = {"0": "~", "1": "/", "2": "*"}


def escape_segment(segment: str) -> str:
    """The text form of one segment (``~``, ``/`` and ``*`` escaped)."""
    if "~" in segment:
        segment = segment.replace("~", "~0")
    if "/" in segment:
        segment = segment.replace("/", "~1")
    if "*" in segment:
        segment = segment.replace("*", "~2")
    return segment


def unescape_segment(raw: str, text: str, offset: int) -> str:
    """Undo ``escape_segment``; ``text``/``offset`` only serve the error message."""
    if "~" not in raw:
        return raw
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "~":
            nxt = raw[i + 1] if i + 1 < len(raw) else ""
            if nxt not in _UNESCAPES:
                raise KeyPathError(
                    "'~' must be followed by 0 (~), 1 (/) or 2 (*)", text, offset + i
                )
            out.append(_UNESCAPES[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def check_segment(segment: str, text: str = "", offset: int | None = None) -> None:
    """Raise ``KeyPathError`` unless ``segment`` (unescaped) is a valid segment."""
    if not segment:
        raise KeyPathError("empty segment", text, offset)
    if len(segment) > MAX_SEGMENT_CHARS:
        raise KeyPathError(
            f"segment longer than {MAX_SEGMENT_CHARS} characters", text or segment, offset
        )
    bad = _FORBIDDEN.search(segment)
    if bad is not None:
        pos = None if offset is None else offset + bad.start()
        raise KeyPathError(
            f"control character U+{ord(bad.group()):04X} not allowed", text or segment, pos
        )


def namespace_of(segment: str) -> str | None:
    """The namespace of a segment (text before the first ``:``), or ``None`` for standard names."""
    colon = segment.find(":")
    if colon <= 0:
        return None
    return segment[:colon]


def local_name(segment: str) -> str:
    """A segment without its namespace: ``local_name("obis:1-0:1.8.0") == "1-0:1.8.0"``."""
    colon = segment.find(":")
    return segment if colon <= 0 else segment[colon + 1 :]


def split_text(text: str) -> Iterator[tuple[str, int]]:
    """Yield ``(raw_segment, offset)`` for each segment of a non-empty text, checking slashes."""
    if len(text) > MAX_TEXT_CHARS:
        raise KeyPathError(f"text longer than {MAX_TEXT_CHARS} characters", text[:80] + "...")
    offset = 0
    for raw in text.split(SEPARATOR):
        if not raw:
            if offset == 0:
                reason = "leading '/' (key-paths are relative: write 'a/b', not '/a/b')"
            elif offset == len(text):
                reason = "trailing '/'"
            else:
                reason = "empty segment ('//')"
            raise KeyPathError(reason, text, offset)
        yield raw, offset
        offset += len(raw) + 1


class KeyPath:
    """An immutable, hashable, totally ordered key-path.

    Build one with ``KeyPath.parse("evse/1/connector/2/status")``, from segments with
    ``KeyPath("evse", 1, "status")`` (ints become their decimal text), or by extending another
    with ``/``: ``KeyPath.parse("evse") / 1 / "status"``. ``str(path)`` gives the text form and
    ``KeyPath.parse(str(path)) == path`` for every path.

    Paths order by their segments (segment by segment, as text), so a parent sorts before its
    children and siblings sort together.
    """

    __slots__ = ("_hash", "_segments", "_text")

    _segments: tuple[str, ...]
    _hash: int
    _text: str | None

    def __init__(self, *segments: str | int) -> None:
        segs = tuple(str(s) if type(s) is int else s for s in segments)
        if len(segs) > MAX_DEPTH:
            raise KeyPathError(f"deeper than {MAX_DEPTH} segments", "/".join(map(str, segs)))
        for s in segs:
            if not isinstance(s, str):
                raise KeyPathError(f"segment {s!r} is neither text nor an integer")
            check_segment(s)
        self._segments = cast("tuple[str, ...]", segs)  # each checked to be text above
        self._hash = hash(segs)
        self._text = None

    @classmethod
    def _trusted(cls, segments: tuple[str, ...]) -> KeyPath:
        """Build from segments already known to be valid (internal fast path)."""
        self = object.__new__(cls)
        self._segments = segments
        self._hash = hash(segments)
        self._text = None
        return self

    @classmethod
    def root(cls) -> KeyPath:
        """The empty path: the root of a tree."""
        return _ROOT

    @classmethod
    def parse(cls, text: str) -> KeyPath:
        """Parse the text form; raises ``KeyPathError`` naming the position and the reason.

        Paths are immutable, so a text parsed before gives the same instance back: the same
        few hundred relative paths arrive in every station's tree, and sharing them saves
        both the parsing and the memory of a copy per replica (at most ``PARSED_CACHE``
        texts are kept; when full, the cache starts again)."""
        if type(text) is str:
            known = _PARSED.get(text)
            if known is not None:
                return known
        elif not isinstance(text, str):
            raise KeyPathError(f"expected text, got {type(text).__name__}")
        path = cls._parse(text)
        if len(text) <= MAX_SEGMENT_CHARS:  # bounds the cache's memory: 16384 x 256 chars
            if len(_PARSED) >= PARSED_CACHE:
                _PARSED.clear()
            _PARSED[text] = path
        return path

    @classmethod
    def _parse(cls, text: str) -> KeyPath:
        if not text:
            return _ROOT
        # the common case in one pass of C-level checks; anything doubtful takes the exact
        # path below, which names the position and the reason of an error
        if ("~" not in text and "*" not in text and len(text) <= MAX_TEXT_CHARS
                and _FORBIDDEN.search(text) is None):
            parts = text.split(SEPARATOR)
            if ("" not in parts and len(parts) <= MAX_DEPTH
                    and (len(text) <= MAX_SEGMENT_CHARS
                         or max(map(len, parts)) <= MAX_SEGMENT_CHARS)):
                path = cls._trusted(tuple(parts))
                path._text = text
                return path
        segs: list[str] = []
        escaped = "~" in text
        if "*" in text:
            star = text.index("*")
            raise KeyPathError(
                "'*' is a wildcard and belongs in a pattern; escape a literal '*' as ~2",
                text,
                star,
            )
        for raw, offset in split_text(text):
            seg = unescape_segment(raw, text, offset) if escaped else raw
            check_segment(seg, text, offset)
            segs.append(seg)
        if len(segs) > MAX_DEPTH:
            raise KeyPathError(f"deeper than {MAX_DEPTH} segments", text)
        path = cls._trusted(tuple(segs))
        path._text = text
        return path

    @classmethod
    def from_segments(cls, segments: Iterable[str | int]) -> KeyPath:
        """Build from an iterable of segments (validated)."""
        return cls(*segments)

    @property
    def segments(self) -> tuple[str, ...]:
        """The unescaped segments."""
        return self._segments

    @property
    def name(self) -> str:
        """The last segment (``""`` for the root)."""
        return self._segments[-1] if self._segments else ""

    @property
    def parent(self) -> KeyPath:
        """The path one level up; the root has no parent (``KeyPathError``)."""
        if not self._segments:
            raise KeyPathError("the root has no parent")
        return KeyPath._trusted(self._segments[:-1])

    @property
    def is_root(self) -> bool:
        return not self._segments

    @property
    def namespace(self) -> str | None:
        """The namespace of the last segment, or ``None``."""
        return namespace_of(self._segments[-1]) if self._segments else None

    def is_prefix_of(self, other: KeyPath) -> bool:
        """True when ``other`` is this path or lies below it."""
        n = len(self._segments)
        return len(other._segments) >= n and other._segments[:n] == self._segments

    def relative_to(self, prefix: KeyPath) -> KeyPath:
        """This path with ``prefix`` removed from its front."""
        if not prefix.is_prefix_of(self):
            raise KeyPathError(f"{prefix} is not a prefix", str(self))
        return KeyPath._trusted(self._segments[len(prefix._segments) :])

    def __truediv__(self, other: str | int | KeyPath) -> KeyPath:
        if isinstance(other, KeyPath):
            segs = self._segments + other._segments
        else:
            seg = str(other) if type(other) is int else other
            if not isinstance(seg, str):
                return NotImplemented
            check_segment(seg)
            segs = (*self._segments, seg)
        if len(segs) > MAX_DEPTH:
            raise KeyPathError(f"deeper than {MAX_DEPTH} segments", str(self))
        return KeyPath._trusted(segs)

    def __len__(self) -> int:
        return len(self._segments)

    def __iter__(self) -> Iterator[str]:
        return iter(self._segments)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> KeyPath: ...
    def __getitem__(self, index: int | slice) -> str | KeyPath:
        if isinstance(index, slice):
            return KeyPath._trusted(self._segments[index])
        return self._segments[index]

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = SEPARATOR.join(map(escape_segment, self._segments))
            self._text = text
        return text

    def __repr__(self) -> str:
        return f"KeyPath({str(self)!r})"

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if isinstance(other, KeyPath):
            return self._hash == other._hash and self._segments == other._segments
        return NotImplemented

    def __lt__(self, other: KeyPath) -> bool:
        if not isinstance(other, KeyPath):
            return NotImplemented
        return self._segments < other._segments

    def __le__(self, other: KeyPath) -> bool:
        if not isinstance(other, KeyPath):
            return NotImplemented
        return self._segments <= other._segments

    def __gt__(self, other: KeyPath) -> bool:
        if not isinstance(other, KeyPath):
            return NotImplemented
        return self._segments > other._segments

    def __ge__(self, other: KeyPath) -> bool:
        if not isinstance(other, KeyPath):
            return NotImplemented
        return self._segments >= other._segments

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        return (KeyPath, self._segments)


_ROOT = KeyPath._trusted(())
_ROOT._text = ""
_PARSED: dict[str, KeyPath] = {}
