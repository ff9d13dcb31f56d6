"""Fault: the numbers go non-finite during training (overflow from a learning rate or loss weight far
too large, or a weight corrupted to inf). Training stops at once with NonFiniteLossError naming the
step and the reason (the loss and gradient norm it saw); `ardm train` says so in one line and exits
with 1; the last checkpoint written before the fault is kept as written, loadable and finite.

tests/ardm/test_train.py covers a NaN written into the weights from a logging callback; these inject the
fault through the arithmetic itself, and check the kept checkpoint against the bytes written at its
step and, for the CLI, against an uninterrupted run that stops at that step.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from ardm.checkpoint import load_checkpoint
from ardm.config import ModelConfig
from ardm.data import load_dataset
from ardm.model import build_ardm
from ardm.run import model_spec
from ardm.train import NonFiniteLossError, TrainConfig, train
from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[2]
# `ardm train` on digits with a tiny b = 4 model: 2 checkpoints before a learning rate of 1000 overflows.
TRAIN = ["train", str(ROOT / "configs" / "photos8.yaml"), "--set", "data=digits", "--set", "model.preset=cpu-tiny",
         "--set", "model.branching=4", "--set", "train.batch_size=8", "--set", "train.checkpoint_every=2",
         "--set", "train.log_every=1", "--set", "eval.max_images=16", "--set", "eval.samples_per_image=1",
         "--set", "eval.sample_grid=0"]


def _same(a: object, b: object) -> bool:
    """Equal nested state (dicts, lists, tensors compared exactly)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def _finite(payload: dict) -> bool:
    tensors = [*payload["model"].values(), *payload["ema"].values()]
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


def test_train_command_stops_on_overflow_and_keeps_the_last_checkpoint(tmp_path: Path, capfd) -> None:
    run = tmp_path / "run"
    assert main([*TRAIN, "--set", "train.steps=12", "--set", "train.learning_rate=1000", "--set", f"output={run}"]) == 1
    err = capfd.readouterr().err
    # The one line (the progress bar shares stderr, so look for the message itself).
    stops = re.findall(r"ardm: training stopped: [^\r\n]*", err)
    assert len(stops) == 1, err
    found = re.search(r"non-finite training loss at step (\d+) \(loss=(\S+), grad_norm=(\S+)\); "
                      r"last good checkpoint: (\S+)$", stops[0])
    assert found, stops[0]
    step, loss, grad_norm, kept = int(found[1]), float(found[2]), float(found[3]), found[4]
    assert not (math.isfinite(loss) and math.isfinite(grad_norm))
    last = (step - 1) // 2 * 2  # the last checkpoint step (every 2) before the failing step
    assert last >= 2 and kept == str(run / "checkpoint.pt")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.yaml", "train_log.jsonl"]
    payload = load_checkpoint(kept)
    assert payload["step"] == last and _finite(payload)
    # The same run stopped by its step count at that step wrote the same checkpoint.
    reference = tmp_path / "reference"
    assert main([*TRAIN, "--set", f"train.steps={last}", "--set", "train.learning_rate=1000",
                 "--set", f"output={reference}"]) == 0
    expected = load_checkpoint(reference / "checkpoint.pt")
    for key in ("step", "model", "ema", "optimizer"):
        assert _same(payload[key], expected[key]), key


@pytest.mark.parametrize(
    ("settings", "corrupt_at", "failing_step", "reason"),
    [
        # Adam moves every weight by about 1e20 at once: the next loss is finite, its gradient is not.
        ({"learning_rate": 1e20}, None, 2, r"loss=[0-9.e+]+, grad_norm=inf"),
        # The cross-entropy term (bits summed over the unseen variables / D) times 3e39 exceeds float32 at the
        # first step: nothing to keep yet.
        ({"ce_weight": 3e39}, None, 1, r"loss=inf, grad_norm=\w+"),
        # A weight set to +inf right after the checkpoint of step 2 was written (as a bad update would).
        ({}, 2, 3, r"loss=(nan|inf), grad_norm=\w+"),
    ],
    ids=["gradient-overflows", "loss-overflows-at-once", "weight-corrupted-to-inf"],
)
def test_non_finite_step_stops_training_and_keeps_the_last_checkpoint(
    tmp_path: Path, settings: dict, corrupt_at: int | None, failing_step: int, reason: str
) -> None:
    data = load_dataset("digits", "train")
    torch.manual_seed(0)
    model = build_ardm(model_spec(ModelConfig(preset="cpu-tiny", branching=4), data))
    path = tmp_path / "checkpoint.pt"
    written: dict[int, bytes] = {}  # every checkpoint's bytes as train() wrote them

    def on_checkpoint(saved: Path | None, metrics: dict) -> None:
        written[metrics["step"]] = Path(saved).read_bytes()
        if metrics["step"] == corrupt_at:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = math.inf

    config = TrainConfig(steps=6, batch_size=8, checkpoint_every=1, log_every=1, **settings)
    with pytest.raises(NonFiniteLossError, match=rf"at step {failing_step} \({reason}\)") as stopped:
        train(model, data.images, config, checkpoint_path=path, on_checkpoint=on_checkpoint, progress=False)
    assert sorted(written) == list(range(1, failing_step))
    if written:
        assert str(path) in str(stopped.value)
        assert path.read_bytes() == written[failing_step - 1]
        payload = load_checkpoint(path)
        assert payload["step"] == failing_step - 1 and _finite(payload)
        assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # and no temporary left behind
    else:
        assert str(stopped.value).endswith("last good checkpoint: none") and not path.exists()
