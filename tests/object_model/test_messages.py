"""The message catalogue: round trips, rejections and error reports."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from keypath import KeyPath, KeyPathError, KeyPattern
from object_model import (
    Ack,
    Batch,
    ErrorCode,
    ErrorReport,
    JoinNetworkRequest,
    JoinNetworkResponse,
    ModelError,
    PropertyTreeDiscoveryRequest,
    PropertyTreeDiscoveryResponse,
    PropertyValueRead,
    PropertyValueReadResponse,
    PropertyValueUpdate,
    PropertyValueWrite,
    PropertyValueWriteResponse,
    Role,
    TreeInfo,
    WriteItem,
    decode_message,
    encode_message,
    error_report,
)
from object_model.blobs import BlobChunk, BlobChunkRequest, BlobRef, FirmwareUpdate
from object_model.energy_messages import AlertCode, AlertEvse, EnergyAlert, S2Message
from object_model.errors import UnknownPathError
from object_model.messages import (
    MESSAGE_TYPES,
    FanOutRequest,
    FanOutResponse,
    FanOutResult,
    Pause,
    ReadFailure,
)
from object_model.monitoring import (
    Aggregation,
    LoggerConfig,
    MonitoringHistory,
    MonitoringQuery,
    MonitoringReport,
    MonitoringTaskSetup,
    ReporterConfig,
    TaskAction,
    TaskControl,
    TaskState,
    TaskStatus,
    Threshold,
)
from object_model.node_digests import children_shape, pack_children, unpack_children
from object_model.operations import OperationKind, RemoteOperation
from object_model.station import new_station_tree

MID = bytes(range(16))

EXAMPLES = [
    PropertyTreeDiscoveryRequest(patterns=[KeyPattern.parse("evse/*/status")], include_types=True),
    PropertyTreeDiscoveryRequest(tree=KeyPath.parse("stations/cs-1"), epoch=5, since_revision=9),
    PropertyTreeDiscoveryRequest(digests_of=[KeyPath.root(), KeyPath.parse("evse")]),
    PropertyTreeDiscoveryRequest(digests_of=[KeyPath.root()], digest_bytes=1,
                                 shapes=[b"\x01\x02\x03\x04"]),
    PropertyTreeDiscoveryResponse(
        epoch=5, revision=10, root_digest=bytes(16),
        leaves=[(KeyPath.parse("evse/1/status"), 3, "Available")],
        deletes=[(KeyPath.parse("evse/2"), 9)],
        types=[(KeyPath.parse("evse/1/status"), {"type": "enum"})],
        digests=[(["evse", "status"], b"\x02", bytes(4)), ([], b"", bytes(6))],
    ),
    PropertyValueRead(paths=[KeyPath.parse("identity")]),
    PropertyValueReadResponse(
        epoch=1, revision=2, values=[(KeyPath.parse("a"), 1, {"x": [1, 2.5, b"z"]})],
        failures=[ReadFailure(path=KeyPath.parse("b"), code=ErrorCode.NOT_PRESENT, text="none")],
    ),
    PropertyValueWrite(writes=[WriteItem(path=KeyPath.parse("a/b"), value=3),
                               WriteItem(path=KeyPath.parse("c"), delete=True)],
                       expected_revision=4),
    PropertyValueWriteResponse(epoch=1, revision=5, changed=True),
    PropertyValueUpdate(epoch=1, from_revision=4, to_revision=5,
                        upserts=[(KeyPath.parse("a"), 5, None)], deletes=[]),
    Ack(message_ids=[MID]),
    ErrorReport(code=ErrorCode.UNKNOWN_PATH, answers=MID, path="a/b", text="no", details={"x": 1}),
    Batch(items=[PropertyValueWrite(writes=[WriteItem(path=KeyPath.parse("a"), value=1)]),
                 PropertyValueRead(paths=[KeyPath.parse("b")])]),
    JoinNetworkRequest(role=Role.STATION, identity={"vendor": "ACME"}, secret="s",
                       trees=[TreeInfo(epoch=1, revision=2, root_digest=bytes(16))]),
    JoinNetworkResponse(csms="local-site1", heartbeat_s=10),
    MonitoringTaskSetup(task="power-1", selectors=[KeyPattern.parse("evse/*/meter/**")],
                        trigger=Threshold(upper=11_000, hysteresis=500),
                        logger=LoggerConfig(sampling_interval_s=60,
                                            aggregations=[Aggregation.MAX, Aggregation.MEAN]),
                        reporter=ReporterConfig(interval_s=300, priority=0)),
    TaskControl(task="fw-7", action=TaskAction.PAUSE),
    MonitoringReport(task="power-1", seq=4, dropped=2, backlog=True, samples=[
        (KeyPath.parse("evse/1/meter/obis:1-0:16.7.0"), 1_800_000_000_000_000,
         {"max": 11_200.5, "mean": 7_100.0})]),
    MonitoringQuery(tree=KeyPath.parse("stations/cs-1"), task="power-1",
                    pattern=KeyPattern.parse("evse/*/meter/**"), since_us=5, limit=10),
    MonitoringHistory(tree=KeyPath.parse("stations/cs-1"), more=True, samples=[
        ("power-1", KeyPath.parse("evse/1/status"), 7, "Charging")]),
    TaskStatus(task="fw-7", task_kind="firmware_update", state=TaskState.PAUSED, revision=9),
    BlobChunkRequest(hash=bytes(32), index=3),
    BlobChunk(hash=bytes(32), index=3, data=b"\x00\xff" * 10),
    FirmwareUpdate(tree=KeyPath.parse("stations/cs-1"), task="fw-7", version="4.3.0",
                   source="local-site1",
                   blob=BlobRef(hash=bytes(32), size=70_000, chunk_size=65_536,
                                chunk_hashes=[bytes(32), b"\x01" * 32])),
    RemoteOperation(tree=KeyPath.parse("stations/ocpp-site1-1"), task="unlock-1",
                    operation=OperationKind.UNLOCK_CONNECTOR, evse=1, connector=1),
    EnergyAlert(site="site1", at_us=1_700_000_000_000_000,
                codes=[AlertCode.LOWER_LIMITS_EXCEED_SITE], text="shed 2 EVSEs",
                site_limit_w=40_000.0, lower_limits_w=48_300.0,
                evses=[AlertEvse(station="cs-3", evse=2, reason=AlertCode.LOWER_LIMITS_EXCEED_SITE,
                                 needed_w=4140.0, shortfall_wh=1200.0)]),
    S2Message(payload='{"message_type": "PEBC.Instruction"}'),
    FanOutRequest(site="local-site1", stations=["cs-site1-1", "cs-site1-2"],
                  item=PropertyValueWrite(writes=[WriteItem(path=KeyPath.parse("config/x"),
                                                            value=5)])),
    Pause(hold_ms=250),
    FanOutResponse(results=[FanOutResult(station="cs-site1-1", text="changed"),
                            FanOutResult(station="cs-site1-2", error=ErrorCode.TIMEOUT,
                                         text="no answer within 10 s")]),
]


def test_a_fan_out_item_addresses_each_stations_own_tree() -> None:
    item = TaskControl(tree=KeyPath.parse("stations/cs-1"), task="t", action=TaskAction.CANCEL)
    with pytest.raises(ValidationError, match="each station's own tree, not stations/cs-1"):
        FanOutRequest(item=item)
    with pytest.raises(ValidationError):  # only what a station handles rides in a fan-out
        FanOutRequest(item=PropertyValueRead(paths=[KeyPath.parse("a")]))  # type: ignore[arg-type]


def test_a_blob_ref_must_hash_every_chunk() -> None:
    with pytest.raises(ValidationError, match="make 2 chunks, but 1 chunk hashes"):
        BlobRef(hash=bytes(32), size=70_000, chunk_size=65_536, chunk_hashes=[bytes(32)])
    assert BlobRef(hash=bytes(32), size=0, chunk_hashes=[]).chunks == 0


def test_every_kind_has_an_example() -> None:
    assert {type(m).__name__ for m in EXAMPLES} == set(MESSAGE_TYPES)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_through_plain_data(message: object) -> None:
    plain = encode_message(message)  # type: ignore[arg-type]
    assert isinstance(plain["kind"], str)
    assert decode_message(plain) == message


@pytest.mark.parametrize(
    ("plain", "code", "field"),
    [
        ({"kind": "Teleport"}, ErrorCode.UNKNOWN_KIND, None),
        ([1, 2], ErrorCode.INVALID_MESSAGE, None),
        ({"kind": "PropertyValueRead", "paths": ["a/*"]}, ErrorCode.INVALID_MESSAGE, "paths.0"),
        ({"kind": "PropertyValueRead", "paths": [3]}, ErrorCode.INVALID_MESSAGE, "paths.0"),
        ({"kind": "PropertyValueRead", "paths": ["a"], "extra": 1},
         ErrorCode.INVALID_MESSAGE, "extra"),
        ({"kind": "Ack", "message_ids": [b"short"]}, ErrorCode.INVALID_MESSAGE, "message_ids.0"),
        ({"kind": "PropertyValueUpdate", "epoch": -1, "from_revision": 0, "to_revision": 1},
         ErrorCode.INVALID_MESSAGE, "epoch"),
        ({"kind": "ErrorReport", "code": "made_up", "text": "x"}, ErrorCode.INVALID_MESSAGE, "code"),
    ],
)
def test_bad_messages_are_rejected_precisely(plain: object, code: ErrorCode, field: str | None) -> None:
    with pytest.raises(ModelError) as info:
        decode_message(plain)
    assert info.value.code is code
    if field:
        assert field in [e["field"] for e in info.value.details["errors"]]


def test_error_reports_carry_code_path_and_details() -> None:
    tree = new_station_tree("cs-1")
    with pytest.raises(ModelError) as info:
        tree.write("evse/1/phases", 12)
    report = error_report(info.value, answers=MID)
    assert report.code is ErrorCode.OUT_OF_RANGE
    assert report.path == "evse/1/phases" and report.answers == MID
    assert report.details["max"] == 3 and "12" in report.text
    again = decode_message(encode_message(report))
    assert isinstance(again, ErrorReport)
    exc = again.to_exception()
    assert exc.code is ErrorCode.OUT_OF_RANGE and exc.path == "evse/1/phases"
    assert isinstance(ErrorReport(code=ErrorCode.UNKNOWN_PATH, text="x").to_exception(),
                      UnknownPathError)


def test_any_exception_becomes_a_report() -> None:
    try:
        KeyPath.parse("a//b")
    except KeyPathError as exc:
        report = error_report(exc)
    assert report.code is ErrorCode.INVALID_KEYPATH and report.details["position"] == 2
    report = error_report(ZeroDivisionError("division by zero"))
    assert report.code is ErrorCode.INTERNAL_ERROR and "ZeroDivisionError" in report.text


def test_update_from_a_commit_replays_on_a_copy() -> None:
    tree = new_station_tree("cs-1", epoch=3)
    from object_model import ObjectTree, PermissiveSchema

    copy = ObjectTree(PermissiveSchema(), epoch=3)
    copy.apply_changes(tree.changes_since(0))
    event = tree.apply([])
    event = tree.write("evse/1/session/energy_wh", 42.0)
    update = decode_message(encode_message(PropertyValueUpdate.from_commit(event)))
    assert isinstance(update, PropertyValueUpdate)
    copy.apply_changes(update.to_changes())
    assert copy.digest() == tree.digest()


def test_a_batch_applies_as_one_transaction() -> None:
    tree = new_station_tree("cs-1")
    before = (tree.revision, tree.digest())
    bad = Batch(items=[
        PropertyValueWrite(writes=[WriteItem(path=KeyPath.parse("evse/1/permissions/may_charge"),
                                             value=False)]),
        PropertyValueWrite(writes=[WriteItem(path=KeyPath.parse("evse/2/phases"), value=9)]),
    ])
    with pytest.raises(ModelError):
        tree.apply(bad.operations())
    assert (tree.revision, tree.digest()) == before
    good = Batch(items=[
        PropertyValueWrite(writes=[WriteItem(path=KeyPath.parse("evse/1/permissions/may_charge"),
                                             value=False)]),
        PropertyValueWrite(writes=[WriteItem(path=KeyPath.parse("evse/2/phases"), value=1),
                                   WriteItem(path=KeyPath.parse("evse/2/connector/1"),
                                             delete=True)]),
    ])
    event = tree.apply(good.operations())
    assert event.revision == before[0] + 1
    assert tree.get("evse/1/permissions/may_charge") is False
    assert "evse/2/connector/1/type" not in tree


def test_batches_do_not_nest() -> None:
    inner = encode_message(Batch(items=[Ack(message_ids=[MID])]))
    with pytest.raises(ModelError) as info:
        decode_message({"kind": "Batch", "items": [inner]})
    assert info.value.code is ErrorCode.INVALID_MESSAGE


def test_children_of_a_known_shape_travel_without_names() -> None:
    tree = new_station_tree("cs-1")
    children = tree.children("evse/1")
    full = pack_children(children, 2)
    assert full[0] == sorted(full[0]) and len(full[2]) == 2 * len(children)
    shaped = pack_children(list(reversed(children)), 2, children_shape(children))
    assert shaped[0] == [] and shaped[1] == b"" and shaped[2] == full[2]
    assert unpack_children(shaped, 2, children) == unpack_children(full, 2)
    other = children_shape([*children[1:], ("extra", True, bytes(16))])
    assert pack_children(children, 2, other) == full  # another shape: names come along
    with pytest.raises(ModelError, match="do not fit"):
        unpack_children(shaped, 2, children[1:])


def test_shapes_must_match_the_nodes_asked_for() -> None:
    with pytest.raises(ModelError, match="2 shapes for 1 nodes"):
        decode_message({"kind": "PropertyTreeDiscoveryRequest", "digests_of": [""],
                        "shapes": [bytes(4), bytes(4)]})


@pytest.mark.parametrize(("fields", "complaint"), [
    ({"operation": "unlock_connector", "evse": 1}, "names an evse"),
    ({"operation": "stop_charging"}, "transaction_id or an evse"),
    ({"operation": "trigger_message"}, "names the message"),
    ({"operation": "start_charging"}, "id_token"),
    ({"operation": "reset", "connector": 1}, "belongs to an evse"),
    ({"operation": "reset", "evse": 129}, "less than or equal"),
    ({"operation": "blow_up"}, "Input should be"),
])
def test_a_remote_operation_names_what_it_needs(fields: dict[str, object],
                                               complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        RemoteOperation(task="t-1", **fields)
