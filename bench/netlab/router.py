"""A site's router: every impairment of the uplink lives here, on the forwarded path.

Theory of operation. The router namespace has two interfaces: ``up0`` towards the cloud (the
root namespace) and ``lan0`` towards the site. Everything the site exchanges with the cloud is
forwarded between them, and on that path, in the order a packet meets them:

1. nftables ``forward`` hook, chain ``outage`` (priority -20): empty, or rules that drop (a dead
   zone) or reject (TCP reset, ICMP otherwise: a NAT or firewall that lost its state). The third
   outage, a modem reboot, takes ``up0`` down instead.
2. chain ``loss`` (priority -10): ``numgen random`` drops each packet with the profile's
   probability, each way; the kernel's generator is not seeded.
3. iptables-nft ``FORWARD`` (priority 0) sends packets to NFQUEUE 1 (up) and 2 (down) when the
   profile delays: the delayer process holds them and releases each direction in order.
4. ``tbf`` on the egress of ``up0`` (up) and ``lan0`` (down): the rate and the bottleneck buffer,
   one FIFO like a modem's. Shaping the forwarded path, not the sender's own interface, keeps
   the backlog in the network where TCP Small Queues cannot hide it in the socket.

Counters: bytes and packets sent out of each interface (what crossed the uplink), drops at each
step, the tbf backlog.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, Literal

from bench.netlab.commands import NetlabError, run
from bench.netlab.processes import Process, ProcessTable
from bench.netlab.profile import LinkProfile

Outage = Literal["drop", "reject", "down"]
OUTAGES: tuple[Outage, ...] = ("drop", "reject", "down")

WAN, LAN = "up0", "lan0"
# Each direction: the interface packets arrive on, the one they leave by, their NFQUEUE number.
_DIRECTIONS = {"up": (LAN, WAN, 1), "down": (WAN, LAN, 2)}
_MTU_FRAME = 1514
_LOSS_SCALE = 1_000_000  # numgen's range: loss is applied in parts per million
_IPTABLES_CHAIN = "netlab"

_NFT_TABLE = """
table inet netlab {
    counter outage_up {}
    counter outage_down {}
    counter loss_up {}
    counter loss_down {}
    chain outage { type filter hook forward priority -20; policy accept; }
    chain loss { type filter hook forward priority -10; policy accept; }
}
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectionCounters:
    """One direction of the uplink since the site was built."""

    bytes: int  # left the router in this direction (frame bytes, as the interface counts them)
    packets: int
    lost: int  # dropped by the profile's random loss
    outage_drops: int  # dropped or rejected by an outage rule
    queue_drops: int  # dropped by tbf: the bottleneck buffer was full
    delayer_drops: int  # the delayer's queue was full or it fell behind
    backlog_bytes: int  # in the bottleneck buffer now


@dataclass(frozen=True, slots=True)
class UplinkCounters:
    up: DirectionCounters  # site -> cloud
    down: DirectionCounters  # cloud -> site


class Router:
    """The router namespace of one site and the impairment applied in it."""

    def __init__(self, netns: str, *, cloud_net: str, gateway: str, processes: ProcessTable,
                 seed: str, delayer_cpu: int | None) -> None:
        self.netns = netns
        self.cloud_net = cloud_net
        self.gateway = gateway  # the root namespace's end of the uplink
        self._processes = processes
        self._seed = seed
        self._delayer_cpu = delayer_cpu
        self.profile = LinkProfile()
        self.delayer: Process | None = None
        self.outage_kind: Outage | None = None
        self._queueing = False  # forwarded packets go to the delayer's queues

    def install(self) -> None:
        """Route to the cloud and create the (empty) netfilter tables; once, after addressing."""
        self.route_to_cloud()
        self._nft(_NFT_TABLE)
        self._iptables("-N", _IPTABLES_CHAIN)
        self._iptables("-A", "FORWARD", "-j", _IPTABLES_CHAIN)

    def route_to_cloud(self) -> None:
        run(["ip", "route", "replace", self.cloud_net, "via", self.gateway, "dev", WAN],
            netns=self.netns)

    def apply(self, profile: LinkProfile) -> None:
        """Make the uplink behave as ``profile`` says, from now on."""
        for direction, (_, out_dev, _) in _DIRECTIONS.items():
            self._shape(out_dev, profile.up_bps if direction == "up" else profile.down_bps,
                        profile)
        self._set_loss(profile.loss)
        self._set_delay(profile)
        self.profile = profile

    def _shape(self, device: str, rate_bps: int | None, profile: LinkProfile) -> None:
        if rate_bps is None:
            if "tbf" in run(["tc", "qdisc", "show", "dev", device], netns=self.netns):
                run(["tc", "qdisc", "del", "dev", device, "root"], netns=self.netns)
            return
        # The bucket holds 16 ms at the rate, at least two full frames: enough for the kernel's
        # timer granularity, small enough that the link never bursts much above its rate.
        burst = max(2 * _MTU_FRAME, rate_bps // 8 * 16 // 1000)
        run(["tc", "qdisc", "replace", "dev", device, "root", "tbf", "rate", f"{rate_bps}bit",
             "burst", str(burst), *profile.tbf_buffer], netns=self.netns)

    def _set_loss(self, loss: float) -> None:
        rules = ["flush chain inet netlab loss"]
        threshold = round(loss * _LOSS_SCALE)
        if threshold:
            rules += [f'add rule inet netlab loss iifname "{in_dev}" numgen random mod '
                      f'{_LOSS_SCALE} < {threshold} counter name "loss_{direction}" drop'
                      for direction, (in_dev, _, _) in _DIRECTIONS.items()]
        self._nft("\n".join(rules))

    def _set_delay(self, profile: LinkProfile) -> None:
        if not profile.delays:
            self._iptables("-F", _IPTABLES_CHAIN)
            self._queueing = False
            if self.delayer is not None:
                self.delayer.stop()  # it lets go of what it holds first
                self.delayer = None
            return
        if self.delayer is not None and self.delayer.alive():
            # A running delayer changes in place: no moment without the queue, so no packet
            # overtakes those it holds.
            self.delayer.send(json.dumps({"delay_ms": profile.delay_ms,
                                          "jitter_ms": profile.jitter_ms}))
        else:
            self.delayer = self._start_delayer(profile)
        if not self._queueing:
            for in_dev, out_dev, queue in _DIRECTIONS.values():
                self._iptables("-A", _IPTABLES_CHAIN, "-i", in_dev, "-o", out_dev, "-j",
                               "NFQUEUE", "--queue-num", str(queue), "--queue-bypass")
            self._queueing = True

    def _start_delayer(self, profile: LinkProfile) -> Process:
        pin = ["taskset", "-c", str(self._delayer_cpu)] if self._delayer_cpu is not None else []
        queues = [f"--queue={name}={queue}" for name, (_, _, queue) in _DIRECTIONS.items()]
        argv = [*pin, sys.executable, "-m", "bench.netlab.delayer", *queues,
                f"--delay-ms={profile.delay_ms}", f"--jitter-ms={profile.jitter_ms}",
                f"--seed={self._seed}"]
        delayer = self._processes.spawn(argv, netns=self.netns, name=f"{self.netns}-delayer",
                                        stdin=True)
        delayer.wait_output("ready", timeout=10.0)
        return delayer

    def outage(self, kind: Outage) -> None:
        """Cut the uplink: ``drop`` (dead zone), ``reject`` (state lost), ``down`` (modem off)."""
        if kind not in OUTAGES:
            raise ValueError(f"outage kind is one of {OUTAGES}, not {kind!r}")
        if self.outage_kind is not None:
            self.restore()
        if kind == "down":
            run(["ip", "link", "set", WAN, "down"], netns=self.netns)
        else:
            self._nft("\n".join(self._outage_rules(kind)))
        self.outage_kind = kind

    @staticmethod
    def _outage_rules(kind: Outage) -> list[str]:
        rules = []
        for direction, (in_dev, _, _) in _DIRECTIONS.items():
            match = f'add rule inet netlab outage iifname "{in_dev}"'
            count = f'counter name "outage_{direction}"'
            if kind == "drop":
                rules.append(f"{match} {count} drop")
            else:
                rules.append(f"{match} meta l4proto tcp {count} reject with tcp reset")
                rules.append(f"{match} {count} reject with icmpx type admin-prohibited")
        return rules

    def restore(self) -> None:
        """End the outage, if any. A link that was down gets its route back."""
        if self.outage_kind == "down":
            run(["ip", "link", "set", WAN, "up"], netns=self.netns)
            self.route_to_cloud()  # the kernel removed it with the link
        elif self.outage_kind is not None:
            self._nft("flush chain inet netlab outage")
        self.outage_kind = None

    def counters(self) -> UplinkCounters:
        links = {link["ifname"]: link["stats64"]["tx"]
                 for link in json.loads(run(["ip", "-s", "-j", "link", "show"], netns=self.netns))}
        nft = {entry["counter"]["name"]: entry["counter"]["packets"]
               for entry in json.loads(run(["nft", "-j", "list", "counters", "table", "inet",
                                            "netlab"], netns=self.netns))["nftables"]
               if "counter" in entry}
        queue_drops = self._nfqueue_drops()
        directions = {}
        for direction, (_, out_dev, queue) in _DIRECTIONS.items():
            qdisc = self._root_qdisc(out_dev)
            directions[direction] = DirectionCounters(
                bytes=links[out_dev]["bytes"], packets=links[out_dev]["packets"],
                lost=nft[f"loss_{direction}"], outage_drops=nft[f"outage_{direction}"],
                queue_drops=qdisc.get("drops", 0), delayer_drops=queue_drops.get(queue, 0),
                backlog_bytes=qdisc.get("backlog", 0))
        return UplinkCounters(up=directions["up"], down=directions["down"])

    def _root_qdisc(self, device: str) -> dict[str, Any]:
        qdiscs = json.loads(run(["tc", "-s", "-j", "qdisc", "show", "dev", device],
                                netns=self.netns))
        return next((q for q in qdiscs if q.get("root")), {})

    def _nfqueue_drops(self) -> dict[int, int]:
        """Per queue: packets the kernel dropped because the queue was full or unread."""
        text = run(["cat", "/proc/net/netfilter/nfnetlink_queue"], netns=self.netns, check=False)
        drops = {}
        for line in text.splitlines():
            fields = line.split()  # queue, portid, waiting, mode, range, dropped, user dropped, ...
            drops[int(fields[0])] = int(fields[5]) + int(fields[6])
        return drops

    def _nft(self, script: str) -> None:
        run(["nft", "-f", "-"], netns=self.netns, input=script)

    def _iptables(self, *args: str) -> None:
        try:
            run(["iptables", "-w", *args], netns=self.netns)
        except NetlabError as error:
            if "NFQUEUE" in args:
                raise NetlabError(f"{error} -- NFQUEUE needs the kernel's nfnetlink_queue and "
                                  "xt_NFQUEUE") from None
            raise
