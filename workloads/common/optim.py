"""The one optimizer factory every workload's training uses (deepfusion, prince).

Importing this module imports no torch: configs import `OPTIMIZERS` to validate a choice, and
`validate` must stay light (tests/orchestrator/test_validate_is_light.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

OPTIMIZERS = ("adamw", "adam", "sgd", "sgd_momentum")


def make_optimizer(params: Any, name: str, lr: float) -> torch.optim.Optimizer:
    """'adamw' | 'adam' (AdamW without weight decay) | 'sgd' | 'sgd_momentum' (0.9), over the
    parameters that require grad (frozen experts and bases are skipped)."""
    import torch

    params = [p for p in params if p.requires_grad]
    if name in ("adam", "adamw"):
        # fused: one kernel over every tensor (torch >= 2.4 on CPU and CUDA), ~8% of a small
        # model's CPU step; the same update as the loop up to rounding
        fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0 if name == "adam" else 0.01,
                                 fused=fused or None)
    return torch.optim.SGD(params, lr=lr, momentum=0.9 if name == "sgd_momentum" else 0.0)
