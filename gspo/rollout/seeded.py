"""Seeded sampling: each response depends only on (seed, its key, token position), never on its batch.

HF ``generate`` samples with ``torch.multinomial`` on the global RNG, so a response depends on which other
prompts share its batch, on micro-batching and on the rank it ran on. Here a response's tokens are drawn by the
Gumbel-max trick, ``argmax(logits / T + g)`` with ``g ~ Gumbel(0, 1)`` i.i.d. per (key, position, token), which is
an exact sample from ``softmax(logits / T)`` (after top-k / top-p). The Gumbel noise comes from a counter-based
hash of (key, position, token id), so the same key gives the same response on 1 rank or N ranks, in any batch,
before or after a resume. Keys come from ``(seed, group id, sample index)``; group ids never repeat in a run.

The hash is the murmur3 32-bit finaliser (``fmix32``) chained over the counter words, computed in int64 with the
32-bit products split in halves so nothing overflows; uniforms use all 32 bits (in float64), so the Gumbel tail is
cut only at about 22.9 (a token with probability below ~1e-10 is never drawn).
"""

from __future__ import annotations

import torch
from transformers import TopKLogitsWarper, TopPLogitsWarper

_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """(x * constant) mod 2^32 for x in [0, 2^32), without int64 overflow."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3 fmix32 of int64 values in [0, 2^32): a bijection with full avalanche.

    >>> mix32(torch.tensor([0, 1, 2])).tolist()
    [0, 1364076727, 821347078]
    """
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def group_keys(seed: int, group_ids: torch.Tensor) -> torch.Tensor:
    """(G,) int64 keys in [0, 2^32), one per group (prompt): what a rollout engine receives to seed a group.

    An engine that seeds each response derives its keys with :func:`response_keys`; one that takes one seed per
    request (vLLM) uses the group key as that seed.
    """
    return mix32(mix32(torch.tensor(seed & _MASK32)) ^ mix32(group_ids.long() & _MASK32)
                 ^ mix32((group_ids.long() >> 32) + 0x9E3779B9))


def response_keys(keys: torch.Tensor, n: int) -> torch.Tensor:
    """(G * n,) int64 keys for the ``n`` responses of each of the (G,) group ``keys``, group-major like the rows."""
    sample = torch.arange(n, dtype=torch.long, device=keys.device)
    return mix32(keys.long()[:, None] ^ mix32(sample + 0x7F4A7C15)[None, :]).reshape(-1)


def gumbel_noise(keys: torch.Tensor, position: int, vocab_size: int) -> torch.Tensor:
    """(B, V) float32 standard Gumbel noise, a pure function of (key, position, token id)."""
    row = mix32(keys ^ mix32(torch.tensor(position, device=keys.device) + 0x632BE5AB))  # (B,)
    token = mix32(torch.arange(vocab_size, device=keys.device) + 0x5BD1E995)  # (V,)
    bits = mix32(row[:, None] ^ token[None, :])  # (B, V), 32 random bits
    tail = (bits.double() + 0.5) * 2.0 ** -32  # 1 - U, in (0, 1); float64 keeps all 32 bits
    return (-torch.log(-torch.log1p(-tail))).float()  # -log(-log U), accurate for U near 1


def draw_tokens(logits: torch.Tensor, *, temperature: float, top_k: int, top_p: float, do_sample: bool,
                keys: torch.Tensor | None, position: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens (b,) and their log-probs (b,) under ``softmax(logits / T)`` from (b, V) logits.

    Greedy when ``do_sample`` is False; else temperature, top-k and top-p restrict and reshape the distribution
    and the token is drawn with seeded Gumbel noise (``keys`` (b,), one per row, ``position`` = index of the
    token in its response) or, without keys, from the global RNG. The log-probs use the distribution the
    trainer's forward pass uses (temperature, whole vocabulary), so they can stand in for recomputed ones.
    """
    logits = logits.float()
    if not do_sample:
        tokens = logits.argmax(-1)
        return tokens, logits.gather(-1, tokens[:, None])[:, 0] - torch.logsumexp(logits, -1)
    scaled = logits / temperature
    warped = scaled
    if top_k > 0:
        warped = TopKLogitsWarper(top_k)(None, warped)
    if top_p < 1.0:
        warped = TopPLogitsWarper(top_p)(None, warped)
    if keys is not None:
        tokens = (warped + gumbel_noise(keys.to(logits.device), position, logits.shape[-1])).argmax(-1)
    else:
        tokens = torch.multinomial(torch.softmax(warped, -1), 1)[:, 0]
    return tokens, scaled.gather(-1, tokens[:, None])[:, 0] - torch.logsumexp(scaled, -1)
