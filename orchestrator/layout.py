"""Where a sweep's files go: every path that a sweep, its trials and the commands on them write or read.

A sweep keeps everything under <storage.path>/<sweep name>/, where storage.path is a local or NFS
path (made absolute by orchestrator.config) or an object-store URI (s3://..., ardm.storage.is_uri):

    data/                 Parquet shards + manifest.json (converted once from data.spec)
    tune/                 Ray Tune's experiment state (what `--resume` restores)
    train/<trial>/        each trial's Ray Train run: checkpoint_<time>/checkpoint.pt, and latest, a
                          link to the newest of them (local storage)
    postprocess/<trial>/  each trial's post-processing folder (below)
    sweep.json            the sweep's MLflow parent run id and tracking URI (without its password)
    driver.lock           locked by the running driver (orchestrator.lock): a second driver is refused
    tracking-outbox/      tracking calls kept during an MLflow outage (orchestrator.tracking.outbox)
    report/               the sweep report (orchestrator.report)

Object storage has no locks and is no folder to write a report into: for such storage the lock is a
file in ~/.cache/ardm/locks/ on the driver's machine, the outbox is runs/sweeps/<sweep>/tracking-outbox
under each process's working directory, and the report goes to ./reports/<sweep>.

A post-processing folder (a trial's postprocess/<trial>, or `ardm postprocess --out`, by default
postprocess/<run id or checkpoint name>) holds, under a key hashed from the model, the data and the
settings:

    <key>/tables/parts/steps-<lo>-<hi>.parquet, <key>/tables/step_table.parquet
    <key>/budgets/budget-<k>.json, <key>/compression/budget-<k>.json, <key>/samples_budget_<k>.png

and artifacts/, what is logged to the trial's run under postprocess/ (for a folder on object storage,
a temporary local folder instead). `ardm budgets --out` names its step table and sample grids alike.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from ardm.budget_run import STEP_TABLE, sample_grid_file
from ardm.checkpoint import CHECKPOINT_FILE
from ardm.modality import IMAGE
from ardm.storage import is_uri
from orchestrator.config import StorageSection, SweepConfig

DEFAULT_STORAGE = StorageSection.path  # relative to the working directory
TUNE_NAME = "tune"  # Ray Tune's experiment, in the sweep's folder
LOCK_NAME = "driver.lock"
LOCAL_LOCKS = Path("~/.cache/ardm/locks")  # lock files of sweeps on object storage
OUTBOX_FOLDER = "tracking-outbox"
LATEST = "latest"  # in a trial's Train run folder: a link to its newest checkpoint folder


def sweep_root(cfg: SweepConfig) -> str:
    """The sweep's folder (path or URI): everything the sweep stores is under it."""
    return f"{cfg.storage.path}/{cfg.sweep.name}"


def data_folder(cfg: SweepConfig) -> str:
    """Where the driver converts the sweep's data into Parquet shards (unless data.spec is parquet:)."""
    return f"{sweep_root(cfg)}/data"


def tune_folder(cfg: SweepConfig) -> str:
    """Ray Tune's experiment state: TUNE_NAME under sweep_root, what `--resume` restores."""
    return f"{sweep_root(cfg)}/{TUNE_NAME}"


def train_folder(cfg: SweepConfig) -> str:
    """Where the sweep's Ray Train runs keep their checkpoints, one run folder per trial."""
    return f"{sweep_root(cfg)}/train"


def train_run_folder(cfg: SweepConfig, trial: str) -> str:
    """The Ray Train run of trial `trial`: its checkpoint_<time>/ folders."""
    return f"{train_folder(cfg)}/{trial}"


def point_latest(cfg: SweepConfig, trial: str, checkpoint_folder: str) -> None:
    """Make <train run folder>/latest a link to `checkpoint_folder`, the trial's newest checkpoint, so
    that nobody has to sort Ray's checkpoint_<time> names: .../train/<trial>/latest/checkpoint.pt.
    The link is replaced atomically. Object stores have no links: there the trial's MLflow run
    (tag ardm.checkpoint, `ardm runs`) names its checkpoint."""
    if is_uri(cfg.storage.path):
        return
    link = Path(train_run_folder(cfg, trial)) / LATEST
    temporary = link.with_name(f".{LATEST}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(Path(checkpoint_folder).name)  # relative: the sweep's folder may move
    os.replace(temporary, link)


def checkpoint_file(cfg: SweepConfig, folder: str) -> str:
    """The checkpoint file in a Ray Train checkpoint folder, which Ray names without the storage's
    scheme, as a path or URI that every node reads."""
    scheme = urlparse(cfg.storage.path).scheme if is_uri(cfg.storage.path) else ""
    return f"{scheme}://{folder}/{CHECKPOINT_FILE}" if scheme else f"{folder}/{CHECKPOINT_FILE}"


def postprocess_folder(cfg: SweepConfig, trial: str) -> str:
    """Trial `trial`'s post-processing folder."""
    return f"{sweep_root(cfg)}/postprocess/{trial}"


def state_file(cfg: SweepConfig) -> str:
    """sweep.json: the sweep's MLflow parent run id and tracking URI, read back by `--resume`."""
    return f"{sweep_root(cfg)}/sweep.json"


def lock_path(storage: str, sweep: str) -> Path:
    """The lock file of sweep `sweep` stored under `storage` (a path, file:// or another URI)."""
    storage = storage.removeprefix("file://")
    if not is_uri(storage):
        return Path(storage, sweep, LOCK_NAME).absolute()
    key = hashlib.sha256(f"{storage.rstrip('/')}/{sweep}".encode()).hexdigest()[:16]
    return LOCAL_LOCKS.expanduser() / f"{sweep}-{key}.lock"


def sweep_outbox(cfg: SweepConfig) -> str:
    """Where a sweep's trackers keep calls during an outage: `<storage>/<sweep>/tracking-outbox`.

    An outbox needs a file system with locks, so with storage on an object store (s3://...) it is
    `runs/sweeps/<sweep>/tracking-outbox` under the working directory of each process instead (the
    driver's path, created on each node that needs it).
    """
    storage = str(Path(DEFAULT_STORAGE).absolute()) if is_uri(cfg.storage.path) else cfg.storage.path
    return f"{storage}/{cfg.sweep.name}/{OUTBOX_FOLDER}"


DEFAULT_OUTBOXES = f"{DEFAULT_STORAGE}/*/{OUTBOX_FOLDER}"  # what `ardm sync` delivers by default


def default_outboxes() -> list[Path]:
    """The outboxes of the sweeps stored in the default storage folder (DEFAULT_OUTBOXES)."""
    return sorted(Path(DEFAULT_STORAGE).glob(f"*/{OUTBOX_FOLDER}"))


def report_folder(storage: str | None, sweep: str) -> Path:
    """A sweep report's local folder: <storage>/<sweep>/report when the storage is local, else (object
    storage, or a storage not known) ./reports/<sweep>."""
    if storage is None or is_uri(storage):
        return Path("reports", sweep).absolute()
    return Path(storage, sweep, "report")


def postprocess_work(out: str, key: str) -> str:
    """The results in post-processing folder `out` (path or URI) for one model, data and settings (`key`)."""
    return f"{out}/{key}"


def tables_folder(work: str) -> str:
    """The step table and its parts (orchestrator.tables) among a post-processing's results."""
    return f"{work}/tables"


def table_part(tables: str, steps: range) -> str:
    """The part of a step table that holds steps `steps`."""
    return f"{tables}/parts/steps-{steps.start:06d}-{steps.stop:06d}.parquet"


def step_table(folder: str | Path) -> str:
    """The step table in a folder: a post-processing's merged table, or `ardm budgets --out`'s."""
    return f"{folder}/{STEP_TABLE}"


def budget_result(work: str, budget: int) -> str:
    """One budget's measured policies among a post-processing's results."""
    return f"{work}/budgets/budget-{budget}.json"


def compression_result(work: str, budget: int) -> str:
    """One budget's compressed sizes among a post-processing's results."""
    return f"{work}/compression/budget-{budget}.json"


def sample_grid(folder: str | Path, budget: int, modality: str = IMAGE) -> str:
    """The samples at a budget in a folder (a PNG grid, or .txt for text): a post-processing's
    results, or `ardm budgets --out`."""
    return f"{folder}/{sample_grid_file(budget, modality)}"


def artifacts_folder(out: str) -> Path:
    """A local folder (created) where post-processing gathers what it logs to MLflow: <out>/artifacts
    for a local `out`, else a fresh temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="ardm-postprocess-")) if is_uri(out) else Path(out) / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def default_postprocess_out(run: str) -> Path:
    """`ardm postprocess RUN`'s folder without --out: postprocess/<checkpoint file's stem, or run id>."""
    return Path("postprocess", Path(run).stem if Path(run).exists() else run)
