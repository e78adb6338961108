"""`make demo-model`'s training step, end to end on a tiny synthetic folder.

Not a quality test: it proves the recipe runs, writes a checkpoint that loads with
``weights_only=True`` (nothing pickled slips in), a split, and metrics that are the saved
model's on that split's test images.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from schema_check import assert_valid

torch = pytest.importorskip("torch")

from btxrd.export.checkpoint import build_model, load_checkpoint  # noqa: E402
from btxrd.export.data.dataset import load_dataset, read_split  # noqa: E402
from btxrd.export.train import cache_images, load_recipe, predict_probabilities, train  # noqa: E402
from btxrd.runtime.labels.metrics import classification_metrics  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("synthetic")
    subprocess.run(
        [
            str(Path(sys.executable).parent / "btxrd-synth"),
            "--out",
            str(data),
            "--n",
            "30",
            "--seed",
            "3",
            "--max-size",
            "400",
            "--workers",
            "1",
        ],
        check=True,
        capture_output=True,
    )
    return data


def _outputs(folder: Path) -> dict[str, str]:
    return {
        "checkpoint": str(folder / "m.pt"),
        "split": str(folder / "split.json"),
        "metrics": str(folder / "metrics.json"),
    }


def test_recipe_trains_saves_a_safe_checkpoint_and_records_itself(
    tmp_path: Path, tiny_data: Path
) -> None:
    config = yaml.safe_load((ROOT / "configs/demo-train.yaml").read_text())
    config["data"]["root"] = str(tiny_data)
    config["model"].update(arch="resnet18", image_size=64)
    # A wall-clock cap, if set, stops after the epoch that exceeds it
    config["training"].update(epochs=2, batch_size=8, max_minutes=1e-9)
    out = tmp_path / "not-yet-made"  # output folders are created
    config["output"] = _outputs(out)
    record = train(config, yaml.safe_dump(config))
    assert len(record["history"]) == 1 and record["best_epoch"] == 1
    assert record["test_size"] > 0
    checkpoint = load_checkpoint(out / "m.pt")  # weights_only=True inside
    assert checkpoint.class_names == ("Normal", "Benign", "Malignant")
    assert checkpoint.extra["training"]["recipe"]["model"]["arch"] == "resnet18"
    model, arch = build_model(checkpoint)
    assert arch.name == "resnet18"
    assert set(json.loads((out / "split.json").read_text())) == {"train", "val", "test"}
    split = read_split(out / "split.json")
    assert_valid(json.loads((out / "split.json").read_text()), "split")
    metrics = json.loads((out / "metrics.json").read_text())
    assert_valid(metrics, "training_metrics")
    assert metrics["initialised_from"] is None
    test = metrics["test"]
    assert test == record["test"]
    # The recorded test metrics are the saved model's on the recorded test split: recompute them.
    held_out = [s for s in load_dataset(tiny_data) if s.image_id in set(split["test"])]
    assert len(held_out) == record["test_size"] == len(split["test"])
    labels = np.array([checkpoint.class_names.index(s.label) for s in held_out])
    prep = checkpoint.preprocessing
    model = model.to(memory_format=torch.channels_last)  # evaluated as in training
    probabilities = predict_probabilities(model, cache_images(held_out, prep), prep)
    predicted = probabilities.argmax(axis=1)
    assert (
        test["confusion_matrix"]
        == classification_metrics(labels, probabilities, checkpoint.class_names)["confusion_matrix"]
    )
    assert test["accuracy"] == pytest.approx(float((predicted == labels).mean()))
    assert 0.0 <= test["accuracy"] <= 1.0


def test_finetune_recipe_starts_from_stage_one_at_output_stride_16(
    tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # a recipe's base and paths are relative to the repository
    stage1, _ = load_recipe("configs/demo-train.yaml")
    stage2, text = load_recipe("configs/demo-finetune.yaml")
    assert stage1["model"]["arch"] == "efficientnet_b0"
    assert stage2["model"]["arch"] == "efficientnet_b0_os16"
    assert stage2["model"]["init_checkpoint"] == stage1["output"]["checkpoint"]
    assert stage2["augment"] == stage1["augment"]  # inherited from the base
    assert "# base: configs/demo-train.yaml" in text  # both files are recorded
    for config, folder in ((stage1, tmp_path / "1"), (stage2, tmp_path / "2")):
        config["data"]["root"] = str(tiny_data)
        config["model"]["image_size"] = 64
        config["training"].update(epochs=1, batch_size=8)
        config["output"] = _outputs(folder)
    stage2["model"]["init_checkpoint"] = stage1["output"]["checkpoint"]
    train(stage1, "")
    record = train(stage2, text)
    start = load_checkpoint(tmp_path / "1" / "m.pt")
    assert record["initialised_from"]["sha256"] == start.sha256
    assert record["initialised_from"]["arch"] == "efficientnet_b0"
    finetuned = load_checkpoint(tmp_path / "2" / "m.pt")
    model, arch = build_model(finetuned)
    assert arch.name == "efficientnet_b0_os16"
    assert arch.locate(model, (64, 64)).parts.grid == (4, 4)  # 64 / 16
    assert finetuned.extra["training"]["metrics"]["initialised_from"]["sha256"] == start.sha256


def test_training_command_runs_a_recipe_file_end_to_end(tmp_path: Path, tiny_data: Path) -> None:
    """The Makefile's `python -m btxrd.export.train --config FILE`, through its click command:
    the file is validated, trained on, and recorded in the checkpoint as written."""
    from click.testing import CliRunner

    from btxrd.export.train import main as train_main

    config = yaml.safe_load((ROOT / "configs/demo-train.yaml").read_text())
    config["data"]["root"] = str(tiny_data)
    config["model"].update(arch="resnet18", image_size=64)
    config["training"].update(epochs=1, batch_size=8)
    config["output"] = _outputs(tmp_path / "out")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(train_main, ["--config", str(recipe)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # progress and the summary go to stderr
    assert "test accuracy" in result.stderr
    checkpoint = load_checkpoint(tmp_path / "out" / "m.pt")
    assert checkpoint.extra["training"]["recipe"] == config
    assert checkpoint.extra["training"]["recipe_yaml"] == recipe.read_text()
