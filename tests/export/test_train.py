"""`make demo-model`'s training step, end to end on a tiny synthetic folder.

Not a quality test: it proves the recipe runs, writes a checkpoint that loads with
``weights_only=True`` (nothing pickled slips in), a split and metrics, and that it exports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

from btxrd.export.checkpoint import build_model, load_checkpoint  # noqa: E402
from btxrd.export.train import train  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_recipe_trains_saves_a_safe_checkpoint_and_records_itself(tmp_path: Path) -> None:
    data = tmp_path / "data"
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
    config = yaml.safe_load((ROOT / "configs/demo-train.yaml").read_text())
    config["data"]["root"] = str(data)
    config["model"].update(image_size=64)  # the recipe's own architecture, on tiny images
    config["training"].update(epochs=2, coarse_epochs=1, batch_size=8)
    config["output"] = {
        "checkpoint": str(tmp_path / "m.pt"),
        "split": str(tmp_path / "split.json"),
        "metrics": str(tmp_path / "metrics.json"),
    }
    record = train(config, yaml.safe_dump(config))
    # Epoch 1 at output stride 32, epoch 2 at 16: only the latter can be the saved network.
    assert [h["output_stride"] for h in record["history"]] == [32, 16]
    assert record["best_epoch"] == 2 and record["test_size"] > 0
    checkpoint = load_checkpoint(tmp_path / "m.pt")  # weights_only=True inside
    assert checkpoint.class_names == ("Normal", "Benign", "Malignant")
    assert checkpoint.extra["training"]["recipe"]["model"]["arch"] == "efficientnet_b0_os16"
    model, arch = build_model(checkpoint)
    assert arch.name == "efficientnet_b0_os16"
    with torch.no_grad():
        assert arch.features(model, torch.zeros(1, 3, 64, 64)).shape[-2:] == (4, 4)  # 64 / 16
    assert set(json.loads((tmp_path / "split.json").read_text())) == {"train", "val", "test"}
    assert json.loads((tmp_path / "metrics.json").read_text())["test"]["accuracy"] >= 0
