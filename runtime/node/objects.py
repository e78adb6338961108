"""The DICOM objects a result goes back to the PACS as, in the source image's own study.

- A **Comprehensive SR** in the shape of TID 2000 (Basic Diagnostic Imaging Report): a root
  "Diagnostic imaging report" container with a Findings section (the class, each calibrated
  probability, the out-of-distribution verdict and score, the source image referenced), the
  algorithm's name, version and file sha256 (the TID 4019 concept names) and a comment that
  carries the model's intended use ("not for clinical use" for the demo model). TID 2000 rather
  than TID 1500: a whole-image classification has no region, tracking identifier or
  measurement group for TID 1500 to describe, and TID 2000 is what reading workstations show as
  a plain-text report beside the film. A refused image gets the same report without a class or
  probability: its comment says why.
- A **Secondary Capture** of the heatmap overlay, the class, its probability and the colour
  scale burnt in (the picture ``btxrd-run --cam`` writes), for classified images only. A
  Secondary Capture rather than a presentation state with a graphic overlay: every viewer
  shows an image, while a heatmap as GSPS graphics would be thousands of polylines that few
  viewers render in colour.

Both copy the patient and study modules from the source (highdicom does) into a new series.
Their UIDs are derived from the source's SOP Instance UID and the model's sha256, so the same
image classified again by the same model, or resent after a restart, carries the same UIDs and
the PACS holds it once.
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from btxrd.runtime.install import btxrd_version
from btxrd.runtime.model.classifier import Prediction
from btxrd.runtime.model.session import ModelInfo

MANUFACTURER = "btxrd"
SR_SERIES_NUMBER = 9001  # high, so the results sort after the films in a viewer
SC_SERIES_NUMBER = 9002
_SCHEME = "99BTXRD"  # btxrd's private coding scheme (PS3.16 8.2: "99" for local schemes)

_REPORT = CodedConcept("18748-4", "LN", "Diagnostic imaging report")
_FINDINGS = CodedConcept("121070", "DCM", "Findings")
_FINDING = CodedConcept("121071", "DCM", "Finding")
_COMMENT = CodedConcept("121106", "DCM", "Comment")
_SOURCE = CodedConcept("121112", "DCM", "Source of Measurement")
_ALGORITHM_NAME = CodedConcept("111001", "DCM", "Algorithm Name")
_ALGORITHM_VERSION = CodedConcept("111003", "DCM", "Algorithm Version")
_MODEL_SHA256 = CodedConcept("MODEL-SHA256", _SCHEME, "Model file SHA-256")
_OOD_SCORE = CodedConcept("OOD-SCORE", _SCHEME, "Out-of-distribution score")
_OOD_THRESHOLD = CodedConcept("OOD-THRESHOLD", _SCHEME, "Out-of-distribution threshold")
_IN_DISTRIBUTION = CodedConcept("IN-DISTRIBUTION", _SCHEME, "Like the model's training images")
_YES = CodedConcept("373066001", "SCT", "Yes")
_NO = CodedConcept("373067005", "SCT", "No")
_NO_UNITS = CodedConcept("1", "UCUM", "no units")


@dataclass(frozen=True)
class ResultObjects:
    """The report, and the overlay when the image was classified."""

    report: Dataset
    overlay: Dataset | None


def result_uid(source: Dataset, info: ModelInfo, kind: str) -> str:
    """A UID that is the same every time this model's ``kind`` of result is made for ``source``
    (a SOP instance) or for its study (a series)."""
    anchor = source.StudyInstanceUID if kind.endswith("series") else source.SOPInstanceUID
    return generate_uid(entropy_srcs=[str(anchor), info.sha256, kind])


def result_objects(
    source: Dataset, prediction: Prediction, info: ModelInfo, overlay: np.ndarray | None
) -> ResultObjects:
    """The SR of ``prediction`` for ``source`` (a dataset without its pixel data is enough), and
    the Secondary Capture of ``overlay`` (RGB, uint8) when it is given."""
    source = conformant(source)
    report = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=_report_content(source, prediction, info),
        series_instance_uid=result_uid(source, info, "sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=result_uid(source, info, "sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,  # nobody verified it: a machine's preliminary finding
        series_description="btxrd report (not for clinical use)",
        software_versions=f"btxrd {btxrd_version()}",
    )
    picture = None
    if overlay is not None and prediction.prediction is not None:
        picture = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=overlay,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=result_uid(source, info, "sc-series"),
            series_number=SC_SERIES_NUMBER,
            sop_instance_uid=result_uid(source, info, "sc"),
            instance_number=1,
            manufacturer=MANUFACTURER,
            patient_orientation=_orientation(source),
            laterality=_laterality(source),
            transfer_syntax_uid=ExplicitVRLittleEndian,
            series_description="btxrd heatmap (not for clinical use)",
            software_versions=f"btxrd {btxrd_version()}",
        )
        picture.ImageComments = (
            f"btxrd heatmap of {info.metadata.name or 'the model'}: {prediction.prediction} "
            f"{prediction.confidence:.3f}. {_short(info.metadata.intended_use)}"
        )[:10240]
        picture.BurnedInAnnotation = "NO"  # class and scale only: nothing that names the patient
        if "Laterality" not in picture:
            picture.Laterality = ""  # type 2: unknown in the source, said as empty
    return ResultObjects(report, picture)


def conformant(source: Dataset) -> Dataset:
    """A copy of ``source`` without the values highdicom refuses to copy: a Patient's Sex other
    than M, F or O, and dates and times that are not dates and times. PACSes hold such files;
    their results are still made, with those values left empty."""
    from pydicom.valuerep import DA, DT, TM

    copy = Dataset()
    copy.update(source)
    if hasattr(source, "file_meta"):
        copy.file_meta = source.file_meta
    if str(copy.get("PatientSex") or "") not in ("", "M", "F", "O"):
        copy.PatientSex = ""
    parsers = {"DA": DA, "TM": TM, "DT": DT}
    for element in list(copy):
        parse = parsers.get(element.VR)
        if parse is None or element.value in (None, ""):
            continue
        try:
            values = element.value if element.VM > 1 else [element.value]
            for value in values:
                parse(str(value))
        except (ValueError, TypeError, OverflowError):
            copy[element.tag].value = ""  # type 2 in the modules copied: present, empty
    return copy


def _report_content(
    source: Dataset, prediction: Prediction, info: ModelInfo
) -> hd.sr.ContainerContentItem:
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    findings = hd.sr.ContainerContentItem(name=_FINDINGS, relationship_type=contains)
    items = []
    if prediction.prediction is not None:
        items.append(
            hd.sr.CodeContentItem(
                name=_FINDING,
                value=_class_code(prediction.prediction),
                relationship_type=contains,
            )
        )
        for name, probability in prediction.scores.items():
            items.append(
                hd.sr.NumContentItem(
                    name=CodedConcept(f"P-{name.upper()}", _SCHEME, f"Probability of {name}"),
                    value=float(probability),
                    unit=_NO_UNITS,
                    relationship_type=contains,
                )
            )
    if prediction.ood is not None and prediction.ood.score is not None:
        items += [
            hd.sr.NumContentItem(
                name=_OOD_SCORE,
                value=float(prediction.ood.score),
                unit=_NO_UNITS,
                relationship_type=contains,
            ),
            hd.sr.NumContentItem(
                name=_OOD_THRESHOLD,
                value=float(prediction.ood.threshold),
                unit=_NO_UNITS,
                relationship_type=contains,
            ),
            hd.sr.CodeContentItem(
                name=_IN_DISTRIBUTION,
                value=_YES if prediction.ood.in_distribution else _NO,
                relationship_type=contains,
            ),
        ]
    if prediction.error is not None:
        items.append(_text(_COMMENT, f"Not classified. {prediction.error}"))
    items.append(
        hd.sr.ImageContentItem(
            name=_SOURCE,
            referenced_sop_class_uid=source.SOPClassUID,
            referenced_sop_instance_uid=source.SOPInstanceUID,
            relationship_type=contains,
        )
    )
    findings.ContentSequence = items
    root = hd.sr.ContainerContentItem(name=_REPORT, template_id="2000")
    root.ContentSequence = [
        findings,
        _text(_ALGORITHM_NAME, info.metadata.name or f"btxrd {info.metadata.arch}"),
        _text(_ALGORITHM_VERSION, info.metadata.version or "unversioned"),
        _text(_MODEL_SHA256, info.sha256),
        _text(_COMMENT, info.metadata.intended_use),
    ]
    return root


def _class_code(name: str) -> CodedConcept:
    return CodedConcept(name.upper()[:16], _SCHEME, name)


def _text(name: CodedConcept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def _orientation(source: Dataset) -> tuple[str, str]:
    """The source's Patient Orientation, which the overlay keeps (it is the same picture)."""
    value = list(source.get("PatientOrientation") or [])
    if len(value) == 2 and all(value):
        return (str(value[0]), str(value[1]))
    return ("L", "F")  # unknown in the source: the radiographic default (patient facing)


def _laterality(source: Dataset) -> str | None:
    """The film's laterality (its image's, else its series'), when it is left or right."""
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(source.get(keyword) or "").strip()
        if value in ("L", "R"):
            return value
    return None


def _short(text: str) -> str:
    return " ".join(text.split())
