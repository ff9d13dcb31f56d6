"""Lossless compression with a trained ARDM: rANS coding under a parallel policy.

With a fixed order per stage (from a seed) and a policy (chunk starts per stage, one network call
per chunk), every image is coded with its own rANS stack; the decoder runs the sampler's network
calls and recovers the images bit-exactly. Per image the payload tracks the model's negative
log-likelihood under that order and policy plus a few bits.

    policy = budget_policy(100, model.num_stages, model.num_variables, "optimal", table.matrix())
    seed = choose_order(model, train_images[:64], policy).seed
    result = compress(model, images, policy, seed)      # result.data: the file bytes; result.bpd
    images_again = decompress(model, result.data)       # bit-exact, or CompressionError

A file (ardm.compression.container) stores only what the checkpoint does not give: for one image
the payload plus 13 bytes, plus a few bytes for a policy the decoder cannot re-derive.
"""

from ardm.compression.codec import (
    CompressionResult,
    compress,
    compressed_bpd,
    decode_container,
    decompress,
    fingerprint,
)
from ardm.compression.container import (
    CompressionError,
    Container,
    Header,
    TextLayout,
    read_container,
    write_container,
)
from ardm.compression.orders import OrderChoice, choose_order, fixed_orders, policy_nll_bits
from ardm.compression.policies import budget_policy

__all__ = [
    "CompressionError",
    "CompressionResult",
    "Container",
    "Header",
    "OrderChoice",
    "TextLayout",
    "budget_policy",
    "choose_order",
    "compress",
    "compressed_bpd",
    "decode_container",
    "decompress",
    "fingerprint",
    "fixed_orders",
    "policy_nll_bits",
    "read_container",
    "write_container",
]
