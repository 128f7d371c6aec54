"""A copy of another actor's tree, and where to refresh it from.

A CSMS keeps one per station it manages, under the key ``stations/<id>`` of its store and of
its aggregate view: the station itself answers for it (``remote_tree`` ``""``), or a local
CSMS does, as ``stations/<id>`` of its own aggregate view.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker_bridge.envelope import valid_address
from keypath import KeyPath
from object_model import ObjectTree
from object_model.errors import InvalidValueError
from object_model.messages import TreeInfo

STATIONS = "stations"


def station_key(station: str) -> str:
    """Where a station's copy lives: ``stations/<id>``."""
    return f"{STATIONS}/{station}"


def check_station_id(station: object) -> str:
    """``station`` if it can name a station (an actor address: it becomes a path segment
    and a key), else ``INVALID_VALUE``."""
    if not isinstance(station, str) or not valid_address(station):
        raise InvalidValueError(
            f"{str(station)[:80]!r} is not a station id (an actor address: letters, digits, "
            "'.', '_', '-', '@', at most 128 characters)")
    return station


@dataclass
class Replica:
    """A copy of another actor's tree under ``key``: ``source`` answers discovery for it as
    ``remote_tree``. ``synced`` is False until the copy first shares the source's epoch;
    ``last_seen`` is when the source last showed life (monotonic seconds)."""

    key: str
    source: str
    remote_tree: KeyPath
    tree: ObjectTree
    synced: bool = False
    last_seen: float = 0.0

    @property
    def station(self) -> str:
        """The station this is a copy of (the last segment of ``key``)."""
        return self.key.rsplit("/", 1)[-1]

    def is_at(self, info: TreeInfo | None) -> bool:
        """Whether the copy already is what its source announced (joining, say): synced, at
        the same epoch and revision, with the same root digest."""
        tree = self.tree
        return (info is not None and self.synced and info.epoch == tree.epoch
                and info.revision == tree.revision and info.root_digest == tree.digest())


__all__ = ["STATIONS", "Replica", "check_station_id", "station_key"]
