"""The compress / decompress commands (orchestrator/compress_cli.py) through the real entry point:
PNG and .npy round trips, a dataset split with the order search, and the one-line errors."""

import re

import numpy as np
import pytest
from PIL import Image

from ardm.data import load_dataset
from orchestrator.cli import main
from tests.support.reference import checkpoint_of, unet_model


def run(*argv: str) -> None:
    """An `ardm` command that must succeed, through the real entry point."""
    assert main(list(argv)) == 0, argv


def refused_by_main(capsys, *argv: str) -> str:
    """The one line an `ardm` command that must fail prints on stderr (exit code 2, nothing else)."""
    capsys.readouterr()
    assert main(list(argv)) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("ardm: ") and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def rgb_checkpoint(tmp_path_factory):
    """A tiny K=256 model of 3x2x2 RGB images, as a checkpoint file."""
    path = tmp_path_factory.mktemp("rgb") / "model.pt"
    checkpoint_of(unet_model((3, 2, 2), 256, 256), path)
    return path


def test_cli_png_round_trip(rgb_checkpoint, tmp_path, capsys):
    pixels = np.random.default_rng(0).integers(0, 256, (2, 2, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    run("compress", "--checkpoint", str(rgb_checkpoint), "--budget", "4", "--policy", "naive", "--order-seed", "1",
        str(tmp_path / "in.png"), str(tmp_path / "c.ardm"))
    assert "bpd" in capsys.readouterr().out
    run("decompress", "--checkpoint", str(rgb_checkpoint), str(tmp_path / "c.ardm"), str(tmp_path / "out.png"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), pixels)
    assert "bit-exactly" in capsys.readouterr().out


@pytest.mark.parametrize("shape", [(2, 2, 3), (3, 2, 2), (5, 2, 2, 3), (5, 3, 2, 2)])
def test_cli_npy_round_trip_keeps_the_layout(rgb_checkpoint, tmp_path, shape):
    array = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    np.save(tmp_path / "in.npy", array)
    run("compress", "--checkpoint", str(rgb_checkpoint), "--budget", "12", "--policy", "naive", "--order-seed", "0",
        str(tmp_path / "in.npy"), str(tmp_path / "c.ardm"))
    run("decompress", "--checkpoint", str(rgb_checkpoint), str(tmp_path / "c.ardm"), str(tmp_path / "out.npy"))
    assert np.array_equal(np.load(tmp_path / "out.npy"), array)


def test_cli_dataset_split_with_order_search_and_optimal_policy(trained_digits, tmp_path, capsys):
    model, _ = trained_digits
    checkpoint_of(model, tmp_path / "digits.pt")
    ckpt = str(tmp_path / "digits.pt")
    run("compress", "--checkpoint", ckpt, "--budget", "8", "--data", "digits", "--orders", "2", "--order-images", "16",
        "--table-images", "32", "--samples-per-step", "2", "digits", str(tmp_path / "digits.ardm"))
    captured = capsys.readouterr()
    out = captured.out
    assert "order search" in out and "180 images of 1x8x8" in out
    assert "step table on train images, 64 steps: 4/4 done in" in captured.err  # --quiet would silence it
    run("decompress", "--checkpoint", ckpt, str(tmp_path / "digits.ardm"), str(tmp_path / "digits.npy"))
    assert np.array_equal(np.load(tmp_path / "digits.npy"), load_dataset("digits", "test").images)


def test_cli_errors(rgb_checkpoint, tmp_path, capsys):
    """Each mistake, through `main`: exit code 2 and one line naming it."""
    ckpt = str(rgb_checkpoint)
    np.save(tmp_path / "in.npy", np.zeros((3, 2, 2), dtype=np.uint8))
    inputs = [str(tmp_path / "in.npy"), str(tmp_path / "c.ardm")]
    assert "--budget" in refused_by_main(capsys, "compress", "--checkpoint", ckpt, "--budget", "13", "--policy",
                                         "naive", "--order-seed", "0", *inputs)
    assert "no such file" in refused_by_main(capsys, "compress", "--checkpoint", ckpt, "--budget", "2",
                                             str(tmp_path / "missing.png"), str(tmp_path / "c"))
    assert "--data" in refused_by_main(capsys, "compress", "--checkpoint", ckpt, "--budget", "2", *inputs)
    assert "nope.pt" in refused_by_main(capsys, "decompress", "--checkpoint", str(tmp_path / "nope.pt"),
                                        str(tmp_path / "c.ardm"), str(tmp_path / "o.npy"))
    run("compress", "--checkpoint", ckpt, "--budget", "2", "--policy", "naive", "--order-seed", "0", *inputs)
    (tmp_path / "cut.ardm").write_bytes((tmp_path / "c.ardm").read_bytes()[:-3])
    assert re.search(r"cut\.ardm: truncated", refused_by_main(capsys, "decompress", "--checkpoint", ckpt,
                                                               str(tmp_path / "cut.ardm"), str(tmp_path / "o.npy")))
    other = tmp_path / "other.pt"
    checkpoint_of(unet_model((3, 2, 2), 256, 256, seed=3), other)
    assert "compressed with model" in refused_by_main(capsys, "decompress", "--checkpoint", str(other),
                                                      str(tmp_path / "c.ardm"), str(tmp_path / "o.npy"))
    assert not (tmp_path / "o.npy").exists()
