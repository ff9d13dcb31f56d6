"""Budget vs bpd: DP predictions agree with measured bpd on a trained model; files and CLI."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import ardm.budgets as budgets_module
from ardm.budgets import (
    COLUMNS,
    budget_curve,
    budget_policies,
    parse_budget,
    parse_budget_list,
    predicted_bpd,
    resolve_budget,
    resolve_budgets,
    save_budget_curve,
)
from ardm.config import build
from ardm.evaluate import estimate_nelbo, paired_difference
from ardm.parallel import optimal_policies
from ardm.sampling import sample
from ardm.tables import StepTable, estimate_step_table
from orchestrator.cli import main
from orchestrator.config import SweepConfig, check_budgets_fit, load_sweep, resolve
from tests.support.reference import checkpoint_of

# Measuring a budget costs that many network calls per image and order: the curve stops short of 32.
BUDGETS = [1, 2, 4, 8, 16, 64]
# Test images the curve is measured on: its checks compare within the estimates' own errors, which two
# thirds of the digits test split keep small.
CURVE_IMAGES = 120


@pytest.fixture(scope="module")
def curve(trained_digits):
    model, images = trained_digits[0], trained_digits[1][:CURVE_IMAGES]
    table = estimate_step_table(model, images, samples_per_step=16, seed=0)
    return table, budget_curve(model, table, images, BUDGETS, orders_per_image=2, seed=1)


def _rows(curve, policy):
    return sorted((r for r in curve.rows if r["policy"] == policy), key=lambda r: r["budget"])


def test_predicted_and_measured_agree_within_their_errors(curve):
    _, c = curve
    for r in c.rows:
        gap = abs(r["predicted_bpd"] - r["measured_bpd"])
        assert gap < 4 * np.hypot(r["predicted_stderr"], r["measured_stderr"]), r
        assert r["calls"] == r["budget"]


def test_full_budget_is_the_full_step_elbo_and_fewer_calls_never_predict_less(curve, trained_digits):
    table, c = curve
    optimal, naive = _rows(c, "optimal"), _rows(c, "naive")
    assert optimal[-1]["budget"] == 64
    assert optimal[-1]["predicted_bpd"] == pytest.approx(table.full_elbo_bpd()[0], abs=1e-12)
    model, images = trained_digits[0], trained_digits[1][:CURVE_IMAGES]
    # The full budget is measured by estimate_nelbo (16 draws per order, 2 orders, the curve's seed). Against an
    # independent estimate on the same images, the paired difference's error is Monte Carlo error alone.
    full = estimate_nelbo(model, images, samples_per_image=32, seed=1)
    assert full.mean == pytest.approx(optimal[-1]["measured_bpd"], abs=1e-9)
    diff = paired_difference(full, estimate_nelbo(model, images, samples_per_image=4, seed=5))
    assert abs(diff.mean) < 4 * diff.stderr, diff
    predicted = [r["predicted_bpd"] for r in optimal]
    assert all(a >= b - 1e-12 for a, b in zip(predicted, predicted[1:], strict=False))
    for o, n in zip(optimal, naive, strict=True):
        assert o["predicted_bpd"] <= n["predicted_bpd"] + 1e-12


def test_excess_over_all_steps_is_paired(curve):
    """Every budget is measured on the same images (and orders): the excess over the every-step value
    is the difference of the means, and its paired error is below either measurement's own error."""
    _, c = curve
    full = next(r for r in c.rows if r["budget"] == 64 and r["policy"] == "optimal")
    assert full["excess_bpd"] == 0 and full["excess_stderr"] == 0
    for r in c.rows:
        assert r["excess_bpd"] == pytest.approx(r["measured_bpd"] - full["measured_bpd"], abs=1e-9)
        if r["budget"] < 64:
            assert 0 < r["excess_stderr"] < r["measured_stderr"], r


def test_curve_files(curve, tmp_path):
    _, c = curve
    paths = save_budget_curve(c, tmp_path, title="digits")
    assert pq.read_table(paths["parquet"]).to_pylist() == c.rows
    assert paths["csv"].read_text().splitlines()[0].startswith("budget,policy,calls")
    assert Image.open(paths["png"]).size[0] > 300
    saved = json.loads(paths["policies"].read_text())
    assert {p["budget"] for p in saved["policies"]} == set(BUDGETS)


def test_upscale_budgets_split_over_stages_and_joint_is_never_worse():
    rng = np.random.default_rng(0)
    s, d = 3, 10
    nll = np.sort(rng.uniform(0.1, 5, (s, d)), axis=1)[:, ::-1] * np.array([[3.0], [1.0], [0.3]])
    table = StepTable(stage=np.repeat(np.arange(s), d), t=np.tile(np.arange(d), s), nll_bits=nll.ravel(),
                      stderr_bits=np.full(s * d, 0.01), n=np.full(s * d, 4), metadata={"num_stages": s,
                                                                                         "num_variables": d})
    policies = budget_policies(nll, [3, 7, 12, 30])
    for (budget, _), policy in policies.items():
        assert len(policy) == s and sum(len(p) for p in policy) == budget
        assert all(p[0] == 0 for p in policy)
    for budget in (7, 12):
        joint = predicted_bpd(table, policies[budget, "optimal-joint"])[0]
        equal = predicted_bpd(table, policies[budget, "optimal"])[0]
        assert joint <= equal + 1e-12
    assert predicted_bpd(table, policies[30, "optimal"])[0] == pytest.approx(nll.sum() / d)
    with pytest.raises(ValueError, match="budget 2 outside 3..30"):
        budget_policies(nll, [2])


def test_sampler_takes_dp_policies(trained_digits):
    model, images = trained_digits
    table = estimate_step_table(model, images[:20], samples_per_step=2, seed=0)
    policy = optimal_policies(table.matrix()[0], [5], sort_decreasing=True)[5]
    out = sample(model, 3, policy=[policy], seed=0)
    assert out.shape == (3, 1, 8, 8) and int(out.max()) < 17


def test_budgets_command(trained_digits, tmp_path, capsys, monkeypatch):

    model, _ = trained_digits
    ckpt = checkpoint_of(model, tmp_path / "c.pt")
    args = ["budgets", "--checkpoint", str(ckpt), "--data", "digits", "--max-images", "30", "--budgets", "2,8,64",
            "--samples-per-step", "2", "--samples", "4", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "full-step ELBO" in printed and "optimal" in printed and "naive" in printed
    # stderr is no terminal here: one plain line per finished unit, naming its work; no carriage returns.
    lines = captured.err.splitlines()
    assert "\r" not in captured.err
    assert any(line.startswith("step table on train images, 64 steps: ") and "done in" in line for line in lines)
    for budget in ("budget 64 calls, policy optimal = naive: ", "budget 8 calls, policy optimal: ",
                   "budget 8 calls, policy naive: ", "sample grid, budget 8 calls, policy optimal: "):
        assert sum(line.startswith(budget) and "done in" in line for line in lines) == 1, (budget, lines)
    assert not (tmp_path / "out" / "samples_budget_64.png").exists()  # the full budget's grid: `ardm sample`
    for name in ("step_table.parquet", "budget_bpd.parquet", "budget_bpd.csv", "budget_bpd.png", "policies.json",
                 "samples_budget_8.png"):
        assert (tmp_path / "out" / name).is_file(), name
    # The table's images are training images spread over the split; bpd is measured on test images.
    table = StepTable.load(str(tmp_path / "out" / "step_table.parquet"))
    assert table.metadata["split"] == "train" and table.metadata["images"] == "all"
    assert pq.read_table(tmp_path / "out" / "budget_bpd.parquet").column_names == list(COLUMNS)
    for bad, message in [("0,8", "--budgets: budget '0': each must be an integer >= 1"),
                         ("65", "--budgets: budget 65 outside 1..64"),
                         ("65/stage", "--budgets: budget 65/stage: more than D=64 calls per stage"),
                         ("x/stage", "--budgets: budget 'x/stage': expected an integer >= 1, 'N/stage'")]:
        assert main([*args[:-6], "--budgets", bad, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "bad").exists()


def test_budgets_command_resumes_into_the_same_out(trained_digits, tmp_path, capsys, monkeypatch):
    """A rerun into the same --out measures nothing again and gives the same rows; a deleted budget
    file is measured again, alone; --quiet prints no progress at all."""
    model, _ = trained_digits
    ckpt = checkpoint_of(model, tmp_path / "c.pt")
    out = tmp_path / "out"
    args = ["budgets", "--checkpoint", str(ckpt), "--data", "digits", "--max-images", "20", "--budgets", "4,16,64",
            "--samples-per-step", "2", "--samples", "2", "--out", str(out)]
    measured = []
    real = budgets_module.measure_budget
    monkeypatch.setattr(budgets_module, "measure_budget",
                        lambda *a, **k: measured.append(sum(map(len, next(iter(a[2].values()))))) or real(*a, **k))
    assert main(args) == 0
    assert sorted(measured) == [4, 16, 64]
    rows = pq.read_table(out / "budget_bpd.parquet").to_pylist()
    kept = ["step_table.parquet", "budgets/budget-4.json", "budgets/budget-16.json", "budgets/budget-64.json",
            "samples_budget_4.png", "samples_budget_16.png"]
    stamps = {name: (out / name).stat().st_mtime_ns for name in kept}
    capsys.readouterr()

    measured.clear()
    assert main([*args, "--quiet"]) == 0
    assert measured == [] and capsys.readouterr().err == ""
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == stamps
    assert pq.read_table(out / "budget_bpd.parquet").to_pylist() == rows

    (out / "budgets" / "budget-16.json").unlink()
    assert main(args) == 0
    assert measured == [16]
    err = capsys.readouterr().err
    assert "budget 64 calls: measured before, reusing" in err and "step table: estimated before, reusing" in err
    assert {n: (out / n).stat().st_mtime_ns == t for n, t in stamps.items()} == {
        n: n not in ("budgets/budget-16.json", "samples_budget_16.png") for n in kept}
    assert pq.read_table(out / "budget_bpd.parquet").to_pylist() == rows


def test_an_interrupted_curve_keeps_each_budget_measured_so_far(trained_digits, tmp_path):
    model, images = trained_digits
    table = estimate_step_table(model, images[:20], samples_per_step=2, seed=0)

    class Stop(Exception):
        pass

    def stop(budget, estimates):
        raise Stop(budget)

    with pytest.raises(Stop):
        budget_curve(model, table, images[:12], [2, 8], cache=tmp_path, on_budget=stop)
    assert [p.name for p in tmp_path.iterdir()] == ["budget-64.json"]  # the full budget is measured first
    measured = []
    curve = budget_curve(model, table, images[:12], [2, 8], cache=tmp_path,
                         on_budget=lambda budget, estimates: measured.append(budget))
    assert measured == [8, 2] and sorted(p.name for p in tmp_path.iterdir()) == [
        "budget-2.json", "budget-64.json", "budget-8.json"]
    assert curve.rows == budget_curve(model, table, images[:12], [2, 8]).rows
    # Other measured images (or settings) are not the cached ones: measured afresh.
    measured.clear()
    budget_curve(model, table, images[12:24], [2], cache=tmp_path, on_budget=lambda b, e: measured.append(b))
    assert measured == [64, 2]


def test_budget_specs_resolve_to_total_calls():
    assert [parse_budget(v) for v in (20, "20", " 500/stage", "full")] == [20, 20, "500/stage", "full"]
    assert parse_budget_list("8,20/stage,full") == [8, "20/stage", "full"]
    assert resolve_budget("500/stage", 4, 3072) == 2000  # the paper's Upscale-4 "500": 4 x 500 calls
    assert resolve_budget("full", 4, 3072) == 4 * 3072
    assert resolve_budget(100, 4, 3072) == 100
    assert resolve_budgets(["1/stage", 3, "full"], 3, 5) == [3, 15]
    for bad in (0, "0", "0/stage", "x/stage", "2.5/stage", "/stage", "all", True, "-3"):
        with pytest.raises(ValueError, match="budget"):
            parse_budget(bad)
    with pytest.raises(ValueError, match="more than D=64 calls per stage"):
        resolve_budget("65/stage", 1, 64)
    with pytest.raises(ValueError, match="outside 3..15"):
        resolve_budgets([2], 3, 5)


def test_cifar_sweep_states_its_budgets_per_stage_as_the_paper_does():
    """sweeps/cifar.yaml loads, and its budgets resolve per stage for every branching factor it sweeps:
    the Upscale-4 trial compresses at 4 x 100 and 4 x 500 calls, as in the paper's compression table."""
    sweep = load_sweep(Path(__file__).parents[2] / "sweeps" / "cifar.yaml")
    check_budgets_fit(sweep, (3, 32, 32), 256)
    upscale4 = build(SweepConfig, resolve(sweep.raw, {("model", "branching"): 4}))
    assert upscale4.postprocess.resolve_compression_budgets(4, 4 * 3072) == [400, 2000]
    assert upscale4.postprocess.resolve_budgets(4, 4 * 3072)[-2:] == [4000, 4 * 3072]
    assert upscale4.postprocess.table_split == "train"
