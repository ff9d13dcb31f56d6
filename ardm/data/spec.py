"""Dataset spec strings: one name for a dataset in the CLI, configs and logs.

    <kind>[:<location>][?<key>=<value>[&<key>=<value>...]]

    digits                                   sklearn 8x8 digits, K=17
    photos:8 | photos:16 | photos:32         patches of sklearn's sample photos, K=256
    cifar10                                  the official archive, downloaded once into the cache folder
    cifar10:<cifar-10-python.tar.gz or cifar-10-batches-py folder>   options md5, verify, download
    npy:<file.npy>  npz:<file.npz>           options k, layout, test
    png:<folder>                             options k, test
    parquet:<folder or URI>                  option verify
    text8                                    the official text8.zip, downloaded once into the cache folder
    text8:<text8.zip or its folder>          options md5, verify, download, length
    pydoc                                    Python's own help texts as English text (ardm.data.corpora), option length
    txt:<file or folder>                     plain text (every *.txt under a folder), options length, test

Options: k=<int> (K, num_classes; default 256, every uint8 value, or 2 for 1-bit PNGs), layout=nchw|nhwc,
test=<fraction in (0, 1)>, md5=<32 hex digits>, verify=0|1, download=0|1 (cifar10:<path>, text8:<path>: fetch
the official archive to <path> if nothing is there), length=<characters per sequence> (text; default 250).
Downloads: see ardm.data.download (ARDM_CACHE, ARDM_MIRROR, ARDM_<KIND>_URL). Text kinds give sequences of
`length` characters in the text8 alphabet as (N, 1, 1, length), K = 27, modality "text" (ardm.data.text).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ardm.data.arrays import LAYOUTS, load_npy, load_npz, load_png_folder
from ardm.data.cifar import ARCHIVE_NAME, load_cifar10, locate
from ardm.data.corpora import CORPUS_NAME, load_pydoc_corpus
from ardm.data.dataset import DEFAULT_TEST_FRACTION, DataError, ImageDataset, check_split
from ardm.data.download import SOURCES, cache_dir, fetch_source
from ardm.data.embedded import PATCH_SIZES, load_digits_dataset, load_photo_patches
from ardm.data.parquet import load_parquet_split, write_parquet_shards
from ardm.data.text import DEFAULT_LENGTH, load_text_files
from ardm.data.text8 import load_text8, locate_text8

FORMS = (
    "digits",
    "photos:8|16|32",
    "cifar10[:<archive or folder>]",
    "npy:<file>",
    "npz:<file>",
    "png:<folder>",
    "parquet:<folder or URI>",
    "text8[:<archive or folder>]",
    CORPUS_NAME,
    "txt:<file or folder>",
)
# The options each kind accepts.
KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    "digits": (),
    "photos": (),
    "cifar10": ("download", "md5", "verify"),
    "npy": ("k", "layout", "test"),
    "npz": ("k", "layout", "test"),
    "png": ("k", "test"),
    "parquet": ("verify",),
    "text8": ("download", "length", "md5", "verify"),
    CORPUS_NAME: ("length",),
    "txt": ("length", "test"),
}
# Kinds whose location may be left out: embedded data, or an official archive fetched into the cache.
NO_LOCATION = ("digits", "photos", "cifar10", "text8", CORPUS_NAME)


def _parse_k(value: str) -> int:
    k = int(value)
    if not 2 <= k <= 256:
        raise ValueError("must be between 2 and 256")
    return k


def _parse_layout(value: str) -> str:
    if value not in LAYOUTS:
        raise ValueError(f"must be one of {', '.join(LAYOUTS)}")
    return value


def _parse_test(value: str) -> float:
    fraction = float(value)
    if not 0.0 < fraction < 1.0:
        raise ValueError("must be in (0, 1)")
    return fraction


def _parse_length(value: str) -> int:
    length = int(value)
    if length < 1:
        raise ValueError("must be >= 1")
    return length


def _parse_md5(value: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{32}", value):
        raise ValueError("must be 32 hex digits")
    return value.lower()


def _parse_flag(value: str) -> bool:
    if value not in ("0", "1"):
        raise ValueError("must be 0 or 1")
    return value == "1"


# option -> (parse the text into a typed value, format a typed value back into canonical text)
OPTIONS: dict[str, tuple[Callable[[str], object], Callable[[object], str]]] = {
    "k": (_parse_k, str),
    "layout": (_parse_layout, str),
    "test": (_parse_test, repr),
    "md5": (_parse_md5, str),
    "verify": (_parse_flag, lambda value: "1" if value else "0"),
    "download": (_parse_flag, lambda value: "1" if value else "0"),
    "length": (_parse_length, str),
}


@dataclass(frozen=True)
class DataSpec:
    """A parsed spec: kind, location ("" for digits) and typed options (read-only mapping).

    Build it with parse_spec, which validates; str() gives back the canonical spec (options sorted).
    """

    kind: str
    location: str = ""
    # Excluded from the hash (a mapping is unhashable) but still compared by ==.
    options: Mapping[str, object] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def __str__(self) -> str:
        head = f"{self.kind}:{self.location}" if self.location else self.kind
        query = "&".join(f"{key}={OPTIONS[key][1](value)}" for key, value in sorted(self.options.items()))
        return f"{head}?{query}" if query else head


def parse_spec(spec: str) -> DataSpec:
    """Parse and validate a spec string (see the module docstring for the forms)."""
    head, _, query = spec.partition("?")
    kind, _, location = head.partition(":")
    if kind not in KIND_OPTIONS:
        raise DataError(f"{spec}: unknown dataset kind {kind!r} (valid: {', '.join(FORMS)})")
    if kind in ("digits", CORPUS_NAME) and location:
        raise DataError(f"{spec}: {kind} takes no location")
    if kind == "photos" and location not in {str(size) for size in PATCH_SIZES}:
        problem = f"patch size {location} is not available" if location else "photos needs a patch size"
        raise DataError(f"{spec}: {problem} (valid: {', '.join(f'photos:{size}' for size in PATCH_SIZES)})")
    if kind not in NO_LOCATION and not location:
        raise DataError(f"{spec}: {kind} needs a location (valid: {', '.join(FORMS)})")
    options: dict[str, object] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        valid = KIND_OPTIONS[kind]
        if key not in valid or not sep:
            listed = ", ".join(f"{name}=" for name in valid) or "none"
            raise DataError(f"{spec}: unknown option {item!r} for {kind} (valid: {listed})")
        try:
            options[key] = OPTIONS[key][0](value)
        except ValueError as exc:
            raise DataError(f"{spec}: option {key}={value!r} {exc}") from exc
    return DataSpec(kind, location, options)


def load_dataset(spec: str | DataSpec, split: str) -> ImageDataset:
    """Load `split` ("train" or "test") of the dataset named by `spec`: uint8 (N, C, H, W) (text: (N, 1, 1, L))."""
    parsed = parse_spec(str(spec))
    check_split(split, str(parsed))
    kind, location, options = parsed.kind, parsed.location, parsed.options
    test = options.get("test", DEFAULT_TEST_FRACTION)
    if kind == "digits":
        return load_digits_dataset(split)
    if kind == "photos":
        return load_photo_patches(split, int(location))
    if kind == "cifar10":
        return _load_cifar10(location, split, options)
    if kind == "npy":
        return load_npy(location, split, options.get("k"), options.get("layout"), test)
    if kind == "npz":
        return load_npz(location, split, options.get("k"), options.get("layout"), test)
    if kind == "png":
        return load_png_folder(location, split, options.get("k"), test)
    length = int(options.get("length", DEFAULT_LENGTH))
    if kind == "text8":
        return _load_text8(location, split, length, options)
    if kind == CORPUS_NAME:
        return load_pydoc_corpus(split, length)
    if kind == "txt":
        return load_text_files(location, split, length, test)
    return load_parquet_split(location, split, verify=options.get("verify", True))


def _load_cifar10(location: str, split: str, options: Mapping[str, object]) -> ImageDataset:
    """cifar10 (the cached download), cifar10:<path>, or cifar10:<path>?download=1 (fetched there if missing)."""
    verify = bool(options.get("verify", True))
    md5 = str(options.get("md5", SOURCES["cifar10"].md5)) if verify else None
    if not location:
        # fetch_source checks the md5 (of a cached copy too), so the loader need not hash the file again.
        return load_cifar10(fetch_source("cifar10", md5), split, md5=None, verify=verify)
    path = Path(location)
    try:
        locate(path)
    except DataError as exc:
        if not options.get("download"):
            if path.exists():
                raise
            raise DataError(
                f"{location}: no such file or directory (spec cifar10 without a path downloads the official archive"
                f" into {cache_dir()}; cifar10:{location}?download=1 downloads it to this path)"
            ) from exc
        target = path if path.name.endswith((".tar.gz", ".tgz")) else path / ARCHIVE_NAME
        return load_cifar10(fetch_source("cifar10", md5, target), split, md5=None, verify=verify)
    return load_cifar10(location, split, md5, verify)


def _load_text8(location: str, split: str, length: int, options: Mapping[str, object]) -> ImageDataset:
    """text8 (the cached download), text8:<path>, or text8:<path>?download=1 (fetched there if missing)."""
    md5 = str(options.get("md5", SOURCES["text8"].md5)) if options.get("verify", True) else None
    if not location:
        # fetch_source checks the md5 (of a cached copy too), so the reader need not hash the file again.
        return load_text8(fetch_source("text8", md5), split, length, md5=None)
    path = Path(location)
    try:
        locate_text8(path)
    except DataError as exc:
        if not options.get("download"):
            raise DataError(
                f"{location}: no such file (spec text8 without a path downloads the official archive into "
                f"{cache_dir()}; text8:{location}?download=1 downloads it to this path)"
            ) from exc
        target = path / SOURCES["text8"].name if path.is_dir() or not path.suffix else path
        return load_text8(fetch_source("text8", md5, target), split, length, md5=None)
    return load_text8(path, split, length, md5)


def convert_dataset(spec: str, out_dir: str, rows_per_shard: int = 10000) -> str:
    """Load both splits of `spec` and write them as parquet shards; returns the manifest path or URI."""
    train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
    return write_parquet_shards(train, test, out_dir, rows_per_shard, source=spec)
