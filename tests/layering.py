"""The layer rules of DESIGN.md section 2, checked by reading every module's imports (AST).

Rules:
* dependencies point down through the layers of ``LAYERS`` (dotted; the longest prefix of a
  module's name says its layer): keypath < object_model < broker_bridge < actors.logic <
  actors.runtime < {actors.station, actors.csms, actors.resource_manager} < actors.testing <
  actors.app < bench. The actors themselves are peers: none imports another;
* keypath uses the standard library only; object_model adds pydantic only;
* the pure modules (``PURE``: keypath, object_model, the sans-IO parts of broker_bridge and
  actors.logic) import no I/O, clock or asyncio module and call no clock (``now()``,
  ``time()``, ``monotonic()``...); actors.logic also draws no randomness of its own (no
  ``random.random()``, ``uuid.uuid4()``...: an ``rng`` is passed in);
* slixmpp is imported only by broker_bridge's XMPP adapter, prometheus_client only by the
  app's metrics module, s2python only by the S2 mapping, aiosqlite only by the storage of
  the bridge (its outbox) and of the actors, netfilterqueue only by the network lab's delayer,
  atheris only by the fuzzing harness.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

# (layer, rank): a module may import its own layer and any layer of a lower rank
LAYERS: dict[str, int] = {
    "keypath": 0,
    "object_model": 1,
    "broker_bridge": 2,
    "actors": 3,  # the package itself: imports nothing of ours
    "actors.logic": 3,
    "actors.runtime": 4,
    "actors.station": 5, "actors.csms": 5, "actors.resource_manager": 5,
    "actors.testing": 6,
    "actors.app": 7,
    "bench": 8,
}
STDLIB = set(sys.stdlib_module_names)

THIRD_PARTY: dict[str, set[str]] = {  # by top-level package
    "keypath": set(),
    "object_model": {"pydantic", "pydantic_core", "annotated_types", "typing_extensions"},
    "broker_bridge": {"pydantic", "pydantic_core", "msgpack", "slixmpp", "cryptography",
                      "aiosqlite", "typing_extensions"},
    "actors": {"pydantic", "pydantic_core", "msgpack", "cryptography", "aiosqlite",
               "prometheus_client", "typing_extensions", "ocpp", "s2python", "websockets",
               "jsonschema_rs"},
    "bench": {"pydantic", "msgpack", "slixmpp", "ocpp", "s2python", "websockets",
              "netfilterqueue", "cryptography", "atheris", "matplotlib", "paho"},
}

IO_OR_CLOCK = {
    "asyncio", "socket", "ssl", "select", "selectors", "subprocess", "threading",
    "multiprocessing", "concurrent", "os", "io", "pathlib", "shutil", "tempfile", "glob",
    "sqlite3", "aiosqlite", "time", "urllib", "http", "logging", "signal", "importlib",
    "slixmpp", "ctypes", "socketserver",
}
CLOCK_CALLS = {"now", "utcnow", "today", "time", "time_ns", "monotonic", "monotonic_ns",
               "perf_counter", "perf_counter_ns", "sleep"}
# drawing randomness without an rng passed in: random.random(), uuid.uuid4(), os.urandom()...
RANDOM_CALLS = {("random", name) for name in (
    "random", "uniform", "randint", "randrange", "choice", "choices", "sample", "shuffle",
    "gauss", "getrandbits", "randbytes", "seed", "triangular", "expovariate")} | {
    ("uuid", "uuid1"), ("uuid", "uuid4"), ("os", "urandom")}

# modules that must be free of I/O and clocks (package or package.module)
PURE = {"keypath", "object_model", "broker_bridge.session", "broker_bridge.codec",
        "broker_bridge.envelope", "broker_bridge.ids", "broker_bridge.backoff", "broker_bridge.pace",
        "actors.logic"}
NO_OWN_RANDOMNESS = {"actors.logic"}
ONLY_IN = {"slixmpp": {"broker_bridge.xmpp"}, "prometheus_client": {"actors.app.metrics"},
           "s2python": {"actors.logic.energy.s2"},
           "aiosqlite": {"broker_bridge.outbox", "actors.runtime.storage"},
           "netfilterqueue": {"bench.netlab.delayer"}, "atheris": {"bench.fuzz"},
           "matplotlib": {"bench.lab.report"}, "paho": {"bench.lab.calibration"},
           "jsonschema_rs": {"actors.station.ocpp.schemas"},
           "websockets": {"actors.station.ocpp.gateway", "actors.testing.ocpp_charger", "bench",
                          "tests"}}


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.text}"


def module_name(root: Path, file: Path) -> str:
    rel = file.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> str | None:
    """The layer of ``module``: the longest name in ``LAYERS`` it is, or is inside."""
    found = [layer for layer in LAYERS if _within(module, layer)]
    return max(found, key=len) if found else None


def imports_of(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, int]]:
    """Absolute names imported by a module (relative imports resolved; ``from a import b``
    gives ``a.b``, so importing a submodule counts as importing it)."""
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.extend((f"{name}.{alias.name}", node.lineno) for alias in node.names)
    return out


def _is(module: str, prefixes: set[str]) -> bool:
    return any(_within(module, p) for p in prefixes)


def _layer_problem(module: str, own: str, name: str) -> str | None:
    target = layer_of(name)
    if target is None or target == own:
        return None
    if LAYERS[target] > LAYERS[own]:
        return f"imports higher layer {name}"
    if LAYERS[target] == LAYERS[own] and "actors" not in (target, own):
        return f"imports its peer {name}"
    return None


def check_file(root: Path, file: Path) -> list[Violation]:
    module = module_name(root, file)
    own = layer_of(module)
    if own is None:
        return []
    top = module.split(".")[0]
    source = file.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(file))
    found: list[Violation] = []
    pure = _is(module, PURE)
    for name, line in imports_of(tree, module, file.name == "__init__.py"):
        first = name.split(".")[0]
        if first in THIRD_PARTY:
            if (problem := _layer_problem(module, own, name)) is not None:
                found.append(Violation(module, line, problem))
        elif first in STDLIB or first == "__future__":
            if pure and first in IO_OR_CLOCK:
                found.append(Violation(module, line, f"imports I/O or clock module "
                                                     f"{name.rsplit('.', 1)[0]}"))
        else:
            if first not in THIRD_PARTY.get(top, set()):
                found.append(Violation(module, line, f"imports {first}, not allowed in {top}"))
        allowed_in = ONLY_IN.get(first)
        if allowed_in is not None and not _is(module, allowed_in):
            found.append(Violation(module, line, f"imports {first} (only {sorted(allowed_in)} "
                                                 "may)"))
    if pure:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                if name in CLOCK_CALLS:
                    found.append(Violation(module, node.lineno, f"reads the clock: {name}()"))
                if name == "__import__":
                    found.append(Violation(module, node.lineno, "dynamic import"))
                if (_is(module, NO_OWN_RANDOMNESS) and isinstance(fn, ast.Attribute)
                        and isinstance(fn.value, ast.Name)
                        and (fn.value.id, fn.attr) in RANDOM_CALLS):
                    found.append(Violation(module, node.lineno, f"draws its own randomness: "
                                           f"{fn.value.id}.{fn.attr}() (take an rng)"))
    return found


def check_tree(root: Path) -> list[Violation]:
    found: list[Violation] = []
    for top in sorted({layer.split(".")[0] for layer in LAYERS}):
        base = root / top
        if not base.is_dir():
            continue
        for file in sorted(base.rglob("*.py")):
            found.extend(check_file(root, file))
    return found
