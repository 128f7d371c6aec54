"""The one exception type of the key-path layer."""

from __future__ import annotations


class KeyPathError(ValueError):
    """A key-path or key-pattern could not be parsed or built.

    ``position`` is the 0-based character offset in ``text`` where the problem was found
    (``None`` when the problem is not tied to a position, such as a path that is too deep),
    ``reason`` says what is wrong in words a user can act on.

    ``code`` is the stable error code the object model's ``ErrorCode`` enum uses for it; this
    layer imports nothing of ours, so it carries the code as plain text.
    """

    code = "invalid_keypath"

    def __init__(self, reason: str, text: str = "", position: int | None = None) -> None:
        self.reason = reason
        self.text = text
        self.position = position
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"{reason}{where} in key-path {text!r}")
