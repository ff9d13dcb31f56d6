"""Names shared with MLflow: the tags, metric keys and artifact paths that the writers (tracking,
sweep, trial, worker, postprocess, models) log and the readers (report, listing, `ardm postprocess`,
checkpoint references) look up. A name is spelled here once; nothing parses one back.

Budget curves are logged as metrics whose step is the budget in total network calls, so MLflow's
charts draw bits per dimension against calls, one line per run, and overlay trials in its compare
view. Their standard errors and calls per stage are in the run's CURVE_TABLE artifact (the
`budget_bpd.parquet` of ardm.budgets.save_budget_curve).
"""

from __future__ import annotations

from ardm.budget_run import sample_grid_file
from ardm.checkpoint import CHECKPOINT_FILE
from ardm.modality import IMAGE

# Tags of runs.
ROLE_TAG = "ardm.role"  # SWEEP_ROLE on a sweep's parent run, TRIAL_ROLE on a trial's nested run
SWEEP_ROLE, TRIAL_ROLE = "sweep", "trial"
SWEEP_FILE_TAG = "ardm.sweep_file"  # on a sweep's run: the sweep file it was started from
TRIAL_TAG = "ardm.trial"  # on a trial's run: the Tune trial's name
CONFIGURATION_TAG = "ardm.configuration"  # the trial's searched values (orchestrator.config.trial_label)
FAILURE_REASON_TAG = "ardm.failure_reason"  # why a run ended FAILED or KILLED, one line
CHECKPOINT_TAG = "ardm.checkpoint"  # a trial's final checkpoint file (path or URI)
DATA_TAG = "ardm.data"  # the dataset spec a trial trained on (its Parquet shards)
UNIT_TAG = "ardm.unit"  # on a trial's run: the unit of its bpd metrics (bits per dimension, bits per character)
MODEL_ID_TAG = "ardm.model_id"  # the id of a trial's logged model (orchestrator.models)
RESTART_CAUSE_TAG = "ardm.restart_cause"  # a trial's latest worker-group restart: why, naming the lost node


def restart_cause_tag(restart: int) -> str:
    """The tag holding why a trial's `restart`-th worker-group restart (1, 2, ...) happened: RESTART_CAUSE_TAG
    holds the latest one only."""
    return f"{RESTART_CAUSE_TAG}.{restart}"


# MLflow 3's UI opens an experiment in the view its kind names; without the tag it may guess GenAI.
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"

# Metrics of a trial's run (bits per dimension unless named otherwise); training's own (train_bpd,
# loss, grad_norm, images_per_sec) are ardm.train's.
TRIAL_ATTEMPT = "trial_attempt"  # each Tune attempt at the trial, logged at step = the attempt
RESUMED_FROM_STEP = "resumed_from_step"  # a restarted worker group's checkpoint step
TRAIN_RESTARTS = "train_restarts"  # worker-group restarts of the trial so far, logged at step = that count
TEST_BPD, TEST_BPD_STDERR, TEST_IMAGES = "test_bpd", "test_bpd_stderr", "test_images"  # EMA weights, test split
TEST_METRICS = (TEST_BPD, TEST_BPD_STDERR, TEST_IMAGES)
WALL_TIME = "wall_time_s"  # training, in seconds
FULL_ELBO = "full_elbo_bpd"  # the step table's every-step ELBO, on the table's own images
TOTAL_STEPS, NUM_STAGES = "total_steps", "num_stages"  # S*D and S of the post-processed model
# Metrics of a sweep's run.
TRIALS, TRIALS_FAILED, BEST_TEST_BPD = "trials", "trials_failed", "best_test_bpd"

# Budget curves: the measured bpd of each policy (ardm.budgets.POLICIES) at a budget.
MEASURED = {"optimal": "bpd_measured", "naive": "bpd_naive", "optimal-joint": "bpd_joint"}
PREDICTED = "bpd_predicted"  # the optimal policy's cost under the step table
EXCESS = "bpd_excess"  # the optimal policy's excess over all steps, on the same images (paired)
COMPRESSED = "bpd_compressed"  # the rANS-coded payload under the optimal policy
CURVES = (*MEASURED.values(), PREDICTED, EXCESS, COMPRESSED)

# Classical codecs on the compressed images (ardm.compression.baselines.CODECS): one value per run.
BASELINE = {"PNG": "png_bpd", "WebP-lossless": "webp_lossless_bpd"}

# Artifacts of a trial's run: its final checkpoint, and post-processing's folder.
CHECKPOINT_ARTIFACTS = "checkpoint"
CHECKPOINT_ARTIFACT = f"{CHECKPOINT_ARTIFACTS}/{CHECKPOINT_FILE}"
POSTPROCESS_ARTIFACTS = "postprocess"
CURVE_TABLE = f"{POSTPROCESS_ARTIFACTS}/budget_bpd.parquet"
COMPRESSION_FILE = "compression.json"  # every compression budget's result (orchestrator.postprocess)
# The files of a logged model (orchestrator.models): the checkpoint, and what it is.
MODEL_CARD_FILE = "ardm_model.json"
# Artifacts of a sweep's run: the report's folder (orchestrator.report).
REPORT_ARTIFACTS = "report"


def sample_grid(calls: int, modality: str = IMAGE) -> str:
    """The artifact path of a trial's samples at a budget of `calls` total network calls (a PNG
    grid, or .txt for text)."""
    return f"{POSTPROCESS_ARTIFACTS}/{sample_grid_file(calls, modality)}"
