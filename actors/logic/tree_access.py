"""Generic access to a tree for remote actors: read, write, discover, under an access policy.

Every actor that owns or caches trees answers the same three requests the same way, whatever
the tree holds; this is where the access rules (the node's ``PropertyAccessKind`` and the
role's grants) are applied to each key-path a request touches. ``mount`` is where the tree sits
in the serving actor's aggregate view (a local CSMS serves station cs-17's copy at
``stations/cs-17``), because grants are written against that view.
"""

from __future__ import annotations

from typing import Any

from keypath import KeyPath
from object_model import AccessPolicy, ErrorCode, ModelError, ObjectTree, Role
from object_model.errors import AccessDeniedError, LimitExceededError
from object_model.messages import (
    Batch,
    PropertyTreeDiscoveryRequest,
    PropertyTreeDiscoveryResponse,
    PropertyValueReadResponse,
    PropertyValueWrite,
    ReadFailure,
)
from object_model.node_digests import pack_children
from object_model.tree import Delete, HorizonPassedError, Operation, TransactionCommitted, Write

MAX_DISCOVERED = 100_000
_ROOT = KeyPath.root()


class TreeAccess:
    """Serves one tree to remote actors under ``policy``."""

    def __init__(self, tree: ObjectTree, policy: AccessPolicy,
                 mount: KeyPath = _ROOT) -> None:
        self.tree = tree
        self.policy = policy
        self.mount = mount

    # -- checks --------------------------------------------------------------------------------

    def _access(self, path: KeyPath) -> Any:
        return self.tree.leaf_schema(path).access

    def may_read(self, role: Role, path: KeyPath) -> bool:
        try:
            return self._access(path).readable and self.policy.may_read(role, self.mount / path)
        except ModelError:
            return False

    def check_read(self, role: Role, path: KeyPath) -> None:
        self.policy.check_read(role, self.mount / path, self._access(path))

    def check_write(self, role: Role, path: KeyPath) -> None:
        self.policy.check_write(role, self.mount / path, self._access(path))

    # -- read ---------------------------------------------------------------------------------

    def read(self, role: Role, paths: list[KeyPath]) -> PropertyValueReadResponse:
        """Values at ``paths`` (an interior path gives every readable leaf below it), with a
        failure entry for each path that cannot be read."""
        values: list[tuple[KeyPath, int, Any]] = []
        failures: list[ReadFailure] = []
        for path in paths:
            try:
                if self.tree.is_leaf(path):
                    self.check_read(role, path)
                    value, revision = self.tree.entry(path)
                    values.append((path, revision, value))
                    continue
                self.tree.read(path)  # raises not_present / unknown_path as appropriate
                found = [leaf for leaf in self.tree.leaves(path) if self.may_read(role, leaf.path)]
                if not found:
                    self.policy.check_read(role, self.mount / path, self._access(path))
                values.extend(found)
            except ModelError as exc:
                failures.append(ReadFailure(path=path, code=exc.code, text=exc.text))
        return PropertyValueReadResponse(tree=self.mount, epoch=self.tree.epoch,
                                         revision=self.tree.revision, values=values,
                                         failures=failures)

    # -- write ---------------------------------------------------------------------------------

    def operations(self, role: Role, message: PropertyValueWrite | Batch) -> list[Operation]:
        """The checked operations of a write (every leaf it touches must be writable by
        ``role``); text values are parsed by the type the schema declares."""
        ops = message.operations(self.tree.schema.parse_value)
        for op in ops:
            path = op.path if isinstance(op.path, KeyPath) else KeyPath.parse(op.path)
            if isinstance(op, Delete):
                self.check_write(role, path)
                continue
            for leaf, node, _ in self.tree.schema.expand(path, op.value):
                self.policy.check_write(role, self.mount / leaf, node.access)
        return ops

    def write(self, role: Role, message: PropertyValueWrite | Batch) -> TransactionCommitted:
        expected = message.expected_revision if isinstance(message, PropertyValueWrite) else None
        return self.tree.apply(self.operations(role, message), expected_revision=expected)

    # -- discovery ----------------------------------------------------------------------------

    def discover(self, role: Role, req: PropertyTreeDiscoveryRequest
                 ) -> PropertyTreeDiscoveryResponse:
        """Answer the three discovery modes (see ``PropertyTreeDiscoveryRequest``)."""
        tree = self.tree
        complete = True
        leaves: list[tuple[KeyPath, int, Any]] = []
        deletes: list[tuple[KeyPath, int]] = []
        if req.since_revision is not None:
            if not self.policy.may_read(role, self.mount / KeyPath.root()) and not (
                    self.policy.may_read_below(role, self.mount)):
                raise AccessDeniedError(
                    f"role {role.value} may not follow {self.mount or 'this tree'}")
            try:
                if req.epoch != tree.epoch:
                    raise HorizonPassedError("another epoch")
                changes = tree.changes_since(req.since_revision, visible=True)
            except ModelError as exc:
                if exc.code not in (ErrorCode.HORIZON_PASSED, ErrorCode.REVISION_AHEAD):
                    raise
                complete = False
            else:
                leaves = [(p, r, v) for p, r, v in changes.upserts
                          if self.policy.may_read(role, self.mount / p)]
                deletes = list(changes.deletes)
        digests = []
        digests_of = [] if req.digests_on_gap and complete else req.digests_of
        shapes: list[bytes | None] = (list(req.shapes) or [None] * len(digests_of)
                                      if digests_of else [])
        for path, shape in zip(digests_of, shapes, strict=True):
            if not self.policy.may_read_below(role, self.mount / path):
                raise AccessDeniedError(
                    f"role {role.value} may not compare {self.mount / path}", path=path)
            digests.append(pack_children(tree.children(path, visible=True), req.digest_bytes,
                                         shape))
        types: list[tuple[KeyPath, dict[str, Any]]] = []
        for pattern in req.patterns:
            # a grant covering the whole subtree the pattern walks leaves only each leaf's
            # own access kind to check (a resynchronisation fetches whole trees)
            granted = self.policy.may_read_all_below(role, self.mount / pattern.literal_prefix)
            for path, revision, value in tree.find(pattern, visible=True):
                if not granted and not self.policy.may_read(role, self.mount / path):
                    continue
                if req.include_values:
                    leaves.append((path, revision, value))
                if req.include_types:
                    types.append((path, tree.leaf_schema(path).describe()))
                if len(leaves) + len(types) > MAX_DISCOVERED:
                    raise LimitExceededError(
                        f"more than {MAX_DISCOVERED} results: narrow the pattern",
                        details={"pattern": str(pattern)})
        digest_step = bool(req.digests_of) and not req.patterns and req.since_revision is None
        if digest_step:
            return PropertyTreeDiscoveryResponse(tree=req.tree, digests=digests)
        return PropertyTreeDiscoveryResponse(
            tree=req.tree, epoch=tree.epoch, revision=tree.revision,
            root_digest=tree.digest(visible=True), complete=complete, leaves=leaves,
            deletes=deletes, types=types, digests=digests)


__all__ = ["TreeAccess", "Write"]
