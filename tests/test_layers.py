"""The package's layers, enforced (docs/design.md, "Layers").

An AST scan of every module of ``eventstore``, and of every import in it (at
module level, inside functions, under ``if TYPE_CHECKING``, relative or
absolute), fails when:

1. a module imports a unit (a top-level module or subpackage) of its own
   layer or of a layer above its own; units of one layer are independent;
2. a module reads another module's private name: ``obj._x`` where ``obj`` is
   not ``self``/``cls`` and no ``_x`` is defined in the reading module, or
   ``from m import _x`` from another module, or ``getattr(obj, "_x")``.

A unit that is in no layer fails too: a new module must be placed. The
scanner itself is tested on a small package written for the purpose.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import eventstore

#: The layers, lowest first. A unit may import its own modules and the units of lower layers.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "records", "partitioner", "wakeup"),  # values: what every layer speaks; the
    # thread-to-loop waker the async facades and the server share
    ("validation", "wire"),  # checks on caller input; the Kafka protocol, sans I/O (imports only
    # errors.py): storage and readers decode stored Kafka batches with its batch codec
    ("storage", "catalog"),  # segment files; LMDB
    ("batches",),  # what appends hand the log, checked: append_batch's columns, encoded batches
    ("log", "reader"),  # the log over storage + catalog; the read-only view beside an owner
    ("groups", "sourcing"),  # consumer groups; event streams: both over the log
    ("metrics",),  # the store's figures (sizes, offsets, lag, append/fsync histograms) and their
    # Prometheus collector
    ("transactions",),  # appends + group offsets through the outbox
    ("client",),  # consumer, producer, dead letters
    ("server", "remote"),  # the Kafka wire protocol server over the seams; the remote client
    ("store",),  # the embedded store: composition of the above
    ("aio", "repair", "backups", "mirror"),  # over the store: async facades, `es verify --repair`,
    # `es backup`, `es mirror` (a store's reader or the store, and a Kafka cluster)
    ("eventstore",),  # the package's public names (__init__.py)
    ("examples", "eventsourcing"),  # programs over the public names
    ("cli",),  # `es`
]

#: Imports the rules let through anyway, (importing unit, imported unit) -> why. Empty.
ALLOWED: dict[tuple[str, str], str] = {}

PACKAGE = Path(eventstore.__file__).parent


@dataclass
class Module:
    name: str  # dotted, e.g. "eventstore.sourcing.streams"
    path: Path
    is_package: bool
    tree: ast.Module


def load_modules(root: Path, package: str) -> dict[str, Module]:
    """Every module of the package rooted at ``root``, by dotted name."""
    out: dict[str, Module] = {}
    for path in sorted(root.rglob("*.py")):  # bounded by the package's files
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join([package, *parts])
        out[name] = Module(name, path, is_package, ast.parse(path.read_text(), str(path)))
    return out


def imported_names(module: Module, modules: dict[str, Module], package: str) -> list[tuple[int, str]]:
    """(line, dotted module) for every import of a module of ``package``, wherever it is."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(module.tree):  # bounded by the module's nodes
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names
                    if a.name == package or a.name.startswith(package + ".")]
        elif isinstance(node, ast.ImportFrom):
            base = _import_base(module, node)
            if base != package and not base.startswith(package + "."):
                continue
            for alias in node.names:  # ``from p import m`` imports the module p.m if there is one
                sub = f"{base}.{alias.name}"
                out.append((node.lineno, sub if sub in modules else base))
    return out


def _import_base(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.name.split(".")
    if not module.is_package:
        parts = parts[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


def unit_of(name: str, package: str) -> str:
    """The top-level module or subpackage a module belongs to (the package itself for its
    ``__init__``)."""
    rest = name[len(package) + 1:]
    return rest.split(".")[0] if rest else package


def layer_problems(modules: dict[str, Module], package: str,
                   layers: list[tuple[str, ...]], allowed: dict[tuple[str, str], str]) -> list[str]:
    rank = {unit: i for i, units in enumerate(layers) for unit in units}
    problems = []
    for module in modules.values():  # bounded by the package's modules
        unit = unit_of(module.name, package)
        if unit not in rank:
            problems.append(f"{module.name}: unit {unit!r} is in no layer")
            continue
        for line, target in imported_names(module, modules, package):
            other = unit_of(target, package)
            if other == unit or (unit, other) in allowed:
                continue
            if other not in rank:
                problems.append(f"{module.name}:{line} imports {target}, whose unit is in no layer")
            elif rank[other] >= rank[unit]:
                where = "its own layer" if rank[other] == rank[unit] else "a layer above"
                problems.append(f"{module.name}:{line} imports {target} ({other}: {where} of {unit})")
    return problems


def _definitions(tree: ast.Module) -> set[str]:
    """The names a module defines: functions, classes, assigned names, parameters, import
    aliases, attributes of ``self``/``cls`` it assigns, and ``__slots__`` entries."""
    names: set[str] = set()
    for node in ast.walk(tree):  # bounded by the module's nodes
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)) \
                and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            names.add(node.attr)
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
            names.update(c.value for c in ast.walk(node.value)
                         if isinstance(c, ast.Constant) and isinstance(c.value, str))
    return names


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_problems(modules: dict[str, Module], package: str) -> list[str]:
    problems = []
    for module in modules.values():  # bounded by the package's modules
        defined = _definitions(module.tree)
        for node in ast.walk(module.tree):  # bounded by the module's nodes
            if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in defined \
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                problems.append(f"{module.name}:{node.lineno} reads {ast.unparse(node)}")
            elif isinstance(node, ast.ImportFrom):
                base = _import_base(module, node)
                for alias in node.names:
                    if _private(alias.name) and f"{base}.{alias.name}" not in modules:
                        problems.append(f"{module.name}:{node.lineno} imports {alias.name} from {base}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id == "getattr" and len(node.args) >= 2 \
                    and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str) \
                    and _private(node.args[1].value) and node.args[1].value not in defined \
                    and not (isinstance(node.args[0], ast.Name) and node.args[0].id in ("self", "cls")):
                problems.append(f"{module.name}:{node.lineno} reads {ast.unparse(node)}")
    return problems


# --- the package ---------------------------------------------------------------------------------


def test_every_unit_is_in_one_layer() -> None:
    units = [u for layer in LAYERS for u in layer]
    assert len(units) == len(set(units))
    present = {unit_of(name, "eventstore") for name in load_modules(PACKAGE, "eventstore")}
    assert present == set(units), "LAYERS names units that do not exist, or misses some"


def test_each_layer_imports_only_layers_below_it() -> None:
    modules = load_modules(PACKAGE, "eventstore")
    assert layer_problems(modules, "eventstore", LAYERS, ALLOWED) == []


def test_no_module_reads_another_modules_private_names() -> None:
    assert private_problems(load_modules(PACKAGE, "eventstore"), "eventstore") == []


# --- the scanner ---------------------------------------------------------------------------------

_TOY_LAYERS: list[tuple[str, ...]] = [("low",), ("mid", "side"), ("high",), ("toy",)]


def _toy(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    root = tmp_path / "toy"
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return load_modules(root, "toy")


def test_the_scanner_finds_imports_upward_and_sideways(tmp_path: Path) -> None:
    modules = _toy(tmp_path, {
        "low.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from .mid import Thing        # upward, for types only: still upward
            def later():
                import toy.high               # upward, inside a function
        """,
        "mid/__init__.py": "from . import inner\nfrom ..side import other\n",  # sideways
        "mid/inner.py": "from .. import low\nfrom . import sibling\n",  # down, and within its unit
        "mid/sibling.py": "",
        "side.py": "other = 1\n",
        "high.py": "from toy.mid.inner import x\nfrom . import low\n",  # all downward
    })
    problems = layer_problems(modules, "toy", _TOY_LAYERS, {})
    assert [p.split(" imports ")[0] for p in problems] == ["toy.low:4", "toy.low:6", "toy.mid:2"]
    assert layer_problems(modules, "toy", _TOY_LAYERS, {("low", "mid"): "why", ("low", "high"): "why",
                                                       ("mid", "side"): "why"}) == []
    assert layer_problems(_toy(tmp_path / "n", {"new.py": ""}), "toy", _TOY_LAYERS, {}) == [
        "toy.new: unit 'new' is in no layer"]


def test_the_scanner_finds_private_reads_across_modules(tmp_path: Path) -> None:
    modules = _toy(tmp_path, {
        "low.py": """
            _HIDDEN = 1
            class Thing:
                def __init__(self):
                    self._own = 1
                def peek(self, other):
                    return other._own, self._own      # _own is this module's: allowed
            def leak(store):
                return store._catalog                # not defined here
        """,
        "mid/__init__.py": """
            from ..low import _HIDDEN                 # another module's private name
            def f(thing):
                return getattr(thing, "_secret"), thing.__class__, thing.public
        """,
    })
    problems = private_problems(modules, "toy")
    assert problems == ["toy.low:9 reads store._catalog", "toy.mid:2 imports _HIDDEN from toy.low",
                        "toy.mid:4 reads getattr(thing, '_secret')"]
