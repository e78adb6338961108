"""Prove on real image files that the ONNX file scores exactly like the PyTorch checkpoint.

Reference side: the PyTorch model on torchvision's transforms, with its own decoding written
here independently of the runtime. Candidate side: the exported file opened by the runtime's
loader (``OnnxModel``, its contract checks) and run on the runtime's decoding, preprocessing and
softmax. (Not through ``Classifier``: its scores pass the file's gate and calibration, which are
checked here output by output.) Any probability apart by more than the tolerance, or any
different top-1, fails the export.

A file with trust has two more outputs, checked the same way: ``probabilities`` against numpy's
softmax(logits / T) of the PyTorch logits, and ``ood_score`` against the numpy score
(``btxrd.export.trust.ood``) of PyTorch's pooled features (caught by hooks on the model's own
forward) with the fitted statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from torchvision import transforms

from btxrd.export.archs import Arch
from btxrd.export.trust.calibration import softmax
from btxrd.export.trust.ood import OodScorer
from btxrd.export.trust.taps import pooled_taps
from btxrd.runtime.decode.image import load_image
from btxrd.runtime.errors import BtxrdError, InputError
from btxrd.runtime.model.contract import (
    INPUT_NAME,
    LOGITS_NAME,
    OOD_SCORE_NAME,
    PROBABILITIES_NAME,
    Preprocessing,
)
from btxrd.runtime.model.postprocess import softmax as runtime_softmax
from btxrd.runtime.model.preprocess import preprocess
from btxrd.runtime.model.session import OnnxModel
from btxrd.runtime.settings import InferenceSettings

PARITY_TOLERANCE = 1e-4
# ood_score: |onnx - reference| <= OOD_RELATIVE_TOLERANCE * max(1, |reference|). A Mahalanobis
# distance is a sum over 1,280 whitened float32 features, so it is held to a relative bound; the
# floor of 1 keeps scores near zero (msp, energy) from demanding more than float32 gives.
OOD_RELATIVE_TOLERANCE = 1e-3
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ParityCase:
    path: Path
    kind: str


def write_parity_images(sources: list[Path], out_dir: Path) -> list[ParityCase]:
    """Derive the file kinds users have from radiographs: gray and RGB JPEG, 8- and 16-bit PNG,
    an EXIF-rotated JPEG, RGBA and palette PNG, very wide and very tall images."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cases: list[ParityCase] = []

    def add(image: Image.Image, name: str, kind: str, **save: Any) -> None:
        path = out_dir / name
        image.save(path, **save)
        cases.append(ParityCase(path, kind))

    for i, source in enumerate(sources):
        try:
            with Image.open(source) as opened:
                gray = ImageOps.exif_transpose(opened).convert("L")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise InputError(
                f"{source}: cannot derive parity images from it ({exc}); remove it from the "
                "folder or pass another --parity-images"
            ) from None
        w, h = gray.size
        add(gray, f"{i}_gray.jpeg", "grayscale JPEG", quality=92)
        tinted = Image.merge("RGB", [gray, gray.point(lambda v: int(v * 0.97)), gray])
        add(tinted, f"{i}_rgb.jpeg", "RGB JPEG", quality=92)
        add(gray, f"{i}_gray8.png", "8-bit PNG")
        deep = (np.asarray(gray, dtype=np.uint16) * 16 + 7).astype(np.uint16)  # 12 bits in 16
        add(Image.fromarray(deep), f"{i}_gray16.png", "16-bit PNG")
        exif = Image.Exif()
        exif[_EXIF_ORIENTATION] = 6  # stored rotated; viewers turn it 90 degrees clockwise
        add(
            gray.transpose(Image.Transpose.ROTATE_90),
            f"{i}_exif6.jpeg",
            "EXIF-rotated JPEG",
            quality=92,
            exif=exif.tobytes(),
        )
        rgba = tinted.convert("RGBA")
        rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
        add(rgba, f"{i}_rgba.png", "RGBA PNG")
        add(tinted.convert("P", palette=Image.Palette.ADAPTIVE), f"{i}_palette.png", "palette PNG")
        add(gray.resize((max(w, h) * 2, max(120, h // 6))), f"{i}_wide.png", "very wide PNG")
        add(gray.resize((max(120, w // 6), max(w, h) * 2)), f"{i}_tall.jpeg", "very tall JPEG")
    return cases


def reference_image(path: Path) -> Image.Image:
    """The reference decode: EXIF upright, 16-bit scaled by its range, alpha onto black, RGB."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        image.load()
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image).astype(np.float64)
        span = values.max() - values.min()
        scaled = (values - values.min()) * (255.0 / span) if span > 0 else values * 0
        image = Image.fromarray(np.rint(scaled).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if "A" in image.mode:
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def reference_transform(prep: Preprocessing) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize(prep.image_size, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.ToTensor(),
            transforms.Normalize(prep.mean, prep.std),
        ]
    )


def _reference_batch(images: list[Image.Image], prep: Preprocessing) -> torch.Tensor:
    transform = reference_transform(prep)
    return torch.stack([transform(image) for image in images])


@torch.inference_mode()
def reference_probabilities(
    model: nn.Module, images: list[Image.Image], prep: Preprocessing
) -> np.ndarray:
    return torch.softmax(model.eval()(_reference_batch(images, prep)).double(), dim=1).numpy()


@torch.inference_mode()
def reference_outputs(
    model: nn.Module, arch: Arch, images: list[Image.Image], prep: Preprocessing
) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's logits and pooled taps (concatenated), float64, from the model's own forward:
    forward hooks catch the taps (``btxrd.export.trust.taps``)."""
    logits, pooled = pooled_taps(model.eval(), arch, _reference_batch(images, prep))
    features = torch.cat(pooled, dim=1).double().numpy()
    return logits.double().numpy(), features


@dataclass(frozen=True, eq=False)
class TrustReference:
    """What the trust outputs are checked against: the architecture (for its features), the
    temperature and the fitted scorer."""

    arch: Arch
    temperature: float
    scorer: OodScorer


def check_parity(
    model: nn.Module,
    onnx_path: Path,
    cases: list[ParityCase],
    prep: Preprocessing,
    trust: TrustReference | None = None,
) -> dict[str, Any]:
    """Compare every case; the report says per image how far apart the two sides are."""
    images = [reference_image(c.path) for c in cases]
    expected = reference_probabilities(model, images, prep)
    onnx_model = OnnxModel(onnx_path)  # the runtime's loader: its contract checks apply
    names = onnx_model.info.class_names
    session = onnx_model.session
    want_probs = want_ood = None
    if trust is not None:
        logits, features = reference_outputs(model, trust.arch, images, prep)
        want_probs = softmax(logits, trust.temperature)
        want_ood = trust.scorer.score(features, logits)
    rows = []
    for i, (case, ref) in enumerate(zip(cases, expected, strict=True)):
        try:
            array = preprocess(load_image(case.path), prep)[None]
        except BtxrdError as exc:
            rows.append({"image": case.path.name, "kind": case.kind, "error": str(exc)})
            continue
        wanted = [LOGITS_NAME, *((PROBABILITIES_NAME, OOD_SCORE_NAME) if trust else ())]
        outputs = session.run(wanted, {INPUT_NAME: array})
        onnx_probs = runtime_softmax(outputs[0][0])
        row = {
            "image": case.path.name,
            "kind": case.kind,
            "max_abs_diff": float(np.abs(onnx_probs - ref).max()),
            "top1_torch": names[int(ref.argmax())],
            "top1_onnx": names[int(onnx_probs.argmax())],
            "torch_probabilities": [float(v) for v in ref],
            "onnx_probabilities": [float(v) for v in onnx_probs],
        }
        if want_probs is not None and want_ood is not None:
            probs, ood = outputs[1][0], float(outputs[2][0])
            row.update(
                calibrated_max_abs_diff=float(np.abs(probs - want_probs[i]).max()),
                ood_score_torch=float(want_ood[i]),
                ood_score_onnx=ood,
                ood_relative_diff=float(abs(ood - want_ood[i]) / max(1.0, abs(want_ood[i]))),
            )
        rows.append(row)
    diffs = [r["max_abs_diff"] for r in rows if "max_abs_diff" in r]
    failures = [r["image"] for r in rows if _failed(r)]
    report = {
        "tolerance": PARITY_TOLERANCE,
        "num_images": len(rows),
        "max_abs_diff": max(diffs) if diffs else None,
        "top1_agreement": sum(r.get("top1_torch") == r.get("top1_onnx") for r in rows) / len(rows),
        "passed": not failures,
        "failures": failures,
        # The check above decodes exactly, as btxrd-run does by default; --fast-decode is
        # only compared with it here, and never decides whether the export passes.
        "decode": "exact",
        "fast_decode": fast_decode_agreement(session, cases, prep),
    }
    if trust is not None:
        calibrated = [r["calibrated_max_abs_diff"] for r in rows if "calibrated_max_abs_diff" in r]
        ood_diffs = [r["ood_relative_diff"] for r in rows if "ood_relative_diff" in r]
        report.update(
            ood_relative_tolerance=OOD_RELATIVE_TOLERANCE,
            calibrated_max_abs_diff=max(calibrated) if calibrated else None,
            ood_max_relative_diff=max(ood_diffs) if ood_diffs else None,
            temperature=trust.temperature,
            ood_method=trust.scorer.method,
        )
    return {**report, "images": rows}


def fast_decode_agreement(session, cases: list[ParityCase], prep: Preprocessing) -> dict[str, Any]:
    """How ``btxrd-run --fast-decode`` (JPEGs decoded at a reduced DCT scale) compares with the
    exact decode on the parity JPEGs: top-1 agreement and the largest probability difference."""
    margin = InferenceSettings().fast_decode_margin
    height, width = prep.image_size
    jpegs = [c.path for c in cases if c.path.suffix.lower() in (".jpg", ".jpeg")]
    decodes: list[str] = []
    diffs: list[float] = []
    agree = 0
    for path in jpegs:
        try:
            exact = preprocess(load_image(path), prep)
            drafted = load_image(path, draft=(width * margin, height * margin))
        except BtxrdError:
            continue  # the parity rows already report this image's error
        both = np.stack([exact, preprocess(drafted, prep)])
        probs = [runtime_softmax(row) for row in session.run([LOGITS_NAME], {INPUT_NAME: both})[0]]
        decodes.append(drafted.decode)
        diffs.append(float(np.abs(probs[0] - probs[1]).max()))
        agree += int(probs[0].argmax() == probs[1].argmax())
    return {
        "margin": margin,
        "jpeg_images": len(decodes),
        "decoded_at_reduced_scale": sum(d != "exact" for d in decodes),
        "top1_agreement": agree / len(decodes) if decodes else None,
        "max_abs_diff": max(diffs) if diffs else None,
    }


def _top1_differs(row: dict[str, Any]) -> bool:
    """The two sides name different top classes, and PyTorch does not score them as a tie:
    where its top two are within the tolerance, either answer is PyTorch's own within float
    noise (random or barely trained networks give such ties)."""
    if row["top1_torch"] == row["top1_onnx"]:
        return False
    torch_side = row["torch_probabilities"]
    onnx_top = int(np.argmax(row["onnx_probabilities"]))
    return max(torch_side) - torch_side[onnx_top] > PARITY_TOLERANCE


def _failed(row: dict[str, Any]) -> bool:
    return (
        "error" in row
        or row["max_abs_diff"] > PARITY_TOLERANCE
        or _top1_differs(row)
        or row.get("calibrated_max_abs_diff", 0.0) > PARITY_TOLERANCE
        or row.get("ood_relative_diff", 0.0) > OOD_RELATIVE_TOLERANCE
    )
