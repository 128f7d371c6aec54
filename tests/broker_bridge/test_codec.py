"""Envelope, frame and body codec: round trips, and strict bounded decoding of garbage."""

from __future__ import annotations

import contextlib
import os
import zlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_bridge.codec import (
    FIELDS,
    MAX_DEPTH,
    _check_depth,
    decode_body,
    decode_envelope,
    decode_frame,
    encode_body,
    encode_envelope,
    encode_frame,
)
from broker_bridge.envelope import ChunkInfo, Envelope, Priority
from broker_bridge.ids import MessageIds, id_time_ms
from keypath import KeyPath
from object_model import ErrorCode, ModelError
from object_model.messages import MESSAGE_TYPES
from tests.object_model.test_messages import EXAMPLES

addresses = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
u64 = st.integers(0, 2**64 - 1)
envelopes = st.builds(
    Envelope,
    id=st.binary(min_size=16, max_size=16),
    source=addresses,
    destination=st.one_of(addresses, addresses.map(lambda a: "group:" + a)),
    kind=st.sampled_from(sorted(MESSAGE_TYPES)),
    body=st.binary(max_size=200),
    priority=st.sampled_from(list(Priority)),
    timestamp_us=u64,
    expires_us=st.one_of(st.none(), u64),
    correlation=st.one_of(st.none(), st.binary(min_size=16, max_size=16)),
    reliable=st.booleans(),
    stream=st.one_of(st.none(), st.text(max_size=10)),
    stream_epoch=u64,
    seq=u64,
    base=u64,
    chunk=st.one_of(st.none(), st.builds(lambda i, extra, t: ChunkInfo(i, i + 1 + extra, t),
                                         st.integers(0, 50), st.integers(0, 50), u64)),
    signature=st.one_of(st.none(), st.binary(max_size=64)),
    encryption=st.one_of(st.none(), st.binary(max_size=64)),
    version=st.just(1),
)


@given(envelopes)
def test_envelopes_round_trip(env: Envelope) -> None:
    assert decode_envelope(encode_envelope(env)) == env


@given(st.lists(st.binary(max_size=50), min_size=1, max_size=5))
def test_frames_round_trip(items: list[bytes]) -> None:
    assert decode_frame(encode_frame(items)) == items


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_bodies_round_trip(message: object) -> None:
    assert decode_body(type(message).__name__, encode_body(message)) == message  # type: ignore[arg-type]


def test_unreliable_envelopes_are_compact() -> None:
    env = Envelope(id=bytes(16), source="cs-17", destination="local-site1", kind="Ack",
                   body=b"", timestamp_us=1_700_000_000_000_000)
    assert len(encode_envelope(env)) <= 60


def test_body_field_order_is_pinned() -> None:
    """Bodies are positional: reordering fields would silently break every peer."""
    assert [n for n, _ in FIELDS["PropertyValueUpdate"]] == [
        "tree", "epoch", "from_revision", "to_revision", "upserts", "deletes", "root_digest"]
    assert [n for n, _ in FIELDS["ErrorReport"]] == ["code", "answers", "path", "text", "details"]
    assert [n for n, _ in FIELDS["Ack"]] == ["message_ids"]
    assert [n for n, _ in FIELDS["PropertyValueWrite"]] == ["tree", "writes", "expected_revision"]


def test_batch_items_travel_as_compact_arrays_and_come_back_whole() -> None:
    from object_model.messages import Batch, PropertyTreeDiscoveryRequest

    batch = Batch(items=[PropertyTreeDiscoveryRequest(tree=KeyPath("stations", f"cs-{i}"),
                                                      digests_of=[KeyPath("evse", "1")],
                                                      digest_bytes=1, include_values=False)
                         for i in range(50)])
    body = encode_body(batch)
    assert decode_body("Batch", body) == batch
    assert b"digests_of" not in body and len(body) < 50 * 40  # no field names per item
    for bad in ([[]], [["PropertyTreeDiscoveryRequest"]], [[10, "", [[1]]]], [[999]]):
        with pytest.raises(ModelError, match="Batch item 0"):
            decode_body("Batch", msgpack.packb(["", bad]))


@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_decoders(data: bytes) -> None:
    for decode in (decode_frame, decode_envelope, lambda d: decode_body("PropertyValueUpdate", d)):
        try:
            decode(data)
        except ModelError as exc:
            assert exc.code in {ErrorCode.MALFORMED_MESSAGE, ErrorCode.INVALID_MESSAGE,
                                ErrorCode.UNSUPPORTED_VERSION, ErrorCode.UNKNOWN_KIND,
                                ErrorCode.LIMIT_EXCEEDED, ErrorCode.INVALID_KEYPATH}


@given(envelopes, st.data())
def test_truncated_envelopes_are_malformed(env: Envelope, data: st.DataObject) -> None:
    raw = encode_envelope(env)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(ModelError) as info:
        decode_envelope(raw[:cut])
    assert info.value.code is ErrorCode.MALFORMED_MESSAGE


GOOD = [1, bytes(16), "cs-1", "local-1", 1, 5, 8, b""]


@pytest.mark.parametrize(
    ("fields", "code", "knows_sender"),
    [
        ([2, *GOOD[1:]], ErrorCode.UNSUPPORTED_VERSION, True),
        ([*GOOD[:1], b"short", *GOOD[2:]], ErrorCode.MALFORMED_MESSAGE, True),
        ([*GOOD[:2], 42, *GOOD[3:]], ErrorCode.MALFORMED_MESSAGE, False),
        ([*GOOD[:3], "bad address!", *GOOD[4:]], ErrorCode.MALFORMED_MESSAGE, True),
        ([*GOOD[:4], 9, *GOOD[5:]], ErrorCode.MALFORMED_MESSAGE, True),
        ([*GOOD[:5], -1, *GOOD[6:]], ErrorCode.MALFORMED_MESSAGE, True),
        ([*GOOD[:6], 999, *GOOD[7:]], ErrorCode.UNKNOWN_KIND, True),
        ([*GOOD[:6], "Ack", *GOOD[7:]], ErrorCode.UNKNOWN_KIND, True),
        ([*GOOD[:7], "text body"], ErrorCode.MALFORMED_MESSAGE, True),
        ([*GOOD, "one"], ErrorCode.MALFORMED_MESSAGE, True),
        ([*GOOD, 1, None, b"short"], ErrorCode.MALFORMED_MESSAGE, True),
        ([*GOOD, 1, None, None, "s", 1, 2, 3, [5, 2, 10]], ErrorCode.MALFORMED_MESSAGE, True),
        ([*GOOD, 1, None, None, "x" * 100], ErrorCode.MALFORMED_MESSAGE, True),
        (GOOD[:5], ErrorCode.MALFORMED_MESSAGE, False),
        ({"not": "an array"}, ErrorCode.MALFORMED_MESSAGE, False),
    ],
)
def test_wrong_header_fields_are_named(fields: object, code: ErrorCode, knows_sender: bool
                                       ) -> None:
    with pytest.raises(ModelError) as info:
        decode_envelope(msgpack.packb(fields, use_bin_type=True))
    assert info.value.code is code
    assert ("source" in info.value.details) is knows_sender


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\xdb\xff\xff\xff\xff", ErrorCode.MALFORMED_MESSAGE),  # a 4 GB string, 5 bytes sent
        (b"\xc6\xff\xff\xff\xff" + b"x" * 10, ErrorCode.MALFORMED_MESSAGE),  # a 4 GB bin
        (b"\xdd\xff\xff\xff\xff", ErrorCode.MALFORMED_MESSAGE),  # a 4-billion-item array
        (b"\x91" * 100_000, ErrorCode.MALFORMED_MESSAGE),  # absurd nesting
        (b"\xc7\x01\x05a", ErrorCode.MALFORMED_MESSAGE),  # msgpack extension types
        (b"\x92\xa1a\xa1b", ErrorCode.MALFORMED_MESSAGE),
        (b"x" * 300_000, ErrorCode.MESSAGE_TOO_LARGE),
    ],
)
def test_hostile_sizes_are_refused_without_allocating(data: bytes, code: ErrorCode) -> None:
    with pytest.raises(ModelError) as info:
        decode_envelope(data)
    assert info.value.code is code


def test_bodies_are_checked_for_depth_shape_and_schema() -> None:
    deep: list = []
    for _ in range(40):
        deep = [deep]
    bad = msgpack.packb(["", 1, 0, 1, [["a", 1, deep]]])
    with pytest.raises(ModelError) as info:
        decode_body("PropertyValueUpdate", bad)
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED
    with pytest.raises(ModelError) as info:
        decode_body("PropertyValueUpdate", msgpack.packb({"epoch": 1}))
    assert info.value.code is ErrorCode.INVALID_MESSAGE
    with pytest.raises(ModelError) as info:
        decode_body("PropertyValueUpdate", msgpack.packb(["", "one", 0, 1]))
    assert info.value.code is ErrorCode.INVALID_MESSAGE
    with pytest.raises(ModelError) as info:
        decode_body("Ack", msgpack.packb([[bytes(16)], 1, 2]))
    assert info.value.code is ErrorCode.INVALID_MESSAGE
    with pytest.raises(ModelError) as info:
        decode_body("Nope", b"\x90")
    assert info.value.code is ErrorCode.UNKNOWN_KIND


def test_frames_reject_wrong_versions_and_items() -> None:
    for data, code in ((msgpack.packb([9, b"x"]), ErrorCode.UNSUPPORTED_VERSION),
                       (msgpack.packb([1, "text"]), ErrorCode.MALFORMED_MESSAGE),
                       (msgpack.packb([]), ErrorCode.MALFORMED_MESSAGE)):
        with pytest.raises(ModelError) as info:
            decode_frame(data)
        assert info.value.code is code


def test_message_ids_are_unique_and_time_ordered() -> None:
    gen = MessageIds()
    ids = [gen.new(1_700_000_000_000_000 + i // 7) for i in range(200_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert id_time_ms(ids[0]) == 1_700_000_000_000
    back_in_time = gen.new(1_600_000_000_000_000)  # the clock jumped back: order still holds
    assert back_in_time > ids[-1]
    other = MessageIds()
    assert other.new(1_700_000_000_000_000) != MessageIds().new(1_700_000_000_000_000)


def test_the_random_part_of_every_id_is_fresh() -> None:
    """An id quoted in an ErrorReport or an Ack must not give away the next one (a forged
    acknowledgement would then be cheap): the last 64 bits are new for every id, also
    within one millisecond and across the generator's refills of random bytes."""
    gen = MessageIds()
    ids = [gen.new(1_700_000_000_000_000) for _ in range(5_000)]
    tails = [message_id[8:] for message_id in ids]
    assert len(set(tails)) == len(tails)
    assert ids == sorted(ids)  # still in creation order, by the time and counter
    bits = sum(bin(int.from_bytes(t, "big")).count("1") for t in tails) / (64 * len(tails))
    assert 0.45 < bits < 0.55


def test_compressed_frames_shrink_repetitive_batches_and_round_trip() -> None:
    env = Envelope(id=bytes(16), source="cs-17", destination="local-site1",
                   kind="PropertyValueUpdate", body=b"\x94\xa0\x01\x00\x01" * 10)
    items = [encode_envelope(env._replace(id=i.to_bytes(16, "big"))) for i in range(200)]
    plain, packed = encode_frame(items), encode_frame(items, compress=True)
    assert len(packed) * 4 < len(plain)
    assert decode_frame(packed) == decode_frame(plain) == items
    noise = [os.urandom(100) for _ in range(50)]
    assert encode_frame(noise, compress=True) == encode_frame(noise)  # not worth it: sent plain


def test_compressed_frames_are_bounded() -> None:
    bomb = msgpack.packb([2, zlib.compress(b"\x00" * 10_000_000, 9)])
    assert len(bomb) < 20_000
    with pytest.raises(ModelError) as info:
        decode_frame(bomb)
    assert info.value.code is ErrorCode.MESSAGE_TOO_LARGE
    for data in (msgpack.packb([2, b"not zlib"]), msgpack.packb([2, "text"]),
                 msgpack.packb([2, zlib.compress(b"\x93")]),
                 msgpack.packb([2, zlib.compress(msgpack.packb([1, 2]))])):
        with pytest.raises(ModelError) as info:
            decode_frame(data)
        assert info.value.code is ErrorCode.MALFORMED_MESSAGE



@pytest.mark.parametrize("container", ["list", "map"])
def test_bodies_nested_up_to_the_limit_pass_and_deeper_ones_are_refused(container: str) -> None:
    def nest(levels: int) -> object:
        value: object = [1, "a", b"b"]
        for _ in range(levels - 1):
            value = [2, value, "x"] if container == "list" else {"x": 3, "y": value}
        return value

    _check_depth(nest(MAX_DEPTH), "body")
    with pytest.raises(ModelError) as exc:
        _check_depth([4, nest(MAX_DEPTH)], "body")
    assert exc.value.code is ErrorCode.LIMIT_EXCEEDED


# -- decoders raise only our own errors (issue 14, hole 1) -------------------------------------

_plain = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True) | st.text(max_size=40) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30)


def _only_model_errors(decode, data: bytes) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(ModelError):  # anything else escaping is the bug
        decode(data)


@given(_plain)
def test_any_msgpack_value_decodes_or_raises_a_model_error(value: object) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    _only_model_errors(decode_frame, data)
    _only_model_errors(decode_envelope, data)
    for kind in ("Ack", "Batch", "PropertyTreeDiscoveryResponse", "PropertyValueWrite"):
        _only_model_errors(lambda d, k=kind: decode_body(k, d), data)


_VALID_FIELDS = [1, bytes(16), "a", "b", 2, 1, 3, msgpack.packb([1]), 1, None, bytes(16), "s",
                 0, 0, 0, [0, 2, 10], None, None]


@given(st.integers(min_value=0, max_value=len(_VALID_FIELDS) - 1), _plain,
       st.integers(min_value=8, max_value=len(_VALID_FIELDS)))
def test_any_field_of_an_envelope_may_hold_anything(index: int, value: object, length: int
                                                    ) -> None:
    fields = list(_VALID_FIELDS[:length])
    if index < length:
        fields[index] = value
    data = msgpack.packb(fields, use_bin_type=True)
    _only_model_errors(decode_envelope, data)
    _only_model_errors(decode_frame, msgpack.packb([1, data], use_bin_type=True))


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_a_model_error(data: bytes) -> None:
    _only_model_errors(decode_frame, data)
    _only_model_errors(decode_envelope, data)
    _only_model_errors(lambda d: decode_body("Batch", d), data)
