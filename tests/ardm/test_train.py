"""Training loop: exact resume, NaN detection, checkpoints, and real learning on digits."""

import math

import numpy as np
import pytest
import torch

from ardm.checkpoint import CheckpointError, check_same_model, load_checkpoint, load_model
from ardm.evaluate import estimate_nelbo
from ardm.model import ModelSpec, build_ardm
from ardm.networks import get_preset
from ardm.train import NonFiniteLossError, TrainConfig, train

SPEC = ModelSpec(
    shape=(1, 4, 4), num_classes=5, branching=2, parameterization="data",
    network={**get_preset("cpu-tiny").to_dict(), "dropout": 0.1},  # dropout: resume must restore its RNG too
)


def _images(n=40, seed=0):
    return np.random.default_rng(seed).integers(0, 5, (n, 1, 4, 4), dtype=np.uint8)


def _fresh(seed=0):
    torch.manual_seed(seed)
    return build_ardm(SPEC)


def _config(steps, **kw):
    return TrainConfig(steps=steps, batch_size=8, learning_rate=1e-3, ema_decay=0.9, checkpoint_every=3,
                       log_every=2, **kw)


def test_resume_gives_the_same_parameters_as_one_run(tmp_path, capsys):
    straight = train(_fresh(), _images(), _config(7), checkpoint_path=tmp_path / "a.pt", progress=False)
    train(_fresh(), _images(), _config(3), checkpoint_path=tmp_path / "b.pt", progress=False)
    assert capsys.readouterr().err == ""
    # A different initialisation proves that everything comes from the checkpoint.
    resumed = train(_fresh(seed=99), _images(), _config(7), checkpoint_path=tmp_path / "b.pt",
                    resume_from=tmp_path / "b.pt", progress=False)
    assert capsys.readouterr().err == f"resumed from step 3 of 7 (checkpoint {tmp_path / 'b.pt'})\n"
    assert resumed.step == straight.step == 7
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    for a, b in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    saved = load_checkpoint(tmp_path / "b.pt")
    assert saved["step"] == 7 and {"model", "ema", "optimizer", "rng", "model_spec"} <= set(saved)


def test_progress_without_a_terminal_is_one_line_per_logged_window(capsys):
    """stderr is no terminal under capsys: whole lines naming the work, no carriage-return frames."""
    train(_fresh(), _images(), _config(4), progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" bpd=")[0] for line in lines[:2]] == ["train steps: 2/4", "train steps: 4/4"]
    assert lines[2].startswith("train steps: 4/4 done in") and len(lines) == 3


def test_training_changes_with_the_seed(tmp_path):
    a = train(_fresh(), _images(), _config(3), progress=False)
    b = train(_fresh(), _images(), _config(3, seed=1), progress=False)
    assert any(not torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True))


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    model = _fresh()
    ckpt = tmp_path / "c.pt"

    def poison(metrics):
        if metrics["step"] == 4:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match="step 5") as info:
        train(model, _images(), _config(9), checkpoint_path=ckpt, on_log=poison, progress=False)
    assert str(ckpt) in str(info.value)
    good = load_checkpoint(ckpt)
    assert good["step"] == 3
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())


def test_cpu_ignores_mixed_precision_and_compile_with_a_warning():
    with pytest.warns(UserWarning, match="CUDA-only"):
        result = train(_fresh(), _images(), _config(2, mixed_precision=True, compile=True), progress=False)
    assert result.step == 2


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    train(_fresh(), _images(), _config(3), checkpoint_path=tmp_path / "ok.pt", progress=False)
    other = ModelSpec(**{**SPEC.to_dict(), "branching": 5})
    with pytest.raises(CheckpointError, match="another model.*branching"):
        check_same_model(load_checkpoint(tmp_path / "ok.pt"), other, tmp_path / "ok.pt")
    with pytest.raises(CheckpointError, match="another model"):
        train(build_ardm(other), _images(), _config(4), resume_from=tmp_path / "ok.pt", progress=False)
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)


def test_load_model_restores_the_ema_weights(tmp_path):
    result = train(_fresh(), _images(), _config(3), checkpoint_path=tmp_path / "m.pt", progress=False)
    loaded = load_model(tmp_path / "m.pt")
    for a, b in zip(result.ema.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_short_training_on_digits_beats_uniform_by_far(trained_digits):
    """The shared fixture: a cpu-tiny OA-ARDM trained with `train` for 150 steps, EMA weights."""
    model, test_images = trained_digits
    est = estimate_nelbo(model, test_images, samples_per_image=2, seed=0)
    assert est.mean < 0.75 * math.log2(17), est  # uniform is log2 17 = 4.09 bpd
