"""Small transforms on image tensors [C, H, W] (what the readers' ``transform`` argument receives)."""
from typing import Callable, Optional, Sequence

import torch


class RandomHorizontalFlip:
    """Flip an image [..., H, W] left-right with probability ``p`` (dual-MCMC's CelebA-64 training augmentation,
    ALGORITHMS.md 5.4). ``generator``: optional ``torch.Generator`` for reproducible draws (else torch's global one).
    """

    def __init__(self, p: float = 0.5, generator: Optional[torch.Generator] = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: argument `p` must be in [0, 1], got {p}")
        self.p, self.generator = p, generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if torch.rand((), generator=self.generator).item() < self.p:
            return x.flip(-1)
        return x

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"
