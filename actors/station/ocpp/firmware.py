"""A firmware update of an OCPP charger (``OcppCharger.install``): the verified image is
offered at a one-time URL of the gateway's download server (``actors.station.ocpp.downloads``),
the charger is sent UpdateFirmware, and the install is done when the charger says Installed or
boots with reason FirmwareUpdate; any failure status fails it. Chargers skip and repeat
statuses: the progress only follows what comes."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from actors.logic.ocpp.operations import refused_by
from actors.logic.ocpp.profiles import rfc3339
from actors.logic.ocpp.rpc import printable
from actors.station.hardware import FirmwareImage, Progress
from object_model.errors import InvalidStateError, UnsupportedOperationError

if TYPE_CHECKING:
    from actors.station.ocpp.charger import OcppCharger

log = logging.getLogger("csms.ocpp")

INSTALL_TIMEOUT_S = 1800.0  # download, install, reboot
STEPS = {"Downloading": 10.0, "DownloadScheduled": 5.0, "DownloadPaused": 10.0,
         "Downloaded": 40.0, "SignatureVerified": 50.0, "InstallScheduled": 55.0,
         "Installing": 60.0, "InstallRebooting": 80.0, "Idle": 0.0}
"""FirmwareStatusNotification statuses on the way, as percent of the install; any other but
Installed is a failure (DownloadFailed, InvalidSignature, InstallVerificationFailed...)."""


async def install(charger: OcppCharger, image: FirmwareImage, progress: Progress) -> str:
    """Offer the image at a one-time URL, send UpdateFirmware, follow its statuses."""
    if charger.downloads is None:
        raise UnsupportedOperationError(f"{charger.identity}: this gateway serves no "
                                        "firmware downloads")
    url, token = charger.downloads.offer(charger.identity, image.blob, image.chunk)
    request_id = charger.next_id()
    statuses: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def status_of(action: str, payload: dict[str, Any]) -> str | None:
        if (action == "FirmwareStatusNotification" and payload.get("requestId") ==
                request_id) or (action == "BootNotification" and
                                payload.get("reason") == "FirmwareUpdate"):
            statuses.put_nowait((action, payload))
        return None  # never done: the install reads the queue

    charger.sightings.append((status_of, asyncio.get_running_loop().create_future()))
    try:
        answer = await charger.link.call("UpdateFirmware", {
            "requestId": request_id, "firmware": {
                "location": url, "retrieveDateTime": rfc3339(charger.clock.now_us())}})
        if answer.get("status") not in ("Accepted", "AcceptedCanceled"):
            raise refused_by(charger.identity, "UpdateFirmware", answer)
        progress(0.0, f"the charger downloads {image.version}")
        async with asyncio.timeout(INSTALL_TIMEOUT_S):
            return await _installed(charger, image, statuses, progress)
    except TimeoutError:
        raise InvalidStateError(f"{charger.identity} did not finish installing "
                                f"{image.version} within {INSTALL_TIMEOUT_S:g} s") from None
    finally:
        charger.downloads.withdraw(token)
        charger.sightings = [(s, f) for s, f in charger.sightings if s is not status_of]


async def _installed(charger: OcppCharger, image: FirmwareImage,
                     statuses: asyncio.Queue[tuple[str, dict[str, Any]]],
                     progress: Progress) -> str:
    booted: str | None = None
    while True:
        action, payload = await statuses.get()
        if action == "BootNotification":
            booted = printable(payload["chargingStation"].get("firmwareVersion", "")) \
                or image.version
            progress(90.0, f"rebooted with {booted}")
            continue
        status = payload["status"]
        if status == "Installed":
            return booted or image.version
        if status not in STEPS:
            raise InvalidStateError(f"{charger.identity}: firmware update {status}",
                                    details={"ocpp_status": status})
        progress(STEPS[status], f"the charger says {status}")


__all__ = ["INSTALL_TIMEOUT_S", "STEPS", "install"]
