"""A whole local-plus-cloud hierarchy on the managed broker: the one harness that the demo,
the tests and the benchmarks build on.

``Hierarchy.start`` starts a private Prosody with one component domain per site and the
accounts of the cloud, the operator and each site's local CSMS and resource manager. Then:

* the cloud CSMS runs in this process (``start_cloud``, the demo) or in its own
  (``spawn_cloud``: ``csms cloud`` on the cloud's deployment file, so a test or a benchmark
  can SIGKILL it and start it again on the same state);
* ``start_site(k, ...)`` starts site ``k``: optionally its resource manager, its local CSMS
  and a host of simulated stations ``cs-site<k>-<i>`` on the site's component connection;
* an operator client (``operator()``) reads what the cloud holds, as ``csms get`` would;
  ``cloud_digests``/``local_consistent`` compare every copy with its station.

Everything it starts, it stops in ``close``: the actors together (``wiring.stop_all``), then the
broker.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import secrets
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from actors.app.client import OperatorClient
from actors.app.config import (
    BrokerConfig,
    CloudConfig,
    LocalConfig,
    ResourceManagerConfig,
    StationsConfig,
)
from actors.app.wiring import (
    Running,
    start_cloud,
    start_local,
    start_resource_manager,
    start_stations,
    stop_all,
    xmpp_settings,
)
from actors.csms.cloud import CloudCsms
from actors.csms.local import LocalCsms
from actors.csms.settings import EnergySettings
from actors.resource_manager.actor import ResourceManager
from actors.station.actor import ChargingStation
from actors.station.simulated import SimulatedStation, SimulatorSettings
from broker_bridge import Endpoint
from broker_bridge.clock import Clock
from broker_bridge.prosody import ManagedProsody
from broker_bridge.xmpp import XmppTransport
from keypath import KeyPath
from object_model import ModelError
from object_model.messages import (
    Batch,
    PropertyTreeDiscoveryRequest,
    PropertyValueRead,
    PropertyValueReadResponse,
)

Say = Callable[[str], None]
POLL_CHUNK = 256  # copies one operator request compares


def _quiet(message: str) -> None:
    """Say nothing."""


def simulated(station: ChargingStation) -> SimulatedStation:
    """The simulator behind ``station`` (every station a ``Hierarchy`` starts has one)."""
    assert isinstance(station.hardware, SimulatedStation), station.hardware
    return station.hardware


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has a child SIGKILLed when this process dies (Linux), so a
    crashed test or benchmark leaves no cloud behind."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@dataclass
class Site:
    """Site ``number``: its local CSMS, its station hosts and its resource manager."""

    number: int
    local: Running | None = None
    hosts: list[Running] = field(default_factory=list)
    rm: Running | None = None

    @property
    def name(self) -> str:
        return f"local-site{self.number}"

    @property
    def local_csms(self) -> LocalCsms:
        assert self.local is not None, f"{self.name} has not started"
        actor = self.local.actors[0]
        assert isinstance(actor, LocalCsms)
        return actor

    @property
    def resource_manager(self) -> ResourceManager | None:
        actor = None if self.rm is None else self.rm.actors[0]
        assert actor is None or isinstance(actor, ResourceManager)
        return actor

    @property
    def stations(self) -> list[ChargingStation]:
        return [actor for host in self.hosts for actor in host.actors
                if isinstance(actor, ChargingStation)]


class Hierarchy:
    """See the module docstring. ``say`` hears what it does (for long runs)."""

    def __init__(self, root: Path, broker: ManagedProsody, config: BrokerConfig,
                 passwords: dict[str, str], *, say: Say = _quiet) -> None:
        self.root, self.broker, self.config = root, broker, config
        self.passwords, self.say = passwords, say
        self.site_secrets = {name: f"{name}-up-{secrets.token_hex(4)}" for name in passwords
                             if name.startswith("local-site")}
        self.sites: list[Site] = []
        self.cloud: Running | None = None
        self.cloud_process: asyncio.subprocess.Process | None = None
        self._operator: OperatorClient | None = None
        self._operator_endpoint: Endpoint | None = None

    @classmethod
    async def start(cls, root: Path, *, sites: int = 1, say: Say = _quiet) -> Hierarchy:
        """The broker of ``sites`` sites, with every account, in ``root``."""
        domains = tuple(f"site{k}.stations.csms.local" for k in range(1, sites + 1))
        broker = ManagedProsody(root / "broker", component_domains=domains)
        say("starting the managed Prosody broker...")
        ep = await broker.start()
        names = ["cloud", "operator", *(f"{kind}-site{k}" for k in range(1, sites + 1)
                                        for kind in ("local", "rm"))]
        passwords = {name: secrets.token_urlsafe(12) for name in names}
        broker.create_accounts(passwords)
        config = BrokerConfig(host=ep.host, c2s_port=ep.c2s_port,
                              component_port=ep.component_port, domain=ep.domain,
                              muc_domain=ep.muc_domain,
                              routes=tuple((f"cs-site{k}-*", d) for k, d in enumerate(domains, 1)))
        return cls(root, broker, config, passwords, say=say)

    # -- the cloud ------------------------------------------------------------------------------

    def cloud_config(self) -> CloudConfig:
        return CloudConfig(address="cloud", password=self.passwords["cloud"],
                           state_dir=str(self.root / "cloud"), site_secrets=self.site_secrets)

    @property
    def cloud_config_path(self) -> Path:
        """The cloud's deployment file (written by ``spawn_cloud``)."""
        return self.root / "cloud.toml"

    def write_cloud_config(self) -> Path:
        cfg, cloud, q = self.config, self.cloud_config(), json.dumps
        routes = ", ".join(f"[{q(a)}, {q(b)}]" for a, b in cfg.routes)
        sites = "\n".join(f"{q(k)} = {q(v)}" for k, v in cloud.site_secrets.items())
        self.cloud_config_path.write_text(
            f"[broker]\nhost = {q(cfg.host)}\nc2s_port = {cfg.c2s_port}\n"
            f"component_port = {cfg.component_port}\ndomain = {q(cfg.domain)}\n"
            f"muc_domain = {q(cfg.muc_domain)}\nroutes = [{routes}]\n\n"
            f"[cloud]\naddress = {q(cloud.address)}\npassword = {q(cloud.password)}\n"
            f"state_dir = {q(cloud.state_dir)}\n\n[cloud.site_secrets]\n{sites}\n")
        return self.cloud_config_path

    async def start_cloud(self, clock: Clock | None = None) -> CloudCsms:
        """The cloud CSMS, in this process."""
        self.say("starting the cloud CSMS...")
        self.cloud = await start_cloud(self.config, self.cloud_config(), clock=clock)
        return self.cloud_actor

    @property
    def cloud_actor(self) -> CloudCsms:
        assert self.cloud is not None, "the cloud runs in its own process, or not at all"
        actor = self.cloud.actors[0]
        assert isinstance(actor, CloudCsms)
        return actor

    async def spawn_cloud(self, command: Sequence[str] = ("-m", "actors.app.cli", "cloud"),
                          *extra: str, ready: bytes | None = b"running") -> None:
        """The cloud CSMS in its own process: ``python <command> --config <cloud.toml>
        <extra>``; returns once it printed a line holding ``ready`` (``None``: at once).
        Its stderr goes to ``cloud.err``."""
        self.write_cloud_config()
        self.cloud_process = await asyncio.create_subprocess_exec(
            sys.executable, *command, "--config", str(self.cloud_config_path), *extra,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=(self.root / "cloud.err").open("ab"), preexec_fn=die_with_parent())
        if ready is None:
            return
        assert self.cloud_process.stdout is not None
        try:
            line = await asyncio.wait_for(self.cloud_process.stdout.readline(), 60)
        except TimeoutError:
            line = b"(nothing within 60 s)"
        if ready not in line:
            raise RuntimeError(f"the cloud did not start: {line!r}; {self.cloud_err()}")

    def cloud_err(self) -> str:
        """The end of what the cloud's process wrote to stderr."""
        path = self.root / "cloud.err"
        return path.read_text()[-2000:] if path.exists() else ""

    def check_cloud(self) -> None:
        """Raise if the cloud's process has died."""
        if self.cloud_process is not None and self.cloud_process.returncode is not None:
            raise RuntimeError(f"the cloud process exited with {self.cloud_process.returncode}:"
                               f" {self.cloud_err()}")

    async def kill_cloud(self, sig: int = signal.SIGKILL) -> None:
        """Kill the cloud's process with ``sig`` and wait for it."""
        assert self.cloud_process is not None
        self.say(f"killing the cloud CSMS ({signal.Signals(sig).name})")
        self.cloud_process.send_signal(sig)
        await self.cloud_process.wait()
        self.cloud_process = None

    # -- the sites ----------------------------------------------------------------------------

    def site(self, number: int) -> Site:
        return next(s for s in self.sites if s.number == number)

    async def start_resource_manager(self, number: int, fuse_limit_w: float,
                                     clock: Clock | None = None) -> ResourceManager:
        """Site ``number``'s resource manager, on its own account."""
        name = f"rm-site{number}"
        running = await start_resource_manager(self.config, ResourceManagerConfig(
            address=name, password=self.passwords[name], state_dir=str(self.root / name),
            site_csms=f"local-site{number}", fuse_limit_w=fuse_limit_w), clock=clock)
        self._site(number).rm = running
        actor = running.actors[0]
        assert isinstance(actor, ResourceManager)
        return actor

    async def start_site(self, number: int = 1, stations: int | Sequence[str] = 0, *,
                         simulator: SimulatorSettings | None = None,
                         seed: int | None = None, resource_manager: bool = False,
                         energy: EnergySettings | None = None,
                         cloud: bool = True, paused: bool = False,
                         clock: Clock | None = None) -> Site:
        """Site ``number``'s local CSMS (joined to the cloud unless ``cloud`` is false,
        knowing its resource manager when ``resource_manager``), then its ``stations`` (a
        count, or their addresses) on one host; ``paused`` stations do not tick. ``clock``
        is the site's time: the stations live in it and the local CSMS plans energy in it."""
        name = f"local-site{number}"
        local = await start_local(self.config, LocalConfig(
            address=name, password=self.passwords[name], state_dir=str(self.root / name),
            site=f"site{number}", provisioning_secret=self.provisioning(number),
            cloud="cloud" if cloud else None, upstream_secret=self.site_secrets[name],
            resource_manager=f"rm-site{number}" if resource_manager else None,
            energy=energy or EnergySettings()),
            site_clock=clock)
        site = self._site(number)
        site.local = local
        ids = ([f"cs-site{number}-{i}" for i in range(1, stations + 1)]
               if isinstance(stations, int) else list(stations))
        if ids:
            await self.add_stations(number, ids, simulator=simulator, seed=seed, paused=paused,
                                    clock=clock)
        return site

    def provisioning(self, number: int) -> str:
        """The secret site ``number``'s stations join with."""
        return f"site{number}-provisioning"

    async def add_stations(self, number: int, ids: Sequence[str], *,
                           simulator: SimulatorSettings | None = None,
                           seed: int | None = None, paused: bool = False,
                           clock: Clock | None = None) -> Running:
        """Stations ``ids`` of site ``number`` on a new host (one component connection per
        site domain: the broker refuses a second, so a site has one host; ``add_station``
        adds to it)."""
        site = self._site(number)
        ep = self.broker.endpoint
        progress_from = len(self.stations())

        def progress(message: str) -> None:
            done = int(message.split("/", 1)[0])
            self.say(f"{progress_from + done} stations started")

        host = await start_stations(self.config, StationsConfig(
            component=ep.component_domains[number - 1], component_secret=ep.component_secret,
            ids=tuple(ids), csms=site.name, provisioning_secret=self.provisioning(number),
            state_dir=str(self.root / f"stations-site{number}-{len(site.hosts)}"),
            simulator=simulator or SimulatorSettings(), seed=seed), progress=progress,
            clock=clock)
        site.hosts.append(host)
        if paused:
            for station in host.actors:
                assert isinstance(station, ChargingStation)
                simulated(station).paused = True
        return host

    async def add_station(self, number: int, name: str) -> ChargingStation:
        """One more station on site ``number``'s first host, built like its first station."""
        host = self._site(number).hosts[0]
        model = host.actors[0]
        assert isinstance(model, ChargingStation)
        station = ChargingStation(name, host.endpoint, store=model.store,
                                  settings=model.settings,
                                  hardware=SimulatedStation(simulated(model).settings,
                                                            clock=model.clock),
                                  clock=model.clock)
        await station.start()
        host.actors.append(station)
        return station

    def _site(self, number: int) -> Site:
        for site in self.sites:
            if site.number == number:
                return site
        site = Site(number)
        self.sites.append(site)
        return site

    def stations(self) -> list[ChargingStation]:
        return [station for site in self.sites for station in site.stations]

    def pause(self, paused: bool = True) -> None:
        """Stop (or restart) every station's simulated ticks: the trees hold still."""
        for station in self.stations():
            simulated(station).paused = paused

    # -- looking at the copies ----------------------------------------------------------------

    async def operator(self) -> OperatorClient:
        """The operator's client, logged in to the cloud's broker (made once)."""
        if self._operator is None:
            transport = XmppTransport.client(xmpp_settings(self.config), "operator",
                                             self.passwords["operator"])
            self._operator_endpoint = await Endpoint(transport, name="operator").start()
            self._operator = OperatorClient("operator", self._operator_endpoint)
            await self._operator.start()
        return self._operator

    @property
    def operator_endpoint(self) -> Endpoint | None:
        return self._operator_endpoint

    async def disconnect_operator(self) -> None:
        """Hang up the operator (so that ``csms`` commands may log in as it)."""
        if self._operator is not None:
            await self._operator.stop()
        if self._operator_endpoint is not None:
            await self._operator_endpoint.stop(flush_timeout=0.5)
        self._operator = self._operator_endpoint = None

    async def cloud_digests(self, ids: Sequence[str] | None = None
                            ) -> dict[str, bytes | None]:
        """The root digest of the cloud's copy of each station (``None``: no copy, or no
        answer), asked ``POLL_CHUNK`` copies per request."""
        operator = await self.operator()
        ids = [s.address for s in self.stations()] if ids is None else list(ids)

        async def ask(chunk: list[str]) -> dict[str, bytes | None]:
            batch = Batch(items=[PropertyTreeDiscoveryRequest(
                tree=KeyPath("stations", i), include_values=False) for i in chunk])
            try:
                answer = await operator.request("cloud", batch, timeout=10)
            except ModelError:
                return dict.fromkeys(chunk)
            assert isinstance(answer, Batch)
            return {i: getattr(item, "root_digest", None)
                    for i, item in zip(chunk, answer.items, strict=True)}

        out: dict[str, bytes | None] = {}
        for part in await asyncio.gather(*(ask(ids[i:i + POLL_CHUNK])
                                           for i in range(0, len(ids), POLL_CHUNK))):
            out.update(part)
        return out

    def expected_digests(self) -> dict[str, bytes]:
        """What each station's tree is now (its visible root digest)."""
        out = {}
        for station in self.stations():
            assert station.tree is not None
            out[station.address] = station.tree.digest(visible=True)
        return out

    async def cloud_consistent(self) -> bool:
        """Whether every cloud copy equals its station now."""
        expected = self.expected_digests()
        digests = await self.cloud_digests(sorted(expected))
        return all(digests[i] == d for i, d in expected.items())

    def local_consistent(self) -> bool:
        """Whether every local copy equals its station now."""
        return self.local_consistent_count() == len(self.stations())

    def local_consistent_count(self) -> int:
        """How many local copies equal their station."""
        ok = 0
        for site in self.sites:
            if site.local is None:
                continue
            replicas = site.local_csms.copies.replicas
            for station in site.stations:
                copy = replicas.get(f"stations/{station.address}")
                if copy is not None and station.tree is not None and (
                        copy.tree.digest() == station.tree.digest(visible=True)):
                    ok += 1
        return ok

    async def cloud_counter(self, name: str) -> int:
        """The cloud's ``counters/<name>``, as an operator reads it."""
        operator = await self.operator()
        answer = await operator.request("cloud", PropertyValueRead(
            paths=[KeyPath("counters", name)]), timeout=10)
        assert isinstance(answer, PropertyValueReadResponse)
        return int(answer.values[0][2])

    # -- the end ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop everything this hierarchy started, together, then the broker."""
        await self.disconnect_operator()
        # all at once: every actor halts before any flushes (a loaded hierarchy stopped one
        # part at a time kept the rest ticking and applying updates meanwhile)
        await stop_all([*(host for site in self.sites for host in site.hosts),
                        *(r for site in self.sites for r in (site.local, site.rm)
                          if r is not None),
                        *([self.cloud] if self.cloud is not None else [])])
        process = self.cloud_process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        await self.broker.stop()


__all__ = ["Hierarchy", "Site", "die_with_parent", "simulated"]
