"""Seeded sampling: each response depends only on (seed, its key, token position), never on its batch.

HF ``generate`` samples with ``torch.multinomial`` on the global RNG, so a response depends on which other
prompts share its batch, on micro-batching and on the rank it ran on. Here a response's tokens are drawn by the
Gumbel-max trick, ``argmax(logits / T + g)`` with ``g ~ Gumbel(0, 1)`` i.i.d. per (key, position, token), which is
an exact sample from ``softmax(logits / T)`` (after top-k / top-p). The Gumbel noise comes from a counter-based
hash of (key, position, token id), so the same key gives the same response on 1 rank or N ranks, in any batch,
before or after a resume. Keys come from ``(seed, group id, sample index)``; group ids never repeat in a run.

The hash is the murmur3 32-bit finaliser (``fmix32``) chained over the counter words, computed in int64 with the
32-bit products split in halves so nothing overflows. Over the vocabulary it runs in place, in two int64
buffers, and the noise in place in a float32 one; a decode loop allocates the three once (:class:`GumbelNoise`),
so a token allocates nothing of vocabulary size for its noise. The uniform's complement ``1 - U`` keeps all 32
bits in float32 (which holds small values at full relative precision), so the Gumbel tail is still cut only at
about 22.9 (a token with probability below ~1e-10 is never drawn); at the other end ``-log(-log U)`` is floored
at ``-log(-log 2^-24) = -2.81`` (U below ~6e-8), noise that never decides a draw in practice.
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


class GumbelNoise:
    """Seeded standard Gumbel noise for up to ``max_rows`` rows over ``vocab_size`` tokens, computed in place.

    Calling it with (b,) ``keys`` and a ``position`` returns a (b, V) float32 view of its own buffer, a pure
    function of (key, position, token id) that the next call overwrites. The (V,) hash of the token ids is
    computed once; the (max_rows, V) int64 work buffers and the float32 result are reused from call to call.
    """

    def __init__(self, vocab_size: int, max_rows: int, device: torch.device | str = "cpu"):
        self.token_hash = mix32(torch.arange(vocab_size, device=device) + 0x5BD1E995)  # (V,)
        self._bits = torch.empty(max_rows, vocab_size, dtype=torch.long, device=device)
        self._scratch = torch.empty_like(self._bits)
        self._noise = torch.empty(max_rows, vocab_size, dtype=torch.float32, device=device)

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers: (8 + 8 + 4) x max_rows x vocab_size."""
        return sum(t.numel() * t.element_size() for t in (self._bits, self._scratch, self._noise))

    def __call__(self, keys: torch.Tensor, position: int) -> torch.Tensor:
        rows = keys.shape[0]
        row_hash = mix32(keys ^ mix32(torch.tensor(position, device=keys.device) + 0x632BE5AB))  # (b,)
        bits, scratch, noise = self._bits[:rows], self._scratch[:rows], self._noise[:rows]
        torch.bitwise_xor(row_hash[:, None], self.token_hash[None, :], out=bits)
        _mix32_inplace(bits, scratch)  # (b, V): 32 random bits per (key, position, token)
        noise.copy_(bits)
        # tail = 1 - U in (0, 1] at float32 precision; capped below 1 so -log(-log U) stays finite.
        noise.add_(0.5).mul_(2.0 ** -32).clamp_(max=1.0 - 2.0 ** -24)
        return noise.neg_().log1p_().neg_().log_().neg_()  # -log(-log U), log1p accurate for U near 1


def _mul32_inplace(x: torch.Tensor, constant: int, scratch: torch.Tensor) -> None:
    """x <- (x * constant) mod 2^32 in place, as :func:`_mul32` (scratch: a buffer of x's shape)."""
    low, high = constant & 0xFFFF, constant >> 16
    torch.mul(x, high, out=scratch).bitwise_and_(0xFFFF).bitwise_left_shift_(16)
    x.mul_(low).add_(scratch).bitwise_and_(_MASK32)


def _mix32_inplace(x: torch.Tensor, scratch: torch.Tensor) -> None:
    """x <- :func:`mix32` (x) in place for int64 x in [0, 2^32)."""
    x.bitwise_xor_(torch.bitwise_right_shift(x, 16, out=scratch))
    _mul32_inplace(x, 0x85EBCA6B, scratch)
    x.bitwise_xor_(torch.bitwise_right_shift(x, 13, out=scratch))
    _mul32_inplace(x, 0xC2B2AE35, scratch)
    x.bitwise_xor_(torch.bitwise_right_shift(x, 16, out=scratch))


def gumbel_noise(keys: torch.Tensor, position: int, vocab_size: int) -> torch.Tensor:
    """(B, V) float32 standard Gumbel noise, a pure function of (key, position, token id) (a fresh tensor)."""
    return GumbelNoise(vocab_size, keys.shape[0], keys.device)(keys, position)


def draw_tokens(logits: torch.Tensor, *, temperature: float, top_k: int, top_p: float, do_sample: bool,
                keys: torch.Tensor | None, position: int,
                noise: GumbelNoise | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens (b,) and their log-probs (b,) under ``softmax(logits / T)`` from (b, V) logits.

    Greedy when ``do_sample`` is False; else temperature, top-k and top-p restrict and reshape the distribution
    and the token is drawn with seeded Gumbel noise (``keys`` (b,), one per row, ``position`` = index of the
    token in its response; ``noise``: the decode loop's reusable :class:`GumbelNoise`, else a one-off one) or,
    without keys, from the global RNG. The log-probs use the distribution the trainer's forward pass uses
    (temperature, whole vocabulary), so they can stand in for recomputed ones.
    """
    logits = logits.float()
    if not do_sample:
        tokens = logits.argmax(-1)
        return tokens, logits.gather(-1, tokens[:, None])[:, 0] - torch.logsumexp(logits, -1)
    scaled = logits if temperature == 1.0 else logits / temperature
    warped = scaled
    if top_k > 0:
        warped = TopKLogitsWarper(top_k)(None, warped)
    if top_p < 1.0:
        warped = TopPLogitsWarper(top_p)(None, warped)
    if keys is not None:
        keys = keys.to(logits.device)
        noise = noise if noise is not None else GumbelNoise(logits.shape[-1], keys.shape[0], logits.device)
        tokens = noise(keys, position).add_(warped).argmax(-1)  # Gumbel-max: in place in the noise buffer
    else:
        tokens = torch.multinomial(torch.softmax(warped, -1), 1)[:, 0]
    return tokens, scaled.gather(-1, tokens[:, None])[:, 0] - torch.logsumexp(scaled, -1)
