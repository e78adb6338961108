"""The export side's commands map the same fault to the same exit code (the README's table):
btxrd-export, btxrd-synth, training (python -m btxrd.export.train) and sample selection
(python -m btxrd.export.samples). Usage error 2; bad config or setting 2; an output folder that
cannot be made 3; a missing checkpoint 3; a dataset that cannot be read 1 (documented in the
command's help). Every fault is one line on stderr, nothing on stdout, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

pytest.importorskip("torch")

from btxrd.export.cli import main as export_main
from btxrd.export.samples import main as samples_main
from btxrd.export.synthetic.cli import main as synth_main
from btxrd.export.train import main as train_main

pytestmark = pytest.mark.torch
ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {
    "export": export_main,
    "synth": synth_main,
    "train": train_main,
    "samples": samples_main,
}


def _recipe(tmp_path: Path, **changes: dict) -> Path:
    """The demo recipe with ``section={key: value}`` changes, written to tmp_path."""
    recipe = yaml.safe_load((ROOT / "configs/demo-train.yaml").read_text())
    for section, values in changes.items():
        recipe[section].update(values)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _outputs(folder: Path) -> dict[str, str]:
    return {
        "checkpoint": str(folder / "m.pt"),
        "split": str(folder / "split.json"),
        "metrics": str(folder / "metrics.json"),
    }


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 20-image synthetic dataset and a split of it (no training needed)."""
    from btxrd.export.data.dataset import load_dataset, split_dataset, write_split
    from btxrd.export.synthetic.generate import SynthOptions, generate_dataset

    data = tmp_path_factory.mktemp("data")
    generate_dataset(data, SynthOptions(n=20, seed=1, min_size=100, max_size=150), workers=1)
    split = data / "split.json"
    write_split(split, split_dataset(load_dataset(data), seed=0))
    return data, split


def _invoke(command: str, args: list[str]):
    return CliRunner().invoke(COMMANDS[command], args)


def _assert_one_line(result, code: int, *causes: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    (line,) = result.stderr.splitlines()
    for cause in causes:
        assert cause in line
    return line


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option_is_a_usage_error(command: str) -> None:
    result = _invoke(command, ["--no-such-option"])
    assert result.exit_code == 2
    assert "No such option" in result.stderr and result.stdout == ""


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_h_or_help_and_documents_the_codes(command: str) -> None:
    short, long = _invoke(command, ["-h"]), _invoke(command, ["--help"])
    assert short.exit_code == long.exit_code == 0
    assert short.stdout == long.stdout
    text = " ".join(short.stdout.split())
    for fragment in ("Exit codes: 0 success", "2 usage or config error", "Example:", "--debug"):
        assert fragment in text


@pytest.mark.parametrize(
    ("module", "command"),
    [
        # a fresh interpreter importing torch: several seconds on a small machine
        pytest.param("btxrd.export.train", "python -m btxrd.export.train", marks=pytest.mark.slow),
        ("btxrd.export.samples", "python -m btxrd.export.samples"),
    ],
)
def test_module_entry_points_run_the_same_commands(module: str, command: str) -> None:
    """The Makefile runs these as `python -m ...`: same exit code, named as typed."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--no-such-option"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert f"Usage: {command} [OPTIONS]" in result.stderr


def test_output_folder_that_cannot_be_made_is_exit_3(tmp_path: Path, tiny_checkpoint: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "sub"
    cases = {
        "export": ["--checkpoint", str(tiny_checkpoint), "--out", str(out / "m.onnx")],
        "synth": ["--out", str(out), "--n", "2", "--workers", "1"],
        "train": ["--config", str(_recipe(tmp_path, output=_outputs(out)))],
        "samples": ["--data", str(tmp_path), "--out", str(out)],
    }
    for command, args in cases.items():
        line = _assert_one_line(_invoke(command, args), 3, str(out), "cannot create")
        assert "output folder" in line, command


def test_bad_config_or_setting_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training has a recipe; the others take their settings from options and the environment."""
    _assert_one_line(
        _invoke("train", ["--config", str(_recipe(tmp_path, training={"lrr": 0.1}))]),
        2,
        "training.lrr",
        "unknown key",
    )
    _assert_one_line(_invoke("train", ["--config", str(tmp_path / "none.yaml")]), 2, "not found")
    for command, args in {
        "export": ["--checkpoint", "m.pt", "--out", "m.onnx", "--opset", "99"],
        "synth": ["--out", str(tmp_path / "s"), "--proportions", "1,2"],
        "samples": ["--per-class", "0"],
    }.items():
        result = _invoke(command, args)
        assert result.exit_code == 2, command
        assert "Invalid value" in result.stderr and result.stdout == ""


def test_export_missing_checkpoint_is_exit_3(tmp_path: Path) -> None:
    missing = tmp_path / "none.pt"
    result = _invoke("export", ["--checkpoint", str(missing), "--out", str(tmp_path / "m.onnx")])
    _assert_one_line(result, 3, str(missing), "checkpoint not found")


def test_missing_dataset_folder_is_a_usage_error(tmp_path: Path) -> None:
    """Training and sample selection read a dataset; a folder that is not there is a usage
    error (2), as a missing --dir is for btxrd-run; one that cannot be read is an input failure
    (1), which their help spells out."""
    missing = tmp_path / "no-data"
    recipe = _recipe(tmp_path, data={"root": str(missing)}, output=_outputs(tmp_path / "out"))
    cases = {
        "train": ["--config", str(recipe)],
        "samples": ["--data", str(missing), "--out", str(tmp_path / "samples")],
    }
    for command, args in cases.items():
        _assert_one_line(_invoke(command, args), 2, str(missing), "no such folder")
        assert "exit code 1 means the dataset" in " ".join(_invoke(command, ["-h"]).stdout.split())


def test_training_from_a_missing_checkpoint_is_exit_3(
    tmp_path: Path, tiny_data: tuple[Path, Path]
) -> None:
    missing = tmp_path / "stage1.pt"
    recipe = _recipe(
        tmp_path,
        data={"root": str(tiny_data[0])},
        model={"arch": "resnet18", "image_size": 32, "init_checkpoint": str(missing)},
        output=_outputs(tmp_path / "out"),
    )
    result = _invoke("train", ["--config", str(recipe)])
    assert result.exit_code == 3
    assert result.stdout == ""
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    # Progress lines come first; the error is the last line, and the only one.
    (line,) = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.stderr.splitlines()[-1] == line
    assert str(missing) in line and "checkpoint not found" in line
    assert not (tmp_path / "out" / "m.pt").exists()


def test_samples_copies_held_out_images_and_prints_them(
    tmp_path: Path, tiny_data: tuple[Path, Path]
) -> None:
    data, split = tiny_data
    out = tmp_path / "samples"
    result = _invoke("samples", ["--data", str(data), "--split", str(split), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    printed = [Path(line) for line in result.stdout.splitlines()]
    assert printed and all(p.parent == out and p.is_file() for p in printed)
    labels = (out / "labels.csv").read_text().splitlines()
    assert labels[0] == "image_id,label" and len(labels) == len(printed) + 1
    test_ids = set(json.loads(split.read_text())["test"])
    assert {p.name for p in printed} <= test_ids  # only held-out images
    assert (out / "Annotations").is_dir()


def test_samples_refuses_a_split_of_other_data(
    tmp_path: Path, tiny_data: tuple[Path, Path]
) -> None:
    split = tmp_path / "split.json"
    split.write_text('{"train": [], "val": [], "test": ["IMG999999.jpeg"]}')
    result = _invoke(
        "samples", ["--data", str(tiny_data[0]), "--split", str(split), "--out", str(tmp_path)]
    )
    _assert_one_line(result, 1, str(split), "IMG999999.jpeg")


@pytest.mark.parametrize("command", COMMANDS)
def test_version_on_every_export_command(command: str) -> None:
    result = _invoke(command, ["--version"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("btxrd ")
