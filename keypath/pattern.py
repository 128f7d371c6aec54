"""KeyPattern: a key-path with wildcards, for discovery and monitoring selectors.

``*`` matches exactly one segment, ``**`` any number of segments including none. Wildcards are
whole segments only (``evse/*/status``, ``evse/**``); a literal ``*`` inside a segment is written
``~2``, as in a key-path. ``**/**`` means the same as ``**`` and is normalised to it.
"""

from __future__ import annotations

from collections.abc import Iterable

from keypath.errors import KeyPathError
from keypath.path import (
    MAX_DEPTH,
    SEPARATOR,
    KeyPath,
    check_segment,
    escape_segment,
    split_text,
    unescape_segment,
)


class Wildcard:
    """One of the two wildcard segments; compare with ``STAR`` and ``GLOBSTAR`` by identity."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def __reduce__(self) -> str:
        return "STAR" if self.text == "*" else "GLOBSTAR"


STAR = Wildcard("*")
GLOBSTAR = Wildcard("**")

PatternSegment = str | Wildcard


def _normalise(segments: Iterable[PatternSegment]) -> tuple[PatternSegment, ...]:
    out: list[PatternSegment] = []
    for seg in segments:
        if seg is GLOBSTAR and out and out[-1] is GLOBSTAR:
            continue
        out.append(seg)
    return tuple(out)


class KeyPattern:
    """An immutable, hashable key-path pattern.

    ``KeyPattern.parse("evse/*/connector/**")``; ``pattern.matches(path)``. The text of any
    ``KeyPath`` parses as a pattern that matches exactly that path.
    """

    __slots__ = ("_hash", "_segments", "_text")

    def __init__(self, segments: Iterable[PatternSegment]) -> None:
        segs = _normalise(segments)
        if len(segs) > MAX_DEPTH:
            raise KeyPathError(f"deeper than {MAX_DEPTH} segments")
        for s in segs:
            if isinstance(s, Wildcard):
                if s is not STAR and s is not GLOBSTAR:
                    raise KeyPathError(f"unknown wildcard {s!r}")
            elif isinstance(s, str):
                check_segment(s)
            else:
                raise KeyPathError(f"segment {s!r} is neither text nor a wildcard")
        self._segments: tuple[PatternSegment, ...] = segs
        self._hash = hash(tuple(s if isinstance(s, str) else (s.text,) for s in segs))
        self._text: str | None = None

    @classmethod
    def parse(cls, text: str) -> KeyPattern:
        """Parse the text form; raises ``KeyPathError`` naming the position and the reason."""
        if not isinstance(text, str):
            raise KeyPathError(f"expected text, got {type(text).__name__}")
        if not text:
            return cls(())
        segs: list[PatternSegment] = []
        for raw, offset in split_text(text):
            if raw == "*":
                segs.append(STAR)
                continue
            if raw == "**":
                segs.append(GLOBSTAR)
                continue
            star = raw.find("*")
            if star >= 0:
                raise KeyPathError(
                    "wildcards must be whole segments ('*' or '**'); "
                    "escape a literal '*' as ~2",
                    text,
                    offset + star,
                )
            seg = unescape_segment(raw, text, offset)
            check_segment(seg, text, offset)
            segs.append(seg)
        if len(segs) > MAX_DEPTH:
            raise KeyPathError(f"deeper than {MAX_DEPTH} segments", text)
        return cls(segs)

    @classmethod
    def from_path(cls, path: KeyPath) -> KeyPattern:
        """The pattern that matches exactly ``path``."""
        return cls(path.segments)

    @property
    def segments(self) -> tuple[PatternSegment, ...]:
        return self._segments

    @property
    def is_literal(self) -> bool:
        """True when the pattern has no wildcard (it matches one path)."""
        return all(isinstance(s, str) for s in self._segments)

    @property
    def literal_prefix(self) -> KeyPath:
        """The longest run of literal segments at the front: where a tree walk can start."""
        out: list[str] = []
        for s in self._segments:
            if not isinstance(s, str):
                break
            out.append(s)
        return KeyPath._trusted(tuple(out))

    def to_path(self) -> KeyPath:
        """The single path a literal pattern matches."""
        if not self.is_literal:
            raise KeyPathError("pattern has wildcards", str(self))
        return KeyPath._trusted(self._segments)  # type: ignore[arg-type]  # literal: all text

    def matches(self, path: KeyPath) -> bool:
        """True when ``path`` matches the whole pattern."""
        return _match(self._segments, path.segments, full=True)

    def may_match_below(self, path: KeyPath) -> bool:
        """True when ``path`` or some path below it can match (prunes tree walks)."""
        return _match(self._segments, path.segments, full=False)

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = SEPARATOR.join(
                s.text if isinstance(s, Wildcard) else escape_segment(s) for s in self._segments
            )
            self._text = text
        return text

    def __repr__(self) -> str:
        return f"KeyPattern({str(self)!r})"

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyPattern):
            return NotImplemented
        return str(self) == str(other)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (KeyPattern.parse, (str(self),))


def _match(pattern: tuple[PatternSegment, ...], segs: tuple[str, ...], *, full: bool) -> bool:
    """Glob matching with one backtrack point (the classic two-pointer algorithm).

    With ``full=False`` the question is whether ``segs`` is a prefix of some matching path,
    i.e. whether the pattern is not yet contradicted when the path runs out.
    """
    p = s = 0
    star_p = -1  # position after the last '**' seen
    star_s = 0  # path position that '**' has consumed up to
    np, ns = len(pattern), len(segs)
    while s < ns:
        if p < np:
            tok = pattern[p]
            if tok is GLOBSTAR:
                star_p, star_s = p + 1, s
                p += 1
                continue
            if tok is STAR or tok == segs[s]:
                p += 1
                s += 1
                continue
        if star_p >= 0:
            star_s += 1
            p, s = star_p, star_s
            continue
        return False
    if not full:
        return True
    while p < np and pattern[p] is GLOBSTAR:
        p += 1
    return p == np
