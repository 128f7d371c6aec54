"""The managed Prosody, against the real server: lifecycle, settings, accounts, process hygiene.

No mocks and no hopeful sleeps: waits poll with deadlines. A tiny blocking XMPP speaker proves
what the settings claim (PLAIN logins, component handshakes, unlocked MUC rooms).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import hashlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker_bridge.prosody import (
    BrokerEndpoint,
    BrokerNotInstalledError,
    BrokerStartError,
    ManagedProsody,
)

ROOT = Path(__file__).resolve().parents[2]
broker = pytest.mark.broker


class RawXmpp:
    """A blocking XMPP stream reduced to send and wait-for-pattern."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=5.0)
        self.buffer = b""

    def send(self, xml: str) -> None:
        self.sock.sendall(xml.encode())

    def expect(self, pattern: bytes) -> re.Match[bytes]:
        """Read until ``pattern`` matches; consume the input up to the end of the match."""
        while (match := re.search(pattern, self.buffer, re.S)) is None:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buffer)
            self.buffer += chunk
        self.buffer = self.buffer[match.end():]
        return match

    def open_stream(self, to: str, ns: str = "jabber:client") -> re.Match[bytes]:
        self.send(f"<?xml version='1.0'?><stream:stream to='{to}' version='1.0' xmlns='{ns}' "
                  "xmlns:stream='http://etherx.jabber.org/streams'>")
        return self.expect(rb"<stream:stream [^>]*\bid='([^']+)'[^>]*>")

    def starttls(self, domain: str, cafile: Path) -> None:
        """STARTTLS, verifying the broker against ``cafile`` and ``domain``."""
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.expect(rb"<proceed\b[^>]*/>")
        context = ssl.create_default_context(cafile=str(cafile))
        self.sock = context.wrap_socket(self.sock, server_hostname=domain)
        self.buffer = b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send("</stream:stream>")
        self.sock.close()


def login(ep: BrokerEndpoint, user: str, password: str) -> RawXmpp | None:
    """A bound client session after SASL PLAIN (inside TLS when the broker requires it), or
    None when the credentials are refused."""
    s = RawXmpp(ep.host, ep.c2s_port)
    s.open_stream(ep.domain)
    s.expect(rb"</stream:features>")
    if ep.cafile is not None:  # a broker requiring TLS offers nothing else before it
        s.starttls(ep.domain, ep.cafile)
        s.open_stream(ep.domain)
        s.expect(rb"</stream:features>")
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    s.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    if s.expect(rb"<(success|failure)\b").group(1) == b"failure":
        s.close()
        return None
    s.open_stream(ep.domain)
    s.expect(rb"</stream:features>")
    s.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
           "<resource>test</resource></bind></iq>")
    s.expect(rb"<iq [^>]*type='result'")
    return s


def connect_component(ep: BrokerEndpoint, domain: str, secret: str) -> RawXmpp:
    """An authenticated XEP-0114 component connection (raises if the handshake fails)."""
    s = RawXmpp(ep.host, ep.component_port)
    stream_id = s.open_stream(domain, ns="jabber:component:accept").group(1)
    s.send(f"<handshake>{hashlib.sha1(stream_id + secret.encode()).hexdigest()}</handshake>")
    s.expect(rb"<handshake\s*/>|<handshake></handshake>")
    return s


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)  # the poll interval of a wait with a deadline (blocking: no loop here)
    return True


def processes_using(config: Path) -> list[int]:
    """Live processes whose command line names ``config`` (ours only, not other Prosodys)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and str(config).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return [pid for pid in found if alive(pid)]


@broker
async def test_start_serves_clients_and_stop_leaves_no_process(tmp_path: Path) -> None:
    prosody = ManagedProsody(tmp_path / "b")
    endpoint = await prosody.start()
    pid = prosody.pid
    assert pid is not None and prosody.running and alive(pid)
    assert processes_using(prosody.config_path) == [pid]
    with socket.create_connection((endpoint.host, endpoint.c2s_port), timeout=2):
        pass
    assert await prosody.start() == endpoint  # already running: nothing happens
    await prosody.stop()
    assert not prosody.running and prosody.pid is None and not alive(pid)
    assert processes_using(prosody.config_path) == []
    await prosody.stop()  # idempotent


@broker
async def test_everything_lives_in_the_state_directory(managed_prosody: ManagedProsody) -> None:
    state = managed_prosody.state_dir
    assert managed_prosody.config_path.parent == state and managed_prosody.log_path.parent == state
    assert (state / "prosody.pid").read_text().strip() == str(managed_prosody.pid)
    assert (state / "data").is_dir()
    config = managed_prosody.config_path.read_text()
    for path in re.findall(r'"(/[^"]*)"', config):
        assert Path(path).is_relative_to(state), path


@broker
async def test_config_has_no_rate_limits_nagle_off_and_runs_as_root(
    managed_prosody: ManagedProsody,
) -> None:
    config = managed_prosody.config_path.read_text()
    for line in ("run_as_root = true", "limits = {}",
                 "network_settings = { nagle = false, tcp_backlog = 1024 }",
                 "muc_room_default_presence_broadcast = {}",
                 "s2s_ports = {}", "c2s_require_encryption = true",
                 "allow_unencrypted_plain_auth = false",
                 'authentication = "internal_plain"', "muc_room_locking = false",
                 f"c2s_ports = {{ {managed_prosody.endpoint.c2s_port} }}"):
        assert line in [text.strip() for text in config.splitlines()], line
    disabled = re.search(r"modules_disabled = \{(.*)\}", config)
    assert disabled and all(f'"{m}"' in disabled.group(1) for m in ("limits", "s2s"))
    enabled = re.search(r"modules_enabled = \{(.*)\}", config)
    assert enabled and '"tls"' in enabled.group(1) and '"tls"' not in disabled.group(1)


def _pidfd_getfd(pid: int, fd: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        ours = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd, the same number on every arch
        if ours < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
        return int(ours)
    finally:
        os.close(pidfd)


@broker
async def test_nagle_is_off_on_client_connections(managed_prosody: ManagedProsody) -> None:
    """Reads TCP_NODELAY on Prosody's own end of a live client connection."""
    ep = managed_prosody.endpoint
    client = RawXmpp(ep.host, ep.c2s_port)
    client.open_stream(ep.domain)
    client.expect(rb"</stream:features>")
    mine = client.sock.getsockname()
    seen = []
    for fd in os.listdir(f"/proc/{managed_prosody.pid}/fd"):
        if not os.readlink(f"/proc/{managed_prosody.pid}/fd/{fd}").startswith("socket:"):
            continue
        try:
            theirs = socket.socket(fileno=_pidfd_getfd(managed_prosody.pid or 0, int(fd)))
        except OSError as exc:
            pytest.skip(f"cannot borrow Prosody's socket here: {exc}")
        with theirs, contextlib.suppress(OSError):
            if theirs.getpeername() == mine:
                seen.append(theirs.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    client.close()
    assert seen == [1]


@broker
async def test_accounts_made_with_the_server_down_then_up(tmp_path: Path) -> None:
    prosody = ManagedProsody(tmp_path / "b")
    accounts = {f"station-{i:04d}": f"secret-{i}" for i in range(2000)}
    began = time.perf_counter()
    prosody.create_accounts(accounts)
    down = time.perf_counter() - began
    async with prosody:
        more = {f"user-{i:04d}": f"pw-{i}" for i in range(2000)}
        began = time.perf_counter()
        prosody.create_accounts(more)
        up = time.perf_counter() - began
        print(f"2,000 accounts: {down * 1000:.0f} ms server down, {up * 1000:.0f} ms server up")
        assert down < 5 and up < 5
        assert prosody.has_account("station-0042") and prosody.has_account("USER-1999")
        assert not prosody.has_account("nobody")
        odd = {"quoted": "a\"b\\c'd e", "umlaut": "pässwörd ☃"}  # escaping, UTF-8
        prosody.create_accounts(odd)
        for user, password in [("station-0000", "secret-0"), ("station-1999", "secret-1999"),
                               ("user-0007", "pw-7"), ("User-0008", "pw-8"), *odd.items()]:
            session = login(prosody.endpoint, user, password)
            assert session is not None, user
            session.close()
        assert login(prosody.endpoint, "station-0001", "wrong") is None
        assert login(prosody.endpoint, "nobody", "secret-1") is None


def test_account_names_and_passwords_are_checked(tmp_path: Path) -> None:
    prosody = ManagedProsody(tmp_path / "b")
    for bad in ({"a b": "pw"}, {"a@b": "pw"}, {"": "pw"}, {"élan": "pw"}, {"ok": ""},
                {"ok": "p\nw"}):
        with pytest.raises(ValueError):
            prosody.create_accounts(bad)
    assert not prosody.has_account("ok")


@broker
async def test_restart_keeps_accounts_ports_and_secret(managed_prosody: ManagedProsody) -> None:
    managed_prosody.create_accounts({"alice": "pw-a"})
    before, old_pid = managed_prosody.endpoint, managed_prosody.pid
    assert await managed_prosody.restart() == before
    assert managed_prosody.pid != old_pid and old_pid is not None and not alive(old_pid)
    session = login(before, "alice", "pw-a")
    assert session is not None
    session.close()


@broker
async def test_kill_then_restart(managed_prosody: ManagedProsody) -> None:
    managed_prosody.create_accounts({"bob": "pw-b"})
    old_pid = managed_prosody.pid
    assert old_pid is not None
    managed_prosody.kill()
    assert not managed_prosody.running and not alive(old_pid)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", managed_prosody.endpoint.c2s_port), timeout=1)
    await managed_prosody.restart()
    session = login(managed_prosody.endpoint, "bob", "pw-b")
    assert session is not None
    session.close()


@broker
async def test_components_and_users_share_unlocked_rooms(managed_prosody: ManagedProsody) -> None:
    ep = managed_prosody.endpoint
    managed_prosody.create_accounts({"operator": "pw"})
    station_domain = ep.component_domains[0]
    component = connect_component(ep, station_domain, ep.component_secret)
    room = f"site-1@{ep.muc_domain}"
    component.send(f"<presence from='cs-1@{station_domain}/r' to='{room}/cs-1'>"
                   "<x xmlns='http://jabber.org/protocol/muc'/></presence>")
    created = component.expect(rb"<presence [^>]*from='" + room.encode() + rb"/cs-1'.*?</presence>")
    assert b"code='201'" in created.group(0)  # the component created the room
    client = login(ep, "operator", "pw")
    assert client is not None
    client.send(f"<presence to='{room}/operator'><x xmlns='http://jabber.org/protocol/muc'/>"
                "</presence>")
    joined = client.expect(rb"<presence [^>]*from='" + room.encode() + rb"/operator'.*?</presence>")
    assert b"type='error'" not in joined.group(0) and b"code='110'" in joined.group(0)
    client.send(f"<message to='{room}' type='groupchat'><body>hello</body></message>")
    component.expect(rb"<message [^>]*type='groupchat'[^>]*><body>hello</body>")
    with pytest.raises(EOFError):  # a wrong secret is refused
        connect_component(ep, station_domain, "wrong secret")
    client.close()
    component.close()


CHILD = """
import asyncio, sys
from pathlib import Path
from broker_bridge.prosody import ManagedProsody

async def main():
    broker = ManagedProsody(Path(sys.argv[1]))
    await broker.start()
    print(broker.pid, flush=True)
    if sys.argv[2] == "hang":
        await asyncio.sleep(3600)  # not a wait: the parent hangs until the test kills it

asyncio.run(main())
"""


async def _spawn_parent(state: Path, mode: str) -> tuple[asyncio.subprocess.Process, int]:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(state), mode, cwd=ROOT, stdout=subprocess.PIPE)
    assert parent.stdout is not None
    line = await asyncio.wait_for(parent.stdout.readline(), 20)
    return parent, int(line)


@broker
async def test_a_sigkilled_parent_leaves_no_prosody(tmp_path: Path) -> None:
    parent, child = await _spawn_parent(tmp_path / "b", "hang")
    assert alive(child)
    parent.kill()
    await parent.wait()
    assert wait_gone(child), "prosody outlived its SIGKILLed parent"
    assert processes_using(tmp_path / "b" / "prosody.cfg.lua") == []


@broker
async def test_a_parent_exiting_without_stop_leaves_no_prosody(tmp_path: Path) -> None:
    parent, child = await _spawn_parent(tmp_path / "b", "return")
    assert await asyncio.wait_for(parent.wait(), 20) == 0
    # The atexit hook stopped and reaped it: gone for good before the parent finished exiting.
    assert not Path(f"/proc/{child}").exists(), "the atexit hook did not stop prosody"


def test_missing_prosody_explains_how_to_install(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerNotInstalledError) as caught:
        asyncio.run(ManagedProsody(tmp_path / "b").start())
    assert isinstance(caught.value, RuntimeError)
    assert "make setup" in str(caught.value) and "apt-get install prosody" in str(caught.value)


@broker
async def test_a_failed_start_reports_the_log_tail(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ManagedProsody, "_render_config", lambda self: "this is not lua (\n")
    prosody = ManagedProsody(tmp_path / "b")
    with pytest.raises(BrokerStartError, match=r"(?s)exited with status 1.*syntax error"):
        await prosody.start()
    assert not prosody.running


@broker
async def test_a_taken_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(BrokerStartError, match=f"port {port}.*in use"):
            await ManagedProsody(tmp_path / "b", c2s_port=port).start()


@broker
async def test_a_picked_port_taken_before_the_first_start_is_picked_again(
        tmp_path: Path) -> None:
    """Ports picked when the broker is made may be taken by the time it starts (another
    process's outgoing connection draws from the same range; it failed a CI run): the first
    start moves on to others. A broker that ran keeps its ports (its clients know them)."""
    prosody = ManagedProsody(tmp_path / "b")
    picked = prosody.endpoint.c2s_port
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", picked))
        squatter.listen()
        endpoint = await prosody.start()
        try:
            assert endpoint.c2s_port != picked
            with socket.create_connection((endpoint.host, endpoint.c2s_port), timeout=2):
                pass
        finally:
            await prosody.stop()
    again = await prosody.start()  # the same ports as the run before
    await prosody.stop()
    assert again.c2s_port == endpoint.c2s_port


def test_the_endpoint_describes_how_to_connect(tmp_path: Path) -> None:
    ep = ManagedProsody(tmp_path / "b", c2s_port=15222, component_port=15347).endpoint
    text = ep.describe()
    for fact in ("127.0.0.1:15222", "127.0.0.1:15347", "csms.local", "rooms.csms.local",
                 "stations.csms.local", ep.component_secret, "prosodyctl --config"):
        assert fact in text, fact
    assert ManagedProsody(tmp_path / "b").endpoint.component_secret == ep.component_secret


@broker
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_csms_broker_runs_until_interrupted(tmp_path: Path, signum: int) -> None:
    state = tmp_path / "b"
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actors.app.cli", "broker", "--state-dir", str(state), cwd=ROOT,
        stdout=subprocess.PIPE)
    assert cli.stdout is not None
    output = b""
    while b"Ctrl-C to stop" not in output:
        line = await asyncio.wait_for(cli.stdout.readline(), 20)
        assert line, output
        output += line
    port = int(re.search(rb"clients \(c2s\): +127\.0\.0\.1:(\d+)", output).group(1))  # type: ignore[union-attr]
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    prosody = int((state / "prosody.pid").read_text())
    cli.send_signal(signum)
    assert await asyncio.wait_for(cli.wait(), 20) == 0
    assert not alive(prosody)
