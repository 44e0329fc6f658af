"""The import layers of ``dnsrec_edge``, written once; ``tests/test_layers.py`` keeps the code to it.

Top layer first. A module may import its own package and the packages of any layer below its
own; never one above, and never a sibling in its own layer. ``LAYERS`` names top-level packages
and modules of ``dnsrec_edge`` (``""`` is the package root, which defines ``__version__`` and
the lazy public API and imports nothing at load time).

Why the order is what it is, where it is not obvious:

- ``search`` sits above ``prune``: retraining a selected subnet from the supernet's weights
  goes through ``prune.materialize``; prune needs nothing of search.
- ``bench`` sits above ``export``: a calibration run (``bench/calibrate.py``) exports
  random-weight models, compiles them and measures them.
- ``cost`` sits above ``compile``: a cost model reads its target's roofline and power priors
  from the target registry (``compile.targets``, plain data; TVM is not imported).
- ``board`` (the TVM RPC client and the facts a board reports) sits below both ``compile``
  (tuning on a board) and ``bench``.

The check reads ``import`` statements (lazy ones inside functions too). Names resolved from
strings at run time are a registry, not an import: ``train.checkpoint.KINDS`` names the
supernet's class so that loading a supernet checkpoint needs no import of ``search`` in train.

Example::

    problems = check()   # [] when every import points down
"""

from __future__ import annotations

import ast
from pathlib import Path

LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("pipeline",),
    ("search",),
    ("prune", "bench"),
    ("export",),
    ("train", "cost"),
    ("evaluate", "compile"),
    ("models", "data", "board"),
    ("fsio", "paths", "progress", "compare", "hostinfo", "timing", "layers", ""),
    ("errors",),
)

PACKAGE = "dnsrec_edge"
ROOT = Path(__file__).resolve().parent


def layer_of(unit: str) -> int:
    """The layer index of a top-level package or module (0 is the top); KeyError if unlisted."""
    for index, names in enumerate(LAYERS):
        if unit in names:
            return index
    raise KeyError(unit)


def unit_of(path: Path, root: Path = ROOT) -> str:
    """The top-level package or module a file belongs to (``""`` for ``__init__.py``)."""
    parts = path.relative_to(root).with_suffix("").parts
    return "" if parts == ("__init__",) else parts[0]


def imported_units(tree: ast.AST, root: Path = ROOT) -> list[tuple[int, str]]:
    """``(line, unit)`` for every import of ``dnsrec_edge`` in a parsed module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == PACKAGE:  # from dnsrec_edge import paths / __version__
                names = [
                    f"{PACKAGE}.{a.name}"
                    if (root / a.name).is_dir() or (root / f"{a.name}.py").is_file()
                    else PACKAGE
                    for a in node.names
                ]
            else:
                names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == PACKAGE:
                found.append((node.lineno, parts[1] if len(parts) > 1 else ""))
    return found


def check(root: Path = ROOT) -> list[str]:
    """One line per import that points up or sideways, or per unit missing from ``LAYERS``."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        unit = unit_of(path, root)
        where = path.relative_to(root.parent)
        try:
            own = layer_of(unit)
        except KeyError:
            problems.append(f"{where}: '{unit}' is in no layer; add it to LAYERS in layers.py")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, target in imported_units(tree, root):
            if target == unit:
                continue
            try:
                theirs = layer_of(target)
            except KeyError:
                problems.append(f"{where}:{line} imports '{target}', which is in no layer")
                continue
            if theirs <= own:
                kind = "a sibling in its own layer" if theirs == own else "a higher layer"
                problems.append(f"{where}:{line}: '{unit}' imports '{target}', {kind}")
    return problems
