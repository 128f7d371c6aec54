"""The unified object model: typed trees of state addressed by key-paths, and the messages
that read, change and report them.

Layer rules: this package imports only ``keypath`` of ours (plus pydantic), does no I/O and never
reads the clock; time and randomness that matter are passed in.
"""

from object_model.access import AccessPolicy, Grant, PropertyAccessKind, Role
from object_model.errors import ErrorCode, ModelError
from object_model.messages import (
    Ack,
    Batch,
    ErrorReport,
    JoinNetworkRequest,
    JoinNetworkResponse,
    Message,
    MessageBase,
    PropertyTreeDiscoveryRequest,
    PropertyTreeDiscoveryResponse,
    PropertyValueRead,
    PropertyValueReadResponse,
    PropertyValueUpdate,
    PropertyValueWrite,
    PropertyValueWriteResponse,
    TreeInfo,
    WriteItem,
    decode_message,
    encode_message,
    error_report,
)
from object_model.schema import (
    Component,
    Ids,
    Namespace,
    PermissiveSchema,
    SchemaRegistry,
    Unit,
)
from object_model.tree import (
    ABSENT,
    ChangeSet,
    Delete,
    DiffEntry,
    Leaf,
    LeafTuple,
    ObjectTree,
    TransactionCommitted,
    Write,
)
from object_model.types import ComplexValue, ValueType

__all__ = [
    "ABSENT",
    "AccessPolicy",
    "Ack",
    "Batch",
    "ChangeSet",
    "ComplexValue",
    "Component",
    "Delete",
    "DiffEntry",
    "ErrorCode",
    "ErrorReport",
    "Grant",
    "Ids",
    "JoinNetworkRequest",
    "JoinNetworkResponse",
    "Leaf",
    "LeafTuple",
    "Message",
    "MessageBase",
    "ModelError",
    "Namespace",
    "ObjectTree",
    "PermissiveSchema",
    "PropertyAccessKind",
    "PropertyTreeDiscoveryRequest",
    "PropertyTreeDiscoveryResponse",
    "PropertyValueRead",
    "PropertyValueReadResponse",
    "PropertyValueUpdate",
    "PropertyValueWrite",
    "PropertyValueWriteResponse",
    "Role",
    "SchemaRegistry",
    "TransactionCommitted",
    "TreeInfo",
    "Unit",
    "ValueType",
    "Write",
    "WriteItem",
    "decode_message",
    "encode_message",
    "error_report",
]
