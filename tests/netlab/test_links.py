"""A site's uplink in real namespaces, measured with real sockets and processes.

Each test builds its own lab (a site behind its router, the cloud in the root namespace) and
checks behaviour within bounds: the rate stays under its cap, delay and jitter keep order, loss
is in a plausible band, outages stop traffic and restore brings back the same connection, and
teardown leaves nothing behind. Figures go to the captured output (``pytest -s`` shows them).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.netlab import Lab, LinkProfile, Site, netns_available
from bench.netlab.processes import Process
from bench.netlab.traffic import TcpSink, udp_echo_probe

REASON = netns_available()
pytestmark = pytest.mark.skipif(REASON is not None,
                                reason=f"network namespaces unavailable: {REASON}")

PREFIX = "nlt"
TRAFFIC = [sys.executable, "-m", "bench.netlab.traffic"]
ECHO_PORT = 7000


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with Lab(PREFIX, seed=1, log_dir=tmp_path) as lab:
        yield lab


def _site_with_echo(lab: Lab, profile: LinkProfile) -> Site:
    site = lab.add_site(1, profile)
    site.spawn([*TRAFFIC, "serve", "--bind", site.address, "--port", str(ECHO_PORT)],
               name="echo").wait_output("ready", timeout=10)
    return site


def _connection_from_site(lab: Lab, site: Site) -> tuple[socket.socket, Process]:
    """A TCP connection opened by the site to the cloud, as a local CSMS opens its uplink; the
    site's end echoes what the test sends."""
    with socket.create_server((lab.cloud_address, 0)) as listener:
        listener.settimeout(10)
        client = site.spawn([*TRAFFIC, "echo-to", "--to",
                             f"{lab.cloud_address}:{listener.getsockname()[1]}"])
        connection, _ = listener.accept()
    connection.settimeout(10)
    return connection, client


def _receive(connection: socket.socket, size: int) -> bytes:
    received = b""
    while len(received) < size:
        chunk = connection.recv(size - len(received))
        if not chunk:
            raise ConnectionError("closed by the site")
        received += chunk
    return received


def _round_trip(connection: socket.socket, message: bytes) -> bytes:
    connection.sendall(message)
    return _receive(connection, len(message))


def test_uplink_rate_stays_under_its_cap(lab: Lab) -> None:
    cap = 2_000_000
    site = lab.add_site(1, LinkProfile(up_bps=cap, down_bps=8_000_000, buffer_ms=300))
    size = 500_000
    with TcpSink(lab.cloud_address) as sink:
        upload = site.spawn([*TRAFFIC, "upload", "--to", f"{lab.cloud_address}:{sink.port}",
                             "--bytes", str(size)])
        assert upload.wait(timeout=30) == 0, upload.output()
        sink.wait(timeout=5)
    rate = sink.rate_bps()
    counters = site.counters()
    print(f"\nupload goodput {rate / 1e6:.3f} Mbit/s against a {cap / 1e6:.0f} Mbit/s cap; "
          f"{counters.up.queue_drops} packets dropped by the full bottleneck buffer")
    assert sink.received == size
    assert counters.up.bytes >= size
    # Goodput is below the link rate (headers), and TCP fills a buffered link nearly.
    assert 0.6 * cap <= rate <= 1.02 * cap


def test_delay_and_jitter_keep_order(lab: Lab) -> None:
    delay_ms, jitter_ms = 50, 10
    site = _site_with_echo(lab, LinkProfile(delay_ms=delay_ms, jitter_ms=jitter_ms))
    # 2 ms apart while the jitter spans 20 ms: without order-keeping, replies would overtake.
    probe = udp_echo_probe(site.address, ECHO_PORT, count=200, interval_s=0.002)
    connection, _ = _connection_from_site(lab, site)
    with connection:
        before = time.monotonic()
        _round_trip(connection, b"x" * 100)
        tcp_rtt_s = time.monotonic() - before
    assert site.delayer is not None
    cpu_s = site.delayer.cpu_seconds()
    low, median = probe.rtt_percentile_s(1), probe.rtt_percentile_s(50)
    print(f"\nUDP echo RTT with {delay_ms} +- {jitter_ms} ms each way: min {low * 1000:.1f} ms, "
          f"p50 {median * 1000:.1f} ms, p99 {probe.rtt_percentile_s(99) * 1000:.1f} ms; "
          f"TCP echo {tcp_rtt_s * 1000:.0f} ms; delayer CPU {cpu_s:.3f} s")
    assert probe.loss == 0
    assert probe.in_order
    assert min(probe.rtts_s.values()) >= 2 * (delay_ms - jitter_ms) / 1000
    assert median >= 0.095  # about twice the delay, more since order holds packets back
    assert tcp_rtt_s >= 2 * (delay_ms - jitter_ms) / 1000


def test_set_profile_changes_a_running_link(lab: Lab) -> None:
    site = _site_with_echo(lab, LinkProfile(delay_ms=40))
    slow = udp_echo_probe(site.address, ECHO_PORT, count=20, interval_s=0.005)
    delayer = site.delayer
    site.set_profile(LinkProfile(delay_ms=5))
    assert site.delayer is delayer  # changed in place, not restarted
    fast = udp_echo_probe(site.address, ECHO_PORT, count=20, interval_s=0.005)
    site.set_profile(LinkProfile())
    assert site.delayer is None and delayer is not None and not delayer.alive()
    plain = udp_echo_probe(site.address, ECHO_PORT, count=20, interval_s=0.005)
    print(f"\nUDP echo p50 at 40 ms each way {slow.rtt_percentile_s(50) * 1000:.1f} ms, "
          f"at 5 ms {fast.rtt_percentile_s(50) * 1000:.1f} ms, "
          f"undelayed {plain.rtt_percentile_s(50) * 1000:.2f} ms")
    assert slow.loss == fast.loss == plain.loss == 0
    assert min(slow.rtts_s.values()) >= 0.080 > max(fast.rtts_s.values())
    assert min(fast.rtts_s.values()) >= 0.010 > plain.rtt_percentile_s(50)


def test_random_loss_each_way(lab: Lab) -> None:
    site = _site_with_echo(lab, LinkProfile(loss=0.10))
    count = 1000
    probe = udp_echo_probe(site.address, ECHO_PORT, count=count, interval_s=0.001,
                           linger_s=0.5)
    counters = site.counters()
    down = counters.down.lost / count
    up = counters.up.lost / (count - counters.down.lost)
    print(f"\n10 % each way: UDP echo loss {probe.loss:.1%} (n = {count}); "
          f"dropped down {down:.1%}, up {up:.1%}")
    # Binomial, n = 1000: 10 % has a standard deviation of ~1 %; a round trip loses ~19 %.
    assert 0.05 <= down <= 0.15 and 0.05 <= up <= 0.15
    assert 0.12 <= probe.loss <= 0.27
    assert len(probe.rtts_s) == count - counters.down.lost - counters.up.lost


@pytest.mark.parametrize("kind", ["drop", "down"])
def test_outage_stops_traffic_and_restore_resumes_the_same_connection(lab: Lab,
                                                                      kind: str) -> None:
    site = lab.add_site(1, LinkProfile(delay_ms=10))
    connection, _ = _connection_from_site(lab, site)
    with connection:
        assert _round_trip(connection, b"before\n") == b"before\n"
        [uplink] = site.uplink_tcp_connections()  # exactly one crosses the uplink
        site.outage(kind)  # type: ignore[arg-type]
        connection.sendall(b"during\n")
        connection.settimeout(1.0)
        with pytest.raises(TimeoutError):  # a second with nothing coming back
            connection.recv(100)
        if kind == "drop":
            assert site.counters().down.outage_drops > 0
        site.restore()
        restored_at = time.monotonic()
        connection.settimeout(20)  # TCP's retransmission timer decides when it resumes
        assert _receive(connection, len(b"during\n")) == b"during\n"
        print(f"\noutage {kind!r} of ~1 s: the held message came back "
              f"{time.monotonic() - restored_at:.2f} s after restore, same connection")
        assert _round_trip(connection, b"after\n") == b"after\n"
        assert site.uplink_tcp_connections() == [uplink]


def test_reject_outage_resets_the_connection(lab: Lab) -> None:
    site = lab.add_site(1, LinkProfile())
    connection, _ = _connection_from_site(lab, site)
    with connection:
        _round_trip(connection, b"before\n")
        site.outage("reject")
        cut_at = time.monotonic()
        with pytest.raises(ConnectionResetError):
            _round_trip(connection, b"during\n")
        print(f"\noutage 'reject': connection reset {time.monotonic() - cut_at:.3f} s after "
              "the next send")
    site.restore()
    fresh, _ = _connection_from_site(lab, site)
    with fresh:
        assert _round_trip(fresh, b"after\n") == b"after\n"


def test_teardown_leaves_no_namespace_process_or_route(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), Lab(PREFIX, log_dir=tmp_path) as lab:
        site = lab.add_site(1, LinkProfile(delay_ms=5))
        lab.add_site(2, LinkProfile(up_bps=1_000_000, loss=0.01))
        networks = lab.block.networks
        processes = [site.spawn(["sleep", "600"]), lab.spawn(["sleep", "600"])]
        assert site.delayer is not None
        processes.append(site.delayer)
        raise KeyboardInterrupt  # Ctrl-C inside the lab
    for process in processes:
        assert not process.alive()
        with pytest.raises(ProcessLookupError):
            os.kill(process.pid, 0)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout
    assert not [line for line in namespaces.splitlines() if line.startswith(PREFIX)]
    for network in networks:  # the lab's share of 198.18.0.0/15: other labs may be running
        # Not "ip route show PREFIX": that lists only a route to exactly that prefix.
        routes = subprocess.run(["ip", "route", "show", "table", "all", "root", str(network)],
                                capture_output=True, text=True, check=True).stdout
        assert routes == ""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                           check=True).stdout
    assert f" {PREFIX}" not in links
