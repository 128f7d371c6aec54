"""The managed broker: a private Prosody run as a child process of the CSMS.

With no broker configured the CSMS must still work out of the box, so it starts its own Prosody
(the "embedded default"). All its state lives in one directory (config, data, pidfile, log);
nothing outside it is touched, and the Debian package's system Prosody is never used.

The settings come from measurements on machines like ours: loopback only, no TLS, PLAIN
with ``internal_plain`` storage (no SCRAM cost per login); ``limits = {}`` (Debian's defaults
throttle clients to about 10 kB/s); ``network_settings = { nagle = false }``, which makes
``net/server_epoll.lua`` set ``TCP_NODELAY`` on every connection (with Nagle, p50 latency was
18.8 ms instead of 0.5 ms at 1,000 msg/s); XEP-0114 components, so one connection acts as
thousands of station JIDs; a MUC service with ``muc_room_locking = false`` and room creation
left unrestricted, so users and component JIDs may create and join rooms at once.

Accounts are written straight into Prosody's internal storage (``data/<host>/accounts/<user>.dat``,
names encoded as ``util/datamanager.lua`` does), atomically like Prosody itself (scratch file,
then rename). ``mod_storage_internal`` reads that file at every lookup, with no cache, so this
works with the server up or down, in milliseconds for thousands of accounts (``prosodyctl
register`` costs about 26 ms each).

Process hygiene (its own process group, death with its parent, the ``atexit`` hook) is what every
managed broker shares: see ``broker_bridge.managed``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Any

from broker_bridge import managed
from broker_bridge.managed import (
    BrokerEndpoint,
    BrokerNotInstalledError,
    BrokerStartError,
    bind_port,
    check_account,
    check_domains,
    stored_secret,
)
from broker_bridge.pki import CertificateAuthority, Issued, broker_certificate
from broker_bridge.xmpp.addresses import XmppSettings, is_loopback

log = logging.getLogger("csms.broker")

__all__ = ["BrokerEndpoint", "BrokerNotInstalledError", "BrokerStartError", "ManagedProsody"]

INSTALL_HINT = (
    "Prosody is not installed: run `make setup` (as root it installs the Debian package "
    "`prosody`), or `apt-get install prosody`"
)
LOG_LEVELS = ("debug", "info", "warn", "error")


class ManagedProsody:
    """A private Prosody child process whose whole state lives in ``state_dir``.

    Use as ``async with ManagedProsody(path) as broker: ...`` or call ``start``/``stop``.
    Ports left as ``None`` are picked free on loopback once, here, and kept across restarts.
    """

    binary = "prosody"  # looked up on PATH at each start

    def __init__(
        self,
        state_dir: Path,
        *,
        domain: str = "csms.local",
        component_domains: Sequence[str] = ("stations.csms.local",),
        host: str = "127.0.0.1",
        c2s_port: int | None = None,
        component_port: int | None = None,
        log_level: str = "warn",
        component_secret: str | None = None,
        tls: bool = True,
        ca: CertificateAuthority | None = None,
    ) -> None:
        if log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {LOG_LEVELS}, not {log_level!r}")
        check_domains((domain, *component_domains))
        if not tls and not is_loopback(host):
            raise ValueError(f"a broker without TLS may listen on loopback only, not {host}")
        self._state_dir = Path(state_dir).resolve()
        self._domain = domain
        self._component_domains = tuple(component_domains)
        self._host = host
        # ports picked here may be taken by the time the broker binds them (another
        # process's outgoing connection draws from the same range): a first start moves on
        # to others then; given ports, or a broker that ran before, keep theirs
        self._movable_ports = not c2s_port and not component_port
        self._c2s_port, self._component_port = c2s_port or 0, component_port or 0
        self._pick_ports()
        self._log_level = log_level
        self._secret: str | None = component_secret  # None: made once, kept in state_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._tls = tls
        self._ca = ca  # None: one of its own, made in state_dir/ca on first start

    @property
    def state_dir(self) -> Path:
        """The directory holding config, data, pidfile and log."""
        return self._state_dir

    @property
    def config_path(self) -> Path:
        """The generated ``prosody.cfg.lua`` (rewritten at each start)."""
        return self._state_dir / "prosody.cfg.lua"

    @property
    def log_path(self) -> Path:
        """Prosody's log file; its console output goes there too."""
        return self._state_dir / "prosody.log"

    @property
    def endpoint(self) -> BrokerEndpoint:
        """How to reach this broker."""
        return BrokerEndpoint(
            host=self._host, c2s_port=self._c2s_port, component_port=self._component_port,
            domain=self._domain, muc_domain=f"rooms.{self._domain}",
            component_domains=self._component_domains, component_secret=self._component_secret(),
            config_path=self.config_path, cafile=self._authority().certificate_path
            if self._tls else None,
        )

    @property
    def tls(self) -> bool:
        """Whether clients must start TLS (components stay on loopback, in plaintext)."""
        return self._tls

    def _authority(self) -> CertificateAuthority:
        if self._ca is None:
            self._ca = CertificateAuthority(self._state_dir / "ca")
        return self._ca

    def _server_certificate(self) -> Issued:
        return broker_certificate(self._authority(), self._state_dir, self._domain, self._host)

    def xmpp_settings(self, **overrides: Any) -> XmppSettings:
        """How the XMPP adapter reaches this broker: host, ports and domains, with station
        addresses (``cs-*``) on its first component domain, TLS verified against this
        broker's CA; ``overrides`` change the rest (a short ``reconnect_cap_s`` for a test
        waiting on a link to come back, say)."""
        ep = self.endpoint
        routes = tuple(("cs-*", d) for d in ep.component_domains[:1])
        tls = {"tls": True, "cafile": str(ep.cafile)} if ep.cafile else {}
        return XmppSettings(**{"host": ep.host, "c2s_port": ep.c2s_port,
                               "component_port": ep.component_port, "domain": ep.domain,
                               "muc_domain": ep.muc_domain, "routes": routes, **tls,
                               **overrides})

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._proc.pid if self._proc is not None and self.running else None

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    async def __aenter__(self) -> ManagedProsody:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _pick_ports(self) -> None:
        host = self._host
        self._c2s_port = self._c2s_port or bind_port(host)
        self._component_port = self._component_port or bind_port(host)
        while self._component_port == self._c2s_port:
            self._component_port = bind_port(host)

    async def start(self, timeout: float = 15.0) -> BrokerEndpoint:
        """Spawn Prosody and return once it serves clients (and so components too).

        Raises ``BrokerNotInstalledError`` without Prosody, ``BrokerStartError`` (with the log's
        tail) when a port is taken or Prosody exits or does not serve within ``timeout`` seconds.
        Does nothing when already running.
        """
        if self.running:
            return self.endpoint
        binary = shutil.which(self.binary)
        if binary is None:
            raise BrokerNotInstalledError(INSTALL_HINT)
        for sub in ("data", "certs"):  # an empty certs/ keeps certmanager from logging errors
            (self._state_dir / sub).mkdir(parents=True, exist_ok=True)
        if self._tls:
            self._server_certificate()
        for attempt in range(3 if self._movable_ports else 1):
            try:
                await self._start(binary, timeout)
                break
            except _PortTaken:
                if attempt == 2 or not self._movable_ports:
                    raise
                log.info("a port picked for %s was taken meanwhile: picking others",
                         self._domain)
                self._c2s_port = self._component_port = 0
                self._pick_ports()
        self._movable_ports = False  # clients know these ports now
        return self.endpoint

    async def _start(self, binary: str, timeout: float) -> None:
        self.config_path.write_text(self._render_config(), encoding="utf-8")
        try:
            managed.check_ports_free(self._host, (self._c2s_port, self._component_port))
        except BrokerStartError as exc:
            raise _PortTaken(str(exc)) from None
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._proc = managed.spawn([binary, "--config", str(self.config_path), "-F"],
                                   cwd=self._state_dir, log_path=self.log_path)
        try:
            await self._wait_ready(timeout, log_offset)
        except BaseException:  # failed or cancelled: leave no half-started broker behind
            self.kill()
            raise

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Safe to call repeatedly."""
        proc = self._proc
        if proc is None:
            return
        pidfile = self._state_dir / "prosody.pid"

        def poke() -> None:
            if not pidfile.exists():
                # The shutdown is complete (mod_posix removes the pidfile on "server-stopped"),
                # but with clients connected the event loop then sleeps up to 1 s on its quit
                # timer before exiting. Any handled signal interrupts that sleep; SIGUSR1 does
                # nothing else.
                proc.send_signal(signal.SIGUSR1)

        await managed.terminate(proc, timeout, poke)

    def kill(self) -> None:
        """SIGKILL the child and wait for it (a broker crash, for tests)."""
        if self._proc is not None:
            managed.kill(self._proc)

    async def restart(self, timeout: float = 15.0) -> BrokerEndpoint:
        """Stop if running, then start again on the same ports and data (accounts survive)."""
        await self.stop()
        return await self.start(timeout)

    def create_accounts(self, accounts: Mapping[str, str]) -> None:
        """Create accounts (or reset their passwords): ``localpart -> password`` on ``domain``.

        Works with the server up or down. Localparts are case-folded and must be ASCII without
        ``"&'/:<>@``, spaces or control characters (others need nodeprep: use prosodyctl).
        """
        entries = [check_account(user, pw) for user, pw in accounts.items()]
        folder = self._accounts_dir()
        folder.mkdir(parents=True, exist_ok=True)
        for user, password in entries:
            target = folder / f"{_path_encode(user)}.dat"
            scratch = target.with_name(target.name + "~")
            scratch.write_text(f'return {{\n\t["password"] = {_lua(password)};\n}};\n',
                               encoding="utf-8")
            os.replace(scratch, target)

    def has_account(self, user: str) -> bool:
        """Whether the account ``user@domain`` exists."""
        return (self._accounts_dir() / f"{_path_encode(check_account(user)[0])}.dat").is_file()

    def _accounts_dir(self) -> Path:
        return self._state_dir / "data" / _path_encode(self._domain) / "accounts"

    def _component_secret(self) -> str:
        if self._secret is None:
            self._secret = stored_secret(self._state_dir / "component.secret")
        return self._secret

    def _render_config(self) -> str:
        components = "".join(
            f"\nComponent {_lua(d)}\n\tcomponent_secret = {_lua(self._component_secret())}\n"
            for d in self._component_domains
        )
        state = self._state_dir
        return _CONFIG.substitute(
            pidfile=_lua(str(state / "prosody.pid")), data=_lua(str(state / "data")),
            certs=_lua(str(state / "certs")), log=_lua(str(self.log_path)),
            level=_lua(self._log_level), host=_lua(self._host), c2s=self._c2s_port,
            component=self._component_port, domain=_lua(self._domain),
            muc=_lua(f"rooms.{self._domain}"), components=components,
            tls=self._tls_settings(),
        )

    def _tls_settings(self) -> str:
        if not self._tls:
            return ('c2s_require_encryption = false\nallow_unencrypted_plain_auth = true\n'
                    f"modules_enabled = {{ {_ENABLED} }}\n"
                    'modules_disabled = { "tls", ' + _DISABLED + ' }')
        issued = self._server_certificate()
        return (f"ssl = {{ key = {_lua(str(issued.key))}, certificate = "
                f"{_lua(str(issued.certificate))}, protocol = \"tlsv1_2+\" }}\n"
                "c2s_require_encryption = true\nallow_unencrypted_plain_auth = false\n"
                f"modules_enabled = {{ \"tls\", {_ENABLED} }}\n"
                "modules_disabled = { " + _DISABLED + " }")

    async def _wait_ready(self, timeout: float, log_offset: int) -> None:
        # Ready means serving, not merely listening: Prosody opens its ports while loading
        # modules but installs its SIGTERM handler, and serves anyone, only once its main loop
        # runs. An answered c2s stream therefore also means every other listener is open.
        assert self._proc is not None

        def tail() -> str:
            return managed.log_tail(self.log_path, log_offset)

        try:
            await managed.wait_serving(self._proc, self._host, self._c2s_port, self._domain,
                                       timeout, "Prosody", tail)
        except BrokerStartError:
            if "Failed to open server port" in tail():
                raise _PortTaken(f"Prosody could not open its ports; {tail()}") from None
            raise
        if "Failed to open server port" in tail():
            raise _PortTaken(f"Prosody could not open its ports; {tail()}")


class _PortTaken(BrokerStartError):
    """A port the broker was to listen on is taken."""


_CONFIG = Template("""\
-- Generated by broker_bridge.prosody (ManagedProsody): edits are overwritten at each start.
run_as_root = true
pidfile = $pidfile
data_path = $data
certificates = $certs
log = { { levels = { min = $level }, to = "file", filename = $log } }
interfaces = { $host }
c2s_ports = { $c2s }
component_ports = { $component }
component_interface = $host
s2s_ports = {}
http_ports = {}
https_ports = {}
-- tcp_backlog: the default 128 stalls mass connects of thousands of stations
network_settings = { nagle = false, tcp_backlog = 1024 }
limits = {}
c2s_direct_tls_ports = {}
authentication = "internal_plain"
storage = "internal"
$tls

VirtualHost $domain

Component $muc "muc"
\tmuc_room_locking = false
\t-- every occupant would otherwise receive every other occupant's presence: N^2 on joins
\tmuc_room_default_presence_broadcast = {}
\t-- frames carry no <body/> and are never stored, but keep history off for anything else
\tmuc_room_default_history_length = 0
$components""")

_ENABLED = '"roster", "saslauth", "disco", "smacks", "ping", "offline", "posix"'
_DISABLED = '"s2s", "s2s_auth_certs", "s2s_bidi", "dialback", "limits"'


def _path_encode(name: str) -> str:
    """``util/datamanager.lua``'s ``encode``: every byte but ASCII letters and digits as %xx."""
    return "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"%{b:02x}"
                   for b in name.encode("utf-8"))


def _lua(text: str) -> str:
    """A Lua string literal: printable ASCII kept but ``"`` and ``\\``, other bytes escaped."""
    return '"' + "".join(chr(b) if 0x20 <= b < 0x7F and chr(b) not in '"\\' else f"\\{b:03d}"
                         for b in text.encode("utf-8")) + '"'
