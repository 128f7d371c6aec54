"""Native simple types and the value types of the object model.

Values in a tree are *plain data*: ``bool``, ``int``, ``float``, ``str``, ``bytes`` and, for
complex value types, dicts and lists of those. The type of a value lives in the schema, not in
the value: a timestamp is an ``int`` of microseconds since the Unix epoch (UTC), a duration an
``int`` of microseconds, an enumeration member its text. Plain values cost nothing to encode and
compare the same on every actor.

Each ``ValueType`` is a precompiled check: ``validate(value)`` returns the normalised plain value
or raises ``WrongTypeError`` / ``OutOfRangeError`` / ``InvalidValueError``. The same objects
serve as pydantic metadata (``Annotated[int, uint16()]``), so component models and tree writes
validate with one piece of code.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic_core import core_schema

from object_model import canonical
from object_model.errors import (
    InvalidValueError,
    LimitExceededError,
    OutOfRangeError,
    WrongTypeError,
)

_f32 = struct.Struct("<f")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class ValueType:
    """A type a leaf may hold. Subclasses set ``name`` and implement ``validate``."""

    name: str = "value"  # a class constant, or per instance (IntType, FloatType)

    def validate(self, value: Any) -> Any:
        raise NotImplementedError

    def parse_text(self, text: str) -> Any:
        """A value from its text form (command lines, config files), validated."""
        return self.validate(text)

    def describe(self) -> dict[str, Any]:
        """The type as plain data, for discovery responses and documentation."""
        return {"type": self.name}

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        def check(value: Any) -> Any:
            try:
                return self.validate(value)
            except (WrongTypeError, OutOfRangeError, InvalidValueError) as exc:
                raise ValueError(exc.text) from None

        return core_schema.no_info_plain_validator_function(check)

    def __repr__(self) -> str:
        return f"<{self.name}>"


class BoolType(ValueType):
    name = "bool"
    _TEXT: ClassVar[dict[str, bool]] = {"true": True, "false": False, "1": True, "0": False,
                                        "on": True, "off": False, "yes": True, "no": False}

    def validate(self, value: Any) -> bool:
        if type(value) is bool:
            return value
        raise WrongTypeError(f"expected bool, got {type(value).__name__} {value!r:.40}")

    def parse_text(self, text: str) -> bool:
        try:
            return self._TEXT[text.strip().lower()]
        except KeyError:
            raise WrongTypeError(f"expected true or false, got {text!r:.40}") from None


INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}


class IntType(ValueType):
    """A native integer type, optionally narrowed to ``[ge, le]``."""

    def __init__(self, native: str, ge: int | None = None, le: int | None = None) -> None:
        lo, hi = INT_RANGES[native]
        if ge is not None:
            if ge < lo:
                raise ValueError(f"{native} cannot go below {lo}")
            lo = ge
        if le is not None:
            if le > hi:
                raise ValueError(f"{native} cannot go above {hi}")
            hi = le
        self.native, self.lo, self.hi = native, lo, hi
        self.name = native

    def validate(self, value: Any) -> int:
        if type(value) is not int:
            if isinstance(value, int) and not isinstance(value, bool):
                value = int(value)  # IntEnum and friends
            else:
                raise WrongTypeError(
                    f"expected {self.native}, got {type(value).__name__} {value!r:.40}"
                )
        if value < self.lo or value > self.hi:
            raise OutOfRangeError(
                f"{value} is outside {self.native} range [{self.lo}, {self.hi}]",
                details={"min": self.lo, "max": self.hi, "value": value},
            )
        return value

    def parse_text(self, text: str) -> int:
        try:
            return self.validate(int(text.strip(), 0))
        except ValueError:
            raise WrongTypeError(f"expected {self.native}, got {text!r:.40}") from None

    def describe(self) -> dict[str, Any]:
        return {"type": self.native, "min": self.lo, "max": self.hi}


class FloatType(ValueType):
    """float32 or float64, finite, optionally narrowed to ``[ge, le]``.

    float32 values are rounded to single precision on write, so that every actor stores exactly
    what a 32-bit device would. Integers are accepted and become floats.
    """

    def __init__(self, native: str = "float64", ge: float | None = None, le: float | None = None):
        if native not in ("float32", "float64"):
            raise ValueError(native)
        self.native = native
        self.name = native
        self.single = native == "float32"
        self.lo = -math.inf if ge is None else float(ge)
        self.hi = math.inf if le is None else float(le)

    def validate(self, value: Any) -> float:
        t = type(value)
        if t is not float:
            if t is int or (isinstance(value, (int, float)) and not isinstance(value, bool)):
                value = float(value)
            else:
                raise WrongTypeError(
                    f"expected {self.native}, got {type(value).__name__} {value!r:.40}"
                )
        if not math.isfinite(value):
            raise OutOfRangeError(f"{value} is not a finite number")
        if self.single:
            try:
                value = _f32.unpack(_f32.pack(value))[0]
            except OverflowError:
                raise OutOfRangeError(f"{value} does not fit a float32") from None
        if value < self.lo or value > self.hi:
            raise OutOfRangeError(
                f"{value} is outside [{self.lo}, {self.hi}]",
                details={"min": self.lo, "max": self.hi, "value": value},
            )
        return value

    def parse_text(self, text: str) -> float:
        try:
            return self.validate(float(text.strip()))
        except ValueError:
            raise WrongTypeError(f"expected {self.native}, got {text!r:.40}") from None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.native}
        if math.isfinite(self.lo):
            out["min"] = self.lo
        if math.isfinite(self.hi):
            out["max"] = self.hi
        return out


class StringType(ValueType):
    """Text of at most ``max_length`` characters, optionally matching a regular expression."""

    name = "string"

    def __init__(self, max_length: int = 1000, pattern: str | None = None) -> None:
        self.max_length = max_length
        self.pattern = pattern
        self._regex = re.compile(pattern) if pattern else None

    def validate(self, value: Any) -> str:
        if type(value) is not str:
            if isinstance(value, str):
                value = str(value)
            else:
                raise WrongTypeError(f"expected string, got {type(value).__name__} {value!r:.40}")
        if len(value) > self.max_length:
            raise OutOfRangeError(
                f"text of {len(value)} characters exceeds {self.max_length}",
                details={"max_length": self.max_length},
            )
        if self._regex is not None and not self._regex.fullmatch(value):
            raise InvalidValueError(f"{value!r:.40} does not match {self.pattern}")
        return value

    def parse_text(self, text: str) -> str:
        return self.validate(text)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "max_length": self.max_length}
        if self.pattern:
            out["pattern"] = self.pattern
        return out


class BytesType(ValueType):
    name = "bytes"

    def __init__(self, max_length: int = 65536) -> None:
        self.max_length = max_length

    def validate(self, value: Any) -> bytes:
        if type(value) is not bytes:
            if isinstance(value, (bytearray, memoryview)):
                value = bytes(value)
            else:
                raise WrongTypeError(f"expected bytes, got {type(value).__name__}")
        if len(value) > self.max_length:
            raise OutOfRangeError(f"{len(value)} bytes exceed {self.max_length}")
        return value

    def parse_text(self, text: str) -> bytes:
        try:
            return self.validate(bytes.fromhex(text.strip()))
        except ValueError:
            raise WrongTypeError("expected hexadecimal bytes") from None

    def describe(self) -> dict[str, Any]:
        return {"type": "bytes", "max_length": self.max_length}


class TimestampType(ValueType):
    """Microseconds since 1970-01-01T00:00:00Z as an int; aware datetimes are converted."""

    name = "timestamp"
    _MAX = 2**63 - 1

    def validate(self, value: Any) -> int:
        if type(value) is int:
            if 0 <= value <= self._MAX:
                return value
            raise OutOfRangeError(f"timestamp {value} is before 1970 or beyond int64")
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise InvalidValueError("naive datetime: give a timezone (UTC)")
            return self.validate(to_micros(value))
        raise WrongTypeError(
            f"expected timestamp (int microseconds since epoch, UTC), got {type(value).__name__}"
        )

    def parse_text(self, text: str) -> int:
        text = text.strip()
        if text.lstrip("-").isdigit():
            return self.validate(int(text))
        try:
            return self.validate(datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            raise WrongTypeError(f"expected an ISO 8601 timestamp, got {text!r:.40}") from None


class DurationType(ValueType):
    """Microseconds as an int (non-negative unless ``signed``); timedeltas are converted."""

    name = "duration"

    def __init__(self, signed: bool = False, le: int | None = None) -> None:
        self.signed = signed
        self.hi = le if le is not None else 2**63 - 1

    def validate(self, value: Any) -> int:
        if isinstance(value, timedelta):
            value = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        if type(value) is not int:
            raise WrongTypeError(f"expected duration (int microseconds), got {type(value).__name__}")
        if (value < 0 and not self.signed) or value > self.hi or value < -self.hi:
            raise OutOfRangeError(f"duration {value} us out of range")
        return value

    def parse_text(self, text: str) -> int:
        text = text.strip()
        units = {"us": 1, "ms": 1_000, "s": 1_000_000, "min": 60_000_000, "h": 3_600_000_000}
        m = re.fullmatch(r"(-?\d+(?:\.\d+)?)\s*(us|ms|s|min|h)?", text)
        if not m:
            raise WrongTypeError(f"expected a duration such as 30s or 250ms, got {text!r:.40}")
        return self.validate(round(float(m.group(1)) * units[m.group(2) or "s"]))


class EnumType(ValueType):
    """One of a fixed set of names, stored as text."""

    name = "enum"

    def __init__(self, values: Iterable[str], enum_cls: type[Enum] | None = None) -> None:
        self.values = tuple(values)
        self._set = frozenset(self.values)
        self.enum_cls = enum_cls

    @classmethod
    def of(cls, enum_cls: type[Enum]) -> EnumType:
        return cls([str(m.value) for m in enum_cls], enum_cls)

    def validate(self, value: Any) -> str:
        if isinstance(value, Enum):
            value = value.value
        if type(value) is not str:
            if isinstance(value, str):
                value = str(value)
            else:
                raise WrongTypeError(f"expected one of {list(self.values)}, got {type(value).__name__}")
        if value not in self._set:
            raise OutOfRangeError(
                f"{value!r:.40} is not one of {list(self.values)}",
                details={"allowed": list(self.values)},
            )
        return value

    def describe(self) -> dict[str, Any]:
        return {"type": "enum", "values": list(self.values)}


class ComplexValue(BaseModel):
    """Base of complex value types: a pydantic model stored as one atomic leaf.

    Subclasses group simple values that only make sense together (a power envelope, an energy
    transfer plan). Writes validate the whole value; the tree stores its plain form.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)


class ComplexType(ValueType):
    """A ``ComplexValue`` model as the type of one leaf."""

    name = "complex"

    def __init__(self, model: type[ComplexValue]) -> None:
        self.model = model
        self._adapter = TypeAdapter(model)
        self.type_name = model.__name__

    def validate(self, value: Any) -> dict[str, Any]:
        if isinstance(value, self.model):
            return value.model_dump(mode="python")
        if not isinstance(value, dict):
            raise WrongTypeError(f"expected {self.type_name} (a map), got {type(value).__name__}")
        try:
            model = self._adapter.validate_python(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            raise InvalidValueError(
                f"{self.type_name}: {first['msg']}" + (f" at {loc}" if loc else ""),
                details={"errors": [
                    {"loc": [str(x) for x in e["loc"]], "msg": e["msg"]} for e in exc.errors()[:10]
                ]},
            ) from None
        return model.model_dump(mode="python")

    def to_model(self, plain: dict[str, Any]) -> ComplexValue:
        return self.model.model_validate(plain)

    def describe(self) -> dict[str, Any]:
        return {"type": "complex", "name": self.type_name}


class AnyType(ValueType):
    """Any plain value within bounds: the leaf type of permissive (replica) trees."""

    name = "any"

    def __init__(self, max_bytes: int = 65536) -> None:
        self.max_bytes = max_bytes

    def validate(self, value: Any) -> Any:
        t = type(value)
        if t in (bool, int, float, str) or value is None:
            if t is float and not math.isfinite(value):
                raise OutOfRangeError(f"{value} is not a finite number")
            if t is str and len(value) > self.max_bytes:
                raise LimitExceededError(f"text longer than {self.max_bytes}")
            return value
        try:
            size = len(canonical.encode(value))
        except WrongTypeError:
            raise
        if size > self.max_bytes:
            raise LimitExceededError(f"value of {size} bytes exceeds {self.max_bytes}")
        return value


def to_micros(moment: datetime) -> int:
    """An aware datetime as microseconds since the Unix epoch."""
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """Microseconds since the Unix epoch as an aware UTC datetime."""
    return _EPOCH + micros * _MICROSECOND


# -- factories and ready-made types for Annotated[...] ------------------------------------------


def _int_factory(native: str) -> Callable[..., IntType]:
    def make(ge: int | None = None, le: int | None = None) -> IntType:
        return IntType(native, ge, le)

    make.__name__ = native
    make.__doc__ = f"The native {native} type, optionally narrowed to [ge, le]."
    return make


int8, int16, int32, int64 = (_int_factory(n) for n in ("int8", "int16", "int32", "int64"))
uint8, uint16, uint32, uint64 = (_int_factory(n) for n in ("uint8", "uint16", "uint32", "uint64"))


def float32(ge: float | None = None, le: float | None = None) -> FloatType:
    """Single precision, finite, optionally narrowed."""
    return FloatType("float32", ge, le)


def float64(ge: float | None = None, le: float | None = None) -> FloatType:
    """Double precision, finite, optionally narrowed."""
    return FloatType("float64", ge, le)


def string(max_length: int = 1000, pattern: str | None = None) -> StringType:
    return StringType(max_length, pattern)


BOOL = BoolType()
TIMESTAMP = TimestampType()
DURATION = DurationType()
