"""What the lab asks of a CSMS as an operator would, the same way on both architectures."""

from __future__ import annotations

from collections.abc import Sequence

from actors.app.hierarchy import Hierarchy
from actors.csms.cloud import CloudCsms
from actors.logic.firmware_trust import signed_update
from keypath import KeyPath


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


__all__ = ["update_firmware"]
