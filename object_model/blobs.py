"""Content-addressed blobs (firmware images, display configurations) and the firmware update.

A blob is named by the SHA-256 of its bytes and travels in chunks of ``chunk_size`` bytes,
each with its own SHA-256 in the blob's ``BlobRef``: a receiver asks only for the chunks it
lacks (so a transfer resumes where it stopped), checks each chunk as it comes (a corrupted
one is asked for again, not carried to the end) and the whole blob at the end.

``FirmwareUpdate`` starts a firmware-update task on a station: fetch the image from
``source`` (whoever offers it: the station's CSMS, which caches it for the whole site),
verify it, install it (simulated), report; the task's progress lives at ``tasks/<id>``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from object_model.message_base import ROOT, MessageBase, Path
from object_model.monitoring import TaskId

Sha256 = Annotated[bytes, Field(min_length=32, max_length=32)]
MIN_CHUNK = 4 * 1024
MAX_CHUNK = 128 * 1024
MAX_CHUNKS = 4_096
"""At most 4,096 chunks (512 MiB at the largest chunk size): the ``BlobRef`` stays small."""


class BlobRef(MessageBase):
    """What a receiver needs to fetch and check a blob: its hash, size, chunking and the hash
    of every chunk."""

    hash: Sha256
    size: int = Field(ge=0)
    chunk_size: int = Field(64 * 1024, ge=MIN_CHUNK, le=MAX_CHUNK)
    chunk_hashes: list[Sha256] = Field(default_factory=list, max_length=MAX_CHUNKS)
    media_type: str = Field("application/octet-stream", max_length=100)

    @property
    def chunks(self) -> int:
        return len(self.chunk_hashes)

    def chunk_length(self, index: int) -> int:
        """The byte length of chunk ``index`` (the last one may be short)."""
        return min(self.chunk_size, self.size - index * self.chunk_size)

    @model_validator(mode="after")
    def _consistent(self) -> BlobRef:
        expected = -(-self.size // self.chunk_size)
        if len(self.chunk_hashes) != expected:
            raise ValueError(f"{self.size} bytes in chunks of {self.chunk_size} make {expected} "
                             f"chunks, but {len(self.chunk_hashes)} chunk hashes are given")
        return self


class BlobChunkRequest(MessageBase):
    """Ask for chunk ``index`` of the blob ``hash``; answered by ``BlobChunk``."""

    kind: Literal["BlobChunkRequest"] = "BlobChunkRequest"
    wire_id: ClassVar[int] = 18
    hash: Sha256
    index: int = Field(ge=0, lt=MAX_CHUNKS)


class BlobChunk(MessageBase):
    """Chunk ``index`` of the blob ``hash``."""

    kind: Literal["BlobChunk"] = "BlobChunk"
    wire_id: ClassVar[int] = 19
    hash: Sha256
    index: int = Field(ge=0, lt=MAX_CHUNKS)
    data: bytes = Field(max_length=MAX_CHUNK)


class FirmwareManifest(MessageBase):
    """What a manufacturer signs about a firmware image: whom it is for (``vendor``,
    ``model``), what it is (``version``, and ``counter``, which only grows: a station
    refuses a lower one than it has installed), and which bytes (``hash``, ``size``).
    ``actors.logic.firmware_trust`` signs and checks it."""

    vendor: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=64)
    counter: int = Field(ge=0, lt=2**32)
    hash: Sha256
    size: int = Field(ge=0)


class FirmwareUpdate(MessageBase):
    """Start the firmware-update task ``task`` on the station at ``tree``: fetch ``blob``
    from ``source`` (default: the sender), verify, install ``version``; answered by
    ``TaskStatus`` once the task exists (its progress is at ``tasks/<task>``). ``manifest``,
    ``signer`` and ``signature`` are the manufacturer's signed description of the image,
    which the station checks before anything else (``actors.logic.firmware_trust``)."""

    kind: Literal["FirmwareUpdate"] = "FirmwareUpdate"
    wire_id: ClassVar[int] = 20
    tree: Path = ROOT
    task: TaskId
    blob: BlobRef
    version: str = Field(min_length=1, max_length=64)
    source: str | None = Field(None, min_length=1, max_length=256)
    manifest: FirmwareManifest | None = None
    signer: bytes = Field(b"", max_length=32)
    signature: bytes = Field(b"", max_length=128)
