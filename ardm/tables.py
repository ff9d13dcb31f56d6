"""Per-step likelihood tables: l_{j,t} = E[-log2 p(variable generated at step t of stage j)], in bits.

One network call at (stage j, step t) with a random order scores all D - t variables not yet
generated; their mean -log2 p is an unbiased sample of l_{j,t} (by symmetry, the variable that
step t generates is uniform among them). Every step gets the same number of samples
(stratified), and each step's images and orders come from a seed of its own, so any range of
steps can be computed anywhere (e.g. on separate Ray workers) and merged into the same table.

Parquet schema (one row per (stage, t)):
    stage        int32    0-based stage j
    t            int32    step within the stage, 0..D-1
    nll_bits     float64  mean -log2 p of the generated variable (bits per variable)
    stderr_bits  float64  standard error of that mean
    n            int32    number of samples
File metadata (key/value strings): num_stages, num_variables, model (identity hash of the
weights and spec), data, split, images ("all", or the comma-separated indices of the split's
images the draws came from), seed, samples_per_step.

The policy chosen on a table must not be measured on the table's own images, or its measured
bpd is optimistically biased: by default (`table_images`) a table comes from the training split,
as the authors' tables come from training losses, and bpd is measured on the test split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from torch import nn

from ardm.data import load_dataset
from ardm.model import unwrap
from ardm.objective import ardm_loss, sample_orders
from ardm.progress import progress as progress_bar
from ardm.storage import filesystem, write_atomic

COLUMNS = ("stage", "t", "nll_bits", "stderr_bits", "n")


@dataclass
class StepTable:
    """Rows of per-step estimates; all arrays have one entry per (stage, t) row, sorted."""

    stage: np.ndarray
    t: np.ndarray
    nll_bits: np.ndarray
    stderr_bits: np.ndarray
    n: np.ndarray
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def num_stages(self) -> int:
        return int(self.metadata["num_stages"])

    @property
    def num_variables(self) -> int:
        return int(self.metadata["num_variables"])

    def is_complete(self) -> bool:
        return len(self.stage) == self.num_stages * self.num_variables

    def matrix(self, column: str = "nll_bits") -> np.ndarray:
        """(S, D) array of a column; the table must hold every step."""
        if not self.is_complete():
            raise ValueError(f"table has {len(self.stage)} of {self.num_stages * self.num_variables} steps")
        out = np.empty((self.num_stages, self.num_variables), dtype=np.float64)
        out[self.stage, self.t] = getattr(self, column)
        return out

    def full_elbo_bpd(self) -> tuple[float, float]:
        """(negative ELBO in bits per dimension, its standard error): sum of every l_{j,t} / D."""
        nll, se = self.matrix("nll_bits"), self.matrix("stderr_bits")
        return float(nll.sum()) / self.num_variables, float(np.sqrt((se**2).sum())) / self.num_variables

    def to_arrow(self) -> pa.Table:
        table = pa.table({
            "stage": pa.array(self.stage, pa.int32()), "t": pa.array(self.t, pa.int32()),
            "nll_bits": pa.array(self.nll_bits, pa.float64()), "stderr_bits": pa.array(self.stderr_bits, pa.float64()),
            "n": pa.array(self.n, pa.int32()),
        })
        return table.replace_schema_metadata({k: str(v) for k, v in self.metadata.items()})

    def save(self, uri: str) -> str:
        """Write as Parquet (atomically) to a local path or URI; returns the URI."""
        fs, path = filesystem(uri)
        sink = pa.BufferOutputStream()
        pq.write_table(self.to_arrow(), sink)
        write_atomic(fs, path, sink.getvalue())
        return uri

    @classmethod
    def load(cls, uri: str) -> StepTable:
        fs, path = filesystem(uri)
        table = pq.read_table(path, filesystem=fs)
        missing = set(COLUMNS) - set(table.column_names)
        if missing:
            raise ValueError(f"{uri}: not a step table (missing columns {sorted(missing)})")
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        return cls(*(table.column(c).to_numpy() for c in COLUMNS), metadata=meta)

    @classmethod
    def merge(cls, parts: Iterable[StepTable]) -> StepTable:
        """Concatenate tables of disjoint step ranges computed with the same model, data and seed."""
        parts = list(parts)
        keys = {json.dumps(p.metadata, sort_keys=True) for p in parts}
        if len(keys) != 1:
            raise ValueError("cannot merge step tables of different models, data or seeds")
        cols = [np.concatenate([getattr(p, c) for p in parts]) for c in COLUMNS]
        order = np.lexsort((cols[1], cols[0]))
        cols = [c[order] for c in cols]
        global_step = cols[0].astype(np.int64) * int(parts[0].metadata["num_variables"]) + cols[1]
        if len(np.unique(global_step)) != len(global_step):
            raise ValueError("step tables to merge overlap")
        return cls(*cols, metadata=dict(parts[0].metadata))


TABLE_SPLIT = "train"  # the default split of a step table's images: never the measured ones


def table_images(data: str, split: str = TABLE_SPLIT, count: int = 0, seed: int = 0) -> tuple[np.ndarray, dict]:
    """(uint8 images (N, C, H, W), metadata) for a step table: `count` images (0: all) of a
    dataset spec's split, spread evenly over it (ImageDataset.subset); the metadata names the
    data, the split and which images, for the table file."""
    dataset = load_dataset(data, split)
    images, indices = dataset.subset(count, seed)
    chosen = "all" if len(indices) == len(dataset.images) else ",".join(map(str, indices.tolist()))
    return images, {"data": data, "split": split, "images": chosen}


def model_identity(model: nn.Module) -> str:
    """A short hash of an ARDM's spec and weights: tables and policies name the model they came from."""
    core = unwrap(model)
    digest = hashlib.sha256(json.dumps(core.spec.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(core.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _step_draws(seed: int, step: int, samples: int, num_images: int, num_variables: int):
    """Images (samples,) and orders (samples, D) for one global step, from that step's own seed."""
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))
    images = torch.randint(num_images, (samples,), generator=generator)
    return images, sample_orders(samples, num_variables, generator)


@torch.no_grad()
def estimate_step_table(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    samples_per_step: int = 16,
    steps: Iterable[int] | None = None,
    steps_per_call: int = 16,
    seed: int = 0,
    metadata: dict[str, str] | None = None,
    progress: bool = False,
) -> StepTable:
    """Estimate l_{j,t} (bits per variable) with `samples_per_step` (image, order) draws per step.

    images: uint8 (N, C, H, W) held-out data. steps: global steps u = j*D + t to compute (default:
    all S*D). Network calls batch `steps_per_call` whole steps (samples_per_step rows each), grouped
    by u // steps_per_call, so a range split on multiples of steps_per_call gives bit-identical rows.
    """
    core = unwrap(model)
    d, total = core.num_variables, core.num_steps
    steps = np.arange(total) if steps is None else np.unique(np.fromiter(steps, dtype=np.int64))
    if len(steps) and (steps[0] < 0 or steps[-1] >= total):
        raise ValueError(f"steps must lie in 0..{total - 1}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    data = torch.as_tensor(np.array(images), dtype=torch.long)
    m = samples_per_step
    mean, stderr = np.empty(len(steps)), np.empty(len(steps))
    groups = np.split(np.arange(len(steps)), np.flatnonzero(np.diff(steps // steps_per_call)) + 1)
    where = f" on {metadata['split']} images" if metadata and "split" in metadata else ""
    for group in progress_bar(groups, desc=f"step table{where}, {len(steps)} steps", enabled=progress):
        u = steps[group]
        draws = [_step_draws(seed, int(step), m, len(data), d) for step in u]
        picked = torch.cat([img for img, _ in draws])
        ranks = torch.cat([r for _, r in draws]).to(device)
        u_rows = torch.as_tensor(u).repeat_interleave(m).to(device)
        out = ardm_loss(model, data[picked].to(device), ranks, u_rows // d, u_rows % d)
        bits = out.step_bits.double().cpu().view(len(u), m).numpy()
        mean[group] = bits.mean(1)
        stderr[group] = bits.std(1, ddof=1) / np.sqrt(m) if m > 1 else np.nan
    model.train(was_training)
    return StepTable(
        stage=(steps // d).astype(np.int32), t=(steps % d).astype(np.int32), nll_bits=mean, stderr_bits=stderr,
        n=np.full(len(steps), m, dtype=np.int32), metadata=table_metadata(model, m, seed, metadata),
    )


def table_metadata(model: nn.Module, samples_per_step: int, seed: int, metadata: dict[str, str] | None = None) -> dict:
    """The file metadata of a step table of this model (see the module docstring): what a saved
    table must carry to be reused for the same model, images, seed and samples per step."""
    core = unwrap(model)
    return {"num_stages": str(core.num_stages), "num_variables": str(core.num_variables),
            "model": model_identity(model), "seed": str(seed), "samples_per_step": str(samples_per_step),
            **(metadata or {})}


def reusable_table(uri: str, metadata: dict[str, str]) -> StepTable | None:
    """The complete step table saved at `uri` if its metadata is `metadata` (table_metadata), else None."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    table = StepTable.load(uri)
    return table if table.metadata == metadata and table.is_complete() else None
