"""A real hierarchy for tests: the managed Prosody, a cloud CSMS in its own process (so it can be
SIGKILLed), a local CSMS and stations in the test process (so the test can pause and inspect
them), and an operator client to ask the cloud what its copies hold."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from actors.app.client import OperatorClient
from actors.app.config import BrokerConfig, LocalConfig, ResourceManagerConfig, StationsConfig
from actors.app.wiring import (
    Running,
    start_local,
    start_resource_manager,
    start_stations,
    xmpp_settings,
)
from actors.csms.local import LocalCsms
from actors.resource_manager.actor import ResourceManager
from actors.station.actor import ChargingStation
from actors.station.simulated import SimulatedStation
from broker_bridge import Endpoint
from broker_bridge.prosody import ManagedProsody
from broker_bridge.xmpp import XmppTransport
from keypath import KeyPath
from object_model import ModelError
from object_model.messages import (
    Batch,
    PropertyTreeDiscoveryRequest,
    PropertyValueRead,
)

PASSWORDS = {"cloud": "cloud-pw", "local-site1": "local-pw", "operator": "operator-pw",
             "rm-site1": "rm-pw"}
SITE_SECRET = "site1-up"
PROVISIONING = "site1-provisioning"


@dataclass
class Hierarchy:
    root: Path
    broker: ManagedProsody
    config: BrokerConfig
    cloud_process: asyncio.subprocess.Process | None = None
    local: Running | None = None
    rm: Running | None = None
    hosts: list[Running] = field(default_factory=list)
    operator: OperatorClient | None = None
    operator_endpoint: Endpoint | None = None

    @property
    def cloud_config(self) -> Path:
        return self.root / "cloud.toml"

    @property
    def local_actor(self) -> LocalCsms:
        assert self.local is not None
        return self.local.actors[0]  # type: ignore[return-value]

    def stations(self) -> list[ChargingStation]:
        return [a for host in self.hosts for a in host.actors]  # type: ignore[misc]

    # -- the cloud, as a process --------------------------------------------------------------

    def write_cloud_config(self) -> None:
        routes = ", ".join(f'["{a}", "{b}"]' for a, b in self.config.routes)
        self.cloud_config.write_text(
            f'[broker]\nhost = "{self.config.host}"\nc2s_port = {self.config.c2s_port}\n'
            f'component_port = {self.config.component_port}\ndomain = "{self.config.domain}"\n'
            f'muc_domain = "{self.config.muc_domain}"\nroutes = [{routes}]\n\n'
            f'[cloud]\naddress = "cloud"\npassword = "{PASSWORDS["cloud"]}"\n'
            f'state_dir = "{self.root / "cloud"}"\n\n[cloud.site_secrets]\n'
            f'"local-site1" = "{SITE_SECRET}"\n')

    async def start_cloud(self) -> None:
        self.cloud_process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "actors.app.cli", "cloud", "--config", str(self.cloud_config),
            stdout=asyncio.subprocess.PIPE, stderr=(self.root / "cloud.err").open("ab"))
        assert self.cloud_process.stdout is not None
        line = await asyncio.wait_for(self.cloud_process.stdout.readline(), 30)
        if b"running" not in line:
            raise RuntimeError(f"the cloud did not start: {line!r}; "
                               f"{(self.root / 'cloud.err').read_text()[-1500:]}")

    async def kill_cloud(self, sig: int = signal.SIGKILL) -> None:
        assert self.cloud_process is not None
        self.cloud_process.send_signal(sig)
        await self.cloud_process.wait()
        self.cloud_process = None

    # -- the site -----------------------------------------------------------------------------

    async def start_site(self, count: int, *, resource_manager: str | None = None,
                         speed: float = 60.0, arrivals_per_evse_per_h: float = 3.0) -> None:
        self.local = await start_local(self.config, LocalConfig(
            address="local-site1", password=PASSWORDS["local-site1"],
            state_dir=str(self.root / "local"), site="site1", provisioning_secret=PROVISIONING,
            cloud="cloud", upstream_secret=SITE_SECRET, resource_manager=resource_manager))
        await self.add_stations([f"cs-site1-{i}" for i in range(1, count + 1)], speed=speed,
                                arrivals_per_evse_per_h=arrivals_per_evse_per_h)

    async def start_rm(self, fuse_limit_w: float) -> ResourceManager:
        """The site's resource manager, on its own account, trusting the test's operator."""
        self.rm = await start_resource_manager(self.config, ResourceManagerConfig(
            address="rm-site1", password=PASSWORDS["rm-site1"], state_dir=str(self.root / "rm"),
            site_csms="local-site1", fuse_limit_w=fuse_limit_w))
        return self.rm.actors[0]  # type: ignore[return-value]

    async def add_stations(self, ids: list[str], *, speed: float = 60.0,
                           arrivals_per_evse_per_h: float = 3.0) -> Running:
        host = await start_stations(self.config, StationsConfig(
            component=self.broker.endpoint.component_domains[0],
            component_secret=self.broker.endpoint.component_secret, ids=tuple(ids),
            csms="local-site1", provisioning_secret=PROVISIONING,
            state_dir=str(self.root / f"stations-{len(self.hosts)}"), speed=speed,
            tick_s=0.5, arrivals_per_evse_per_h=arrivals_per_evse_per_h,
            seed=7 + len(self.hosts)))
        self.hosts.append(host)
        return host

    async def add_station(self, name: str) -> ChargingStation:
        """One more station on the site's existing host (one component connection per
        domain: the broker refuses a second)."""
        host = self.hosts[0]
        model: ChargingStation = host.actors[0]  # type: ignore[assignment]
        station = ChargingStation(name, host.endpoint, store=model.store,
                                  settings=model.settings,
                                  hardware=SimulatedStation(simulated(model).settings))
        await station.start()
        host.actors.append(station)
        return station

    def pause(self, paused: bool = True) -> None:
        for station in self.stations():
            simulated(station).paused = paused

    # -- looking at the cloud -------------------------------------------------------------------

    async def connect_operator(self) -> OperatorClient:
        if self.operator is None:
            transport = XmppTransport.client(xmpp_settings(self.config), "operator",
                                             PASSWORDS["operator"])
            self.operator_endpoint = await Endpoint(transport, name="operator").start()
            self.operator = OperatorClient("operator", self.operator_endpoint)
            await self.operator.start()
        return self.operator

    async def cloud_digests(self) -> dict[str, bytes | None]:
        """What the cloud's copy of each station's root digest is (None: no copy)."""
        operator = await self.connect_operator()
        ids = [s.address for s in self.stations()]
        batch = Batch(items=[PropertyTreeDiscoveryRequest(tree=KeyPath("stations", i),
                                                          include_values=False) for i in ids])
        try:
            answer = await operator.request("cloud", batch, timeout=10)
        except ModelError:
            return dict.fromkeys(ids)
        assert isinstance(answer, Batch)
        return {i: getattr(item, "root_digest", None) for i, item in zip(ids, answer.items,
                                                                         strict=True)}

    async def cloud_consistent(self) -> bool:
        digests = await self.cloud_digests()
        return all(digests[s.address] == s.tree.digest(visible=True)  # type: ignore[union-attr]
                   for s in self.stations())

    def local_consistent(self) -> bool:
        local = self.local_actor
        for station in self.stations():
            copy = local.copies.replicas.get(f"stations/{station.address}")
            if copy is None or copy.tree.digest() != station.tree.digest(visible=True):  # type: ignore[union-attr]
                return False
        return True

    async def wait(self, condition: object, timeout: float, what: str) -> None:
        """Poll ``condition`` (sync or async) until true; fail naming ``what``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            result = condition()  # type: ignore[operator]
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.2)

    async def cloud_counter(self, name: str) -> int:
        operator = await self.connect_operator()
        answer = await operator.request("cloud", PropertyValueRead(
            paths=[KeyPath("counters", name)]), timeout=10)
        return int(answer.values[0][2])  # type: ignore[attr-defined]

    async def disconnect_operator(self) -> None:
        """Hang up the test's operator (so that ``csms`` commands may log in as it)."""
        if self.operator is not None:
            await self.operator.stop()
        if self.operator_endpoint is not None:
            await self.operator_endpoint.stop(flush_timeout=0.5)
        self.operator = self.operator_endpoint = None

    async def close(self) -> None:
        await self.disconnect_operator()
        for host in reversed(self.hosts):
            await host.stop()
        if self.local is not None:
            await self.local.stop()
        if self.rm is not None:
            await self.rm.stop()
        if self.cloud_process is not None and self.cloud_process.returncode is None:
            self.cloud_process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.cloud_process.wait(), 10)
            except TimeoutError:
                os.kill(self.cloud_process.pid, signal.SIGKILL)
        await self.broker.stop()


def simulated(station: ChargingStation) -> SimulatedStation:
    """The simulator behind ``station``."""
    assert isinstance(station.hardware, SimulatedStation)
    return station.hardware


async def build(root: Path) -> Hierarchy:
    broker = ManagedProsody(root / "broker")
    ep = await broker.start()
    broker.create_accounts(PASSWORDS)
    config = BrokerConfig(host=ep.host, c2s_port=ep.c2s_port, component_port=ep.component_port,
                          domain=ep.domain, muc_domain=ep.muc_domain,
                          routes=(("cs-*", ep.component_domains[0]),))
    hierarchy = Hierarchy(root, broker, config)
    hierarchy.write_cloud_config()
    return hierarchy
