"""The simulated charger: its state, its connection's life and what it says unasked.

*A connection* (``_session``) opens the WebSocket (Basic auth; ``ssl_context`` for wss://),
boots, and runs until the socket drops (then ``run`` connects again after a jittered,
doubling backoff: OCPP's RetryBackOff) or the charger reboots (then at once).

*Booting* (B01-B03): a BootNotification on every connection, reason PowerUp, or RemoteReset /
FirmwareUpdate on the first connection after those reboots, Triggered when the CSMS asked
for it. Until one is answered Accepted the charger sends nothing unasked: it serves the
CSMS's calls (and the messages they ask for) and boots again after the answer's ``interval``
(at least 1 s; 10 s after a CALLERROR). Once Accepted: the FirmwareStatusNotification
Installed of an update that rebooted it, a StatusNotification per connector, and, on a
fresh start (the first boot, or after a reboot), with ``autostart``, a transaction on each
EVSE with an EV plugged in.

*Running* (``_operate``, in ``clock``'s time): a Heartbeat every HeartbeatInterval; every
TxUpdatedInterval each running transaction's power is set to ``min(EV demand, the limit in
force)`` (``charging.limit_w``) and a TransactionEvent Updated reports its register and
power; the monitors are evaluated whenever a reading changes, and Periodic ones when due.

*Ordering*: a TransactionEvent's seqNo is drawn when it is handed to the connection, and the
package's call lock serves callers in turn, so a transaction's events go out in seqNo order.
A transaction's Updated events wait for its Started (``Evse.seq == 0`` until then).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import logging
import math
import random
import ssl
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import websockets

from actors.testing.ocpp_charger.charging import Evse, limit_w
from actors.testing.ocpp_charger.client import Client, Payload
from actors.testing.ocpp_charger.device_model import Component, DeviceModel, Variable
from actors.testing.ocpp_charger.handlers import HANDLERS
from actors.testing.ocpp_charger.inventory import Nameplate, inventory
from actors.testing.ocpp_charger.monitoring import Monitors
from broker_bridge.clock import WALL_CLOCK, Clock

log = logging.getLogger("csms.ocpp.simulated")

HEARTBEAT = ("OCPPCommCtrlr", "HeartbeatInterval")
MESSAGE_TIMEOUT = ("OCPPCommCtrlr", Variable(name="MessageTimeout", instance="Default"))
TX_UPDATED = ("SampledDataCtrlr", "TxUpdatedInterval")
EV_CONNECTION_TIMEOUT = ("TxCtrlr", "EVConnectionTimeOut")
BOOT_RETRY_S = 10.0  # after a BootNotification answered with a CALLERROR
OFFLINE_QUEUE = 1000  # TransactionEvents kept while offline
IDLE_SAMPLE_S = 1.0  # how often readings are taken when TxUpdatedInterval is 0
EV_MIN_CURRENT_A, EV_MAX_VOLTAGE_V = 6, 400


def _whole_s(seconds: float) -> int:
    """An interval as the device model's integer seconds (a fraction of one: 1)."""
    return max(1, round(seconds)) if seconds > 0 else 0


def stamp(moment: datetime) -> str:
    """An OCPP dateTime: RFC 3339, UTC, milliseconds."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SimulatedCharger:
    """One OCPP 2.0.1 charger (see the package docstring); ``run`` until cancelled.

    It connects to ``url`` + ``identity`` with Basic auth (``password``), over TLS with
    ``ssl_context`` for wss:// (and its https:// downloads). ``evses`` EVSEs of one connector
    each, rated ``rating_w``; the first ``plugged`` have an EV drawing up to ``demand_w``
    plugged in (``plug``/``unplug`` change that). ``report_s``: the initial
    TxUpdatedInterval. ``autostart``: an EV plugged in starts a transaction (else only
    RequestStartTransaction does). ``ev_energy_wh`` / ``ev_departure_s``: when set, a
    transaction's EV sends its charging needs (NotifyEVChargingNeeds). ``items_per_message``:
    its ItemsPerMessage (the most items a request may carry, and a report's page size);
    ``amperes`` (limits in A only) and ``max_periods``: its smart charging's RateUnit and
    PeriodsPerSchedule. ``firmware_version``, ``vendor``, ``model``: what it boots as.
    ``seed``: its randomness (registers, backoff jitter, transaction ids). ``journal``: how
    many of the latest messages ``sent``, ``received`` and ``answered`` keep."""

    def __init__(self, identity: str, password: str, url: str, *, evses: int = 2,
                 rating_w: float = 22_000.0, demand_w: float = 11_000.0,
                 plugged: int = 1, report_s: float = 5.0, seed: int = 0,
                 clock: Clock = WALL_CLOCK, autostart: bool = True,
                 ssl_context: ssl.SSLContext | None = None,
                 firmware_version: str = "1.0.0", items_per_message: int = 8,
                 amperes: bool = False, max_periods: int = 24,
                 ev_energy_wh: float | None = None, ev_departure_s: float | None = None,
                 vendor: str = "Simulated", model: str = "Sim 22",
                 journal: int = 1000) -> None:
        self.identity, self.password, self.url = identity, password, url
        self.clock = clock
        self.rating_w, self.report_s, self.demand_w = rating_w, report_s, demand_w
        self.autostart, self.ssl_context = autostart, ssl_context
        self.amperes, self.max_periods = amperes, max_periods
        self.ev_energy_wh, self.ev_departure_s = ev_energy_wh, ev_departure_s
        self.vendor, self.model_name = vendor, model
        self.rng = random.Random(seed)
        self.evses = {e: Evse(e, demand_w if e <= plugged else 0.0,
                              self.rng.uniform(1_000, 50_000)) for e in range(1, evses + 1)}
        self.station_profiles: dict[int, dict[str, Any]] = {}  # EVSE 0's, by id
        self.operative = True
        self.model: DeviceModel = inventory(Nameplate(
            identity=identity, vendor=vendor, model=model, evses=evses, rating_w=rating_w,
            report_s=_whole_s(report_s), items_per_message=items_per_message,
            amperes=amperes, max_periods=max_periods, autostart=autostart,
            security_profile=2 if url.startswith("wss://") else 1))
        self.model.update("SecurityCtrlr", "BasicAuthPassword", password)
        self.monitors = Monitors(self.model)
        # what tests observe
        self.connected = False
        self.connections = 0
        self.registration: str | None = None  # the last BootNotification's answer
        self.boot_reasons: list[str] = []
        self.heartbeats = 0
        self.calls_received = 0  # the CSMS's calls, all told
        self.firmware_version = firmware_version
        self.firmware_sha256: str | None = None
        self.firmware_status = "Idle"  # the last FirmwareStatusNotification's
        self.firmware_request: int | None = None  # the last update's requestId
        self.charging_needs: dict[int, str] = {}  # EVSE -> NotifyEVChargingNeeds' answer
        self.counts: collections.Counter[str] = collections.Counter()  # own calls by action
        self.sent: collections.deque[tuple[str, Payload]] = collections.deque(maxlen=journal)
        self.received: collections.deque[tuple[str, Payload]] = \
            collections.deque(maxlen=journal)
        self.answered: collections.deque[tuple[str, Payload]] = \
            collections.deque(maxlen=journal)
        # running
        self._client: Client | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()  # the running loop's: see to deadlines and duties now
        self._ended = asyncio.Event()  # a transaction ended
        self._reboot_reason: str | None = None  # the reason of the next boot after a reboot
        self._rebooting = False  # the session is to end for a reboot
        self._fresh = True  # no connection since power-up or the last reboot was accepted
        self._boot_triggered = False
        self._reset_when_idle = False
        self._heartbeat_due: float | None = None
        self._sample_due = 0.0
        self.firmware_task: asyncio.Task[Any] | None = None  # the update running
        self.installed_request: int | None = None  # an update's, until Installed is sent
        # TransactionEvents not delivered yet (offline, or the connection failed under
        # them), oldest first: sent after the next accepted boot
        self.offline_queue: collections.deque[Payload] = collections.deque()
        self._delivering = asyncio.Lock()

    # -- what tests and the demo use -----------------------------------------------------------

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now_us() / 1e6, tz=UTC)

    @property
    def heartbeat_s(self) -> float:
        return self.model.number(*HEARTBEAT)

    def stamp_now(self) -> str:
        return stamp(self.now())

    @property
    def firmware_busy(self) -> bool:
        """An update runs, or rebooted and has yet to say Installed."""
        return self.installed_request is not None or (
            self.firmware_task is not None and not self.firmware_task.done())

    def plug(self, evse: int, demand_w: float | None = None) -> None:
        """An EV drawing up to ``demand_w`` (default: the constructor's) plugged in at
        ``evse``; with ``autostart``, its transaction starts."""
        target = self.evses[evse]
        was = target.plugged
        target.demand_w = self.demand_w if demand_w is None else demand_w
        if not target.plugged:
            raise ValueError("an EV draws more than 0 W")
        if was:
            return
        autostarted = self.autostart and target.transaction is None
        if autostarted:
            # the transaction starts as the EV plugs in, whatever the link does (TxStartPoint
            # EVConnected): its Started is kept until it is delivered, after the status
            self.begin(target)
            started = self._event(target, "Started", "CablePluggedIn", "Transaction.Begin")
            self._keep(started if self.registration == "Accepted" else
                       started | {"offline": True})
        if self.registration == "Accepted":
            self.spawn(self._plugged_in(target, autostarted), f"plug {evse}")

    def unplug(self, evse: int) -> None:
        """The EV at ``evse`` leaves: its transaction ends (EVDisconnected)."""
        target = self.evses[evse]
        was = target.plugged
        target.demand_w = 0.0
        if was and self.registration == "Accepted":
            self.spawn(self._unplugged(target), f"unplug {evse}")
        elif was and target.transaction is not None:  # offline: it ends, told when back
            self._keep(self._end(target, "EVCommunicationLost", "EVDisconnected") |
                       {"offline": True})

    def limit_w(self, evse: Evse, now: datetime) -> float:
        """The limit in force on ``evse`` now."""
        return limit_w(evse, self.station_profiles, self.rating_w, now)

    # -- the journal (the connection writes it) -------------------------------------------------

    def journal_sent(self, action: str, payload: Payload) -> None:
        self.sent.append((action, payload))
        self.counts[action] += 1

    def journal_received(self, action: str, payload: Payload) -> None:
        self.received.append((action, payload))
        self.calls_received += 1

    def journal_answered(self, action: str, payload: Payload) -> None:
        self.answered.append((action, payload))

    # -- connections -----------------------------------------------------------------------------

    async def run(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("%s: connection lost (%s)", self.identity, exc)
            else:
                delay = 1.0
            self.connected = False
            if self._rebooting:  # back up at once
                self._rebooting = False
                continue
            await asyncio.sleep(delay * self.rng.uniform(0.5, 1.5))  # RetryBackOff, jittered
            delay = min(delay * 2, 30.0)

    async def _session(self) -> None:
        token = base64.b64encode(f"{self.identity}:{self.password}".encode()).decode()
        tls = (self.ssl_context or True) if self.url.startswith("wss://") else None
        async with websockets.connect(
                f"{self.url}{self.identity}", subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                additional_headers={"Authorization": f"Basic {token}"},
                open_timeout=10, close_timeout=1, ssl=tls) as connection:
            self._client = Client(self, connection, handlers=HANDLERS,
                                  response_timeout=self.model.number(*MESSAGE_TIMEOUT))
            reader = asyncio.create_task(self._client.start(), name=f"{self.identity} reader")
            speaker = asyncio.create_task(self._speak(), name=f"{self.identity} speaker")
            try:
                done, _ = await asyncio.wait({reader, speaker},
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # the socket's end, or the speaker's failure
            finally:
                self._client, self.connected, self.registration = None, False, None
                ending = [reader, speaker, *self._tasks]
                for task in ending:
                    task.cancel()
                await asyncio.gather(*ending, return_exceptions=True)
                self._tasks.clear()

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` for this connection (cancelled when it ends; failures logged)."""
        if self._client is None:
            work.close()
            return
        task = asyncio.create_task(work, name=f"{self.identity} {name}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()  # a reset waiting for idle may go now
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s: %s failed: %r", self.identity, task.get_name(), task.exception())

    async def send(self, action: str, payload: Payload) -> Any:
        """Call ``action`` at the CSMS: its result (the package's dataclass; None for a
        CALLERROR)."""
        if self._client is None:
            raise ConnectionError(f"{self.identity} is not connected")
        return await self._client.send(action, payload)

    def reboot(self, reason: str) -> None:
        """End this connection and boot again at once with ``reason``."""
        self._reboot_reason, self._rebooting, self._fresh = reason, True, True
        self._wake.set()

    def wake(self) -> None:
        """Have the running loop look at its deadlines and duties again."""
        self._wake.set()

    # -- booting ---------------------------------------------------------------------------------

    async def _speak(self) -> None:
        await self._boot()
        if self._rebooting:
            return
        self.connected, self.connections = True, self.connections + 1
        await self._after_boot()
        await self._operate()

    async def _boot(self) -> None:
        reason = self._reboot_reason or "PowerUp"
        while not self._rebooting:
            self.boot_reasons.append(reason)
            answer = await self.send("BootNotification", {"reason": reason, "chargingStation": {
                "model": self.model_name[:20], "vendorName": self.vendor[:50],
                "serialNumber": self.identity[:25],
                "firmwareVersion": self.firmware_version[:50]}})
            self.registration = answer.status if answer is not None else None
            if self.registration == "Accepted":
                self._reboot_reason = None
                if answer.interval > 0:
                    self.model.update(*HEARTBEAT, int(answer.interval))
                return
            wait_s = max(1.0, float(answer.interval)) if answer is not None else BOOT_RETRY_S
            deadline = self.clock.monotonic() + wait_s
            while not (self._boot_triggered or self._rebooting) and \
                    self.clock.monotonic() < deadline:
                self._wake.clear()
                await self.clock.wait(self._wake, deadline - self.clock.monotonic())
            if self._boot_triggered:
                self._boot_triggered, reason = False, "Triggered"

    def trigger_boot(self) -> None:
        """TriggerMessage(BootNotification): boot again now."""
        self._boot_triggered = True
        self._wake.set()

    async def _after_boot(self) -> None:
        now_s = self.clock.monotonic()
        self._heartbeat_due = now_s + self.heartbeat_s
        self._sample_due = now_s + self._sample_period()
        if self.installed_request is not None:
            await self.firmware_notify("Installed", self.installed_request)
            self.installed_request = None
        for evse in self.evses.values():
            await self.status_notification(evse)
        await self.deliver_queued()
        fresh, self._fresh = self._fresh, False
        for evse in self.evses.values():
            if evse.transaction and not evse.plugged and evse.connect_deadline is None:
                await self.stop(evse, "EVCommunicationLost", "EVDisconnected")  # left offline
            elif fresh and self.autostart and evse.plugged and evse.transaction is None:
                self.begin(evse)
                await self.started(evse, "CablePluggedIn")

    # -- running ---------------------------------------------------------------------------------

    def _sample_period(self) -> float:
        return self.report_s if self.report_s > 0 else IDLE_SAMPLE_S

    def reschedule(self) -> None:
        """HeartbeatInterval or TxUpdatedInterval changed: count from now."""
        now_s = self.clock.monotonic()
        if self._heartbeat_due is not None:
            self._heartbeat_due = now_s + self.heartbeat_s
        self._sample_due = now_s + self._sample_period()
        self._wake.set()

    async def _operate(self) -> None:
        while not self._rebooting:
            self._wake.clear()
            now_s = self.clock.monotonic()
            if self._heartbeat_due is not None and now_s >= self._heartbeat_due:
                self._heartbeat_due = now_s + self.heartbeat_s
                await self.heartbeat()
            if now_s >= self._sample_due:
                self._sample_due = now_s + self._sample_period()
                await self._sample()
            for evse in self.evses.values():
                if evse.connect_deadline is not None and now_s >= evse.connect_deadline:
                    evse.connect_deadline = None  # a remote start no EV came for
                    await self.stop(evse, "EVConnectTimeout", "Timeout")
            due = self.monitors.next_due()
            if due is not None and now_s >= due:
                await self.observe()
            if self._reset_when_idle and self.idle and not self._tasks:  # all answered too
                self._reset_when_idle = False
                self.reboot("RemoteReset")
                break
            deadlines = [self._sample_due, *(d for d in (
                self._heartbeat_due, self.monitors.next_due(),
                *(e.connect_deadline for e in self.evses.values())) if d is not None)]
            await self.clock.wait(self._wake, max(0.0, min(deadlines) - self.clock.monotonic()))

    @property
    def idle(self) -> bool:
        """No transaction runs and no firmware update."""
        return not self.firmware_busy and all(e.transaction is None
                                               for e in self.evses.values())

    def power_w(self, evse: Evse, now: datetime) -> float:
        """What ``evse`` draws now: ``min(EV demand, the limit in force)`` while it is
        operative and charging a transaction."""
        if not (self.operative and evse.operative and evse.plugged and evse.transaction):
            return 0.0
        return float(min(evse.demand_w, self.limit_w(evse, now)))

    async def _sample(self) -> None:
        now = self.now()
        for evse in self.evses.values():
            if evse.transaction is None or evse.seq == 0:
                continue
            evse.meter(now)
            evse.power_w = self.power_w(evse, now)
            if self.report_s > 0:
                await self.transaction_event(evse, "Updated", "MeterValuePeriodic",
                                             "Sample.Periodic")
        await self.observe()

    # -- what it sends ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Bring the device model's readings up to date."""
        model = self.model
        model.update("ClockCtrlr", "DateTime", stamp(self.now()))
        model.update(*TX_UPDATED, _whole_s(self.report_s))
        model.update(Component(name="SmartChargingCtrlr"),
                     Variable(name="Entries", instance="ChargingProfiles"),
                     len(self.station_profiles) + sum(len(e.profiles)
                                                      for e in self.evses.values()))
        for number, evse in self.evses.items():
            state = self.connector_status(evse)
            for component in (Component(name="EVSE", evse=number),
                              Component(name="Connector", evse=number, connector=1)):
                model.update(component, "AvailabilityState", state)
                model.update(component, "Available", state != "Unavailable")
            model.update(Component(name="EVSE", evse=number), "Power", evse.power_w)
        model.update("ChargingStation", "AvailabilityState",
                     "Available" if self.operative else "Unavailable")
        model.update("ChargingStation", "Available", self.operative)

    async def observe(self) -> None:
        """Evaluate the monitors against the readings now; NotifyEvent what triggered."""
        self.refresh()
        events = self.monitors.observe(
            self.clock.monotonic(), stamp(self.now()),
            {n: e.transaction for n, e in self.evses.items() if e.transaction})
        if events and self.registration == "Accepted":
            await self.send("NotifyEvent", {"generatedAt": stamp(self.now()), "seqNo": 0,
                                            "tbc": False, "eventData": events})

    async def heartbeat(self) -> None:
        await self.send("Heartbeat", {})
        self.heartbeats += 1

    def connector_status(self, evse: Evse) -> str:
        if not (self.operative and evse.operative):
            return "Unavailable"
        return "Occupied" if evse.plugged else "Available"

    async def status_notification(self, evse: Evse) -> None:
        await self.send("StatusNotification", {
            "timestamp": stamp(self.now()), "connectorStatus": self.connector_status(evse),
            "evseId": evse.number, "connectorId": 1})

    def sampled(self, evse: Evse, now: datetime, context: str) -> dict[str, Any]:
        """A MeterValue of ``evse``: its register and its power."""
        return {"timestamp": stamp(now), "sampledValue": [
            {"value": round(evse.register_wh, 1), "context": context,
             "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"}},
            {"value": round(evse.power_w, 1), "context": context,
             "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}}]}

    async def meter_values(self, evse: Evse, context: str) -> None:
        now = self.now()
        evse.meter(now)
        await self.send("MeterValues", {"evseId": evse.number,
                                        "meterValue": [self.sampled(evse, now, context)]})

    async def transaction_event(self, evse: Evse, kind: str, trigger: str, context: str,
                                **info: Any) -> None:
        """A TransactionEvent of ``evse``'s running transaction (``info``: more of its
        transactionInfo)."""
        await self.transaction_message(self._event(evse, kind, trigger, context, **info))

    async def transaction_message(self, payload: Payload) -> None:
        """Send a TransactionEvent after those still queued, or queue it while offline
        (E04/E12: transaction-related messages are kept and delivered in order once the
        charger is back, those that happened offline marked ``offline``). A full queue drops
        its oldest Updated first: a transaction's Started and Ended are never dropped."""
        online = self._client is not None and self.registration == "Accepted"
        if not online:
            payload["offline"] = True
        self._keep(payload)
        if online:
            with contextlib.suppress(ConnectionError, websockets.ConnectionClosed, TimeoutError):
                await self.deliver_queued()  # what fails stays queued for the next session

    def _keep(self, payload: Payload) -> None:
        queue = self.offline_queue
        if len(queue) >= OFFLINE_QUEUE:
            updated = next((p for p in queue if p["eventType"] == "Updated"), None)
            if updated is None:
                log.warning("%s: offline queue full of Started/Ended; dropping the oldest",
                            self.identity)
                queue.popleft()
            else:
                queue.remove(updated)
        queue.append(payload)

    async def deliver_queued(self) -> None:
        """The queued TransactionEvents, oldest first, one at a time; raises (keeping the
        rest) when the connection fails again."""
        async with self._delivering:
            while self.offline_queue:
                await self.send("TransactionEvent", self.offline_queue[0])
                self.offline_queue.popleft()

    def _event(self, evse: Evse, kind: str, trigger: str, context: str, **info: Any
               ) -> Payload:
        """The next TransactionEvent of ``evse``'s transaction (its seqNo drawn now)."""
        assert evse.transaction is not None
        now = self.now()
        evse.meter(now)
        payload: Payload = {
            "eventType": kind, "timestamp": stamp(now), "triggerReason": trigger,
            "seqNo": evse.seq, "transactionInfo": {
                "transactionId": evse.transaction, "chargingState": evse.charging_state} | info,
            "meterValue": [self.sampled(evse, now, context)]}
        evse.seq += 1
        if kind == "Started" or trigger == "Trigger":  # a CSMS that asks may not know it
            payload["evse"] = {"id": evse.number, "connectorId": 1}
        if kind == "Started":
            if evse.remote_start_id is not None:
                payload["transactionInfo"]["remoteStartId"] = evse.remote_start_id
            if evse.id_token is not None:
                payload["idToken"] = evse.id_token
        return payload

    def begin(self, evse: Evse, *, remote_start_id: int | None = None,
              id_token: dict[str, Any] | None = None) -> str:
        """A transaction on ``evse`` from now (its Started is ``started``'s to send)."""
        now = self.now()
        evse.meter(now)
        evse.transaction = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        evse.seq, evse.started_at = 0, now
        evse.remote_start_id, evse.id_token = remote_start_id, id_token
        evse.power_w = self.power_w(evse, now)
        evse.connect_deadline = None if evse.plugged else \
            self.clock.monotonic() + self.model.number(*EV_CONNECTION_TIMEOUT)
        self._wake.set()
        return evse.transaction

    async def started(self, evse: Evse, trigger: str) -> None:
        """Send the Started of ``evse``'s new transaction, then the EV's charging needs."""
        await self.transaction_event(evse, "Started", trigger, "Transaction.Begin")
        if evse.plugged:
            await self.charging_needs_of(evse)
        await self.observe()

    async def stop(self, evse: Evse, trigger: str, reason: str) -> None:
        """End ``evse``'s transaction: TransactionEvent Ended with ``reason``."""
        if evse.transaction is None:
            return
        await self.transaction_message(self._end(evse, trigger, reason))
        await self.observe()

    def _end(self, evse: Evse, trigger: str, reason: str) -> Payload:
        """``evse``'s transaction over from now: its Ended event, to send."""
        assert evse.transaction is not None
        transaction = evse.transaction
        evse.meter(self.now())
        evse.power_w = 0.0
        ended = self._event(evse, "Ended", trigger, "Transaction.End", stoppedReason=reason,
                            chargingState="EVConnected" if evse.plugged else "Idle")
        evse.transaction, evse.seq, evse.started_at = None, 0, None  # over from now on
        evse.remote_start_id = evse.id_token = evse.connect_deadline = None
        for ident, profile in list(evse.profiles.items()):  # a TxProfile ends with it
            if profile.get("transactionId") == transaction:
                del evse.profiles[ident]
        self._wake.set()
        self._ended.set()
        return ended

    async def charging_needs_of(self, evse: Evse) -> None:
        """NotifyEVChargingNeeds, when the EV has any (``ev_energy_wh``)."""
        if self.ev_energy_wh is None:
            return
        needs: Payload = {"requestedEnergyTransfer": "AC_three_phase", "acChargingParameters": {
            "energyAmount": round(self.ev_energy_wh), "evMinCurrent": EV_MIN_CURRENT_A,
            "evMaxCurrent": max(EV_MIN_CURRENT_A, math.ceil(evse.demand_w / 3 / 230)),
            "evMaxVoltage": EV_MAX_VOLTAGE_V}}
        if self.ev_departure_s is not None:
            needs["departureTime"] = stamp(self.now() + timedelta(seconds=self.ev_departure_s))
        answer = await self.send("NotifyEVChargingNeeds",
                                 {"evseId": evse.number, "chargingNeeds": needs})
        self.charging_needs[evse.number] = answer.status if answer is not None else "CALLERROR"

    async def _plugged_in(self, evse: Evse, autostarted: bool) -> None:
        await self.status_notification(evse)
        if autostarted:
            await self.deliver_queued()  # its Started
            if evse.plugged:
                await self.charging_needs_of(evse)
            await self.observe()
        elif evse.transaction is not None:  # a remote start was waiting for this EV
            evse.connect_deadline = None
            evse.power_w = self.power_w(evse, self.now())
            if evse.seq > 0:
                await self.transaction_event(evse, "Updated", "CablePluggedIn", "Other")
                await self.charging_needs_of(evse)

    async def _unplugged(self, evse: Evse) -> None:
        await self.stop(evse, "EVCommunicationLost", "EVDisconnected")
        await self.status_notification(evse)

    async def firmware_notify(self, status: str, request_id: int | None) -> None:
        """FirmwareStatusNotification ``status`` (of update ``request_id``)."""
        self.firmware_status = status
        payload: Payload = {"status": status}
        if request_id is not None:
            payload["requestId"] = self.firmware_request = request_id
        await self.send("FirmwareStatusNotification", payload)

    async def transactions_over(self) -> None:
        """Return once no transaction runs."""
        while any(e.transaction for e in self.evses.values()):
            self._ended.clear()
            await self.clock.wait(self._ended, None)

    def cancel_firmware(self) -> bool:
        """Stop the update running (whether there was one)."""
        running = self.firmware_task is not None and not self.firmware_task.done()
        if running:
            assert self.firmware_task is not None
            self.firmware_task.cancel()
        return running

    def reset_when_idle(self) -> None:
        self._reset_when_idle = True
        self._wake.set()

    async def reset_now(self) -> None:
        """Reset Immediate: end every transaction (ImmediateReset), then reboot."""
        for evse in self.evses.values():
            with contextlib.suppress(ConnectionError):
                await self.stop(evse, "ResetCommand", "ImmediateReset")
        self.reboot("RemoteReset")


__all__ = ["SimulatedCharger", "stamp"]
