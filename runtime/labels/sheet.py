"""BTXRD's metadata sheet: find it in a BTXRD-layout folder, read its rows and each image's class.

The export reads it to train and fit; ``btxrd-run --labels DIR`` reads it to score a model on a
labelled folder without torch. ``dataset.xlsx`` needs openpyxl (the [export] extras have it);
``dataset.csv``, which the synthetic generator writes beside it, needs nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from btxrd.runtime.errors import ConfigError, InputError

_TEXT_COLUMNS = frozenset({"image_id", "gender"})

# BTXRD's classes, in the order every btxrd model outputs them. Normal is the one with no lesion:
# its Grad-CAM map is the evidence for "nothing there", never a lesion's place.
NORMAL, BENIGN, MALIGNANT = "Normal", "Benign", "Malignant"
BTXRD_CLASSES: tuple[str, ...] = (NORMAL, BENIGN, MALIGNANT)
# BTXRD's images are JPEGs; its sheet may say .jpeg of a .jpg file, so they are matched by stem.
BTXRD_IMAGE_SUFFIXES: tuple[str, ...] = (".jpeg", ".jpg")


class DatasetError(InputError, ValueError):
    """A dataset folder, its sheet or a split file cannot be used; the message says which."""


def label_from_row(row: Mapping[str, object]) -> str:
    """BTXRD's rule: Malignant if ``malignant == 1``, else Benign if ``benign == 1``, else Normal.

    Cells may be 1, 1.0 or "1" (Excel and CSV disagree); anything else counts as 0.
    """
    if _is_one(row.get("malignant")):
        return MALIGNANT
    if _is_one(row.get("benign")):
        return BENIGN
    return NORMAL


def _is_one(value: object) -> bool:
    if isinstance(value, str):
        value = value.strip()
        return value in {"1", "1.0"}
    return isinstance(value, (int, float)) and value == 1


def find_root(root: Path) -> Path:
    """Accept the folder holding dataset.xlsx or its parent (a BTXRD_ROOT/BTXRD nesting)."""
    if not root.is_dir():
        # A folder named on the command line or in a recipe that is not there: a usage error.
        raise ConfigError(f"{root}: no such folder; pass the folder that holds dataset.xlsx.")
    if find_sheet(root) is not None or find_dir(root, "images") is not None:
        return root
    nested = [p for p in sorted(root.iterdir()) if p.is_dir() and find_sheet(p) is not None]
    if len(nested) == 1:
        return nested[0]
    raise DatasetError(
        f"{root}: neither dataset.xlsx nor dataset.csv found here or one folder below; "
        "pass the BTXRD folder that holds images/ and dataset.xlsx."
    )


def find_dir(root: Path, name: str) -> Path | None:
    """The child folder called ``name`` in any letter case (``Annotations`` or ``annotations``)."""
    matches = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name.lower() == name]
    return matches[0] if matches else None


def find_sheet(root: Path) -> Path | None:
    """``dataset.xlsx`` if openpyxl is importable, else ``dataset.csv``; lock files skipped."""
    files = {
        p.name.lower(): p for p in root.iterdir() if p.is_file() and not p.name.startswith("~$")
    }
    if has_openpyxl():
        for name in ("dataset.xlsx", "dataset(total).xlsx"):
            if name in files:
                return files[name]
    return files.get("dataset.csv")


def has_openpyxl() -> bool:
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        return False
    return True


def read_rows(root: Path) -> list[dict[str, object]]:
    sheet = find_sheet(root)
    if sheet is None:
        hint = "" if has_openpyxl() else " (dataset.xlsx needs openpyxl: pip install openpyxl)"
        raise DatasetError(f"{root}: no dataset.xlsx or dataset.csv found{hint}.")
    table = _read_xlsx(sheet) if sheet.suffix.lower() == ".xlsx" else _read_csv(sheet)
    if not table:
        raise DatasetError(f"{sheet}: the sheet is empty.")
    header = [str(h).strip() if h is not None else "" for h in table[0]]
    absent = [c for c in ("image_id", "center", "benign", "malignant") if c not in header]
    if absent:
        raise DatasetError(
            f"{sheet}: missing column(s) {', '.join(absent)}; is this BTXRD's sheet?"
        )
    rows = []
    for values in table[1:]:
        if all(v is None or str(v).strip() == "" for v in values):
            continue  # Excel leaves blank rows at the end of edited sheets
        row = {h: _normalise_cell(h, v) for h, v in zip(header, values, strict=False) if h}
        rows.append(row)
    return rows


def _read_xlsx(path: Path) -> list[tuple[object, ...]]:
    # Optional: the runtime install has no Excel reader; dataset.csv is the fallback.
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile, KeyError and its own types alike
        raise DatasetError(f"{path}: cannot read the Excel sheet ({exc}).") from exc
    try:
        return [tuple(r) for r in workbook.worksheets[0].iter_rows(values_only=True)]
    finally:
        workbook.close()


def _read_csv(path: Path) -> list[tuple[object, ...]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return [tuple(r) for r in csv.reader(handle)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read the CSV sheet ({exc}).") from exc


def _normalise_cell(column: str, value: object) -> object:
    """Flags and numbers as int where whole (Excel and CSV disagree on 1 vs 1.0 vs "1")."""
    if value is None:
        return None
    if column in _TEXT_COLUMNS:
        return str(value).strip()
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            return text
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
