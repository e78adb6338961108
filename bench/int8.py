"""4. int8: static QDQ quantization, per-channel and per-tensor, against fp32.

Calibration: ~100 training-like synthetic radiographs through the runtime's own decode and
preprocessing (MinMax ranges; uint8 activations, int8 weights). Judged on held-out images: speed
at batch 1 and the runtime's batch size (interleaved), top-1 agreement with fp32 and the largest
probability change. The issue's bar for offering ``btxrd-export --int8``: >= 1.3x and >= 99 %.
Quantized graphs are cached by the fp32 model's hash, so only the first run pays calibration.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import sessions
from context import Context
from report import row
from timing import interleave, ratio

from btxrd.runtime.decode.image import load_image
from btxrd.runtime.model.contract import INPUT_NAME
from btxrd.runtime.model.preprocess import preprocess
from btxrd.runtime.model.session import OnnxModel

BAR_SPEEDUP = 1.3
BAR_AGREEMENT = 0.99
MODES = {"int8 per-channel": True, "int8 per-tensor": False}


def run(ctx: Context) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    counts = ctx.counts
    split = ctx.inputs.labelled_split(ctx.repo, counts.int8_calibration, counts.int8_held_out)
    prep = OnnxModel(ctx.model.onnx).info.metadata.preprocessing
    calibration = _arrays(split.calibration, prep)
    held_out = _arrays(split.held_out, prep)
    models = {"fp32": ctx.model.onnx}
    notes: dict[str, str] = {}
    for name, per_channel in MODES.items():
        models[name] = _quantized(ctx, calibration, per_channel, notes)
    opened = {name: sessions.open_session(path) for name, path in models.items()}
    probs = {name: sessions.probabilities(s, held_out) for name, s in opened.items()}
    batch = 8
    # Every timing sample pushes the same 32 held-out images (repeated if there are fewer).
    tensors = np.resize(held_out, (32, *held_out.shape[1:]))
    cases = {}
    for name, s in opened.items():
        cases[f"{name}, batch 1"] = _pusher(s, tensors, 1)
        cases[f"{name}, batch {batch}"] = _pusher(s, tensors, batch)
    stats = interleave(cases, counts.int8_reps, between=sessions.settle)
    figures: dict[str, Any] = {
        "calibration": {
            "images": len(calibration),
            "method": "MinMax",
            "activations": "QUInt8",
            "weights": "QInt8",
            "format": "QDQ",
        },
        "data": split.source,
        "held_out_images": len(held_out),
        "model_is_standin": ctx.model.standin,
        "files": {k: str(v) for k, v in models.items()},
        "file_mb": {k: round(Path(v).stat().st_size / 1e6, 2) for k, v in models.items()},
        "images_per_s": {k: v.rate(len(tensors)) for k, v in stats.items()},
        "modes": {},
        "notes": notes,
    }
    rows: list[dict[str, Any]] = []
    top1 = probs["fp32"].argmax(1)
    for name in MODES:
        speed = {
            b: ratio(stats[f"fp32, batch {b}"], stats[f"{name}, batch {b}"]) for b in (1, batch)
        }
        agreement = float((probs[name].argmax(1) == top1).mean())
        max_dp = float(np.abs(probs[name] - probs["fp32"]).max())
        meets = speed[batch]["median"] >= BAR_SPEEDUP and agreement >= BAR_AGREEMENT
        figures["modes"][name] = {
            "speedup_vs_fp32": speed,
            "top1_agreement": agreement,
            "max_abs_dp": max_dp,
            "meets_bar": meets,
        }
        suffix = "; STAND-IN weights" if ctx.model.standin else ""
        rows += [
            row(
                f"{name}: speed-up vs fp32, batch {batch}",
                speed[batch],
                unit="x",
                target=f">= {BAR_SPEEDUP}x",
                met=speed[batch]["median"] >= BAR_SPEEDUP,
                note=f"batch 1: x{speed[1]['median']}",
            ),
            row(
                f"{name}: top-1 agreement with fp32",
                round(agreement, 4),
                target=f">= {BAR_AGREEMENT:.0%}",
                met=agreement >= BAR_AGREEMENT,
                note=f"max |dp| {max_dp:.3g} on {len(held_out)} held-out images{suffix}",
            ),
        ]
    offered = [name for name, m in figures["modes"].items() if m["meets_bar"]]
    figures["offer_export_int8"] = bool(offered)
    rows.append(row("offer btxrd-export --int8", ", ".join(offered) or "no: bar not met"))
    return figures, rows


def _pusher(session: ort.InferenceSession, tensors: np.ndarray, batch: int):
    return lambda: [
        sessions.logits(session, tensors[i : i + batch]) for i in range(0, len(tensors), batch)
    ]


def _arrays(paths: list[Path], prep) -> np.ndarray:
    with ThreadPoolExecutor(2) as pool:
        return np.stack(list(pool.map(lambda p: preprocess(load_image(p), prep), paths)))


def _quantized(ctx: Context, calibration: np.ndarray, per_channel: bool, notes: dict) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    tag = "pc" if per_channel else "pt"
    folder = ctx.cache / "int8"
    folder.mkdir(parents=True, exist_ok=True)
    key = f"{ctx.model.sha256[:12]}-{tag}-cal{len(calibration)}-ort{ort.__version__}"
    out = folder / f"{key}.onnx"
    if out.is_file():
        return out
    print(
        f"bench: quantizing ({tag}, {len(calibration)} calibration images) -> {out}",
        file=sys.stderr,
    )
    prepared = folder / f"{ctx.model.sha256[:12]}-prepared.onnx"
    if not prepared.is_file():
        try:
            quant_pre_process(str(ctx.model.onnx), str(prepared))
        except Exception as exc:  # its symbolic shape inference fails on some exporter graphs
            notes["pre_process"] = f"quant_pre_process failed ({exc}); quantized the raw graph"
            prepared = ctx.model.onnx

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {INPUT_NAME: item[None]}

    quantize_static(
        str(prepared),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    (folder / f"{key}.json").write_text(json.dumps({"per_channel": per_channel}) + "\n")
    return out
