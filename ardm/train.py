"""The training loop: Adam, grad-norm clipping, EMA, checkpoints, exact resume, NaN detection.

`train` runs standalone (one process) and is the function each Ray Train worker calls: the
caller passes its data shard, a wrapper for DDP, and callbacks for metrics and checkpoints.

Randomness (data order, generation orders, steps, dropout) is a pure function of
(seed, rank, step): each step re-seeds its own generators. A resumed run therefore needs only the
step counter to continue exactly where it stopped, on every rank, without saving per-rank states.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ardm.checkpoint import check_same_model, load_checkpoint, save_checkpoint
from ardm.model import ARDM
from ardm.objective import training_loss
from ardm.progress import note
from ardm.progress import progress as progress_bar


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. learning_rate is Adam's; grad_clip is the max global grad norm;
    ce_weight scales the auxiliary cross-entropy, -log2 p summed over the not-yet-generated variables / D
    (ardm.objective.ardm_loss; the authors use 0.001 for images)."""

    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 1e-4
    grad_clip: float = 100.0
    ema_decay: float = 0.9999
    ce_weight: float = 0.001
    stratified: bool = True
    checkpoint_every: int = 500
    log_every: int = 50
    seed: int = 0
    mixed_precision: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        # math.isfinite as well: YAML reads .inf and .nan as floats, and either ruins the first step.
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip}")
        if not (self.ce_weight >= 0 and math.isfinite(self.ce_weight)):
            raise ValueError(f"ce_weight must be a finite number >= 0, got {self.ce_weight}")
        if self.seed < 0:  # numpy's SeedSequence refuses negative seeds, but only at the first step
            raise ValueError(f"seed must be >= 0, got {self.seed}")


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm became NaN/inf at `step`; `checkpoint` (a path, or "none") is the last
    good one. Its fields are its args, so it pickles across processes (a Ray worker's error)."""

    def __init__(self, step: int, loss: float, grad_norm: float, checkpoint: str) -> None:
        super().__init__(step, loss, grad_norm, checkpoint)
        self.step, self.loss, self.grad_norm, self.checkpoint = step, loss, grad_norm, checkpoint

    def __str__(self) -> str:
        return (f"non-finite training loss at step {self.step} (loss={self.loss}, grad_norm={self.grad_norm}); "
                f"last good checkpoint: {self.checkpoint}")

    def kept_at(self, checkpoint: str) -> NonFiniteLossError:
        """The same error, naming where its last good checkpoint was kept (a worker's scratch copy is gone)."""
        return NonFiniteLossError(self.step, self.loss, self.grad_norm, checkpoint)


@dataclass
class TrainResult:
    """What a finished (or resumed-to-the-end) run returns; ema is the EMA copy of the model."""

    model: ARDM
    ema: ARDM
    step: int
    metrics: dict


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed for one (run seed, worker rank, step) triple."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class _Batches:
    """Batch indices as a function of the step: epoch e is a permutation drawn from (seed, rank, e)."""

    def __init__(self, num_examples: int, batch_size: int, seed: int, rank: int) -> None:
        self.n, self.batch, self.seed, self.rank = num_examples, batch_size, seed, rank
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, self.rank, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def indices(self, step: int) -> np.ndarray:
        flat = np.arange(step * self.batch, (step + 1) * self.batch)
        return np.array([self._perm(int(q) // self.n)[int(q) % self.n] for q in flat])


def _stop_if_non_finite(seen: np.ndarray, first_step: int, checkpoint_path: str | Path | None) -> None:
    """Raises NonFiniteLossError naming the first step whose loss or gradient norm is NaN/inf.

    seen: (steps, 3) per-step (loss, grad_norm, bpd) of the steps first_step + 1, first_step + 2, ...
    """
    bad = ~np.isfinite(seen[:, :2]).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        loss, grad_norm = float(seen[first, 0]), float(seen[first, 1])
        kept = str(checkpoint_path) if checkpoint_path and Path(checkpoint_path).exists() else "none"
        raise NonFiniteLossError(first_step + first + 1, loss, grad_norm, kept)


def train(
    model: ARDM,
    images: np.ndarray,
    config: TrainConfig,
    *,
    device: str | torch.device = "cpu",
    checkpoint_path: str | Path | None = None,
    resume_from: str | Path | None = None,
    rank: int = 0,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    on_log: Callable[[dict], bool | None] | None = None,
    on_checkpoint: Callable[[Path | None, dict], None] | None = None,
    extra: dict | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train `model` on uint8 images (N, C, H, W) for config.steps optimizer steps.

    checkpoint_path: where rank 0 writes its checkpoint every config.checkpoint_every steps and
    at the end (atomically replaced). resume_from: a checkpoint to continue from (its model spec
    must match). wrap: applied to the model after loading, e.g. DDP. on_log(metrics) gets
    {"step", "loss", "train_bpd", "grad_norm", "images_per_sec"} every config.log_every steps
    (train_bpd is the mean per-example negative ELBO over the window, bits per dimension) and may
    return True to have a checkpoint written at that step (every rank must return the same);
    on_checkpoint(path, metrics) runs on every rank at each checkpoint step, after rank 0 wrote
    the file (path is None on other ranks and when checkpoint_path is None). Both callbacks run
    the same number of times on every rank. extra: stored in the
    checkpoint (e.g. the data spec). Raises NonFiniteLossError naming the first step with a NaN/inf
    loss or gradient norm; the per-step values stay on the device between log and checkpoint steps,
    so the error comes at the next such step, before any checkpoint from the poisoned weights.
    """
    device = torch.device(device)
    if device.type != "cuda" and (config.mixed_precision or config.compile):
        warnings.warn("mixed precision and torch.compile are CUDA-only: both stay off on " + device.type, stacklevel=2)
    use_amp = config.mixed_precision and device.type == "cuda"
    model = model.to(device)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    step, metrics = 0, {}
    if resume_from is not None:
        payload = load_checkpoint(resume_from, map_location=device)
        check_same_model(payload, model.spec, resume_from)
        model.load_state_dict(payload["model"])
        ema.load_state_dict(payload["ema"])
        optimizer.load_state_dict(payload["optimizer"])
        step, metrics = int(payload["step"]), payload.get("metrics", {})
        if rank == 0:  # whatever `progress` says: a resumed run must say where it took up
            note(f"resumed from step {step} of {config.steps} (checkpoint {resume_from})")
    if config.compile and device.type == "cuda":
        model.network.compile()  # in place: parameter names (and checkpoints) stay the same
    net = wrap(model) if wrap is not None else model
    data = torch.from_numpy(np.array(images))  # a private, writable copy (datasets are read-only views)
    batches = _Batches(len(data), config.batch_size, config.seed, rank)

    def write_checkpoint(metrics: dict) -> None:
        path = None
        if checkpoint_path is not None and rank == 0:
            payload = {
                "model_spec": model.spec.to_dict(), "train_config": asdict(config), "step": step,
                "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                "rng": {"seed": config.seed, "scheme": "per-step SeedSequence(seed, rank, step)"},
                "metrics": metrics, "extra": extra or {},
            }
            path = save_checkpoint(payload, checkpoint_path)
        if on_checkpoint is not None:  # on every rank: distributed callbacks may be barriers
            on_checkpoint(path, metrics)

    net.train()
    # Per step (loss, grad norm, mean per-image nelbo in bpd) stays on the device until a log or
    # checkpoint step: reading it every step would make the host wait for the device every step.
    window: list[torch.Tensor] = []
    window_first, window_start = step, time.perf_counter()
    bar = progress_bar(total=config.steps, initial=step, desc="train steps", enabled=progress and rank == 0)
    with bar:  # closed before a NaN stop's message, which must not be glued to the bar's line
        while step < config.steps:
            seed = step_seed(config.seed, rank, step)
            torch.manual_seed(seed)  # dropout
            generator = torch.Generator().manual_seed(seed)
            x = data[batches.indices(step)].to(device, non_blocking=True).long()
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = training_loss(net, x, generator, config.ce_weight, config.stratified)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            window.append(torch.stack([out.loss.detach().float(), grad_norm.float(),
                                       out.nelbo_bpd.detach().mean().float()]))
            optimizer.step()
            ema.update_parameters(model)
            step += 1
            bar.update(1)
            log_now = step % config.log_every == 0 or step == config.steps
            checkpoint_now = step % config.checkpoint_every == 0 or step == config.steps
            if not (log_now or checkpoint_now):
                continue
            # The one wait for the device: (steps in the window, 3) float64, exactly the float32 values.
            seen = torch.stack(window).cpu().double().numpy()
            # Before any checkpoint: a non-finite step since the last check poisoned the weights, and
            # the file on disk must stay the last good one.
            _stop_if_non_finite(seen, window_first, checkpoint_path)
            if log_now:
                elapsed = time.perf_counter() - window_start
                metrics = {
                    "step": step, "loss": float(seen[-1, 0]), "train_bpd": float(np.mean(seen[:, 2])),
                    "grad_norm": float(seen[-1, 1]), "images_per_sec": len(seen) * config.batch_size / elapsed,
                }
                bar.set_postfix(bpd=f"{metrics['train_bpd']:.3f}")
                if on_log is not None and on_log(metrics):
                    checkpoint_now = True  # asked for: e.g. the caller's machine is about to be taken away
                window, window_first, window_start = [], step, time.perf_counter()
            if checkpoint_now:
                write_checkpoint(metrics)
    return TrainResult(model=model, ema=ema.module, step=step, metrics=metrics)
