"""The base of every actor's settings: one frozen pydantic model per actor, which a
deployment file's section *is* (``actors.app.config`` adds where the actor runs and how it
logs in), and which the actor is given as it is.

Unknown fields are refused (a typo must not be silently ignored); values are checked when the
settings are made, so an actor never starts on nonsense. Checks that need a message of their
own raise ``ValueError`` from a validator, saying what is wrong without naming the field (the
caller knows where it was written)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from broker_bridge.envelope import valid_address


class Settings(BaseModel):
    """Frozen, and refusing fields it does not know."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


def addresses(values: Iterable[str]) -> None:
    """Refuse any of ``values`` that is not an actor address."""
    for value in values:
        if not valid_address(value):
            raise ValueError(f"{value!r} is not an actor address (letters, digits, '.', '_', "
                             "'-'; at most 128 characters)")


def _address(value: str) -> str:
    addresses([value])
    return value


Address = Annotated[str, AfterValidator(_address)]
"""An actor's address (refused unless it can be one)."""


def positive(value: float) -> float:
    if not value > 0:
        raise ValueError(f"must be more than 0, got {value}")
    return value


__all__ = ["Address", "Settings", "addresses", "positive"]
