"""Packaging that follows the tree. Everything else about the project is in ``pyproject.toml``.

The top-level folders ``runtime/``, ``export/`` and ``explain/`` install as ``btxrd.runtime``,
``btxrd.export`` and ``btxrd.explain``; every package below them is found from its
``__init__.py`` and every other file in them (schemas, the web page) ships as package data, so a
module or data file added to the tree is in the wheel without editing a list.
``tests/test_packaging.py`` builds the wheel and checks it against the tree.
"""

from pathlib import Path

from setuptools import find_packages, setup

CODE_FOLDERS = ("runtime", "export", "explain")
# What the commands open from btxrd.models at run time: the demo model and its card
# (btxrd-run, btxrd-serve), the demo checkpoint (btxrd-explain's default) and the samples.
MODEL_FILES = ["README.md", "btxrd-demo.onnx", "btxrd-demo.pt", "samples/*", "samples/*/*"]


def _packages() -> list[str]:
    found = find_packages(include=[*CODE_FOLDERS, *(f"{name}.*" for name in CODE_FOLDERS)])
    return [f"btxrd.{name}" for name in found]


def _data_files(package_dir: Path) -> list[str]:
    """Every file of ``package_dir`` that is not Python, outside its sub-packages."""
    files = []
    for path in sorted(package_dir.rglob("*")):
        relative = path.relative_to(package_dir)
        if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        inside_subpackage = any(
            (package_dir.joinpath(*relative.parts[: depth + 1]) / "__init__.py").is_file()
            for depth in range(len(relative.parts) - 1)
        )
        if not inside_subpackage:
            files.append(relative.as_posix())
    return files


def _folder(package: str) -> Path:
    return Path(*package.split(".")[1:])


packages = _packages()
setup(
    packages=[*packages, "btxrd.models"],
    package_dir={
        **{f"btxrd.{name}": name for name in CODE_FOLDERS},
        "btxrd.models": "models",
    },
    package_data={
        **{package: _data_files(_folder(package)) for package in packages},
        "btxrd.models": MODEL_FILES,
    },
)
