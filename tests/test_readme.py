"""The README's "Using it" commands, run as written in a fresh folder (a copy of configs/ only), with
fewer steps and images (and the order-agnostic model: 192 generation steps, not 768): the flags
below are appended, and argparse takes the last of a repeated
flag. A command the README adds runs too, as written; one it drops fails the coverage check."""

import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from ardm.data.cifar import write_cifar10_archive
from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[1]
CIFAR_PATH = "/data/cifar-10-python.tar.gz"  # the README's example paths, replaced by the test's own
PARQUET_PATH = "/shared/cifar-parquet"
SMALLER = {
    "train": ["--set", "train.steps=20", "--set", "train.batch_size=16", "--set", "model.preset=cpu-tiny",
              "--set", "model.branching=256", "--set", "eval.max_images=8", "--set", "eval.sample_grid=0"],
    "evaluate": ["--max-images", "8"],
    "sample": ["--num", "4"],
    "budgets": ["--max-images", "2", "--table-images", "8", "--samples-per-step", "2", "--samples", "0"],
    "convert": [],
}


def readme_commands(section: str = "## Using it") -> list[list[str]]:
    """The `ardm ...` lines of the first bash block after `section`, continuation lines joined,
    comments dropped, split as the shell would."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index(section):].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            assert words[0] == "ardm", f"README {section}: not an ardm command: {line}"
            commands.append(words[1:])
    return commands


@pytest.mark.slow
def test_the_readme_commands_run_in_a_fresh_folder(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    rng = np.random.default_rng(0)
    archive = tmp_path / "cifar-10-python.tar.gz"
    md5 = write_cifar10_archive(archive, rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8),
                                rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    commands = readme_commands()
    assert sorted({c[0] for c in commands}) == sorted(SMALLER), "README commands and this test's list differ"
    for argv in commands:
        argv = [word.replace(f"cifar10:{CIFAR_PATH}", f"cifar10:{archive}?md5={md5}")
                .replace(PARQUET_PATH, "cifar-parquet") for word in argv]
        assert main([*argv, *SMALLER[argv[0]]]) == 0, argv
    out = capsys.readouterr().out
    assert "checkpoint: runs/photos8/checkpoint.pt" in out
    assert (tmp_path / "grid.png").is_file() and (tmp_path / "cifar-parquet").is_dir()
    assert (tmp_path / "runs" / "photos8" / "budgets" / "budget_bpd.csv").is_file()
