"""5. Heatmap costs: the edge CAM output in onnxruntime, and btxrd-explain's Grad-CAM in torch.

- Edge CAM, inference only: the session asked for logits vs logits + cam on the same tensors,
  and ``Classifier.predict_many(with_cam=True)`` vs without on 224 px PNGs (per image: its
  recorded inference time, and wall time). Target: at most +10 % on inference.
- Grad-CAM (pytorch-grad-cam through ``btxrd.explain.cam.compute_cams``), frozen vs naive
  parameters, next to a plain forward pass; in its own process so torch's threads do not
  compete with onnxruntime's. Target: frozen at most 1.5x a forward pass.
"""

from __future__ import annotations

import json
import subprocess
from statistics import mean
from typing import Any

import numpy as np
import sessions
from context import BENCH, Context
from report import row
from timing import Stats, interleave, ratio

from btxrd.runtime.decode.image import load_image
from btxrd.runtime.model.classifier import Classifier
from btxrd.runtime.model.contract import CAM_NAME, INPUT_NAME, LOGITS_NAME
from btxrd.runtime.model.preprocess import preprocess

TARGET_CAM_OVERHEAD = 0.10
TARGET_GRADCAM = 1.5


def run(ctx: Context) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    counts = ctx.counts
    paths = ctx.inputs.small_pngs(counts.cam_images)
    classifier = Classifier(ctx.model.onnx)
    figures: dict[str, Any] = {"images": len(paths), "has_cam_output": classifier.info.has_cam}
    rows: list[dict[str, Any]] = []
    if not classifier.info.has_cam:
        figures["skipped"] = "the model has no cam output"
        rows.append(row("edge CAM", "skipped: the model has no cam output"))
    else:
        _edge(ctx, classifier, paths, figures, rows)
    _gradcam(ctx, paths[: counts.gradcam_images], figures, rows)
    return figures, rows


def _edge(ctx, classifier: Classifier, paths, figures: dict, rows: list) -> None:
    prep = classifier.info.metadata.preprocessing
    session = classifier._model.session  # the runtime's own session
    batch = classifier.batch_size
    tensors = np.stack([preprocess(load_image(p), prep) for p in paths])

    def fetch(names: list[str]):
        return lambda: [
            session.run(names, {INPUT_NAME: tensors[i : i + batch]})
            for i in range(0, len(tensors), batch)
        ]

    inference_ms: dict[str, list[float]] = {"plain": [], "with_cam": []}

    def predict(with_cam: bool):
        key = "with_cam" if with_cam else "plain"

        def go() -> None:
            results = list(classifier.predict_many(paths, with_cam=with_cam))
            inference_ms[key].append(mean(r.timings_ms["inference"] for r in results))

        return go

    stats = interleave(
        {
            "session: logits": fetch([LOGITS_NAME]),
            "session: logits + cam": fetch([LOGITS_NAME, CAM_NAME]),
            "predict_many": predict(False),
            "predict_many(with_cam=True)": predict(True),
        },
        ctx.counts.cam_reps,
        between=sessions.settle,
    )
    n = len(paths)
    # The first entry of each list is the warm-up call's.
    recorded = {k: Stats(tuple(v[1:] or v), "ms/image") for k, v in inference_ms.items()}
    session_overhead = _overhead(stats["session: logits + cam"], stats["session: logits"])
    recorded_overhead = _overhead(recorded["with_cam"], recorded["plain"])
    figures["edge"] = {
        "batch_size": batch,
        "ms_per_image": {k: v.scaled(1000 / n, "ms/image").to_json() for k, v in stats.items()},
        "recorded_inference_ms_per_image": {k: v.to_json() for k, v in recorded.items()},
        "session_overhead": session_overhead,
        "recorded_inference_overhead": recorded_overhead,
        "wall_overhead": _overhead(stats["predict_many(with_cam=True)"], stats["predict_many"]),
    }
    per_image = {k: v.scaled(1000 / n, "ms/image").to_json() for k, v in stats.items()}
    rows += [
        row("session, logits only", per_image["session: logits"]),
        row("session, logits + cam", per_image["session: logits + cam"]),
        row(
            "edge CAM overhead on inference (session)",
            session_overhead,
            unit="fraction",
            target=f"<= +{TARGET_CAM_OVERHEAD:.0%}",
            met=session_overhead["median"] <= TARGET_CAM_OVERHEAD,
            note="as a fraction: 0.05 = +5 %",
        ),
        row("predict_many inference, plain", recorded["plain"].to_json()),
        row("predict_many inference, with_cam", recorded["with_cam"].to_json()),
        row(
            "edge CAM overhead (predict_many recorded inference)",
            recorded_overhead,
            unit="fraction",
            note=f"wall: {figures['edge']['wall_overhead']['median']}",
        ),
    ]


def _gradcam(ctx: Context, paths, figures: dict, rows: list) -> None:
    command = [ctx.python, str(BENCH / "torch_worker.py"), "gradcam"]
    command += ["--checkpoint", str(ctx.model.checkpoint), "--reps", str(ctx.counts.gradcam_reps)]
    command += ["--images", *map(str, paths)]
    done = subprocess.run(command, capture_output=True, text=True, env=ctx.env(), cwd=ctx.repo)
    if done.returncode != 0:
        figures["gradcam"] = {"error": done.stderr[-2000:]}
        rows.append(row("explain Grad-CAM", "FAILED", note=done.stderr.strip().splitlines()[-1]))
        return
    result = json.loads(done.stdout)
    figures["gradcam"] = result
    if "skipped" in result:
        rows.append(row("explain Grad-CAM", "skipped", note=result["skipped"]))
        return
    ms = result["ms_per_image"]
    frozen = result["frozen_over_forward"]["median"]
    rows += [
        row("explain: torch forward", ms["forward"], note=f"{result['images']} images"),
        row("explain: Grad-CAM frozen", ms["frozen"]),
        row("explain: Grad-CAM naive", ms["naive"]),
        row(
            "explain: frozen Grad-CAM / forward",
            result["frozen_over_forward"],
            unit="x",
            target=f"<= {TARGET_GRADCAM}x",
            met=frozen <= TARGET_GRADCAM,
            note=f"naive/frozen {result['naive_over_frozen']['median']}, "
            f"max map difference {result['max_difference_naive_vs_frozen']}",
        ),
    ]


def _overhead(slow: Stats, fast: Stats) -> dict[str, Any]:
    """Extra time as a fraction of ``fast`` (0.05 = +5 %)."""
    r = ratio(slow, fast)
    return {k: (round(v - 1, 4) if v is not None else None) for k, v in r.items()}
