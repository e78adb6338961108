"""The layering, read from the source: dependencies point one way.

``runtime`` imports nothing of ``export`` or ``explain``; ``export`` imports nothing of
``explain``; ``explain`` may import both. Every import statement of every module counts, also
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
            found.append((node.lineno, module))
    return found


def layering_violations(root: Path) -> list[str]:
    """``file:line imports module`` for each import that points the wrong way under ``root``."""
    problems = []
    for part, forbidden in FORBIDDEN.items():
        for source in sorted((root / part).rglob("*.py")):
            for line, module in imported_modules(source, root):
                if any(module == f or module.startswith(f + ".") for f in forbidden):
                    where = source.relative_to(root)
                    problems.append(f"{where}:{line} imports {module}")
    return problems


def test_dependencies_point_one_way() -> None:
    assert layering_violations(REPO_ROOT) == []


def test_the_walk_sees_every_part() -> None:
    # Guards the walk: an empty tree would pass the test above vacuously.
    for part in FORBIDDEN:
        assert len(list((REPO_ROOT / part).rglob("*.py"))) > 5, part


@pytest.mark.parametrize(
    ("module", "statement"),
    [
        ("runtime/bad.py", "from btxrd.export.train import train\n"),
        ("runtime/engine/bad.py", "def later():\n    import btxrd.explain.cli\n"),
        ("export/bad.py", "from btxrd.explain import report\n"),
        ("runtime/serve/bad.py", "from ...export import cli\n"),
    ],
    ids=["runtime-export", "runtime-explain-lazily", "export-explain", "runtime-relative"],
)
def test_a_module_that_imports_upwards_is_found(tmp_path, module, statement) -> None:
    """A deliberately bad module in a copy of the layout fails the check, naming its line."""
    for part in FORBIDDEN:
        (tmp_path / part).mkdir()
        (tmp_path / part / "fine.py").write_text("from btxrd.runtime import text\n")
    bad = tmp_path / module
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text(statement)
    problems = layering_violations(tmp_path)
    assert len(problems) == 1 and problems[0].startswith(module + ":"), problems
