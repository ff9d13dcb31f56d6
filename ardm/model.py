"""The ARDM: a network plus the upscaling scheme that turns its logits into digit distributions.

`ARDM.forward` is the single network call of the method: given the variables shown at one step
(observed ones at x^(j+1), the rest at x^(j)), it returns the distribution of the stage-j digit
at every variable. The objective, the evaluators and the sampler all go through it, so a DDP
wrapper around an ARDM is a drop-in replacement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ardm.modality import IMAGE, check_modality
from ardm.networks import build_network, network_config_from_dict
from ardm.upscale import PARAMETERIZATIONS, Upscaler


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild an ARDM from a checkpoint.

    shape: (C, H, W) of one example ((1, 1, L) for text); num_classes: K; branching: b (>= K means
    order-agnostic); parameterization: "data" (K logits per variable) or "direct" (b logits); network:
    the network's configuration as a plain dict (ardm.networks.network_config_from_dict); modality:
    "image" or "text" (ardm.modality), what the model's data are (older checkpoints: image).
    """

    shape: tuple[int, int, int]
    num_classes: int
    branching: int
    parameterization: str
    network: dict
    modality: str = IMAGE

    def __post_init__(self) -> None:
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {self.parameterization!r}")
        check_modality(self.modality)
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))

    def to_dict(self) -> dict:
        """Plain dict for checkpoints; an image model's leaves its modality out, so that its dict, and the
        identity hash of tables and compressed files taken over it (ardm.tables.model_identity), are
        those the model had before text existed."""
        d = asdict(self)
        if self.modality == IMAGE:
            del d["modality"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        return cls(**d)


class ARDM(nn.Module):
    """An order-agnostic (S = 1) or depth-upscaling (S > 1) ARDM over examples of shape (C, H, W).

    num_variables D = C*H*W; num_steps = S*D generation steps (one variable each).
    """

    def __init__(self, network: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.network = network
        self.spec = spec
        self.upscaler = Upscaler(spec.num_classes, spec.branching)
        self.parameterization = spec.parameterization
        c, h, w = spec.shape
        self.num_variables = c * h * w

    @property
    def num_stages(self) -> int:
        return self.upscaler.num_stages

    @property
    def num_steps(self) -> int:
        return self.num_stages * self.num_variables

    def forward(self, x_shown: torch.Tensor, mask: torch.Tensor, stage: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One network call: log-probabilities (nats) of the stage digit at every variable.

        x_shown: (B, C, H, W) long, x^(j+1) where mask is set and x^(j) elsewhere;
        mask: (B, C, H, W) bool, the t variables already generated in this stage;
        stage: (B,) long, 0-based stage j; t: (B,) long, step within the stage (= mask count).
        Returns float32 (B, C, H, W, b); only unobserved positions are meaningful.
        """
        step = stage * self.num_variables + t
        logits = self.network(x_shown, mask, stage, step)
        x_prev = self.upscaler.coarse(x_shown, stage.view(-1, 1, 1, 1))
        return self.upscaler.digit_log_probs(logits, x_prev, stage, self.parameterization)

    def step_inputs(
        self, x: torch.Tensor, ranks: torch.Tensor, stage: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the network sees at (stage j, step t) for data x under an order.

        x: (B, C, H, W) long; ranks: (B, D) long, ranks[b, k] = sigma(k), the step at which
        variable k (flattened CHW) is generated. Returns (x_shown, mask) as in `forward`.
        """
        mask = (ranks < t[:, None]).view_as(x)
        stage_b = stage.view(-1, 1, 1, 1)
        x_shown = torch.where(mask, self.upscaler.coarse(x, stage_b + 1), self.upscaler.coarse(x, stage_b))
        return x_shown, mask


def unwrap(model: nn.Module) -> ARDM:
    """The ARDM inside a DistributedDataParallel (or torch.compile) wrapper, or the model itself."""
    while not isinstance(model, ARDM):
        model = model.module if hasattr(model, "module") else model._orig_mod
    return model


def build_ardm(spec: ModelSpec) -> ARDM:
    """Construct the network described by `spec` and wrap it as an ARDM."""
    upscaler = Upscaler(spec.num_classes, spec.branching)
    c, h, w = spec.shape
    network = build_network(
        network_config_from_dict(spec.network),
        shape=spec.shape,
        num_classes=spec.num_classes,
        num_stages=upscaler.num_stages,
        num_outputs=upscaler.num_outputs(spec.parameterization),
        num_steps=upscaler.num_stages * c * h * w,
    )
    return ARDM(network, spec)
