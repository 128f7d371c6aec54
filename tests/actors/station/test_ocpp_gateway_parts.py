"""The gateway's admission parts on their own: what identity a request path names, and what
a basic ``Authorization`` header says."""

from __future__ import annotations

import base64

import pytest
from websockets.datastructures import Headers

from actors.station.ocpp.gateway import basic_auth, identity_of


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
