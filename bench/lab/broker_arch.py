"""Architecture (a) of the lab: this system, as DESIGN.md section 5 deploys it.

    cloud (the lab's root namespace, at the lab's cloud address)     site k (its namespace)
    Prosody ── cloud CSMS, the lab's sink           <── one uplink ──  Prosody ── local CSMS
                                                                                 └─ stations

The cloud's broker (a Prosody process the lab manages), the cloud CSMS (in the lab's process,
or in one of its own with ``cloud_process``: S3 and S6 kill it) and a sink actor (what the
cloud receives of a load: ``bench.lab.load``) are the cloud's side; each site is a process of
its own in its namespace (``python -m bench.lab.broker_arch site SPEC``, on ``bench.sites``):
its broker, its local CSMS with its one uplink to the cloud's broker, and its simulated
stations. A site's
load leaves through its local CSMS's real uplink endpoint, as everything it relays does:
telemetry as bulk state updates, safety messages at critical priority.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from actors.app.hierarchy import Hierarchy, broker_config, cloud_domain, simulated
from actors.app.wiring import xmpp_settings
from actors.csms.cloud import CloudCsms
from actors.runtime.actor import Actor, Context, RoleDirectory, handles
from bench.lab import operations, state
from bench.lab.load import Plan, filler, offer
from bench.lab.state import Dynamics
from bench.netlab import Lab
from bench.sites import Handler, RunningSite, SiteProcess, poll, run_site
from broker_bridge import Endpoint, Priority
from broker_bridge.prosody import ManagedProsody
from broker_bridge.xmpp import XmppTransport
from keypath import KeyPath
from object_model import Role
from object_model.messages import PropertyValueUpdate

SINK = "lab-sink"
BACKLOG = 64  # telemetry envelopes a site's uplink may hold unsent before it sheds
EVSES = 2  # a simulated station's (SimulatorSettings' default), as the OCPP chargers have


@dataclass
class Received:
    """What the sink took: safety messages ``(wall time, site, station, seq)``, telemetry
    envelopes by site."""

    safety: list[tuple[float, int, int, int]] = field(default_factory=list)
    telemetry: dict[int, int] = field(default_factory=dict)


class Sink(Actor):
    """The cloud's end of a load: takes what sites send and notes when it came."""

    role = Role.OPERATOR

    def __init__(self, links: Endpoint) -> None:
        super().__init__(SINK, links, roles=RoleDirectory({"*": Role.STATION}))
        self.received = Received()

    @handles(PropertyValueUpdate)
    async def on_update(self, message: PropertyValueUpdate, ctx: Context) -> None:
        now = time.time()
        segments = message.tree.segments
        if segments[0] == "safety":
            self.received.safety.append((now, int(segments[1]), int(segments[2]),
                                         message.to_revision))
        elif segments[0] == "telemetry":
            site = int(segments[1])
            self.received.telemetry[site] = self.received.telemetry.get(site, 0) + 1


class BrokerSystem:
    """The cloud's side in this process, the sites in theirs (see the module docstring)."""

    name = "broker"

    def __init__(self, lab: Lab, root: Path, stations: int, say: Callable[[str], None],
                 dynamics: Dynamics | None = None, cloud_process: bool = False) -> None:
        self.lab, self.root, self.stations, self.say = lab, root, stations, say
        self.dynamics = dynamics
        self.cloud_process = cloud_process  # the cloud CSMS in a process of its own
        self._crashed_broker = False
        self.sites: dict[int, SiteProcess] = {}
        self.hierarchy: Hierarchy | None = None
        self.cloud: CloudCsms | None = None
        self.sink: Sink | None = None
        self._sink_endpoint: Endpoint | None = None

    @classmethod
    async def start(cls, lab: Lab, root: Path, *, stations: int, seed: int,
                    say: Callable[[str], None], dynamics: Dynamics | None = None,
                    cloud_process: bool = False) -> BrokerSystem:
        """With ``dynamics``, the stations' EVs come and go once ``animate`` is called; with
        ``cloud_process``, the cloud CSMS runs in a process of its own (``crash``,
        ``restart``), else in this one."""
        system = cls(lab, root, stations, say, dynamics, cloud_process)
        try:
            await system._start(seed)
        except BaseException:
            await system.close()
            raise
        return system

    async def _start(self, seed: int) -> None:
        lab, root = self.lab, self.root
        names = ["cloud", "operator", SINK,
                 *(f"{kind}-site{k}" for k in lab.sites for kind in ("local", "rm"))]
        passwords = {n: secrets.token_urlsafe(12) for n in names}
        broker = ManagedProsody(root / "broker-cloud", domain=cloud_domain(),
                                component_domains=(), host=lab.cloud_address)
        self.say("broker: starting the cloud's broker and the cloud CSMS...")
        await broker.start()
        broker.create_accounts({n: p for n, p in passwords.items() if not n.startswith("rm-")})
        self.hierarchy = h = Hierarchy(root, broker, {}, passwords)
        self._sink_endpoint = await Endpoint(XmppTransport.client(
            xmpp_settings(h.config), SINK, passwords[SINK]), name=SINK).start()
        self.sink = Sink(self._sink_endpoint)
        await self.sink.start()
        if self.cloud_process:
            await h.spawn_cloud()
        else:
            self.cloud = await h.start_cloud()
        cloud_cfg = broker_config(broker).model_dump(mode="json", exclude_defaults=True)
        key = h.manufacturer_key_path  # the sites' stations trust the firmware it signs
        for k in lab.sites:
            site_root = root / f"site{k}"
            site_root.mkdir(parents=True, exist_ok=True)
            shutil.copy2(key, site_root / key.name)
        # the stations stand still until animated; then EVs come and go only as the lab's
        # dynamics say (the same schedules as the OCPP chargers'), in wall-clock time
        lives: dict[str, Any] = {"paused": True, "arrivals_per_evse_hour": 0.0}
        for k, lab_site in lab.sites.items():
            self.say(f"broker: starting site {k} in its namespace ({self.stations} stations)...")
            self.sites[k] = await SiteProcess.start_site({
                "site": k, "stations": self.stations, "cloud": cloud_cfg,
                "passwords": passwords, "host": lab_site.address, "root": str(root / f"site{k}"),
                "seed": seed + k, **lives,
            }, root / f"site{k}.err", module="bench.lab.broker_arch",
                namespace=lab_site.namespace)

    async def ready(self, timeout: float = 300) -> float:
        """Seconds until every station is joined at its site and cached at the cloud."""
        began = time.monotonic()
        await poll("every station joined at its site", self._joined, timeout)
        await poll("every station's copy at the cloud", self.consistent, timeout)
        return time.monotonic() - began

    async def _joined(self) -> bool:
        for site in self.sites.values():
            status = await site.ask("status")
            if status["admitted"] < len(status["digests"]) or not status["joined"]:
                return False
        return True

    async def consistent(self) -> bool:
        """Every station's copy at the cloud equals the station (root digests)."""
        truth: dict[str, str] = {}
        for site in self.sites.values():
            truth.update((await site.ask("status"))["digests"])
        if self.cloud is None:  # in its own process: asked as an operator asks
            assert self.hierarchy is not None
            digests = await self.hierarchy.cloud_digests(sorted(truth))
            return all(digests.get(a) is not None and digests[a].hex() == d  # type: ignore[union-attr]
                       for a, d in truth.items())
        copies = self.cloud.copies.replicas
        return all(f"stations/{a}" in copies and copies[f"stations/{a}"].tree.digest().hex() == d
                   for a, d in truth.items())

    relearned = consistent  # after a crash: every copy at the cloud is exact again

    async def crash(self, *, broker: bool = False) -> None:
        """SIGKILL the cloud CSMS's process (and with ``broker``, the cloud's broker too:
        every uplink drops)."""
        assert self.hierarchy is not None
        await self.hierarchy.disconnect_operator()
        await self.hierarchy.kill_cloud()
        if broker:
            self.hierarchy.broker.kill()
            self._crashed_broker = True

    async def restart(self, *, fresh: bool = True,
                      serving: asyncio.Future[float] | None = None) -> float:
        """What crashed, again: the broker on its ports and accounts, then the cloud CSMS on
        the state it left (``fresh`` is the other architecture's: ours keeps its store).
        Returns (and sets ``serving`` to) the monotonic moment the sites could be served
        again: the broker's start when it had crashed, else the cloud CSMS's."""
        assert self.hierarchy is not None
        if self._crashed_broker:
            await self.hierarchy.broker.start()
            self._crashed_broker = False
            moment = time.monotonic()
            if serving is not None:
                serving.set_result(moment)
            await self.hierarchy.spawn_cloud()
            return moment
        await self.hierarchy.spawn_cloud()
        moment = time.monotonic()
        if serving is not None:
            serving.set_result(moment)
        return moment

    async def recovered(self) -> tuple[int, int, int]:
        """Stations the cloud reaches again (their site's uplink joined), of all, and the
        connections to the cloud that took (one per site joined)."""
        reached = total = joined = 0
        for site in self.sites.values():
            status = await site.ask("status")
            total += len(status["digests"])
            if status["joined"]:
                reached += len(status["digests"])
                joined += 1
        return reached, total, joined

    async def update_firmware(self, image: bytes, version: str, task: str) -> list[str]:
        """Every station of site 1 told to install ``image``, held at the cloud: each
        station fetches it through its local CSMS, which fetches it across the uplink once.
        The stations told."""
        assert self.hierarchy is not None and self.cloud is not None
        targets = sorted((await self.sites[1].ask("status"))["digests"])
        await operations.update_firmware(self.hierarchy, self.cloud, image, version, task,
                                         targets)
        return targets

    async def addresses(self) -> list[str]:
        """Every station's address."""
        out: list[str] = []
        for site in self.sites.values():
            out += sorted((await site.ask("status"))["digests"])
        return out

    async def control(self, address: str, watts: float) -> None:
        """A limit to one station from the cloud (``operations.set_limit``)."""
        assert self.hierarchy is not None
        await operations.set_limit(self.hierarchy, address, watts)

    def task_states(self, task: str) -> dict[str, str]:
        """Each station's state of ``task`` as the cloud's copies show it."""
        assert self.cloud is not None
        return state.task_states(self.cloud.copies.replicas, task)

    async def relearn_counters(self) -> dict[str, int]:
        """The cloud's resynchronisations so far (its counters outlive its process), and the
        requests they took."""
        assert self.hierarchy is not None
        return {"resyncs": await self.hierarchy.cloud_counter("resyncs"),
                "requests": await self.hierarchy.cloud_counter("resync_requests")}

    async def offer(self, plans: dict[int, Plan], start_at: float) -> dict[int, dict[str, Any]]:
        """Every site plays its plan from ``start_at``; what each offered."""
        answers = await asyncio.gather(*(
            self.sites[k].ask("offer", timeout=plan.seconds + 120, plan=plan.to_json(),
                              start_at=start_at) for k, plan in plans.items()))
        return dict(zip(plans, answers, strict=True))

    async def truth(self) -> dict[str, str]:
        """Every EVSE's session as its station holds it (``bench.lab.state``)."""
        out: dict[str, str] = {}
        for site in self.sites.values():
            out.update((await site.ask("sessions"))["sessions"])
        return out

    def view(self) -> dict[str, str]:
        """Every EVSE's session as the cloud CSMS's copies show it."""
        assert self.cloud is not None
        return state.view(self.cloud.copies.replicas)

    async def freeze(self) -> None:
        """The stations stand still from now (no EV comes or goes, no tick): the truth no
        longer moves."""
        for site in self.sites.values():
            await site.ask("freeze")

    async def animate(self) -> None:
        """The stations live from now: they tick, and EVs come and go as ``dynamics`` says."""
        if self.dynamics is None:
            raise ValueError("these stations were started without dynamics")
        for site in self.sites.values():
            await site.ask("animate", dynamics=asdict(self.dynamics))

    async def safety_seen(self) -> list[tuple[float, int, int, int]]:
        """``(wall time, site, station, seq)`` of each safety message the sink took."""
        assert self.sink is not None
        return list(self.sink.received.safety)

    async def telemetry_seen(self) -> dict[int, int]:
        """Telemetry envelopes the sink took, by site."""
        assert self.sink is not None
        return dict(self.sink.received.telemetry)

    async def close(self) -> None:
        """Everything stopped, each part even when one before it failed (the cloud's broker
        must not outlive a repetition: the next one would find its port taken)."""
        for site in self.sites.values():
            with contextlib.suppress(Exception):
                await site.stop()
        try:
            if self.sink is not None:
                with contextlib.suppress(Exception):
                    await self.sink.stop()
            if self._sink_endpoint is not None:
                with contextlib.suppress(Exception):
                    await self._sink_endpoint.stop(flush_timeout=0.5)
        finally:
            if self.hierarchy is not None:
                await self.hierarchy.close()


# -- a site, in its namespace (the child process) -----------------------------------------------


def site_commands(running: RunningSite) -> dict[str, Handler]:
    """What a lab site does besides ``bench.sites``'s own commands: ``offer`` a load."""
    k, local, uplink = running.number, running.local, running.uplink
    size = 0

    def telemetry() -> bool:
        if uplink.session.queue_depth().get(Priority.BULK, 0) >= BACKLOG:
            return False
        uplink.send(source=local.address, destination=SINK, message=PropertyValueUpdate(
            tree=KeyPath("telemetry", str(k)), epoch=1, from_revision=0, to_revision=1,
            upserts=[("telemetry", 1, filler(size))]), priority=Priority.BULK)
        return True

    def safety(station: int, seq: int) -> None:
        uplink.send(source=local.address, destination=SINK, message=PropertyValueUpdate(
            tree=KeyPath("safety", str(k), str(station)), epoch=1, from_revision=seq - 1,
            to_revision=seq), priority=Priority.CRITICAL)

    async def run_offer(cmd: dict[str, Any]) -> dict[str, Any]:
        nonlocal size
        plan = Plan.from_json(cmd["plan"])
        size = plan.message_bytes
        return (await offer(plan, cmd["start_at"], telemetry, safety)).to_json()

    async def sessions(cmd: dict[str, Any]) -> dict[str, Any]:
        return {"sessions": state.stations_sessions(running.site.stations)}

    living: list[asyncio.Task[None]] = []

    async def animate(cmd: dict[str, Any]) -> None:
        dynamics = Dynamics(**cmd["dynamics"])
        running.hierarchy.pause(False)
        if living:
            return
        seed = int(running.spec.get("seed", k))
        for i, station in enumerate(sorted(running.site.stations, key=_number)):
            simulator = simulated(station).simulator
            assert simulator is not None
            for evse in range(1, EVSES + 1):  # the OCPP fleet draws the same schedules
                rng = random.Random(seed * 1000 + i * 16 + evse)
                living.append(asyncio.create_task(state.live(
                    dynamics, rng, functools.partial(simulator.plug_in, evse),
                    functools.partial(simulator.depart, evse))))

    async def freeze(cmd: dict[str, Any]) -> None:
        for task in living:
            task.cancel()
        await asyncio.gather(*living, return_exceptions=True)
        living.clear()
        running.hierarchy.pause(True)

    async def close() -> None:
        await freeze({})

    running.closing.append(close)
    return {"offer": run_offer, "sessions": sessions, "animate": animate, "freeze": freeze}


def _number(station: Any) -> int:
    """A station's number in its site (``cs-site1-12``: 12), the order both fleets share."""
    return int(station.address.rsplit("-", 1)[1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["site"] or len(argv) != 2:
        print("usage: python -m bench.lab.broker_arch site SPEC (run by the lab)",
              file=sys.stderr)
        return 2
    return asyncio.run(run_site(json.loads(argv[1]), site_commands))


if __name__ == "__main__":
    sys.exit(main())
