"""Tests of the data layer: every loader against known contents, and every documented failure."""

from __future__ import annotations

import collections
import io
import json
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

from ardm.data import (
    DataError,
    DataSpec,
    ImageDataset,
    convert_dataset,
    load_dataset,
    load_parquet_split,
    parse_spec,
    write_cifar10_archive,
    write_parquet_shards,
)
from ardm.data.arrays import load_npy, load_npz, load_png_folder
from ardm.data.cifar import load_cifar10
from ardm.data.dataset import split_indices
from ardm.data.embedded import load_digits_dataset, load_photo_patches
from ardm.data.parquet import read_manifest


def _random_images(seed: int, shape: tuple[int, ...], high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, shape, dtype=np.uint8)


# ---------------------------------------------------------------- ImageDataset and the split


def test_image_dataset_properties_and_immutability():
    images = _random_images(0, (4, 3, 5, 6), high=7)
    dataset = ImageDataset(images, 7, "toy")
    assert dataset.shape == (3, 5, 6)
    assert dataset.num_variables == 90
    with pytest.raises(ValueError):
        dataset.images[0, 0, 0, 0] = 1
    images[0, 0, 0, 0] = 1  # the caller's own array stays writable


@pytest.mark.parametrize(
    ("images", "k", "message"),
    [
        (np.zeros((2, 1, 3, 3), np.float32), 4, "toy: expected a uint8 array, got float32"),
        (np.zeros((2, 3, 3), np.uint8), 4, "toy: expected images shaped (N, C, H, W)"),
        (np.zeros((0, 1, 3, 3), np.uint8), 4, "toy: empty dataset"),
        (np.zeros((2, 1, 3, 3), np.uint8), 1, "toy: K must be an integer between 2 and 256"),
        (np.zeros((2, 1, 3, 3), np.uint8), 257, "toy: K must be an integer between 2 and 256"),
    ],
)
def test_image_dataset_rejects(images, k, message):
    with pytest.raises(DataError) as info:
        ImageDataset(images, k, "toy")
    assert str(info.value).startswith(message)


def test_image_dataset_value_error_names_first_offending_index():
    images = np.zeros((4, 2, 3, 3), np.uint8)
    images[3, 1, 2, 0] = 9
    images[2, 0, 1, 2] = 5
    with pytest.raises(DataError, match=r"^toy: value 5 >= K=5 at index \(2, 0, 1, 2\)$"):
        ImageDataset(images, 5, "toy")


def test_data_error_is_one_line():
    assert str(DataError("a.npy: bad\n  detail")) == "a.npy: bad detail"


def test_split_is_pinned_disjoint_and_complete():
    # Pinned values: if numpy's Generator stream ever changes, every stored split would silently move.
    assert split_indices(10, "test").tolist() == [4]
    assert split_indices(20, "test").tolist() == [4, 19]
    train, test = split_indices(1797, "train"), split_indices(1797, "test")
    assert len(test) == 180 and len(train) == 1617
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    with pytest.raises(DataError, match="unknown split 'val'"):
        split_indices(10, "val")
    with pytest.raises(DataError, match="too few"):
        split_indices(1, "train")


# ---------------------------------------------------------------- CIFAR-10


@pytest.fixture
def cifar_archive(tmp_path):
    train, test = _random_images(1, (12, 3, 32, 32)), _random_images(2, (3, 3, 32, 32))
    path = tmp_path / "cifar-10-python.tar.gz"
    md5 = write_cifar10_archive(path, train, test)
    return path, md5, train, test


def test_cifar_archive_round_trip(cifar_archive):
    path, md5, train, test = cifar_archive
    loaded_train = load_cifar10(path, "train", md5=md5)
    loaded_test = load_cifar10(path, "test", md5=md5)
    assert loaded_train.num_classes == 256 and loaded_train.shape == (3, 32, 32)
    np.testing.assert_array_equal(loaded_train.images, train)
    np.testing.assert_array_equal(loaded_test.images, test)
    via_spec = load_dataset(f"cifar10:{path}?md5={md5}", "train")
    np.testing.assert_array_equal(via_spec.images, train)
    # The parent folder of the archive is accepted too.
    np.testing.assert_array_equal(load_cifar10(path.parent, "test", md5=md5).images, test)


def _batch_payload(rows: np.ndarray) -> bytes:
    return pickle.dumps({b"data": rows, b"labels": [3] * len(rows)}, protocol=2)


def test_cifar_reads_official_layout_independently_of_the_writer(tmp_path):
    # Built by hand in the published layout (one CHW row per image), members deliberately out of order and
    # with the extra files of the real archive, so the loader is not just checked against its own writer.
    path = tmp_path / "hand.tar.gz"
    planes = {
        name: np.full((1, 3072), i, np.uint8)
        for i, name in enumerate(
            ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
        )
    }
    planes["data_batch_2"][0, :1024], planes["data_batch_2"][0, 1024:2048] = 200, 100  # R=200 G=100 B=1
    with tarfile.open(path, "w:gz") as tar:
        members = [
            "batches.meta",
            "data_batch_4",
            "test_batch",
            "data_batch_2",
            "data_batch_1",
            "data_batch_5",
            "data_batch_3",
        ]
        for name in members:
            payload = _batch_payload(planes[name]) if name in planes else pickle.dumps({b"label_names": []})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    train = load_cifar10(path, "train", verify=False).images
    assert train[:, 2, 5, 7].tolist() == [0, 1, 2, 3, 4]  # batches 1..5 in order, whatever the tar order
    assert (train[1, 0] == 200).all() and (train[1, 1] == 100).all() and (train[1, 2] == 1).all()
    assert (load_cifar10(path, "test", verify=False).images == 5).all()


def test_cifar_extracted_folder(cifar_archive, tmp_path):
    path, _, train, test = cifar_archive
    out = tmp_path / "extracted"
    with tarfile.open(path) as tar:
        tar.extractall(out, filter="data")
    folder = out / "cifar-10-batches-py"
    np.testing.assert_array_equal(load_cifar10(folder, "train", verify=False).images, train)
    np.testing.assert_array_equal(load_cifar10(out, "test", verify=False).images, test)
    # Our batches are not the published ones, so the per-file md5 check must reject them.
    with pytest.raises(DataError, match=rf"^{re.escape(str(folder / 'data_batch_1'))}: md5 mismatch"):
        load_cifar10(folder, "train")


def test_cifar_errors_name_the_file(cifar_archive, tmp_path):
    path, md5, _, _ = cifar_archive
    with pytest.raises(DataError) as info:
        load_cifar10(path, "train")  # the official md5 by default
    assert str(path) in str(info.value) and "md5" in str(info.value)
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path / 'nope.tar.gz'))}: no such file"):
        load_cifar10(tmp_path / "nope.tar.gz", "train")
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(DataError, match=f"^{re.escape(str(garbage))}: not a readable tar.gz archive"):
        load_cifar10(garbage, "train", verify=False)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=f"^{re.escape(str(truncated))}: "):
        load_cifar10(truncated, "test", verify=False)
    with pytest.raises(DataError, match="unknown split"):
        load_cifar10(path, "valid", md5=md5)


def test_cifar_rejects_bad_batches_without_running_code(tmp_path):
    for name, batch in [
        ("shape", {b"data": np.zeros((2, 100), np.uint8)}),
        ("global", {b"data": collections.OrderedDict()}),
    ]:
        path = tmp_path / f"{name}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            payload = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        with pytest.raises(DataError, match=f"^{re.escape(str(path))}: cifar-10-batches-py/test_batch: "):
            load_cifar10(path, "test", verify=False)
        with pytest.raises(DataError, match="archive lacks cifar-10-batches-py/data_batch_1"):
            load_cifar10(path, "train", verify=False)


# ---------------------------------------------------------------- embedded datasets


def test_digits():
    train, test = load_digits_dataset("train"), load_digits_dataset("test")
    assert train.shape == test.shape == (1, 8, 8) and train.num_classes == 17 and train.name == "digits"
    assert len(train.images) + len(test.images) == 1797
    reference = load_digits().images.astype(np.uint8)[:, None]
    train_index, test_index = split_indices(1797, "train"), split_indices(1797, "test")
    assert not set(train_index.tolist()) & set(test_index.tolist())
    np.testing.assert_array_equal(train.images, reference[train_index])
    np.testing.assert_array_equal(test.images, reference[test_index])
    np.testing.assert_array_equal(load_dataset("digits", "test").images, test.images)


@pytest.mark.parametrize(("patch", "total"), [(8, 8480), (16, 2080), (32, 520)])
def test_photo_patches(patch, total):
    train, test = load_photo_patches("train", patch), load_photo_patches("test", patch)
    assert train.shape == (3, patch, patch) and train.num_classes == 256 and train.name == f"photos:{patch}"
    assert len(train.images) + len(test.images) == total
    # Patch i of the full list is row i // cols, column i % cols of china.jpg for i in the first half.
    china = load_sample_images().images[0]
    cols = china.shape[1] // patch
    i = int(split_indices(total, "train")[3])
    row, col = divmod(i, cols)
    expected = china[row * patch : (row + 1) * patch, col * patch : (col + 1) * patch].transpose(2, 0, 1)
    np.testing.assert_array_equal(train.images[3], expected)


def test_photo_patch_size_is_checked():
    with pytest.raises(DataError, match="photos:12: patch size must be one of 8, 16, 32"):
        load_photo_patches("train", 12)


# ---------------------------------------------------------------- .npy / .npz


def test_npy_layouts_agree(tmp_path):
    nchw = _random_images(3, (20, 3, 5, 6), high=10)
    np.save(tmp_path / "nchw.npy", nchw)
    np.save(tmp_path / "nhwc.npy", nchw.transpose(0, 2, 3, 1))
    for split in ("train", "test"):
        a, b = load_npy(tmp_path / "nchw.npy", split), load_npy(tmp_path / "nhwc.npy", split)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.images, nchw[split_indices(20, split)])
        assert a.num_classes == 256  # uint8 data: K = 256 unless the spec says otherwise
        assert a.images.flags.c_contiguous and b.images.flags.c_contiguous


def test_uint8_data_has_k_256_unless_the_spec_says_otherwise(tmp_path):
    """Photos whose brightest pixel is 254 are 8-bit data all the same: K = 256, as for other photos."""
    images = np.full((10, 3, 5, 6), 254, np.uint8)
    np.save(tmp_path / "dim.npy", images)
    np.savez(tmp_path / "dim.npz", x=images)
    assert load_dataset(f"npy:{tmp_path / 'dim.npy'}", "train").num_classes == 256
    assert load_dataset(f"npz:{tmp_path / 'dim.npz'}", "train").num_classes == 256
    assert load_dataset(f"npy:{tmp_path / 'dim.npy'}?k=255", "train").num_classes == 255


def test_npy_gray_and_options(tmp_path):
    gray = _random_images(4, (10, 4, 4), high=2)
    np.save(tmp_path / "gray.npy", gray)
    dataset = load_dataset(f"npy:{tmp_path / 'gray.npy'}?k=4&test=0.3", "test")
    assert dataset.shape == (1, 4, 4) and dataset.num_classes == 4
    np.testing.assert_array_equal(dataset.images[:, 0], gray[split_indices(10, "test", 0.3)])


def test_npy_errors_name_the_file(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros((4, 3, 5, 5), np.float32))
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: expected a uint8 array, got float32$"):
        load_npy(path, "train")
    images = np.zeros((4, 5, 5, 3), np.uint8)
    images[2, 1, 4, 0] = 7
    np.save(path, images)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: value 7 >= K=6 at index \(2, 1, 4, 0\)$"):
        load_npy(path, "train", num_classes=6)
    np.save(path, np.zeros((4, 3, 5, 3), np.uint8))
    with pytest.raises(
        DataError, match=f"^{re.escape(str(path))}: cannot tell NCHW from NHWC .* layout=nchw or layout=nhwc"
    ):
        load_npy(path, "train")
    assert load_npy(path, "train", layout="nhwc").shape == (3, 3, 5)
    with pytest.raises(DataError, match=f"^{re.escape(str(tmp_path / 'missing.npy'))}: no such file"):
        load_dataset(f"npy:{tmp_path / 'missing.npy'}", "train")


def test_npz_splits(tmp_path):
    train, test = _random_images(5, (6, 2, 2, 1), high=30), _random_images(6, (3, 2, 2, 1), high=50)
    path = tmp_path / "splits.npz"
    np.savez(path, train=train, test=test, labels=np.arange(9))
    loaded = load_npz(path, "train")
    assert loaded.num_classes == 256  # not inferred from the values (below 50 here)
    np.testing.assert_array_equal(loaded.images, train.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(load_npz(path, "test").images, test.transpose(0, 3, 1, 2))
    single = tmp_path / "single.npz"
    np.savez(single, x=train[..., 0], y=np.arange(6))
    np.testing.assert_array_equal(
        load_npz(single, "test").images[:, 0], train[split_indices(6, "test"), ..., 0]
    )
    many = tmp_path / "many.npz"
    np.savez(many, a=train, b=test)
    with pytest.raises(DataError, match=f"^{re.escape(str(many))}: expected arrays"):
        load_npz(many, "train")


# ---------------------------------------------------------------- PNG folders


def _write_pngs(folder: Path, images: np.ndarray, mode: str) -> None:
    folder.mkdir()
    for i, image in enumerate(images):  # image (H, W[, C])
        Image.fromarray(image).convert(mode).save(folder / f"img_{i:03d}.png")


@pytest.mark.parametrize(("mode", "channels"), [("RGB", 3), ("RGBA", 4), ("L", 1)])
def test_png_round_trip(tmp_path, mode, channels):
    shape = (11, 6, 5, channels) if channels > 1 else (11, 6, 5)
    images = _random_images(7, shape)
    _write_pngs(tmp_path / "pngs", images, mode)
    (tmp_path / "pngs" / "notes.txt").write_text("ignored")
    expected = images.reshape(11, 6, 5, channels).transpose(0, 3, 1, 2)
    for split in ("train", "test"):
        dataset = load_dataset(f"png:{tmp_path / 'pngs'}", split)
        assert dataset.num_classes == 256
        np.testing.assert_array_equal(dataset.images, expected[split_indices(11, split)])


def test_png_bilevel_and_palette(tmp_path):
    bits = _random_images(8, (10, 4, 7), high=2)
    _write_pngs(tmp_path / "bits", bits * 255, "1")
    dataset = load_png_folder(tmp_path / "bits", "train")
    assert dataset.num_classes == 2
    np.testing.assert_array_equal(dataset.images[:, 0], bits[split_indices(10, "train")])
    palette = tmp_path / "palette"
    palette.mkdir()
    rgb = _random_images(9, (10, 4, 4, 3), high=4) * 60
    for i, image in enumerate(rgb):
        Image.fromarray(image).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(
            palette / f"{i}.png"
        )
    np.testing.assert_array_equal(
        load_png_folder(palette, "test").images, rgb[split_indices(10, "test")].transpose(0, 3, 1, 2)
    )


def test_png_errors_name_the_file(tmp_path):
    _write_pngs(tmp_path / "pngs", _random_images(10, (5, 6, 5, 3)), "RGB")
    odd = tmp_path / "pngs" / "img_002.png"
    Image.fromarray(_random_images(11, (7, 5, 3))).save(odd)
    with pytest.raises(DataError, match=f"^{re.escape(str(odd))}: mode RGB size 5x7 differs"):
        load_png_folder(tmp_path / "pngs", "train")
    deep = tmp_path / "deep"
    deep.mkdir()
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 999).save(deep / "a.png")
    with pytest.raises(DataError, match=f"^{re.escape(str(deep / 'a.png'))}: 16-bit PNG"):
        load_png_folder(deep, "train")
    _write_pngs(tmp_path / "gray", _random_images(12, (5, 3, 3), high=3) + 1, "L")
    with pytest.raises(
        DataError, match=f"^{re.escape(str(tmp_path / 'gray'))}/img_.*\\.png: value [23] >= K=2"
    ):
        load_png_folder(tmp_path / "gray", "train", num_classes=2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"^{re.escape(str(empty))}: no .png files$"):
        load_png_folder(empty, "train")


# ---------------------------------------------------------------- parquet shards


@pytest.fixture
def shards(tmp_path):
    train = ImageDataset(_random_images(13, (23, 3, 4, 4)), 256, "toy")
    test = ImageDataset(_random_images(14, (7, 3, 4, 4)), 256, "toy")
    manifest = write_parquet_shards(train, test, str(tmp_path / "shards"), rows_per_shard=5)
    return Path(manifest).parent, train, test


def test_parquet_round_trip(shards):
    folder, train, test = shards
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "ardm-parquet" and manifest["version"] == 1
    assert manifest["shape"] == [3, 4, 4] and manifest["num_classes"] == 256 and manifest["name"] == "toy"
    assert [entry["rows"] for entry in manifest["splits"]["train"]] == [5, 5, 5, 5, 3]
    assert [entry["path"] for entry in manifest["splits"]["test"]] == [
        "test-00000.parquet",
        "test-00001.parquet",
    ]
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["manifest.json"]
        + [f"train-{i:05d}.parquet" for i in range(5)]
        + ["test-00000.parquet", "test-00001.parquet"]
    )
    for split, source in (("train", train), ("test", test)):
        loaded = load_parquet_split(str(folder), split)
        assert loaded.num_classes == 256 and loaded.name == "toy"
        np.testing.assert_array_equal(loaded.images, source.images)
    uri = f"file://{folder}"
    np.testing.assert_array_equal(load_parquet_split(uri, "test").images, test.images)
    np.testing.assert_array_equal(load_dataset(f"parquet:{uri}", "train").images, train.images)
    assert read_manifest(str(folder / "manifest.json")) == manifest


@pytest.mark.parametrize("world_size", [1, 2, 3, 5, 7])
def test_parquet_ranks_cover_every_row_once(shards, world_size):
    folder, train, test = shards
    for source, num_shards in ((train, 5), (test, 2)):
        split = "train" if source is train else "test"
        parts = [
            load_parquet_split(str(folder), split, rank, world_size).images for rank in range(world_size)
        ]
        if num_shards >= world_size:  # whole shards: shard i (rows 5i..5i+4) on rank i % world_size
            expected = [
                np.concatenate(
                    [source.images[5 * i : 5 * i + 5] for i in range(rank, num_shards, world_size)]
                )
                for rank in range(world_size)
            ]
        else:  # strided rows
            expected = [source.images[rank::world_size] for rank in range(world_size)]
        for part, want in zip(parts, expected, strict=True):
            np.testing.assert_array_equal(part, want)
        assert sum(len(part) for part in parts) == len(source.images)


def test_parquet_rank_without_rows(shards):
    folder, _, _ = shards
    with pytest.raises(DataError, match="no rows for rank 7 of 8"):
        load_parquet_split(str(folder), "test", rank=7, world_size=8)
    with pytest.raises(DataError, match="rank"):
        load_parquet_split(str(folder), "test", rank=2, world_size=2)


def test_parquet_corruption_is_detected(shards):
    folder, _, _ = shards
    shard = folder / "train-00003.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"^{re.escape(str(folder))}/train-00003.parquet: sha256 mismatch"):
        load_parquet_split(str(folder), "train")
    # Other ranks do not read the damaged shard.
    assert len(load_parquet_split(str(folder), "train", rank=0, world_size=2).images) == 13  # shards 0, 2, 4
    shard.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(
        DataError, match=f"^{re.escape(str(folder))}/train-00003.parquet: not a readable shard"
    ):
        load_parquet_split(str(folder), "train", verify=False)


def test_parquet_missing_manifest(tmp_path):
    with pytest.raises(DataError, match=f"^{re.escape(str(tmp_path))}/manifest.json: no manifest"):
        load_parquet_split(str(tmp_path), "train")


def test_convert_dataset(tmp_path):
    manifest = convert_dataset("digits", str(tmp_path / "digits"), rows_per_shard=500)
    assert read_manifest(manifest)["splits"]["train"][-1]["rows"] == 1617 - 3 * 500
    for split in ("train", "test"):
        loaded = load_parquet_split(str(tmp_path / "digits"), split)
        assert loaded.num_classes == 17 and loaded.name == "digits"
        np.testing.assert_array_equal(loaded.images, load_digits_dataset(split).images)


# ---------------------------------------------------------------- spec strings


@pytest.mark.parametrize(
    "spec",
    [
        "digits",
        "photos:16",
        "cifar10:/data/cifar-10-python.tar.gz?md5=c58f30108f718f92721af3b95e74349a&verify=0",
        "cifar10",
        "cifar10:/data?download=1",
        "npy:/x/a.npy?k=10&layout=nhwc&test=0.2",
        "npz:rel/x.npz",
        "png:/x/dir?k=2",
        "parquet:s3://bucket/dir?verify=1",
    ],
)
def test_spec_round_trip(spec):
    parsed = parse_spec(spec)
    assert str(parsed) == spec
    assert parse_spec(str(parsed)) == parsed and hash(parse_spec(spec)) == hash(parsed)


def test_spec_parsing_is_typed_and_canonical():
    parsed = parse_spec("npy:/x/a.npy?test=0.25&k=12")
    assert parsed == DataSpec("npy", "/x/a.npy", {"k": 12, "test": 0.25})
    assert str(parsed) == "npy:/x/a.npy?k=12&test=0.25"
    assert parse_spec("parquet:gs://b/d?verify=0").options["verify"] is False
    assert parse_spec("cifar10:/c?md5=C58F30108F718F92721AF3B95E74349A").options["md5"] == (
        "c58f30108f718f92721af3b95e74349a"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mnist:/x", "unknown dataset kind 'mnist' (valid: digits, photos:8|16|32, cifar10[:"),
        ("photos", "photos needs a patch size (valid: photos:8, photos:16, photos:32)"),
        ("photos:9", "patch size 9 is not available (valid: photos:8, photos:16, photos:32)"),
        ("digits:/x", "digits takes no location"),
        ("npy:", "npy needs a location"),
        ("npy:/x.npy?md5=00", "unknown option 'md5=00' for npy (valid: k=, layout=, test=)"),
        ("digits?k=3", "unknown option 'k=3' for digits (valid: none)"),
        ("npy:/x.npy?k", "unknown option 'k' for npy"),
        ("npy:/x.npy?k=1", "option k='1' must be between 2 and 256"),
        ("npy:/x.npy?k=abc", "option k='abc'"),
        ("npy:/x.npy?layout=chw", "option layout='chw' must be one of nchw, nhwc"),
        ("png:/x?test=1.5", "option test='1.5' must be in (0, 1)"),
        ("parquet:/x?verify=yes", "option verify='yes' must be 0 or 1"),
    ],
)
def test_spec_errors(spec, message):
    with pytest.raises(DataError) as info:
        parse_spec(spec)
    assert str(info.value).startswith(f"{spec}: {message}")


def test_load_dataset_checks_split():
    with pytest.raises(DataError, match="unknown split 'validation'"):
        load_dataset("digits", "validation")
