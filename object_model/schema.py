"""Schemas: what may exist at each key-path of a tree, and of which type.

A device model is written as pydantic classes (``Component`` subclasses). Fields are

* simple values: ``Annotated[float, float32(0, 500), Unit("A")]`` (the ``ValueType`` checks);
* nested components: ``power_module: PowerModule`` (a record, expanded into the tree);
* collections keyed by id: ``Annotated[dict[int, Connector], Ids(uint8(1, 8))]``;
* complex values: a ``ComplexValue`` model stored whole in one leaf.

``SchemaRegistry`` compiles such a class into schema nodes once, then answers "what is declared
at this key-path" (``resolve``), validates writes, infers the type of text values, and knows
the namespaces: a namespaced segment (``com.acme:coolingLoop``) is only accepted when its
namespace is registered, so two vendors can never collide and a typo in a namespace is reported
as such, never silently stored.
"""

from __future__ import annotations

import difflib
import re
import types as pytypes
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict

from keypath import (
    GLOBSTAR,
    STAR,
    KeyPath,
    KeyPathError,
    KeyPattern,
    Wildcard,
    escape_segment,
    namespace_of,
)
from keypath.path import check_segment
from object_model.access import PropertyAccessKind
from object_model.errors import (
    InvalidKeyPathError,
    ModelError,
    UnknownNamespaceError,
    UnknownPathError,
    WrongTypeError,
)
from object_model.types import (
    BOOL,
    DURATION,
    TIMESTAMP,
    AnyType,
    BytesType,
    ComplexType,
    ComplexValue,
    EnumType,
    FloatType,
    IntType,
    StringType,
    ValueType,
    uint32,
)


class Component(BaseModel):
    """Base of device-model components (records expanded into the tree, one leaf per value)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_enum_values=True)


@dataclass(frozen=True)
class Unit:
    """Field metadata: the physical unit of a value (``Unit("W")``)."""

    symbol: str


@dataclass(frozen=True)
class Ids:
    """Field metadata for a collection: the type of its ids and how many members it may hold."""

    key: ValueType
    max_members: int = 1024


# -- schema nodes ------------------------------------------------------------------------------


@dataclass(eq=False)
class SchemaNode:
    access: PropertyAccessKind
    description: str = ""

    kind = "node"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.kind, "access": self.access.value}
        if self.description:
            out["description"] = self.description
        return out


@dataclass(eq=False)
class LeafSchema(SchemaNode):
    """A leaf: holds one value of ``value_type``."""

    value_type: ValueType = field(default_factory=AnyType)
    unit: str | None = None

    kind = "leaf"

    def describe(self) -> dict[str, Any]:
        out = super().describe() | self.value_type.describe()
        if self.unit:
            out["unit"] = self.unit
        return out


@dataclass(eq=False)
class RecordSchema(SchemaNode):
    """A component: a fixed set of named children (plus registered namespaced extensions)."""

    fields: dict[str, SchemaNode] = field(default_factory=dict)
    type_name: str = ""

    kind = "record"

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.type_name:
            out["component"] = self.type_name
        return out


@dataclass(eq=False)
class CollectionSchema(SchemaNode):
    """Members keyed by id, all of the same schema."""

    key: ValueType = field(default_factory=lambda: uint32())
    member: SchemaNode = field(default_factory=lambda: LeafSchema(PropertyAccessKind.READ))
    max_members: int = 1024

    kind = "collection"

    def check_id(self, segment: str) -> Any:
        """The member id a segment stands for, or ``WrongTypeError``; ids have one spelling."""
        if isinstance(self.key, IntType):
            if not (segment.isdigit() or (segment[:1] == "-" and segment[1:].isdigit())):
                raise WrongTypeError(f"collection ids here are integers, not {segment!r}")
            value = int(segment)
            if str(value) != segment:
                raise WrongTypeError(f"id {segment!r} is not canonical: write {value}")
            return self.key.validate(value)
        return self.key.validate(segment)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"id": self.key.describe(), "max_members": self.max_members}


class AnySchema(SchemaNode):
    """Permissive node: any path below, any plain value (replica caches of other actors)."""

    kind = "any"

    def __init__(self, max_value_bytes: int = 65536) -> None:
        super().__init__(PropertyAccessKind.READ_WRITE, "any plain value")
        self.value_type = AnyType(max_value_bytes)


# -- compiling component classes -----------------------------------------------------------------


@dataclass(frozen=True)
class Namespace:
    """A registered namespace: a vendor's (``com.acme``) or an imported standard's (``obis``).

    ``types`` are the namespace's own component and value types, by local name; the registry
    finds them as ``prefix:Name`` (``com.acme:CoolingLoop``).
    """

    prefix: str
    title: str
    types: Mapping[str, Any] = field(default_factory=dict)

    _PREFIX = re.compile(r"[a-z][a-z0-9-]*(\.[a-z0-9-]+)*")

    def __post_init__(self) -> None:
        if not self._PREFIX.fullmatch(self.prefix):
            raise ValueError(
                f"namespace {self.prefix!r}: use a reverse domain name (com.example) "
                "or a registered standard's short name (obis, iec61850)"
            )


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """Strip ``Optional`` and ``Annotated`` layers, collecting metadata."""
    meta = list(metadata)
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            args = typing.get_args(annotation)
            annotation, meta = args[0], meta + list(args[1:])
        elif origin in (Union, pytypes.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                raise TypeError(f"unions are not schema types: {annotation}")
            annotation = members[0]
        else:
            return annotation, meta


def _default_value_type(annotation: Any) -> ValueType:
    if annotation is bool:
        return BOOL
    if annotation is int:
        return IntType("int64")
    if annotation is float:
        return FloatType("float64")
    if annotation is str:
        return StringType()
    if annotation is bytes:
        return BytesType()
    if annotation is datetime:
        return TIMESTAMP
    if annotation is timedelta:
        return DURATION
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return EnumType.of(annotation)
    if isinstance(annotation, type) and issubclass(annotation, ComplexValue):
        return ComplexType(annotation)
    raise TypeError(f"no schema type for {annotation!r}")


def compile_node(
    annotation: Any, metadata: list[Any], inherited: PropertyAccessKind, description: str = ""
) -> SchemaNode:
    """The schema node for one field's annotation and metadata."""
    annotation, meta = _unwrap(annotation, metadata)
    access = next((m for m in meta if isinstance(m, PropertyAccessKind)), inherited)
    if isinstance(annotation, type) and issubclass(annotation, Component):
        return compile_component(annotation, access, description)
    if typing.get_origin(annotation) is dict:
        key_ann, member_ann = typing.get_args(annotation)
        ids = next((m for m in meta if isinstance(m, Ids)), None)
        if ids is None:
            ids = Ids(uint32() if key_ann is int else StringType(64))
        member = compile_node(member_ann, [], access)
        return CollectionSchema(access, description, ids.key, member, ids.max_members)
    value_type = next((m for m in meta if isinstance(m, ValueType)), None)
    if value_type is None:
        value_type = _default_value_type(annotation)
    unit = next((m.symbol for m in meta if isinstance(m, Unit)), None)
    return LeafSchema(access, description, value_type, unit)


def compile_component(
    cls: type[Component], access: PropertyAccessKind = PropertyAccessKind.READ, description: str = ""
) -> RecordSchema:
    """A record schema for a component class. Each call builds fresh nodes, so extending one
    position of one registry never leaks into another."""
    fields: dict[str, SchemaNode] = {}
    for name, info in cls.model_fields.items():
        segment = info.alias or name
        check_segment(segment)
        fields[segment] = compile_node(info.annotation, info.metadata, access, info.description or "")
    return RecordSchema(access, description or (cls.__doc__ or "").strip().split("\n")[0],
                        fields, cls.__name__)


# -- the registry ----------------------------------------------------------------------------------


class SchemaRegistry:
    """The schema of one kind of tree (one product's device model, with its namespaces)."""

    _CACHE_LIMIT = 65536

    def __init__(
        self,
        root: type[Component] | RecordSchema,
        namespaces: Iterable[Namespace] = (),
        *,
        root_access: PropertyAccessKind = PropertyAccessKind.READ,
    ) -> None:
        self.namespaces: dict[str, Namespace] = {}
        for ns in namespaces:
            self.register_namespace(ns)
        self.root = root if isinstance(root, RecordSchema) else compile_component(root, root_access)
        self._cache: dict[KeyPath, SchemaNode] = {}
        self._children: dict[tuple[KeyPath, str | int], KeyPath] = {}  # of ``expand``'s maps
        for where, node in self.walk():
            if isinstance(node, RecordSchema):
                for name in node.fields:
                    prefix = namespace_of(name)
                    if prefix is not None and prefix not in self.namespaces:
                        raise ValueError(
                            f"schema uses unregistered namespace {prefix!r} at {where}/{name}"
                        )

    # namespaces and extensions

    def register_namespace(self, namespace: Namespace) -> None:
        """Add a namespace; its prefix must be new."""
        if namespace.prefix in self.namespaces:
            raise ValueError(f"namespace {namespace.prefix!r} is already registered")
        self.namespaces[namespace.prefix] = namespace

    def type_named(self, qualified: str) -> Any:
        """A namespace's type by ``prefix:Name``."""
        prefix = namespace_of(qualified)
        if prefix is None:
            raise UnknownNamespaceError(f"{qualified!r} has no namespace prefix")
        ns = self.namespaces.get(prefix)
        if ns is None:
            raise UnknownNamespaceError(f"namespace {prefix!r} is not registered")
        local = qualified[len(prefix) + 1 :]
        if local not in ns.types:
            raise UnknownPathError(f"namespace {prefix!r} has no type {local!r}")
        return ns.types[local]

    def extend(
        self,
        at: str,
        segment: str,
        node: SchemaNode | type[Component] | type[ComplexValue] | ValueType | str,
        access: PropertyAccessKind | None = None,
    ) -> None:
        """Add a namespaced child ``segment`` to every record matching ``at`` (``*`` stands for
        any collection member). ``node`` may name a namespace type (``"com.acme:CoolingLoop"``)."""
        ns = namespace_of(segment)
        if ns is None:
            raise ValueError(f"extension {segment!r} needs a namespace (vendor:name)")
        if ns not in self.namespaces:
            raise UnknownNamespaceError(f"namespace {ns!r} is not registered")
        if isinstance(node, str):
            node = self.type_named(node)
        targets = list(self._records_at(at))
        if not targets:
            raise UnknownPathError(f"no record matches {at!r}", path=at)
        for record in targets:
            if segment in record.fields:
                raise ValueError(f"{at}/{segment} already exists")
            child_access = access or record.access
            if isinstance(node, SchemaNode):
                record.fields[segment] = node
            elif isinstance(node, ValueType):
                record.fields[segment] = LeafSchema(child_access, "", node)
            else:
                record.fields[segment] = compile_node(node, [], child_access)
        self._cache.clear()

    def _records_at(self, at: str) -> Iterator[RecordSchema]:
        nodes: list[SchemaNode] = [self.root]
        for seg in at.split("/") if at else []:
            nxt: list[SchemaNode] = []
            for n in nodes:
                if seg == "*" and isinstance(n, CollectionSchema):
                    nxt.append(n.member)
                elif isinstance(n, RecordSchema) and seg in n.fields:
                    nxt.append(n.fields[seg])
            nodes = nxt
        for n in nodes:
            if isinstance(n, RecordSchema):
                yield n

    # resolution

    def resolve(self, path: KeyPath | str) -> SchemaNode:
        """The schema node declared at ``path``; raises ``UnknownPathError``,
        ``UnknownNamespaceError`` or ``InvalidKeyPathError``."""
        if not isinstance(path, KeyPath):
            path = parse_path(path)
        node = self._cache.get(path)
        if node is not None:
            return node
        node = self._resolve(path)
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[path] = node
        return node

    def _resolve(self, path: KeyPath) -> SchemaNode:
        node: SchemaNode = self.root
        segs = path.segments
        for i, seg in enumerate(segs):
            if isinstance(node, RecordSchema):
                child = node.fields.get(seg)
                if child is None:
                    here = KeyPath(*segs[: i + 1])
                    ns = namespace_of(seg)
                    if ns is not None and ns not in self.namespaces:
                        raise UnknownNamespaceError(
                            f"namespace {ns!r} is not registered here "
                            f"(registered: {sorted(self.namespaces) or 'none'})",
                            path=here,
                            details={"namespace": ns, "registered": sorted(self.namespaces)},
                        )
                    hint = difflib.get_close_matches(seg, list(node.fields), n=1)
                    raise UnknownPathError(
                        f"{_where(segs[:i])} has no member {seg!r}"
                        + (f"; did you mean {hint[0]!r}?" if hint else ""),
                        path=here,
                        details={"members": sorted(node.fields)[:50]},
                    )
                node = child
            elif isinstance(node, CollectionSchema):
                try:
                    node.check_id(seg)
                except ModelError as exc:
                    raise UnknownPathError(
                        f"{_where(segs[:i])} has no member {seg!r}: {exc.text}",
                        path=KeyPath(*segs[: i + 1]),
                        details={"id": node.key.describe()},
                    ) from None
                node = node.member
            elif isinstance(node, AnySchema):
                return node
            else:
                raise UnknownPathError(
                    f"{_where(segs[:i])} is a leaf ({_type_text(node)}); it has no member {seg!r}",
                    path=KeyPath(*segs[: i + 1]),
                )
        return node

    def leaf(self, path: KeyPath | str) -> LeafSchema:
        """The leaf schema at ``path``; ``UnknownPathError`` if it is not a leaf."""
        node = self.resolve(path)
        if isinstance(node, LeafSchema):
            return node
        raise UnknownPathError(f"{path} is a {node.kind}, not a value", path=path)

    def type_at(self, path: KeyPath | str) -> ValueType:
        """The declared value type of the leaf at ``path``."""
        node = self.resolve(path)
        if isinstance(node, AnySchema):
            return node.value_type
        return self.leaf(path).value_type

    def parse_value(self, path: KeyPath | str, text: str) -> Any:
        """Infer a typed value from text for the leaf at ``path`` (``"32"`` -> ``32.0`` for a
        float32, ``"true"`` -> ``True``...)."""
        try:
            return self.type_at(path).parse_text(text)
        except Exception as exc:
            if hasattr(exc, "at"):
                raise exc.at(path) from None
            raise

    def is_writable(self, path: KeyPath) -> bool:
        return self.resolve(path).access.writable

    def check_pattern(self, pattern: KeyPattern) -> None:
        """Raise ``UnknownPathError`` (saying where) unless ``pattern`` can match a declared
        leaf: a monitor or a grant on a misspelt path would otherwise watch nothing, silently.
        Collection members need not exist yet (``evse/3/status`` is fine on two EVSEs)."""
        if _may_match(self.root, pattern.segments):
            return
        segs = pattern.segments
        literal: list[str] = []  # the segments before the first wildcard
        for seg in segs:
            if isinstance(seg, Wildcard):
                break
            literal.append(seg)
        if literal:
            node = self.resolve(KeyPath(*literal))  # raises at the first wrong segment
            if len(literal) == len(segs):
                raise UnknownPathError(
                    f"{pattern} is a {node.kind}, not a value: select what is below it with "
                    f"{pattern}/**", path=str(pattern), details={"pattern": str(pattern)})
        raise UnknownPathError(f"{pattern} matches no value declared in this model",
                               path=str(pattern), details={"pattern": str(pattern)})

    def walk(self) -> Iterator[tuple[str, SchemaNode]]:
        """Every declared node as ``(pattern_text, node)``; a collection member shows as ``*``."""
        stack: list[tuple[str, SchemaNode]] = [("", self.root)]
        while stack:
            where, node = stack.pop()
            yield where, node
            prefix = f"{where}/" if where else ""
            if isinstance(node, RecordSchema):
                for name, child in reversed(node.fields.items()):
                    stack.append((prefix + escape_segment(name), child))
            elif isinstance(node, CollectionSchema):
                stack.append((prefix + "*", node.member))

    # expansion of structured writes

    def expand(self, path: KeyPath, value: Any) -> Iterator[tuple[KeyPath, SchemaNode, Any]]:
        """Flatten a write at ``path`` into ``(leaf_path, leaf_schema, raw_value)`` items.

        A dict (or ``Component`` instance) written at a record or collection is spread over the
        leaves below it; ``None`` members are skipped. Values are not validated here."""
        node = self.resolve(path)
        if isinstance(node, (LeafSchema, AnySchema)):
            yield path, node, value
            return
        if isinstance(value, BaseModel):
            value = value.model_dump(by_alias=True, exclude_none=True)
        if not isinstance(value, Mapping):
            raise WrongTypeError(
                f"{path or 'the root'} is a {node.kind}: write a map of its members "
                f"or write its leaves, not {type(value).__name__}",
                path=path,
            )
        children = self._children
        for key, sub in value.items():
            if sub is None:
                continue
            child = children.get((path, key)) if type(key) is str else None
            if child is None:
                if type(key) is not str and type(key) is not int:
                    raise WrongTypeError(f"{path or 'the root'}: members are named by text or "
                                         f"integers, not {type(key).__name__}", path=path)
                try:
                    child = path / key
                except KeyPathError as exc:
                    raise InvalidKeyPathError(str(exc), path=path) from None
                if len(children) >= self._CACHE_LIMIT:
                    children.clear()
                children[(path, key)] = child  # every station's tree spreads the same maps
            yield from self.expand(child, sub)


class PermissiveSchema(SchemaRegistry):
    """Accepts any path and any plain value within bounds: for replica caches of actors whose
    schema this actor does not hold (their own actor validated the values already)."""

    def __init__(self, max_value_bytes: int = 65536) -> None:
        self.namespaces = {}
        self.root = RecordSchema(PropertyAccessKind.READ_WRITE, "permissive root")
        self._any = AnySchema(max_value_bytes)
        self._cache = {}

    def resolve(self, path: KeyPath | str) -> SchemaNode:
        if not isinstance(path, KeyPath):
            path = parse_path(path)
        return self._any if path.segments else self.root

    def expand(self, path: KeyPath, value: Any) -> Iterator[tuple[KeyPath, SchemaNode, Any]]:
        if not path.segments:
            raise WrongTypeError("the root of a tree cannot hold a value", path=path)
        yield path, self._any, value


def parse_path(text: str) -> KeyPath:
    """``KeyPath.parse`` with the error as an ``InvalidKeyPathError`` (an ErrorCode carrier)."""
    try:
        return KeyPath.parse(text)
    except KeyPathError as exc:
        details = {} if exc.position is None else {"position": exc.position}
        raise InvalidKeyPathError(str(exc), path=exc.text or None, details=details) from None


def _where(segs: tuple[str, ...]) -> str:
    return str(KeyPath(*segs)) or "the root"


def _type_text(node: SchemaNode) -> str:
    if isinstance(node, LeafSchema):
        return node.value_type.name
    return node.kind


def _may_match(node: SchemaNode, segs: tuple[Any, ...]) -> bool:
    """Whether the pattern segments ``segs`` can match a leaf at or below ``node``."""
    if isinstance(node, AnySchema):
        return True
    if not segs:
        return isinstance(node, LeafSchema)
    seg, rest = segs[0], segs[1:]
    if seg is GLOBSTAR:
        return _may_match(node, rest) or any(
            _may_match(child, segs) for child in _children(node))
    if seg is STAR:
        return any(_may_match(child, rest) for child in _children(node))
    if isinstance(node, RecordSchema):
        child = node.fields.get(seg)
        return child is not None and _may_match(child, rest)
    if isinstance(node, CollectionSchema):
        try:
            node.check_id(seg)
        except ModelError:
            return False
        return _may_match(node.member, rest)
    return False


def _children(node: SchemaNode) -> Iterable[SchemaNode]:
    if isinstance(node, RecordSchema):
        return node.fields.values()
    if isinstance(node, CollectionSchema):
        return (node.member,)
    return ()
