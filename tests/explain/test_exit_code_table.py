"""The README's exit-code table is the one every command follows: the table lists the codes the
shared runner uses (defined in ``btxrd.runtime.errors``), and btxrd-run and btxrd-explain give
the same code for the same fault (the export side's commands:
``tests/export/test_exit_codes.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from btxrd.runtime import errors
from btxrd.runtime.cli.run import main as run_main

ROOT = Path(__file__).resolve().parents[2]
CLEAN_ENV = {"BTXRD_MODEL": None, "BTXRD_CONFIG": None}


def _readme_codes() -> dict[int, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return {
        int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| ([^|]+) \|", text, re.M)
    }


def test_the_readme_table_lists_the_runner_codes():
    codes = _readme_codes()
    assert sorted(codes) == sorted(
        {
            errors.EXIT_OK,
            errors.EXIT_INPUT,
            errors.EXIT_USAGE,
            errors.EXIT_MODEL,
            errors.EXIT_INTERRUPTED,
        }
    )
    assert "usage" in codes[errors.EXIT_USAGE] and "interrupted" in codes[130]


def _explain_main():
    pytest.importorskip("torch")
    from btxrd.explain.cli import main

    return main


def _invoke(command: str, args: list[object]):
    main = run_main if command == "btxrd-run" else _explain_main()
    prefix = [] if command == "btxrd-run" else [command.split()[1]]
    return CliRunner().invoke(main, [*prefix, *map(str, args)], env=CLEAN_ENV)


def _one_line(result, code: int, *needles: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    if code != 2 or needles:
        lines = [line for line in result.stderr.splitlines() if "rror" in line]
        assert len(lines) == 1, result.stderr
        for needle in needles:
            assert needle in lines[0]


COMMANDS = ["btxrd-run", "btxrd-explain images", "btxrd-explain report"]


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option_is_2(command):
    _one_line(_invoke(command, ["--no-such-option"]), 2)


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_config_is_2(command, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("gradcam:\n  k: 10\ninference:\n  batch_size: 0\n", encoding="utf-8")
    target = ["--data", tmp_path] if command.endswith("report") else [tmp_path / "a.png"]
    _one_line(_invoke(command, ["--config", config, *target]), 2, str(config))


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_model_or_checkpoint_is_3(command, tmp_path):
    missing = tmp_path / ("absent.onnx" if command == "btxrd-run" else "absent.pt")
    flag = "--model" if command == "btxrd-run" else "--checkpoint"
    args = [flag, missing, tmp_path / "a.png"]
    if command == "btxrd-explain report":
        args = [flag, missing, "--data", tmp_path]
    _one_line(_invoke(command, args), 3, str(missing), "not found")


def test_output_folder_that_cannot_be_made_is_3_for_btxrd_run(tiny_onnx, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    image = tmp_path / "a.png"
    result = _invoke(
        "btxrd-run", ["--model", tiny_onnx, "--cam", "--cam-dir", blocker / "cams", image]
    )
    _one_line(result, 3, str(blocker / "cams"), "cannot create the output folder")


@pytest.mark.parametrize("command", ["btxrd-explain images", "btxrd-explain report"])
def test_output_folder_that_cannot_be_made_is_3_for_btxrd_explain(
    command, tiny_checkpoint, synth_data, tmp_path
):
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    out = blocker / "explain"
    image = next((synth_data / "images").iterdir())
    args = ["--checkpoint", tiny_checkpoint, "--out", out, "--quiet"]
    args += [image] if command.endswith("images") else ["--data", synth_data]
    _one_line(_invoke(command, args), 3, str(out), "cannot create the output folder")


@pytest.mark.parametrize("command", ["btxrd-run", "btxrd-explain images"])
def test_an_unreadable_input_is_1(command, tmp_path, request):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    if command == "btxrd-run":
        args = ["--model", request.getfixturevalue("tiny_onnx"), bad]
    else:
        checkpoint = request.getfixturevalue("tiny_checkpoint")
        args = ["--checkpoint", checkpoint, "--out", tmp_path / "out", "--quiet", bad]
    _one_line(_invoke(command, args), 1, str(bad))
