"""A sweep's trials as Ray Tune generates them: its search space, its variant generator, and the list
of trial configs, drawn by that same generator without starting Ray.

The sweep driver (orchestrator/sweep.py) gives `param_space` and `variant_generator` to its Tuner;
`ardm sweep --dry-run` lists `trial_configs`, so the dry run shows the very values Tune will run:
the grid's product, repeated num_samples times, with choice/uniform/loguniform drawn anew in each
repetition from one generator seeded by `sweep.seed`.
"""

from __future__ import annotations

import tempfile

from ray import tune
from ray.tune.experiment import Experiment
from ray.tune.search.basic_variant import BasicVariantGenerator

from orchestrator.config import Sweep, resolve

# One Tune sampler per search-space kind of orchestrator.config.SPACE_KINDS.
_SAMPLERS = {
    "grid": tune.grid_search,
    "choice": tune.choice,
    "uniform": lambda bounds: tune.uniform(*bounds),
    "loguniform": lambda bounds: tune.loguniform(*bounds),
}


def param_space(sweep: Sweep) -> dict:
    """The raw config with every search space as the matching Ray Tune sampler."""
    return resolve(sweep.raw, {path: _SAMPLERS[space.kind](list(space.values)) for path, space in sweep.spaces.items()})


def variant_generator(sweep: Sweep, max_concurrent: int = 0) -> BasicVariantGenerator:
    """Tune's generator of the sweep's trials, seeded by sweep.seed; max_concurrent (0: no limit)
    paces the trials Tune starts, not the values they get."""
    return BasicVariantGenerator(random_state=sweep.base.sweep.seed, max_concurrent=max_concurrent)


def _never_run(config: dict) -> None:
    """The trainable of the listing's experiment: trials are generated, never run."""
    raise AssertionError("a listed trial was run")


def trial_configs(sweep: Sweep) -> list[dict]:
    """Every trial's resolved config, in the order Tune starts them: `variant_generator` fed
    `param_space` with num_samples, as `tune.Tuner.fit` feeds it (Ray is imported, not started)."""
    generator = variant_generator(sweep)
    with tempfile.TemporaryDirectory(prefix="ardm-variants-") as scratch:
        # Tune's Experiment checks its storage by writing a marker file there: a scratch folder takes it.
        generator.add_configurations(Experiment(
            name="variants", run=_never_run, config=param_space(sweep), num_samples=sweep.base.sweep.num_samples,
            storage_path=scratch,
        ))
        configs = []
        while (trial := generator.next_trial()) is not None:
            configs.append(trial.config)
    return configs
