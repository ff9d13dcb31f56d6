"""Stage maps, digits and both parameterizations, against their definitions."""

import itertools

import pytest
import torch

from ardm.upscale import Upscaler, num_stages_for
from tests.support.reference import coarse_int


@pytest.mark.parametrize(
    ("k", "b", "s"), [(256, 2, 8), (256, 4, 4), (256, 16, 2), (256, 256, 1), (256, 1000, 1), (17, 2, 5), (17, 4, 3),
                      (17, 17, 1), (3, 2, 2), (2, 2, 1), (257, 16, 3)],
)
def test_number_of_stages(k, b, s):
    assert num_stages_for(k, min(b, k)) == s
    assert Upscaler(k, b).num_stages == s


@pytest.mark.parametrize(("k", "b"), [(256, 4), (17, 2), (17, 4), (10, 3), (256, 256)])
def test_stage_maps_and_digits_round_trip(k, b):
    up = Upscaler(k, b)
    s = up.num_stages
    x = torch.arange(k)
    assert torch.equal(up.coarse(x, 0), torch.zeros_like(x))
    assert torch.equal(up.coarse(x, s), x)
    for level in range(s + 1):
        assert up.coarse(x, level).tolist() == [coarse_int(v, level, k, b) for v in range(k)]
    # Refining x^(j) by digit_j(x) gives x^(j+1); the digits are the base-b expansion of x.
    rebuilt = torch.zeros_like(x)
    for j in range(s):
        digit = up.digit(x, j)
        assert int(digit.max()) < up.branching
        rebuilt = up.refine(rebuilt, digit, j)
        assert torch.equal(rebuilt, up.coarse(x, j + 1))
    assert torch.equal(rebuilt, x)


def test_order_agnostic_when_branching_at_least_k():
    up = Upscaler(17, 300)
    assert up.is_order_agnostic and up.branching == 17 and up.num_outputs("direct") == 17
    x = torch.arange(17)
    assert torch.equal(up.digit(x, 0), x)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="branching"):
        Upscaler(256, 1)
    with pytest.raises(ValueError, match="parameterization"):
        Upscaler(256, 4).num_outputs("pixel")


@pytest.mark.parametrize(("k", "b"), [(17, 2), (17, 4), (10, 3), (256, 16), (5, 5)])
@pytest.mark.parametrize("param", ["data", "direct"])
def test_digit_distributions_sum_to_one_with_zero_mass_on_impossible_digits(k, b, param):
    torch.manual_seed(0)
    up = Upscaler(k, b)
    n_out = up.num_outputs(param)
    for j in range(up.num_stages):
        parents = torch.unique(up.coarse(torch.arange(k), j))  # every reachable x^(j)
        logits = torch.randn(len(parents), n_out) * 3
        stage = torch.full((len(parents),), j)
        log_probs = up.digit_log_probs(logits, parents, stage, param)
        probs = log_probs.exp()
        torch.testing.assert_close(probs.sum(-1), torch.ones(len(parents)))
        w = up.width(j)
        for row, parent in enumerate(parents.tolist()):
            for dig in range(up.branching):
                if parent + dig * w >= k:
                    assert probs[row, dig].item() == 0.0
                else:
                    assert probs[row, dig].item() > 0.0


@pytest.mark.parametrize(("k", "b"), [(17, 2), (17, 4), (256, 4), (12, 5)])
def test_data_parameterization_is_the_chain_rule_of_p_x(k, b):
    """Stage digits from a fixed p(x) multiply back to p(x), for every x (and zero outside 0..K-1)."""
    torch.manual_seed(1)
    up = Upscaler(k, b)
    logits = torch.randn(k) * 2
    log_px = torch.log_softmax(logits, 0)
    x = torch.arange(k)
    total = torch.zeros(k)
    for j in range(up.num_stages):
        log_probs = up.digit_log_probs(logits.expand(k, k), up.coarse(x, j), torch.full((k,), j), "data")
        total += log_probs.gather(1, up.digit(x, j)[:, None]).squeeze(1)
    torch.testing.assert_close(total, log_px, atol=1e-5, rtol=0)


def test_mixed_stages_in_one_batch_match_per_stage_results():
    torch.manual_seed(2)
    up = Upscaler(17, 2)
    x = torch.randint(17, (40, 3))
    stage = torch.randint(up.num_stages, (40,))
    logits = torch.randn(40, 3, 17)
    x_prev = up.coarse(x, stage[:, None])
    batched = up.digit_log_probs(logits, x_prev, stage, "data")
    for i in range(40):
        single = up.digit_log_probs(logits[i : i + 1], x_prev[i : i + 1], stage[i : i + 1], "data")
        torch.testing.assert_close(batched[i : i + 1], single)


def test_no_nan_gradients_through_impossible_digits():
    up = Upscaler(17, 4)
    for param, n_out in (("data", 17), ("direct", 4)):
        logits = torch.randn(8, n_out, requires_grad=True)
        x = torch.tensor(list(range(0, 17, 2)))[:8]
        stage = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
        lp = up.digit_log_probs(logits, up.coarse(x, stage), stage, param)
        lp.gather(1, up.digit(x, stage)[:, None]).sum().backward()
        assert torch.isfinite(logits.grad).all()


def test_every_value_reachable_exactly_once():
    """Digit sequences are a bijection onto 0..K-1 (no value lost or doubled when K is not b^S)."""
    up = Upscaler(17, 4)
    reached = set()
    for digits in itertools.product(range(4), repeat=up.num_stages):
        v = sum(dig * up.width(j) for j, dig in enumerate(digits))
        if v < 17:
            reached.add(v)
    assert reached == set(range(17))
