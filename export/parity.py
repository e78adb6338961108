"""Prove on real image files that the ONNX file scores exactly like the PyTorch checkpoint.

Reference side: the PyTorch model on torchvision's transforms, with its own decoding written
here independently of the runtime. Candidate side: the exported file through the runtime's
``Classifier`` (its decoding and preprocessing). Any probability apart by more than the tolerance,
or any different top-1, fails the export.
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

from btxrd.runtime.classifier import Classifier
from btxrd.runtime.contract import Preprocessing
from btxrd.runtime.errors import InputError

PARITY_TOLERANCE = 1e-4
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


@torch.inference_mode()
def reference_probabilities(
    model: nn.Module, images: list[Image.Image], prep: Preprocessing
) -> np.ndarray:
    transform = reference_transform(prep)
    batch = torch.stack([transform(image) for image in images])
    return torch.softmax(model.eval()(batch).double(), dim=1).numpy()


def check_parity(
    model: nn.Module, onnx_path: Path, cases: list[ParityCase], prep: Preprocessing
) -> dict[str, Any]:
    """Compare every case; the report says per image how far apart the two sides are."""
    expected = reference_probabilities(model, [reference_image(c.path) for c in cases], prep)
    classifier = Classifier(onnx_path, batch_size=len(cases))
    names = classifier.class_names
    rows = []
    for case, ref, got in zip(
        cases, expected, classifier.predict_many([c.path for c in cases]), strict=True
    ):
        if got.error is not None:
            rows.append({"image": case.path.name, "kind": case.kind, "error": got.error})
            continue
        onnx_probs = np.array([got.scores[n] for n in names])
        rows.append(
            {
                "image": case.path.name,
                "kind": case.kind,
                "max_abs_diff": float(np.abs(onnx_probs - ref).max()),
                "top1_torch": names[int(ref.argmax())],
                "top1_onnx": got.prediction,
                "torch_probabilities": [float(v) for v in ref],
                "onnx_probabilities": [float(v) for v in onnx_probs],
            }
        )
    diffs = [r["max_abs_diff"] for r in rows if "max_abs_diff" in r]
    failures = [
        r["image"]
        for r in rows
        if "error" in r or r["max_abs_diff"] > PARITY_TOLERANCE or r["top1_torch"] != r["top1_onnx"]
    ]
    return {
        "tolerance": PARITY_TOLERANCE,
        "num_images": len(rows),
        "max_abs_diff": max(diffs) if diffs else None,
        "top1_agreement": sum(r.get("top1_torch") == r.get("top1_onnx") for r in rows) / len(rows),
        "passed": not failures,
        "failures": failures,
        "images": rows,
    }
