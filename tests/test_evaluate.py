"""Monte Carlo negative ELBO and exact fixed-order likelihood, against brute force."""

import pytest
import torch

from ardm.evaluate import estimate_nelbo, exact_likelihood

from reference import exact_nelbo_bits, exact_nll_bits, num_stages, tiny_ardm


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
def test_monte_carlo_nelbo_agrees_with_exact_within_its_error(k, b, param):
    model = tiny_ardm(k, b, param, shape=(1, 1, 3))
    g = torch.Generator().manual_seed(5)
    images = torch.randint(k, (12, 1, 1, 3), generator=g).to(torch.uint8)
    exact = sum(exact_nelbo_bits(model, im.flatten().tolist()) for im in images) / len(images) / 3
    est = estimate_nelbo(model, images, samples_per_image=300, batch_size=500, seed=1)
    assert est.n == 12 and est.stderr > 0
    # The per-image stderr includes image-to-image spread; the MC mean must sit well inside it.
    assert abs(est.mean - exact) < 4 * est.stderr
    again = estimate_nelbo(model, images, samples_per_image=300, batch_size=77, seed=1)
    assert again.mean == pytest.approx(est.mean, abs=1e-5)  # batching does not change the estimate
