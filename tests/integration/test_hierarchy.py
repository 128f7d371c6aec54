"""The local/cloud hierarchy on a real broker, with real processes and real SQLite files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest

from actors.app.hierarchy import Hierarchy, simulated
from actors.runtime.storage.trees import TreeStore
from actors.station.actor import ChargingStation
from actors.station.simulated import SimulatedStation
from actors.testing import until
from keypath import KeyPath
from object_model import ErrorCode, ModelError, PermissiveSchema
from object_model.messages import PropertyValueWrite, WriteItem
from tests.integration.conftest import site_simulator

pytestmark = pytest.mark.broker


@pytest.fixture
async def hierarchy(tmp_path: Path) -> AsyncIterator[Hierarchy]:
    h = await Hierarchy.start(tmp_path)
    try:
        await h.spawn_cloud()
        await h.start_site(1, 8, simulator=site_simulator(), seed=7)
        h.pause()  # compare copies of stations that hold still, then let them live again
        await until(h.cloud_consistent, "the cloud's first copies", 60, every=0.2)
        h.pause(False)
        yield h
    finally:
        await h.close()


def floor_bytes(station: ChargingStation, since: int) -> int:
    """The encoded changed key-paths and values since ``since``: what any resync must carry."""
    assert station.tree is not None
    changes = station.tree.changes_since(since, visible=True)
    return sum(len(msgpack.packb([str(p), v])) for p, _, v in changes.upserts) + sum(
        len(msgpack.packb(str(p))) for p, _ in changes.deletes)


async def persisted_revisions(h: Hierarchy) -> dict[str, int]:
    """The revision of each copy in the killed cloud's own SQLite file."""
    copy = h.root / "cloud-copy"
    copy.mkdir(exist_ok=True)
    for name in ("trees.db", "trees.db-wal", "trees.db-shm"):
        if (h.root / "cloud" / name).exists():
            shutil.copy(h.root / "cloud" / name, copy / name)
    out = {}
    async with TreeStore(copy / "trees.db") as store:
        for station in h.stations():
            tree = await store.load(f"stations/{station.address}", PermissiveSchema())
            assert tree is not None, station.address
            out[station.address] = tree.revision
    return out


async def test_a_cloud_killed_while_stations_change_catches_up_exactly(hierarchy: Hierarchy
                                                                       ) -> None:
    h = hierarchy
    before = await h.cloud_counter("resync_wire_bytes")
    await h.kill_cloud()  # SIGKILL
    energy = sum(s.energy_wh for s in h.stations())
    # stations keep charging and changing, the cloud misses it all
    await until(lambda: sum(s.energy_wh for s in h.stations()) > energy, "charging to go on while the cloud is down", 60, every=0.2)
    h.pause()
    await until(h.local_consistent, "the local copies", 30, every=0.2)
    revisions = await persisted_revisions(h)
    floor = sum(floor_bytes(s, revisions[s.address]) for s in h.stations())
    assert floor > 0
    await h.spawn_cloud()
    await until(h.cloud_consistent, "the cloud's copies after its restart", 30, every=0.2)
    spent = await h.cloud_counter("resync_wire_bytes") - before
    stations = len(h.stations())
    assert 0 < spent <= 1.5 * floor + 100 * stations, (spent, floor)


async def test_a_restarted_station_keeps_its_epoch_and_a_wiped_one_gets_a_new_one(
        hierarchy: Hierarchy) -> None:
    h = hierarchy
    h.pause()  # compare copies of stations that hold still
    host = h.site(1).hosts[0]
    station: ChargingStation = host.actors[0]  # type: ignore[assignment]
    name, store = station.address, station.store
    assert station.tree is not None
    epoch = station.tree.epoch
    local = h.site(1).local_csms
    modes = dict(local.copies.resync.stats.by_mode)

    # restart: the station changed while it was away, under the same epoch
    await station.stop()
    tree = await store.load(name, station.tree.schema)
    assert tree is not None
    tree.write("identity/display_name", "Changed while offline")
    await store.save_snapshot(name, tree)
    again = ChargingStation(name, host.endpoint, store=store, settings=station.settings,
                            hardware=SimulatedStation(simulated(station).settings))
    simulated(again).paused = True
    host.actors[0] = again
    await again.start()
    assert again.tree is not None and again.tree.epoch == epoch and not again.fresh
    await until(h.local_consistent, "the local copy after a restart", 30, every=0.2)
    assert local.copies.resync.stats.by_mode.get("changes", 0) > modes.get("changes", 0)

    # wipe: a new epoch, resynchronised by digest descent
    await again.stop()
    await store.delete(name)
    wiped = ChargingStation(name, host.endpoint, store=store, settings=station.settings,
                            hardware=SimulatedStation(simulated(station).settings))
    simulated(wiped).paused = True
    host.actors[0] = wiped
    await wiped.start()
    assert wiped.fresh and wiped.tree is not None and wiped.tree.epoch != epoch
    await until(h.local_consistent, "the local copy after a wipe", 30, every=0.2)
    assert local.copies.resync.stats.by_mode.get("descent", 0) > modes.get("descent", 0)
    copy = local.copies.replicas[f"stations/{name}"].tree
    assert copy.epoch == wiped.tree.epoch
    await until(h.cloud_consistent, "the cloud's copy after the wipe", 30, every=0.2)


async def test_the_site_works_without_the_cloud_and_the_cloud_catches_up(
        hierarchy: Hierarchy) -> None:
    h = hierarchy
    await h.kill_cloud()
    energy = sum(s.energy_wh for s in h.stations())
    station = await h.add_station(1, "cs-site1-new")  # admitted while the uplink is down
    await until(lambda: station.admitted, "the new station's admission", 30, every=0.2)
    await until(lambda: sum(s.energy_wh for s in h.stations()) > energy, "charging to go on without the cloud", 60, every=0.2)
    h.pause()
    await until(h.local_consistent, "the local copies", 30, every=0.2)
    await h.spawn_cloud()
    await until(h.cloud_consistent, "the cloud catching up, newcomer included", 60, every=0.2)


async def test_writes_outside_rights_or_types_are_refused_and_change_nothing(
        hierarchy: Hierarchy) -> None:
    h = hierarchy
    h.pause()
    victim: ChargingStation = h.stations()[1]
    intruder: ChargingStation = h.stations()[0]
    assert victim.tree is not None
    before = (victim.tree.revision, victim.tree.digest())
    operator = await h.operator()

    async def refused(actor: object, target: str, path: str, value: object) -> ErrorCode:
        with pytest.raises(ModelError) as info:
            await actor.request(target, PropertyValueWrite(  # type: ignore[attr-defined]
                writes=[WriteItem(path=KeyPath.parse(path), value=value)]), timeout=10)
        return info.value.code

    assert await refused(intruder, victim.address, "permissions/may_charge",
                         False) is ErrorCode.ACCESS_DENIED
    assert await refused(operator, victim.address, "network/profiles/0/broker_host",
                         "evil.example") is ErrorCode.ACCESS_DENIED
    assert await refused(operator, victim.address, "evse/1/meter/obis:1-0:1.8.0",
                         1.0) is ErrorCode.NOT_WRITABLE
    assert await refused(operator, victim.address, "evse/1/permissions/max_power_w",
                         "lots") is ErrorCode.WRONG_TYPE
    assert await refused(operator, "cloud", f"stations/{victim.address}/evse/1/phases",
                         7) is ErrorCode.ACCESS_DENIED
    assert (victim.tree.revision, victim.tree.digest()) == before


def test_the_demo_runs_and_charges(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "actors.app.cli", "demo", "--duration", "20", "--json",
         "--state-dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    # 10 simulated stations and 2 OCPP chargers (through each site's gateway) per site
    assert summary["stations_online"] == summary["stations"] == 24
    assert summary["ocpp_chargers_connected"] == 4
    assert summary["stations_charging"] > 0 and summary["energy_wh"] > 0
    assert summary["messages"] > 0 and summary["errors"] == 0
    assert summary["cloud_consistent"] is True
    # every envelope signed by its sender and verified by its receiver, none refused
    signed = summary["signed"]
    assert signed["verified"] > summary["stations"] and signed["refused"] == 0
    assert signed["signed"] >= signed["verified"]
    # the joins (and writes) crossed encrypted to their receivers
    assert signed["decrypted"] >= 2 * summary["stations"]
    assert signed["encrypted"] >= signed["decrypted"]
    # every station enrolled at its first join with its one-time token
    assert summary["certificates"]["enrolled"] == summary["stations"]
    assert summary["certificates"]["refused"] == 0
    for site in summary["sites_energy"]:  # each site's resource manager limits it
        assert site["limit_kw"] is not None and site["power_kw"] <= site["limit_kw"] + 0.05


async def test_the_operators_command_line_signs_and_a_stranger_key_is_refused(
        tmp_path: Path) -> None:
    """The demo signs every envelope end to end; ``csms get`` signs as the operator with the
    key the demo made for it, and the same command with a key nobody vouched for gets no
    answer (refused in silence: an attacker learns nothing)."""
    import asyncio
    import signal

    state = tmp_path / "demo"
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actors.app.cli", "demo", "--duration", "120", "--json",
        "--state-dir", str(state), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    connect = state / "connect.json"
    try:
        await until(lambda: connect.is_file() and connect.stat().st_size > 0,
                    "the demo's connect.json", 90)

        async def cli(command: str, conn: Path, *args: str) -> subprocess.CompletedProcess[str]:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "actors.app.cli", command, "--connect", str(conn), *args,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode is not None
            return subprocess.CompletedProcess(args, process.returncode, out.decode(),
                                               err.decode())

        ok = await cli("get", connect, "cloud", "stations/cs-site1-1/evse/1/status")
        assert ok.returncode == 0, ok.stderr
        assert "stations/cs-site1-1/evse/1/status" in ok.stdout
        # a write crosses encrypted (a chosen kind), and its answer comes back
        written = await cli("set", connect, "cs-site1-2", "identity/display_name", "Bay 2")
        assert written.returncode == 0, written.stderr
        read = await cli("get", connect, "cs-site1-2", "identity/display_name")
        assert '"Bay 2"' in read.stdout, read
        # a secret is sealed to the station's own key by the command line: the cloud and
        # the site pass it on unread; nobody reads it back; a fan-out cannot seal it
        wifi = "stations/cs-site1-2/network/profiles/0/wifi_password"
        secret = await cli("set", connect, "cloud", wifi, "hunter2")
        assert secret.returncode == 0 and "changed" in secret.stdout, secret
        hidden = await cli("get", connect, "cloud", wifi)
        assert hidden.returncode == 1 and "hunter2" not in hidden.stdout + hidden.stderr
        everywhere = await cli("set", connect, "cloud",
                               "stations/*/network/profiles/0/wifi_password", "hunter2")
        assert everywhere.returncode == 1 and "one station at a time" in everywhere.stderr
        assert stat_mode(connect) == 0o600
        # the same operator account with a key of its own making: the cloud does not answer
        raw = json.loads(connect.read_text())
        raw["signing"]["key_dir"] = str(tmp_path / "stolen-password-own-key")
        forged = tmp_path / "forged.json"
        forged.write_text(json.dumps(raw))
        refused = await cli("get", forged, "cloud", "stations/cs-site1-1/evse/1/status")
        assert refused.returncode == 1 and "no answer" in refused.stderr
        # the operator revokes a station at the cloud; the list reaches the site
        revoked = await cli("revoke", connect, "--trust", str(state / "trust"),
                            "--number", "1", "cs-site1-3")
        assert revoked.returncode == 0, revoked.stderr
        stale = await cli("revoke", connect, "--trust", str(state / "trust"),
                          "--number", "1", "cs-site1-3")
        assert stale.returncode == 1 and "stale" in stale.stderr

        async def site_took_it() -> bool:
            shown = await cli("get", connect, "local-site1", "security/revocation_number")
            return shown.returncode == 0 and "revocation_number = 1 " in shown.stdout

        await until(site_took_it, "the site's revocation list", 30, every=1.0)
    finally:
        if demo.returncode is None:
            demo.send_signal(signal.SIGTERM)
        await asyncio.wait_for(demo.wait(), 30)
    assert demo.returncode == 0  # it stopped cleanly on SIGTERM


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777
