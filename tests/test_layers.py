"""The layer rules of DESIGN.md section 2 hold for the whole code base."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.layering import PURE, _is, check_tree

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
        # the pure logic of the actors
        ("actors.logic.monitoring", "import asyncio\n", "imports I/O or clock module asyncio"),
        ("actors.logic.energy.day", "import time\nx = time.perf_counter()\n",
         "reads the clock: perf_counter()"),
        ("actors.logic.tasks", "from datetime import datetime\nx = datetime.now()\n",
         "reads the clock: now()"),
        ("actors.logic.station.ev", "import random\nx = random.random()\n",
         "draws its own randomness: random.random()"),
        ("actors.logic.energy.s2", "import uuid\nx = uuid.uuid4()\n",
         "draws its own randomness: uuid.uuid4()"),
        ("actors.logic.resync_plan", "from actors.runtime.actor import Actor\n",
         "imports higher layer actors.runtime.actor"),
        # the layers inside actors
        ("actors.runtime.actor", "from actors.csms.local import LocalCsms\n",
         "imports higher layer actors.csms.local"),
        ("actors.station.actor", "from actors.csms import replicas\n",
         "imports its peer actors.csms.replicas"),
        ("actors.csms.local", "from actors.app.wiring import start_local\n",
         "imports higher layer actors.app.wiring"),
        ("actors.testing.world", "from actors.app import demo\n",
         "imports higher layer actors.app.demo"),
        ("actors.runtime.storage.trees", "import prometheus_client\n", "prometheus_client"),
        ("actors.csms.local", "import aiosqlite\n", "imports aiosqlite (only"),
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
    _write(tmp_path, "actors.logic.ok", "import random\nrng = random.Random(7)\n"
                                        "from broker_bridge.backoff import Backoff\n")
    _write(tmp_path, "actors.runtime.storage.trees", "import aiosqlite\n"
                                                     "from actors.logic import ok\n")
    _write(tmp_path, "actors.csms.local", "from actors.runtime.storage import trees\n")
    _write(tmp_path, "actors.app.demo", "from actors.csms import local\nimport asyncio\n")
    assert check_tree(tmp_path) == []


PURE_LOGIC = ["actors.logic.monitoring", "actors.logic.tasks", "actors.logic.tree_access",
              "actors.logic.resync_plan", "actors.logic.energy.allocation",
              "actors.logic.energy.day", "actors.logic.energy.s2",
              "actors.logic.energy.site_envelope", "actors.logic.station.simulation",
              "actors.logic.station.pebc", "actors.logic.join_proof", "broker_bridge.backoff"]


@pytest.mark.parametrize("module", PURE_LOGIC)
def test_the_pure_logic_of_the_actors_lives_in_pure_modules(module: str) -> None:
    """The monitoring engine, the task book, the allocation, the station simulation and its
    PEBC mapping, the resync plan and the backoff exist where the checker holds them pure."""
    file = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    assert file.is_file(), module
    assert _is(module, PURE)
