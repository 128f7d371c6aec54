"""A whole local-plus-cloud hierarchy on managed brokers: the one harness that the demo, the
tests and the benchmarks build on.

``Hierarchy.start`` starts the deployment of DESIGN.md section 5 on private Prosody brokers:
the cloud's broker (accounts of the cloud, the operator and each site's local CSMS) and one
broker per site (its local CSMS, its resource manager, the operator, and the component domain
of its stations). Each local CSMS holds two links: its site's broker, and one connection to the
cloud's broker that carries everything for the cloud. Then:

* the cloud CSMS runs in this process (``start_cloud``, the demo) or in its own
  (``spawn_cloud``: ``csms cloud`` on the cloud's deployment file, so a test or a benchmark
  can SIGKILL it and start it again on the same state);
* ``start_site(k, ...)`` starts site ``k``: optionally its resource manager, its local CSMS
  and a host of simulated stations ``cs-site<k>-<i>`` on the site's component connection;
* an operator client (``operator()``) reads what the cloud holds, as ``csms get`` would;
  ``cloud_digests``/``local_consistent`` compare every copy with its station.

Everything it starts, it stops in ``close``: the actors together (``wiring.stop_all``), then the
brokers.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import secrets
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from actors.app.client import OperatorClient
from actors.app.commission import Commissioning
from actors.app.config import (
    BrokerConfig,
    ChargerEntry,
    CloudConfig,
    Config,
    GatewayConfig,
    LocalConfig,
    ResourceManagerConfig,
    SigningConfig,
    StationsConfig,
    UplinkConfig,
    write_config,
)
from actors.app.signing import Signing
from actors.app.wiring import (
    Running,
    start_cloud,
    start_gateway,
    start_local,
    start_resource_manager,
    start_stations,
    stop_all,
    xmpp_settings,
)
from actors.csms.cloud import CloudCsms
from actors.csms.local import LocalCsms
from actors.csms.settings import EnergySettings
from actors.logic.firmware_trust import public_hex
from actors.resource_manager.actor import ResourceManager
from actors.station.actor import ChargingStation
from actors.station.ocpp.gateway import OcppGateway
from actors.station.simulated import SimulatedStation, SimulatorSettings
from broker_bridge import Endpoint, Router
from broker_bridge.clock import Clock
from broker_bridge.pki import write_file
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


_ROLES = {"cloud": "cloud_csms", "operator": "operator", "local": "local_csms",
          "rm": "resource_manager"}
"""The role of each account the harness commissions, by the first part of its name."""


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


def broker_config(broker: ManagedProsody, routes: Sequence[tuple[str, str]] = ()
                  ) -> BrokerConfig:
    """How actors reach ``broker`` (a ``[broker]`` section)."""
    ep = broker.endpoint
    return BrokerConfig(host=ep.host, c2s_port=ep.c2s_port, component_port=ep.component_port,
                        domain=ep.domain, muc_domain=ep.muc_domain, routes=tuple(routes),
                        tls=ep.cafile is not None,
                        cafile=None if ep.cafile is None else str(ep.cafile))


def cloud_domain() -> str:
    return "csms.local"


def site_domain(number: int) -> str:
    return f"site{number}.csms.local"


def stations_domain(number: int) -> str:
    return f"stations.site{number}.csms.local"


def gateway_domain(number: int) -> str:
    """The component domain of site ``number``'s OCPP gateway (its chargers: ``ocpp-site<n>-*``)."""
    return f"gateway.site{number}.csms.local"


class Hierarchy:
    """See the module docstring. ``say`` hears what it does (for long runs)."""

    def __init__(self, root: Path, broker: ManagedProsody | None,
                 site_brokers: dict[int, ManagedProsody], passwords: dict[str, str], *,
                 cloud: BrokerConfig | None = None, say: Say = _quiet) -> None:
        self.root, self._broker, self.site_brokers = root, broker, site_brokers
        if cloud is None:
            assert broker is not None, "give the cloud's broker, or how to reach it"
            cloud = broker_config(broker)
        self.config = cloud
        self.passwords, self.say = passwords, say
        # what each site presents to the cloud: derived from its password, so that a site
        # started in another process (given the same passwords) presents the same
        self.site_secrets = {name: f"{name}-up-" + hashlib.sha256(
            f"upstream:{password}".encode()).hexdigest()[:16]
            for name, password in passwords.items() if name.startswith("local-site")}
        self.sites: list[Site] = []
        self.cloud: Running | None = None
        self.cloud_process: asyncio.subprocess.Process | None = None
        self._operator: OperatorClient | None = None
        self._operator_links: Router | None = None
        self.signing: Signing | None = None  # envelopes signed end to end: ``start(signing=)``
        self.commissioning: Commissioning | None = None  # the operator's root: ``certificates``

    @property
    def manufacturer(self) -> Ed25519PrivateKey:
        """The key that signs the firmware these stations trust (the harness plays their
        manufacturer): made once, kept in ``manufacturer_key_path`` (owner only)."""
        return Ed25519PrivateKey.from_private_bytes(self.manufacturer_key_path.read_bytes())

    @property
    def manufacturer_key_path(self) -> Path:
        """``root/manufacturer.key``, made at the first use (a site started in another
        process trusts the same manufacturer when given a copy in its own root)."""
        path = self.root / "manufacturer.key"
        if not path.is_file():
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(Ed25519PrivateKey.generate().private_bytes_raw())
        return path

    @classmethod
    async def start(cls, root: Path, *, sites: int = 1, say: Say = _quiet,
                    signing: bool = False, certificates: bool = False) -> Hierarchy:
        """The cloud's broker and one broker per site (``sites`` of them), with every
        account, in ``root``; with ``signing``, every actor started in this process signs
        its envelopes (keys in ``root/keys``) and refuses unsigned ones; with
        ``certificates`` too, the harness plays the operator (``root/trust``): it
        commissions every account with a certificate and a CA per site, and the stations
        enroll at their first join with one-time tokens."""
        numbers = range(1, sites + 1)
        cloud = ManagedProsody(root / "broker-cloud", domain=cloud_domain(), component_domains=())
        site_brokers = {k: ManagedProsody(root / f"broker-site{k}", domain=site_domain(k),
                                          component_domains=(stations_domain(k),
                                                             gateway_domain(k)))
                        for k in numbers}
        say(f"starting {1 + sites} managed Prosody brokers (the cloud's, one per site)...")
        brokers = [cloud, *site_brokers.values()]
        try:
            await asyncio.gather(*(broker.start() for broker in brokers))
        except BaseException:
            await asyncio.gather(*(broker.stop() for broker in brokers),
                                 return_exceptions=True)
            raise
        names = ["cloud", "operator", *(f"{kind}-site{k}" for k in numbers
                                        for kind in ("local", "rm"))]
        passwords = {name: secrets.token_urlsafe(12) for name in names}
        cloud.create_accounts({n: p for n, p in passwords.items()
                               if n in ("cloud", "operator") or n.startswith("local-")})
        for k, broker in site_brokers.items():
            broker.create_accounts({n: passwords[n]
                                    for n in ("operator", f"local-site{k}", f"rm-site{k}")})
        h = cls(root, cloud, site_brokers, passwords, say=say)
        if signing and certificates:
            h.commissioning = trust = Commissioning(root / "trust")
            for name in names:
                trust.certify(root / "keys", name, _ROLES[name.split("-", 1)[0]])
            h.signing = Signing(root / "keys", require=True, anchor=trust.anchor)
            h.signing.site_cas = {f"local-site{k}": trust.site_ca(
                f"local-site{k}", f"cs-site{k}-,ocpp-site{k}-") for k in numbers}
        elif signing:
            h.signing = Signing(root / "keys", require=True)
            # every account's keys known before anyone sends (a resource manager starts before
            # its local CSMS, and seals its first write to it); the operator's command line
            # runs in processes of its own
            h.signing.know(names)
        return h

    @classmethod
    async def start_site_broker(cls, root: Path, number: int, *, cloud: BrokerConfig,
                                passwords: dict[str, str], host: str = "127.0.0.1",
                                say: Say = _quiet) -> Hierarchy:
        """Site ``number`` alone: its broker (listening on ``host``) with the accounts of its
        local CSMS, resource manager and operator (``passwords``), its local CSMS's uplink
        to the cloud's broker ``cloud`` (run elsewhere: another process, another network
        namespace). The site's actors start with ``start_resource_manager``/``start_site``."""
        broker = ManagedProsody(root / f"broker-site{number}", domain=site_domain(number),
                                component_domains=(stations_domain(number),), host=host)
        say(f"starting site {number}'s broker on {host}...")
        await broker.start()
        broker.create_accounts({n: passwords[n]
                                for n in ("operator", f"local-site{number}", f"rm-site{number}")})
        return cls(root, None, {number: broker}, passwords, cloud=cloud, say=say)

    @property
    def broker(self) -> ManagedProsody:
        """The cloud's broker (when this hierarchy runs it)."""
        assert self._broker is not None, "the cloud's broker runs elsewhere"
        return self._broker

    def site_broker(self, number: int) -> ManagedProsody:
        """Site ``number``'s broker."""
        return self.site_brokers[number]

    def site_config(self, number: int) -> BrokerConfig:
        """How the actors of site ``number`` reach its broker (a ``[broker]`` section)."""
        return broker_config(self.site_brokers[number],
                             [(f"cs-site{number}-*", stations_domain(number)),
                              (f"ocpp-site{number}-*", gateway_domain(number))])

    def uplink_config(self) -> UplinkConfig:
        """How a local CSMS reaches the cloud's broker (an ``[uplink]`` section)."""
        return UplinkConfig(**self.config.model_dump(exclude_defaults=True))

    @property
    def brokers(self) -> list[ManagedProsody]:
        """Every broker this hierarchy runs, the cloud's first."""
        cloud = [] if self._broker is None else [self._broker]
        return [*cloud, *self.site_brokers.values()]

    # -- the cloud ------------------------------------------------------------------------------

    def cloud_config(self) -> CloudConfig:
        return CloudConfig(address="cloud", password=self.passwords["cloud"],
                           state_dir=str(self.root / "cloud"), site_secrets=self.site_secrets)

    @property
    def cloud_config_path(self) -> Path:
        """The cloud's deployment file (written by ``spawn_cloud``)."""
        return self.root / "cloud.toml"

    def write_cloud_config(self) -> Path:
        signing = None
        if self.signing is not None:  # the cloud's process signs as this one does
            signing = SigningConfig(
                key_dir=str(self.signing.store.directory), require=self.signing.require,
                keys=self.signing.public_keys(), encryption_keys=self.signing.encryption_keys(),
                anchor=None if self.commissioning is None else str(self.commissioning.anchor))
        return write_config(Config(broker=self.config, cloud=self.cloud_config(),
                                   signing=signing), self.cloud_config_path)

    async def start_cloud(self, clock: Clock | None = None) -> CloudCsms:
        """The cloud CSMS, in this process."""
        self.say("starting the cloud CSMS...")
        self.cloud = await start_cloud(self.config, self.cloud_config(), clock=clock,
                                       signing=self.signing)
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
        running = await start_resource_manager(self.site_config(number), ResourceManagerConfig(
            address=name, password=self.passwords[name], state_dir=str(self.root / name),
            site_csms=f"local-site{number}", fuse_limit_w=fuse_limit_w), clock=clock,
            signing=self.signing)
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
        local = await start_local(self.site_config(number), LocalConfig(
            address=name, password=self.passwords[name], state_dir=str(self.root / name),
            site=f"site{number}", provisioning_secret=self.provisioning(number),
            cloud="cloud" if cloud else None, upstream_secret=self.site_secrets[name],
            resource_manager=f"rm-site{number}" if resource_manager else None,
            energy=energy or EnergySettings()),
            site_clock=clock, uplink=self.uplink_config() if cloud else None,
            signing=self.signing)
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
        ep = self.site_brokers[number].endpoint
        progress_from = len(self.stations())
        await self.give_tokens(number, ids)

        def progress(message: str) -> None:
            done = int(message.split("/", 1)[0])
            self.say(f"{progress_from + done} stations started")

        host = await start_stations(self.site_config(number), StationsConfig(
            component=ep.component_domains[0], component_secret=ep.component_secret,
            ids=tuple(ids), csms=site.name, provisioning_secret=self.provisioning(number),
            firmware_keys=(public_hex(self.manufacturer),),
            state_dir=str(self.root / f"stations-site{number}-{len(site.hosts)}"),
            simulator=simulator or SimulatorSettings(), seed=seed), progress=progress,
            clock=clock, paused=paused, signing=self.signing)
        site.hosts.append(host)
        return host

    async def start_gateway(self, number: int, chargers: Mapping[str, ChargerEntry], *,
                            port: int = 0, host: str = "127.0.0.1",
                            clock: Clock | None = None, state_dir: Path | None = None
                            ) -> tuple[Running, OcppGateway]:
        """Site ``number``'s OCPP gateway for ``chargers`` (identities ``ocpp-site<n>-*``),
        listening on ``host`` and ``port`` (0: any free one), its stations joined to the
        site's CSMS like the simulated ones, living in ``clock`` (the site's time), keeping
        its state in ``state_dir`` (default ``root/gateway-site<n>``)."""
        site = self._site(number)
        ep = self.site_brokers[number].endpoint
        await self.give_tokens(number, list(chargers))
        running, gateway = await start_gateway(self.site_config(number), GatewayConfig(
            component=gateway_domain(number), component_secret=ep.component_secret,
            chargers=dict(chargers), csms=site.name, host=host, port=port,
            provisioning_secret=self.provisioning(number),
            firmware_keys=(public_hex(self.manufacturer),),
            state_dir=str(state_dir or self.root / f"gateway-site{number}")),
            signing=self.signing,
            clock=clock)
        site.hosts.append(running)
        return running, gateway

    async def give_tokens(self, number: int, ids: Sequence[str]) -> None:
        """With certificates: a one-time enrollment token for each of ``ids`` from site
        ``number``'s local CSMS, in the station's key directory (as an operator would
        commission a station)."""
        if self.signing is None or self.commissioning is None:
            return
        enroller = self._site(number).local_csms.enroller
        assert enroller is not None, "the site's CSMS issues no certificates"
        for station in ids:
            token = await enroller.book.add_token(station)
            write_file(self.signing.store.directory / f"{station}.token", token.encode(),
                       0o600)

    async def add_station(self, number: int, name: str) -> ChargingStation:
        """One more station on site ``number``'s first host, built like its first station."""
        host = self._site(number).hosts[0]
        model = host.actors[0]
        assert isinstance(model, ChargingStation)
        await self.give_tokens(number, [name])
        station = ChargingStation(name, host.endpoint, store=model.store,
                                  settings=model.settings,
                                  hardware=SimulatedStation(simulated(model).settings,
                                                            clock=model.clock),
                                  clock=model.clock,
                                  credentials=None if self.signing is None
                                  else self.signing.credentials(name))
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
            if isinstance(station.hardware, SimulatedStation):  # a charger is paused by no one
                station.hardware.paused = paused

    # -- looking at the copies ----------------------------------------------------------------

    async def operator(self) -> OperatorClient:
        """The operator's client (made once), logged in to every broker: the cloud's, and
        each site's for that site's resource manager and stations."""
        if self._operator is None:
            async def link(cfg: BrokerConfig, name: str) -> Endpoint:
                transport = XmppTransport.client(xmpp_settings(cfg), "operator",
                                                 self.passwords["operator"], name=name)
                guard = None if self.signing is None else self.signing.guard(["operator"])
                return await Endpoint(transport, name=name, guard=guard).start()

            cloud = await link(self.config, "operator")
            routes = []
            for k in self.site_brokers:
                site = await link(self.site_config(k), f"operator-site{k}")
                routes += [(f"rm-site{k}", site), (f"cs-site{k}-*", site),
                           (f"ocpp-site{k}-*", site)]
            self._operator_links = Router(cloud, routes)
            self._operator = OperatorClient("operator", self._operator_links)
            await self._operator.start()
        return self._operator

    @property
    def operator_endpoint(self) -> Endpoint | None:
        """The operator's link to the cloud's broker."""
        return None if self._operator_links is None else self._operator_links.default

    async def disconnect_operator(self) -> None:
        """Hang up the operator (so that ``csms`` commands may log in as it)."""
        if self._operator is not None:
            await self._operator.stop()
        if self._operator_links is not None:
            for endpoint in self._operator_links.endpoints:
                await endpoint.stop(flush_timeout=0.5)
        self._operator = self._operator_links = None

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
        await asyncio.gather(*(broker.stop() for broker in self.brokers))


__all__ = ["Hierarchy", "Site", "die_with_parent", "simulated"]
