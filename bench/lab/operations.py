"""What the lab asks of a CSMS as an operator would, the same way on both architectures."""

from __future__ import annotations

from collections.abc import Sequence

from actors.app.hierarchy import Hierarchy
from actors.csms.cloud import CloudCsms
from actors.logic.firmware_trust import signed_update
from keypath import KeyPath
from object_model.messages import PropertyValueWrite, WriteItem

LIMIT = "evse/1/permissions/max_power_w"  # a control every station obeys (OCPP: a profile)


async def update_firmware(h: Hierarchy, cloud: CloudCsms, image: bytes, version: str,
                          task: str, targets: Sequence[str]) -> None:
    """Each station of ``targets`` told, through the cloud CSMS, to install ``image`` (held
    at the cloud, signed as the stations' manufacturer would: ``h.manufacturer``)."""
    ref = await cloud.blobs.store.put(image)
    operator = await h.operator()
    for address in targets:
        copy = cloud.copies.replicas[f"stations/{address}"].tree
        await operator.request("cloud", signed_update(
            h.manufacturer, tree=KeyPath("stations", address), task=task, blob=ref,
            version=version, counter=1, vendor=str(copy.get("identity/vendor_name")),
            model=str(copy.get("identity/model"))), timeout=30)


async def set_limit(h: Hierarchy, address: str, watts: float, timeout: float = 60) -> None:
    """Station ``address``'s EVSE 1 limited to ``watts``, through the cloud CSMS; returns
    once the station took it (an OCPP charger: answered its SetChargingProfile), raises with
    the station's refusal or when no answer came within ``timeout``."""
    operator = await h.operator()
    await operator.request("cloud", PropertyValueWrite(
        tree=KeyPath("stations", address), writes=[WriteItem(path=KeyPath.parse(LIMIT),
                                                             value=float(watts))]),
        timeout=timeout)


__all__ = ["LIMIT", "set_limit", "update_firmware"]
