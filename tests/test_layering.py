"""The layering, read from the source: dependencies point one way.

``runtime`` imports nothing of ``export`` or ``explain``; ``export`` imports nothing of
``explain``; ``explain`` may import both. Inside the runtime, its parts (its sub-packages) have an
order, lower first (``RUNTIME_PARTS``, as ``runtime/__init__.py`` lists them): a module imports
the ground (the modules directly in ``runtime/``) and its own or lower parts, never a higher one,
and the ground imports no part. Every import statement of every module counts, also
one inside a function (a lazy import is still a dependency of whoever installs that part). The
check walks the syntax trees of the source folders, so it needs no extra installed and covers
modules no test imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Each part, and the parts it must never import (as installed: btxrd.<part>).
FORBIDDEN = {
    "runtime": ("btxrd.export", "btxrd.explain"),
    "export": ("btxrd.explain",),
    "explain": (),
}
# The runtime's parts, lower first; the modules directly in runtime/ are the ground under them.
RUNTIME_PARTS = ("decode", "model", "labels", "output", "engine", "cli", "node", "serve")
GROUND = -1


def imported_modules(source: Path, root: Path) -> list[tuple[int, str]]:
    """Every module ``source`` imports, with its line: ``import a.b`` and ``from a.b import c``
    (relative imports resolved against the file's package, as ``btxrd.<part>...``)."""
    tree = ast.parse(source.read_bytes(), filename=str(source))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: from the installed package of this file
                package = ["btxrd", *source.parent.relative_to(root).parts]
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module == "btxrd.runtime":  # from btxrd.runtime import output: the part itself
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return found


def _runtime_rank(name: str) -> int:
    """The rank of a runtime part (``RUNTIME_PARTS``' index), ``GROUND`` for a ground module."""
    return RUNTIME_PARTS.index(name) if name in RUNTIME_PARTS else GROUND


def _imports_upward(source: Path, module: str, root: Path) -> bool:
    """A runtime module importing a runtime part above its own."""
    inside = source.relative_to(root / "runtime").parts
    if not module.startswith("btxrd.runtime.") or len(inside) == 0:
        return False
    own = _runtime_rank(inside[0]) if len(inside) > 1 else GROUND
    return _runtime_rank(module.split(".")[2]) > own


def layering_violations(root: Path) -> list[str]:
    """``file:line imports module`` for each import that points the wrong way under ``root``."""
    problems = []
    for part, forbidden in FORBIDDEN.items():
        for source in sorted((root / part).rglob("*.py")):
            for line, module in imported_modules(source, root):
                wrong_package = any(module == f or module.startswith(f + ".") for f in forbidden)
                if wrong_package or (part == "runtime" and _imports_upward(source, module, root)):
                    where = source.relative_to(root)
                    problems.append(f"{where}:{line} imports {module}")
    return problems


def test_dependencies_point_one_way() -> None:
    assert layering_violations(REPO_ROOT) == []


def test_the_walk_sees_every_part() -> None:
    # Guards the walk: an empty tree would pass the test above vacuously.
    for part in FORBIDDEN:
        assert len(list((REPO_ROOT / part).rglob("*.py"))) > 5, part


def test_the_runtime_order_names_every_sub_package() -> None:
    # A new sub-package must take its place in the order, or its imports would go unchecked.
    packages = {p.parent.name for p in (REPO_ROOT / "runtime").glob("*/__init__.py")}
    assert packages == set(RUNTIME_PARTS)


@pytest.mark.parametrize(
    ("module", "statement"),
    [
        ("runtime/bad.py", "from btxrd.export.train import train\n"),
        ("runtime/engine/bad.py", "def later():\n    import btxrd.explain.cli\n"),
        ("export/bad.py", "from btxrd.explain import report\n"),
        ("runtime/serve/bad.py", "from ...export import cli\n"),
        ("runtime/decode/bad.py", "from btxrd.runtime.model.classifier import Classifier\n"),
        ("runtime/model/bad.py", "def later():\n    from ..cli import run\n"),
        ("runtime/bad.py", "from btxrd.runtime.output import report\n"),
        ("runtime/labels/bad.py", "from btxrd.runtime import errors, engine\n"),
    ],
    ids=[
        "runtime-export",
        "runtime-explain-lazily",
        "export-explain",
        "runtime-relative",
        "decode-model",
        "model-cli-relative-lazily",
        "ground-output",
        "labels-engine-by-name",
    ],
)
def test_a_module_that_imports_upwards_is_found(tmp_path, module, statement) -> None:
    """A deliberately bad module in a copy of the layout fails the check, naming its line."""
    for part in FORBIDDEN:
        (tmp_path / part).mkdir()
        (tmp_path / part / "fine.py").write_text("from btxrd.runtime import text\n")
    (tmp_path / "runtime" / "serve").mkdir()
    (tmp_path / "runtime" / "serve" / "fine.py").write_text("from ..decode import image\n")
    bad = tmp_path / module
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text(statement)
    problems = layering_violations(tmp_path)
    assert len(problems) == 1 and problems[0].startswith(module + ":"), problems
