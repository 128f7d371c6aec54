"""Monitoring and firmware tasks through the real hierarchy: the managed Prosody, the cloud in
its own process, the site's local CSMS and stations in this one."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.app.hierarchy import Hierarchy
from actors.logic.firmware_trust import signed_update
from actors.runtime.storage.blobs import BlobStore
from actors.testing import until
from keypath import KeyPath, KeyPattern
from object_model.blobs import BlobRef, FirmwareUpdate
from object_model.messages import PropertyValueRead
from object_model.monitoring import (
    MonitoringHistory,
    MonitoringQuery,
    MonitoringReport,
    MonitoringTaskSetup,
    ReporterConfig,
    TaskAction,
    TaskControl,
)
from tests.integration.conftest import site_simulator

pytestmark = pytest.mark.broker

POWER = "evse/*/meter/obis:1-0:16.7.0"


@pytest.fixture
async def hierarchy(tmp_path: Path) -> AsyncIterator[Hierarchy]:
    h = await Hierarchy.start(tmp_path)
    try:
        await h.spawn_cloud()
        await h.start_site(1, 3, simulator=site_simulator(), seed=7)
        h.pause()
        await until(h.cloud_consistent, "the cloud's first copies", 60, every=0.2)
        h.pause(False)
        yield h
    finally:
        await h.close()


async def test_the_cloud_monitors_a_site_station_stores_relays_and_cancels(
        hierarchy: Hierarchy) -> None:
    h = hierarchy
    operator = await h.operator()
    station = h.stations()[0]
    tree = KeyPath("stations", station.address)
    await operator.request("cloud", MonitoringTaskSetup(
        tree=tree, task="power", selectors=[KeyPattern.parse(POWER)],
        reporter=ReporterConfig(interval_s=1, priority=2)), timeout=10)
    assert station.tree.get("tasks/power/state") == "running"
    assert station.tree.get("tasks/power/owner") == "local-site1"  # it reports to its CSMS

    station.tree.write("evse/1/meter/obis:1-0:16.7.0", 4_321.0)
    report: MonitoringReport = await asyncio.wait_for(operator.reports.get(), 30)
    assert report.tree == tree and report.task == "power"
    assert all(KeyPattern.parse(POWER).matches(p) for p, _, _ in report.samples)

    # both CSMS stored what passed through them, and serve it
    local = h.site(1).local_csms
    stored = await local.tasks.samples.query(station.address, MonitoringQuery(tree=tree))
    assert stored.samples
    history = await operator.request("cloud", MonitoringQuery(tree=tree, task="power"))
    assert isinstance(history, MonitoringHistory) and history.samples
    assert history.samples[0][0] == "power"

    # the task is listed like any value, in the cloud's copy of the station
    async def listed(state: str) -> bool:
        answer = await operator.request("cloud", PropertyValueRead(
            paths=[tree / KeyPath.parse("tasks/power/state")]), timeout=10)
        return bool(answer.values) and answer.values[0][2] == state  # type: ignore[attr-defined]

    await until(lambda: listed("running"), "the task in the cloud's copy", 30, every=0.2)
    await operator.request("cloud", TaskControl(tree=tree, task="power",
                                                action=TaskAction.CANCEL))
    assert station.tree.get("tasks/power/state") == "cancelled"
    assert (station.address, "power") not in local.tasks.watchers
    await until(lambda: listed("cancelled"), "the cancelled task in the cloud's copy", 30, every=0.2)


async def test_csms_monitor_prints_samples_live(hierarchy: Hierarchy, tmp_path: Path) -> None:
    h = hierarchy
    station = h.stations()[1]
    await h.disconnect_operator()  # the command logs in as the operator
    connect = tmp_path / "connect.json"
    c = h.config
    connect.write_text(json.dumps({
        "broker": {"host": c.host, "c2s_port": c.c2s_port, "domain": c.domain,
                   "muc_domain": c.muc_domain, "routes": [list(r) for r in c.routes],
                   "cafile": c.cafile},
        "account": "operator", "password": h.passwords["operator"]}))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actors.app.cli", "monitor", "--connect", str(connect), "cloud",
        f"stations/{station.address}/enclosure/temperature_sensor/*/temperature_c",
        "--every", "0.5", "--for", "4", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    out, err = await asyncio.wait_for(process.communicate(), 60)
    lines = out.decode().splitlines()
    assert process.returncode == 0, err.decode()[-2000:]
    samples = [line for line in lines if not line.startswith("#")]
    assert len(samples) >= 4, lines  # two sensors, every half second, for four seconds
    assert all(f"stations/{station.address}/enclosure/temperature_sensor/" in s
               for s in samples)
    task = lines[0].split("(task ")[1].rstrip(");").split(")")[0]
    await until(lambda: station.tree.get(f"tasks/{task}/state") == "cancelled", "the monitor's task cancelled when it stopped", 10, every=0.2)


@pytest.fixture
async def firmware_site(tmp_path: Path) -> AsyncIterator[tuple[Hierarchy, BlobRef, bytes]]:
    h = await Hierarchy.start(tmp_path)
    image = os.urandom(5 * 1024 * 1024)
    async with BlobStore(tmp_path / "cloud" / "trees.blobs.db") as origin:
        ref = await origin.put(image)
    try:
        await h.spawn_cloud()
        await h.start_site(1, 20, simulator=site_simulator(), seed=7)
        h.pause()  # still stations: copies settle sooner, and only the update changes them
        await until(h.cloud_consistent, "the cloud's first copies", 90, every=0.2)
        yield h, ref, image
    finally:
        await h.close()


async def test_a_firmware_image_crosses_the_uplink_once_survives_a_broker_kill_and_a_bad_chunk(
        firmware_site: tuple[Hierarchy, BlobRef, bytes]) -> None:
    h, ref, image = firmware_site
    operator = await h.operator()
    local = h.site(1).local_csms
    stations = h.stations()

    def update(station: str) -> FirmwareUpdate:  # signed by the stations' manufacturer
        return signed_update(h.manufacturer, tree=KeyPath("stations", station), task="fw",
                             blob=ref, version="4.3.0", counter=1, vendor="ACME Charging",
                             model="Volt AC-22")

    def state(station: object) -> str:
        return station.tree.get("tasks/fw/state")  # type: ignore[attr-defined,no-any-return]

    await operator.request("cloud", update(stations[0].address), timeout=10)
    await until(lambda: state(stations[0]) == "succeeded", "the first station updated", 120, every=0.2)
    assert local.blobs.upstream_chunks == ref.chunks  # the local CSMS holds the image now

    # a chunk of the local copy rots on disk: the local CSMS notices and fetches it again
    await local.blobs.store.db.execute("UPDATE chunks SET data = ? WHERE hash = ? AND idx = 5",
                                 (b"\0" * ref.chunk_size, ref.hash))
    for station in stations[1:]:
        await operator.request("cloud", update(station.address), timeout=10)

    def downloaded() -> float:
        return sum(s.tree.get("tasks/fw/progress_percent") for s in stations[1:]
                   if "tasks/fw/progress_percent" in s.tree) / (90 * len(stations[1:]))

    # the site's broker dies once the site holds the image again (the rotten chunk refetched) and
    # the stations are a fifth of the way through
    await until(lambda: downloaded() >= 0.2 and local.blobs.upstream_chunks > ref.chunks, "a fifth of the downloads", 120, every=0.2)
    assert downloaded() < 1.0  # mid-transfer
    h.site_broker(1).kill()  # the broker between the site's CSMS and its stations
    await h.site_broker(1).restart()
    try:
        await until(lambda: all(state(s) == "succeeded" for s in stations), "every station updated after the broker came back", 180, every=0.2)
    except AssertionError:
        raise AssertionError({s.address: s.tree.read("tasks/fw") for s in stations
                              if state(s) != "succeeded"}) from None

    assert {s.tree.get("firmware/version") for s in stations} == {"4.3.0"}
    for station in stations:
        assert station.blobs is not None and await station.blobs.read(ref.hash) == image
    assert local.blobs.store.corrupt_chunks == 1
    # the image crossed the uplink once, plus the chunk that rotted (and at most one answer
    # the broker's death cut off and that had to be asked again)
    assert ref.chunks + 1 <= local.blobs.upstream_chunks <= ref.chunks + 2
    # and the stations resumed: nothing near a second download each
    window = stations[0].settings.tasks.blob_window
    assert local.blobs.served_bytes <= len(stations) * (ref.size + 2 * window * ref.chunk_size)
