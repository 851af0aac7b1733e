"""Which responses were cut off by the generation budget."""

from __future__ import annotations

import torch


def truncated_responses(response_ids: torch.Tensor, response_mask: torch.Tensor, eos_token_ids: list[int],
                        max_response_length: int) -> torch.Tensor:
    """(N,) bool: responses that reached ``max_response_length`` tokens without emitting an EOS token.

    ``response_ids`` / ``response_mask`` are (N, R), right-padded (the mask is 1 up to and including EOS).
    """
    eos = torch.tensor(eos_token_ids, device=response_ids.device)
    has_eos = (torch.isin(response_ids, eos) & (response_mask > 0)).any(-1)
    return ~has_eos & (response_mask.sum(-1).long() >= max_response_length)
