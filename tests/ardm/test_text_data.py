"""Text data: the alphabet, normalisation, strict encoding, the text8 reader (on an archive built here in the
official layout), plain-text files, the embedded pydoc corpus and Parquet shards of text."""

import hashlib
import re
import zipfile

import numpy as np
import pytest

from ardm.data import DataError, convert_dataset, load_dataset, load_parquet_split
from ardm.data.corpora import pydoc_codes
from ardm.data.parquet import read_manifest, split_record
from ardm.data.text import ALPHABET, decode_text, encode_text, normalise_text, to_sequences

WORDS = "the quick brown fox jumps over the lazy dog "


def test_alphabet_codes_space_first():
    assert len(ALPHABET) == 27 and ALPHABET[0] == " "
    codes = encode_text(" az")
    assert codes.dtype == np.uint8 and codes.tolist() == [0, 1, 26]
    assert decode_text(encode_text(WORDS)) == WORDS


def test_normalise_as_text8():
    assert normalise_text("  Hello,\n\tWORLD!  Ça va? 42 x ") == "hello world a va x"
    assert normalise_text("...") == ""


@pytest.mark.parametrize(("text", "char", "offset"), [("abc1", "1", 3), ("Hello", "H", 0), ("ok\nno", "\n", 2),
                                                      ("naïve", "ï", 2)])
def test_strict_encoding_names_the_first_offending_character(text, char, offset):
    with pytest.raises(DataError, match=rf"^f.txt: character {re.escape(repr(char))} at offset {offset} is not in"):
        encode_text(text, "f.txt")


def test_sequences_drop_the_rest():
    sequences = to_sequences(np.arange(10, dtype=np.uint8), 4)
    assert sequences.shape == (2, 1, 1, 4) and sequences[1, 0, 0].tolist() == [4, 5, 6, 7]


def _text8_zip(path, text: str) -> str:
    """A text8.zip in the official layout (one member named text8, one line); returns its md5."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("text8", text)
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def text8_archive(tmp_path):
    text = (WORDS * 50)[:2000]  # 2000 characters: train the first 1800, test the last 100
    path = tmp_path / "text8.zip"
    return path, _text8_zip(path, text), text


def test_text8_split_and_length(text8_archive):
    path, md5, text = text8_archive
    train = load_dataset(f"text8:{path}?md5={md5}&length=100", "train")
    test = load_dataset(f"text8:{path.parent}?md5={md5}&length=30", "test")  # the folder holding text8.zip
    assert train.modality == test.modality == "text" and train.num_classes == 27
    assert train.images.shape == (18, 1, 1, 100) and test.images.shape == (3, 1, 1, 30)
    assert decode_text(train.images) == text[:1800]
    assert decode_text(test.images) == text[1900:1990]
    assert load_dataset(f"text8:{path}?verify=0", "train").images.shape == (7, 1, 1, 250)  # the default length
    with pytest.raises(DataError, match="too little text for one sequence of 250 characters"):
        load_dataset(f"text8:{path}?verify=0", "test")


def test_text8_md5_mismatch_is_one_line(text8_archive):
    path, _, _ = text8_archive
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: md5 mismatch \(expected f26f94c5"):
        load_dataset(f"text8:{path}", "train")  # the official md5 by default
    with pytest.raises(DataError, match="md5 mismatch") as info:
        load_dataset(f"text8:{path}?md5={'0' * 32}", "train")
    assert "\n" not in str(info.value)


def test_text8_bad_archives(tmp_path):
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("text9", "abc")
    with pytest.raises(DataError, match="archive lacks the member 'text8'"):
        load_dataset(f"text8:{other}?verify=0", "train")
    upper = tmp_path / "upper.zip"
    _text8_zip(upper, "abc Def")
    with pytest.raises(DataError, match=r"upper.zip: text8: character 'D' at offset 4 is not in the alphabet"):
        load_dataset(f"text8:{upper}?verify=0", "train")
    with pytest.raises(DataError, match=r"download=1 downloads it"):
        load_dataset(f"text8:{tmp_path / 'missing.zip'}", "train")


def test_txt_file_and_folder(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_text("First file.\n" * 40)
    (tmp_path / "b" / "c.txt").write_text("SECOND, file!\n" * 40)
    (tmp_path / "b" / "skip.md").write_text("not read")
    single = load_dataset(f"txt:{tmp_path / 'a.txt'}?length=10&test=0.25", "train")
    assert single.images.shape == (32, 1, 1, 10)  # 439 characters: 43 sequences, 11 of them test
    folder = [load_dataset(f"txt:{tmp_path}?length=10", split) for split in ("train", "test")]
    text = decode_text(np.concatenate([d.images for d in folder]))
    assert "not read" not in text and len(folder[1].images) == 9  # 439 + 1 + 479 characters: 91 sequences
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(DataError, match="bad.txt: not a UTF-8 text file"):
        load_dataset(f"txt:{tmp_path}", "train")


def test_pydoc_corpus_sizes_and_fixed_split():
    train, test = (load_dataset("pydoc?length=64", split) for split in ("train", "test"))
    assert train.modality == "text" and train.shape == (1, 1, 64)
    assert len(pydoc_codes()) // 64 == len(train.images) + len(test.images)
    assert len(test.images) == round(0.1 * (len(pydoc_codes()) // 64))
    again = load_dataset("pydoc?length=64", "test")
    np.testing.assert_array_equal(again.images, test.images)
    assert " the " in decode_text(test.images)


def test_parquet_round_trip_keeps_the_modality(tmp_path):
    manifest = convert_dataset("pydoc?length=128", str(tmp_path / "shards"), rows_per_shard=500)
    assert read_manifest(manifest)["modality"] == "text"
    assert split_record(tmp_path / "shards", "test")["modality"] == "text"
    for split in ("train", "test"):
        loaded = load_parquet_split(str(tmp_path / "shards"), split)
        assert loaded.modality == "text" and loaded.num_classes == 27
        np.testing.assert_array_equal(loaded.images, load_dataset("pydoc?length=128", split).images)
    assert load_dataset("parquet:" + str(tmp_path / "shards"), "train").modality == "text"
    photos = convert_dataset("digits", str(tmp_path / "digits"))
    assert load_parquet_split(photos, "test").modality == "image"
