"""DDP in the Ray Train worker: two gloo ranks on the CPU train as one worker on the union of their batches.

The ranks run the worker's own setup (orchestrator.worker.rank_setup: its shard, its model, its DDP wrap) and
ardm.train.train in two local processes, without Ray: a Train worker adds only the process group and callbacks.
"""

import copy

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ardm.config import build
from ardm.data import load_dataset, load_parquet_split, write_parquet_shards
from ardm.objective import ardm_loss, sample_orders, sample_steps
from ardm.train import _Batches, step_seed, train
from orchestrator.config import SweepConfig
from orchestrator.worker import rank_setup
from tests.support.sweep_files import TINY

STEPS, BATCH, ROWS_PER_SHARD = 3, 8, 400
# grad_clip below the gradient norm, so that every step clips (the norm of the averaged gradient).
CONFIG = copy.deepcopy(TINY) | {
    "model": {**TINY["model"], "branching": 4},
    "train": {**TINY["train"], "steps": STEPS, "batch_size": BATCH, "log_every": 1, "checkpoint_every": 10**6,
              "grad_clip": 0.5, "seed": 3},
}


def _train_rank(rank: int, world: int, store: str, data_uri: str, out: str) -> None:
    """One rank: the worker's setup and train(), keeping this rank's shard and its weights after every step."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        cfg = build(SweepConfig, CONFIG)
        shard, model, wrap = rank_setup(cfg, data_uri, rank, world, torch.device("cpu"))
        weights, grad_norms = [], []

        def on_log(metrics: dict) -> None:  # log_every=1: after every optimizer step
            weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            grad_norms.append(metrics["grad_norm"])

        train(model, shard.images, cfg.train, rank=rank, wrap=wrap, on_log=on_log, progress=False)
        torch.save({"shard": shard.images, "weights": weights, "grad_norms": grad_norms}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_workers_take_the_one_worker_step_on_the_union_of_their_batches(tmp_path):
    train_set = load_dataset("digits", "train")  # 1617 rows: shards of 400 rows 0, 2, 4 on rank 0 and 1, 3 on rank 1
    data_uri = write_parquet_shards(train_set, load_dataset("digits", "test"), str(tmp_path / "data"), ROWS_PER_SHARD)
    mp.spawn(_train_rank, args=(2, str(tmp_path / "store"), data_uri, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]

    # Each rank read its own shards, and the two together are the whole split.
    full = load_parquet_split(data_uri, "train").images
    shard_rows = [full[i : i + ROWS_PER_SHARD] for i in range(0, len(full), ROWS_PER_SHARD)]
    for rank, got in enumerate(ranks):
        mine = np.concatenate(shard_rows[rank::2])
        assert np.array_equal(got["shard"], mine), f"rank {rank} did not read its own shards"
    assert len(ranks[0]["shard"]) + len(ranks[1]["shard"]) == len(full)

    # Both ranks hold the same weights after every optimizer step.
    assert len(ranks[0]["weights"]) == len(ranks[1]["weights"]) == STEPS
    for step, (w0, w1) in enumerate(zip(ranks[0]["weights"], ranks[1]["weights"], strict=True)):
        different = [k for k in w0 if not torch.equal(w0[k], w1[k])]
        assert not different, f"after step {step + 1} the ranks' weights differ: {different[:3]}"
    assert ranks[0]["grad_norms"] == ranks[1]["grad_norms"]

    # One worker, one step per step on the union of both ranks' batches (each half with its rank's batch
    # indices, orders and steps from (seed, rank, step)): mean loss, backward, clip, Adam. Same weights.
    cfg = build(SweepConfig, CONFIG)
    _, model, wrap = rank_setup(cfg, data_uri, 0, 1, torch.device("cpu"))
    assert wrap(model) is model  # one worker: no DDP
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.learning_rate)
    seed, d, s = cfg.train.seed, model.num_variables, model.num_stages
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for step in range(STEPS):
        xs, orders, stages, ts = [], [], [], []
        for rank, got in enumerate(ranks):
            idx = _Batches(len(got["shard"]), BATCH, seed, rank).indices(step)
            generator = torch.Generator().manual_seed(step_seed(seed, rank, step))
            xs.append(torch.from_numpy(got["shard"][idx]).long())
            orders.append(sample_orders(BATCH, d, generator))
            stage, t = sample_steps(BATCH, s, d, generator, cfg.train.stratified)
            stages.append(stage)
            ts.append(t)
        loss = ardm_loss(model, torch.cat(xs), torch.cat(orders), torch.cat(stages), torch.cat(ts),
                         cfg.train.ce_weight).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip).item()
        optimizer.step()
        assert grad_norm > cfg.train.grad_clip  # the clip acted on the averaged gradient
        assert ranks[0]["grad_norms"][step] == pytest.approx(grad_norm, rel=1e-5)
        expected, got = model.state_dict(), ranks[0]["weights"][step]
        worst = max((expected[k] - got[k]).abs().max().item() for k in expected)
        # Adam divides by sqrt(v): rounding in tiny gradient components grows to ~4e-6 in three steps, while
        # every step moves weights by about the learning rate (2e-3); a rank stepping alone is off by that much.
        assert worst < 1e-5, f"after step {step + 1} DDP's weights are {worst:.2e} from one worker's on the union"
        moved = max((expected[k] - before[k]).abs().max().item() for k in expected)
        assert moved > 1e-3, "each step must move the weights far more than the tolerance"
        before = {k: v.detach().clone() for k, v in expected.items()}
