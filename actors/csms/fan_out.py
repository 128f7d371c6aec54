"""A CSMS's side of ``FanOutRequest``: one operator's command to many stations, crossing each
link of the hierarchy once.

The CSMS selects the stations the request names (all when it names none; at a cloud, only a
site's when it names the site), then handles the item for each station it reaches directly as
if it had been addressed to ``stations/<id>`` (the same rights, the same forwarding as a single
write or task), and sends the stations behind each site's local CSMS on as **one**
``FanOutRequest`` to that local CSMS, which does the same on its site's broker. The answers come
back gathered, one ``FanOutResult`` per station, in station order.

Why not a room broadcast: a groupchat fans out at the site broker, but whoever is in a room may
speak in it under any name, so a broadcast carries no rights (``Actor._handle``), and a write
or a task needs them. The local CSMS's direct envelopes to its stations are vouched for by the
site broker; the uplink, the scarce link, still carries one copy each way.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

from actors.csms.replicas import ReplicaSet
from actors.runtime.actor import Context, Messenger
from actors.runtime.replication.replica import STATIONS, Replica, station_key
from keypath import KeyPath
from object_model import MessageBase, ModelError, Role
from object_model.errors import ErrorCode, InvalidMessageError
from object_model.messages import (
    FanOutItem,
    FanOutRequest,
    FanOutResponse,
    FanOutResult,
    PropertyValueWriteResponse,
)
from object_model.monitoring import TaskStatus

log = logging.getLogger("csms.fan_out")

CONCURRENCY = 64
"""Stations a CSMS asks at once for one fan-out: enough to keep a site's broker busy, few
enough that a fan-out to thousands does not flood the CSMS's own inbox with answers."""

RELAY_CAP_S = 60.0
"""The longest a CSMS waits for a site's gathered answer (the sender's deadline is shorter)."""

Handle = Callable[[MessageBase, Context], Awaitable[MessageBase | None]]
Check = Callable[[MessageBase, Role, KeyPath], None]


class FanOut:
    """See the module docstring. ``handle`` is how the CSMS handles one item addressed to
    ``stations/<id>`` (its aggregate view's write, its task relay); ``check`` raises if a role
    may not send that item to the station at a tree, as ``handle`` would before forwarding."""

    def __init__(self, actor: Messenger, copies: ReplicaSet, *, handle: Handle,
                 check: Check) -> None:
        self.actor, self.copies = actor, copies
        self._handle, self._check = handle, check

    async def handle(self, request: FanOutRequest, ctx: Context) -> FanOutResponse:
        ctx.require_role()
        results: list[FanOutResult] = []
        direct: list[Replica] = []
        through: dict[str, list[Replica]] = defaultdict(list)
        for station, replica in self._select(request):
            if replica is None:
                results.append(FanOutResult(station=station, error=ErrorCode.UNKNOWN_PATH,
                                            text=f"{self.actor.address} manages no such station"))
            elif replica.source == replica.station:
                direct.append(replica)
            else:
                through[replica.source].append(replica)
        gate = asyncio.Semaphore(CONCURRENCY)
        jobs = [self._one(replica, request.item, ctx, gate) for replica in direct]
        jobs += [self._through(site, replicas, request, ctx) for site, replicas in through.items()]
        for found in await asyncio.gather(*jobs):
            results += found
        results.sort(key=lambda result: result.station)
        failed = sum(result.error is not None for result in results)
        log.info("%s: %s from %s to %d stations (%d sites on the way): %d failed",
                 self.actor.address, request.item.kind, ctx.sender, len(results), len(through),
                 failed)
        return FanOutResponse(results=results)

    def _select(self, request: FanOutRequest) -> list[tuple[str, Replica | None]]:
        """The stations ``request`` names, each with its copy here (``None``: unknown)."""
        site = request.site

        def wanted(replica: Replica) -> bool:
            return site is None or site == self.actor.address or replica.source == site

        if not request.stations:
            return [(r.station, r) for r in self.copies.replicas.values() if wanted(r)]
        chosen: list[tuple[str, Replica | None]] = []
        for station in dict.fromkeys(request.stations):  # each once, in the order asked
            replica = self.copies.replicas.get(station_key(station))
            if replica is not None and not wanted(replica):
                continue  # named, but not of the site asked for
            chosen.append((station, replica))
        return chosen

    async def _one(self, replica: Replica, item: FanOutItem, ctx: Context,
                   gate: asyncio.Semaphore) -> list[FanOutResult]:
        station = replica.station
        async with gate:
            try:
                answer = await self._handle(
                    item.model_copy(update={"tree": KeyPath(STATIONS, station)}), ctx)
            except ModelError as exc:
                return [FanOutResult(station=station, error=exc.code, text=exc.text[:500])]
            except Exception as exc:  # one station's bug must not cost the others' answers
                log.exception("%s: fan-out of %s to %s failed", self.actor.address, item.kind,
                              station)
                return [FanOutResult(station=station, error=ErrorCode.INTERNAL_ERROR,
                                     text=f"{type(exc).__name__}: {exc}"[:500])]
        return [FanOutResult(station=station, text=_summary(answer))]

    async def _through(self, site: str, replicas: list[Replica], request: FanOutRequest,
                       ctx: Context) -> list[FanOutResult]:
        """The stations ``site`` answers for, reached with one request to it: all of its
        stations if the request named none, else those named. The requester's rights are
        checked here, station by station: the site sees only ours."""
        role = ctx.require_role()
        refused: list[FanOutResult] = []
        allowed: list[Replica] = []
        for replica in replicas:
            try:
                self._check(request.item, role, KeyPath(STATIONS, replica.station))
                allowed.append(replica)
            except ModelError as exc:
                refused.append(FanOutResult(station=replica.station, error=exc.code,
                                            text=exc.text[:500]))
        if not allowed:
            return refused
        every = not request.stations and not refused
        forwarded = FanOutRequest(stations=[] if every else [r.station for r in allowed],
                                  item=request.item)
        try:
            answer = await self.actor.request(
                site, forwarded, timeout=ctx.time_left(self.actor.clock.now_us(), RELAY_CAP_S))
            if not isinstance(answer, FanOutResponse):
                raise InvalidMessageError(
                    f"{site} answered a fan-out with {type(answer).__name__}")
        except ModelError as exc:
            text = f"through {site}: {exc.text}"[:500]
            return refused + [FanOutResult(station=r.station, error=exc.code, text=text)
                              for r in allowed]
        asked = None if every else {r.station for r in allowed}
        return refused + [result for result in answer.results
                          if (asked is None or result.station in asked)
                          and self._answers_for(site, result.station)]

    def _answers_for(self, site: str, station: str) -> bool:
        """Whether ``site`` may report on ``station``: a station bound here to another site
        (or connected directly) is not its to report on; one not known here yet may be."""
        replica = self.copies.replicas.get(station_key(station))
        return replica is None or replica.source == site


def _summary(answer: MessageBase | None) -> str:
    if isinstance(answer, PropertyValueWriteResponse):
        return f"{'changed' if answer.changed else 'unchanged'}, revision {answer.revision}"
    if isinstance(answer, TaskStatus):
        return f"task {answer.task}: {answer.state.value}"
    return "done"


__all__ = ["CONCURRENCY", "FanOut"]
