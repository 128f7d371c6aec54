"""Role-based access to key-paths.

Two things decide whether a remote actor may read or write a node:

1. the node's ``PropertyAccessKind``, declared in the schema: what the node allows at all
   (a meter register is ``read``, a Wi-Fi password ``write``, a provisioning secret ``none``);
2. the tree's ``AccessPolicy``: which key-path patterns each ``Role`` may read and write.

Both must agree. The owner of a tree (the station writing its own meter values) is not a remote
actor and is not checked; the policy governs what arrives in messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from keypath import KeyPath, KeyPattern, PatternIndex
from object_model.errors import AccessDeniedError, NotReadableError, NotWritableError


class PropertyAccessKind(StrEnum):
    """What a node allows remote actors to do, whatever their role."""

    NONE = "none"
    READ = "read"
    WRITE = "write"
    READ_WRITE = "read_write"

    @property
    def readable(self) -> bool:
        # by identity: members are singletons, and this runs for every leaf a reader touches
        return self is PropertyAccessKind.READ or self is PropertyAccessKind.READ_WRITE

    @property
    def writable(self) -> bool:
        return self is PropertyAccessKind.WRITE or self is PropertyAccessKind.READ_WRITE


class Role(StrEnum):
    """The roles of the IEC 63110 network."""

    STATION = "station"
    RESOURCE_MANAGER = "resource_manager"
    LOCAL_CSMS = "local_csms"
    CLOUD_CSMS = "cloud_csms"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Grant:
    """The key-path patterns one role may read and write."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()


@dataclass
class AccessPolicy:
    """Maps each role to the patterns it may read and write; a role not listed gets nothing."""

    grants: Mapping[Role, Grant]
    _read: dict[Role, PatternIndex[bool]] = field(init=False, repr=False)
    _write: dict[Role, PatternIndex[bool]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._read, self._write = {}, {}
        for role, grant in self.grants.items():
            self._read[role] = _index(grant.read)
            self._write[role] = _index(grant.write)

    def may_read(self, role: Role, path: KeyPath) -> bool:
        index = self._read.get(role)
        return index is not None and index.any_match(path)

    def may_write(self, role: Role, path: KeyPath) -> bool:
        index = self._write.get(role)
        return index is not None and index.any_match(path)

    def may_read_all_below(self, role: Role, path: KeyPath) -> bool:
        """True when the role may read ``path`` and everything below it (a grant ending in
        ``**`` covers it), so that a walk of that subtree need not ask ``may_read`` leaf by
        leaf. False says nothing: ask ``may_read``."""
        index = self._read.get(role)
        return index is not None and index.matches_all_below(path)

    def may_read_below(self, role: Role, path: KeyPath) -> bool:
        """True when the role may read ``path`` or something below it (prunes discovery)."""
        grant = self.grants.get(role)
        if grant is None:
            return False
        return any(KeyPattern.parse(p).may_match_below(path) for p in grant.read)

    def check_read(self, role: Role, path: KeyPath, access: PropertyAccessKind) -> None:
        """Raise unless ``role`` may read the node at ``path`` whose access kind is ``access``."""
        if not access.readable:
            raise NotReadableError(f"{path} is {access.value}: nobody may read it", path=path)
        if not self.may_read(role, path):
            raise AccessDeniedError(
                f"role {role.value} may not read {path}", path=path, details={"role": role.value}
            )

    def check_write(self, role: Role, path: KeyPath, access: PropertyAccessKind) -> None:
        """Raise unless ``role`` may write the node at ``path`` whose access kind is ``access``."""
        if not access.writable:
            raise NotWritableError(
                f"{path} is {access.value}: it cannot be written remotely", path=path
            )
        if not self.may_write(role, path):
            raise AccessDeniedError(
                f"role {role.value} may not write {path}", path=path, details={"role": role.value}
            )


def _index(patterns: Iterable[str]) -> PatternIndex[bool]:
    index: PatternIndex[bool] = PatternIndex()
    for p in patterns:
        index.add(KeyPattern.parse(p), True)
    return index
