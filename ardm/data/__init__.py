"""Data layer: every dataset is an ImageDataset (uint8 (N, C, H, W), K classes; text as (N, 1, 1, L)) of a
modality (ardm.modality), named by a spec string."""

from ardm.data.cifar import write_cifar10_archive
from ardm.data.dataset import DataError, ImageDataset, spread_indices
from ardm.data.download import cache_dir, fetch
from ardm.data.parquet import load_parquet_split, write_parquet_shards
from ardm.data.spec import DataSpec, convert_dataset, load_dataset, parse_spec

__all__ = [
    "DataError",
    "DataSpec",
    "ImageDataset",
    "cache_dir",
    "convert_dataset",
    "fetch",
    "load_dataset",
    "load_parquet_split",
    "parse_spec",
    "spread_indices",
    "write_cifar10_archive",
    "write_parquet_shards",
]
