"""The layer rules of DESIGN.md section 2, checked by reading every module's imports (AST).

Rules:
* dependencies point down: keypath < object_model < broker_bridge < actors < bench;
* keypath uses the standard library only; object_model adds pydantic only;
* keypath, object_model and the sans-IO parts of broker_bridge import no I/O or clock module
  and call no clock (``now()``, ``time()``, ``monotonic()``...);
* slixmpp is imported only by broker_bridge's XMPP adapter, prometheus_client only by
  actors' metrics module, s2python only by the S2 mapping (actors.logic.energy.s2).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ORDER = ["keypath", "object_model", "broker_bridge", "actors", "bench"]
STDLIB = set(sys.stdlib_module_names)

THIRD_PARTY: dict[str, set[str]] = {
    "keypath": set(),
    "object_model": {"pydantic", "pydantic_core", "annotated_types", "typing_extensions"},
    "broker_bridge": {"pydantic", "pydantic_core", "msgpack", "slixmpp", "cryptography",
                      "aiosqlite", "typing_extensions"},
    "actors": {"pydantic", "pydantic_core", "msgpack", "cryptography", "aiosqlite",
               "prometheus_client", "typing_extensions", "ocpp", "s2python"},
    "bench": {"pydantic", "msgpack", "slixmpp", "ocpp", "s2python", "websockets"},
}

IO_OR_CLOCK = {
    "asyncio", "socket", "ssl", "select", "selectors", "subprocess", "threading",
    "multiprocessing", "concurrent", "os", "io", "pathlib", "shutil", "tempfile", "glob",
    "sqlite3", "aiosqlite", "time", "urllib", "http", "logging", "signal", "importlib",
    "slixmpp", "ctypes", "socketserver",
}
CLOCK_CALLS = {"now", "utcnow", "today", "time", "time_ns", "monotonic", "monotonic_ns",
               "perf_counter", "perf_counter_ns", "sleep"}

# modules that must be free of I/O and clocks (package or package.module)
PURE = {"keypath", "object_model", "broker_bridge.session", "broker_bridge.codec",
        "broker_bridge.envelope", "broker_bridge.ids"}
ONLY_IN = {"slixmpp": {"broker_bridge.xmpp"}, "prometheus_client": {"actors.app.metrics"},
           "s2python": {"actors.logic.energy.s2"}}


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


def imports_of(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, int]]:
    """Absolute names imported by a module (relative imports resolved)."""
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
            out.append((name, node.lineno))
    return out


def _is_pure(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in PURE)


def check_file(root: Path, file: Path) -> list[Violation]:
    module = module_name(root, file)
    layer = module.split(".")[0]
    if layer not in ORDER:
        return []
    source = file.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(file))
    found: list[Violation] = []
    own_rank = ORDER.index(layer)
    for name, line in imports_of(tree, module, file.name == "__init__.py"):
        top = name.split(".")[0]
        if top in ORDER:
            if ORDER.index(top) > own_rank:
                found.append(Violation(module, line, f"imports higher layer {name}"))
        elif top in STDLIB or top == "__future__":
            if _is_pure(module) and top in IO_OR_CLOCK:
                found.append(Violation(module, line, f"imports I/O or clock module {name}"))
        else:
            if top not in THIRD_PARTY.get(layer, set()):
                found.append(Violation(module, line, f"imports {top}, not allowed in {layer}"))
            elif _is_pure(module) and top in IO_OR_CLOCK:
                found.append(Violation(module, line, f"imports I/O module {name}"))
        allowed_in = ONLY_IN.get(top)
        if allowed_in is not None and not any(
            module == m or module.startswith(m + ".") for m in allowed_in
        ):
            found.append(Violation(module, line, f"imports {top} (only {sorted(allowed_in)} may)"))
    if _is_pure(module):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                if name in CLOCK_CALLS:
                    found.append(Violation(module, node.lineno, f"reads the clock: {name}()"))
                if name == "__import__":
                    found.append(Violation(module, node.lineno, "dynamic import"))
    return found


def check_tree(root: Path) -> list[Violation]:
    found: list[Violation] = []
    for layer in ORDER:
        base = root / layer
        if not base.is_dir():
            continue
        for file in sorted(base.rglob("*.py")):
            found.extend(check_file(root, file))
    return found
