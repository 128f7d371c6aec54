"""A small schema with nesting, collections and deletable members, for property tests of the
tree, plus a brute-force reference model of tree semantics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from hypothesis import strategies as st

from keypath import KeyPath
from object_model import Component, Delete, Ids, SchemaRegistry, Write
from object_model.types import int16, string, uint8


class Cell(Component):
    v: Annotated[int, int16()] | None = None
    tag: Annotated[str, string(8)] | None = None


class Item(Component):
    x: Annotated[int, int16()] | None = None
    y: Annotated[str, string(8)] | None = None
    cells: Annotated[dict[int, Cell], Ids(uint8(1, 9))] = {}


class Root(Component):
    a: Annotated[int, int16()] | None = None
    name: Annotated[str, string(8)] | None = None
    items: Annotated[dict[int, Item], Ids(uint8(1, 9), max_members=5)] = {}


def small_schema() -> SchemaRegistry:
    return SchemaRegistry(Root)


LEAF_PATHS = (
    ["a", "name"]
    + [f"items/{i}/{f}" for i in (1, 2, 3) for f in ("x", "y")]
    + [f"items/{i}/cells/{j}/{f}" for i in (1, 2) for j in (1, 2) for f in ("v", "tag")]
)
DELETE_PATHS = [
    "a", "name", "items", "items/1", "items/2", "items/3", "items/1/cells", "items/1/cells/1",
    "items/2/cells/2", "items/1/x", "items/2/cells/1/v", "",
]


def _value_for(path: str) -> st.SearchStrategy[Any]:
    if path.endswith(("name", "/y", "/tag")):
        return st.sampled_from(["", "x", "yy", "zzz"])
    return st.integers(-3, 3)


write_ops = st.sampled_from(LEAF_PATHS).flatmap(
    lambda p: _value_for(p).map(lambda v: Write(KeyPath.parse(p), v))
)
delete_ops = st.sampled_from(DELETE_PATHS).map(lambda p: Delete(KeyPath.parse(p)))
operations = st.one_of(write_ops, write_ops, write_ops, delete_ops)
transactions = st.lists(operations, min_size=1, max_size=4)


@dataclass
class ReferenceTree:
    """Brute-force semantics: a dict of leaves and a list of tombstones."""

    leaves: dict[KeyPath, tuple[Any, int]] = field(default_factory=dict)
    tombstones: dict[KeyPath, int] = field(default_factory=dict)
    revision: int = 0

    def apply(self, ops: list[Write | Delete]) -> bool:
        rev = self.revision + 1
        changed = False
        for op in ops:
            path = KeyPath.parse(op.path) if isinstance(op.path, str) else op.path
            if isinstance(op, Write):
                old = self.leaves.get(path)
                if old is None or type(old[0]) is not type(op.value) or old[0] != op.value:
                    # a leaf may not sit above or below another leaf: the schema prevents it
                    self.leaves[path] = (op.value, rev)
                    changed = True
            else:
                doomed = [p for p in self.leaves if path.is_prefix_of(p)]
                if doomed:
                    for p in doomed:
                        del self.leaves[p]
                    self.tombstones[path] = rev
                    changed = True
        if changed:
            self.revision = rev
        return changed

    def upserts_since(self, revision: int) -> dict[KeyPath, Any]:
        return {p: v for p, (v, r) in self.leaves.items() if r > revision}

    def deletes_since(self, revision: int) -> dict[KeyPath, int]:
        return {p: r for p, r in self.tombstones.items() if r > revision}
