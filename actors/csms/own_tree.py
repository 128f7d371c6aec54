"""A CSMS's own tree: what it knows itself (registry, sites, policy, energy, counters).

Loaded from the CSMS's tree store on start (or created, naming the CSMS and its role), and
persisted like every actor's tree. Counters (joins, updates, gaps, resyncs, bytes) are kept in
memory, where counting is cheap, and copied into ``counters/...`` when someone reads the tree
and every ``every_s`` seconds, so they persist and are read like any other key-path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from actors.logic.tree_access import TreeAccess
from actors.runtime.actor import Messenger
from actors.runtime.storage.trees import PersistentTree, TreeStore
from object_model import ObjectTree, Role, Write
from object_model.csms_model import CsmsState, csms_access_policy, csms_schema
from object_model.messages import Batch, PropertyValueWrite

OWN_KEY = "self"


class OwnTree:
    """The own tree of ``actor`` (a CSMS playing ``role``), stored in ``store``."""

    def __init__(self, actor: Messenger, role: Role, store: TreeStore) -> None:
        self.actor, self.role, self.store = actor, role, store
        self.policy = csms_access_policy()
        self.tree = ObjectTree(csms_schema())
        self.access = TreeAccess(self.tree, self.policy)
        self.counters: Counter[str] = Counter()
        self._persisted: PersistentTree | None = None
        self._vetters: list[Callable[[PropertyValueWrite | Batch], None]] = []

    def vetted_by(self, vet: Callable[[PropertyValueWrite | Batch], None]) -> None:
        """Have ``vet`` judge every write to this tree from another actor before it commits
        (it raises a ``ModelError`` to refuse it: what the schema cannot say of a value)."""
        self._vetters.append(vet)

    def vet(self, message: PropertyValueWrite | Batch) -> None:
        for vet in self._vetters:
            vet(message)

    async def open(self) -> None:
        """Load the tree (or create it) and record its changes from now on."""
        loaded = await self.store.load(OWN_KEY, csms_schema())
        if loaded is not None:
            self.tree = loaded
        else:
            state = CsmsState(name=self.actor.address, role=self.role.value)
            self.tree.write("", state.model_dump(by_alias=True, exclude_none=True))
        self.access = TreeAccess(self.tree, self.policy)
        self.counters.update({name: value for name, value in self.tree.read("counters").items()
                              if isinstance(value, int)})
        self._persisted = await self.store.attach(OWN_KEY, self.tree)

    async def close(self) -> None:
        self.publish_counters()
        if self._persisted is not None:
            await self._persisted.detach(snapshot=False)

    def note_applied(self, sender: str, message_id: bytes, stamp_us: int) -> None:
        """A message of ``sender`` changed this tree (``PersistentTree.note_applied``)."""
        assert self._persisted is not None, "open first"
        self._persisted.note_applied(sender, message_id, stamp_us)

    async def durable(self, revision: int | None = None) -> None:
        """Return once ``revision`` (default: the current one) is on disk."""
        assert self._persisted is not None, "open first"
        await self._persisted.durable(revision)

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def publish_counters(self) -> None:
        """Copy the counters that changed into ``counters/...``."""
        current = self.tree.read("counters")
        writes = [Write(f"counters/{name}", value % 2**64) for name, value in self.counters.items()
                  if name in current and current[name] != value % 2**64]
        if writes:
            self.tree.apply(writes)

    async def run(self, every_s: float) -> None:
        """Copy the counters in every ``every_s`` seconds, until cancelled."""
        while True:
            await self.actor.clock.sleep(every_s)
            self.publish_counters()


__all__ = ["OWN_KEY", "OwnTree"]
