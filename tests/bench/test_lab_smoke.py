"""The lab's smoke run: short versions of the shipped scenarios, on both architectures, on
real namespaces, real brokers and real OCPP-J chargers (``bench/lab``; the full runs are
``csms lab run bench/lab/scenarios/*.toml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.lab import drivers  # noqa: F401  (registers the drivers)
from bench.lab.rundir import RunDirectory
from bench.lab.runner import run
from bench.lab.scenario import load
from bench.netlab import netns_available

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "lab" / "scenarios"


@pytest.fixture(autouse=True)
def namespaces() -> None:
    reason = netns_available()
    if reason is not None:
        pytest.skip(f"the lab needs network namespaces: {reason}")


async def smoke(tmp_path: Path, name: str, **overrides: Any) -> RunDirectory:
    scenario = load(SCENARIOS / f"{name}.toml", repetitions=1, **overrides)
    said: list[str] = []
    directory = await run(scenario, tmp_path, say=said.append)
    assert any("repetition 1/1 ocpp" in line for line in said)  # progress was shown
    assert (directory.path / "report.md").is_file()
    return directory


async def test_s1_a_safety_message_crosses_a_saturated_uplink_in_both_architectures(
        tmp_path: Path) -> None:
    directory = await smoke(tmp_path, "s1-safety-behind-telemetry", duration_s=14.0,
                            warmup_s=4.0, sites={"count": 1, "stations": 6},
                            parameters={"telemetry_bytes_per_s": 400_000,
                                        "telemetry_message_bytes": 4000,
                                        "safety_messages": 8})
    summary = directory.summary
    for architecture in ("broker", "ocpp"):
        figures = summary[architecture]["0"]
        assert figures["safety_messages"] == 8
        assert figures["safety_lost"] == 0, architecture
        # the uplink was saturated: the load offered more than the link carries
        assert figures["telemetry_offered_kbit_per_site"] > 2 * 2000 * 0.75
        assert figures["uplink_up_kbit_per_site"] > 1000, architecture
    latencies = [e for e in directory.events() if e.kind == "latency"]
    assert {e.architecture for e in latencies} == {"broker", "ocpp"}
    assert len(latencies) == 16
    assert (directory.path / "plots" / "latency.png").is_file()


async def test_s5_one_uplink_connection_per_site_against_one_per_charger(
        tmp_path: Path) -> None:
    directory = await smoke(tmp_path, "s5-idle-connections", duration_s=16.0, warmup_s=4.0,
                            sites={"count": 1, "stations": 5})
    summary = directory.summary
    assert summary["broker"]["0"]["upstream_tcp_connections"] == 1
    assert summary["ocpp"]["0"]["upstream_tcp_connections"] == 5
    # the uplink's bytes were sampled over the window, for each architecture and direction
    sampled = {(e.architecture, e.key) for e in directory.events() if e.kind == "bytes"}
    assert sampled == {(a, f"site1/{d}") for a in ("broker", "ocpp") for d in ("up", "down")}


async def test_s2_after_an_uplink_outage_the_cloud_sees_every_session_again_in_both(
        tmp_path: Path) -> None:
    directory = await smoke(tmp_path, "s2-uplink-outage", duration_s=45.0, warmup_s=5.0,
                            sites={"count": 1, "stations": 4},
                            outages=[{"at_s": 10.0, "for_s": 25.0, "kind": "drop"}],
                            parameters={"idle_mean_s": 6.0, "session_mean_s": 12.0})
    for architecture in ("broker", "ocpp"):
        figures = directory.summary[architecture]["0"]
        assert figures["evses"] == 8, architecture
        assert figures["sessions"] > 0, architecture  # EVs came and went
        assert figures["lost"] == 0, architecture
        assert figures["catch_up_all_s"] is not None, architecture
        assert figures["catch_up_all_bytes"] > 0, architecture
    curve = [e for e in directory.events() if e.kind == "consistency"]
    assert {e.architecture for e in curve} == {"broker", "ocpp"}
    assert max(float(e.value) for e in curve) == 1.0
    assert (directory.path / "plots" / "recovery.png").is_file()


async def test_s3_a_crashed_cloud_relearns_every_station_in_both_architectures(
        tmp_path: Path) -> None:
    directory = await smoke(tmp_path, "s3-cloud-relearn", duration_s=30.0, warmup_s=4.0,
                            sites={"count": 1, "stations": 3},
                            parameters={"rtts_ms": "20,200", "down_s": 3.0,
                                        "idle_mean_s": 4.0, "session_mean_s": 8.0})
    for architecture in ("broker", "ocpp"):
        figures = directory.summary[architecture]["0"]
        for rtt in ("rtt20ms", "rtt200ms"):
            assert figures[f"relearn_s_{rtt}"] > 0, (architecture, figures)
            assert figures[f"relearn_bytes_{rtt}"] > 0, (architecture, figures)
    # OCPP learns each charger's whole model again (GetBaseReport and its pages); we do not
    ocpp, ours = directory.summary["ocpp"]["0"], directory.summary["broker"]["0"]
    assert ocpp["relearn_requests_per_station_rtt20ms"] > \
        ours["relearn_requests_per_station_rtt20ms"]


async def test_s4_a_firmware_image_crosses_a_site_s_uplink_once_in_ours_once_per_charger_in_ocpp(
        tmp_path: Path) -> None:
    directory = await smoke(tmp_path, "s4-firmware-fanout", sites={"count": 1, "stations": 3},
                            parameters={"image_kb": 128})
    ours, ocpp = directory.summary["broker"]["0"], directory.summary["ocpp"]["0"]
    for figures in (ours, ocpp):
        assert figures["succeeded"] == figures["stations"] == 3
    assert 1.0 <= ours["uplink_copies_of_image"] < 2.0  # once, and what carries it
    assert ocpp["uplink_copies_of_image"] >= 3.0  # once per charger


async def test_s6_after_a_cloud_restart_every_station_is_reached_again_in_both(
        tmp_path: Path) -> None:
    directory = await smoke(tmp_path, "s6-reconnect-storm", warmup_s=2.0,
                            sites={"count": 2, "stations": 4}, parameters={"down_s": 3.0})
    ours, ocpp = directory.summary["broker"]["0"], directory.summary["ocpp"]["0"]
    for figures in (ours, ocpp):
        assert figures["stations"] == 8
        assert figures["recovered_all_s"] is not None
    assert ours["connections"] == 2  # one uplink per site
    assert ocpp["connections"] == 8  # one WebSocket per charger


async def test_s7_a_cellular_trace_drives_the_uplink_and_controls_and_views_are_timed_in_both(
        tmp_path: Path) -> None:
    directory = await smoke(tmp_path, "s7-cellular-day", duration_s=25.0, warmup_s=2.0,
                            sites={"count": 1, "stations": 3},
                            parameters={"idle_mean_s": 4.0, "session_mean_s": 8.0,
                                        "control_every_s": 2.0, "poll_s": 0.25})
    for architecture in ("broker", "ocpp"):
        figures = directory.summary[architecture]["0"]
        assert figures["changes"] > 0 and figures["controls"] > 0, (architecture, figures)
        assert figures["controls_failed"] == 0, (architecture, figures)
        assert figures["staleness_p99_s"] >= 0, (architecture, figures)
    controls = [e for e in directory.events() if e.kind == "latency" and e.key == "control"]
    assert {e.architecture for e in controls} == {"broker", "ocpp"}

