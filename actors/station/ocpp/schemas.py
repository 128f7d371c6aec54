"""Every OCPP 2.0.1 message checked against the OCA's JSON schemas, as shipped in the
``ocpp`` package (``ocpp/v201/schemas``), compiled once per action and direction with
``jsonschema_rs`` (measured here: 0.5 us to check a TransactionEvent; the ``ocpp`` package's
own check costs 2 to 2.5 ms). The gateway relies on the schemas, not on one library's
habits: other implementations are judged by them too."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, Literal

import jsonschema_rs
import ocpp

from actors.logic.ocpp.rpc import FORMAT_VIOLATION, NOT_IMPLEMENTED, RpcError

SCHEMA_DIR = Path(ocpp.__file__).parent / "v201" / "schemas"
Direction = Literal["Request", "Response"]


ACTIONS = frozenset(path.name.removesuffix("Request.json")
                    for path in SCHEMA_DIR.glob("*Request.json"))
"""Every action of OCPP 2.0.1 (64): what a name a charger sends is looked up in, so a
flood of made-up names costs nothing and keeps nothing."""


@cache
def _validator(action: str, direction: Direction) -> Any:
    return jsonschema_rs.validator_for(json.loads(
        (SCHEMA_DIR / f"{action}{direction}.json").read_text()))


def known(action: str) -> bool:
    """Whether OCPP 2.0.1 has ``action``."""
    return action in ACTIONS


def check(action: str, direction: Direction, payload: dict[str, Any],
          message_id: str | None = None) -> None:
    """``RpcError`` (FormatViolation, naming where) unless ``payload`` fits the schema of
    ``action``'s ``direction``; NotImplemented for an action OCPP 2.0.1 does not have."""
    if action not in ACTIONS:
        raise RpcError(NOT_IMPLEMENTED, f"{action[:40]!r} is no OCPP 2.0.1 action",
                       message_id=message_id)
    validator = _validator(action, direction)
    if validator.is_valid(payload):
        return
    error = next(iter(validator.iter_errors(payload)))
    where = "/".join(str(p) for p in error.instance_path) or "the payload"
    raise RpcError(FORMAT_VIOLATION, f"{action}{direction}: {where}: {error.message}"[:255],
                   message_id=message_id)


__all__ = ["ACTIONS", "SCHEMA_DIR", "check", "known"]
