"""Fault: compression on another kind of device. CPU and CUDA kernels round differently, so a file
records the device kind that coded it and decodes only there; CUDA coding is refused unless cuBLAS
is deterministic. (No GPU in CI: a CUDA file is made by writing its header mark, and the cuBLAS
check runs before any CUDA call.)"""

import dataclasses
import os

import pytest
import torch

from ardm.compression import (
    CompressionError,
    decompress,
    fingerprint,
    read_container,
    write_container,
)
from ardm.compression.coder import deterministic_torch, prepare_cuda_determinism
from tests.support.reference import coded_tiny_images


@pytest.fixture(scope="module")
def coded():
    return coded_tiny_images(3, batch_size=2)


def test_cuda_coding_needs_a_deterministic_cublas_workspace(monkeypatch):
    """CUDA coding (num_threads 0) is refused unless cuBLAS got a deterministic workspace before
    CUDA started; prepare_cuda_determinism sets one and keeps a valid one the user chose."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with pytest.raises(CompressionError, match="CUBLAS_WORKSPACE_CONFIG=:4096:8"), deterministic_torch(0):
        pass
    prepare_cuda_determinism()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    prepare_cuda_determinism()
    threads = torch.get_num_threads()
    with deterministic_torch(0):  # the CPU thread count is left alone
        assert torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == threads
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_a_file_decodes_only_on_the_kind_of_device_that_coded_it(coded):
    """The header records the coding device (0 threads: CUDA); a CPU model refuses a CUDA file
    with one line naming both kinds and the flag, before decoding anything."""
    model, images, result = coded
    assert result.header.device_kind == "cpu" and result.header.num_threads >= 1
    d = model.num_variables
    container = read_container(result.data, fingerprint(model), model.num_stages, d)
    on_cuda = dataclasses.replace(container.header, num_threads=0)
    data = write_container(on_cuda, container.streams, images, d)
    assert read_container(data, fingerprint(model), model.num_stages, d).header.device_kind == "cuda"
    with pytest.raises(CompressionError) as err:
        decompress(model, data)
    message = str(err.value)
    assert "\n" not in message
    assert "coded on cuda" in message and "not on cpu" in message and "--device cuda" in message
