"""Which addresses a lab uses, and how labs running at once share 198.18.0.0/15.

198.18.0.0/15 is reserved for benchmarks (RFC 2544). It is cut into `SLOTS` blocks, one per
running lab: block ``b`` (base ``B = 64 * b``) holds the cloud block ``198.18.B.0/24`` (the
cloud's address is ``198.18.B.1``), the uplink of site ``k`` ``198.18.(B+k).0/30`` (cloud end
``.1``, router ``.2``) and its LAN ``198.19.(B+k).0/24`` (router ``.1``, site ``.2``), for k from
1 to `SITES_PER_LAB`.

Two locks keep labs apart, both ``flock``s that the kernel releases when their holder dies: one
per prefix, so that a lab never sweeps away the namespaces of a live lab with its prefix, and one
per block. A free block is also checked unused in the root namespace: a detached lab (the CLI's
``up``) keeps its addresses without holding the lock.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bench.netlab.commands import NetlabError, run

LAB_NET = ipaddress.ip_network("198.18.0.0/15")
SLOTS = 4
SITES_PER_LAB = 63
LOCK_DIR = Path("/run/lock/bench-netlab")
_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class SiteAddresses:
    lan: ipaddress.IPv4Network
    site: str  # where the site's servers bind
    router_lan: str
    uplink_cloud: str  # the root namespace's end of the uplink
    uplink_router: str


@dataclass(frozen=True, slots=True)
class AddressBlock:
    """The addresses of one lab."""

    slot: int

    @property
    def _base(self) -> int:
        return 64 * self.slot

    @property
    def cloud_net(self) -> str:
        return f"198.18.{self._base}.0/24"

    @property
    def cloud_address(self) -> str:
        return f"198.18.{self._base}.1"

    @property
    def networks(self) -> list[ipaddress.IPv4Network]:
        return [ipaddress.IPv4Network(f"198.{octet}.{self._base}.0/18") for octet in (18, 19)]

    def site(self, index: int) -> SiteAddresses:
        if not 1 <= index <= SITES_PER_LAB:
            raise ValueError(f"site index is 1 to {SITES_PER_LAB}, not {index}")
        third = self._base + index
        return SiteAddresses(lan=ipaddress.IPv4Network(f"198.19.{third}.0/24"),
                             site=f"198.19.{third}.2", router_lan=f"198.19.{third}.1",
                             uplink_cloud=f"198.18.{third}.1", uplink_router=f"198.18.{third}.2")


class Lock:
    """An exclusive ``flock`` on a file under `LOCK_DIR`, naming its holder inside."""

    def __init__(self, name: str) -> None:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        self.path = LOCK_DIR / f"{name}.lock"
        self._file: TextIO | None = None

    def try_acquire(self, holder: str) -> bool:
        file = open(self.path, "a+")  # noqa: SIM115 -- stays open while the lock is held
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        file.seek(0)
        file.truncate()
        file.write(f"{holder}\n")
        file.flush()
        self._file = file
        return True

    def holder(self) -> str:
        return self.path.read_text().strip() if self.path.exists() else ""

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def lock_prefix(prefix: str, timeout: float) -> Lock:
    """Wait until no live lab uses ``prefix`` and hold it."""
    lock = Lock(f"prefix-{prefix}")
    deadline = time.monotonic() + timeout
    while not lock.try_acquire(_holder(prefix)):
        if time.monotonic() > deadline:
            raise NetlabError(f"a lab with prefix {prefix!r} is still running ({lock.holder()}) "
                              f"after {timeout} s of waiting")
        time.sleep(_POLL_S)
    return lock


def claim_block(prefix: str, timeout: float) -> tuple[AddressBlock, Lock]:
    """Wait for a block no live lab holds and nothing in the root namespace uses; hold it."""
    deadline = time.monotonic() + timeout
    while True:
        in_use = []
        for slot in range(SLOTS):
            block, lock = AddressBlock(slot), Lock(f"block-{slot}")
            if not lock.try_acquire(_holder(prefix)):
                in_use.append(f"block {slot}: held by {lock.holder()}")
                continue
            if not (used := _used_in(block)):
                return block, lock
            lock.release()
            in_use.append(f"block {slot}: in use (a lab left up? "
                          f"`python -m bench.netlab down --prefix P`):\n  " + "\n  ".join(used))
        if time.monotonic() > deadline:
            raise NetlabError(f"no free address block in {LAB_NET} after {timeout} s:\n"
                              + "\n".join(in_use))
        time.sleep(_POLL_S)


def _used_in(block: AddressBlock) -> list[str]:
    """Addresses and routes of the root namespace inside ``block``."""
    def inside(word: str) -> bool:
        return any(ipaddress.ip_interface(word).ip in net for net in block.networks)

    used = [line for line in run(["ip", "-o", "-4", "addr", "show"]).splitlines()
            if any(inside(word) for word in line.split() if re.fullmatch(r"[\d.]+/\d+", word))]
    # "ip route show PREFIX" lists only that exact prefix; "root PREFIX" lists all inside it.
    for net in block.networks:
        used += run(["ip", "route", "show", "table", "all", "root", str(net)]).splitlines()
    return used


def _holder(prefix: str) -> str:
    return f"pid {os.getpid()} prefix {prefix}"
