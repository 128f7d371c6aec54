"""The delayer: holds forwarded packets from NFQUEUE and lets them go after delay and jitter.

The kernel here has no netem, so a router sends its forwarded packets to netfilter queues
(iptables ``-j NFQUEUE --queue-bypass``: a dead delayer means undelayed packets, never lost ones)
and this process, run inside the router's namespace, gives each packet its verdict later. One
queue per direction, each with its own `DelayLine`, so order holds per direction. Only packet
metadata is copied to userspace (``COPY_META``): the payload never leaves the kernel.

    python -m bench.netlab.delayer --queue up=1 --queue down=2 --delay-ms 50 --jitter-ms 10 --seed 7

Prints ``ready`` once the queues are bound. A JSON line on standard input such as
``{"delay_ms": 20, "jitter_ms": 5}`` changes the delay of packets arriving from then on. On
SIGTERM or SIGINT it releases what it holds and prints one ``summary {...}`` JSON line: packets
per direction, most held at once, the worst lateness of a release and the CPU time used.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import resource
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from bench.netlab.delay import DelayLine, JitteredDelay

QUEUE_MAX_PACKETS = 16_384  # held at once per direction before the kernel drops


def _parse_queue(text: str) -> tuple[str, int]:
    name, _, number = text.partition("=")
    if not name or not number.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, not {text!r}")
    return name, int(number)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.netlab.delayer",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--queue", type=_parse_queue, action="append", required=True,
                        help="NAME=NUMBER: a netfilter queue to serve, e.g. up=1")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--seed", default="0", help="seeds each direction's jitter")
    return parser.parse_args(argv)


class Delayer:
    """The queues, their delay lines and the loop that serves them."""

    def __init__(self, queues: list[tuple[str, int]], delay_ms: float, jitter_ms: float,
                 seed: str) -> None:
        try:  # only the delayer needs the compiled part
            from netfilterqueue import COPY_META, NetfilterQueue
        except ImportError as error:
            sys.exit(f"delayer: PyPI NetfilterQueue is missing ({error}); make setup installs it")

        self.lines: dict[str, DelayLine[Any]] = {}
        self.schedules: list[JitteredDelay] = []
        self.selector = selectors.DefaultSelector()
        self.worst_lateness_s = 0.0
        self._queues = []
        for name, number in queues:
            schedule = JitteredDelay(delay_ms / 1000, jitter_ms / 1000,
                                     random.Random(f"{seed}:{name}"))
            self.schedules.append(schedule)
            line: DelayLine[Any] = DelayLine(schedule)
            queue = NetfilterQueue()
            queue.bind(number, self._admitter(line), max_len=QUEUE_MAX_PACKETS, mode=COPY_META)
            self.selector.register(queue.get_fd(), selectors.EVENT_READ,
                                   functools.partial(queue.run, block=False))
            self.lines[name] = line
            self._queues.append(queue)
        self._control_buffer = b""
        self.selector.register(sys.stdin, selectors.EVENT_READ, self._read_control)
        # A signal only sets a flag; its byte on this socket wakes the select, so the loop never
        # stops between taking a packet off its line and giving its verdict.
        self.stopping = False
        self._wakeup, wakeup_writer = socket.socketpair()
        wakeup_writer.setblocking(False)
        signal.set_wakeup_fd(wakeup_writer.fileno())
        self._wakeup_writer = wakeup_writer
        self.selector.register(self._wakeup, selectors.EVENT_READ,
                               functools.partial(self._wakeup.recv, 4096))
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    @staticmethod
    def _admitter(line: DelayLine[Any]) -> Callable[[Any], None]:
        def admit(packet: Any) -> None:
            line.admit(packet, time.monotonic(), packet.get_payload_len())
        return admit

    def reconfigure(self, delay_ms: float, jitter_ms: float) -> None:
        for schedule in self.schedules:
            schedule.delay_s = delay_ms / 1000
            schedule.jitter_s = jitter_ms / 1000

    def run(self) -> None:
        while not self.stopping:
            releases = [t for line in self.lines.values() if (t := line.next_release()) is not None]
            timeout = max(0.0, min(releases) - time.monotonic()) if releases else None
            for key, _ in self.selector.select(timeout):
                key.data()  # the reader registered with the file
            now = time.monotonic()
            for line in self.lines.values():
                for release, packet in line.due(now):
                    packet.accept()
                    self.worst_lateness_s = max(self.worst_lateness_s, now - release)

    def _read_control(self) -> None:
        data = os.read(sys.stdin.fileno(), 4096)
        if not data:  # the controller went away: keep delaying with what we have
            self.selector.unregister(sys.stdin)
            return
        self._control_buffer += data
        *lines, self._control_buffer = self._control_buffer.split(b"\n")
        for line in lines:
            change = json.loads(line)
            self.reconfigure(float(change["delay_ms"]), float(change["jitter_ms"]))

    def release_all(self) -> None:
        for line in self.lines.values():
            for packet in line.drain():
                packet.accept()
        for queue in self._queues:
            queue.unbind()

    def summary(self) -> dict[str, object]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "packets": {name: line.admitted for name, line in self.lines.items()},
            "max_held": {name: line.max_held for name, line in self.lines.items()},
            "worst_lateness_ms": round(self.worst_lateness_s * 1000, 3),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        }


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    delayer = Delayer(args.queue, args.delay_ms, args.jitter_ms, args.seed)
    print("ready", flush=True)
    try:
        delayer.run()
    finally:
        delayer.release_all()
        print("summary", json.dumps(delayer.summary()), flush=True)


if __name__ == "__main__":
    main()
