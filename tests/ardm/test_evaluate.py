"""Monte Carlo negative ELBO, exact fixed-order likelihood and measured policy cost, against brute force."""

import itertools
import math

import pytest
import torch

from ardm.evaluate import estimate_nelbo, exact_likelihood, measure_policy
from tests.support.reference import (
    coarse_int,
    digit_probs_reference,
    exact_nelbo_bits,
    exact_nll_bits,
    num_stages,
    tiny_ardm,
)


@pytest.mark.parametrize(("k", "b", "param"), [(5, 5, "data"), (5, 2, "data"), (5, 2, "direct")])
def test_exact_likelihood_matches_brute_force(k, b, param):
    model = tiny_ardm(k, b, param, shape=(1, 2, 2))
    x = torch.tensor([[[1, 4], [0, 3]]])
    ranks = torch.tensor([2, 0, 3, 1])
    result = exact_likelihood(model, x, ranks, batch_size=3)  # batches straddle stages
    assert result.step_bits.shape == (num_stages(k, b), 4)
    expected = exact_nll_bits(model, x.flatten().tolist(), [ranks.tolist()] * num_stages(k, b))
    assert result.total_bits == pytest.approx(expected, rel=1e-5)
    assert result.bpd == pytest.approx(expected / 4, rel=1e-5)


@pytest.mark.parametrize(("k", "b", "param"), [(4, 4, "data"), (5, 2, "direct")])
def test_monte_carlo_elbo_agrees_with_exact_within_its_monte_carlo_error(k, b, param):
    """Each image repeated: the spread of its per-copy values is Monte Carlo error alone (no image-to-image spread)."""
    model = tiny_ardm(k, b, param, shape=(1, 1, 3))
    g = torch.Generator().manual_seed(5)
    images = torch.randint(k, (3, 1, 1, 3), generator=g).to(torch.uint8)
    copies = 1000
    est = estimate_nelbo(model, images.repeat_interleave(copies, 0), samples_per_image=4, batch_size=1500, seed=1)
    assert est.n == 3 * copies
    draws = torch.tensor(est.per_image, dtype=torch.float64).view(3, copies)  # independent draws of each image
    for image, values in zip(images, draws, strict=True):
        exact = exact_nelbo_bits(model, image.flatten().tolist()) / 3
        mc_stderr = values.std().item() / math.sqrt(copies)
        assert 0 < mc_stderr < 0.03 * exact + 0.01  # a tolerance of a few percent of the value at most
        mean = values.mean().item()
        where = f"{image.flatten().tolist()}: {mean:.4f} ± {mc_stderr:.4f}, exact {exact:.4f}"
        assert abs(mean - exact) < 4 * mc_stderr, where
    again = estimate_nelbo(model, images.repeat_interleave(copies, 0), samples_per_image=4, batch_size=77, seed=1)
    assert again.mean == pytest.approx(est.mean, abs=1e-5)  # batching does not change the estimate


@pytest.mark.parametrize(("k", "b", "param", "policy"), [
    (5, 2, "data", [[0, 2], [0], [0, 1, 2]]),
    (5, 5, "direct", [[0, 1]]),
])
def test_measured_policy_cost_matches_brute_force_over_orders(k, b, param, policy):
    """One call per chunk, every chunk variable scored from it: expectation over all orders per stage."""
    d = 3
    model = tiny_ardm(k, b, param, shape=(1, 1, d))
    x = [4, 0, 2]
    s = num_stages(k, b)
    perms = [list(p) for p in itertools.permutations(range(d))]
    exact = 0.0
    for j, starts in enumerate(policy):
        w = min(b, k) ** (s - 1 - j)
        per_order = []
        for ranks in perms:
            bits = 0.0
            for a, end in zip(starts, [*starts[1:], d], strict=True):
                shown = [coarse_int(v, j + 1 if ranks[i] < a else j, k, b) for i, v in enumerate(x)]
                probs = digit_probs_reference(model, shown, [r < a for r in ranks], j, a)
                bits -= sum(math.log2(probs[i][(x[i] // w) % min(b, k)]) for i in range(d) if a <= ranks[i] < end)
            per_order.append(bits)
        exact += sum(per_order) / len(perms)
    images = torch.tensor(x, dtype=torch.uint8).view(1, 1, 1, d).repeat(400, 1, 1, 1)
    est = measure_policy(model, images, policy, batch_size=128, seed=0)
    assert abs(est.mean - exact / d) < 4 * est.stderr
