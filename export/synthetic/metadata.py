"""The sheet row of one synthetic image, and dataset.xlsx / dataset.csv written reproducibly."""

from __future__ import annotations

import csv
import datetime
import io
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from btxrd.export.data.dataset import METADATA_COLUMNS
from btxrd.export.synthetic.scene import REGION_OF, Scene
from btxrd.runtime.labels.sheet import NORMAL
from btxrd.runtime.output.atomic import write_bytes

_JOINT_REGIONS = {
    "ankle-joint": ("lower limb",), "knee-joint": ("lower limb",),
    "hip-joint": ("lower limb", "pelvis"), "wrist-joint": ("upper limb",),
    "elbow-joint": ("upper limb",), "shoulder-joint": ("upper limb",),
}  # fmt: skip
# Zip entries and document properties carry dates; pin them so the same seed gives the same bytes.
_FIXED_TIME = datetime.datetime(2025, 1, 1)


def make_row(
    image_id: str,
    centre: int,
    age: int,
    gender: str,
    label: str,
    subtype: str | None,
    scene: Scene,
) -> dict[str, object]:
    """All 37 columns for one image; flags describe what was actually drawn."""
    row: dict[str, object] = dict.fromkeys(METADATA_COLUMNS, 0)
    row.update(image_id=image_id, center=centre, age=age, gender=gender)
    bones = scene.visible_bones()
    regions: set[str] = set()
    for bone in bones:
        row[bone] = 1
        regions.add(REGION_OF[bone])
    for joint in scene.joints:
        row[joint] = 1
        regions.update(_JOINT_REGIONS[joint])
    for region in regions:
        row[region] = 1
    row[scene.view] = 1
    if label != NORMAL:
        row["tumor"] = 1
        row[label.lower()] = 1
        assert subtype is not None
        row[subtype] = 1
    return row


def write_tables(out: Path, rows: Sequence[Mapping[str, object]]) -> None:
    """Write the same table as dataset.xlsx (openpyxl) and dataset.csv, columns in BTXRD order."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(METADATA_COLUMNS)
    writer.writerows([row[c] for c in METADATA_COLUMNS] for row in rows)
    write_bytes(out / "dataset.csv", text.getvalue().encode("utf-8"))
    write_bytes(out / "dataset.xlsx", _xlsx_bytes(rows))


def _xlsx_bytes(rows: Sequence[Mapping[str, object]]) -> bytes:
    # openpyxl comes with the [export] extra; imported here so the rest works without it.
    from openpyxl import Workbook
    from openpyxl.writer.excel import ExcelWriter

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Sheet1"
    sheet.append(list(METADATA_COLUMNS))
    for row in rows:
        sheet.append([row[c] for c in METADATA_COLUMNS])
    workbook.properties.created = _FIXED_TIME
    workbook.properties.modified = _FIXED_TIME
    workbook.properties.creator = "btxrd-synth"
    raw = io.BytesIO()
    # ExcelWriter rather than Workbook.save: save() stamps the current time into the file.
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(workbook, archive).write_data()
    return _pin_zip_dates(raw.getvalue())


def _pin_zip_dates(data: bytes) -> bytes:
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            pinned = zipfile.ZipInfo(info.filename, date_time=_FIXED_TIME.timetuple()[:6])
            pinned.compress_type = zipfile.ZIP_DEFLATED
            pinned.external_attr = 0o644 << 16
            target.writestr(pinned, source.read(info.filename))
    return out.getvalue()
