"""Integration: tiny sweeps on a real two-node local Ray cluster against a real `mlflow server`."""

import json
import math
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ray import tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from ardm.checkpoint import load_model
from ardm.config import build
from ardm.data import load_dataset
from ardm.evaluate import estimate_nelbo, measure_policy, paired_difference
from orchestrator import names
from orchestrator.cli import main
from orchestrator.config import SweepConfig, load_sweep
from orchestrator.sweep import SweepOutcome, format_outcome, max_concurrent_trials, unfinished_trial
from orchestrator.trial import FINISHED_CHECKPOINT
from tests.support.sweep_files import TINY, sweep_runs, write_sweep

pytestmark = pytest.mark.slow

BUDGET_ARTIFACTS = {"budget_bpd.parquet", "budget_bpd.csv", "budget_bpd.png", "policies.json", "step_table.parquet",
                    "step_table.csv", "samples_budget_3.png", "samples_budget_8.png"}
REPORT_ARTIFACTS = {"report.html", "report.md", "report.parquet", "budget_bpd.png"}


def test_tiny_sweep_tracks_parent_and_nested_runs(ray_cluster, mlflow_server, tmp_path, capsys):
    earlier = _train_workers(ray_cluster.address)  # the session's Ray ran other tests' Train workers
    # With the default tracking settings (system metrics on), as a user's sweep runs.
    path = write_sweep(tmp_path, "tiny-sweep", {**TINY, "tracking": {}}, mlflow_server)
    assert main(["sweep", str(path)]) == 0
    summary = capsys.readouterr().out
    assert len(re.findall(r"test \d\.\d+ ± \d\.\d+ bpd\n", summary)) == 2
    # Tune's trial table: a line per trial with its searched value and its training progress.
    assert re.search(r"\|\s+branching\s+\|\s+step\s+\|\s+loss\s+\|\s+bpd\s+\|\s+images/s\s+\|\s+ETA\s+\|", summary)
    assert len(re.findall(r"\| TERMINATED \|", summary)) >= 2
    assert "unfinished" not in summary and mlflow_server in summary
    client, parents, children = sweep_runs(mlflow_server, "tiny-sweep")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["trials"] == 2 and parents[0].data.metrics["trials_failed"] == 0
    assert sorted(r.data.params["model.branching"] for r in children) == ["17", "4"]
    for run in children:
        assert run.info.status == "FINISHED", run.data.tags.get("ardm.failure_reason")
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.params["train.steps"] == "6" and run.data.params["resources.workers_per_trial"] == "2"
        history = client.get_metric_history(run.info.run_id, "train_bpd")
        assert [m.step for m in history] == [2, 4, 6]
        assert run.data.metrics["test_bpd"] > 0 and run.data.metrics["test_bpd_stderr"] > 0
        assert run.data.metrics["wall_time_s"] > 0
        # The trial's data, as MLflow dataset inputs: the spec by name, one per split.
        inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
        assert set(inputs) == {"training", "testing"}
        assert {d.name for d in inputs.values()} == {run.data.params["data.spec"]}
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")]
        assert artifacts == ["checkpoint/checkpoint.pt"]
        # Next to Ray's checkpoint_<time> folders, `latest` links the one the run names.
        checkpoint = Path(run.data.tags["ardm.checkpoint"])
        assert (checkpoint.parents[1] / "latest" / "checkpoint.pt").resolve() == checkpoint.resolve()
        _check_postprocessed(client, run)
        _check_against_the_library(client, run, tmp_path / "library" / run.info.run_id)
    _check_report(client, parents[0], children, tmp_path / "storage" / "tiny-sweep" / "report", summary)
    # Standalone post-processing of a finished trial, by run id, adds budgets to its run.
    upscale = next(r for r in children if r.data.params["model.branching"] == "4")
    assert main(["postprocess", upscale.info.run_id, "--tracking-uri", mlflow_server, "--budgets", "5,full",
                 "--table-samples-per-step", "2", "--max-images", "16", "--sample-grid", "0",
                 "--out", str(tmp_path / "pp")]) == 0
    before = _curves(client, upscale)
    after = _curves(client, client.get_run(upscale.info.run_id))
    assert after["bpd_measured"][5] > 0 and after["bpd_joint"][5] > 0
    assert after["bpd_measured"][3] == before["bpd_measured"][3]
    # Each trial's 2 workers needed more CPUs than one node has free: both nodes were used.
    workers = _train_workers(ray_cluster.address)
    assert len({workers[a] for a in workers.keys() - earlier.keys()}) == 2
    # Resuming a finished sweep re-runs nothing and reuses the parent run.
    assert main(["sweep", str(path), "--resume"]) == 0
    _, parents_after, children_after = sweep_runs(mlflow_server, "tiny-sweep")
    assert [p.info.run_id for p in parents_after] == [parents[0].info.run_id]
    assert sorted(r.info.run_id for r in children_after) == sorted(r.info.run_id for r in children)


def _train_workers(address: str) -> dict[str, str]:
    """{actor id: node id} of every Ray Train worker actor the cluster has run."""
    from ray.util.state import list_actors

    return {a.actor_id: a.node_id for a in list_actors(address, filters=[("class_name", "=", "RayTrainWorker")],
                                                       limit=10000)}


def _curves(client, run) -> dict[str, dict[int, float]]:
    """The run's budget curves, {metric: {calls: bpd}}, the latest value at each step."""
    return {key: {m.step: m.value for m in sorted(client.get_metric_history(run.info.run_id, key),
                                                  key=lambda m: m.timestamp)}
            for key in ("bpd_measured", "bpd_predicted", "bpd_excess", "bpd_naive", "bpd_joint")}


def _check_postprocessed(client, run):
    """Budget curves against calls (optimal predicted and measured, naive, joint for upscale) and artifacts."""
    m, total = run.data.metrics, int(run.data.metrics["total_steps"])
    assert total == (64 if run.data.params["model.branching"] == "17" else 3 * 64)
    curves = _curves(client, run)
    for key in ("bpd_measured", "bpd_predicted", "bpd_naive"):
        assert sorted(curves[key]) == [3, 8, total] and all(v > 0 for v in curves[key].values()), key
    assert sorted(curves["bpd_joint"]) == ([3, 8, total] if total > 64 else [])
    # No single-point chart per budget: the run page holds curves, a handful of values, and no more.
    assert not [key for key in m if key.startswith("bpd_budget_")]
    # Each budget's excess over all steps is measured on the same images: the paired difference.
    for budget in (3, 8):
        excess = curves["bpd_measured"][budget] - curves["bpd_measured"][total]
        assert curves["bpd_excess"][budget] == pytest.approx(excess, abs=1e-9)
    # The full budget is every step: its prediction is the table's full-step ELBO.
    assert curves["bpd_predicted"][total] == pytest.approx(m["full_elbo_bpd"])
    names = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "postprocess")}
    assert names | {f"samples_budget_{total}.png"} >= BUDGET_ARTIFACTS
    assert f"samples_budget_{total}.png" in names


def _check_against_the_library(client, run, folder):
    """The Ray path's numbers are the library's: the test bpd is estimate_nelbo of the logged EMA
    checkpoint on the same images and seed, and each measured budget is measure_policy of the logged
    policy; the optimal policy is no worse than the naive one, and its prediction matches, within errors."""
    folder.mkdir(parents=True)
    model = load_model(client.download_artifacts(run.info.run_id, "checkpoint/checkpoint.pt", str(folder)))
    test = load_dataset(run.data.tags["ardm.data"], "test")
    evaluated = estimate_nelbo(model, test.subset(TINY["eval"]["max_images"], seed=0)[0],
                               TINY["eval"]["samples_per_image"], seed=0)
    assert run.data.metrics["test_bpd"] == pytest.approx(evaluated.mean, rel=1e-9)
    assert run.data.metrics["test_bpd_stderr"] == pytest.approx(evaluated.stderr, rel=1e-9)
    images = test.subset(TINY["postprocess"]["max_images"], seed=0)[0]
    policies = json.loads(Path(client.download_artifacts(run.info.run_id, "postprocess/policies.json",
                                                         str(folder))).read_text())["policies"]
    starts = {(p["budget"], p["policy"]): p["starts"] for p in policies}
    curves = _curves(client, run)
    table = {(r["calls"], r["policy"]): r for r in pq.read_table(client.download_artifacts(
        run.info.run_id, "postprocess/budget_bpd.parquet", str(folder))).to_pylist()}
    for budget in (3, 8):
        optimal = measure_policy(model, images, starts[budget, "optimal"], seed=0)
        naive = measure_policy(model, images, starts[budget, "naive"], seed=0)
        assert curves["bpd_measured"][budget] == pytest.approx(optimal.mean, rel=1e-9)
        assert curves["bpd_naive"][budget] == pytest.approx(naive.mean, rel=1e-9)
        gap = paired_difference(optimal, naive)
        assert gap.mean <= 4 * gap.stderr, f"optimal worse than naive at {budget} calls: {gap}"
        row = table[budget, "optimal"]
        error = math.hypot(row["predicted_stderr"], row["measured_stderr"])
        assert abs(row["predicted_bpd"] - row["measured_bpd"]) <= 4 * error, row


def _check_report(client, parent, children, folder, summary):
    """The report on the parent run and in the local folder holds the trials' own numbers."""
    assert {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")} == REPORT_ARTIFACTS
    assert f"report: {folder / 'report.html'}" in summary
    rows = {r["run_id"]: r for r in pq.read_table(folder / "report.parquet").to_pylist()}
    assert sorted(rows) == sorted(r.info.run_id for r in children)
    for run in children:
        row, m, curves = rows[run.info.run_id], run.data.metrics, _curves(client, run)
        assert row["status"] == "finished" and row["total_steps"] == m["total_steps"]
        assert row["train_time_s"] == m["wall_time_s"] and row["full_elbo_bpd"] == m["full_elbo_bpd"]
        table = {(r["calls"], r["policy"]): r for r in pq.read_table(
            client.download_artifacts(run.info.run_id, "postprocess/budget_bpd.parquet", str(folder))).to_pylist()}
        for budget in (3, 8):
            assert row[f"bpd_budget_{budget}"] == curves["bpd_measured"][budget]
            assert row[f"bpd_budget_{budget}_naive"] == curves["bpd_naive"][budget]
            assert row[f"bpd_budget_{budget}_stderr"] == table[budget, "optimal"]["measured_stderr"]
            assert row[f"bpd_budget_{budget}_excess_stderr"] == table[budget, "optimal"]["excess_stderr"]
        assert row["bpd_all_steps"] == curves["bpd_measured"][int(m["total_steps"])]
    text, html = (folder / "report.md").read_text(), (folder / "report.html").read_text()
    for r in children:
        cell = f"{rows[r.info.run_id]['bpd_budget_8']:.3f} ± {rows[r.info.run_id]['bpd_budget_8_stderr']:.3f}"
        assert cell in text and f"<td>{cell}</td>" in html


def test_unreachable_tracking_server_fails_before_ray_work(tmp_path, capsys):
    path = write_sweep(tmp_path, "offline", TINY, "http://127.0.0.1:9")
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9" in err and "unreachable" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "storage" / "offline" / "tune").exists()


def test_eta_is_the_time_left_at_this_runs_pace(monkeypatch):
    from orchestrator import worker

    clock = iter([100.0, 130.0, 160.0])
    monkeypatch.setattr(worker.time, "monotonic", lambda: next(clock))
    eta = worker._Eta(total=1000)
    assert eta(200) == "?"  # a resumed run's pace starts at its first log
    assert eta(300) == "0:03:30"  # 100 steps in 30 s, 700 left
    assert eta(1000) == "0:00:00"


def test_concurrent_trials_are_derived_from_the_clusters_resources(ray_cluster):
    """Without max_concurrent_trials, as many trials as the cluster's CPUs (and GPUs) hold: the
    session's cluster has 2 x 3 CPUs and no GPU; each trial takes its workers' CPUs plus a token
    share for its driver. A set value wins; a trial that needs a GPU runs one at a time here."""
    def concurrent(**sections) -> int:
        raw = {**TINY, **{k: {**TINY.get(k, {}), **v} for k, v in sections.items()}}
        raw["model"] = {**raw["model"], "branching": 4}
        return max_concurrent_trials(build(SweepConfig, raw))

    assert concurrent(resources={"workers_per_trial": 2, "cpus_per_worker": 1}) == 2  # 6 // 2.01
    assert concurrent(resources={"workers_per_trial": 1, "cpus_per_worker": 1}) == 5  # 6 // 1.01
    assert concurrent(resources={"workers_per_trial": 1, "cpus_per_worker": 3}) == 1
    assert concurrent(resources={"workers_per_trial": 1, "cpus_per_worker": 1},
                      sweep={"max_concurrent_trials": 7}) == 7
    assert concurrent(resources={"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 1}) == 1


def test_a_trial_interrupted_in_post_processing_counts_as_unfinished(tmp_path):
    """The last Tune result of a trial whose driver got Ctrl-C while the trial post-processed holds its
    test bpd and Ray's own `checkpoint_path` (Tune's Train callback adds it for the last Train
    checkpoint). Such a trial is unfinished: the sweep exits 130, its parent run ends KILLED and
    `--resume` finishes it. It used to pass for finished (exit 0, the summary showing its test bpd),
    as the finished trial's key was Ray's."""
    trained = {names.TEST_BPD: 4.04, names.TEST_BPD_STDERR: 0.01, CHECKPOINT_PATH_KEY: "/s/train/t/checkpoint_0"}
    interrupted = tune.Result(metrics=trained, checkpoint=None, error=None, path="/s/tune/trial_a")
    finished = tune.Result(metrics={**trained, FINISHED_CHECKPOINT: "/s/train/t/latest/checkpoint.pt"},
                           checkpoint=None, error=None, path="/s/tune/trial_b")
    failed = tune.Result(metrics=trained, checkpoint=None, error=RuntimeError("boom"), path="/s/tune/trial_c")
    assert [unfinished_trial(r) for r in (interrupted, finished, failed)] == [True, False, False]
    sweep = load_sweep(write_sweep(tmp_path, "interrupted", TINY, "http://127.0.0.1:9"))
    summary = format_outcome(SweepOutcome(results=[interrupted, finished], report=None, interrupted=True), sweep)
    assert re.search(r"trial_a +unfinished\n", summary) and re.search(r"trial_b +test 4\.0400 ± 0\.0100 bpd\n", summary)
