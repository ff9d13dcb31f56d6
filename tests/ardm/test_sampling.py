"""Samples follow the model's distribution exactly (checked on every outcome of tiny models)."""

import itertools
import math

import numpy as np
import pytest
import torch

from ardm.images import save_grid
from ardm.sampling import sample
from tests.support.reference import coarse_int, digit_probs_reference, num_stages, stage_bits, tiny_ardm

# Chi-square critical values at p = 0.001.
CHI2_999 = {8: 26.12, 24: 51.18}


def _chi_square(samples: torch.Tensor, probs: dict) -> tuple[float, int]:
    counts = {}
    for row in samples.flatten(1).tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert set(counts) <= {o for o, p in probs.items() if p > 0}, "sampled an outcome of probability zero"
    n = len(samples)
    stat = sum((counts.get(o, 0) - n * p) ** 2 / (n * p) for o, p in probs.items() if p > 0)
    return stat, sum(p > 0 for p in probs.values()) - 1


@pytest.mark.parametrize(("k", "b", "param"), [(3, 3, "data"), (3, 2, "data"), (5, 2, "direct")])
def test_full_step_sampling_matches_the_model_joint(k, b, param):
    """p(x) = prod_j E_sigma_j prod_t p(digit | step t of stage j), enumerated over every x."""
    model = tiny_ardm(k, b, param, shape=(1, 1, 2))
    s = num_stages(k, b)
    perms = [list(p) for p in itertools.permutations(range(2))]
    probs = {}
    for x in itertools.product(range(k), repeat=2):
        p = 1.0
        for j in range(s):
            p *= np.mean([2.0 ** -stage_bits(model, list(x), j, ranks) for ranks in perms])
        probs[x] = p
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
    samples = sample(model, 30000, seed=0, batch_size=30000)
    stat, dof = _chi_square(samples, probs)
    assert stat < CHI2_999[dof]


def test_one_chunk_per_stage_samples_every_variable_from_the_first_call():
    """Policy [0] per stage: all variables of a stage are drawn independently from one call."""
    k, b = 5, 2
    model = tiny_ardm(k, b, "data", shape=(1, 1, 2))
    s = num_stages(k, b)
    probs = {}
    for x in itertools.product(range(k), repeat=2):
        p = 1.0
        for j in range(s):
            shown = [coarse_int(v, j, k, b) for v in x]
            w = b ** (s - 1 - j)
            step_probs = digit_probs_reference(model, shown, [False, False], j, 0)
            p *= math.prod(step_probs[i][(v // w) % b] for i, v in enumerate(x))
        probs[x] = p
    samples = sample(model, 30000, policy=[[0]] * s, seed=1, batch_size=30000)
    stat, dof = _chi_square(samples, probs)
    assert stat < CHI2_999[dof]


def _chunked_joint(model, starts_per_stage: list[list[int]]) -> dict:
    """p(x) of chunked sampling, enumerated: per stage, the mean over all orders of the product over chunks
    [a, e) of p(digit of x_i | the call at step a) over the variables with a <= sigma(i) < e."""
    k, b = model.spec.num_classes, model.spec.branching
    d, s = math.prod(model.spec.shape), num_stages(k, b)
    perms = [list(p) for p in itertools.permutations(range(d))]
    cache = {}

    def probs(shown, mask, stage, a):
        key = (tuple(shown), tuple(mask), stage, a)
        if key not in cache:
            cache[key] = digit_probs_reference(model, shown, mask, stage, a)
        return cache[key]

    joint = {}
    for x in itertools.product(range(k), repeat=d):
        p = 1.0
        for j, starts in enumerate(starts_per_stage):
            w = min(b, k) ** (s - 1 - j)
            per_order = []
            for ranks in perms:
                q = 1.0
                for a, end in zip(starts, [*starts[1:], d], strict=True):
                    shown = [coarse_int(v, j + 1 if ranks[i] < a else j, k, b) for i, v in enumerate(x)]
                    step = probs(shown, [r < a for r in ranks], j, a)
                    q *= math.prod(step[i][(x[i] // w) % min(b, k)] for i in range(d) if a <= ranks[i] < end)
                per_order.append(q)
            p *= sum(per_order) / len(perms)
        joint[x] = p
    assert sum(joint.values()) == pytest.approx(1.0, abs=1e-6)
    return joint


def _chi_square_pooled(samples: torch.Tensor, probs: dict) -> tuple[float, float]:
    """(statistic, critical value at p = 0.001), outcomes expected fewer than 5 times pooled into one bin."""
    from scipy.stats import chi2  # a dependency of scikit-learn

    counts = {}
    for row in samples.flatten(1).tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert set(counts) <= {o for o, p in probs.items() if p > 0}, "sampled an outcome of probability zero"
    n = len(samples)
    bins = [(counts.get(o, 0), n * p) for o, p in probs.items() if n * p >= 5]
    rare = [(counts.get(o, 0), n * p) for o, p in probs.items() if 0 < n * p < 5]
    if rare:
        bins.append((sum(c for c, _ in rare), sum(e for _, e in rare)))
    stat = sum((c - e) ** 2 / e for c, e in bins)
    return stat, float(chi2.ppf(0.999, len(bins) - 1))


@pytest.mark.parametrize(("k", "b", "param", "policy", "wrong"), [
    # D = 4, one stage; a chunk of two in the middle. Wrong: a boundary moved, or every step sequential.
    (3, 3, "data", [[0, 1, 3]], [[[0, 2, 3]], [[0, 1, 2, 3]]]),
    # Two stages of upscaling, both with interior boundaries.
    (4, 2, "direct", [[0, 1, 3], [0, 2]], [[[0, 1, 2], [0, 2]], [[0, 1, 3], [0, 1, 2, 3]]]),
])
def test_chunked_sampling_with_interior_boundaries_matches_the_chunked_joint(k, b, param, policy, wrong):
    """Variables of one chunk are drawn independently from one call at the chunk's start: chi-square of the
    samples against the chunked sampler's exact distribution, over every x of a D = 4 model."""
    model = tiny_ardm(k, b, param, shape=(1, 1, 4))
    probs = _chunked_joint(model, policy)
    n = 40000
    stat, critical = _chi_square_pooled(sample(model, n, policy=policy, seed=2, batch_size=n), probs)
    assert stat < critical, f"chi-square {stat:.1f} >= {critical:.1f}"
    # The test has the power to see the neighbouring policies: their samples are refused.
    for other in wrong:
        stat, critical = _chi_square_pooled(sample(model, n, policy=other, seed=2, batch_size=n), probs)
        assert stat > 2 * critical, f"samples of policy {other} pass as {policy}: chi-square {stat:.1f}"


def test_sampling_is_seeded_and_in_range():
    model = tiny_ardm(17, 4, "direct", shape=(1, 2, 2))
    a = sample(model, 10, seed=3, batch_size=4)
    assert a.dtype == torch.uint8 and a.shape == (10, 1, 2, 2) and int(a.max()) < 17
    assert torch.equal(a, sample(model, 10, seed=3, batch_size=4))
    assert not torch.equal(a, sample(model, 10, seed=4, batch_size=4))


def test_bad_policies_are_refused():
    model = tiny_ardm(5, 2, "data", shape=(1, 1, 3))
    with pytest.raises(ValueError, match="stages"):
        sample(model, 2, policy=[[0]])
    with pytest.raises(ValueError, match="start at step 0"):
        sample(model, 2, policy=[[1], [0], [0]])
    with pytest.raises(ValueError, match="increasing"):
        sample(model, 2, policy=[[0, 2, 1], [0], [0]])


def test_grid_png(tmp_path):
    from PIL import Image

    images = np.random.default_rng(0).integers(0, 17, (5, 1, 8, 8), dtype=np.uint8)
    path = save_grid(images, 17, tmp_path / "g.png")
    im = Image.open(path)
    assert im.mode == "L" and im.size[0] > 64 * 2
    rgb = save_grid(np.full((4, 3, 8, 8), 255, np.uint8), 256, tmp_path / "c.png")
    assert Image.open(rgb).mode == "RGB"


def test_titled_grid_has_a_row_of_real_images_below_the_samples(tmp_path):
    """Every tile lands whole on the canvas: the samples' colour covers 5 tiles, the reference's colour
    one row of 3 (columns = ceil(sqrt(5)) = 3, extra reference images dropped), below every sample."""
    from PIL import Image

    from ardm.images import full_grid

    green = np.zeros((5, 3, 8, 8), np.uint8)
    green[:, 1] = 200
    magenta = np.zeros((7, 3, 8, 8), np.uint8)
    magenta[:, [0, 2]] = 200
    path = save_grid(green, 256, tmp_path / "g.png", title="budget 20 calls, optimal policy", reference=magenta)
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    is_green = (pixels == [0, 200, 0]).all(-1)
    is_magenta = (pixels == [200, 0, 200]).all(-1)
    tile = 64 * 64  # 8x8 images enlarged 8 times
    assert is_green.sum() == 5 * tile and is_magenta.sum() == 3 * tile
    assert np.nonzero(is_green)[0].max() < np.nonzero(is_magenta)[0].min()
    assert np.nonzero(is_green)[0].min() > 10  # the title comes first
    assert full_grid(10) == (12, 4) and full_grid(16) == (16, 4) and full_grid(1) == (1, 1)
