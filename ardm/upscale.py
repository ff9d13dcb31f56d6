"""Depth upscaling: the stage maps x^(s), base-b digits, and the two parameterizations.

With K classes and branching factor b there are S = ceil(log_b K) stages. Stages are indexed
0-based in code: stage j (0 <= j < S) refines x^(j) into x^(j+1) by the base-b digit

    digit_j(x) = floor(x / w_j) mod b,    w_j = b^(S-1-j)   (the "width" of one digit value)
    x^(j)      = w_{j-1} * floor(x / w_{j-1}) = b^(S-j) * floor(x / b^(S-j))

so x^(0) = 0 (the absorbing state) and x^(S) = x. A branching factor b >= K is the
order-agnostic ARDM: one stage whose digit is x itself (b is then taken as K).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Log-probability given to impossible digits. Finite rather than -inf on purpose: logsumexp and
# log_softmax over all-(-inf) groups produce NaN gradients, while exp(-1e30) is exactly 0.
IMPOSSIBLE = -1e30

PARAMETERIZATIONS = ("data", "direct")


def num_stages_for(num_classes: int, branching: int) -> int:
    """S = ceil(log_b K), computed in integers (no floating-point log)."""
    stages, span = 1, branching
    while span < num_classes:
        stages, span = stages + 1, span * branching
    return stages


class Upscaler:
    """Stage maps and digit distributions for K classes and branching factor b."""

    def __init__(self, num_classes: int, branching: int) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if branching < 2:
            raise ValueError(f"branching factor must be >= 2, got {branching}")
        self.num_classes = num_classes
        self.branching = min(branching, num_classes)
        self.num_stages = num_stages_for(num_classes, self.branching)

    def __repr__(self) -> str:
        return f"Upscaler(K={self.num_classes}, b={self.branching}, S={self.num_stages})"

    @property
    def is_order_agnostic(self) -> bool:
        return self.num_stages == 1

    def width(self, stage: torch.Tensor | int) -> torch.Tensor | int:
        """w_j = b^(S-1-j): how many values of x share one digit of stage j."""
        return self.branching ** (self.num_stages - 1 - stage)

    def coarse(self, x: torch.Tensor, level: torch.Tensor | int) -> torch.Tensor:
        """x^(level) for level in 0..S (per element or broadcastable tensor); x^(0) = 0, x^(S) = x."""
        span = self.branching ** (self.num_stages - level)
        return torch.div(x, span, rounding_mode="floor") * span

    def digit(self, x: torch.Tensor, stage: torch.Tensor | int) -> torch.Tensor:
        """The base-b digit that stage j adds: floor(x / w_j) mod b, in 0..b-1."""
        return torch.div(x, self.width(stage), rounding_mode="floor") % self.branching

    def refine(self, x_prev: torch.Tensor, digit: torch.Tensor, stage: torch.Tensor | int) -> torch.Tensor:
        """x^(j+1) from x^(j) and the digit of stage j."""
        return x_prev + digit * self.width(stage)

    def valid_digits(self, x_prev: torch.Tensor, stage: torch.Tensor | int) -> torch.Tensor:
        """Bool (..., b): digit d is possible iff x^(j) + d * w_j < K (K need not be a power of b)."""
        d = torch.arange(self.branching, device=x_prev.device)
        return x_prev.unsqueeze(-1) + d * torch.as_tensor(self.width(stage)).unsqueeze(-1) < self.num_classes

    def num_outputs(self, parameterization: str) -> int:
        """Logits per variable the network must produce: K (data) or b (direct)."""
        if parameterization == "data":
            return self.num_classes
        if parameterization == "direct":
            return self.branching
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")

    def digit_log_probs(
        self, logits: torch.Tensor, x_prev: torch.Tensor, stage: torch.Tensor, parameterization: str
    ) -> torch.Tensor:
        """Log-probabilities (nats) of the stage-j digit at every variable.

        logits: (B, ..., K) for "data" or (B, ..., b) for "direct"; x_prev: (B, ...) long, x^(j);
        stage: (B,) long, 0-based j per example. Returns float32 (B, ..., b); impossible digits
        (x^(j) + d * w_j >= K) get IMPOSSIBLE, i.e. probability exactly zero, and each row sums to 1.
        """
        logits = logits.float()
        stage_b = stage.view(-1, *([1] * (x_prev.dim() - 1)))
        if parameterization == "direct":
            masked = logits.masked_fill(~self.valid_digits(x_prev, stage_b), IMPOSSIBLE)
            return F.log_softmax(masked, dim=-1)
        if parameterization != "data":
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
        log_px = F.log_softmax(logits, dim=-1)
        out = torch.empty(*x_prev.shape, self.branching, device=logits.device)
        # One pass per stage present in the batch: within a stage every digit covers w_j values.
        for j in torch.unique(stage).tolist():
            rows = stage == j
            out[rows] = self._data_digit_log_probs(log_px[rows], x_prev[rows], j)
        return out

    def _data_digit_log_probs(self, log_px: torch.Tensor, x_prev: torch.Tensor, stage: int) -> torch.Tensor:
        """p(digit d | x^(j)) = sum of p(x) over x in [x^(j) + d w, x^(j) + (d+1) w), renormalised."""
        w, b = self.width(stage), self.branching
        num_buckets = -(-self.num_classes // w)  # buckets of w consecutive values that exist
        padded = F.pad(log_px, (0, num_buckets * w - self.num_classes), value=IMPOSSIBLE)
        bucket = torch.logsumexp(padded.unflatten(-1, (num_buckets, w)), dim=-1)
        # Buckets of one parent x^(j) are b consecutive ones; pad to whole parents (empty -> impossible).
        num_parents = -(-num_buckets // b)
        bucket = F.pad(bucket, (0, num_parents * b - num_buckets), value=IMPOSSIBLE)
        by_parent = bucket.unflatten(-1, (num_parents, b))
        parent = torch.div(x_prev, w * b, rounding_mode="floor")
        children = torch.gather(by_parent, -2, parent[..., None, None].expand(*parent.shape, 1, b)).squeeze(-2)
        return F.log_softmax(children, dim=-1)
