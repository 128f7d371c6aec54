"""The managed ejabberd cluster, against the real server: settings, accounts, the foreground
command, process hygiene. (Failover under load: tests/integration/test_ejabberd_cluster.py.)

Skipped, with the reason, where ejabberd is not installed (``make setup`` installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from broker_bridge.ejabberd import EjabberdCommandError, EjabberdInstall, ManagedEjabberdCluster
from broker_bridge.ejabberd import cluster as ejabberd_cluster
from broker_bridge.managed import BrokerEndpoint, BrokerNotInstalledError
from tests.broker_bridge.test_prosody import alive, login, wait_gone

ROOT = Path(__file__).resolve().parents[2]


def installed() -> str | None:
    """Why the tests that run ejabberd cannot, or None."""
    try:
        EjabberdInstall.find()
    except BrokerNotInstalledError as exc:
        return str(exc)
    return None


needs_ejabberd = pytest.mark.skipif(installed() is not None, reason=str(installed()))


def node_at(port: int) -> BrokerEndpoint:
    """What ``login`` needs to reach a node's client port."""
    return BrokerEndpoint(host="127.0.0.1", c2s_port=port, component_port=0,
                          domain="csms.local", muc_domain="rooms.csms.local",
                          component_domains=(), component_secret="")


def processes_in(directory: Path) -> list[int]:
    """Live processes working in ``directory`` or below (nodes run in their own directory, and
    their helper processes inherit it)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")).is_relative_to(directory):
                found.append(int(entry.name))
    return [pid for pid in found if alive(pid)]


def test_settings_name_every_node_starting_with_the_chosen_one(tmp_path: Path) -> None:
    cluster = ManagedEjabberdCluster(tmp_path / "c", nodes=3)
    one, two, three = cluster.endpoints
    settings = cluster.xmpp_settings(2, reconnect_cap_s=0.5)
    assert (settings.host, settings.c2s_port, settings.component_port) == (
        two.host, two.c2s_port, two.component_port)
    assert settings.alternates == ((three.host, three.c2s_port, three.component_port),
                                   (one.host, one.c2s_port, one.component_port))
    assert settings.reconnect_cap_s == 0.5 and settings.routes == (("cs-*", "stations.csms.local"),)
    ports = [p for ep in (one, two, three) for p in (ep.c2s_port, ep.component_port)]
    assert len(set(ports)) == 6
    with pytest.raises(ValueError, match="nodes 1 to 3"):
        cluster.xmpp_settings(4)


def test_accounts_are_checked_and_need_a_running_node(tmp_path: Path) -> None:
    cluster = ManagedEjabberdCluster(tmp_path / "c")
    with pytest.raises(ValueError, match="localpart"):
        asyncio.run(cluster.create_accounts({"no spaces": "pw"}))
    with pytest.raises(EjabberdCommandError, match="start it first"):
        asyncio.run(cluster.create_accounts({"fine": "pw"}))


def test_missing_ejabberd_explains_how_to_install(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(ejabberd_cluster, "_SBIN", ())
    with pytest.raises(BrokerNotInstalledError, match="make setup"):
        asyncio.run(ManagedEjabberdCluster(tmp_path / "c").start())
    assert not (tmp_path / "c" / "node1").exists()


@pytest.mark.broker
@needs_ejabberd
async def test_the_foreground_cluster_routes_big_stanzas_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    state = tmp_path / "cloud-broker"
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker_bridge.ejabberd", "--state-dir", str(state),
        "--account", "alice:pw-a", "--account", "bob:pw-b", "--plaintext", cwd=ROOT,
        stdout=subprocess.PIPE)
    assert cli.stdout is not None
    output = b""
    try:
        while b"Ctrl-C to stop" not in output:
            line = await asyncio.wait_for(cli.stdout.readline(), 60)
            assert line, output
            output += line
        ports = [int(p) for p in re.findall(rb"clients 127\.0\.0\.1:(\d+)", output)]
        assert len(ports) == 2, output
        alice = login(node_at(ports[0]), "alice", "pw-a")
        bob = login(node_at(ports[1]), "bob", "pw-b")
        assert alice is not None and bob is not None  # PLAIN without TLS, on either node
        assert login(node_at(ports[0]), "bob", "wrong") is None
        bob.send("<presence/>")
        bob.expect(rb"<presence")  # bob is available: messages go to his session
        body = "x" * 240_000  # a frame the transport allows (max_stanza_bytes 250 kB)
        alice.send(f"<message to='bob@csms.local' type='normal'><body>{body}</body></message>")
        bob.expect(rb"<message [^>]*from='alice@csms\.local/test'[^>]*>.{240000}")
        alice.close()
        bob.close()
        nodes = processes_in(state)
        assert nodes, "no node process found"
        cli.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(cli.wait(), 30) == 0
        assert all(not alive(pid) for pid in nodes)
        assert processes_in(state) == []
    finally:
        if cli.returncode is None:
            cli.kill()
            await cli.wait()


CHILD = """
import asyncio, sys
from pathlib import Path
from broker_bridge.ejabberd import ManagedEjabberdCluster

async def main():
    cluster = ManagedEjabberdCluster(Path(sys.argv[1]), nodes=1)
    await cluster.start()
    print(cluster.pid(1), flush=True)
    await asyncio.sleep(3600)  # not a wait: the parent hangs until the test kills it

asyncio.run(main())
"""


@pytest.mark.broker
@needs_ejabberd
async def test_a_sigkilled_parent_leaves_no_node(tmp_path: Path) -> None:
    state = tmp_path / "c"
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(state), cwd=ROOT, stdout=subprocess.PIPE)
    assert parent.stdout is not None
    try:
        node = int(await asyncio.wait_for(parent.stdout.readline(), 60))
        helpers = processes_in(state)  # the VM and its port programs
        assert node in helpers and alive(node)
        parent.kill()
        await parent.wait()
        assert wait_gone(node, timeout=20), "the ejabberd node outlived its SIGKILLed parent"
        assert all(wait_gone(pid, timeout=5) for pid in helpers)
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
