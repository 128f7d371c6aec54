"""The gateway's admission parts on their own: what identity a request path names, and what
a basic ``Authorization`` header says."""

from __future__ import annotations

import base64
from http import HTTPStatus

import pytest
from websockets.datastructures import Headers

from actors.station.ocpp.downloads import Downloads
from actors.station.ocpp.gateway import FailedLogins, basic_auth, identity_of, same_secret


@pytest.mark.parametrize(("path", "identity"), [
    ("/ocpp/cs-1", "cs-1"),
    ("/ocpp/cs%2D1", "cs-1"),  # percent-decoded (Part 4 §3.1.1)
    ("/ocpp/cs-1?x=1", "cs-1"),
    ("/ocpp/", None),
    ("/ocpp", None),
    ("/other/cs-1", None),
    ("/ocpp/a:b", None),  # no colon: it would break basic auth
    ("/ocpp/a%2Fb", None),  # an encoded slash is no identity either
    ("/ocpp/" + "x" * 49, None),  # at most 48 characters
    ("/ocpp/" + "x" * 48, "x" * 48),
])
def test_the_identity_is_the_last_segment_decoded_and_bounded(path: str,
                                                              identity: str | None) -> None:
    assert identity_of(path) == identity


def test_basic_auth_is_read_or_empty_never_an_error() -> None:
    def header(value: str) -> Headers:
        return Headers({"Authorization": value})

    token = base64.b64encode(b"cs-1:pass:word").decode()
    assert basic_auth(header(f"Basic {token}")) == ("cs-1", "pass:word")
    assert basic_auth(header(f"basic {token}")) == ("cs-1", "pass:word")
    for value in ("Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"\xff").decode(), ""):
        assert basic_auth(header(value)) == ("", "")
    assert basic_auth(Headers()) == ("", "")


def test_a_host_that_keeps_failing_logins_is_held_off_for_the_window() -> None:
    failures = FailedLogins(limit=3, window_s=60.0, hosts=2)
    for _ in range(3):
        assert not failures.blocked("10.0.0.9", 100.0)
        failures.failed("10.0.0.9", 100.0)
    assert failures.blocked("10.0.0.9", 159.0)  # within the minute: no more guesses
    assert not failures.blocked("10.0.0.7", 159.0)  # another host is not held off
    assert not failures.blocked("10.0.0.9", 160.0)  # the window passed
    for host in ("a", "b", "c"):  # bounded: the oldest host is forgotten
        failures.failed(host, 200.0)
    assert set(failures._seen) == {"b", "c"}


def test_passwords_compare_whatever_their_length() -> None:
    assert same_secret("correct-horse-battery", "correct-horse-battery")
    assert not same_secret("correct-horse-batter", "correct-horse-battery")
    assert not same_secret("", "correct-horse-battery")


async def test_a_firmware_download_is_served_by_its_token_only_while_offered() -> None:
    now = [1000.0]
    downloads = Downloads(lambda: now[0])
    downloads.base = "https://gw.site1:9000"
    image = bytes(range(256)) * 4

    async def read() -> bytes:
        return image

    url, token = downloads.offer("ocpp-1", read, ttl_s=60.0)
    assert url.startswith("https://gw.site1:9000/firmware/") and len(token) >= 20
    whole = await downloads.serve(f"/firmware/{token}", {})
    assert whole.status == HTTPStatus.OK and whole.body == image
    part = await downloads.serve(f"/firmware/{token}", {"Range": "bytes=1000-"})
    assert part.status == HTTPStatus.PARTIAL_CONTENT and part.body == image[1000:]
    assert part.headers["Content-Range"] == f"bytes 1000-1023/{len(image)}"
    outside = await downloads.serve(f"/firmware/{token}", {"Range": "bytes=5000-"})
    assert outside.status == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
    assert (await downloads.serve("/firmware/guessed", {})).status == HTTPStatus.NOT_FOUND
    assert downloads.fetches(token) == 2
    now[0] += 61  # expired
    assert (await downloads.serve(f"/firmware/{token}", {})).status == HTTPStatus.NOT_FOUND
    _, token2 = downloads.offer("ocpp-1", read)
    downloads.withdraw(token2)
    assert (await downloads.serve(f"/firmware/{token2}", {})).status == HTTPStatus.NOT_FOUND
