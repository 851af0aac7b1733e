"""AdamW with linear warm-up then a constant learning rate (verl's default schedule)."""

from __future__ import annotations

import torch

from gspo.config import OptimConfig


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    # The fused kernel makes the same update in one pass per tensor instead of a dozen elementwise ops. It exists
    # for CPU and CUDA tensors only.
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per training step: lr ramps over ``lr_warmup_steps`` steps, or when that is -1 over
    ``lr_warmup_steps_ratio * total_steps`` steps."""
    warmup = cfg.lr_warmup_steps if cfg.lr_warmup_steps >= 0 else int(cfg.lr_warmup_steps_ratio * total_steps)

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
