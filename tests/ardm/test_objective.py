"""The objective's expectation over all orders and steps equals the exact negative ELBO."""

import itertools
import math

import pytest
import torch

from ardm.model import unwrap
from ardm.objective import ardm_loss, sample_orders, sample_steps
from tests.support.reference import exact_nelbo_bits, num_stages, tiny_ardm

CASES = [(3, 3, "data"), (3, 2, "data"), (3, 2, "direct"), (5, 2, "data"), (5, 2, "direct"), (4, 2, "direct"),
         (5, 3, "data")]


@pytest.mark.parametrize(("k", "b", "param"), CASES)
def test_mean_loss_over_all_orders_and_steps_is_exact_negative_elbo(k, b, param):
    d = 3
    model = tiny_ardm(k, b, param, shape=(1, 1, d))
    s = num_stages(k, b)
    perms = list(itertools.permutations(range(d)))
    for x_values in ([0, k - 1, 1], [k - 1, k - 1, 2 % k]):
        x = torch.tensor(x_values).view(1, 1, 1, d)
        combos = [(p, j, t) for p in perms for j in range(s) for t in range(d)]
        ranks = torch.tensor([p for p, _, _ in combos])
        stage = torch.tensor([j for _, j, _ in combos])
        t = torch.tensor([t for _, _, t in combos])
        with torch.no_grad():
            out = ardm_loss(model, x.expand(len(combos), 1, 1, d), ranks, stage, t)
        mean_bits_per_image = out.nelbo_bpd.double().mean().item() * d
        assert mean_bits_per_image == pytest.approx(exact_nelbo_bits(model, x_values), rel=1e-5)


def test_uniform_model_scores_log2_k_bits_everywhere():
    """Zero logits: every variable costs exactly log2 K bits under OA, whatever the step."""
    model = tiny_ardm(17, 17, "data", shape=(1, 2, 2))
    with torch.no_grad():
        for p in model.network.body[-1].parameters():
            p.zero_()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(17, (64, 1, 2, 2), generator=g)
    ranks = sample_orders(64, 4, g)
    stage, t = sample_steps(64, 1, 4, g)
    out = ardm_loss(model, x, ranks, stage, t)
    torch.testing.assert_close(out.nelbo_bpd, torch.full((64,), math.log2(17)))
    torch.testing.assert_close(out.step_bits, torch.full((64,), math.log2(17)))


def test_uniform_direct_upscale_costs_the_number_of_valid_digits():
    """Direct b=4, K=17, zero logits: p(x) = prod_j 1/(#valid digits at stage j)."""
    model = tiny_ardm(17, 4, "direct", shape=(1, 1, 1))
    with torch.no_grad():
        for p in model.network.body[-1].parameters():
            p.zero_()
    x = torch.arange(17).view(17, 1, 1, 1)
    bits = torch.zeros(17)
    for j in range(3):
        zeros = torch.zeros(17, dtype=torch.long)
        out = ardm_loss(model, x, zeros[:, None], torch.full((17,), j), zeros)
        bits += out.nelbo_bpd / 3  # S*D/(D-t) = 3 weights one stage; undo it to get that stage's bits
    # Stage 0 (w=16): digits {0,1} valid; x<16 then has 4 choices at w=4 and 4 at w=1; x=16 has 1 and 1.
    expected = torch.tensor([1 + 2 + 2.0] * 16 + [1.0])
    torch.testing.assert_close(bits, expected)


def test_ce_weight_adds_the_masked_cross_entropy_summed_and_divided_by_d():
    """The authors' term: ce = sum over not-yet-generated variables of -log2 p, / D (not / (D - t))."""
    d = 3
    model = tiny_ardm(5, 2, "data", shape=(1, 1, d))
    g = torch.Generator().manual_seed(3)
    x = torch.randint(5, (16, 1, 1, d), generator=g)
    ranks = sample_orders(16, d, g)
    stage, t = sample_steps(16, 3, d, g)
    plain = ardm_loss(model, x, ranks, stage, t)
    with_ce = ardm_loss(model, x, ranks, stage, t, ce_weight=0.5)
    # The formula from the network's own output, one example at a time.
    core = unwrap(model)
    ce = []
    for i in range(16):
        shown, mask = core.step_inputs(x[i : i + 1], ranks[i : i + 1], stage[i : i + 1], t[i : i + 1])
        log_probs = model(shown, mask, stage[i : i + 1], t[i : i + 1]).flatten(1, 3)[0]
        digits = core.upscaler.digit(x[i : i + 1], stage[i].item()).flatten()
        ce.append(sum(-log_probs[k, digits[k]].item() / math.log(2) for k in range(d) if ranks[i, k] >= t[i]) / d)
    expected = plain.loss + 0.5 * torch.tensor(ce).mean()
    torch.testing.assert_close(with_ce.loss, expected.to(with_ce.loss.dtype))
    assert (t > 0).any()  # where D - t != D the old 1/(D - t) normalisation would differ


def test_orders_are_permutations():
    g = torch.Generator().manual_seed(0)
    ranks = sample_orders(50, 7, g)
    assert torch.equal(ranks.sort(1).values, torch.arange(7).expand(50, 7))


@pytest.mark.parametrize("stratified", [True, False])
def test_step_sampling_is_uniform_over_global_steps(stratified):
    g = torch.Generator().manual_seed(0)
    s, d, batch, rounds = 2, 5, 16, 2000
    counts = torch.zeros(s * d)
    for _ in range(rounds):
        stage, t = sample_steps(batch, s, d, g, stratified)
        assert stage.min() >= 0 and stage.max() < s and t.min() >= 0 and t.max() < d
        counts += torch.bincount(stage * d + t, minlength=s * d)
    expected = batch * rounds / (s * d)
    assert (counts - expected).abs().max() < 5 * math.sqrt(expected)


def test_stratified_steps_cover_every_step_when_batch_equals_step_count():
    g = torch.Generator().manual_seed(1)
    stage, t = sample_steps(12, 3, 4, g, stratified=True)
    assert sorted((stage * 4 + t).tolist()) == list(range(12))
