"""The operator's side of the command line: ``csms get|set|discover`` against a running system.

The client connects to the broker as an operator account (from the ``connect.json`` that
``csms demo`` writes, or from flags), asks one actor, prints typed values, and turns every
failure into a sentence that says what to do. Values are written as text; the actor parses
them according to the type it declares at the key-path.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509

from actors.logic.revocations import LIST_PATH
from actors.logic.sealed_values import CERTIFICATE_PATH, is_secret, recipient_of, seal_writes
from actors.runtime.actor import Actor, Context, RoleDirectory, handles
from broker_bridge import Endpoint, Router
from broker_bridge.session.certificates import RevocationList
from broker_bridge.xmpp import BrokerUnreachableError, XmppSettings, XmppTransport, is_loopback
from keypath import GLOBSTAR, KeyPath, KeyPathError, KeyPattern
from object_model import ErrorCode, ModelError, Role
from object_model.messages import (
    FanOutRequest,
    FanOutResponse,
    PropertyTreeDiscoveryRequest,
    PropertyTreeDiscoveryResponse,
    PropertyValueRead,
    PropertyValueReadResponse,
    PropertyValueWrite,
    PropertyValueWriteResponse,
    WriteItem,
)
from object_model.monitoring import (
    MonitoringReport,
    MonitoringTaskSetup,
    OnChange,
    Periodic,
    ReporterConfig,
    TaskAction,
    TaskControl,
    TaskState,
    TaskStatus,
    Threshold,
)
from object_model.operations import RemoteOperation
from object_model.station import shared_station_schema
from object_model.types import from_micros

T = TypeVar("T")
DEFAULT_CONNECT = Path("state/demo/connect.json")


class ClientError(RuntimeError):
    """Something the user can fix; the message says how."""


def _broker_settings(broker: dict[str, Any]) -> XmppSettings:
    """A broker of ``connect.json``: TLS unless ``"tls": false`` (loopback only), verified
    against its ``cafile``."""
    tls = broker.get("tls", True) is not False
    if not tls and not is_loopback(broker["host"]):
        raise ClientError(f"\"tls\": false is allowed for a broker on loopback only, not "
                          f"{broker['host']}")
    return XmppSettings(host=broker["host"], c2s_port=broker["c2s_port"],
                        domain=broker["domain"], muc_domain=broker["muc_domain"],
                        routes=tuple(tuple(r) for r in broker.get("routes", ())),
                        tls=tls, cafile=broker.get("cafile"), connect_timeout_s=5.0)


@dataclass(frozen=True)
class Connection:
    """How an operator reaches a running system: its account, the broker(s), and (when
    known) the actors and the broker each is on.

    ``connect.json`` names one ``broker``, or several ``brokers`` by name with ``actors``
    mapping each actor to its broker's name (the demo: the cloud's and one per site, so that
    ``csms get cs-site1-1 ...`` talks to the station on its site's broker)."""

    settings: XmppSettings
    account: str
    password: str
    actors: tuple[str, ...] = ()
    homes: Mapping[str, XmppSettings] = field(default_factory=dict)
    signing: Mapping[str, Any] | None = None  # ``key_dir`` of the account's key, ``keys``

    def settings_for(self, actor: str) -> XmppSettings:
        """The broker ``actor`` is on (the first one, if unknown)."""
        return self.homes.get(actor, self.settings)

    @classmethod
    def load(cls, path: Path) -> Connection:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ClientError(f"no running system described at {path}: start one with "
                              f"`csms demo`, or give --connect FILE") from None
        except json.JSONDecodeError as exc:
            raise ClientError(f"{path} is not valid JSON: {exc}") from None
        try:
            signing = raw.get("signing")
            if "brokers" not in raw:
                return cls(_broker_settings(raw["broker"]), raw["account"], raw["password"],
                           tuple(raw.get("actors", ())), signing=signing)
            brokers = {name: _broker_settings(b) for name, b in raw["brokers"].items()}
            actors: dict[str, str] = raw.get("actors", {})
            return cls(next(iter(brokers.values())), raw["account"], raw["password"],
                       tuple(actors), {a: brokers[b] for a, b in actors.items()},
                       signing=signing)
        except (KeyError, TypeError, StopIteration, AttributeError) as exc:
            raise ClientError(f"{path} does not describe a system ({exc!r} is missing or "
                              f"wrong): write it as `csms demo` does") from None


class OperatorClient(Actor):
    """An operator on the network: it asks, and takes the monitoring reports it asked for
    (``reports``)."""

    role = Role.OPERATOR

    def __init__(self, address: str, links: Router | Endpoint, *,
                 roles: RoleDirectory | None = None) -> None:
        super().__init__(address, links, roles=roles)
        self.reports: asyncio.Queue[MonitoringReport] = asyncio.Queue()

    @handles(MonitoringReport)
    async def on_report(self, report: MonitoringReport, ctx: Context) -> None:
        self.reports.put_nowait(report)


async def with_client(conn: Connection, actor: str,
                      work: Callable[[OperatorClient], Awaitable[T]]) -> T:
    """Connect, check ``actor`` is known, run ``work``, disconnect."""
    if conn.actors and actor not in conn.actors:
        shown = ", ".join(conn.actors[:12]) + (" ..." if len(conn.actors) > 12 else "")
        raise ClientError(f"unknown actor {actor!r}; this system has: {shown}")
    transport = XmppTransport.client(conn.settings_for(actor), conn.account, conn.password)
    guard = None
    if conn.signing is not None:  # the system signs: so does the operator, with its key
        from actors.app.signing import Signing

        guard = Signing(conn.signing["key_dir"], conn.signing.get("keys", {}),
                        encryption_keys=conn.signing.get("encryption_keys", {}),
                        anchor=conn.signing.get("anchor")).guard([conn.account])
    endpoint = Endpoint(transport, name=conn.account, guard=guard)
    try:
        await endpoint.start()
    except BrokerUnreachableError as exc:
        raise ClientError(f"{exc}") from None
    client = OperatorClient(conn.account, endpoint, roles=RoleDirectory())
    await client.start()
    try:
        return await work(client)
    except ModelError as exc:
        if exc.code is ErrorCode.TIMEOUT:
            raise ClientError(f"no answer from {actor!r}: is it running? ({exc.text})") from None
        raise ClientError(f"{actor}: {exc.code.value}: {exc.text}"
                          + (f" (at {exc.path})" if exc.path else "")) from None
    finally:
        await client.stop()
        await endpoint.stop(flush_timeout=1)


def _path(text: str) -> KeyPath:
    try:
        return KeyPath.parse(text)
    except KeyPathError as exc:
        raise ClientError(f"{exc}") from None


def format_value(value: Any, kind: dict[str, Any] | None) -> str:
    """A value as a person reads it, using the type the actor declared."""
    unit = f" {kind['unit']}" if kind and kind.get("unit") else ""
    name = (kind or {}).get("type")
    if name == "timestamp" and isinstance(value, int):
        return from_micros(value).isoformat().replace("+00:00", "Z")
    if name == "duration" and isinstance(value, int):
        return f"{value / 1e6:g} s"
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value}{unit}"


async def get(conn: Connection, actor: str, path_text: str) -> list[str]:
    path = _path(path_text)

    async def work(client: OperatorClient) -> list[str]:
        answer = await client.request(actor, PropertyValueRead(paths=[path]), timeout=5)
        assert isinstance(answer, PropertyValueReadResponse)
        if answer.failures:
            failure = answer.failures[0]
            raise ClientError(f"{actor}: {failure.code.value}: {failure.text}")
        kinds = await _types(client, actor, path)
        return [f"{p} = {format_value(v, kinds.get(p))}  (revision {r})"
                for p, r, v in sorted(answer.values, key=lambda item: item[0])]

    return await with_client(conn, actor, work)


async def _types(client: OperatorClient, actor: str, path: KeyPath) -> dict[KeyPath, Any]:
    patterns = [KeyPattern.from_path(path), KeyPattern([*path.segments, GLOBSTAR])]
    try:
        answer = await client.request(actor, PropertyTreeDiscoveryRequest(
            patterns=patterns, include_values=False, include_types=True), timeout=5)
    except ModelError:
        return {}
    assert isinstance(answer, PropertyTreeDiscoveryResponse)
    return dict(answer.types)


EVERY_STATION = "stations/*/"
"""How a ``csms set`` path at a CSMS names all its stations at once (a fan-out)."""
SHOWN_FAILURES = 3
"""Stations shown per kind of failure of a fan-out; the rest are counted."""


async def set_value(conn: Connection, actor: str, path_text: str, text: str, *,
                    site: str | None = None) -> list[str]:
    """Write ``text`` at ``path_text`` of ``actor``; at a CSMS, ``stations/*/<path>`` writes
    it to every station (of ``site`` only, if given) with one fan-out request."""
    if path_text.startswith(EVERY_STATION):
        return await set_everywhere(conn, actor, path_text[len(EVERY_STATION):], text,
                                    site=site)
    if site is not None:
        raise ClientError("--site picks the stations of a stations/*/... write; "
                          f"{path_text} names one value")
    path = _path(path_text)

    async def work(client: OperatorClient) -> list[str]:
        write = PropertyValueWrite(writes=[WriteItem(path=path, value=text, text=True)])
        answer = await client.request(actor, await _seal_secret(client, conn, actor, write),
                                      timeout=10)
        assert isinstance(answer, PropertyValueWriteResponse)
        state = "changed" if answer.changed else "unchanged (it already held that value)"
        return [f"{actor}: {path} {state}; revision {answer.revision}"]

    return await with_client(conn, actor, work)


async def _seal_secret(client: OperatorClient, conn: Connection, actor: str,
                       write: PropertyValueWrite) -> PropertyValueWrite:
    """``write`` (one item, to ``actor`` or to a station through it: ``stations/<station>/``)
    with a secret sealed to the station's key, read from its certificate and checked against
    the operator's root and the revocation list the CSMS holds
    (``actors.logic.sealed_values``). A system that does not sign takes secrets in clear."""
    [item] = write.writes
    station, inside = actor, item.path
    segments = item.path.segments
    if len(segments) > 2 and segments[0] == "stations":
        station, inside = str(segments[1]), KeyPath(*segments[2:])
    schema = shared_station_schema()
    if conn.signing is None or not is_secret(schema, item.model_copy(update={"path": inside})):
        return write
    anchor = conn.signing.get("anchor")
    if anchor is None:
        raise ClientError(f"{inside} is a secret, sealed to {station}'s key from its "
                          f"certificate: {conn.signing.get('key_dir', 'connect.json')} names no "
                          "operator root (\"anchor\") to check that certificate with")
    root = x509.load_pem_x509_certificate(Path(anchor).read_bytes())
    mount = KeyPath(*segments[:len(segments) - len(inside.segments)])
    paths = [mount / KeyPath.parse(CERTIFICATE_PATH)]
    if mount.segments:  # a CSMS: the revocation list it holds
        paths.append(KeyPath.parse(LIST_PATH))
    answer = await client.request(actor, PropertyValueRead(paths=paths), timeout=5)
    if not isinstance(answer, PropertyValueReadResponse):
        raise ClientError(f"{actor}: no answer to reading {paths[0]}")
    if answer.failures:
        failure = answer.failures[0]
        raise ClientError(f"cannot seal {inside} to {station}: reading {failure.path}: "
                          f"{failure.code.value}: {failure.text}")
    shown = {path: value for path, _, value in answer.values}
    try:
        revoked = (RevocationList.decode(shown[paths[1]], [root])
                   if len(paths) > 1 and shown.get(paths[1]) else None)
        recipient = recipient_of(shown.get(paths[0]), station, [root],
                                 time.time_ns() // 1000, revoked)
    except ModelError as exc:
        raise ClientError(f"cannot seal {inside} to {station}: {exc.text}") from None
    sealed = seal_writes(PropertyValueWrite(writes=[item.model_copy(update={"path": inside})]),
                         schema, station, recipient).writes[0]
    return write.model_copy(update={"writes": [sealed.model_copy(update={"path": item.path})]})


async def set_everywhere(conn: Connection, actor: str, path_text: str, text: str, *,
                         site: str | None = None) -> list[str]:
    """One ``FanOutRequest`` writing ``text`` at ``path_text`` of every station ``actor``
    (a CSMS) manages: a line per station that failed, then the count of those that did not."""
    path = _path(path_text)
    if is_secret(shared_station_schema(), WriteItem(path=path, value=text, text=True)):
        raise ClientError(f"{path} is a secret, sealed to each station's own key: write it to "
                          "one station at a time (csms set STATION PATH VALUE)")

    async def work(client: OperatorClient) -> list[str]:
        answer = await client.request(actor, FanOutRequest(site=site, item=PropertyValueWrite(
            writes=[WriteItem(path=path, value=text, text=True)])), timeout=60)
        assert isinstance(answer, FanOutResponse)
        failed = [r for r in answer.results if r.error is not None]
        lines: list[str] = []
        for code in sorted({r.error for r in failed if r.error}, key=lambda c: c.value):
            alike = [r for r in failed if r.error is code]
            lines += [f"{r.station}: {code.value}: {r.text}" for r in alike[:SHOWN_FAILURES]]
            if len(alike) > SHOWN_FAILURES:
                lines.append(f"... and {len(alike) - SHOWN_FAILURES} more {code.value}")
        changed = sum(r.error is None and r.text.startswith("changed") for r in answer.results)
        done = len(answer.results) - len(failed)
        where = f" of {site}" if site else ""
        lines.append(f"{actor}: {path} written to {done} of {len(answer.results)} "
                     f"stations{where} ({changed} changed), {len(failed)} failed")
        if failed:  # a script must see it in the exit status
            raise ClientError("\n".join(lines))
        return lines

    return await with_client(conn, actor, work)


async def discover(conn: Connection, actor: str, pattern_text: str, types: bool) -> list[str]:
    try:
        pattern = KeyPattern.parse(pattern_text)
    except KeyPathError as exc:
        raise ClientError(f"{exc}") from None

    async def work(client: OperatorClient) -> list[str]:
        answer = await client.request(actor, PropertyTreeDiscoveryRequest(
            patterns=[pattern], include_types=True), timeout=10)
        assert isinstance(answer, PropertyTreeDiscoveryResponse)
        kinds = dict(answer.types)
        lines = []
        for p, _, v in sorted(answer.leaves, key=lambda item: item[0]):
            kind = kinds.get(p)
            described = f"  [{kind.get('type')}, {kind.get('access')}]" if types and kind else ""
            lines.append(f"{p} = {format_value(v, kind)}{described}")
        return lines or [f"{actor}: nothing matches {pattern} (or you may not read it)"]

    return await with_client(conn, actor, work)


def monitor_setup(pattern_text: str, *, every: float | None = None, above: float | None = None,
                  task: str) -> tuple[KeyPath, MonitoringTaskSetup]:
    """The tree and setup ``csms monitor`` sends: ``stations/<id>/<selector>`` at a CSMS
    watches ``<selector>`` on that station; reports every second, at state priority."""
    try:
        pattern = KeyPattern.parse(pattern_text)
    except KeyPathError as exc:
        raise ClientError(f"{exc}") from None
    segs = pattern.segments
    tree = KeyPath.root()
    if len(segs) > 2 and segs[0] == "stations" and isinstance(segs[1], str):
        tree, pattern = KeyPath("stations", segs[1]), KeyPattern(segs[2:])
    trigger = (Periodic(every_s=every) if every is not None else
               Threshold(upper=above) if above is not None else OnChange())
    return tree, MonitoringTaskSetup(tree=tree, task=task, selectors=[pattern], trigger=trigger,
                                     reporter=ReporterConfig(interval_s=1, priority=2,
                                                             expiry_s=60))


async def monitor(conn: Connection, actor: str, pattern_text: str, *, every: float | None,
                  above: float | None, duration: float | None,
                  show: Callable[[str], None] = print) -> int:
    """Set up a monitoring task through ``actor``, print samples as they come, cancel the
    task when done (after ``duration`` seconds, or Ctrl-C); returns the samples shown."""
    task = f"mon-{os.urandom(4).hex()}"
    tree, setup = monitor_setup(pattern_text, every=every, above=above, task=task)

    async def work(client: OperatorClient) -> int:
        await client.request(actor, setup, timeout=10)
        what = f"{tree}/{setup.selectors[0]}" if tree.segments else str(setup.selectors[0])
        show(f"# watching {what} through {actor} (task {task}); Ctrl-C to stop")
        shown = 0
        try:
            async with asyncio.timeout(duration):
                while True:
                    report = await client.reports.get()
                    if report.task != task:
                        continue
                    if report.dropped:
                        show(f"# {report.dropped} samples were dropped by the station's buffer")
                    for path, at, value in sorted(report.samples, key=lambda s: s[1]):
                        stamp = from_micros(at).isoformat(timespec="milliseconds")
                        show(f"{stamp.replace('+00:00', 'Z')}  {report.tree / path} = "
                             f"{format_value(value, None)}")
                        shown += 1
        except TimeoutError:
            pass
        finally:
            try:
                await client.request(actor, TaskControl(tree=tree, task=task,
                                                        action=TaskAction.CANCEL), timeout=5)
            except ModelError as exc:
                show(f"# could not cancel task {task}: {exc}")
        return shown

    return await with_client(conn, actor, work)


async def operate(conn: Connection, actor: str, station: str, operation: RemoteOperation, *,
                  wait_s: float = 30.0) -> list[str]:
    """Ask ``actor`` (a CSMS, for ``stations/<station>``; or the station itself, ``station``
    empty) to carry out ``operation``, then follow its task until it ends or ``wait_s``
    passes: the station's answer is the task's result."""
    tree = KeyPath("stations", station) if station else KeyPath.root()
    task_path = KeyPath(*tree.segments, "tasks", operation.task)

    async def work(client: OperatorClient) -> list[str]:
        status = await client.request(actor, operation.model_copy(update={"tree": tree}),
                                      timeout=15)
        assert isinstance(status, TaskStatus)
        deadline = asyncio.get_running_loop().time() + wait_s
        entry: dict[str, Any] = {}
        while True:
            answer = await client.request(actor, PropertyValueRead(paths=[task_path]),
                                          timeout=5)
            assert isinstance(answer, PropertyValueReadResponse)
            entry = {str(p.relative_to(task_path)): v for p, _, v in answer.values}
            state = entry.get("state", status.state.value)  # the copy may not have it yet
            if ("state" in entry and TaskState(state).finished) or \
                    asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.25)
        lines = [f"{actor}: task {operation.task} ({operation.describe()}): {state}"]
        if entry.get("result"):
            lines.append(f"  answer: {entry['result']}")
        if entry.get("error"):
            lines.append(f"  error: {entry.get('error_code', '')}: {entry['error']}")
        if not TaskState(state).finished:
            lines.append(f"  still {state} after {wait_s:g} s: follow it with "
                         f"`csms get {actor} {task_path}`")
        return lines

    return await with_client(conn, actor, work)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)
