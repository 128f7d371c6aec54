"""A firmware update (L01): fetching the image, what it says it is, installing it.

``update`` is what an accepted UpdateFirmware sets going: FirmwareStatusNotification
DownloadScheduled (while ``retrieveDateTime`` is ahead), Downloading, Downloaded (or
DownloadFailed, after ``retries`` more tries ``retryInterval`` apart: then it stops),
InstallScheduled (while ``installDateTime`` is ahead), then, once no transaction runs,
Installing and InstallRebooting, and the charger reboots into the new version (reason
FirmwareUpdate); Installed follows once that boot is accepted. Signatures are not checked.

Only ``http://`` and ``https://`` locations are fetched (so a CSMS cannot have the charger read
``file://`` or follow a redirect elsewhere), in a thread; any status other than 200, an image
larger than the bound, or a timeout fails the download. The version an image carries: its
first line when it starts with ``FW:<version>\\n``, else ``sha-`` and the first 8 hex digits
of its SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import urllib.request
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.error import URLError
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from actors.testing.ocpp_charger.charger import SimulatedCharger

log = logging.getLogger("csms.ocpp.simulated")

MAX_IMAGE_BYTES = 16 * 1024 * 1024
FETCH_TIMEOUT_S = 30.0
HEADER = b"FW:"
MAX_VERSION_CHARS = 50  # BootNotification's firmwareVersion


class DownloadFailed(Exception):
    """The image could not be fetched (why, in the message)."""


def fetch(location: str, *, ssl_context: ssl.SSLContext | None = None,
          timeout_s: float = FETCH_TIMEOUT_S, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The image at ``location`` (blocking); ``DownloadFailed`` for anything but a 200 of at
    most ``max_bytes``."""
    if urlsplit(location).scheme not in ("http", "https"):
        raise DownloadFailed(f"not an http(s) location: {location[:80]!r}")
    opener = urllib.request.OpenerDirector()  # no file:, ftp:, data: or proxy handlers
    for handler in (urllib.request.HTTPHandler(),
                    urllib.request.HTTPSHandler(context=ssl_context),
                    urllib.request.HTTPRedirectHandler(),
                    urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    try:
        with opener.open(location, timeout=timeout_s) as response:
            if response.status != 200:
                raise DownloadFailed(f"HTTP {response.status}")
            image = response.read(max_bytes + 1)
    except (URLError, OSError, ValueError) as exc:  # HTTPError is a URLError
        raise DownloadFailed(str(exc)[:200]) from exc
    if len(image) > max_bytes:
        raise DownloadFailed(f"larger than {max_bytes} bytes")
    return image


def digest(image: bytes) -> str:
    """The image's SHA-256, in hex."""
    return hashlib.sha256(image).hexdigest()


def version_of(image: bytes) -> str:
    """The version the image carries (see the module docstring)."""
    if image.startswith(HEADER) and b"\n" in image:
        line = image[len(HEADER):image.index(b"\n")].decode("utf-8", "replace").strip()
        if line:
            return line[:MAX_VERSION_CHARS]
    return f"sha-{digest(image)[:8]}"


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def update(charger: SimulatedCharger, request: dict[str, Any]) -> None:
    """The update an UpdateFirmware ``request`` asked ``charger`` for (see the module
    docstring)."""
    charger.firmware_task = asyncio.current_task()
    request_id, image_at = request["requestId"], request["firmware"]
    retries, retry_s = int(request.get("retries", 0)), float(request.get("retryInterval", 1))
    retrieve = _moment(image_at["retrieveDateTime"])
    if retrieve > charger.now():
        await charger.firmware_notify("DownloadScheduled", request_id)
        await charger.clock.sleep((retrieve - charger.now()).total_seconds())
    for attempt in range(retries + 1):
        await charger.firmware_notify("Downloading", request_id)
        try:
            image = await asyncio.to_thread(fetch, image_at["location"],
                                            ssl_context=charger.ssl_context)
            break
        except DownloadFailed as exc:
            log.info("%s: firmware download failed: %s", charger.identity, exc)
            await charger.firmware_notify("DownloadFailed", request_id)
            if attempt == retries:
                return
            await charger.clock.sleep(max(1.0, retry_s))
    await charger.firmware_notify("Downloaded", request_id)
    if "installDateTime" in image_at and _moment(image_at["installDateTime"]) > charger.now():
        await charger.firmware_notify("InstallScheduled", request_id)
        await charger.clock.sleep(
            (_moment(image_at["installDateTime"]) - charger.now()).total_seconds())
    await charger.transactions_over()
    await charger.firmware_notify("Installing", request_id)
    charger.firmware_version, charger.firmware_sha256 = version_of(image), digest(image)
    charger.installed_request = request_id
    await charger.firmware_notify("InstallRebooting", request_id)
    charger.reboot("FirmwareUpdate")


__all__ = ["MAX_IMAGE_BYTES", "DownloadFailed", "digest", "fetch", "update", "version_of"]
