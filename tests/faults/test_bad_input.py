"""Fault: bad input. A catalogue of malformed sweep files and `ardm` calls, each of which must end
with one line on stderr naming the file (or argument) and the field, exit code 2, and nothing
started or written: no Ray, no storage folder, no mlflow.db, no output folder.

Every case runs through `orchestrator.cli.main` with the working directory in the test's own
tmp_path, which afterwards must hold exactly what the test put there. Sweep files run with
--dry-run (which reads the data and checks the budgets against each trial's model, as the driver
does before Ray starts), so that a case which wrongly validated would list trials, not start them.

Each failing call runs in a fresh process, a fork of a server process that has imported the CLI but
never touched Ray: this test process may hold the session's Ray cluster (when a Ray test ran first),
so "no Ray started" can only be checked where nothing else could have started it.
"""

from __future__ import annotations

import copy
import hashlib
import math
import multiprocessing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ardm.checkpoint import load_checkpoint
from ardm.config import ConfigError, ModelConfig
from ardm.data import convert_dataset, load_dataset
from ardm.model import build_ardm
from ardm.run import model_spec
from ardm.train import TrainConfig, train
from orchestrator.cli import main
from orchestrator.config import check_budgets_fit, check_data, load_sweep
from tests.support.fresh_cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once

# A valid sweep: digits (1x8x8, K = 17) with branching 4 gives S = 3 stages and S*D = 192 steps,
# so budgets must lie in 3..192. Each case below breaks one thing in it.
BASE = {
    "sweep": {"name": "faults"},
    "data": {"spec": "digits"},
    "model": {"preset": "cpu-tiny", "branching": 4},
    "train": {"steps": 4, "batch_size": 8, "checkpoint_every": 2},
    "postprocess": {"budgets": [3, 20, "full"]},
}
DELETE = object()  # an edit's value that removes the field


@dataclass(frozen=True)
class SweepCase:
    """A sweep file: BASE with `edits` ({"a.b": value}) applied, or `text` verbatim (may be bytes);
    `args` are extra CLI arguments. The error line must read "FILE: " + every one of `expected`.
    `setup(tmp_path)` prepares what the file points at; "{tmp}" in values is tmp_path."""

    edits: dict = field(default_factory=dict)
    expected: tuple[str, ...] = ()
    text: str | bytes | None = None
    args: tuple[str, ...] = ()
    setup: Callable[[Path], None] | None = None


def _corrupt_shards(tmp_path: Path, verify: bool = True) -> None:
    """Real Parquet shards of digits, with the test shard cut in half."""
    convert_dataset("digits", str(tmp_path / "shards"), rows_per_shard=1000)
    shard = tmp_path / "shards" / "test-00000.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


SWEEP_CASES = {
    # Structure and types.
    "unknown-section": SweepCase({"sweeep": {"name": "x"}}, ("sweeep: unknown field; did you mean sweep?",)),
    "unknown-key": SweepCase({"train.stepz": 3}, ("train.stepz: unknown field; did you mean train.steps?",)),
    "unknown-key-far-from-any": SweepCase({"train.lr": 3}, ("train.lr: unknown field; expected one of [",
                                                            "'learning_rate'")),
    "string-for-int": SweepCase({"train.steps": "ten"}, ("train.steps: expected an integer, got 'ten'",)),
    "bool-for-int": SweepCase({"train.batch_size": True}, ("train.batch_size: expected an integer",)),
    "list-for-mapping": SweepCase({"model": [4, 16]}, ("model: expected a mapping",)),
    "string-for-list": SweepCase({"postprocess.budgets": "4,8"}, ("postprocess.budgets: expected a list",)),
    "missing-section": SweepCase({"data": DELETE}, ("data: required field missing",)),
    "unknown-preset": SweepCase({"model.preset": "huge"}, ("model: preset must be one of",)),
    "unknown-network-field": SweepCase({"model.network": {"chanels": 8}},
                                       ("model: network.chanels: unknown field; did you mean network.channels?",)),
    # Search spaces.
    "space-unknown-kind": SweepCase({"model.branching": {"gird": [2, 4]}},
                                    ("model.branching: unknown search space gird; did you mean grid?",)),
    "space-unknown-kind-far-from-any": SweepCase({"train.learning_rate": {"range": [0.1, 1]}},
                                                 ("train.learning_rate: unknown search space range; expected one of",
                                                  "'grid'", "'loguniform'")),
    "space-two-kinds": SweepCase({"model.branching": {"grid": [2], "choice": [4]}},
                                 ("model.branching: expected a value or one search space", "got choice, grid")),
    "space-empty-grid": SweepCase({"model.branching": {"grid": []}}, ("model.branching.grid: expected a non-empty",)),
    "space-not-a-list": SweepCase({"train.learning_rate": {"choice": 0.1}},
                                  ("train.learning_rate.choice: expected a non-empty list",)),
    "uniform-low-above-high": SweepCase({"train.learning_rate": {"uniform": [0.1, 0.01]}},
                                        ("train.learning_rate.uniform: expected", "low < high")),
    "loguniform-from-zero": SweepCase({"train.learning_rate": {"loguniform": [0, 0.1]}},
                                      ("train.learning_rate.loguniform: expected 0 < low",)),
    "grid-candidate-wrong-type": SweepCase({"model.branching": {"grid": [4, "x"]}},
                                           ("model.branching: expected an integer, got 'x'",)),
    # Impossible values and combinations.
    "branching-1": SweepCase({"model.branching": 1}, ("model: branching must be >= 2, got 1",)),
    "branching-1-in-grid": SweepCase({"model.branching": {"grid": [4, 1]}}, ("model: branching must be >= 2",)),
    "negative-steps": SweepCase({"train.steps": -5}, ("train: steps must be >= 1, got -5",)),
    "batch-size-0": SweepCase({"train.batch_size": 0}, ("train: batch_size must be >= 1, got 0",)),
    "learning-rate-inf": SweepCase({"train.learning_rate": math.inf}, ("train: learning_rate must be a finite",)),
    "ce-weight-nan": SweepCase({"train.ce_weight": math.nan}, ("train: ce_weight must be a finite",)),
    "negative-seed": SweepCase({"sweep.seed": -1}, ("sweep: seed must be >= 0",)),
    "name-with-slash": SweepCase({"sweep.name": "gone/sweep"}, ("sweep: name must be", "'gone/sweep'")),
    "workers-0": SweepCase({"resources": {"workers_per_trial": 0}}, ("resources: workers_per_trial must be >= 1",)),
    "cpus-nan": SweepCase({"resources": {"cpus_per_worker": math.nan}}, ("resources: cpus_per_worker must be > 0",)),
    "failures-below-unlimited": SweepCase({"failure": {"trial_max_failures": -2}}, ("failure: max failures",)),
    "budget-0": SweepCase({"postprocess.budgets": [0, 8]}, ("postprocess: budgets: each must be an integer >= 1",)),
    "budget-word": SweepCase({"postprocess.budgets": ["all"]}, ("postprocess: budgets:", "'all'")),
    "budget-above-steps": SweepCase({"postprocess.budgets": [4, 193]},
                                    ("postprocess.budgets: [193] outside 3..192", "model.branching=4")),
    "budget-per-stage-word": SweepCase({"postprocess.budgets": ["x/stage"]}, ("postprocess: budgets:", "'x/stage'")),
    "budget-per-stage-above-d": SweepCase({"postprocess.budgets": ["65/stage"]},
                                          ("postprocess.budgets: budget 65/stage: more than D=64 calls per stage",)),
    "budget-below-stages": SweepCase({"postprocess.budgets": [2, "full"]},
                                     ("postprocess.budgets: [2] outside 3..192",)),
    "budget-above-steps-of-one-trial": SweepCase({"model.branching": {"grid": [4, 17]}, "postprocess.budgets": [100]},
                                                 ("postprocess.budgets: [100] outside 1..64", "model.branching=17")),
    # Data.
    "photos-patch-size": SweepCase({"data.spec": "photos:9"},
                                   ("photos:9: patch size 9 is not available (valid: photos:8, photos:16",)),
    "photos-patch-size-shorthand": SweepCase({"data": "photos:9"}, ("data: spec: photos:9: patch size 9 is not",)),
    "unknown-data-kind": SweepCase({"data.spec": "nosuch:x"}, ("data: spec: nosuch:x: unknown dataset kind",)),
    "missing-cifar": SweepCase({"data.spec": "cifar10:{tmp}/nope"}, ("data.spec: ", "nope: no such file")),
    "missing-npy": SweepCase({"data.spec": "npy:{tmp}/nope.npy"}, ("data.spec: ", "nope.npy")),
    "corrupt-parquet-shard": SweepCase({"data.spec": "parquet:{tmp}/shards"},
                                       ("data.spec: ", "test-00000.parquet: sha256 mismatch"), setup=_corrupt_shards),
    "unreadable-parquet-shard": SweepCase({"data.spec": "parquet:{tmp}/shards?verify=0"},
                                          ("data.spec: ", "test-00000.parquet: not a readable shard"),
                                          setup=_corrupt_shards),
    "missing-parquet-manifest": SweepCase({"data.spec": "parquet:{tmp}"}, ("data.spec: ", "no manifest")),
    # The file itself.
    "invalid-yaml": SweepCase(text="sweep: [unclosed\n", expected=("not valid YAML (line 2, column 1",)),
    "empty-file": SweepCase(text="", expected=("empty file",)),
    "top-level-list": SweepCase(text="- sweep\n- data\n", expected=("expected a mapping of sections", "list")),
    "binary-file": SweepCase(text=b"\x80\x04\x95\x00PK\xff", expected=("not a UTF-8 text file",)),
    # --set overrides.
    "set-without-value": SweepCase(args=("--set", "train.steps"), expected=("--set train.steps: expected KEY.PATH",)),
    "set-through-a-scalar": SweepCase(args=("--set", "train.steps.x=1"), expected=("steps is not a section",)),
    "set-unknown-section": SweepCase(args=("--set", "trian.steps=3"),
                                     expected=("--set trian.steps=3: unknown field trian; did you mean train?",)),
    "set-unknown-field": SweepCase(args=("--set", "train.step=10"), expected=(
        "--set train.step=10: unknown field train.step; did you mean train.steps?",)),
    "set-unknown-space": SweepCase(args=("--set", "model.branching={gird: [2, 4]}"),
                                   expected=("model.branching: unknown search space gird; did you mean grid?",)),
    "set-bad-space": SweepCase(args=("--set", "model.branching={grid: [4, 1]}"),
                               expected=("model: branching must be >= 2",)),
}


def _sweep_text(case: SweepCase, tmp_path: Path) -> str | bytes:
    if case.text is not None:
        return case.text
    raw = copy.deepcopy(BASE)
    for dotted, value in case.edits.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value.replace("{tmp}", str(tmp_path)) if isinstance(value, str) else value
    return yaml.safe_dump(raw)


def _snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` with the hash of its content ("dir" for folders)."""
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def fresh() -> Iterator[multiprocessing.pool.Pool]:
    """Runs each call (fresh_cli.run_cli) in a new process forked from a forkserver: an interpreter
    started anew, which imports the CLI (and torch) once, so a call costs a fork rather than an
    interpreter's start-up. (This test process has only one forkserver: had it started earlier,
    without the CLI imported, calls are slower but just as fresh.)"""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["orchestrator.cli"])  # an installed module: the forkserver lacks the tests' path
    with context.Pool(1, maxtasksperchild=1) as pool:
        yield pool


def _fails_cleanly(argv: list[str], tmp_path: Path, fresh: multiprocessing.pool.Pool,
                   env: dict[str, str] | None = None) -> str:
    """Run `ardm ARGV` in tmp_path, in a fresh process (with `env` added to its environment); assert
    exit code 2, one line on stderr (returned without its "ardm: error: " prefix), nothing on
    stdout, nothing written or started."""
    before = _snapshot(tmp_path)
    code, out, err, ray_started = fresh.apply(run_cli, (argv, str(tmp_path), env))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ardm: error: "), err
    assert out == ""
    assert _snapshot(tmp_path) == before, "the failed call wrote into the working directory"
    assert not ray_started, "the failed call started Ray"
    return lines[0].removeprefix("ardm: error: ")


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each case in its own empty working directory (default storage and mlflow.db go there)."""
    monkeypatch.chdir(tmp_path)


def test_the_base_sweep_is_valid(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The control: what every case breaks passes --dry-run, and the dry run writes nothing."""
    path = tmp_path / "base.yaml"
    path.write_text(_sweep_text(SweepCase(), tmp_path))
    before = _snapshot(tmp_path)
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert "1 trial(s)" in capfd.readouterr().out
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("case", SWEEP_CASES.values(), ids=SWEEP_CASES.keys())
def test_bad_sweep_file(case: SweepCase, tmp_path: Path, fresh: multiprocessing.pool.Pool) -> None:
    if case.setup is not None:
        case.setup(tmp_path)
    path = tmp_path / "bad.yaml"
    text = _sweep_text(case, tmp_path)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    line = _fails_cleanly(["sweep", str(path), "--dry-run", *case.args], tmp_path, fresh)
    assert line.startswith(f"{path}: ")
    for fragment in case.expected:
        assert fragment.replace("{tmp}", str(tmp_path)) in line


@pytest.mark.parametrize("data", ["photos:8", {"grid": ["digits", "photos:8"]}], ids=["spec", "space-of-specs"])
def test_sweep_data_takes_a_spec_as_run_configs_do(data: object, tmp_path: Path) -> None:
    """`data: SPEC` is short for `data: {spec: SPEC}`, in a file, a search space and a --set."""
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump({**BASE, "data": data}))
    sweep = load_sweep(path)
    assert sweep.base.data.spec in ("photos:8", "digits")
    assert sweep.raw["data"] == {"spec": data}
    assert load_sweep(path, ["data=photos:16"]).base.data.spec == "photos:16"
    assert load_sweep(path, ["data.spec=photos:32"]).base.data.spec == "photos:32"


def test_budget_check_covers_every_trial(tmp_path: Path) -> None:
    """check_budgets_fit (which the sweep driver runs before Ray starts) on a grid where only one
    trial's model is too small for a budget, and on the same grid with budgets that fit all."""
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**BASE, "model": {"preset": "cpu-tiny", "branching": {"grid": [4, 17]}},
                                    "postprocess": {"budgets": {"grid": [[8], [3, 100]]}}}))
    sweep = load_sweep(path)
    shape, num_classes = check_data(sweep)
    assert (shape, num_classes) == ((1, 8, 8), 17)
    with pytest.raises(ConfigError, match=r"postprocess.budgets: \[100\] outside 1..64 .*model.branching=17"):
        check_budgets_fit(sweep, shape, num_classes)
    check_budgets_fit(load_sweep(path, ["postprocess.budgets=[3, 64]"]), shape, num_classes)
    disabled = load_sweep(path, ["postprocess.enabled=false"])  # nothing to post-process, nothing to check
    check_budgets_fit(disabled, shape, num_classes)


def test_unreachable_tracking_fails_before_ray(tmp_path: Path, fresh: multiprocessing.pool.Pool) -> None:
    """Without --dry-run: the sweep really starts, and must stop at the tracking check."""
    path = tmp_path / "offline.yaml"
    path.write_text(yaml.safe_dump({**BASE, "tracking": {"uri": UNREACHABLE}}))
    line = _fails_cleanly(["sweep", str(path)], tmp_path, fresh)
    assert UNREACHABLE in line and "unreachable" in line


def test_every_command_takes_the_tracking_uri_from_the_environment(
    tmp_path: Path, fresh: multiprocessing.pool.Pool
) -> None:
    """MLFLOW_TRACKING_URI is used when neither --tracking-uri nor the sweep's tracking.uri is given
    (here it names a server that is down, so each command must fail on it); either one wins over it."""
    from_env, from_file = f"{UNREACHABLE}/env", f"{UNREACHABLE}/file"
    env = {"MLFLOW_TRACKING_URI": from_env}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(BASE))
    for argv in (["sweep", str(path)], ["report", "faults"], ["postprocess", "0123abcd"],
                 ["evaluate", "--checkpoint", "models:/ardm/1", "--data", "digits"]):
        assert _fails_cleanly(argv, tmp_path, fresh, env).startswith(f"{from_env}: tracking server unreachable")
    path.write_text(yaml.safe_dump({**BASE, "tracking": {"uri": from_file}}))
    line = _fails_cleanly(["sweep", str(path)], tmp_path, fresh, env)
    assert line.startswith(f"{path}: tracking.uri: {from_file}: ")
    for command in (["report", "faults"], ["postprocess", "0123abcd"]):
        line = _fails_cleanly([*command, "--tracking-uri", from_file], tmp_path, fresh, env)
        assert line.startswith(f"{from_file}: tracking server unreachable")


# ---- Other `ardm` calls ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint (one training step) of a cpu-tiny b = 4 model on digits: 3 stages, 192 steps."""
    data = load_dataset("digits", "train")
    torch.manual_seed(0)
    model = build_ardm(model_spec(ModelConfig(preset="cpu-tiny", branching=4), data))
    path = tmp_path_factory.mktemp("assets") / "checkpoint.pt"
    train(model, data.images, TrainConfig(steps=1, batch_size=8), checkpoint_path=path, extra={"data": "digits"},
          progress=False)
    return path


def _truncated(checkpoint: Path, tmp_path: Path) -> str:
    path = tmp_path / "truncated.pt"
    path.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    return str(path)


def _foreign(checkpoint: Path, tmp_path: Path) -> str:
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    return str(path)


def _yaml_as_checkpoint(checkpoint: Path, tmp_path: Path) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(BASE))
    return str(path)


def _png(checkpoint: Path, tmp_path: Path) -> str:
    path = tmp_path / "samples.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    return str(path)


def _pickled_object(checkpoint: Path, tmp_path: Path) -> str:
    """A torch.save file holding a Python object that weights-only loading refuses."""
    path = tmp_path / "object.pt"
    torch.save({"where": Path("x")}, path)
    return str(path)


def _run_folder(checkpoint: Path, tmp_path: Path) -> str:
    """An `ardm train` output folder: checkpoint.pt and the files around it."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(checkpoint.read_bytes())
    (tmp_path / "run" / "metrics.json").write_text("{}")
    return str(tmp_path / "run")


def _ray_train_folder(checkpoint: Path, tmp_path: Path) -> str:
    """A Ray Train run folder: one checkpoint_<timestamp>/checkpoint.pt per report."""
    for stamp in ("2026-01-01_10-00-00.000001", "2026-01-01_10-05-00.000002"):
        (tmp_path / "trial" / f"checkpoint_{stamp}").mkdir(parents=True)
        (tmp_path / "trial" / f"checkpoint_{stamp}" / "checkpoint.pt").write_bytes(checkpoint.read_bytes())
    return str(tmp_path / "trial")


def _other_model_run(checkpoint: Path, tmp_path: Path) -> str:
    """A run folder whose checkpoint.pt is the b = 4 model; the run config asks for b = 17."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(checkpoint.read_bytes())
    return str(tmp_path / "run")


def _shards(checkpoint: Path, tmp_path: Path) -> str:
    _corrupt_shards(tmp_path)
    return str(tmp_path / "shards")


def _npy(checkpoint: Path, tmp_path: Path) -> str:
    """An array with a value above the K it declares (k=4)."""
    np.save(tmp_path / "images.npy", np.full((10, 4, 4), 7, np.uint8))
    return str(tmp_path / "images.npy")


def _digits_npy(checkpoint: Path, tmp_path: Path) -> str:
    """The digits (values 0..16) as a .npy, which reads as K = 256 unless its spec says ?k=17."""
    np.save(tmp_path / "digits.npy", load_dataset("digits", "test").images)
    return str(tmp_path / "digits.npy")


# Run config overrides for `ardm train` on digits (the shipped config, made tiny).
TRAIN = ["--set", "data=digits", "--set", "model.preset=cpu-tiny", "--set", "train.steps=2"]


@dataclass(frozen=True)
class CallCase:
    """`ardm ARGV`: "{ckpt}" is the shared checkpoint, "{tmp}" tmp_path, "{made}" what `make`
    (if any) prepared in tmp_path from the checkpoint; the error line must hold every `expected`."""

    argv: tuple[str, ...]
    expected: tuple[str, ...]
    make: Callable[[Path, Path], str] | None = None


CALL_CASES = {
    "evaluate-missing-checkpoint": CallCase(("evaluate", "--checkpoint", "{tmp}/none.pt", "--data", "digits"),
                                            ("{tmp}/none.pt: checkpoint file not found",)),
    "evaluate-truncated-checkpoint": CallCase(("evaluate", "--checkpoint", "{made}", "--data", "digits"),
                                              ("{made}: not a readable checkpoint",), _truncated),
    "evaluate-yaml-as-checkpoint": CallCase(("evaluate", "--checkpoint", "{made}", "--data", "digits"),
                                            ("{made}: not an ARDM checkpoint (not a file written by torch.save)",),
                                            _yaml_as_checkpoint),
    "sample-png-as-checkpoint": CallCase(("sample", "--checkpoint", "{made}", "{tmp}/grid.png"),
                                         ("{made}: not an ARDM checkpoint (not a file written by torch.save)",), _png),
    "sample-pickled-object-as-checkpoint": CallCase(("sample", "--checkpoint", "{made}", "{tmp}/grid.png"),
                                                    ("{made}: not an ARDM checkpoint (it holds objects other",),
                                                    _pickled_object),
    "sample-run-folder-as-checkpoint": CallCase(("sample", "--checkpoint", "{made}", "{tmp}/grid.png"),
                                                ("{made}: is a folder, not a checkpoint file; "
                                                 "pass the file {made}/checkpoint.pt",), _run_folder),
    "evaluate-ray-folder-as-checkpoint": CallCase(
        ("evaluate", "--checkpoint", "{made}", "--data", "digits"),
        ("{made}: is a folder, not a checkpoint file; pass the file {made}/checkpoint_2026-01-01_10-05-00.000002/"
         "checkpoint.pt",), _ray_train_folder),
    "evaluate-empty-folder-as-checkpoint": CallCase(("evaluate", "--checkpoint", "{tmp}", "--data", "digits"),
                                                    ("{tmp}: is a folder, not a checkpoint file; it holds no",)),
    "sample-foreign-checkpoint": CallCase(("sample", "--checkpoint", "{made}", "{tmp}/grid.png"),
                                          ("{made}: not an ARDM checkpoint",), _foreign),
    "evaluate-corrupt-parquet-shard": CallCase(("evaluate", "--checkpoint", "{ckpt}", "--data", "parquet:{made}"),
                                               ("{made}/test-00000.parquet: sha256 mismatch",), _shards),
    "evaluate-missing-npy": CallCase(("evaluate", "--checkpoint", "{ckpt}", "--data", "npy:{tmp}/nope.npy"),
                                     ("{tmp}/nope.npy",)),
    "evaluate-values-above-k": CallCase(("evaluate", "--checkpoint", "{ckpt}", "--data", "npy:{made}?k=4"),
                                        ("{made}", "value 7 >= K=4"), _npy),
    "evaluate-data-of-another-k": CallCase(("evaluate", "--checkpoint", "{ckpt}", "--data", "npy:{made}"),
                                           ("npy:{made}: images are 1x8x8 with K=256", "model is for 1x8x8 with K=17",
                                            "say so in its spec with ?k=17"), _digits_npy),
    "convert-missing-cifar": CallCase(("convert", "cifar10:{tmp}/nope", "{tmp}/out"), ("{tmp}/nope: no such file",)),
    "convert-rows-per-shard-0": CallCase(("convert", "digits", "{tmp}/out", "--rows-per-shard", "0"),
                                         ("{tmp}/out: rows_per_shard must be >= 1",)),
    "train-set-through-a-scalar": CallCase(("train", str(ROOT / "configs" / "photos8.yaml"), "--set",
                                            "model.branching.x=1"), ("photos8.yaml: --set", "not a section")),
    "train-unknown-field": CallCase(("train", str(ROOT / "configs" / "photos8.yaml"), "--set", "train.lr=0.1"),
                                    ("photos8.yaml: --set train.lr=0.1: unknown field train.lr; expected one of",
                                     "'learning_rate'")),
    "train-mistyped-field": CallCase(("train", str(ROOT / "configs" / "photos8.yaml"), "--set", "train.step=10"),
                                     ("--set train.step=10: unknown field train.step; did you mean train.steps?",)),
    "train-checkpoint-of-another-model": CallCase(
        ("train", str(ROOT / "configs" / "photos8.yaml"), *TRAIN, "--set", "model.branching=17",
         "--set", "output={made}"), ("{made}/checkpoint.pt: checkpoint is for another model", "branching",
                                     "start afresh with --fresh (overwrites it) or use another output folder"),
        _other_model_run),
    "train-missing-data": CallCase(
        ("train", str(ROOT / "configs" / "photos8.yaml"), *TRAIN, "--set", "data=npy:{tmp}/nope.npy",
         "--set", "output={tmp}/run"), ("{tmp}/nope.npy",)),
    "postprocess-budget-0": CallCase(("postprocess", "{ckpt}", "--budgets", "0", "--data", "digits",
                                      "--out", "{tmp}/pp"), ("budgets: each must be an integer >= 1",)),
    "postprocess-budget-above-steps": CallCase(("postprocess", "{ckpt}", "--budgets", "8,193", "--data", "digits",
                                                "--out", "{tmp}/pp"),
                                               ("{ckpt}: postprocess.budgets: [193] outside 3..192",)),
    "postprocess-tracking-unreachable": CallCase(("postprocess", "0123abcd", "--tracking-uri", UNREACHABLE),
                                                 (f"{UNREACHABLE}: tracking server unreachable",)),
    "report-tracking-uri-a-database-path": CallCase(
        ("report", "sweep", "--tracking-uri", "{tmp}/mlflow.db"),
        ("{tmp}/mlflow.db: MLflow 3 refuses the file store; use a database, e.g. sqlite:///{tmp}/mlflow.db",)),
    "report-no-store-here": CallCase(("report", "sweep"), (
        "{tmp}/mlflow.db: no MLflow store there (give --tracking-uri, or set MLFLOW_TRACKING_URI)",)),
    "report-gone-sweep-tracking-unreachable": CallCase(("report", "gone/sweep", "--tracking-uri", UNREACHABLE),
                                                       (f"{UNREACHABLE}: tracking server unreachable",)),
}


@pytest.mark.parametrize("case", CALL_CASES.values(), ids=CALL_CASES.keys())
def test_bad_call(case: CallCase, checkpoint: Path, tmp_path: Path, fresh: multiprocessing.pool.Pool) -> None:
    made = case.make(checkpoint, tmp_path) if case.make is not None else ""

    def fill(text: str) -> str:
        return text.replace("{ckpt}", str(checkpoint)).replace("{made}", made).replace("{tmp}", str(tmp_path))

    kept = checkpoint.read_bytes()
    line = _fails_cleanly([fill(a) for a in case.argv], tmp_path, fresh)
    for fragment in case.expected:
        assert fill(fragment) in line
    assert "weights_only" not in line  # torch's advice to load unsafely must not reach the user
    assert checkpoint.read_bytes() == kept and load_checkpoint(checkpoint)["step"] == 1

