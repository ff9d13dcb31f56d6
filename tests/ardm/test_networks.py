"""Tests of ardm.networks: shapes, zero-initialised head, input wiring, presets, config validation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from ardm.networks import (
    PRESETS,
    ARDMNet,
    AttentionBlock,
    NetworkConfig,
    build_network,
    get_preset,
    network_config_from_dict,
    sinusoidal_embedding,
)

TINY = get_preset("cpu-tiny")


def _net(
    config: NetworkConfig = TINY,
    shape: tuple[int, int, int] = (3, 8, 8),
    num_classes: int = 256,
    num_stages: int = 1,
    num_outputs: int | None = None,
) -> ARDMNet:
    torch.manual_seed(0)
    num_steps = num_stages * math.prod(shape)
    outputs = num_classes if num_outputs is None else num_outputs
    return build_network(config, shape, num_classes, num_stages, outputs, num_steps)


def _inputs(
    net: ARDMNet, batch: int = 2, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (x, mask, stage, step) valid for `net`."""
    gen = torch.Generator().manual_seed(seed)
    d = math.prod(net.shape)
    x = torch.randint(0, net.num_classes, (batch, *net.shape), generator=gen)
    mask = torch.rand(batch, *net.shape, generator=gen) < 0.5
    stage = torch.randint(0, net.num_stages, (batch,), generator=gen)
    step = stage * d + torch.randint(0, d, (batch,), generator=gen)
    return x, mask, stage, step


def _perturbed(net: ARDMNet) -> ARDMNet:
    """Two Adam steps on a random target: the first moves only the zero-initialised head (every
    other gradient is zero behind it), the second moves the zero-initialised residual branches."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, mask, stage, step = _inputs(net, batch=4, seed=2)
    target = torch.randint(0, net.num_outputs, x.shape, generator=torch.Generator().manual_seed(3))
    for _ in range(2):
        logits = net(x, mask, stage, step)
        loss = F.cross_entropy(logits.reshape(-1, net.num_outputs), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.mark.parametrize(
    ("shape", "num_classes", "num_stages", "num_outputs"),
    [
        ((3, 8, 8), 256, 1, 256),  # OA-ARDM on 8-bit RGB
        ((3, 8, 8), 256, 4, 256),  # Upscale ARDM b=4, data parameterization
        ((3, 8, 8), 256, 4, 4),  # Upscale ARDM b=4, direct parameterization
        ((1, 5, 7), 17, 1, 17),  # odd K, non-square image, one channel
        ((2, 4, 6), 17, 3, 3),
    ],
)
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_output_shape(
    shape: tuple[int, int, int],
    num_classes: int,
    num_stages: int,
    num_outputs: int,
    mask_dtype: torch.dtype,
) -> None:
    net = _net(shape=shape, num_classes=num_classes, num_stages=num_stages, num_outputs=num_outputs)
    x, mask, stage, step = _inputs(net)
    out = net(x, mask.to(mask_dtype), stage, step)
    assert out.shape == (2, *shape, num_outputs)
    assert out.dtype == torch.float32


def test_fresh_network_predicts_uniform_logits() -> None:
    config = dataclasses.replace(TINY, dropout=0.1, attention_blocks=(0, 1))
    net = _net(config, num_stages=4).train()
    for seed in range(3):
        out = net(*_inputs(net, seed=seed))
        assert torch.count_nonzero(out) == 0


def test_head_grouping_is_channel_major() -> None:
    """Head channel c * num_outputs + k must land at logits[:, c, :, :, k]."""
    net = _net(shape=(3, 4, 4), num_classes=17, num_outputs=5)
    bias = torch.arange(3 * 5, dtype=torch.float32)
    with torch.no_grad():
        net.out_conv.bias.copy_(bias)
    out = net(*_inputs(net))
    expected = bias.reshape(3, 1, 1, 5).expand(2, 3, 4, 4, 5)
    torch.testing.assert_close(out, expected)


def _changes_output(net: ARDMNet, field: str) -> bool:
    """Whether altering one input of example 0 (leaving the others) changes its logits."""
    x, mask, stage, step = _inputs(net, seed=5)
    with torch.no_grad():
        base = net(x, mask, stage, step)
        if field == "x":
            x = x.clone()
            x[0, 0, 0, 0] = (x[0, 0, 0, 0] + 1) % net.num_classes
        elif field == "mask":
            mask = mask.clone()
            mask[0, 0, 0, 0] = ~mask[0, 0, 0, 0]
        elif field == "stage":  # stage alone: reaches the network only through the one-hot
            stage = stage.clone()
            stage[0] = (stage[0] + 1) % net.num_stages
        else:  # step alone: reaches the network only through the time embedding
            step = step.clone()
            step[0] = (step[0] + 1) % net.num_steps
        changed = net(x, mask, stage, step)
    return not torch.equal(base[0], changed[0])


@pytest.mark.parametrize("field", ["x", "mask", "stage", "step"])
def test_every_input_is_wired_in(field: str) -> None:
    net = _perturbed(_net(num_stages=4))
    assert _changes_output(net, field)


def test_receptive_field_is_global() -> None:
    """A change in one corner pixel reaches the logits of the opposite corner in cpu-small."""
    net = _perturbed(_net(get_preset("cpu-small"), shape=(3, 8, 8), num_stages=4))
    x, mask, stage, step = _inputs(net, seed=6)
    with torch.no_grad():
        base = net(x, mask, stage, step)
        x[0, :, 0, 0] = (x[0, :, 0, 0] + 37) % net.num_classes
        changed = net(x, mask, stage, step)
    far = (changed[0, :, 7, 7] - base[0, :, 7, 7]).abs().max()
    assert far > 1e-6


def test_attention_block_matches_naive_attention() -> None:
    torch.manual_seed(0)
    block = AttentionBlock(channels=8, num_heads=2, groups=4)
    torch.nn.init.normal_(block.proj_out.weight)
    x = torch.randn(2, 8, 3, 5)
    q, k, v = block.qkv(block.norm(x)).reshape(2, 3, 2, 4, 15).unbind(dim=1)  # (B, heads, d, N)
    weights = torch.softmax(torch.einsum("bhdn,bhdm->bhnm", q, k) / math.sqrt(4), dim=-1)
    heads = torch.einsum("bhnm,bhdm->bhdn", weights, v).reshape(2, 8, 3, 5)
    torch.testing.assert_close(block(x), x + block.proj_out(heads), rtol=1e-4, atol=1e-5)


def test_attention_placement() -> None:
    config = dataclasses.replace(TINY, num_blocks=2, attention_blocks=(0, 2), middle_attention=False)
    net = _net(config)
    assert [isinstance(m, AttentionBlock) for m in net.down_attention] == [True, False]
    assert [isinstance(m, AttentionBlock) for m in net.up_attention] == [True, False, True]
    assert not isinstance(net.mid_attention, AttentionBlock)


def test_runs_under_cpu_autocast() -> None:
    net = _perturbed(_net(get_preset("cpu-small"), num_stages=4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(*_inputs(net))
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_paper_cifar10_parameter_count() -> None:
    # Built on the meta device: no memory, no initialisation cost.
    with torch.device("meta"):
        net = build_network(get_preset("paper-cifar10"), (3, 32, 32), 256, 1, 256, 3072)
    count = sum(p.numel() for p in net.parameters())
    # 124,355,072 at the time of writing: ~49M in the 34 down/middle blocks, ~71M in the 33
    # double-width up blocks, ~1.8M in the 3x3 head to 768 channels.
    assert 1.1e8 < count < 1.4e8
    assert len(net.down_blocks) == 32 and len(net.up_blocks) == 33


def test_sinusoidal_embedding() -> None:
    step = torch.arange(0, 3072, 97)
    emb = sinusoidal_embedding(step, 9, 3072)
    assert emb.shape == (step.numel(), 9)
    assert torch.count_nonzero(emb[:, -1]) == 0  # odd dim: zero padding
    torch.testing.assert_close(emb[0, :4], torch.zeros(4))  # sin(0)
    torch.testing.assert_close(emb[0, 4:8], torch.ones(4))  # cos(0)
    # Neighbouring steps must be distinguishable.
    emb = sinusoidal_embedding(torch.tensor([3070, 3071]), 64, 3072)
    assert (emb[0] - emb[1]).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"channels": 60, "groups": 16}, "groups"),
        ({"channels": 64, "num_heads": 3}, "num_heads"),
        ({"num_blocks": -1}, "num_blocks"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"output_kernel": 5}, "output_kernel"),
        ({"num_blocks": 2, "attention_blocks": (3,)}, "attention_blocks"),
        ({"attention_blocks": (1, 1)}, "attention_blocks"),
        ({"class_embedding_dim": 0}, "class_embedding_dim"),
        ({"time_embedding_dim": 0}, "time_embedding_dim"),
        ({"channels": 1, "groups": 1}, "channels"),
        ({"channels": 64.0}, "channels"),
        ({"middle_attention": 1}, "middle_attention"),
    ],
)
def test_config_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        NetworkConfig(**kwargs)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_dict_round_trip(name: str) -> None:
    config = get_preset(name)
    d = config.to_dict()
    if isinstance(config, NetworkConfig):
        assert isinstance(d["attention_blocks"], list) and "architecture" not in d  # older checkpoints' form
    else:
        assert d["architecture"] == "transformer"
    assert network_config_from_dict(d) == config


def test_from_dict_coerces_lists_and_rejects_unknown_keys() -> None:
    assert NetworkConfig.from_dict({"attention_blocks": [0, 2]}).attention_blocks == (0, 2)
    with pytest.raises(ValueError, match="chanels"):
        NetworkConfig.from_dict({"chanels": 64})


def test_get_preset_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="cpu-small"):
        get_preset("no-such-preset")


def test_build_network_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="num_stages"):
        build_network(TINY, (3, 8, 8), 256, 0, 256, 192)
    with pytest.raises(ValueError, match="shape"):
        build_network(TINY, (8, 8), 256, 1, 256, 64)  # type: ignore[arg-type]


def test_forward_rejects_mismatched_inputs() -> None:
    net = _net()
    x, mask, stage, step = _inputs(net)
    with pytest.raises(ValueError, match="mask"):
        net(x, mask[:, :1], stage, step)
    with pytest.raises(ValueError, match="dtype"):
        net(x.float(), mask, stage, step)
    with pytest.raises(ValueError, match="stage"):
        net(x, mask, stage[:1], step)
