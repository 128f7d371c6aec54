"""The lab's calibration: the bytes of one small publish in each protocol, counted on real
connections (a managed Prosody, a websockets server, Debian's mosquitto) through the lab's
counting proxy; where the protocol fixes the size, the count must be exact."""

from __future__ import annotations

import json
import shutil

import pytest

from bench.lab import calibration
from bench.lab.calibration import BODY

pytestmark = [pytest.mark.broker]


async def test_an_ocpp_call_costs_its_frame_and_deflate_shrinks_a_repeated_one() -> None:
    plain = await calibration.ocpp(20, deflate=False)
    frame = json.dumps([2, "00000000", "DataTransfer", {"vendorId": "lab",
                                                        "data": BODY.decode()}],
                       separators=(",", ":"))
    assert plain["bytes"] == len(frame) + 6  # a masked client frame under 126 bytes: 2 + 4
    deflated = await calibration.ocpp(20, deflate=True)
    assert deflated["bytes"] < plain["bytes"] / 2  # the context keeps what repeats


async def test_our_publish_is_one_stanza_of_a_few_hundred_bytes_tls_or_not() -> None:
    if shutil.which("prosody") is None:
        pytest.skip("needs Prosody (make setup)")
    plain = await calibration.ours(20, tls=False)
    tls = await calibration.ours(20, tls=True)
    assert len(BODY) < plain["bytes"] < 491  # less than the published XMPP pubsub publish
    assert plain["bytes"] < tls["bytes"] < plain["bytes"] + 100  # a TLS record's overhead


async def test_an_mqtt_publish_is_exactly_its_packet() -> None:
    result = await calibration.mqtt(20, qos=0)
    if isinstance(result, str):
        pytest.skip(result)
    topic = "cs/1/v"
    assert result["bytes"] == 2 + 2 + len(topic) + len(BODY)  # fixed header, topic, body
    acked = await calibration.mqtt(20, qos=1)
    assert not isinstance(acked, str)
    assert acked["bytes"] == result["bytes"] + 2 and acked["bytes_back"] == 4  # id; PUBACK


async def test_the_broker_paths_deliver_every_message_in_each_shape() -> None:
    if shutil.which("prosody") is None:
        pytest.skip("needs Prosody (make setup)")
    paths = await calibration.broker_paths(messages=30)
    for shape in ("point_to_point", "fan_in", "fan_out"):
        row = paths[shape]
        assert row["ours_per_s"] > 0, (shape, row)
        if isinstance(row["mosquitto_per_s"], str):
            pytest.skip(row["mosquitto_per_s"])
        assert row["mosquitto_per_s"] > 0 and row["ours_over_mosquitto"] > 0, (shape, row)
