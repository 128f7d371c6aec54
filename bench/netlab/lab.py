"""The lab: sites in network namespaces, each behind a router, joined to the cloud by an uplink.

    root namespace (cloud)            <prefix>r<k> (router)            <prefix>s<k> (site)
    <prefix>cloud 198.18.0.1 ... <prefix>c<k> 198.18.k.1 == up0 198.18.k.2
                                                            lan0 198.19.k.1 == wan0 198.19.k.2

(addresses of the first lab; `addressing` gives each running lab its own block of
198.18.0.0/15). The cloud's address sits on a veth of its own in the root namespace, so cloud
servers bind to it whatever sites exist. A site reaches the cloud block through its router and
nothing else (no default route); only the router forwards; IPv6 is off in the namespaces so that
router solicitations stay out of the counters.

Teardown stops the lab's processes by their recorded PIDs, kills anything still inside its
namespaces, deletes the namespaces (the root ends of their veths and the routes through them
go with them) and the cloud's veth; a lab sweeps whatever a crashed run with its prefix left.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from bench.netlab.addressing import Lock, claim_block, lock_prefix
from bench.netlab.commands import NetlabError, run
from bench.netlab.processes import Process, ProcessTable
from bench.netlab.profile import LinkProfile
from bench.netlab.router import LAN, WAN, Outage, Router, UplinkCounters

SITE_SIDE = "wan0"
_PREFIX = re.compile(r"[a-z][a-z0-9]{0,7}")
_TEARDOWN_S = 10.0


@dataclass(frozen=True, slots=True)
class TcpConnection:
    """An established TCP connection seen from the site: its two ends as ``address:port``."""

    local: str
    peer: str


class Site:
    """One site: its namespace, its router and the uplink between the router and the cloud."""

    def __init__(self, lab: Lab, index: int) -> None:
        self.lab = lab
        self.index = index
        self.namespace = f"{lab.prefix}s{index}"
        self.router_namespace = f"{lab.prefix}r{index}"
        self.uplink_device = f"{lab.prefix}c{index}"  # the root namespace's end of the uplink
        addresses = lab.block.site(index)
        self.lan = addresses.lan
        self.address = addresses.site  # where the site's servers bind
        self.router_lan_address = addresses.router_lan
        self.uplink_cloud_address = addresses.uplink_cloud
        self.uplink_router_address = addresses.uplink_router
        self.router = Router(self.router_namespace, cloud_net=lab.block.cloud_net,
                             gateway=self.uplink_cloud_address, processes=lab.processes,
                             seed=f"{lab.seed}:site{index}", delayer_cpu=lab.delayer_cpu)

    def __repr__(self) -> str:
        return f"Site({self.index}, {self.namespace}, {self.address})"

    @property
    def profile(self) -> LinkProfile:
        return self.router.profile

    def spawn(self, argv: Sequence[str], name: str | None = None, *,
              stdin: bool = False) -> Process:
        """Start ``argv`` in the site's namespace; stopped when the lab closes."""
        return self.lab.processes.spawn(argv, netns=self.namespace,
                                        name=name or f"{self.namespace}-{Path(argv[0]).name}",
                                        stdin=stdin)

    def run(self, argv: Sequence[str]) -> str:
        """Run a short command in the site's namespace; returns its output."""
        return run(argv, netns=self.namespace)

    def set_profile(self, profile: LinkProfile) -> None:
        """Change the uplink's rates, buffer, loss, delay and jitter, from now on."""
        self.router.apply(profile)

    def outage(self, kind: Outage) -> None:
        """Cut the uplink: ``drop`` (dead zone), ``reject`` (TCP reset), ``down`` (link down)."""
        self.router.outage(kind)

    def restore(self) -> None:
        """End the outage; the profile still applies."""
        self.router.restore()

    def counters(self) -> UplinkCounters:
        """Bytes, packets and drops through the uplink, per direction."""
        return self.router.counters()

    @property
    def delayer(self) -> Process | None:
        """The router's delayer process, while the profile delays."""
        return self.router.delayer

    def uplink_tcp_connections(self) -> list[TcpConnection]:
        """Established TCP connections between the site and anything beyond its LAN.

        Counted from the site's sockets (``ss``), whichever side opened them: every one of them
        crosses the uplink, since the router is the site's only way out.
        """
        connections = []
        for line in self.run(["ss", "-H", "-t", "-n", "state", "established"]).splitlines():
            local, peer = line.split()[2:4]
            peer_ip = ipaddress.ip_address(peer.rsplit(":", 1)[0].strip("[]"))
            if peer_ip not in self.lan and not peer_ip.is_loopback:
                connections.append(TcpConnection(local, peer))
        return connections

    def _build(self, profile: LinkProfile) -> None:
        prefix_len = 30
        for name in (self.router_namespace, self.namespace):
            _add_namespace(name)
        run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], netns=self.router_namespace)
        run(["ip", "link", "add", "name", self.uplink_device, "type", "veth", "peer", "name", WAN,
             "netns", self.router_namespace])
        run(["ip", "-n", self.router_namespace, "link", "add", "name", LAN, "type", "veth", "peer",
             "name", SITE_SIDE, "netns", self.namespace])
        _disable_ipv6_on(self.uplink_device)
        interfaces: list[tuple[str | None, str, str]] = [
            (None, self.uplink_device, f"{self.uplink_cloud_address}/{prefix_len}"),
            (self.router_namespace, WAN, f"{self.uplink_router_address}/{prefix_len}"),
            (self.router_namespace, LAN, f"{self.router_lan_address}/24"),
            (self.namespace, SITE_SIDE, f"{self.address}/24"),
        ]
        for netns, device, address in interfaces:
            _configure_interface(netns, device, address)
        # From the cloud, a site is reached from the cloud's address (the site routes only the
        # cloud block back), not from the uplink's own.
        run(["ip", "route", "add", str(self.lan), "via", self.uplink_router_address, "dev",
             self.uplink_device, "src", self.lab.cloud_address])
        run(["ip", "route", "add", self.lab.block.cloud_net, "via", self.router_lan_address,
             "dev", SITE_SIDE], netns=self.namespace)
        self.router.install()
        self.router.apply(profile)


class Lab:
    """Sites with impaired uplinks to a cloud in the root namespace; a context manager.

    ``Lab("nl")`` waits (up to ``lock_timeout`` s) until no other live lab has its prefix,
    removes what an earlier run with that prefix left, claims a block of 198.18.0.0/15 that
    nothing else uses (`addressing`: up to four labs run at once) and gives the cloud its
    address. `close` (or leaving the ``with`` block, by an exception or Ctrl-C too) tears
    everything down. ``seed`` seeds the delayers' jitter; ``delayer_cpu`` pins every delayer to
    that CPU; ``log_dir`` keeps every process's output (a temporary directory removed at close
    when not given).
    """

    def __init__(self, prefix: str = "nl", *, seed: int = 0, log_dir: Path | None = None,
                 delayer_cpu: int | None = None, lock_timeout: float = 120.0) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"prefix {prefix!r}: 1 to 8 lower-case letters and digits, starting "
                             "with a letter (interface names have 15 characters)")
        self.prefix = prefix
        self.seed = seed
        self.delayer_cpu = delayer_cpu
        self.sites: dict[int, Site] = {}
        self._own_log_dir = log_dir is None
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"netlab-{prefix}-")) if log_dir is None \
            else log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes = ProcessTable(self.log_dir)
        self._closed = False
        self._locks: list[Lock] = [lock_prefix(prefix, lock_timeout)]
        atexit.register(self.close)
        try:
            sweep(prefix)
            self.block, block_lock = claim_block(prefix, lock_timeout)
            self._locks.append(block_lock)
            self._add_cloud()
        except BaseException:
            self.close()
            raise

    @property
    def cloud_address(self) -> str:
        """Where cloud servers bind, in the root namespace; every site routes to it."""
        return self.block.cloud_address

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def add_site(self, index: int, profile: LinkProfile | None = None) -> Site:
        """Build site ``index`` (1 to 63) with its router and uplink, impaired by ``profile``."""
        if index in self.sites:
            raise NetlabError(f"site {index} exists already")
        site = Site(self, index)
        self.sites[index] = site
        site._build(profile or LinkProfile())
        return site

    def spawn(self, argv: Sequence[str], name: str | None = None, *,
              stdin: bool = False) -> Process:
        """Start ``argv`` in the root namespace (the cloud's side); stopped when the lab closes."""
        return self.processes.spawn(argv, netns=None, stdin=stdin,
                                    name=name or f"{self.prefix}-cloud-{Path(argv[0]).name}")

    def close(self) -> None:
        """Stop the lab's processes and remove its namespaces, links and routes; idempotent.

        Raises `NetlabError` if something is left behind all the same.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        with _interrupts_deferred():
            try:
                self.processes.stop_all()
                sweep(self.prefix)
            finally:
                self._release_locks()
                if self._own_log_dir:
                    shutil.rmtree(self.log_dir, ignore_errors=True)

    def detach(self) -> None:
        """Leave everything running and let go of it (the CLI's ``up``); `sweep` removes it."""
        self._closed = True
        atexit.unregister(self.close)
        self._release_locks()

    def _release_locks(self) -> None:
        for lock in self._locks:
            lock.release()

    def _add_cloud(self) -> None:
        device, peer = _cloud_devices(self.prefix)
        run(["ip", "link", "add", "name", device, "type", "veth", "peer", "name", peer])
        for end in (device, peer):
            _disable_ipv6_on(end)
        run(["ip", "addr", "add", f"{self.cloud_address}/32", "dev", device])
        for end in (device, peer):
            run(["ip", "link", "set", end, "up"])


def sweep(prefix: str) -> None:
    """Remove every namespace and root link a lab with ``prefix`` made, and their processes.

    Raises `NetlabError` when something is still there after a few seconds.
    """
    namespace = re.compile(rf"{prefix}[sr]\d+")
    for name in _namespaces():
        if namespace.fullmatch(name):
            for pid in run(["ip", "netns", "pids", name], check=False).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            run(["ip", "netns", "del", name])
    for device in _root_links(prefix):
        run(["ip", "link", "del", device], check=False)  # its peer may have taken it along
    # A deleted namespace is dismantled by the kernel in the background: wait for its veths.
    deadline = time.monotonic() + _TEARDOWN_S
    while left := [n for n in _namespaces() if namespace.fullmatch(n)] + _root_links(prefix):
        if time.monotonic() > deadline:
            raise NetlabError(f"lab {prefix!r}: still there {_TEARDOWN_S} s after teardown: "
                              f"{', '.join(left)}")
        time.sleep(0.05)


def _namespaces() -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line]


def _root_links(prefix: str) -> list[str]:
    pattern = re.compile(rf"{prefix}(c\d+|cloud|cloudp)")
    names = [line.split(":")[1].strip().split("@")[0]
             for line in run(["ip", "-o", "link", "show"]).splitlines()]
    return [name for name in names if pattern.fullmatch(name)]


def _cloud_devices(prefix: str) -> tuple[str, str]:
    return f"{prefix}cloud", f"{prefix}cloudp"


def _add_namespace(name: str) -> None:
    run(["ip", "netns", "add", name])
    run(["sysctl", "-q", "-e", "-w", "net.ipv6.conf.all.disable_ipv6=1",
         "net.ipv6.conf.default.disable_ipv6=1"], netns=name)
    run(["ip", "link", "set", "lo", "up"], netns=name)


def _configure_interface(netns: str | None, device: str, address: str) -> None:
    flags = ["-n", netns] if netns else []
    run(["ip", *flags, "addr", "add", address, "dev", device])
    # Per-packet fidelity: no segmentation or receive offloads, so the delayer, the loss rule and
    # tbf see the packets the wire would carry.
    run(["ethtool", "-K", device, "tso", "off", "gso", "off", "gro", "off"], netns=netns)
    run(["ip", *flags, "link", "set", device, "up"])


def _disable_ipv6_on(device: str) -> None:
    """For a root-namespace device (namespaces have IPv6 off as a whole)."""
    setting = Path(f"/proc/sys/net/ipv6/conf/{device}/disable_ipv6")
    if not setting.exists():  # a kernel without IPv6
        return
    try:
        setting.write_text("1")
    except PermissionError:
        raise NetlabError(f"cannot write {setting}: needs CAP_NET_ADMIN (run as root)") from None


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Let a teardown finish when Ctrl-C comes again; the interrupt is raised after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        raise KeyboardInterrupt
