"""The cloud broker at scale: a private ejabberd cluster run as child processes of the CSMS.

Prosody is single-threaded (about 12,000 to 16,000 messages/s on our machines, whatever the
clients do); ejabberd uses every core and clusters, so a cloud that outgrows one Prosody runs
ejabberd nodes that share accounts and routes: a client or component connected to any node
reaches every JID on all of them, and a transport given every node (``xmpp_settings``, whose
``alternates`` list the other nodes) moves to a surviving one when its own dies.

``ManagedEjabberdCluster`` runs N nodes (two by default) from Debian's ejabberd 23.01, with all
state under one directory: ``node<i>/`` holds each node's generated ``ejabberd.yml``, Mnesia
spool and logs, ``.erlang.cookie`` the cluster's shared secret, ``component.secret`` the XEP-0114
secret. Nothing of the packaged system service is used.

How the nodes are run (measured; see ../shared/XMPP-FACTS.md):

* ``erl`` is started directly, not through ``ejabberdctl``: as root ``ejabberdctl`` re-executes
  itself through ``su ejabberd``, which drops our death signal and cannot enter a private state
  directory. The Erlang VM itself runs fine as root or as any user owning the directory.
* No ``epmd``: it is a machine-wide daemon that outlives us and keeps a global namespace of node
  names. Each node instead listens for its peers on one distribution port on its own loopback
  address (node ``i`` on ``127.0.0.i``, ``-erl_epmd_port``), so node names never collide with
  another cluster's and nothing is left running after a crash.
* Cluster membership lives in Mnesia's schema: node ``i > 1`` joins node 1 once
  (``ejabberd_cluster:join``, the code of ``ejabberdctl join_cluster``), and a node restarted
  later reconnects to its peers by itself. Nodes start concurrently: a node whose peers went
  down after it waits for them before serving, so a sequential start could wait for ever.
* Administration (joins, accounts) goes through a short-lived hidden Erlang node that calls the
  running node (about 0.3 s to boot; a thousand accounts in under a second); ``ejabberdctl
  register`` would boot one VM per account.
* Loopback only, no TLS, PLAIN allowed; no shapers (Debian's default throttles clients to
  3 kB/s); listener ``backlog: 1024`` (the default of 5 stalls mass connects); stanzas up to 1 MB
  (our frames are at most 250 kB of XML); offline storage and stream-management queues sized
  for a cloud, not a chat server; no ``mod_fail2ban`` (a reconnect storm is not an attack); the
  open-file limit raised to the hard limit.

The process hygiene (own process group, death with the parent, the ``atexit`` hook, readiness as
an answered stream) is ``broker_bridge.managed``'s, shared with the managed Prosody; the generated
files are in ``config``, the foreground command in ``__main__``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker_bridge import managed
from broker_bridge.ejabberd.config import CONFIG, REGISTER, atom, binary, string
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
from broker_bridge.xmpp.addresses import XmppSettings

INSTALL_HINT = (
    "ejabberd is not installed: run `make setup` (as root it installs the Debian package "
    "`ejabberd`), or `apt-get install ejabberd`"
)
LOG_LEVELS = ("critical", "error", "warning", "notice", "info", "debug")
NODE_PREFIX = "csms"  # node i is csms<i>@127.0.0.<i>
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")  # ejabberdctl lives there, often off PATH
_SHELL_VALUE = r"""^\s*{name}=["']?([^"'\s]+)"""


class EjabberdCommandError(RuntimeError):
    """An administration call to a running node failed; the message holds its answer."""


@dataclass(frozen=True)
class EjabberdInstall:
    """Where ejabberd's Erlang code is: the ``erl`` to run and the ``ERL_LIBS`` holding
    ``ejabberd-<version>/``."""

    erl: str
    libs: str

    @classmethod
    def find(cls) -> EjabberdInstall:
        """Read them from ``ejabberdctl`` (a shell script that names both), falling back to
        ``erl`` on PATH and Debian's library directory; ``BrokerNotInstalledError`` without."""
        search = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
        ctl = shutil.which("ejabberdctl", path=search)
        script = ""
        if ctl is not None:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                script = Path(ctl).read_text(encoding="utf-8")
        erl = _shell_value(script, "ERL") or shutil.which("erl")
        libs = _shell_value(script, "ERL_LIBS") or "/usr/lib/x86_64-linux-gnu"
        if ctl is None or erl is None or not os.access(erl, os.X_OK) \
                or not list(Path(libs).glob("ejabberd-*/ebin/ejabberd.app")):
            raise BrokerNotInstalledError(INSTALL_HINT)
        return cls(erl, libs)


def _shell_value(script: str, name: str) -> str | None:
    match = re.search(_SHELL_VALUE.format(name=name), script, re.M)
    return match.group(1) if match else None


@dataclass
class _Node:
    index: int  # 1-based
    dist_ip: str  # where its peers reach it
    c2s_port: int
    component_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"{NODE_PREFIX}{self.index}@{self.dist_ip}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def console(self) -> Path:
        return self.dir / "console.log"


class ManagedEjabberdCluster:
    """``nodes`` private ejabberd nodes in one cluster, whose whole state lives in ``state_dir``.

    Use as ``async with ManagedEjabberdCluster(path) as cluster: ...`` or call
    ``start``/``stop``. Nodes are numbered from 1; ports not given (one per node) are picked free
    on loopback once, here, and kept across restarts. ``kill(node)`` and ``restart(node)`` are a node's crash and return.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        nodes: int = 2,
        domain: str = "csms.local",
        component_domains: Sequence[str] = ("stations.csms.local",),
        host: str = "127.0.0.1",
        c2s_ports: Sequence[int] | None = None,
        component_ports: Sequence[int] | None = None,
        log_level: str = "warning",
        tls: bool = True,
        ca: CertificateAuthority | None = None,
    ) -> None:
        if log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {LOG_LEVELS}, not {log_level!r}")
        if not 1 <= nodes <= 254:
            raise ValueError(f"a cluster has 1 to 254 nodes, not {nodes}")
        for given in (c2s_ports, component_ports):
            if given is not None and len(given) != nodes:
                raise ValueError(f"give one port per node ({nodes}), not {list(given)}")
        check_domains((domain, *component_domains))
        self._state_dir = Path(state_dir).resolve()
        self._domain = domain
        self._component_domains = tuple(component_domains)
        self._host = host
        self._log_level = log_level
        self._tls = tls
        self._ca = ca  # None: one of its own, in state_dir/ca
        self._secret: str | None = None
        self._install: EjabberdInstall | None = None
        ports: set[int] = {*(c2s_ports or ()), *(component_ports or ())}

        def fresh() -> int:
            port = bind_port(host)
            while port in ports:
                port = bind_port(host)
            ports.add(port)
            return port

        self._nodes = [
            _Node(i, f"127.0.0.{i}", c2s_ports[i - 1] if c2s_ports else fresh(),
                  component_ports[i - 1] if component_ports else fresh(),
                  self._state_dir / f"node{i}")
            for i in range(1, nodes + 1)]
        # One distribution port for every node, each on its own address (no epmd; see above).
        self._dist_port = fresh()
        while not all(bind_port(n.dist_ip, self._dist_port) for n in self._nodes):
            self._dist_port = fresh()

    # -- what it is ----------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """The directory holding every node's config, spool and logs."""
        return self._state_dir

    @property
    def node_count(self) -> int:
        return len(self._nodes)

    def node_name(self, node: int) -> str:
        """The Erlang node name of node ``node`` (``csms1@127.0.0.1``)."""
        return self._node(node).name

    def config_path(self, node: int) -> Path:
        """The generated ``ejabberd.yml`` of a node (rewritten at each start)."""
        return self._node(node).dir / "ejabberd.yml"

    def log_path(self, node: int) -> Path:
        """A node's console output: everything it logs, and what the VM says before that."""
        return self._node(node).console

    def endpoint(self, node: int = 1) -> BrokerEndpoint:
        """How to reach node ``node``."""
        n = self._node(node)
        return BrokerEndpoint(
            host=self._host, c2s_port=n.c2s_port, component_port=n.component_port,
            domain=self._domain, muc_domain=f"rooms.{self._domain}",
            component_domains=self._component_domains, component_secret=self.component_secret,
            cafile=self._authority().certificate_path if self._tls else None)

    def _authority(self) -> CertificateAuthority:
        if self._ca is None:
            self._ca = CertificateAuthority(self._state_dir / "ca")
        return self._ca

    def _server_certificate(self) -> Issued:
        return broker_certificate(self._authority(), self._state_dir, self._domain, self._host)

    @property
    def endpoints(self) -> tuple[BrokerEndpoint, ...]:
        """Every node's endpoint, node 1 first."""
        return tuple(self.endpoint(n.index) for n in self._nodes)

    @property
    def component_secret(self) -> str:
        """The XEP-0114 secret of every component domain (kept in the state directory)."""
        if self._secret is None:
            self._secret = stored_secret(self._state_dir / "component.secret")
        return self._secret

    def xmpp_settings(self, node: int = 1, **overrides: Any) -> XmppSettings:
        """How the XMPP adapter reaches the cluster: first node ``node``, then the others in
        turn (``alternates``); station addresses (``cs-*``) on the first component domain.
        ``overrides`` change the rest (a short ``reconnect_cap_s`` for a test, say)."""
        first = self._node(node)
        ring = self._nodes[first.index:] + self._nodes[:first.index - 1]
        routes = tuple(("cs-*", d) for d in self._component_domains[:1])
        tls = ({"tls": True, "cafile": str(self._authority().certificate_path)}
               if self._tls else {})
        return XmppSettings(**{
            "host": self._host, "c2s_port": first.c2s_port,
            "component_port": first.component_port, "domain": self._domain,
            "muc_domain": f"rooms.{self._domain}", "routes": routes,
            "alternates": tuple((self._host, n.c2s_port, n.component_port) for n in ring),
            **tls, **overrides})

    def describe(self) -> str:
        """Human text: every node's addresses, the domains, the component secret."""
        lines = [f"ejabberd cluster of {self.node_count} nodes, domain {self._domain}, " + (
            f"STARTTLS required, verify with {self._authority().certificate_path}"
            if self._tls else "SASL PLAIN without TLS (loopback only)")]
        lines += [f"  node {n.index} ({n.name}): clients {self._host}:{n.c2s_port}, "
                  f"components {self._host}:{n.component_port}" for n in self._nodes]
        lines += [f"  component domains: {', '.join(self._component_domains) or '(none)'}",
                  f"  component secret:  {self.component_secret}",
                  f"  chat rooms (MUC):  rooms.{self._domain}",
                  "  accounts:          ManagedEjabberdCluster.create_accounts"]
        return "\n".join(lines)

    def pid(self, node: int) -> int | None:
        """A node's process id while it runs."""
        n = self._node(node)
        return n.proc.pid if n.proc is not None and n.running else None

    def running(self, node: int | None = None) -> bool:
        """Whether node ``node`` runs; without one, whether every node does."""
        if node is None:
            return all(n.running for n in self._nodes)
        return self._node(node).running

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> ManagedEjabberdCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self, timeout: float = 60.0) -> tuple[BrokerEndpoint, ...]:
        """Start every node that is not running, all at once; join new nodes to node 1; return
        once every node serves clients (and so components too).

        Raises ``BrokerNotInstalledError`` without ejabberd, ``BrokerStartError`` (with the
        log's tail) when a port is taken or a node exits or does not serve within ``timeout``
        seconds; a failed start leaves no node of it running.
        """
        idle = [n for n in self._nodes if not n.running]
        if not idle:
            return self.endpoints
        fresh = {n.index for n in idle if not (n.dir / "spool").exists()}
        starts = [asyncio.ensure_future(self._start_node(n, timeout)) for n in idle]
        try:
            async with asyncio.timeout(timeout):
                try:
                    await asyncio.gather(*starts)
                finally:  # one failed: the others need not go on
                    for task in starts:
                        task.cancel()
                    await asyncio.gather(*starts, return_exceptions=True)
                seed = self._nodes[0]
                for n in idle:
                    # a new node joins; one that was a member before reconnects by itself
                    if n is not seed and (n.index in fresh
                                          or seed.name not in await self.members(n.index)):
                        await self._join(n, seed, timeout)
        except TimeoutError:
            for n in idle:
                self._kill(n)
            raise BrokerStartError(f"the ejabberd cluster did not start within {timeout:g} s; "
                                   f"{managed.log_tail(idle[0].console)}") from None
        except BaseException:  # failed or cancelled: leave no half-started node behind
            for n in idle:
                self._kill(n)
            raise
        return self.endpoints

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``timeout`` seconds), all at once.
        Safe to call repeatedly."""
        await asyncio.gather(*(managed.terminate(n.proc, timeout)
                               for n in self._nodes if n.proc is not None))

    def kill(self, node: int) -> None:
        """SIGKILL a node and reap it (a node crash, for tests); its peers carry on."""
        self._kill(self._node(node))

    async def restart(self, node: int, timeout: float = 60.0) -> BrokerEndpoint:
        """Stop a node if it runs, start it on the same ports and spool, and return once it
        serves and is back in the cluster (Mnesia reconnects it; it is joined if it was not)."""
        n = self._node(node)
        if n.proc is not None:
            await managed.terminate(n.proc, timeout)
        async with asyncio.timeout(timeout):
            await self._start_node(n, timeout)
            peer = next((p for p in self._nodes if p is not n and p.running), None)
            if peer is not None and peer.name not in await self.members(node):
                await self._join(n, peer, timeout)
        return self.endpoint(node)

    async def members(self, node: int = 1) -> list[str]:
        """The nodes of the cluster that node ``node`` sees running (Mnesia's view)."""
        n = self._node(node)
        answer = await self._ctl(
            f"R = rpc:call({atom(n.name)}, mnesia, system_info, [running_db_nodes], 10000), "
            "io:format(\"~p~n\", [R]), halt(case R of {badrpc, _} -> 1; _ -> 0 end).",
            timeout=30)
        return re.findall(r"'([^']+)'", answer)

    async def create_accounts(self, accounts: Mapping[str, str]) -> None:
        """Create accounts (or reset their passwords): ``localpart -> password`` on the domain,
        for the whole cluster, through any running node.

        Localparts are case-folded and must be ASCII without ``"&'/:<>@``, spaces or control
        characters. Raises ``EjabberdCommandError`` when no node runs or a node refuses one.
        """
        entries = [check_account(user, pw) for user, pw in accounts.items()]
        node = next((n for n in self._nodes if n.running), None)
        if node is None:
            raise EjabberdCommandError("no node of the ejabberd cluster runs: start it first")
        if not entries:
            return
        # The passwords travel in an owner-only file, not on a command line anyone can read.
        listing = self._state_dir / f"accounts-{secrets.token_hex(4)}.eterm"
        listing.touch(mode=0o600)
        try:
            listing.write_text("".join(f"{{{binary(u)}, {binary(p)}}}.\n" for u, p in entries),
                               encoding="ascii")
            await self._ctl(REGISTER.substitute(
                file=string(str(listing)), node=atom(node.name), host=binary(self._domain)),
                timeout=30 + len(entries) / 100)
        finally:
            listing.unlink(missing_ok=True)

    # -- internals -----------------------------------------------------------------------------

    def _node(self, node: int) -> _Node:
        if not 1 <= node <= len(self._nodes):
            raise ValueError(f"no node {node}: the cluster has nodes 1 to {len(self._nodes)}")
        return self._nodes[node - 1]

    def _kill(self, n: _Node) -> None:
        if n.proc is not None:
            managed.kill(n.proc)

    async def _start_node(self, n: _Node, timeout: float) -> None:
        self._install = self._install or EjabberdInstall.find()
        n.dir.mkdir(parents=True, exist_ok=True)
        self._write_cookie()
        config = n.dir / "ejabberd.yml"
        config.touch(mode=0o600)  # it holds the component secret
        config.write_text(self._render_config(n), encoding="utf-8")
        managed.check_ports_free(self._host, (n.c2s_port, n.component_port))
        managed.check_ports_free(n.dist_ip, (self._dist_port,))
        offset = n.console.stat().st_size if n.console.exists() else 0
        n.proc = managed.spawn(
            [self._install.erl, *self._dist_args(n.name),
             "-kernel", "inet_dist_use_interface", "{" + n.dist_ip.replace(".", ",") + "}",
             "-noinput", "-mnesia", "dir", string(str(n.dir / "spool")), "-s", "ejabberd"],
            cwd=n.dir, log_path=n.console, raise_open_files=True, env=self._env(
                EJABBERD_CONFIG_PATH=str(n.dir / "ejabberd.yml"),
                EJABBERD_LOG_PATH=str(n.dir / "ejabberd.log"),
                ERL_CRASH_DUMP=str(n.dir / "erl_crash.dump")))
        await self._wait_serving(n, timeout, offset)

    async def _wait_serving(self, n: _Node, timeout: float, offset: int) -> None:
        # ejabberd opens its listeners last, once every module runs: an answered c2s stream
        # means the component port is open too.
        assert n.proc is not None
        await managed.wait_serving(n.proc, self._host, n.c2s_port, self._domain, timeout,
                                   f"ejabberd node {n.index}",
                                   lambda: managed.log_tail(n.console, offset))

    async def _join(self, n: _Node, seed: _Node, timeout: float) -> None:
        """Make ``n`` a member of ``seed``'s cluster (its own Mnesia data is replaced by the
        cluster's); ejabberd restarts on ``n`` meanwhile, so wait until it serves again."""
        offset = n.console.stat().st_size if n.console.exists() else 0
        await self._ctl(
            f"R = rpc:call({atom(n.name)}, ejabberd_cluster, join, [{atom(seed.name)}], "
            f"{int(timeout * 1000)}), io:format(\"~p~n\", [R]), "
            "halt(case R of ok -> 0; _ -> 1 end).", timeout=timeout)
        await self._wait_serving(n, timeout, offset)

    async def _ctl(self, code: str, timeout: float) -> str:
        """Run ``code`` on a short-lived hidden Erlang node of the cluster; its output, or
        ``EjabberdCommandError`` when it fails or takes longer than ``timeout`` seconds."""
        self._install = self._install or EjabberdInstall.find()
        self._write_cookie()
        name = f"ctl-{secrets.token_hex(4)}@127.0.0.1"
        output = self._state_dir / f"{name.partition('@')[0]}.out"
        proc = managed.spawn(
            [self._install.erl, *self._dist_args(name), "-dist_listen", "false", "-hidden",
             "-noinput", "-eval", code],
            cwd=self._state_dir, log_path=output, env=self._env())
        try:
            if not await managed.wait_exit(proc, timeout):
                managed.kill(proc)
                raise EjabberdCommandError(f"an ejabberd administration call took more than "
                                           f"{timeout:g} s: {code}")
            managed.kill(proc)  # it exited: this only forgets it
            answer = output.read_text(encoding="utf-8", errors="replace")
        finally:
            output.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise EjabberdCommandError(f"ejabberd refused ({code}): {answer.strip()}")
        return answer

    def _dist_args(self, name: str) -> list[str]:
        return ["-name", name, "-erl_epmd_port", str(self._dist_port), "-start_epmd", "false"]

    def _env(self, **extra: str) -> dict[str, str]:
        assert self._install is not None
        # the user's ERL_FLAGS and the like would reach every node: leave them out
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ERL_", "EJABBERD_"))}
        # HOME: the VM reads the cookie from $HOME/.erlang.cookie
        return env | {"HOME": str(self._state_dir), "ERL_LIBS": self._install.libs,
                      "ERL_CRASH_DUMP_BYTES": "0"} | extra

    def _write_cookie(self) -> None:
        # The shared secret of the nodes: whoever knows it may run any code on them. Erlang
        # refuses a cookie file that others can read.
        cookie = self._state_dir / ".erlang.cookie"
        if not cookie.is_file():
            self._state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(cookie, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(secrets.token_hex(20))

    def _render_config(self, n: _Node) -> str:
        q = json.dumps  # a JSON string is a YAML double-quoted scalar
        components = "".join(f"\n      {q(d)}:\n        password: {q(self.component_secret)}"
                             for d in self._component_domains)
        if self._tls:
            issued = self._server_certificate()
            certfiles = f"[{q(str(issued.certificate))}, {q(str(issued.key))}]"
        else:
            certfiles = "[]"
        return CONFIG.substitute(
            domain=q(self._domain), muc=q(f"rooms.{self._domain}"), level=self._log_level,
            host=q(self._host), c2s=n.c2s_port, component=n.component_port,
            components=components or " {}", certfiles=certfiles,
            starttls="true" if self._tls else "false")
