"""The `ardm` commands on a text model: train (configs/text.yaml), evaluate, sample (.txt), budgets in bits per
character, and compress / decompress of .txt files byte for byte, other text refused in one line."""

import contextlib
import io
from pathlib import Path

import pytest

from ardm.config import load_config
from ardm.data.text import ALPHABET
from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHORT = ["--set", "data=pydoc?length=16", "--set", "train.steps=4", "--set", "train.batch_size=8",
         "--set", "train.checkpoint_every=4", "--set", "eval.max_images=16", "--set", "eval.sample_grid=3",
         "--set", "model.network.num_layers=1"]


def test_shipped_text_config_validates():
    config = load_config(ROOT / "configs" / "text.yaml")
    assert config.data == "pydoc?length=64" and config.model.preset == "cpu-text" and config.model.branching == 27


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """(output folder, what `ardm train` printed) of a few steps of configs/text.yaml at length 16."""
    out = tmp_path_factory.mktemp("text") / "run"
    printed = io.StringIO()  # a module-scoped fixture cannot take capsys
    with contextlib.redirect_stdout(printed):
        assert main(["train", str(ROOT / "configs" / "text.yaml"), *SHORT, "--set", f"output={out}", "--quiet"]) == 0
    return out, printed.getvalue()


def test_train_evaluate_and_sample_speak_bits_per_character(text_run, tmp_path, capsys):
    out, printed = text_run
    assert "pydoc?length=16" in printed and "bpc" in printed and "16 sequences" in printed
    samples = (out / "samples.txt").read_text().splitlines()
    assert len(samples) == 4 and all(len(line) == 16 and set(line) <= set(ALPHABET) for line in samples)  # 3 -> 2x2
    ckpt = str(out / "checkpoint.pt")
    assert main(["evaluate", "--checkpoint", ckpt, "--data", "pydoc?length=16", "--max-images", "8", "--quiet"]) == 0
    assert "bpc over 8 sequences (bits per character)" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", ckpt, "--num", "5", "--quiet", str(tmp_path / "s.txt")]) == 0
    lines = (tmp_path / "s.txt").read_text().splitlines()
    assert len(lines) == 5 and all(len(line) == 16 and set(line) <= set(ALPHABET) for line in lines)
    capsys.readouterr()
    assert main(["sample", "--checkpoint", ckpt, "--num", "2", str(tmp_path / "s.png")]) == 2
    assert "samples of a text model are written to a .txt file" in capsys.readouterr().err


def test_budgets_in_bits_per_character(text_run, tmp_path, capsys):
    out, _ = text_run
    args = ["budgets", "--checkpoint", str(out / "checkpoint.pt"), "--data", "pydoc?length=16", "--budgets", "2,4,full",
            "--max-images", "8", "--table-images", "16", "--samples-per-step", "2", "--samples", "2", "--quiet",
            "--out", str(tmp_path / "b")]
    assert main(args) == 0
    assert "bits per character; excess" in capsys.readouterr().out
    assert len((tmp_path / "b" / "samples_budget_2.txt").read_text().splitlines()) == 2


@pytest.mark.parametrize("text", ["hello world\n", "the quick brown fox jumps over the lazy dog", "", "\n",
                                  "  two  spaces  and a final line break at the end of a longer text\n"])
def test_text_files_round_trip_byte_for_byte(text_run, tmp_path, capsys, text):
    ckpt = str(text_run[0] / "checkpoint.pt")
    (tmp_path / "in.txt").write_text(text)
    coding = ["--budget", "4", "--policy", "naive", "--order-seed", "3", "--quiet"]
    assert main(["compress", "--checkpoint", ckpt, *coding, str(tmp_path / "in.txt"), str(tmp_path / "c.ardm")]) == 0
    assert "bits per character of the text" in capsys.readouterr().out
    assert main(["decompress", "--checkpoint", ckpt, str(tmp_path / "c.ardm"), str(tmp_path / "out.txt")]) == 0
    assert (tmp_path / "out.txt").read_bytes() == text.encode()


@pytest.mark.parametrize(("text", "refusal"), [
    ("hello World", "character 'W' at offset 6"),
    ("two\nlines\n", "character '\\n' at offset 3"),
    ("crlf\r\n", "character '\\r' at offset 4"),
    ("café au lait", "character 'é' at offset 3"),
])
def test_other_text_is_refused_in_one_line(text_run, tmp_path, capsys, text, refusal):
    ckpt = str(text_run[0] / "checkpoint.pt")
    (tmp_path / "in.txt").write_text(text)
    args = ["compress", "--checkpoint", ckpt, "--budget", "4", "--policy", "naive", "--order-seed", "0",
            str(tmp_path / "in.txt"), str(tmp_path / "c.ardm")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and f"in.txt: {refusal} is not in the alphabet (a-z and space)" in err
    assert not (tmp_path / "c.ardm").exists()
