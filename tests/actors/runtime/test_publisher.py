"""The publisher: what it tells subscribers is fixed at one revision, sent only once durable,
and carries the digest to check it against."""

from __future__ import annotations

import asyncio
from typing import Any

from actors.runtime.replication.publisher import Publisher
from actors.testing import until
from broker_bridge.clock import WALL_CLOCK
from object_model import PropertyValueUpdate
from object_model.station import new_station_tree


class Recorder:
    """Stands in for the actor: records what the publisher sends."""

    address = "cs-1"
    clock = WALL_CLOCK

    def __init__(self) -> None:
        self.sent: list[tuple[str, PropertyValueUpdate]] = []

    def send(self, destination: str, message: PropertyValueUpdate, **_: Any) -> None:
        self.sent.append((destination, message))


async def test_commits_made_while_waiting_for_durability_go_in_the_next_notification() -> None:
    tree = new_station_tree("cs-1")
    release = asyncio.Event()
    waited_for: list[int] = []

    async def durable(revision: int) -> None:
        waited_for.append(revision)
        await release.wait()

    actor = Recorder()
    publisher = Publisher(actor, tree, durable=durable, interval=0.001)  # type: ignore[arg-type]
    publisher.subscribe("csms", from_revision=tree.revision)
    start = tree.revision
    runner = asyncio.create_task(publisher.run())
    tree.write("identity/display_name", "one")
    first, digest_at_first = tree.revision, tree.digest(visible=True)
    await until(lambda: bool(waited_for), "the publisher waits for durability")
    tree.write("identity/display_name", "two")  # committed while revision `first` is flushed
    assert actor.sent == []  # nothing leaves before it is durable
    release.set()
    await until(lambda: len(actor.sent) >= 2, "both notifications sent")
    runner.cancel()
    publisher.close()
    (_, one), (_, two) = actor.sent[:2]
    assert (one.from_revision, one.to_revision) == (start, first)
    assert [v for _, _, v in one.upserts] == ["one"]
    assert (two.from_revision, two.to_revision) == (first, tree.revision)
    assert [v for _, _, v in two.upserts] == ["two"]
    assert one.root_digest == digest_at_first != two.root_digest == tree.digest(visible=True)
