"""3. The model alone against the machine's limit, and onnxruntime settings that might raise it.

- Ceiling: fp32 GFLOP/s of a large matrix product on all cores (fastest of numpy, ORT, torch).
- Work: the model's FLOPs per image, counted from the ONNX graph (and by torch, as a check).
- Reached: images/s at batch 1, 8 and 32 with the runtime's own session; fraction of the ceiling.
- Settings: one change at a time from the runtime's (threads, optimisation level, memory arena,
  parallel execution, spinning, a graph saved after optimisation), interleaved at the runtime's
  batch size, each checked for parity (max |dp| <= 1e-4) against the runtime's session.
- Session load time per optimisation level, and the CPU onnxruntime's idle threads burn in the
  0.25 s after a run (spinning), which the decode threads then cannot use.
"""

from __future__ import annotations

import json
import subprocess
from statistics import median
from typing import Any

import flops
import numpy as np
import sessions
from context import BENCH, Context
from report import row
from timing import cpu_seconds_during, interleave, ratio

from btxrd.runtime.decode.image import load_image
from btxrd.runtime.model.preprocess import preprocess
from btxrd.runtime.model.session import OnnxModel

PARITY = 1e-4
TARGET_FRACTION = 0.40
OPENVINO_ADOPT = 1.2  # paired speed-up over onnxruntime that would justify a second backend
IMAGES_PER_SAMPLE = 32  # every timing sample pushes this many images, whatever the batch size


def run(ctx: Context) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    counts = ctx.counts
    ceiling = flops.matmul_gflops(counts.matmul_n, counts.matmul_reps)
    work = flops.count_onnx(ctx.model.onnx)
    work["torch_count"] = _torch_flops(ctx)
    gflop = work["gflop_per_image"]
    runtime = OnnxModel(ctx.model.onnx)
    tensors = _tensors(ctx, runtime, IMAGES_PER_SAMPLE)

    def push(session, batch: int):
        return lambda: [
            sessions.logits(session, tensors[i : i + batch])
            for i in range(0, IMAGES_PER_SAMPLE, batch)
        ]

    by_batch = interleave(
        {f"batch {b}": push(runtime.session, b) for b in (1, 8, 32)},
        counts.model_reps,
        between=sessions.settle,
    )
    optimised = sessions.save_optimised(
        ctx.model.onnx, ctx.work / f"optimised-{ctx.model.sha256[:12]}.onnx"
    )
    variants = sessions.option_variants(optimised)
    opened = {v.name: sessions.open_session(ctx.model.onnx, v) for v in variants}
    reference = sessions.probabilities(runtime.session, tensors[:8])
    parity = {
        name: float(np.abs(sessions.probabilities(s, tensors[:8]) - reference).max())
        for name, s in opened.items()
    }
    batch = 8
    by_variant = interleave(
        {name: push(s, batch) for name, s in opened.items()},
        counts.model_reps,
        between=sessions.settle,
    )
    baseline = by_variant[sessions.RUNTIME.name]
    load = interleave(
        {
            "ORT_ENABLE_ALL (runtime)": lambda: sessions.open_session(ctx.model.onnx),
            "ORT_ENABLE_EXTENDED": lambda: sessions.open_session(
                ctx.model.onnx, sessions.Variant(level="extended")
            ),
            "saved optimised graph, no optimisation": lambda: sessions.open_session(
                ctx.model.onnx, variants[-1]
            ),
        },
        counts.session_load_reps,
    )
    spin = _spin_cpu(ctx, tensors[:batch])

    best_rate = max(IMAGES_PER_SAMPLE / s.min for s in by_batch.values())
    best_gflops = ceiling["gflops"]["best"]
    fraction = best_rate * gflop / best_gflops
    candidates = {
        name: ratio(baseline, s)
        for name, s in by_variant.items()
        if name != sessions.RUNTIME.name and parity[name] <= PARITY
    }
    winner = max(candidates, key=lambda k: candidates[k]["paired_median"] or 0, default=None)
    figures = {
        "ceiling": ceiling,
        "flops": work,
        "ideal_images_per_s": round(best_gflops / gflop, 1),
        "images_per_s_by_batch": {k: v.rate(IMAGES_PER_SAMPLE) for k, v in by_batch.items()},
        "fraction_of_ceiling": round(fraction, 3),
        "variants_batch": batch,
        "variants_images_per_s": {k: v.rate(IMAGES_PER_SAMPLE) for k, v in by_variant.items()},
        "variants_speedup_vs_runtime": candidates,
        "variants_parity_max_abs_dp": parity,
        "best_variant": winner,
        "session_load_s": {k: v.to_json() for k, v in load.items()},
        "spin_cpu_s_in_0.25s_after_run": spin,
    }
    rows = [
        *(
            row(f"{name} fp32 matmul {counts.matmul_n}^2", rate)
            for name, rate in ceiling["by_library"].items()
        ),
        row(f"fp32 ceiling (fastest: {ceiling['library']})", ceiling["gflops"]),
        row(
            "model FLOPs per image (ONNX count)",
            gflop,
            unit="GFLOP",
            note=f"torch counts {work['torch_count']}",
        ),
        row("ideal images/s at the ceiling", figures["ideal_images_per_s"], unit="images/s"),
    ]
    rows += [row(f"onnxruntime {k}", v.rate(IMAGES_PER_SAMPLE)) for k, v in by_batch.items()]
    rows.append(
        row(
            "fraction of the fp32 ceiling (best batch)",
            round(fraction, 3),
            target=f">= {TARGET_FRACTION:.0%}",
            met=fraction >= TARGET_FRACTION,
        )
    )
    for name, s in by_variant.items():
        note = f"parity {parity[name]:.1e}"
        if name in candidates:
            note += f"; x{candidates[name]['paired_median']} vs runtime (paired)"
        elif name != sessions.RUNTIME.name:
            note += " FAILS parity"
        rows.append(row(f"batch {batch}: {name}", s.rate(IMAGES_PER_SAMPLE), note=note))
    rows.append(row("best setting (paired speed-up, parity kept)", winner or "none"))
    openvino = _openvino_pair(ctx, runtime, tensors, reference, batch, push)
    figures["openvino"] = openvino
    rows += _openvino_rows(openvino, batch)
    rows += [row(f"session load: {k}", v.to_json()) for k, v in load.items()]
    rows += [
        row(
            f"CPU burnt in 0.25 s after a run, spinning {'on' if k == 'on' else 'off'}",
            v,
            unit="CPU-s",
        )
        for k, v in spin.items()
    ]
    return figures, rows


def _tensors(ctx: Context, model: OnnxModel, n: int) -> np.ndarray:
    prep = model.info.metadata.preprocessing
    paths = ctx.inputs.small_pngs(min(n, ctx.counts.cam_images))
    arrays = [preprocess(load_image(p), prep) for p in paths]
    return np.stack([arrays[i % len(arrays)] for i in range(n)])


def _spin_cpu(ctx: Context, batch: np.ndarray) -> dict[str, float]:
    out = {}
    for label, spinning in (("on", True), ("off", False)):
        session = sessions.open_session(ctx.model.onnx, sessions.Variant(spinning=spinning))
        samples = []
        for _ in range(3):
            sessions.logits(session, batch)
            samples.append(cpu_seconds_during(0.25))
        out[label] = round(median(samples), 3)
        del session
    return out


def _openvino_pair(ctx: Context, runtime: OnnxModel, tensors, reference, batch: int, push):
    """OpenVINO's CPU runtime on the same ONNX file (extra ``[openvino]``), interleaved with the
    runtime's session at the same batch size, with its parity against onnxruntime."""
    try:
        import openvino
    except ImportError:
        return {"available": False, "why": "openvino not installed (pip install 'btxrd[openvino]')"}
    from btxrd.runtime.model.postprocess import softmax

    # fp32 explicitly: on CPUs with bf16 support the plugin otherwise computes in bf16
    # (measured here: 1.5x faster but max |dp| 1.8e-3, ten times the parity bar).
    compiled = openvino.Core().compile_model(
        str(ctx.model.onnx), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    request = compiled.create_infer_request()
    logits = compiled.output("logits")

    def infer(x: np.ndarray) -> np.ndarray:
        return request.infer({"image": x})[logits]

    parity = float(np.abs(softmax(infer(tensors[:8])) - reference).max())
    pair = interleave(
        {
            "onnxruntime": push(runtime.session, batch),
            "openvino": lambda: [
                infer(tensors[i : i + batch]) for i in range(0, IMAGES_PER_SAMPLE, batch)
            ],
        },
        ctx.counts.model_reps,
        between=sessions.settle,
    )
    return {
        "available": True,
        "version": openvino.__version__,
        "images_per_s": {k: v.rate(IMAGES_PER_SAMPLE) for k, v in pair.items()},
        "speedup_vs_onnxruntime": ratio(pair["onnxruntime"], pair["openvino"]),
        "parity_max_abs_dp": parity,
    }


def _openvino_rows(result: dict[str, Any], batch: int) -> list[dict[str, Any]]:
    if not result["available"]:
        return [row("OpenVINO backend", "not measured", note=result["why"])]
    speedup = result["speedup_vs_onnxruntime"]
    # A second backend costs users a ~200 MB dependency: adopt it only for a win larger than
    # the run-to-run spread of this pair (0.92x to 1.07x in two runs here), with parity kept.
    wins = (speedup["paired_median"] or 0) >= OPENVINO_ADOPT and result[
        "parity_max_abs_dp"
    ] <= PARITY
    return [
        row(
            f"batch {batch}: onnxruntime (paired with OpenVINO)",
            result["images_per_s"]["onnxruntime"],
        ),
        row(
            f"batch {batch}: OpenVINO {result['version'].split('-')[0]}",
            result["images_per_s"]["openvino"],
            note=f"parity {result['parity_max_abs_dp']:.1e}; x{speedup['paired_median']} (paired)",
        ),
        row(
            "OpenVINO as a backend",
            "worth adding"
            if wins
            else f"not adopted: below x{OPENVINO_ADOPT} with parity kept (fp32)",
        ),
    ]


def _torch_flops(ctx: Context) -> float | None:
    command = [ctx.python, str(BENCH / "torch_worker.py"), "flops"]
    command += ["--checkpoint", str(ctx.model.checkpoint)]
    done = subprocess.run(command, capture_output=True, text=True, env=ctx.env())
    if done.returncode != 0:
        return None
    return round(json.loads(done.stdout)["gflop_per_image"], 4)
