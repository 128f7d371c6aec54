"""A firmware image's version, and what the charger refuses to fetch."""

from __future__ import annotations

import hashlib

import pytest

from actors.testing.ocpp_charger.firmware import DownloadFailed, fetch, version_of


def test_an_image_names_its_version_in_its_header_or_by_its_digest() -> None:
    assert version_of(b"FW:4.5.6-rc1\nrest of the image") == "4.5.6-rc1"
    assert version_of(b"FW:" + b"9" * 80 + b"\n") == "9" * 50
    for anonymous in (b"no header", b"FW:\nempty version", b"FW:no newline"):
        assert version_of(anonymous) == f"sha-{hashlib.sha256(anonymous).hexdigest()[:8]}"


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://example.org/fw.bin",
                                      "data:,FW:1.0%0A", "no location at all"])
def test_only_http_and_https_locations_are_fetched(location: str) -> None:
    with pytest.raises(DownloadFailed):
        fetch(location)
