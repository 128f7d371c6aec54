"""Staying joined: a station to its CSMS, a site's local CSMS to the cloud.

``Membership.run`` sends ``JoinNetwork`` to the upstream actor until it is admitted, backing
off with jitter while the upstream is unreachable or refuses (thousands of stations must not
come back in step: reconnect storms are a known failure of OCPP deployments). Once admitted it
waits; when the upstream says it does not know us any more (an ``ErrorReport`` with
``NOT_ADMITTED``: it lost its storage, or our admission) the actor calls ``lost`` and it joins
again, after a random pause, since every member of that upstream hears the same at once.

A member told about its link (``link_changed``: a local CSMS's uplink) treats a link that went
down as a membership to renew: it stops counting itself joined at once (so that nothing is
queued for an upstream it cannot reach), waits for the link, and joins again as soon as the
link is back, announcing what its trees hold, so the upstream resynchronises only what
changed meanwhile.

A member holding a certificate joins again when it is due for renewal (``renew_at``): the
join asks for the next one (``actors.runtime.services.enrollment``).

An upstream that takes no more joins just now (a reconnect storm: ``BUSY``, see
``actors.runtime.services.admission``) says when to come back (``retry_after_s``); the member
waits that long and up to as long again at random, so that the members it refused together
do not come back together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from actors.runtime.actor import Messenger
from broker_bridge.backoff import Backoff
from object_model import ErrorCode, ModelError
from object_model.errors import InvalidMessageError
from object_model.messages import JoinNetworkRequest, JoinNetworkResponse

log = logging.getLogger("csms.join")

JoinedCallback = Callable[[JoinNetworkRequest, JoinNetworkResponse], None]
"""Told what was announced and what the upstream answered, each time the actor is admitted."""


class Membership:
    """Keeps ``actor`` joined to ``upstream`` (see the module docstring). ``announce`` makes
    the request (it says what the actor's trees hold now); ``joined`` is whether the upstream
    has admitted it."""

    def __init__(self, actor: Messenger, upstream: str,
                 announce: Callable[[], JoinNetworkRequest], *, backoff: Backoff,
                 on_joined: JoinedCallback, timeout_s: float = 10.0,
                 rejoin_spread_s: float = 2.0,
                 renew_at: Callable[[], int | None] = lambda: None) -> None:
        self.actor, self.upstream, self.announce = actor, upstream, announce
        self.backoff, self.on_joined = backoff, on_joined
        self.timeout_s, self.rejoin_spread_s = timeout_s, rejoin_spread_s
        self.renew_at = renew_at
        self.joined = False
        self.joins = 0
        self.renewals = 0  # joins again to renew a certificate
        self.refusals = 0  # BUSY answers: the upstream admits joins at its own pace
        self._lost = asyncio.Event()
        self._link = asyncio.Event()
        self._link.set()  # unless told otherwise, the link is assumed up

    def lost(self) -> None:
        """The upstream does not know us (any more): join again."""
        self.joined = False
        self._lost.set()

    def link_changed(self, up: bool) -> None:
        """The link to the upstream went up or down (see the module docstring)."""
        if up:
            self._link.set()
        else:
            self._link.clear()
            self.lost()

    async def run(self) -> None:
        """Join, and join again whenever ``lost`` is called, until cancelled."""
        actor, failures = self.actor, 0
        while True:
            await self._link.wait()
            request = self.announce()
            try:
                answer = await actor.request(self.upstream, request, timeout=self.timeout_s)
                if not isinstance(answer, JoinNetworkResponse):
                    raise InvalidMessageError(
                        f"{self.upstream} answered JoinNetwork with {type(answer).__name__}")
            except Exception as exc:  # whatever it was, keep trying
                self.joined = False
                failures += 1
                delay = self.backoff.delay(failures, actor.rng)
                if isinstance(exc, ModelError) and exc.code is ErrorCode.BUSY:
                    failures -= 1  # a full upstream: its pace, not a failure of ours
                    delay = _retry_after(exc, delay) * actor.rng.uniform(1.0, 2.0)
                    self.refusals += 1
                    log.info("%s: %s is busy; joining again in %.1f s", actor.address,
                             self.upstream, delay)
                elif not isinstance(exc, ModelError):
                    log.exception("%s: joining %s failed", actor.address, self.upstream)
                elif exc.code in (ErrorCode.NOT_ADMITTED, ErrorCode.ACCESS_DENIED):
                    log.warning("%s: %s refused us: %s; again in %.1f s", actor.address,
                                self.upstream, exc, delay)
                else:
                    log.info("%s: joining %s failed (%s); again in %.1f s", actor.address,
                             self.upstream, exc.code.value, delay)
                await actor.clock.sleep(delay)
                continue
            failures = 0
            self.joined = True
            self.joins += 1
            self._lost.clear()
            log.info("%s: joined %s", actor.address, self.upstream)
            self.on_joined(request, answer)
            await self._until_lost_or_renewal()
            # every member of the upstream hears that it lost us at once: do not all come back
            # at once
            await actor.clock.sleep(actor.rng.uniform(0, self.rejoin_spread_s))


    async def _until_lost_or_renewal(self) -> None:
        """Wait until the upstream lost us, or until the certificate we hold is due for
        renewal (``renew_at``, wall-clock microseconds): joining again renews it."""
        clock = self.actor.clock
        while True:
            due = self.renew_at()
            wait = None if due is None else max(0.0, (due - clock.now_us()) / 1e6)
            if await clock.wait(self._lost, wait):
                return
            if due is not None and clock.now_us() >= due:
                self.renewals += 1
                log.info("%s: renewing its certificate with %s", self.actor.address,
                         self.upstream)
                return


def _retry_after(exc: ModelError, default: float) -> float:
    """The ``retry_after_s`` a ``BUSY`` refusal names (within reason), else ``default``."""
    value = exc.details.get("retry_after_s")
    if isinstance(value, (int, float)) and 0 <= value <= 600:
        return float(value)
    return default


__all__ = ["JoinedCallback", "Membership"]
