"""Resolve the user's device choice (``auto``, ``cpu``, ``cuda``, ``cuda:N``) to the device models run on.

A ``Device`` is a plain value, not a ``torch.device``: a CPU run served by an optimised runtime
never imports PyTorch (1-3 s of start-up). ``auto`` asks PyTorch about CUDA only where the NVIDIA
driver's library loads, which is what PyTorch's own answer needs.
"""

import ctypes
import os
import re
from dataclasses import dataclass
from typing import Optional

from ..errors import SettingsError

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
#: the CUDA driver library that ``torch.cuda.is_available()`` loads
CUDA_DRIVER = "nvcuda.dll" if os.name == "nt" else "libcuda.so.1"


@dataclass(frozen=True)
class Device:
    """A device as PyTorch names it: ``type`` ``cpu`` or ``cuda``, and the CUDA ``index`` where one was chosen."""

    type: str
    index: Optional[int] = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


CPU = Device("cpu")


def cuda_driver_present() -> bool:
    """Whether the NVIDIA driver's library loads here (without it PyTorch sees no GPU)."""
    try:
        ctypes.CDLL(CUDA_DRIVER)
    except OSError:
        return False
    return True


def resolve_device(choice: str = "auto") -> Device:
    """Return the device for ``choice``; ``auto`` picks CUDA when present, else the CPU."""
    choice = (choice or "auto").strip().lower()
    if not _DEVICE_PATTERN.match(choice):
        raise SettingsError(f"device {choice!r} is not one of auto, cpu, cuda, cuda:N")
    if choice == "cpu" or (choice == "auto" and not cuda_driver_present()):
        return CPU
    import torch

    if choice == "auto":
        return Device("cuda") if torch.cuda.is_available() else CPU
    if not torch.cuda.is_available():
        raise SettingsError(f"device {choice!r} was asked for but no CUDA GPU is available; use --device cpu or auto")
    _, _, index = choice.partition(":")
    device = Device("cuda", int(index) if index else None)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise SettingsError(f"device {choice!r} does not exist: {torch.cuda.device_count()} CUDA device(s) found")
    return device
