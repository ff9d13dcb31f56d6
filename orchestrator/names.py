"""Names shared with MLflow by the writers (postprocess, trial) and the readers (report): metric
keys of a trial's budget curves and the artifact that holds the curves' full table.

Budget curves are logged as metrics whose step is the budget in total network calls, so MLflow's
charts draw bits per dimension against calls, one line per run, and overlay trials in its compare
view. Their standard errors and calls per stage are in the run's CURVE_TABLE artifact (the
`budget_bpd.parquet` of ardm.budgets.save_budget_curve).
"""

# The measured bpd of each policy (ardm.budgets.POLICIES) at a budget.
MEASURED = {"optimal": "bpd_measured", "naive": "bpd_naive", "optimal-joint": "bpd_joint"}
PREDICTED = "bpd_predicted"  # the optimal policy's cost under the step table
EXCESS = "bpd_excess"  # the optimal policy's excess over all steps, on the same images (paired)
COMPRESSED = "bpd_compressed"  # the rANS-coded payload under the optimal policy
CURVES = (*MEASURED.values(), PREDICTED, EXCESS, COMPRESSED)

# Classical codecs on the compressed images (ardm.compression.baselines.CODECS): one value per run.
BASELINE = {"PNG": "png_bpd", "WebP-lossless": "webp_lossless_bpd"}

CURVE_TABLE = "postprocess/budget_bpd.parquet"
SAMPLE_GRID = "postprocess/samples_budget_{calls}.png"
