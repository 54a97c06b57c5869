"""Which process writes in a DDP run (``torchrun``): checkpoints and TensorBoard come from rank 0 only."""

from __future__ import annotations

import torch

__all__ = ["is_main_process"]


def is_main_process() -> bool:
    """True unless running as a non-zero rank of an initialised ``torch.distributed`` group."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
