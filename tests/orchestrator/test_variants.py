"""orchestrator/variants.py: `ardm sweep --dry-run` lists exactly the trials Ray Tune generates (no Ray started)."""

import copy

from ray import tune
from ray.tune.experiment import Experiment
from ray.tune.search.basic_variant import BasicVariantGenerator

from orchestrator.cli import main
from orchestrator.config import load_sweep, trial_label
from orchestrator.variants import trial_configs
from tests.support.sweep_files import TINY, write_sweep

# A grid, a choice and a uniform, repeated 3 times: 6 trials, each with its own draws.
SEARCHED = {
    **TINY,
    "sweep": {"num_samples": 3, "seed": 11},
    "train": {**TINY["train"], "batch_size": {"choice": [8, 16]}, "learning_rate": {"uniform": [0.001, 0.01]}},
}


def _tune_generates(raw: dict, num_samples: int, seed: int, storage: str) -> list[dict]:
    """The trial configs of BasicVariantGenerator(random_state=seed) fed the sweep's spaces written
    out by hand as Tune samplers, as Tuner.fit feeds it."""
    space = copy.deepcopy(raw)
    space["model"]["branching"] = tune.grid_search([17, 4])
    space["train"]["batch_size"] = tune.choice([8, 16])
    space["train"]["learning_rate"] = tune.uniform(0.001, 0.01)
    generator = BasicVariantGenerator(random_state=seed)
    generator.add_configurations(Experiment(name="expected", run=lambda config: None, config=space,
                                            num_samples=num_samples, storage_path=storage))
    configs = []
    while (trial := generator.next_trial()) is not None:
        configs.append(trial.config)
    return configs


def test_dry_run_lists_the_trials_tune_generates(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, "searched", SEARCHED, "http://127.0.0.1:9")
    sweep = load_sweep(path)
    expected = _tune_generates(sweep.raw, 3, 11, str(tmp_path / "tune"))
    assert len(expected) == 6
    assert len({c["train"]["learning_rate"] for c in expected}) == 6  # drawn anew in every repetition
    assert trial_configs(sweep) == expected

    written = sorted(tmp_path.rglob("*"))
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{path}: sweep 'searched', 6 trial(s)"] + [f"  {trial_label(c, sweep.spaces)}" for c in expected]
    assert sorted(tmp_path.rglob("*")) == written  # the dry run wrote nothing
