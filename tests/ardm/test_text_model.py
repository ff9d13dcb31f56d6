"""Text models through the image pipeline's interfaces: the transformer's negative ELBO against exact
enumeration of all orders, DP policies and their measured cost on a briefly trained text model, sampling,
and a compression round trip of text."""

import itertools

import numpy as np
import pytest
import torch

from ardm.budgets import budget_curve
from ardm.compression import TextLayout, budget_policy, compress, decompress, fingerprint, read_container
from ardm.config import ModelConfig
from ardm.data import load_dataset
from ardm.data.text import decode_text, encode_text, to_sequences
from ardm.evaluate import estimate_nelbo
from ardm.model import ModelSpec, build_ardm
from ardm.networks import TransformerConfig, get_preset
from ardm.objective import ardm_loss
from ardm.run import model_spec
from ardm.sampling import sample
from ardm.tables import estimate_step_table
from ardm.train import TrainConfig, train
from tests.support.reference import exact_nelbo_bits

TINY = TransformerConfig(num_layers=1, width=16, num_heads=2, mlp_ratio=2, time_embedding_dim=16)
DATA = "pydoc?length=16"


def random_transformer(length: int, branching: int, parameterization: str, seed: int = 0):
    """An untrained tiny text ARDM (K = 27) whose zero-initialised layers are made random, so that its
    conditionals depend on the context and are far from uniform."""
    spec = ModelSpec(shape=(1, 1, length), num_classes=27, branching=branching, parameterization=parameterization,
                     network=TINY.to_dict(), modality="text")
    torch.manual_seed(seed)
    model = build_ardm(spec)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.5)
    return model.eval()


@pytest.mark.parametrize(("branching", "parameterization"), [(27, "data"), (3, "data"), (3, "direct")])
def test_negative_elbo_matches_exact_enumeration_of_all_orders(branching, parameterization):
    """The Monte Carlo objective's expectation over every order, stage and step is the exact negative ELBO
    (every order enumerated with the reference's own masking), for the OA model's [MASK] token and for
    upscaling (b = 3 < K: the coarse-value tokens K + x^(j))."""
    d = 4
    model = random_transformer(d, branching, parameterization)
    s = model.num_stages
    x_values = encode_text("zap ").tolist()
    perms = torch.tensor(list(itertools.permutations(range(d))))
    combos = [(p, j, t) for p in range(len(perms)) for j in range(s) for t in range(d)]
    ranks = perms[[p for p, _, _ in combos]]
    stage, t = torch.tensor([j for _, j, _ in combos]), torch.tensor([t for _, _, t in combos])
    with torch.no_grad():
        out = ardm_loss(model, torch.tensor(x_values).view(1, 1, 1, d).expand(len(combos), 1, 1, d), ranks, stage, t)
    assert out.nelbo_bpd.double().mean().item() * d == pytest.approx(exact_nelbo_bits(model, x_values), rel=1e-5)


def test_transformer_sees_only_the_observed_values():
    """With S = 1 the unobserved variables are one [MASK] token: changing what lies under the mask changes
    nothing, changing an observed value changes the predictions."""
    model = random_transformer(6, 27, "data")
    x = torch.tensor(encode_text("abcdef"), dtype=torch.long).view(1, 1, 1, 6)
    mask = torch.tensor([True, True, False, False, False, False]).view(1, 1, 1, 6)
    step = torch.tensor([2])
    with torch.no_grad():
        logits = model.network(torch.where(mask, x, 0), mask, torch.tensor([0]), step)
        other_value = model.network(torch.where(mask, x, 0).index_fill(-1, torch.tensor([0]), 9), mask,
                                    torch.tensor([0]), step)
    assert not torch.allclose(logits, other_value)
    assert model.network.token_embedding.num_embeddings == 28  # K values + [MASK]
    assert random_transformer(6, 3, "data").network.token_embedding.num_embeddings == 54  # K values + K coarse


@pytest.fixture(scope="module")
def trained_text():
    """(EMA model, test sequences): cpu-text (D = 16) on the pydoc corpus, trained for seconds."""
    train_set, test_set = load_dataset(DATA, "train"), load_dataset(DATA, "test")
    spec = model_spec(ModelConfig(preset="cpu-text", branching=27), train_set)
    assert spec.modality == "text" and spec.network == get_preset("cpu-text").to_dict()
    torch.manual_seed(0)
    config = TrainConfig(steps=60, batch_size=32, learning_rate=1e-2, ema_decay=0.9, checkpoint_every=10**6)
    result = train(build_ardm(spec), train_set.images, config, progress=False)
    return result.ema, test_set.images[:64]


def test_dp_policies_and_measured_cost_on_a_trained_text_model(trained_text):
    model, sequences = trained_text
    table = estimate_step_table(model, load_dataset(DATA, "train").images[:256], samples_per_step=16, seed=0)
    curve = budget_curve(model, table, sequences, [1, 2, 4, 8, 16], orders_per_image=2, seed=1)
    rows = {(r["budget"], r["policy"]): r for r in curve.rows}
    full = estimate_nelbo(model, sequences, samples_per_image=32, seed=1)
    assert rows[16, "optimal"]["measured_bpd"] == pytest.approx(full.mean, abs=1e-9)
    assert full.mean < 4.3  # near the letter frequencies' ~4.1 bits after 60 steps, far below log2 27 = 4.75
    for budget in (1, 2, 4, 8):
        optimal, naive = rows[budget, "optimal"], rows[budget, "naive"]
        assert optimal["predicted_bpd"] <= naive["predicted_bpd"] + 1e-12
        assert optimal["measured_bpd"] >= full.mean - 4 * full.stderr  # fewer calls never beat all steps
    measured = [rows[b, "optimal"]["measured_bpd"] for b in (1, 2, 4, 8, 16)]
    assert measured[0] > measured[-1]


def test_sampling_returns_text_in_the_alphabet(trained_text):
    model, _ = trained_text
    samples = sample(model, 5, policy=[[0, 4, 8, 12]], seed=3)
    assert samples.shape == (5, 1, 1, 16) and samples.dtype == torch.uint8 and int(samples.max()) < 27
    assert len(decode_text(samples[0].numpy())) == 16
    assert torch.equal(samples, sample(model, 5, policy=[[0, 4, 8, 12]], seed=3))


def test_compression_round_trip_of_text(trained_text):
    model, _ = trained_text
    text = "the quick brown fox jumps over the lazy dog and runs away"
    sequences = to_sequences(encode_text(text), 16)  # 3 sequences: the last 9 characters are dropped
    for budget in (1, 4, 16):
        policy = budget_policy(budget, 1, 16, "naive")
        result = compress(model, sequences, policy, order_seed=2, batch_size=2)
        assert np.array_equal(decompress(model, result.data), sequences)
    assert decode_text(decompress(model, result.data)) == text[:48]


def test_transformer_presets_and_overrides():
    config = ModelConfig(preset="cpu-text", network={"num_layers": 1}).network_config()
    assert isinstance(config, TransformerConfig) and config.num_layers == 1 and config.width == 128
    with pytest.raises(ValueError, match="network.channels: unknown field"):
        ModelConfig(preset="cpu-text", network={"channels": 64})
    with pytest.raises(ValueError, match="num_heads=3 must divide width=128"):
        ModelConfig(preset="cpu-text", network={"num_heads": 3})
    with pytest.raises(ValueError, match="unknown TransformerConfig key"):
        TransformerConfig.from_dict({"architecture": "transformer", "layers": 2})
    assert get_preset("paper-text8") == TransformerConfig(num_layers=12, width=768, num_heads=12, mlp_ratio=4,
                                                          time_embedding_dim=768)


def test_container_keeps_the_text_layout():
    """The "txt" layout stores the text's length and final line break, and needs them; others refuse them."""
    model = random_transformer(8, 27, "data")
    sequences = to_sequences(encode_text("some text to code   "), 8)[:2]
    policy = budget_policy(2, 1, 8, "naive")
    result = compress(model, sequences, policy, order_seed=0, layout="txt", text=TextLayout(13, True))
    container = read_container(result.data, fingerprint(model), 1, 8)
    assert container.header.text == TextLayout(13, True) and container.header.layout == "txt"
    for layout, text in (("txt", None), ("nchw", TextLayout(13, False)), ("txt", TextLayout(17, False))):
        with pytest.raises(ValueError, match="text layout"):
            compress(model, sequences, policy, order_seed=0, layout=layout, text=text)
