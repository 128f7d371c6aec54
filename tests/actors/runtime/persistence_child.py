"""Deterministic station transactions, and a child process that records them until killed.

``python -m tests.actors.runtime.persistence_child DB`` opens a ``TreeStore`` at ``DB`` and records
transaction after transaction of ``station()``, printing each revision once ``record`` returned
(that is, once it is durable). The kill -9 test reads a few lines, SIGKILLs it, and checks that
nothing printed was lost by replaying the same transactions.
"""

from __future__ import annotations

import asyncio
import sys

from actors.runtime.storage.trees import TreeStore, changes_of
from object_model.station import new_station_tree
from object_model.tree import Delete, ObjectTree, Operation, Write

KEY = "station/cs-kill"
EPOCH = 0x5EED_CAFE
METER_CODES = ("32.7.0", "52.7.0", "72.7.0", "31.7.0", "51.7.0", "71.7.0")


def station() -> ObjectTree:
    """The same station tree every time (revision 1); few tombstones kept, so the horizon moves."""
    tree = new_station_tree("cs-kill", seed=7, epoch=EPOCH)
    tree.max_tombstones = 4
    return tree


def transaction(tree: ObjectTree, i: int) -> list[Operation]:
    """Transaction ``i`` (from 1): always a change, with deletes and re-creations of leaves and
    of a whole connector."""
    ops: list[Operation] = [Write("evse/1/session/energy_wh", float(i))]
    meter = f"evse/2/meter/obis:1-0:{METER_CODES[i % len(METER_CODES)]}"
    ops.append(Delete(meter) if meter in tree else Write(meter, float(i % 1000)))
    if i % 7 == 3:
        ops.append(Delete("evse/2/connector/1"))
    elif i % 7 == 5:
        ops.append(Write("evse/2/connector/1", {"type": "sType2", "status": "Available",
                                                "max_current_a": float(i % 32 + 1)}))
    return ops


async def main(path: str) -> None:
    tree = station()
    async with TreeStore(path, compact_every=32) as store:
        await store.save_snapshot(KEY, tree)
        print(tree.revision, flush=True)
        i = 0
        while True:
            i += 1
            event = tree.apply(transaction(tree, i))
            await store.record(KEY, changes_of(event), tree)
            print(event.revision, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
