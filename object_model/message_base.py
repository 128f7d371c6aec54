"""What every message is built from: ``MessageBase`` and the field types the catalogue shares
(key-paths and patterns as text on the wire, ids, revisions, epochs, digests)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
)

from keypath import KeyPath, KeyPathError, KeyPattern

MAX_ITEMS = 100_000
ROOT = KeyPath.root()


def _parser(cls: type[KeyPath] | type[KeyPattern]) -> Any:
    """A pydantic validator taking the text form (or an instance) of ``cls``."""

    def parse(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls.parse(value)
            except KeyPathError as exc:
                raise ValueError(str(exc)) from None
        raise ValueError(f"expected {cls.__name__} text, got {type(value).__name__}")

    return parse


Path = Annotated[
    KeyPath,
    PlainValidator(_parser(KeyPath)),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "format": "key-path"}),
]
"""A key-path field: text on the wire, ``KeyPath`` in Python."""
Pattern = Annotated[
    KeyPattern,
    PlainValidator(_parser(KeyPattern)),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "format": "key-pattern"}),
]
"""A key-pattern field: text on the wire, ``KeyPattern`` in Python."""
MessageId = Annotated[bytes, Field(min_length=16, max_length=16)]
"""A 128-bit end-to-end message id."""
Revision = Annotated[int, Field(ge=0, lt=2**63)]
Epoch = Annotated[int, Field(ge=0, lt=2**64)]
Digest = Annotated[bytes, Field(min_length=16, max_length=16)]


class MessageBase(BaseModel):
    """Common configuration: immutable, strict about unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    wire_id: ClassVar[int]
