"""A text ARDM's compressed size on held-out text beside gzip, bz2 and lzma, in bits per character.

After the text demo (`ardm sweep sweeps/text-demo.yaml`, or `ardm train configs/text.yaml`), takes a
text model's checkpoint and the first --sequences test sequences of the data it trained on (or
--data), and codes the same text:
  - ARDM: rANS under the DP policy of each budget (total network calls per sequence; a step table
    estimated on training sequences), the order chosen as the best of --orders seeds on training
    sequences, as the paper does; each sequence as its own file ("per sequence": the file, header
    included, of one sequence) and all of them as one file ("whole file"); plus the model's NLL
    under that order and policy, the size the payload tracks. Every file is decoded and checked.
  - gzip, bz2, lzma (Python's standard library, strongest settings) on each sequence's text alone
    and on the whole text (the sequences joined by line breaks, as `ardm sample` writes them).
Short sequences are where a model helps most: a general-purpose compressor has no prior to start
from and pays its header on each one.

    python bench/text_compression.py --checkpoint runs/text/checkpoint.pt [--data pydoc?length=64]
                                     [--sequences 64] [--budgets 5,20,full] [--out bench/results/text_compression.json]
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import lzma
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ardm.budget_run import model_budgets
from ardm.budgets import parse_budget_list
from ardm.checkpoint import load_checkpoint, load_fitting_data, load_model, trained_data
from ardm.compression import budget_policy, choose_order, compress, decompress
from ardm.data.text import decode_text
from ardm.modality import TEXT
from ardm.model import ARDM
from ardm.tables import estimate_step_table

# name -> (compress function): the strongest standard settings of each.
BASELINES = {
    "gzip -9": lambda data: gzip.compress(data, compresslevel=9, mtime=0),
    "bz2 -9": lambda data: bz2.compress(data, compresslevel=9),
    "lzma -9e": lambda data: lzma.compress(data, preset=9 | lzma.PRESET_EXTREME),
}


def ardm_rows(model: ARDM, train: np.ndarray, test: np.ndarray, budgets: list[int],
              args: argparse.Namespace) -> tuple[int, list[dict[str, Any]]]:
    """(the order seed, one row per budget): bits per character per sequence and whole file."""
    s, d = model.num_stages, model.num_variables
    table = estimate_step_table(model, train[: args.table_sequences], args.samples_per_step).matrix()
    order_policy = budget_policy(min(max(20, s), s * d), s, d, "optimal", table)
    seed = choose_order(model, train[: args.order_sequences], order_policy, args.orders).seed
    rows = []
    for budget in budgets:
        policy = budget_policy(budget, s, d, "optimal", table)
        whole = compress(model, test, policy, seed)
        singles = [compress(model, test[i : i + 1], policy, seed) for i in range(len(test))]
        exact = np.array_equal(decompress(model, whole.data), test) and all(
            np.array_equal(decompress(model, one.data), test[i : i + 1]) for i, one in enumerate(singles))
        rows.append({
            "coder": f"ARDM, {budget} calls", "budget": budget, "nll_bpc": whole.nll_bpd,
            "per_sequence_bpc": 8 * sum(len(one.data) for one in singles) / test.size,
            "whole_file_bpc": 8 * len(whole.data) / test.size, "bit_exact": bool(exact),
        })
    return seed, rows


def baseline_rows(texts: list[str]) -> list[dict[str, Any]]:
    """Each standard-library compressor on each sequence's text alone and on the whole text."""
    characters = sum(map(len, texts))
    whole = "\n".join(texts).encode()
    rows = []
    for name, squeeze in BASELINES.items():
        rows.append({
            "coder": name, "budget": None, "nll_bpc": None,
            "per_sequence_bpc": 8 * sum(len(squeeze(t.encode())) for t in texts) / characters,
            "whole_file_bpc": 8 * len(squeeze(whole)) / characters, "bit_exact": True,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a text model's checkpoint")
    parser.add_argument("--data", help="text dataset spec (default: the one the checkpoint trained on)")
    parser.add_argument("--sequences", type=int, default=64, help="test sequences to compress")
    parser.add_argument("--budgets", default="5,20,full", help="network calls per sequence (N, N/stage, full)")
    parser.add_argument("--table-sequences", type=int, default=256)
    parser.add_argument("--samples-per-step", type=int, default=4)
    parser.add_argument("--orders", type=int, default=3)
    parser.add_argument("--order-sequences", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench/results/text_compression.json"))
    args = parser.parse_args()

    model = load_model(args.checkpoint).eval()
    if model.spec.modality != TEXT:
        raise SystemExit(f"{args.checkpoint}: a {model.spec.modality} model; this bench needs a text model")
    data = args.data or trained_data(load_checkpoint(args.checkpoint))
    if data is None:
        raise SystemExit(f"{args.checkpoint}: the checkpoint does not name its data: give --data")
    train = load_fitting_data(model.spec, data, "train").images
    test = np.ascontiguousarray(load_fitting_data(model.spec, data, "test").images[: args.sequences])
    d = model.num_variables
    budgets = model_budgets(parse_budget_list(args.budgets), model, "--budgets")
    texts = [decode_text(sequence) for sequence in test]
    print(f"{data} test: {len(test)} sequences of {d} characters ({test.size} in all), {model.upscaler}")
    seed, rows = ardm_rows(model, train, test, budgets, args)
    rows += baseline_rows(texts)
    print(f"{'coder':>22} {'NLL bpc':>8} {'per sequence':>13} {'whole file':>11}  exact")
    for r in rows:
        nll = "" if r["nll_bpc"] is None else f"{r['nll_bpc']:.4f}"
        print(f"{r['coder']:>22} {nll:>8} {r['per_sequence_bpc']:>13.4f} {r['whole_file_bpc']:>11.4f}  "
              f"{r['bit_exact']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
              "checkpoint": args.checkpoint, "data": data, "sequences": len(test), "length": d,
              "order_seed": seed, "rows": rows}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    if not all(r["bit_exact"] for r in rows):
        raise SystemExit("a round trip was not bit-exact")


if __name__ == "__main__":
    main()
