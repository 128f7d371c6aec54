"""Firmware-update tasks and the blob cache on a station, over the in-memory transport with real
SQLite files (the site-wide transfer through the real broker: test_tasks_hierarchy)."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from actors.logic.firmware_trust import signed_update
from actors.runtime.actor import Context, RoleDirectory, handles
from actors.runtime.services.blob_service import BlobService
from actors.runtime.storage.blobs import BlobStore
from actors.runtime.storage.samples import SampleStore
from actors.station.actor import ChargingStation
from actors.station.tasks import TaskLimits
from actors.testing import until
from keypath import KeyPath
from object_model import ErrorCode, MessageBase, ModelError, Role
from object_model.blobs import BlobChunk, BlobChunkRequest, BlobRef, FirmwareUpdate
from object_model.monitoring import (
    MonitoringQuery,
    MonitoringReport,
    TaskAction,
    TaskControl,
    TaskStatus,
)
from tests.actors.station.site import MANUFACTURER, Csms, Site

CHUNK = 16 * 1024


class Origin(Csms):
    """The station's CSMS holding the image; it can hold chunks back and spoil one."""

    blobs: BlobService

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: Counter[int] = Counter()
        self.gate = asyncio.Event()
        self.gate.set()
        self.hold_from = 1 << 30  # chunks from this index wait for the gate
        self.spoil: set[int] = set()  # chunks answered corrupted once

    @handles(BlobChunkRequest)
    async def on_blob_chunk(self, message: BlobChunkRequest, ctx: Context) -> MessageBase | None:
        self.asked[message.index] += 1
        if message.index >= self.hold_from:
            await self.gate.wait()
        answer = await self.blobs.serve(message, ctx)
        if message.index in self.spoil:
            self.spoil.discard(message.index)
            assert isinstance(answer, BlobChunk)
            return answer.model_copy(update={"data": bytes([answer.data[0] ^ 0xFF])
                                              + answer.data[1:]})
        return answer


async def origin_with_image(site: Site, size: int = 200_000) -> tuple[Origin, BlobRef, bytes]:
    origin = await site.actor(Origin("csms", await site.endpoint("csms"),
                                     roles=RoleDirectory({"cs-*": Role.STATION})))
    store = await site.stack.enter_async_context(BlobStore(site.root / "origin.db"))
    origin.blobs = BlobService(origin, store)
    image = os.urandom(size)
    return origin, await store.put(image, chunk_size=CHUNK), image


def update(ref: BlobRef, *, version: str = "9.9.9", counter: int = 7,
           key: Ed25519PrivateKey = MANUFACTURER, model: str = "Volt AC-22") -> FirmwareUpdate:
    """The update of ``ref``, its manifest signed by the station's manufacturer."""
    return signed_update(key, task="fw", blob=ref, version=version, counter=counter,
                         vendor="ACME Charging", model=model)


def state(station: ChargingStation) -> str:
    return station.tree.get("tasks/fw/state")  # type: ignore[union-attr,no-any-return]


async def test_an_update_downloads_verifies_installs_and_reports(site: Site) -> None:
    origin, ref, image = await origin_with_image(site)
    station = await site.station()
    answer = await origin.request("cs-1", update(ref))
    assert isinstance(answer, TaskStatus) and answer.state.value == "running"
    await until(lambda: state(station) == "succeeded", "the update done")
    tree = station.tree
    assert tree.get("firmware/version") == "9.9.9"
    assert tree.get("firmware/update_status") == "Installed"
    assert tree.get("tasks/fw/progress_percent") == 100.0
    assert tree.get("tasks/fw/result") == "installed 9.9.9"
    assert await station.blobs.read(ref.hash) == image  # type: ignore[union-attr]
    assert sum(origin.asked.values()) == ref.chunks  # each chunk asked for once


async def test_a_chunk_spoiled_on_the_way_is_detected_and_fetched_again(site: Site) -> None:
    origin, ref, image = await origin_with_image(site)
    origin.spoil = {3, 7}
    station = await site.station()
    await origin.request("cs-1", update(ref))
    await until(lambda: state(station) == "succeeded", "the update done")
    assert station.blobs is not None and station.blobs.corrupt_chunks == 2
    assert origin.asked[3] == origin.asked[7] == 2 and origin.asked[0] == 1
    assert await station.blobs.read(ref.hash) == image


async def test_a_download_resumes_after_the_station_restarts(site: Site) -> None:
    origin, ref, image = await origin_with_image(site)
    origin.gate.clear()
    origin.hold_from = 6
    station = await site.station()
    await origin.request("cs-1", update(ref))
    await until(lambda: station.tree.get("tasks/fw/progress_percent") >= 90 * 6 // ref.chunks,
                "six chunks downloaded")
    await station.stop()  # power cut mid-download

    origin.gate.set()
    again = await site.restart(station)
    await until(lambda: state(again) == "succeeded", "the resumed update done")
    assert all(origin.asked[i] == 1 for i in range(6))  # what it had, it kept
    assert await again.blobs.read(ref.hash) == image  # type: ignore[union-attr]


async def test_a_resume_that_cannot_work_fails_saying_why(site: Site) -> None:
    origin, ref, _ = await origin_with_image(site)
    origin.gate.clear()
    origin.hold_from = 2
    station = await site.station()
    await origin.request("cs-1", update(ref))
    await until(lambda: station.tree.get("tasks/fw/progress_percent") > 0, "a chunk downloaded")
    await station.stop()
    blob_file = station.store.path.parent / "blobs" / "cs-1.sqlite"
    for suffix in ("", "-wal", "-shm"):  # the station's flash was wiped, its tree kept
        blob_file.with_name(blob_file.name + suffix).unlink(missing_ok=True)

    again = await site.restart(station)
    await until(lambda: state(again) == "failed", "the update failed")
    assert again.tree.get("tasks/fw/error_code") == "not_present"
    assert "start the update again" in again.tree.get("tasks/fw/error")
    assert again.tree.get("firmware/update_status") == "Failed"


async def test_an_update_pauses_resumes_and_is_refused_to_an_operator(site: Site) -> None:
    origin, ref, _ = await origin_with_image(site)
    origin.gate.clear()
    origin.hold_from = 3
    operator = await site.actor(Csms("op", await site.endpoint("op")))
    station = await site.station(limits=TaskLimits(install_s=0),
                                 trusted={"op": Role.OPERATOR})
    with pytest.raises(ModelError) as refused:
        await operator.request("cs-1", update(ref))
    assert refused.value.code is ErrorCode.ACCESS_DENIED
    assert "tasks/fw/kind" not in station.tree

    await origin.request("cs-1", update(ref))
    with pytest.raises(ModelError) as busy:
        await origin.request("cs-1", update(ref).model_copy(update={"task": "fw2"}))
    assert busy.value.code is ErrorCode.BUSY
    await until(lambda: station.tree.get("tasks/fw/progress_percent") > 0, "a chunk in")
    paused = await origin.request("cs-1", TaskControl(task="fw", action=TaskAction.PAUSE))
    assert isinstance(paused, TaskStatus) and paused.state.value == "paused"
    origin.gate.set()
    await asyncio.sleep(0)  # not a wait: one yield, in which a paused update must not go on
    assert state(station) == "paused"
    await origin.request("cs-1", TaskControl(task="fw", action=TaskAction.RESUME))
    await until(lambda: state(station) == "succeeded", "the resumed update done")


async def test_the_sample_store_keeps_the_newest_within_its_bound(tmp_path: Any) -> None:
    async with SampleStore(tmp_path / "s.db", max_samples=50) as store:
        for seq in range(10):
            await store.add("cs-1", MonitoringReport(task="p", seq=seq, samples=[
                (KeyPath.parse("evse/1/status"), 1_800_000_000_000_000 + seq * 10 + i,
                 f"v{seq}.{i}") for i in range(10)]))
        answer = await store.query("cs-1", MonitoringQuery(tree=KeyPath("stations", "cs-1"),
                                                           limit=100))
    assert len(answer.samples) == 50 and not answer.more
    assert answer.samples[0][3] == "v9.9" and answer.samples[-1][3] == "v5.0"


async def test_the_blob_cache_evicts_the_least_recently_used_and_drops_rotten_chunks(
        tmp_path: Any) -> None:
    images = [os.urandom(40_000) for _ in range(4)]
    async with BlobStore(tmp_path / "b.db", capacity_bytes=100_000) as store:
        refs = [await store.put(images[0], chunk_size=CHUNK),
                await store.put(images[1], chunk_size=CHUNK)]
        await store.begin(refs[0])  # used again: now the most recent
        refs.append(await store.put(images[2], chunk_size=CHUNK))  # 120 kB: one must go
        assert await store.is_complete(refs[0].hash) and await store.is_complete(refs[2].hash)
        assert store.ref(refs[1].hash) is None and await store.missing(refs[1].hash) == []

        await store.db.execute("UPDATE chunks SET data = ? WHERE hash = ? AND idx = 1",
                               (b"rot" * 100, refs[0].hash))
        assert await store.chunk(refs[0].hash, 1) is None  # detected, dropped
        assert await store.missing(refs[0].hash) == [1]
        assert store.corrupt_chunks == 1
        assert not await store.put_chunk(refs[0].hash, 1, images[1][CHUNK:2 * CHUNK])
        assert await store.put_chunk(refs[0].hash, 1, images[0][CHUNK:2 * CHUNK])
        assert await store.finish(refs[0].hash)
        assert await store.read(refs[0].hash) == images[0]


# -- firmware trust (issue 14, item 6) -------------------------------------------------------


async def test_a_station_installs_only_what_its_manufacturer_signed_and_never_rolls_back(
        site: Site) -> None:
    from object_model.messages import PropertyValueWrite, WriteItem

    origin, ref, _ = await origin_with_image(site)
    other = await origin.blobs.store.put(os.urandom(50_000), chunk_size=CHUNK)
    station = await site.station()
    stranger = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    good = update(ref, counter=7)
    assert good.manifest is not None
    refused = {
        "no signature": (FirmwareUpdate(task="fw", blob=ref, version="9.9.9"),
                         ErrorCode.BAD_SIGNATURE),
        "another signer": (update(ref, key=stranger), ErrorCode.BAD_SIGNATURE),
        "an altered manifest": (good.model_copy(update={"manifest": good.manifest.model_copy(
            update={"counter": 99})}), ErrorCode.BAD_SIGNATURE),
        "an altered signature": (good.model_copy(update={"signature": bytes(
            [good.signature[0] ^ 1]) + good.signature[1:]}), ErrorCode.BAD_SIGNATURE),
        "another model's image": (update(ref, model="Volt DC-150"), ErrorCode.INVALID_VALUE),
        "a signed manifest of another image": (good.model_copy(update={"blob": other}),
                                               ErrorCode.INVALID_VALUE),
        "a version the manifest does not name": (good.model_copy(update={"version": "6.6.6"}),
                                                 ErrorCode.INVALID_VALUE),
    }
    for case, (message, code) in refused.items():
        with pytest.raises(ModelError) as info:
            await origin.request("cs-1", message)
        assert info.value.code is code, case
    tree = station.tree
    assert tree is not None and "tasks/fw" not in tree
    assert tree.get("firmware/version") != "9.9.9" and tree.get("firmware/counter") == 0
    assert station.tasks is not None and station.tasks.firmware_refused == len(refused)
    assert sum(origin.asked.values()) == 0  # nothing was even downloaded

    await origin.request("cs-1", good)
    await until(lambda: state(station) == "succeeded", "the signed update installed")
    assert tree.get("firmware/version") == "9.9.9" and tree.get("firmware/counter") == 7
    # an image the manufacturer once signed, with a lower counter, is a rollback
    older = update(ref, version="9.9.8", counter=6).model_copy(update={"task": "fw-old"})
    with pytest.raises(ModelError) as info:
        await origin.request("cs-1", older)
    assert info.value.code is ErrorCode.STALE
    # and no CSMS may turn the check off
    with pytest.raises(ModelError) as info:
        await origin.request("cs-1", PropertyValueWrite(writes=[WriteItem(
            path=KeyPath.parse("firmware/signature_required"), value=False)]))
    assert info.value.code is ErrorCode.NOT_WRITABLE
    assert tree.get("firmware/signature_required") is True


async def test_a_second_image_under_the_same_task_cannot_overtake_the_first(site: Site) -> None:
    """Found by attacking it: the same task id sent again while the first download ran made a
    second job beside the first; the newer image installed, then the orphaned older one (a
    rollback past the counter). Now the second is refused BUSY while the first runs."""
    origin, ref, _ = await origin_with_image(site)
    newer = await origin.blobs.store.put(os.urandom(50_000), chunk_size=CHUNK)
    origin.gate.clear()
    origin.hold_from = 2  # the first image's download stalls
    station = await site.station()
    await origin.request("cs-1", update(ref, version="2.0", counter=2))
    with pytest.raises(ModelError) as info:
        await origin.request("cs-1", update(newer, version="5.0", counter=5))
    assert info.value.code is ErrorCode.BUSY
    origin.gate.set()
    await until(lambda: state(station) == "succeeded", "the first update done")
    tree = station.tree
    assert tree is not None and tree.get("firmware/counter") == 2
    assert tree.get("firmware/version") == "2.0"
