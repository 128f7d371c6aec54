"""OCPP 2.0.1 ``TransactionEvent`` applied to a station's tree, never lost or doubled
(OCPP-NOTES §2.4 and rules 3 to 6).

*The record.* Each transaction has a record at ``transactions/<key>`` (``key``: a digest of
the charger's transaction id, which may hold characters a key-path segment may not): its EVSE,
start and end, id token, stop reason, registers, energy and the digests of the events applied.
Records are values in the tree, so every CSMS's copy has them after any outage.

*An event's identity* is its content (transaction id, type, ``seqNo``, timestamp, trigger,
meter values), never ``seqNo`` alone (some chargers send 0 every time, and it restarts per
transaction): an exact repeat, with a new message id or not, is acknowledged and changes
nothing; so is a second ``Ended``, or anything stamped after the end. An event stamped before
the end that arrives after it (a queue replayed out of order) still goes into the record. A
``Started`` stamped after the end of a transaction with the same id is a new transaction (a
charger that restarted its counter): the finished record is kept under a key of its own.

*Offline events* (``offline=true``, or older than what the EVSE shows) go into the record in
time order and move live leaves (``evse/<e>/session``, ``status``, meters) only when newer than
what those show: live state never moves backwards and an ended transaction is never reopened.
A time more than five minutes ahead of the gateway's is taken as the gateway's (a charger's
clock far ahead must not freeze the EVSE), and so is a meter sample's. An EVSE runs one transaction at a time: a new one
closes an older open record of its EVSE (``Superseded``), and the collection keeps 48
finished records, so a new transaction always finds room. What the tree cannot hold (an EVSE
beyond 128, a negative register) is left out of the record, never a reason to refuse the event,
which OCPP does not allow.

*Energy* is the last register (by time) minus the baseline: the ``Transaction.Begin``
register when it is plausible, else the lowest register the transaction reported. A Begin
register is implausible when it lies below what the EVSE's meter showed before the transaction,
or when the EVSE could not have delivered what a later register says since (its rating times
the time between them, with margin): a charger that opened a transaction offline and sent
Begin = 0 is then not billed its meter's lifetime. Energy never decreases; an event without an
energy register leaves it alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from actors.logic.ocpp.meters import BEGIN, ENERGY_REGISTER, Reading, live_ops, micros, read
from object_model.tree import Delete, ObjectTree, Operation, Write

DIGEST_BYTES = 8
KEPT_DIGESTS = 64  # per record: 512 bytes, more events than a transaction sends twice over
KEPT_RECORDS = 48  # finished records beyond these are dropped, oldest first
MAX_RECORDS = 64  # what the tree's collection holds
MARGIN_WH = 100.0
MAX_EVSE = 128  # what the tree's EVSE ids go to
MAX_SEQ_NO = 2**32 - 1
MAX_REGISTER_WH = 1e12
FUTURE_SLACK_S = 300.0
CHARGING_STATES = {"Charging": ("Charging", "Charging"),
                   "SuspendedEV": ("SuspendedEV", "Suspended"),
                   "SuspendedEVSE": ("SuspendedEVSE", "Suspended"),
                   "EVConnected": ("Preparing", None),
                   "Idle": ("Available", None)}  # (evse status, session state)


def record_key(transaction_id: str) -> str:
    """The segment of a transaction's record below ``transactions``."""
    return "t" + hashlib.blake2b(transaction_id.encode(), digest_size=8).hexdigest()


def event_digest(payload: dict[str, Any]) -> bytes:
    """What makes two events the same event (see the module docstring)."""
    identity = [payload["transactionInfo"]["transactionId"], payload["eventType"],
                payload["seqNo"], payload["timestamp"], payload["triggerReason"],
                payload.get("meterValue", [])]
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=DIGEST_BYTES).digest()


@dataclass(frozen=True)
class Applied:
    """What an event does: the tree operations (one transaction), and whether it was one
    applied before (or after its transaction ended) and so changes nothing."""

    ops: list[Operation]
    repeat: bool = False


def _seen(record: dict[str, Any], digest: bytes) -> bool:
    seen = record.get("seen") or b""
    return any(seen[i:i + DIGEST_BYTES] == digest for i in range(0, len(seen), DIGEST_BYTES))


def _plausible_begin(begin: float, prior: float | None, later: list[tuple[int, float]],
                     max_power_w: float, started_us: int) -> bool:
    """Whether the Begin register ``begin`` can be the baseline: not below what the EVSE's
    meter showed before (``prior``), and no later register (``(time, Wh)``, of every event
    of the transaction so far) above what the EVSE could have delivered since."""
    if prior is not None and begin + 1e-6 < prior:
        return False
    for at_us, register in later:
        hours = max(0.0, (at_us - started_us) / 3.6e9)
        if register - begin > max_power_w * hours * 1.1 + MARGIN_WH:
            return False
    return True


def _readings(payload: dict[str, Any], now_us: int) -> list[Reading]:
    """The event's readings, without registers no meter shows (negative, or beyond the
    tree's range): those are left out, not a reason to refuse the event. A sample stamped
    far ahead of the gateway's clock is taken at the gateway's time."""
    readings = read(payload.get("meterValue", []))
    for reading in readings:
        if reading.at_us > now_us + int(FUTURE_SLACK_S * 1e6):
            reading.at_us = now_us
        if reading.energy_wh is not None and not 0 <= reading.energy_wh <= MAX_REGISTER_WH:
            reading.registers.pop(ENERGY_REGISTER, None)
            reading.energy_wh = None
    return readings


def apply_event(tree: ObjectTree, payload: dict[str, Any], now_us: int) -> Applied:
    """What ``payload`` (a schema-valid TransactionEventRequest) does to ``tree``, at the
    gateway's ``now_us``: a time the charger gives beyond ``now_us + FUTURE_SLACK_S`` is
    taken as ``now_us`` (a charger's clock far ahead must not freeze the EVSE's live state)."""
    info = payload["transactionInfo"]
    transaction_id = info["transactionId"]
    path = f"transactions/{record_key(transaction_id)}"
    record: dict[str, Any] = dict(tree.read(path)) if path in tree else {}
    digest = event_digest(payload)
    kind = payload["eventType"]
    at = micros(payload["timestamp"])
    if at > now_us + int(FUTURE_SLACK_S * 1e6):
        at = now_us
    ops: list[Operation] = []
    if record and _seen(record, digest):
        return Applied([], repeat=True)
    ended = record.get("state") == "Finished"
    if ended and kind == "Started" and at > int(record.get("ended_at") or 0):
        # an id used again (chargers that restart their counters do): a new transaction;
        # the finished one is kept under a key of its own
        ops += [Delete(path), Write(_archive_path(transaction_id, record), _stored(record))]
        record, ended = {}, False
    elif ended and (kind == "Ended" or at > int(record.get("ended_at") or 0)):
        return Applied([], repeat=True)  # a second end, or news after the end: it stands
    readings = _readings(payload, now_us)
    evse = int((payload.get("evse") or {}).get("id", 0))
    if not 1 <= evse <= MAX_EVSE:
        evse = 0  # not one the tree can hold: the record keeps what it knew
    fresh = not record
    if fresh:
        record = {"transaction_id": transaction_id, "evse": evse, "state": "Charging",
                  "started_at": at, "updated_at": 0, "events": 0, "offline_events": 0,
                  "max_seq_no": 0, "seen": b"", "energy_wh": 0.0}
    newest = at >= int(record.get("updated_at") or 0) and not ended
    record["events"] = int(record.get("events", 0)) + 1
    record["offline_events"] = int(record.get("offline_events", 0)) + bool(
        payload.get("offline"))
    record["max_seq_no"] = min(MAX_SEQ_NO, max(int(record.get("max_seq_no", 0)),
                                               int(payload["seqNo"])))
    record["seen"] = (bytes(record.get("seen") or b"") + digest)[-KEPT_DIGESTS * DIGEST_BYTES:]
    if evse and not record.get("evse"):
        record["evse"] = evse
    evse = int(record.get("evse") or 0)
    if kind == "Started":  # its own time is the start (an earlier event made a guess)
        record["started_at"] = at
    if "idToken" in payload:
        record["id_token"] = str(payload["idToken"].get("idToken", ""))[:64]
    if "remoteStartId" in payload:
        record["remote_start_id"] = min(MAX_SEQ_NO, max(0, int(payload["remoteStartId"])))
    if kind == "Ended":
        record["state"], record["ended_at"] = "Finished", at
        record["stopped_reason"] = str(info.get("stoppedReason", ""))[:64]
    max_power_w = _rating(tree, evse)
    prior = _register(tree, evse) if fresh else None
    if fresh and prior is not None:
        record["prior_register_wh"] = prior
    for reading in readings:
        if reading.energy_wh is None:
            continue
        if BEGIN in reading.contexts:
            if record.get("begin_register_wh") is None:
                record["begin_register_wh"] = reading.energy_wh
        elif record.get("low_register_wh") is None or \
                reading.energy_wh < record["low_register_wh"]:
            record["low_register_wh"] = reading.energy_wh
            record["low_register_at"] = reading.at_us
        if reading.at_us >= int(record.get("last_register_at") or 0):
            record["last_register_wh"] = reading.energy_wh
            record["last_register_at"] = reading.at_us
    _settle_energy(record, max_power_w)
    if newest:
        record["updated_at"] = at
    ops.append(Write(path, _stored(record)))
    if evse and newest:
        ops += _live(tree, evse, transaction_id, kind, payload, record, readings)
    if fresh:
        ops += _superseded(tree, evse, transaction_id, at)
        ops += _pruned(tree, ops)
    return Applied(ops)


def _archive_path(transaction_id: str, record: dict[str, Any]) -> str:
    started = record.get("started_at", 0)
    return f"transactions/{record_key(f'{transaction_id}@{started}')}"


def _settle_energy(record: dict[str, Any], max_power_w: float) -> None:
    """The record's baseline and energy from every register it holds (see the module
    docstring): a Begin register judged implausible stays so; energy never decreases while
    the baseline stands, and is computed anew when the baseline moves."""
    begin = record.get("begin_register_wh")
    later = [(int(record[f"{name}_at"]), float(record[f"{name}_wh"]))
             for name in ("low_register", "last_register")
             if record.get(f"{name}_wh") is not None and record.get(f"{name}_at") is not None]
    if begin is not None and not record.get("begin_refused") and not _plausible_begin(
            begin, record.get("prior_register_wh"), later, max_power_w,
            int(record["started_at"])):
        record["begin_refused"] = True  # for good: a later event cannot make it plausible
    baseline = record.get("low_register_wh")
    if begin is not None and (baseline is None or not record.get("begin_refused")):
        baseline = begin
    last = record.get("last_register_wh")
    if baseline is None or last is None:
        return
    energy = max(0.0, last - baseline)
    if record.get("baseline_wh") == baseline:
        energy = max(float(record.get("energy_wh") or 0.0), energy)
    record["baseline_wh"], record["energy_wh"] = baseline, energy


def _stored(record: dict[str, Any]) -> dict[str, Any]:
    """The record as the tree keeps it (a field not known is no value)."""
    return {k: v for k, v in record.items() if v is not None}


def _live(tree: ObjectTree, evse: int, transaction_id: str, kind: str, payload: dict[str, Any],
          record: dict[str, Any], readings: list[Reading]) -> list[Operation]:
    """The EVSE's live leaves, when this transaction is the one it shows (or a newer one
    starts) and the event is newer than what they show."""
    base = f"evse/{evse}"
    if f"{base}/session/session_id" not in tree:
        return []
    current = _get(tree, f"{base}/session/session_id")
    started = _get(tree, f"{base}/session/started_at") or 0
    if current != transaction_id and int(record["started_at"]) < int(started):
        return []  # an older transaction, replayed: its record only
    ops: list[Operation] = []
    if current != transaction_id:
        ops += [Write(f"{base}/session/session_id", transaction_id),
                Write(f"{base}/session/started_at", int(record["started_at"])),
                Write(f"{base}/session/state", "Charging")]
        # what belonged to the last session's EV is not this one's
        ops += [Delete(f"{base}/session/{name}") for name in ("ended_at", "departure_at",
                                                               "soc_percent")
                if tree.is_leaf(f"{base}/session/{name}")]
    if record.get("id_token"):
        ops.append(Write(f"{base}/session/id_token", record["id_token"]))
    ops.append(Write(f"{base}/session/energy_wh", float(record.get("energy_wh") or 0.0)))
    state = (payload.get("transactionInfo") or {}).get("chargingState")
    if state in CHARGING_STATES:
        status, session = CHARGING_STATES[state]
        ops.append(Write(f"{base}/status", status))
        if session is not None:
            ops.append(Write(f"{base}/session/state", session))
    if readings:
        ops += live_ops(tree, evse, readings[-1])
    if kind == "Ended":
        ops += [Write(f"{base}/session/state", "Finished"),
                Write(f"{base}/session/ended_at", int(record["ended_at"])),
                Write(f"{base}/session/power_w", 0.0),
                Write(f"{base}/status", "Available")]
    return ops


def _get(tree: ObjectTree, path: str) -> Any:
    """The value at ``path``, ``None`` when it holds none."""
    return tree.get(path) if tree.is_leaf(path) else None


def _rating(tree: ObjectTree, evse: int) -> float:
    rating = _get(tree, f"evse/{evse}/max_power_w") if evse else None
    return float(rating) if rating else 350_000.0


def _register(tree: ObjectTree, evse: int) -> float | None:
    value = _get(tree, f"evse/{evse}/meter/{ENERGY_REGISTER}") if evse else None
    return float(value) if value else None


def _superseded(tree: ObjectTree, evse: int, transaction_id: str, at: int
                ) -> list[Operation]:
    """Open records of EVSE ``evse`` older than a transaction starting at ``at``: an EVSE
    runs one transaction at a time, so theirs ended (their Ended was lost): closed now."""
    if not evse:
        return []
    ops: list[Operation] = []
    for name, _, _ in tree.children("transactions"):
        base = f"transactions/{name}"
        if (_get(tree, f"{base}/evse") == evse and _get(tree, f"{base}/state") != "Finished"
                and _get(tree, f"{base}/transaction_id") != transaction_id
                and int(_get(tree, f"{base}/started_at") or 0) < at):
            ops += [Write(f"{base}/state", "Finished"), Write(f"{base}/ended_at", at),
                    Write(f"{base}/stopped_reason", "Superseded")]
    return ops


def _pruned(tree: ObjectTree, ops: list[Operation]) -> list[Operation]:
    """Deletes that keep the records within bounds once ``ops`` are applied: finished ones
    beyond ``KEPT_RECORDS``, oldest first; and, should open ones alone fill the collection
    (their ends lost), the longest silent of them: a new transaction is never refused."""
    existing = {f"transactions/{name}" for name, _, _ in tree.children("transactions")}
    deleted = {str(op.path) for op in ops if isinstance(op, Delete)}
    written = {str(op.path) for op in ops
               if isinstance(op, Write) and str(op.path).count("/") == 1}
    after = (existing - deleted) | written
    kept = [path for path in existing - deleted if path not in written]
    closing = {str(op.path).rsplit("/", 1)[0] for op in ops
               if isinstance(op, Write) and str(op.path).endswith("/ended_at")}
    finished = sorted((int(_get(tree, f"{path}/ended_at") or 0), path) for path in kept
                      if _get(tree, f"{path}/ended_at") is not None or path in closing)
    drops = [path for _, path in finished[:max(0, len(finished) - KEPT_RECORDS)]]
    if len(after) - len(drops) > MAX_RECORDS:
        silent = sorted((int(_get(tree, f"{path}/updated_at") or 0), path) for path in kept
                        if path not in drops)
        drops += [path for _, path in silent[:len(after) - len(drops) - MAX_RECORDS]]
    return [Delete(path) for path in drops]


__all__ = ["Applied", "apply_event", "event_digest", "record_key"]
