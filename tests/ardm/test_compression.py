"""Lossless compression: bit-exact rANS round trips, sizes against the model's NLL, the container's
errors and the order search (the compress / decompress commands: tests/orchestrator/test_compress_cli.py)."""

import dataclasses
import math
import zlib

import numpy as np
import pytest
import torch

from ardm.compression import (
    CompressionError,
    budget_policy,
    choose_order,
    compress,
    compressed_bpd,
    decompress,
    fingerprint,
    fixed_orders,
    policy_nll_bits,
    read_container,
    write_container,
)
from ardm.compression.coder import (
    FAMILY,
    AnsCoder,
    decode_batch,
    deterministic_torch,
    known_chunks,
)
from ardm.data import load_dataset
from tests.support.reference import coded_tiny_images, tiny_ardm, unet_model

# (K, b, parameterization, shape): OA; upscale with K a power of b; upscale with impossible digits.
MODELS = [(16, 16, "data", (1, 2, 3)), (16, 2, "data", (1, 2, 3)), (10, 3, "direct", (1, 2, 2)),
          (10, 3, "data", (2, 1, 2))]


def reference_bits(model, images: np.ndarray, order_seed: int, policy) -> np.ndarray:
    """-log2 p(image) (N,) under the codec's orders and a policy, from the model's float32 log-probs:
    per chunk one call on the true images, summed over the chunk's variables (no coder code involved)."""
    ranks = torch.from_numpy(fixed_orders(order_seed, model.num_stages, model.num_variables))
    x = torch.tensor(images, dtype=torch.long)
    n, d = len(images), model.num_variables
    bits = torch.zeros(n, dtype=torch.float64)
    with torch.no_grad():
        for j, starts in enumerate(policy):
            stage = torch.full((n,), j)
            digits = model.upscaler.digit(x, j).flatten(1)
            for a, b in zip(starts, [*starts[1:], d], strict=True):
                t = torch.full((n,), a)
                x_shown, mask = model.step_inputs(x, ranks[j].expand(n, d), stage, t)
                log_p = model(x_shown, mask, stage, t).flatten(1, 3)
                chunk = ((ranks[j] >= a) & (ranks[j] < b)).nonzero().flatten()
                picked = log_p[:, chunk].gather(-1, digits[:, chunk, None])[..., 0]
                bits -= picked.double().sum(1) / math.log(2)
    return bits.numpy()


def check_round_trip(model, images, policy, seed, batch_size):
    result = compress(model, images, policy, seed, batch_size=batch_size)
    assert np.array_equal(decompress(model, result.data), images)
    nll = reference_bits(model, images, seed, policy)
    assert result.nll_bits == pytest.approx(nll, rel=1e-4, abs=1e-3)
    # The payload is the NLL plus the coder's known overhead, in bits per image: whole 32-bit words,
    # of which the final flush of its 64-bit state adds up to 2, while that state's initial word
    # absorbs up to 32 bits for free; quantising probabilities to 24 bits costs at most about
    # 0.01 bit per variable here. So -32 <= bits - NLL <= 64, give or take 0.01 * D.
    slack = 0.01 * images[0].size
    difference = result.image_bits - nll
    assert np.all((difference >= -32 - slack) & (difference <= 64 + slack)), (result.image_bits, nll)
    assert result.header.budget == sum(len(p) for p in policy)
    return result


@pytest.mark.parametrize(("k", "b", "param", "shape"), MODELS)
def test_round_trips_tiny_models(k, b, param, shape):
    model = tiny_ardm(k, b, param, shape=shape)
    s, d = model.num_stages, model.num_variables
    images = np.random.default_rng(k + b).integers(0, k, (13, *shape)).astype(np.uint8)
    table = np.random.default_rng(1).uniform(0.1, 3.0, (s, d))
    for budget in sorted({s, 2 * s, s * d - 1, s * d}):
        for name in ("naive", "optimal"):
            check_round_trip(model, images, budget_policy(budget, s, d, name, table), seed=budget, batch_size=5)


def test_upscale_models_code_impossible_digits_with_probability_zero():
    model = tiny_ardm(10, 3, "data", shape=(1, 2, 2))
    x = torch.tensor([[[[9, 4], [0, 7]]]])
    orders = torch.from_numpy(fixed_orders(0, model.num_stages, model.num_variables))
    probs = np.concatenate([p[0] for p, _ in known_chunks(model, x, orders, [[0]] * model.num_stages)])
    assert (probs == 0).any() and np.allclose(probs.sum(1), 1)
    # constriction never quantises a symbol to zero frequency: even a probability-0 symbol codes.
    coder = AnsCoder()
    coder.encode_reverse(np.array([2], dtype=np.int32), FAMILY, np.array([[0.5, 0.5, 0.0]]))
    assert AnsCoder(coder.get_compressed()).decode(FAMILY, np.array([[0.5, 0.5, 0.0]]))[0] == 2


def test_round_trips_unet_models(trained_digits):
    oa, test_images = trained_digits
    upscale = unet_model((1, 4, 4), 17, 4)  # S = 3 stages, with impossible digits (K = 17 < 4^3)
    rng = np.random.default_rng(0)
    for model, images, budgets in ((oa, test_images[:6], [1, 8, 64]),
                                   (upscale, rng.integers(0, 17, (6, 1, 4, 4)).astype(np.uint8), [3, 12, 48])):
        s, d = model.num_stages, model.num_variables
        table = np.tile(np.linspace(4, 0.5, d), (s, 1))
        for budget in budgets:
            check_round_trip(model, images, budget_policy(budget, s, d, "optimal", table), seed=7, batch_size=3)


def test_compressed_bpd_and_order_choice(trained_digits):
    model, images = trained_digits
    train = load_dataset("digits", "train").images[:32]
    policy = budget_policy(8, 1, 64, "naive")
    choice = choose_order(model, train, policy, num_orders=3)
    assert set(choice.bpd) == {0, 1, 2} and choice.bpd[choice.seed] == min(choice.bpd.values())
    assert choice.bpd[1] == pytest.approx(policy_nll_bits(model, train, policy, 1).mean() / 64)
    bpd, bits = compressed_bpd(model, images[:20], policy, choice.seed)
    result = compress(model, images[:20], policy, choice.seed)
    assert np.array_equal(bits, result.image_bits) and bpd == pytest.approx(bits.mean() / 64)
    assert np.array_equal(decompress(model, result.data), images[:20])
    assert result.file_bpd > bpd  # the header is extra


def test_fixed_orders_are_seeded_permutations():
    a, b = fixed_orders(3, 2, 50), fixed_orders(4, 2, 50)
    assert np.array_equal(a, fixed_orders(3, 2, 50)) and not np.array_equal(a, b)
    assert all(np.array_equal(np.sort(row), np.arange(50)) for row in a) and not np.array_equal(a[0], a[1])


def test_budget_policy():
    assert budget_policy(3, 3, 5, "naive") == [[0], [0], [0]]
    assert budget_policy(15, 3, 5, "naive") == [list(range(5))] * 3
    table = np.tile(np.linspace(3, 1, 5), (3, 1))
    assert [len(p) for p in budget_policy(7, 3, 5, "optimal", table)] == [3, 2, 2]
    for bad in ((2, "naive", None), (16, "naive", None), (6, "optimal", None), (6, "fancy", table)):
        with pytest.raises(ValueError):
            budget_policy(bad[0], 3, 5, bad[1], bad[2])


def test_deterministic_torch_restores_settings():
    threads = torch.get_num_threads()
    with deterministic_torch(1):
        assert torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1
    assert not torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == threads


@pytest.fixture(scope="module")
def coded():
    return coded_tiny_images(6, batch_size=4)


def test_wrong_model_is_refused(coded):
    _, _, result = coded
    for other in (tiny_ardm(10, 3, "data", shape=(1, 2, 2), seed=1), tiny_ardm(16, 16, "data", shape=(1, 2, 3))):
        with pytest.raises(CompressionError, match="compressed with model"):
            decompress(other, result.data)


def refused(model, data: bytes) -> str:
    """The one-line CompressionError message of decoding data (never pixels)."""
    with pytest.raises(CompressionError) as err:
        decompress(model, data)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_every_truncation_is_refused(coded):
    model, _, result = coded
    data = result.data
    header_end = len(data) - result.payload_bytes - 4
    for cut in range(len(data)):
        message = refused(model, data[:cut])
        # Within the header, or off a word boundary, the cut is named; a payload cut at a word
        # boundary looks like a shorter last stream, which the checksum (or the decoder) refuses.
        if cut < header_end or (len(data) - cut) % 4:
            assert "truncated" in message, (cut, message)
    assert "corrupted" in refused(model, data + b"\0")
    assert "corrupted" in refused(model, data + b"\0" * 4)


# Every header field: calls per stage and starts listed (3, 2, 1 calls), or only the starts.
@pytest.mark.parametrize(("num_images", "flips", "policy"), [
    (1, (0x01, 0x10, 0x80, 0xFF), [[0, 2, 3], [0, 3], [0]]), (3, (0xFF,), [[0, 2, 3], [0, 3], [0, 3]])])
def test_every_corrupted_byte_is_refused(coded, num_images, flips, policy):
    model, images, _ = coded
    data = compress(model, images[:num_images], policy, order_seed=2, batch_size=2).data
    assert np.array_equal(decompress(model, data), images[:num_images])
    for position in range(len(data)):
        for flip in flips:
            corrupted = bytearray(data)
            corrupted[position] ^= flip
            message = refused(model, bytes(corrupted))
            if position >= 5:  # past the signature, version and model fingerprint
                # (a thread count flipped to 0 reads as a CUDA file, refused as such)
                expected = ("corrupted", "truncated", "coded on")
                assert any(word in message for word in expected), (position, flip, message)
    assert "signature" in refused(model, b"GIF89a" + data[6:])
    assert "format version 4, this code reads version 3" in refused(model, data[:1] + bytes([0x64]) + data[2:])
    version_1 = b"\x89ARDMZ\r\n\x01\x00\x10\x00\x00\x00" + bytes(40)
    assert "format version 1 (an older ardm)" in refused(model, version_1)
    assert "format version 2 (an older ardm)" in refused(model, b"\x89A\x02" + data[2:])


def test_consistent_but_wrong_contents_never_decode_to_wrong_pixels(coded):
    """Files with a valid CRC that still lie (another order or policy, altered words, other images
    checksummed): an error, not pixels."""
    model, images, result = coded
    d = model.num_variables
    container = read_container(result.data, fingerprint(model), model.num_stages, d)
    header, streams = container.header, container.streams
    assert header == result.header and [len(s) for s in streams] == list(header.words)
    altered = [s.copy() for s in streams]
    altered[0][0] ^= 1 << 7
    other_policy = ((0, 1), (0, 3), (0, 2))  # the same budget, listed instead of naive
    for lie in (write_container(dataclasses.replace(header, order_seed=5), streams, images, d),
                write_container(dataclasses.replace(header, policy=other_policy), streams, images, d),
                write_container(header, altered, images, d),
                write_container(header, streams, (images + 1) % 10, d)):
        refused(model, lie)


def varint_size(value: int) -> int:
    return max(1, math.ceil(value.bit_length() / 7))


def policy_rank_size(policy, d: int) -> int:
    """Bytes of a listed policy: log2 of the number of policies with these calls per stage."""
    return math.ceil(math.log2(math.prod(math.comb(d - 1, len(starts) - 1) for starts in policy)) / 8)


def test_one_image_costs_its_payload_plus_at_most_24_bytes(trained_digits):
    """signature and version 2, fingerprint 3, flags, seed, threads and budget 1 each, CRC32 4:
    13 bytes, plus the rank of a policy that is not the budget's naive one; at most 24 bytes up to
    20 calls on an 8x8 RGB image (D = 192), the issue's single PNG."""
    oa, test_images = trained_digits
    upscale = unet_model((1, 4, 4), 17, 4)  # S = 3 stages
    upscale_image = np.random.default_rng(0).integers(0, 17, (1, 1, 4, 4)).astype(np.uint8)
    rgb = unet_model((3, 8, 8), 256, 256)
    rgb_image = np.random.default_rng(0).integers(0, 256, (1, 3, 8, 8)).astype(np.uint8)
    for model, image, budgets in ((oa, test_images[:1], [1, 8, 20, 64]), (upscale, upscale_image, [3, 12, 48]),
                                  (rgb, rgb_image, [20])):
        s, d = model.num_stages, model.num_variables
        table = np.tile(np.linspace(4, 0.5, d), (s, 1)) * np.random.default_rng(1).uniform(0.9, 1.1, (s, d))
        for budget in budgets:
            for name in ("naive", "optimal"):
                policy = budget_policy(budget, s, d, name, table)
                result = compress(model, image, policy, order_seed=4, num_threads=1)
                overhead = len(result.data) - result.payload_bytes
                listed = policy != budget_policy(budget, s, d, "naive")
                assert overhead == 13 + (policy_rank_size(policy, d) if listed else 0), (budget, name)
                assert overhead <= 24 and 8 * len(result.data) == pytest.approx(result.file_bpd * d)
                assert result.payload_bytes == 4 * result.header.words[0]
                assert np.array_equal(decompress(model, result.data), image)


def test_decoding_ignores_the_callers_threads_and_batching(trained_digits):
    """The decoder takes the thread count and batching from the file, not from its process: a file
    coded with 2 threads in batches of 4 decodes bit-exactly in a process set to 1 thread, and one
    coded with 1 thread image by image decodes in a process set to 2 threads."""
    model, images = trained_digits
    images, policy, threads = images[:6], budget_policy(8, 1, 64, "naive"), torch.get_num_threads()
    try:
        for coded_threads, batch_size, decoding_threads in ((2, 4, 1), (1, 1, 2)):
            result = compress(model, images, policy, order_seed=3, batch_size=batch_size, num_threads=coded_threads)
            assert (result.header.num_threads, result.header.batch_size) == (coded_threads, batch_size)
            torch.set_num_threads(decoding_threads)
            assert np.array_equal(decompress(model, result.data), images)
            assert torch.get_num_threads() == decoding_threads  # and the process's setting is restored
    finally:
        torch.set_num_threads(threads)


def test_batches_keep_a_per_image_index(coded):
    """A batch stores N, its batching and each stream's length but the last (implied by the file
    length); with one image per batch, any image decodes from its own stream alone."""
    model, images, _ = coded
    s, d = model.num_stages, model.num_variables
    result = compress(model, images, budget_policy(6, s, d, "naive"), order_seed=2, batch_size=1)
    header = result.header
    lengths = sum(varint_size(v) for v in (len(images), 1, *header.words[:-1]))
    assert len(result.data) == result.payload_bytes + 13 + lengths
    container = read_container(result.data, fingerprint(model), s, d)
    assert container.header == header and [len(w) for w in container.streams] == list(header.words)
    orders = torch.from_numpy(fixed_orders(2, s, d))
    with deterministic_torch(header.num_threads):
        third = decode_batch(model, container.streams[2:3], orders, header.starts)
    assert np.array_equal(third.numpy(), images[2:3])
    assert zlib.crc32(images.tobytes(), container.file_crc) == container.crc


def test_images_that_do_not_fit_the_model_are_refused(coded):
    model, images, _ = coded
    policy = budget_policy(3, 3, 4, "naive")
    with pytest.raises(CompressionError, match="shape"):
        compress(model, images[:, :, :1], policy, 0)
    with pytest.raises(CompressionError, match="0..9"):
        compress(model, images + 10, policy, 0)
