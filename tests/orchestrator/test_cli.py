"""The `ardm` command line and run configs: end to end on digits, and one-line errors."""

import argparse
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ardm.config import ConfigError, EvalConfig, build, load_config
from orchestrator.cli import main, parser
from orchestrator.config import PostprocessSection
from orchestrator.options import field_values

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "data=digits", "--set", "model.preset=cpu-tiny", "--set", "train.steps=6",
        "--set", "train.batch_size=8", "--set", "train.checkpoint_every=3", "--set", "eval.max_images=20",
        "--set", "eval.sample_grid=4", "--set", "model.branching=4"]


def test_shipped_config_validates():
    config = load_config(ROOT / "configs" / "photos8.yaml")
    assert config.data == "photos:8" and config.model.branching == 4
    assert config.model.network_config().channels > 0


def test_train_evaluate_sample_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(ROOT / "configs" / "photos8.yaml"), *TINY, "--set", f"output={out}"]) == 0
    captured = capsys.readouterr()
    line = captured.out
    assert "digits" in line and "test" in line and "bpd" in line
    assert "train steps: 6/6 done in" in captured.err and "negative ELBO of 20 test images: 1/1 done" in captured.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["generation_steps"] == 3 * 64  # K=17, b=4: S=3, D=64
    assert (out / "checkpoint.pt").is_file() and (out / "samples.png").is_file()
    assert len((out / "train_log.jsonl").read_text().splitlines()) >= 1
    # Running again resumes the finished run instead of training from scratch, and says so.
    assert main(["train", str(ROOT / "configs" / "photos8.yaml"), *TINY, "--set", f"output={out}", "--quiet"]) == 0
    assert capsys.readouterr().err == f"resumed from step 6 of 6 (checkpoint {out / 'checkpoint.pt'})\n"
    assert json.loads((out / "metrics.json").read_text())["train_bpd"] == metrics["train_bpd"]
    ckpt = str(out / "checkpoint.pt")
    assert main(["evaluate", "--checkpoint", ckpt, "--data", "digits", "--max-images", "10"]) == 0
    assert "bpd over 10 images" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", ckpt, "--num", "2", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()
    # A grid is full: --num is rounded up, with the reason. Its last row is real test images of the
    # data the checkpoint trained on (digits), unless --data none.
    assert main(["sample", "--checkpoint", ckpt, "--num", "3", "--quiet", str(tmp_path / "r.png")]) == 0
    assert "drawing 4 samples, not 3: a full grid of 2 x 2" in capsys.readouterr().out
    no_row = ["--data", "none", "--quiet", str(tmp_path / "n.png")]
    assert main(["sample", "--checkpoint", ckpt, "--num", "4", *no_row]) == 0
    from PIL import Image

    with_data, without = Image.open(tmp_path / "r.png").size, Image.open(tmp_path / "n.png").size
    assert with_data[0] == without[0] and with_data[1] > without[1] + 64  # one more row of 64-pixel tiles


def test_convert_writes_parquet_shards(tmp_path, capsys):
    assert main(["convert", "digits", str(tmp_path / "pq"), "--rows-per-shard", "500"]) == 0
    assert (tmp_path / "pq" / "manifest.json").is_file()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--data", f"parquet:{tmp_path}/pq"]) == 2


@pytest.mark.parametrize(
    ("yaml_text", "sets", "expected"),
    [
        ("data: digits\noutput: o\nmodel: {branching: 1}\n", [], "model: branching must be >= 2"),
        ("data: digits\noutput: o\ntrain: {steps: ten}\n", [], "train.steps: expected an integer"),
        ("data: digits\noutput: o\ntrain: {stepz: 3}\n", [], "train.stepz: unknown field; did you mean train.steps?"),
        ("data: digits\noutput: o\nmodel: {preset: huge}\n", [], "preset must be one of"),
        ("data: digits\noutput: o\nmodel: {network: {channels: 30, groups: 8}}\n", [], "groups=8 must divide"),
        ("output: o\n", [], "data: required field missing"),
        ("data: digits\noutput: o\n", ["train.lr"], "expected KEY.PATH=VALUE"),
        ("data: [unclosed\n", [], "not valid YAML"),
        ("data: nosuch:thing\noutput: o\n", [], "data: nosuch"),
    ],
)
def test_bad_configs_fail_with_one_line_naming_file_and_field(tmp_path, capsys, yaml_text, sets, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    args = ["train", str(path), *sum((["--set", s] for s in sets), [])]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err
    assert expected in err


def test_config_error_names_the_file():
    with pytest.raises(ConfigError, match="missing.yaml: file not found"):
        load_config("missing.yaml")


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("ardm")
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "train" in result.stdout and "evaluate" in result.stdout


def _commands() -> dict[str, argparse.ArgumentParser]:
    (commands,) = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def test_every_option_of_every_command_says_what_it_is():
    commands = _commands()
    assert {"train", "evaluate", "sample", "budgets", "sweep", "postprocess", "report", "runs", "compress",
            "decompress", "sync", "submit", "install-launcher", "convert"} <= set(commands)
    missing = [f"{name} {'/'.join(action.option_strings) or action.dest}"
               for name, command in commands.items() for action in command._actions
               if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()]
    assert missing == []


def test_every_command_returns_an_exit_code():
    for name, command in _commands().items():
        func = command.get_default("func")
        assert inspect.signature(func).return_annotation in (int, "int"), name


def test_config_backed_options_default_to_their_fields():
    """The defaults are the dataclasses' (each written once), and --help shows them."""
    settings = build(PostprocessSection, field_values(parser().parse_args(["postprocess", "RUN"]), PostprocessSection))
    assert settings == PostprocessSection()
    evaluate = parser().parse_args(["evaluate", "--checkpoint", "c.pt", "--data", "digits"])
    assert (evaluate.samples_per_image, evaluate.batch_size, evaluate.max_images) == (
        EvalConfig.samples_per_image, EvalConfig.batch_size, EvalConfig.max_images)
    budgets = parser().parse_args(["budgets", "--checkpoint", "c.pt", "--data", "digits", "--out", "o"])
    assert budgets.table_samples_per_step == PostprocessSection.table_samples_per_step and budgets.sort_decreasing
    assert budgets.sample_grid == PostprocessSection.sample_grid and budgets.budgets == PostprocessSection.budgets
    shown = " ".join(_commands()["evaluate"].format_help().split())
    assert f"--batch-size BATCH_SIZE images per batch of network calls (default: {EvalConfig.batch_size})" in shown
    assert "--quiet no progress" in shown and "(default: False)" not in shown
    shown = " ".join(_commands()["budgets"].format_help().split())
    assert "(default: full)" in shown and "--samples-per-step SAMPLES_PER_STEP" in shown
