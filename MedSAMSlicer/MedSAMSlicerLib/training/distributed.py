"""This process's place among those ``torchrun`` started: which share of the work is its own.

Training uses it for DistributedDataParallel (shards of slices, summed metrics); the cohort
command to give each process (one per GPU) its share of the cases. Run directly, a process is
rank 0 of 1, everything here is a no-op, and PyTorch is not imported.
"""

import math
import os
from dataclasses import dataclass
from typing import List, Sequence


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` launch (rank 0 of 1 when run directly)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> "Distributed":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence, pad: bool = True) -> list:
        """This rank's share; padded by wrapping around (so that every rank takes the same number of DDP steps)
        unless ``pad`` is False (validation: every slice counted once)."""
        if self.world == 1 or not items:
            return list(items)
        if not pad:
            return list(items[self.rank::self.world])
        size = math.ceil(len(items) / self.world)
        return [items[(self.rank + self.world * n) % len(items)] for n in range(size)]

    def total(self, *values: float) -> List[float]:
        """``values`` summed over all ranks."""
        if self.world == 1:
            return list(values)
        import torch

        tensor = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def device(self, choice: str = "auto") -> str:
        """The device a process should use: its own GPU under torchrun (``cuda:LOCAL_RANK``), else ``choice``."""
        if self.world == 1 or choice not in ("auto", "cuda"):
            return choice
        import torch

        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else choice
