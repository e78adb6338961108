"""Configuration: the shipped file equals the built-in defaults; bad files name the key."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from btxrd.runtime.cli.run import main
from btxrd.runtime.config import DEFAULTS, load_config
from btxrd.runtime.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_YAML = REPO_ROOT / "configs" / "default.yaml"
CLEAN_ENV = {"BTXRD_MODEL": None, "BTXRD_CONFIG": None}


@pytest.fixture(autouse=True)
def _no_config_from_the_environment(monkeypatch):
    monkeypatch.delenv("BTXRD_CONFIG", raising=False)
    monkeypatch.delenv("BTXRD_MODEL", raising=False)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_default_yaml_equals_the_built_in_defaults():
    assert yaml.safe_load(DEFAULT_YAML.read_text(encoding="utf-8")) == DEFAULTS
    assert load_config(DEFAULT_YAML) == DEFAULTS


def test_defaults_derive_from_the_settings_dataclasses():
    from btxrd.runtime.model.classifier import Classifier
    from btxrd.runtime.output.overlay import overlay
    from btxrd.runtime.settings import SECTIONS, DecodeLimits, InferenceSettings

    for name, section in SECTIONS.items():
        assert DEFAULTS[name] == {f: getattr(section(), f) for f in DEFAULTS[name]}
    inference = InferenceSettings()
    assert DecodeLimits() == inference.limits
    assert DecodeLimits().max_pixels == DEFAULTS["inference"]["max_pixels"]
    assert inspect.signature(overlay).parameters["alpha"].default == DEFAULTS["cam"]["alpha"]
    assert DEFAULTS["gradcam"]["alpha"] == DEFAULTS["cam"]["alpha"]
    # Classifier's batch size and limits default to the same values (read from the settings).
    assert inspect.signature(Classifier).parameters["batch_size"].default is None


def test_command_line_ranges_are_the_config_ranges():
    from btxrd.runtime.settings import range_of

    batch = _option(main, "batch_size").type
    threads = _option(main, "threads").type
    assert (batch.min, batch.max) == (range_of("inference", "batch_size").low, 1024)
    assert (threads.min, threads.max) == (1, range_of("inference", "threads").high)


def _option(command, name):
    return next(p for p in command.params if p.name == name)


def test_no_config_gives_a_copy_of_the_defaults():
    config = load_config()
    assert config == DEFAULTS
    config["inference"]["batch_size"] = 99
    assert DEFAULTS["inference"]["batch_size"] == 8


def test_a_partial_file_overrides_only_what_it_names(tmp_path):
    path = _write(tmp_path, "inference:\n  batch_size: 2\n  max_aspect: 30\ncam:\n  alpha: 0.2\n")
    config = load_config(path)
    assert config["inference"]["batch_size"] == 2
    assert config["inference"]["max_aspect"] == 30.0
    assert isinstance(config["inference"]["max_aspect"], float)  # an int is fine for a float
    assert config["cam"] == {"out": DEFAULTS["cam"]["out"], "alpha": 0.2}
    assert config["paths"] == DEFAULTS["paths"]


@pytest.mark.parametrize("threads", ["null", "4"])
def test_threads_takes_a_positive_integer_or_null(tmp_path, threads):
    config = load_config(_write(tmp_path, f"inference:\n  threads: {threads}\n"))
    assert config["inference"]["threads"] == yaml.safe_load(threads)


def test_empty_file_gives_the_defaults(tmp_path):
    assert load_config(_write(tmp_path, "# nothing set\n")) == DEFAULTS


def test_environment_variable_names_the_config(tmp_path, monkeypatch):
    path = _write(tmp_path, "inference:\n  batch_size: 3\n")
    monkeypatch.setenv("BTXRD_CONFIG", str(path))
    assert load_config()["inference"]["batch_size"] == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("inferance:\n  batch_size: 2\n", "unknown key 'inferance'"),
        ("inference:\n  thread: 2\n", "unknown key 'inference.thread'"),
        ("gradcam:\n  method:\n    name: x\n", "'gradcam.method' must be of type str"),
        ("inference:\n  batch_size: eight\n", "'inference.batch_size' must be of type int"),
        ("inference:\n  batch_size: true\n", "'inference.batch_size' must be of type int"),
        ("inference:\n  batch_size: 2.5\n", "'inference.batch_size' must be of type int"),
        ("inference:\n  threads: 0\n", r"'inference.threads' must lie in \[1, 256\], got 0"),
        ("inference:\n  threads: '4'\n", "'inference.threads' must be of type integer or null"),
        ("inference:\n  max_aspect: wide\n", "'inference.max_aspect' must be of type float"),
        ("preprocessing:\n  image_size: 224\n", "unknown key 'preprocessing'"),
        ("paths:\n  samples: x\n", "unknown key 'paths.samples'"),
        ("gradcam:\n  k: 10\n", r"'gradcam.k' must lie in \[3, 5\], got 10"),
        ("gradcam:\n  iou_threshold: 1\n", r"'gradcam.iou_threshold' must lie in \(0, 1\)"),
        ("paths:\n  model: 3\n", "'paths.model' must be of type str"),
        ("cam: 0.5\n", "'cam' must be a mapping"),
        ("- inference\n- cam\n", "top level must be a mapping"),
        ("inference:\n  batch_size: [2\n", "invalid YAML at line"),
        ("inference:\n\tbatch_size: 2\n", "invalid YAML"),
    ],
    ids=[
        "unknown-section",
        "unknown-key",
        "mapping-for-string",
        "string-for-int",
        "bool-for-int",
        "float-for-int",
        "zero-threads",
        "string-threads",
        "string-for-float",
        "removed-section",
        "removed-key",
        "k-out-of-range",
        "threshold-at-the-open-end",
        "number-for-path",
        "section-not-mapping",
        "top-level-list",
        "unclosed-bracket",
        "tab-indent",
    ],
)
def test_bad_config_raises_config_error_naming_the_key(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert str(path) in str(caught.value)


def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("paths:\n  model: r\xe9sultats.onnx\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(tmp_path / "absent.yaml")


# --- on the command line ------------------------------------------------------------------


def run(*args: object, env: dict | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], env={**CLEAN_ENV, **(env or {})})


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("inference:\n  thread: 2\n", "inference.thread"),
        ("cam:\n  alpha: high\n", "cam.alpha"),
        ("inference: [1, 2\n", "invalid YAML"),
    ],
)
def test_cli_bad_config_exits_2_naming_the_key(tmp_path, text, key):
    path = _write(tmp_path, text)
    result = run("--config", path, "--model", tmp_path / "unused.onnx", tmp_path / "a.png")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert key in lines[0] and str(path) in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_bad_config_from_environment_exits_2(tmp_path):
    path = _write(tmp_path, "inference:\n  batch_size: many\n")
    result = run(
        "--model", tmp_path / "m.onnx", tmp_path / "a.png", env={"BTXRD_CONFIG": str(path)}
    )
    assert result.exit_code == 2
    assert "inference.batch_size" in result.stderr


def test_cli_uses_the_config_model_when_no_flag_is_given(tmp_path):
    configured = tmp_path / "from-config.onnx"
    path = _write(tmp_path, f"paths:\n  model: {configured}\n")
    result = run("--config", path, tmp_path / "a.png")
    assert result.exit_code == 3
    assert str(configured) in result.stderr


def test_cli_flag_beats_the_config_model(tiny_onnx, phantom_images, tmp_path):
    path = _write(tmp_path, f"paths:\n  model: {tmp_path / 'absent.onnx'}\n")
    result = run("--config", path, "--model", tiny_onnx, "--json", phantom_images["gray8_png"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["model"]["file"] == tiny_onnx.name


def test_cli_environment_model_beats_the_config_model(tiny_onnx, phantom_images, tmp_path):
    path = _write(tmp_path, f"paths:\n  model: {tmp_path / 'absent.onnx'}\n")
    result = run(
        "--config",
        path,
        "--json",
        phantom_images["gray8_png"],
        env={"BTXRD_MODEL": str(tiny_onnx)},
    )
    assert result.exit_code == 0, result.stderr


def test_cli_decode_limits_come_from_the_config(tiny_onnx, phantom_images, tmp_path):
    path = _write(tmp_path, "inference:\n  min_side: 500\n")
    image = phantom_images["gray8_png"]
    result = run("--config", path, "--model", tiny_onnx, "--jsonl", image)
    assert result.exit_code == 1
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert "minimum side 500" in record["error"]


def test_cli_cam_folder_comes_from_the_config(tiny_onnx, phantom_images, tmp_path):
    cams = tmp_path / "configured-cams"
    path = _write(tmp_path, f"cam:\n  out: {cams}\n")
    image = phantom_images["gray8_png"]
    result = run("--config", path, "--model", tiny_onnx, "--cam", "--quiet", image)
    assert result.exit_code == 0, result.stderr
    assert [p.name for p in cams.iterdir()] == [f"{image.stem}_cam.png"]
