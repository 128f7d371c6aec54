"""The layer rules of DESIGN.md section 2 hold for the whole code base."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.layering import check_tree

ROOT = Path(__file__).resolve().parent.parent


def test_the_code_base_keeps_the_layer_rules() -> None:
    violations = check_tree(ROOT)
    assert not violations, "layer rules broken:\n" + "\n".join(map(str, violations))


def test_every_layer_has_modules() -> None:
    for layer in ("keypath", "object_model"):
        assert list((ROOT / layer).rglob("*.py")), layer


def _write(root: Path, module: str, source: str) -> None:
    path = root.joinpath(*module.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(root).parents:
        if str(parent) != ".":
            (root / parent / "__init__.py").touch()
    path.write_text(source)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("keypath.bad", "import object_model\n", "imports higher layer object_model"),
        ("keypath.bad", "import pydantic\n", "imports pydantic, not allowed in keypath"),
        ("object_model.bad", "from actors import cli\n", "imports higher layer actors"),
        ("object_model.bad", "import time\n", "imports I/O or clock module time"),
        ("object_model.bad", "import asyncio\n", "imports I/O or clock module asyncio"),
        ("object_model.bad", "from datetime import datetime\nx = datetime.now()\n",
         "reads the clock: now()"),
        ("object_model.bad", "from ..broker_bridge import x\n", "imports higher layer"),
        ("actors.bad", "import slixmpp\n", "imports slixmpp"),
        ("broker_bridge.session", "import socket\n", "imports I/O or clock module socket"),
        ("broker_bridge.outbox", "import prometheus_client\n", "prometheus_client"),
    ],
)
def test_the_checker_catches_each_kind_of_violation(
    tmp_path: Path, module: str, source: str, expected: str
) -> None:
    _write(tmp_path, module, source)
    violations = check_tree(tmp_path)
    assert any(expected in str(v) for v in violations), violations


def test_the_checker_accepts_allowed_imports(tmp_path: Path) -> None:
    _write(tmp_path, "object_model.ok", "import pydantic\nfrom keypath import KeyPath\n")
    _write(tmp_path, "broker_bridge.xmpp", "import slixmpp\nimport asyncio\n")
    _write(tmp_path, "actors.app.metrics", "import prometheus_client\n")
    assert check_tree(tmp_path) == []
