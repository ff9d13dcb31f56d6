"""Per-step likelihood tables: unbiased against exact enumeration, range-split exact, Parquet round trip."""

import itertools

import numpy as np
import pytest
import torch

from ardm.evaluate import estimate_nelbo
from ardm.tables import StepTable, estimate_step_table
from tests.support.reference import coarse_int, digit_probs_reference, num_stages, tiny_ardm


def test_table_matches_exact_step_components_of_a_tiny_model():
    k, b, d = 5, 2, 3
    model = tiny_ardm(k, b, "data", shape=(1, 1, d))
    images = torch.tensor([[[[0, 4, 2]]], [[[3, 3, 1]]]], dtype=torch.uint8)
    table = estimate_step_table(model, images, samples_per_step=400, steps_per_call=2, seed=0)
    assert table.is_complete() and (table.n == 400).all()
    s = num_stages(k, b)
    perms = [list(p) for p in itertools.permutations(range(d))]
    nll, se = table.matrix("nll_bits"), table.matrix("stderr_bits")
    for j in range(s):
        w = b ** (s - 1 - j)
        for t in range(d):
            exact = []
            for x in images.flatten(1).tolist():
                for ranks in perms:
                    shown = [coarse_int(v, j + 1 if ranks[i] < t else j, k, b) for i, v in enumerate(x)]
                    probs = digit_probs_reference(model, shown, [r < t for r in ranks], j, t)
                    pos = ranks.index(t)
                    exact.append(-np.log2(probs[pos][(x[pos] // w) % b]))
            assert abs(nll[j, t] - np.mean(exact)) < 5 * se[j, t] + 1e-9, (j, t)


def test_ranges_computed_apart_and_merged_equal_one_pass(trained_digits, tmp_path):
    model, images = trained_digits
    whole = estimate_step_table(model, images, samples_per_step=4, steps_per_call=8, seed=3)
    parts = [estimate_step_table(model, images, samples_per_step=4, steps=range(lo, hi), steps_per_call=8, seed=3)
             for lo, hi in ((40, 64), (0, 16), (16, 40))]
    merged = StepTable.merge(parts)
    for col in ("stage", "t", "nll_bits", "stderr_bits", "n"):
        assert np.array_equal(getattr(merged, col), getattr(whole, col)), col
    assert merged.metadata == whole.metadata
    path = str(tmp_path / "table.parquet")
    whole.save(path)
    back = StepTable.load(path)
    assert back.metadata == whole.metadata and np.array_equal(back.nll_bits, whole.nll_bits)
    with pytest.raises(ValueError, match="overlap"):
        StepTable.merge([parts[0], parts[0]])
    other = estimate_step_table(model, images, samples_per_step=4, steps=range(0, 8), seed=4)
    with pytest.raises(ValueError, match="different"):
        StepTable.merge([parts[0], other])


def test_table_sum_is_the_negative_elbo(trained_digits):
    model, images = trained_digits
    table = estimate_step_table(model, images, samples_per_step=8, seed=1)
    elbo, elbo_se = table.full_elbo_bpd()
    direct = estimate_nelbo(model, images, samples_per_image=8, seed=2)
    assert abs(elbo - direct.mean) < 4 * np.hypot(elbo_se, direct.stderr)
    nll = table.matrix()
    assert nll[:, :8].mean() > nll[:, -8:].mean()  # early steps (little context) cost more
