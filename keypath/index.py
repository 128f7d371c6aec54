"""PatternIndex: which registered patterns match this path, without scanning them all.

Theory of operation. The patterns are stored in a trie whose edges are literal segments, ``*``
or ``**``. Matching a path runs the trie as a nondeterministic automaton: the set of active
nodes starts as the root (plus its ``**`` child, since ``**`` may match zero segments) and each
path segment moves every active node along its literal edge for that segment and its ``*``
edge; a node reached through ``**`` also stays active, because ``**`` may swallow any number of
further segments. Nodes active at the end that terminate a pattern contribute their payloads.

Work per lookup is proportional to the path length times the number of active nodes, which
depends on how many patterns share wildcard prefixes, not on how many patterns there are: ten
thousand patterns rooted at distinct literal prefixes cost the same as ten.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

from keypath.path import KeyPath
from keypath.pattern import GLOBSTAR, KeyPattern

P = TypeVar("P", bound=Hashable)


class _Node(Generic[P]):
    __slots__ = ("glob", "literal", "loops", "parent", "pattern", "payloads", "star")

    def __init__(self, parent: _Node[P] | None, loops: bool) -> None:
        self.literal: dict[str, _Node[P]] = {}
        self.star: _Node[P] | None = None
        self.glob: _Node[P] | None = None
        self.loops = loops  # reached through '**': may consume further segments and stay
        self.parent = parent
        self.payloads: list[P] = []
        self.pattern: KeyPattern | None = None

    def is_empty(self) -> bool:
        return not (self.literal or self.star or self.glob or self.payloads)


class PatternIndex(Generic[P]):
    """A multimap from ``KeyPattern`` to payloads, queried by path.

    ``index.add(pattern, payload)`` registers a payload; the same pattern may hold several
    payloads, and the same payload may sit under several patterns. ``index.match(path)``
    returns the payload of every registration whose pattern matches ``path``, each once.
    """

    def __init__(self) -> None:
        self._root: _Node[P] = _Node(None, loops=False)
        self._count = 0

    def __len__(self) -> int:
        """Number of (pattern, payload) registrations."""
        return self._count

    def add(self, pattern: KeyPattern | str, payload: P) -> None:
        """Register ``payload`` under ``pattern`` (text is parsed)."""
        pattern = _as_pattern(pattern)
        node = self._root
        for seg in pattern.segments:
            if isinstance(seg, str):
                child = node.literal.get(seg)
                if child is None:
                    child = node.literal[seg] = _Node(node, loops=False)
                node = child
            elif seg is GLOBSTAR:
                if node.glob is None:
                    node.glob = _Node(node, loops=True)
                node = node.glob
            else:  # STAR
                if node.star is None:
                    node.star = _Node(node, loops=False)
                node = node.star
        node.payloads.append(payload)
        node.pattern = pattern
        self._count += 1

    def remove(self, pattern: KeyPattern | str, payload: P) -> None:
        """Remove one registration; ``KeyError`` if ``payload`` is not under ``pattern``."""
        pattern = _as_pattern(pattern)
        node: _Node[P] | None = self._root
        for seg in pattern.segments:
            assert node is not None
            if isinstance(seg, str):
                node = node.literal.get(seg)
            elif seg is GLOBSTAR:
                node = node.glob
            else:  # STAR
                node = node.star
            if node is None:
                raise KeyError(f"pattern {pattern} is not in the index")
        assert node is not None
        try:
            node.payloads.remove(payload)
        except ValueError:
            raise KeyError(f"payload {payload!r} is not registered under {pattern}") from None
        self._count -= 1
        self._prune(node)

    def _prune(self, node: _Node[P]) -> None:
        while node.parent is not None and node.is_empty():
            parent = node.parent
            if parent.glob is node:
                parent.glob = None
            elif parent.star is node:
                parent.star = None
            else:
                for key, child in parent.literal.items():
                    if child is node:
                        del parent.literal[key]
                        break
            node = parent

    def _reached(self, path: KeyPath) -> list[_Node[P]]:
        """The nodes the patterns' automaton is in after reading ``path`` (none: no pattern
        can match it or anything below it)."""
        root = self._root
        active: list[_Node[P]] = [root] if root.glob is None else [root, root.glob]
        for seg in path.segments:
            nxt: dict[int, _Node[P]] = {}
            for node in active:
                child = node.literal.get(seg)
                if child is not None:
                    nxt[id(child)] = child
                    if child.glob is not None:
                        nxt[id(child.glob)] = child.glob
                child = node.star
                if child is not None:
                    nxt[id(child)] = child
                    if child.glob is not None:
                        nxt[id(child.glob)] = child.glob
                if node.loops:
                    nxt[id(node)] = node
            if not nxt:
                return []
            active = list(nxt.values())
        return active

    def _final_nodes(self, path: KeyPath) -> Iterator[_Node[P]]:
        return (node for node in self._reached(path) if node.payloads)

    def match(self, path: KeyPath) -> list[P]:
        """Payloads of every registration whose pattern matches ``path``."""
        out: list[P] = []
        for node in self._final_nodes(path):
            out.extend(node.payloads)
        return out

    def matching_patterns(self, path: KeyPath) -> list[KeyPattern]:
        """The distinct registered patterns that match ``path``."""
        return [n.pattern for n in self._final_nodes(path) if n.pattern is not None]

    def any_match(self, path: KeyPath) -> bool:
        """True when at least one registered pattern matches ``path`` (cheaper than ``match``)."""
        return next(self._final_nodes(path), None) is not None

    def matches_all_below(self, path: KeyPath) -> bool:
        """True when some registered pattern ending in ``**`` matches ``path`` and therefore
        every path below it (``any_match`` is then true for all of them: one check answers
        for a whole subtree). False says nothing: ask ``any_match`` path by path."""
        return any(node.loops and node.payloads for node in self._reached(path))


def _as_pattern(pattern: KeyPattern | str) -> KeyPattern:
    return pattern if isinstance(pattern, KeyPattern) else KeyPattern.parse(pattern)
