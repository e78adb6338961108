"""``make trust``: what the out-of-distribution gate catches and how well the probabilities are
calibrated, on a model and the data it was trained on.

In-distribution: the held-out test split, and a fresh synthetic set drawn with a seed the model
never saw. Out of distribution: the sets of ``btxrd.export.trust.sets``. Every candidate score
is fitted as export fits it (statistics on train, threshold on val at the retention given); the
shipped file's own ``ood_score`` and threshold are measured on the same images. Writes
``OUT/trust.json`` and reliability diagrams; prints a table on stdout.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import numpy as np
import onnxruntime as ort
from scipy.stats import bootstrap

from btxrd.export.data.dataset import load_dataset
from btxrd.export.trust.calibration import calibration_metrics, softmax
from btxrd.export.trust.defaults import DEFAULT_RETENTION, RETENTION_RANGE
from btxrd.export.trust.diagram import draw_reliability
from btxrd.export.trust.fit import (
    Part,
    Probe,
    Scored,
    fit_trust,
    split_parts,
)
from btxrd.export.trust.ood import auroc, fit_scorer, threshold_at
from btxrd.export.trust.sets import OOD_SETS, build_ood_sets
from btxrd.export.trust.taps import tap_widths
from btxrd.runtime.cli.common import CONTEXT_SETTINGS, debug_option, documents_exit_codes, run_cli
from btxrd.runtime.decode.image import load_image
from btxrd.runtime.labels.metrics import ECE_BINS, expected_calibration_error, reliability_table
from btxrd.runtime.model.contract import INPUT_NAME, OOD_SCORE_NAME, ModelMetadata
from btxrd.runtime.model.preprocess import preprocess
from btxrd.runtime.model.session import session_options
from btxrd.runtime.output.atomic import atomic_open, write_text
from btxrd.runtime.output.folders import prepare_output_dir

FRESH_SEED = 12345
FRESH_N = 300


def _log(message: str) -> None:
    print(f"trust: {message}", file=sys.stderr, flush=True)


def measure(
    checkpoint_path: Path,
    model_path: Path | None,
    data: Path,
    split: Path,
    out: Path,
    retention: float = DEFAULT_RETENTION,
) -> dict[str, Any]:
    from btxrd.export.checkpoint import build_model, load_checkpoint
    from btxrd.export.onnx_export import probe_bytes
    from btxrd.export.synthetic.generate import SynthOptions, generate_dataset

    started = time.perf_counter()
    prepare_output_dir(out)
    checkpoint = load_checkpoint(checkpoint_path)
    model, arch = build_model(checkpoint)
    prep = checkpoint.preprocessing
    names = checkpoint.class_names
    probe = Probe(probe_bytes(model, arch, prep.image_size), prep)
    widths = tap_widths(model, arch, prep.image_size)
    # The features are the pooled taps: their layout is part of what the cache holds.
    cache = _Cache(out / "cache", f"{checkpoint.sha256} taps {widths}")

    # Export's bar for a shipped fit does not apply: this benchmark reports every figure with
    # the number of images behind it.
    parts, source = split_parts(data, split, names, min_val_per_class=1)
    scored = {
        name: Part(
            name,
            np.array([names.index(s.label) for s in samples]),
            cache.score(f"split-{name}", [s.image_path for s in samples], probe),
        )
        for name, samples in parts.items()
    }
    fresh_dir = out / "sets" / "fresh"
    if not (fresh_dir / "generation.json").exists():
        _log(f"drawing {FRESH_N} fresh synthetic radiographs (seed {FRESH_SEED})")
        generate_dataset(
            fresh_dir,
            SynthOptions(n=FRESH_N, seed=FRESH_SEED, max_size=1200),
            workers=2,
            overwrite=True,
        )
    fresh_samples = load_dataset(fresh_dir)
    fresh_paths = [s.image_path for s in fresh_samples]
    fresh = Part(
        "fresh",
        np.array([names.index(s.label) for s in fresh_samples]),
        cache.score("fresh", fresh_paths, probe),
    )
    ood_paths = build_ood_sets(out / "sets", fresh_paths)
    ood = {
        name: cache.score(f"ood-{name}", paths, probe, strict=False)
        for name, paths in ood_paths.items()
    }

    shipped = fit_trust(scored, source, len(names), widths, retention=retention)
    calibration = _calibration(shipped.temperature, scored["test"], fresh, out)
    candidates = _candidates(scored, fresh, ood, len(names), widths, retention)
    file_gate = _measure_file(model_path, scored["test"], fresh, ood) if model_path else None
    result = {
        "model": str(model_path) if model_path else None,
        "checkpoint": str(checkpoint_path),
        "checkpoint_sha256": checkpoint.sha256,
        "data": source.data,
        "split_file": source.split_file,
        "split_sha256": source.split_sha256,
        "retention_target": retention,
        "in_distribution": {
            "test": {"num_images": len(scored["test"].labels), "what": "held-out test split"},
            "fresh": {
                "num_images": len(fresh.labels),
                "what": f"btxrd-synth --seed {FRESH_SEED} --n {FRESH_N} --max-size 1200",
            },
        },
        "out_of_distribution": {
            name: {
                "what": OOD_SETS[name],
                "num_images": len(ood[name].paths),
                "refused_by_decoder": len(ood[name].failed),
            }
            for name in OOD_SETS
        },
        "calibration": calibration,
        "candidates": candidates,
        "shipped_file": file_gate,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_text(out / "trust.json", json.dumps(result, indent=2) + "\n")
    return result


def _calibration(temperature: float, test: Part, fresh: Part, out: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"temperature": temperature, "ece_bins": ECE_BINS}
    for part in (test, fresh):
        before = softmax(part.scored.logits)
        after = softmax(part.scored.logits, temperature)
        result[part.name] = {
            "ece_change_95ci": _ece_change_interval(before, after, part.labels),
            "num_images": len(part.labels),
            "accuracy": float((before.argmax(1) == part.labels).mean()),
            "accuracy_after": float((after.argmax(1) == part.labels).mean()),
            "before": calibration_metrics(before, part.labels),
            "after": calibration_metrics(after, part.labels),
            "reliability_before": reliability_table(part.labels, before),
            "reliability_after": reliability_table(part.labels, after),
        }
        diagram = out / f"reliability_{part.name}.png"
        draw_reliability(
            diagram,
            result[part.name]["reliability_before"],
            result[part.name]["reliability_after"],
            title=f"{part.name} ({len(part.labels)} images), T = {temperature:.3f}",
            ece=(result[part.name]["before"]["ece"], result[part.name]["after"]["ece"]),
        )
        result[part.name]["diagram"] = diagram.name
    return result


def _ece_change_interval(before, after, labels) -> list[float]:
    """95 % bootstrap interval (paired, 2,000 resamples) of ECE after minus ECE before."""
    rows = np.arange(len(labels))

    def change(index: np.ndarray) -> float:
        index = index.astype(int)
        return expected_calibration_error(labels[index], after[index]) - expected_calibration_error(
            labels[index], before[index]
        )

    result = bootstrap(
        (rows,), change, n_resamples=2000, vectorized=False, method="percentile", random_state=0
    )
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def _candidates(
    parts: dict[str, Part],
    fresh: Part,
    ood: dict[str, Scored],
    num_classes: int,
    widths: tuple[int, ...],
    retention: float,
) -> dict[str, Any]:
    """Every candidate fitted as export fits it, measured on the same images."""
    train, val, test = parts["train"], parts["val"], parts["test"]
    fit = lambda method, combine="max": fit_scorer(  # noqa: E731
        method, widths, train.scored.features, train.labels, num_classes, combine
    )
    multilayer = fit("mahalanobis_multilayer")  # the candidates by their own names
    scorers = {
        "mahalanobis_multilayer": multilayer,
        "mahalanobis_multilayer_sum": replace(multilayer, combine="sum"),
        "mahalanobis": fit("mahalanobis"),
        "msp": fit("msp"),
        "energy": fit("energy"),
        "feature_norm": fit("feature_norm"),
    }
    results = {}
    for name, scorer in scorers.items():
        scores = {
            key: scorer.score(s.features, s.logits)
            for key, s in (("val", val.scored), ("test", test.scored), ("fresh", fresh.scored))
        }
        threshold = threshold_at(scores["val"], retention)
        id_scores = np.r_[scores["test"], scores["fresh"]]
        row: dict[str, Any] = {
            "threshold": threshold,
            "details": scorer.details(),
            **{f"retention_{k}": float((v <= threshold).mean()) for k, v in scores.items()},
            "sets": {},
        }
        for set_name, scored in ood.items():
            values = scorer.score(scored.features, scored.logits)
            row["sets"][set_name] = {
                "auroc": auroc(id_scores, values),
                "refused": float((values > threshold).mean()),
            }
        row["min_auroc"] = min(v["auroc"] for v in row["sets"].values())
        row["min_refused"] = min(v["refused"] for v in row["sets"].values())
        results[name] = row
    return results


def _measure_file(model_path: Path, test: Part, fresh: Part, ood: dict[str, Scored]):
    """The shipped file's own outputs and threshold, on the same images."""
    session = ort.InferenceSession(
        str(model_path), session_options(None), providers=["CPUExecutionProvider"]
    )
    meta = ModelMetadata.from_metadata_props(
        session.get_modelmeta().custom_metadata_map, str(model_path)
    )
    if meta.trust is None:
        _log(f"{model_path} carries no trust metadata; its gate is not measured")
        return None
    gate = meta.trust.ood
    prep = meta.preprocessing

    def run(paths) -> np.ndarray:
        scores = []
        for start in range(0, len(paths), 32):
            batch = np.stack([preprocess(load_image(p), prep) for p in paths[start : start + 32]])
            scores.append(session.run([OOD_SCORE_NAME], {INPUT_NAME: batch})[0])
        return np.concatenate(scores) if scores else np.zeros(0)

    test_scores, fresh_scores = run(list(test.scored.paths)), run(list(fresh.scored.paths))
    id_scores = np.r_[test_scores, fresh_scores]
    sets = {}
    for name, scored in ood.items():
        values = run(list(scored.paths))
        sets[name] = {
            "auroc": auroc(id_scores, values),
            "refused": float((values > gate.threshold).mean()),
        }
    return {
        "method": gate.method,
        "details": dict(gate.details),
        "threshold": gate.threshold,
        "retention_set": gate.retention,
        "retention_test": float((test_scores <= gate.threshold).mean()),
        "retention_fresh": float((fresh_scores <= gate.threshold).mean()),
        "temperature": meta.trust.calibration.temperature,
        "sets": sets,
    }


class _Cache:
    """Probe outputs per image set, keyed by the checkpoint and the files' names and sizes, so
    a second ``make trust`` on the same model and images skips the network."""

    def __init__(self, folder: Path, model_key: str) -> None:
        self.folder = folder
        self.checkpoint = model_key

    def score(self, name: str, paths, probe: Probe, strict: bool = True) -> Scored:
        key = hashlib.sha256(self.checkpoint.encode())
        for p in paths:
            key.update(f"{Path(p).resolve()}\0{Path(p).stat().st_size}\0".encode())
        file = self.folder / f"{name}-{key.hexdigest()[:16]}.npz"
        if file.exists():
            data = np.load(file, allow_pickle=False)
            failed = json.loads(str(data["failed"]))
            return Scored(
                paths=tuple(Path(p) for p in data["paths"]),
                logits=data["logits"],
                features=data["features"],
                failed={Path(k): v for k, v in failed.items()},
            )
        _log(f"scoring {len(paths)} images of {name}")
        scored = probe.run(list(paths), strict=strict)
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(file, "wb", encoding=None) as handle:
            np.savez(
                handle,
                paths=np.array([str(p) for p in scored.paths]),
                logits=scored.logits,
                features=scored.features,
                failed=np.array(json.dumps({str(k): v for k, v in scored.failed.items()})),
            )
        return scored


def table(result: dict[str, Any]) -> str:
    """The figures as a plain-text table: one row per candidate score, AUROC and refused share
    per out-of-distribution set, retention on the in-distribution sets."""
    sets = list(OOD_SETS)
    lines = []
    header = f"{'score':<28}{'ret test':>9}{'ret fresh':>10}" + "".join(f"{s:>13}" for s in sets)
    lines.append(
        "AUROC / refused at the threshold (fitted on train, set on val at "
        f"{result['retention_target']:.0%} retention)"
    )
    lines.append(header)
    rows = dict(result["candidates"])
    if result.get("shipped_file"):
        rows["SHIPPED FILE"] = result["shipped_file"]
    for name, row in rows.items():
        cells = "".join(
            f"{row['sets'][s]['auroc']:>7.3f}/{row['sets'][s]['refused']:<5.2f}" for s in sets
        )
        lines.append(
            f"{name:<28}{row['retention_test']:>9.3f}{row['retention_fresh']:>10.3f}{cells}"
        )
    sizes = ", ".join(f"{s} {result['out_of_distribution'][s]['num_images']}" for s in sets)
    lines.append(
        f"images: {sizes}; in-distribution: test "
        f"{result['in_distribution']['test']['num_images']}, fresh "
        f"{result['in_distribution']['fresh']['num_images']}"
    )
    cal = result["calibration"]
    lines.append(f"calibration: temperature {cal['temperature']:.4f}")
    for part in ("test", "fresh"):
        b, a = cal[part]["before"], cal[part]["after"]
        lines.append(
            f"  {part:<6} NLL {b['nll']:.4f} -> {a['nll']:.4f}   Brier {b['brier']:.4f} -> "
            f"{a['brier']:.4f}   ECE({cal['ece_bins']} bins) {b['ece']:.4f} -> {a['ece']:.4f}   "
            f"accuracy {cal[part]['accuracy']:.4f} (after {cal[part]['accuracy_after']:.4f}); "
            f"ECE change 95 % CI [{cal[part]['ece_change_95ci'][0]:+.4f}, "
            f"{cal[part]['ece_change_95ci'][1]:+.4f}]"
        )
    return "\n".join(lines)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--checkpoint", "checkpoint_path", required=True, type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    help="Exported file whose own gate is measured too (skipped if it has no trust).",
)
@click.option(
    "--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--split", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--out", default=Path("results/trust"), type=click.Path(path_type=Path), show_default=True
)
@click.option(
    "--retention",
    default=DEFAULT_RETENTION,
    show_default=True,
    type=click.FloatRange(*RETENTION_RANGE),
)
@debug_option
@documents_exit_codes
def main(
    checkpoint_path: Path,
    model_path: Path | None,
    data: Path,
    split: Path,
    out: Path,
    retention: float,
    debug: bool,
) -> None:
    """Measure calibration and every candidate out-of-distribution score on a model's data,
    held-out and fresh in-distribution images and out-of-distribution sets built here.

    Writes OUT/trust.json and OUT/reliability_{test,fresh}.png; the table goes to stdout,
    progress to stderr. Image sets are written under OUT/sets, network outputs cached under
    OUT/cache.

    \b
    Example:
        python -m btxrd.export.trust.measure --checkpoint models/btxrd-demo.pt \\
            --model models/btxrd-demo.onnx --data data/synthetic \\
            --split models/btxrd-demo.split.json --out results/trust
    """

    def action() -> int:
        result = measure(checkpoint_path, model_path, data, split, out, retention)
        click.echo(table(result))
        return 0

    run_cli(action, debug)


if __name__ == "__main__":
    main()
