"""What every managed broker shares: child processes that live and die with us, and the checks
around them.

A managed broker (``broker_bridge.prosody``, ``broker_bridge.ejabberd``) is a server run as our
child process from files in its state directory. The pieces here are the same for every kind:

* ``spawn`` starts a child in its own process group, so a terminal's Ctrl-C reaches only us and
  we stop the broker gracefully; on Linux ``PR_SET_PDEATHSIG(SIGTERM)`` makes it die with us even
  when we are SIGKILLed (it follows the *thread* that spawned it: start brokers from one that
  outlives them, like the event loop's); an ``atexit`` hook stops children ``stop()`` never did;
  the open-file limit can be raised to the hard limit for brokers serving thousands of sockets.
* ``wait_serving``: ready means a client stream gets its features, not merely an open port.
* ``bind_port``: free loopback ports, and whether a port is still free before a start.
* account, domain and secret checks and storage that do not depend on the server.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import re
import resource
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

POLL_INTERVAL = 0.02  # seconds between readiness and exit checks
_PR_SET_PDEATHSIG = 1
_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
# ASCII localparts without the characters RFC 6122 forbids; upper case is folded first.
_LOCALPART = re.compile(r"[^\x00-\x20\"&'/:<>@A-Z\x7f]{1,1023}")


class BrokerNotInstalledError(RuntimeError):
    """The broker's programs are not installed; the message says how to install them."""


class BrokerStartError(RuntimeError):
    """The broker exited or did not serve in time; the message holds the tail of its log."""


@dataclass(frozen=True)
class BrokerEndpoint:
    """Where and how to reach a broker: what ``csms broker`` prints and actors connect to."""

    host: str
    c2s_port: int
    component_port: int
    domain: str
    muc_domain: str
    component_domains: tuple[str, ...]
    component_secret: str
    config_path: Path | None = None  # a managed Prosody's config, for the prosodyctl hint
    cafile: Path | None = None  # the CA its clients verify it with; None: plaintext (loopback)

    def describe(self) -> str:
        """Human text: addresses, domains, how to create an account, the component secret."""
        register = (f"prosodyctl --config {self.config_path} register USER {self.domain} PASSWORD"
                    if self.config_path else "with the broker's own admin tool")
        return "\n".join([
            f"XMPP broker on {self.host}",
            f"  clients (c2s):     {self.host}:{self.c2s_port}, domain {self.domain}, "
            + (f"STARTTLS required, verify with {self.cafile}" if self.cafile else
               "SASL PLAIN without TLS (loopback only)"),
            f"  components:        {self.host}:{self.component_port} (XEP-0114), "
            f"domains {', '.join(self.component_domains) or '(none)'}",
            f"  component secret:  {self.component_secret}",
            f"  chat rooms (MUC):  {self.muc_domain}",
            f"  create an account: {register}",
        ])


# -- child processes ----------------------------------------------------------------------------

# Children still running, for the atexit hook (by pid: a forgotten broker object may be gone).
_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def spawn(argv: Sequence[str], *, cwd: Path, log_path: Path, env: Mapping[str, str] | None = None,
          raise_open_files: bool = False) -> subprocess.Popen[bytes]:
    """Start ``argv`` as a child that dies with us, its output appended to ``log_path``;
    ``raise_open_files`` lifts its open-file limit to the hard limit."""
    with log_path.open("ab") as console:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            cwd=cwd, env=None if env is None else dict(env), process_group=0,
            preexec_fn=_die_with_parent(raise_open_files))
    _LIVE[proc.pid] = proc
    return proc


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child and reap it (a broker crash, for tests)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    _LIVE.pop(proc.pid, None)


async def terminate(proc: subprocess.Popen[bytes], timeout: float,
                    poke: Callable[[], None] | None = None) -> None:
    """SIGTERM, wait up to ``timeout`` seconds (calling ``poke`` at each check), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        if not await wait_exit(proc, timeout, poke):
            proc.send_signal(signal.SIGKILL)
            await wait_exit(proc, timeout)
    _LIVE.pop(proc.pid, None)


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float,
                    poke: Callable[[], None] | None = None) -> bool:
    """Whether the child exited (and was reaped) within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proc.poll() is None:
        if loop.time() >= deadline:
            return False
        if poke is not None:
            poke()
        await asyncio.sleep(POLL_INTERVAL / 2)
    return True


@atexit.register
def _stop_children_at_exit() -> None:
    for proc in _LIVE.values():
        proc.send_signal(signal.SIGTERM)
    for proc in _LIVE.values():
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    _LIVE.clear()


def _die_with_parent(raise_open_files: bool = False) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child SIGTERMed when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork, not in the child
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
        if raise_open_files:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    return preexec


async def serve_until_signalled(alive: Callable[[], bool],
                                ready: Callable[[], None] = lambda: None) -> bool:
    """Run a managed broker in the foreground: return True on Ctrl-C or SIGTERM, False as soon
    as ``alive()`` turns false (the broker died on its own). ``ready`` is called once the
    signals are ours (say "Ctrl-C to stop" there: a signal sent when it is read is handled)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    ready()
    try:
        while alive() and not stop.is_set():
            # Wakes up now and then to notice a broker that died on its own.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return stop.is_set()


# -- readiness and ports --------------------------------------------------------------------------


async def wait_serving(proc: subprocess.Popen[bytes], host: str, port: int, domain: str,
                       timeout: float, what: str, log_tail: Callable[[], str]) -> None:
    """Return once a client stream to ``domain`` on ``host:port`` is answered; raise
    ``BrokerStartError`` (naming ``what`` and quoting ``log_tail()``) when the child exits first
    or ``timeout`` seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await answers_stream(host, port, domain):
        if (code := proc.poll()) is not None:
            raise BrokerStartError(f"{what} exited with status {code} while starting; "
                                   f"{log_tail()}")
        if loop.time() >= deadline:
            raise BrokerStartError(f"{what} did not serve {host}:{port} within {timeout:g} s; "
                                   f"{log_tail()}")
        await asyncio.sleep(POLL_INTERVAL)


async def answers_stream(host: str, port: int, domain: str) -> bool:
    """Whether a client stream to ``domain`` gets its features, i.e. the server is serving."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    try:
        writer.write(f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
                     "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
                     .encode())
        reply = await asyncio.wait_for(reader.readuntil(b"</stream:features>"), 2.0)
        writer.write(b"</stream:stream>")
        await asyncio.wait_for(reader.read(), 2.0)  # until the server closes: nothing lingers
        return b"<stream:error" not in reply
    except (OSError, EOFError, asyncio.LimitOverrunError, TimeoutError):
        return False
    finally:
        writer.close()


def bind_port(host: str, port: int = 0) -> int:
    """Bind ``host:port`` (0: any) as a broker's listener does, and close: the port, 0 if
    taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            if port == 0:
                raise
            return 0
        return int(s.getsockname()[1])


def check_ports_free(host: str, ports: Iterable[int]) -> None:
    """Raise ``BrokerStartError`` if one of ``ports`` is taken: brokers often only log a bind
    failure, and a readiness probe would then talk to whoever holds the port."""
    for port in ports:
        if not bind_port(host, port):
            raise BrokerStartError(f"port {port} on {host} is already in use "
                                   "(another broker still running?)")


def log_tail(path: Path, offset: int = 0, lines: int = 30) -> str:
    """The last ``lines`` lines of ``path`` written after ``offset``, for error messages."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
    except OSError as exc:
        return f"no log ({exc})"
    return f"log {path}:\n" + ("\n".join(tail) or "(empty)")


# -- names and secrets ----------------------------------------------------------------------------


def check_domains(names: Iterable[str]) -> None:
    """Raise ``ValueError`` for a name that is not a lower-case DNS-style domain."""
    for name in names:
        if not _DOMAIN.fullmatch(name):
            raise ValueError(f"not a lower-case DNS-style domain: {name!r}")


def check_account(user: str, password: str = "x") -> tuple[str, str]:
    """``(localpart, password)`` with the localpart case-folded; ``ValueError`` for what a broker
    would refuse or mangle (non-ASCII, ``"&'/:<>@``, spaces, control characters)."""
    folded = user.lower()  # ASCII nodeprep
    if not (folded.isascii() and _LOCALPART.fullmatch(folded)):
        raise ValueError(f"unsupported XMPP localpart {user!r} (ASCII, no space or \"&'/:<>@)")
    if not password or any(ord(c) < 0x20 or ord(c) == 0x7F for c in password):
        raise ValueError(f"the password of {user!r} is empty or holds control characters")
    return folded, password


def stored_secret(path: Path) -> str:
    """The secret kept in ``path`` (owner-only), made on first use: a restarted broker accepts
    components configured with the secret it had before."""
    if path.is_file():
        return path.read_text(encoding="ascii").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(secret + "\n", encoding="ascii")
    return secret
