"""Key-paths: the address of every value in an actor's object tree.

This package is the bottom layer: it imports nothing of the project and nothing outside the
standard library, and does no I/O.

    >>> from keypath import KeyPath, KeyPattern, PatternIndex
    >>> p = KeyPath.parse("evse/1/connector/2/status")
    >>> p.parent / "type"
    KeyPath('evse/1/connector/2/type')
    >>> KeyPattern.parse("evse/*/connector/**").matches(p)
    True
"""

from keypath.errors import KeyPathError
from keypath.index import PatternIndex
from keypath.path import (
    MAX_DEPTH,
    MAX_SEGMENT_CHARS,
    KeyPath,
    escape_segment,
    local_name,
    namespace_of,
)
from keypath.pattern import GLOBSTAR, STAR, KeyPattern, Wildcard

__all__ = [
    "GLOBSTAR",
    "MAX_DEPTH",
    "MAX_SEGMENT_CHARS",
    "STAR",
    "KeyPath",
    "KeyPathError",
    "KeyPattern",
    "PatternIndex",
    "Wildcard",
    "escape_segment",
    "local_name",
    "namespace_of",
]
