"""Resolve the user's device choice (``auto``, ``cpu``, ``cuda``, ``cuda:N``) to a torch device."""

import re

import torch

from .errors import SettingsError

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(choice: str = "auto") -> torch.device:
    """Return the torch device for ``choice``; ``auto`` picks CUDA when present, else the CPU."""
    choice = (choice or "auto").strip().lower()
    if not _DEVICE_PATTERN.match(choice):
        raise SettingsError(f"device {choice!r} is not one of auto, cpu, cuda, cuda:N")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SettingsError(f"device {choice!r} was asked for but no CUDA GPU is available; use --device cpu or auto")
        device = torch.device(choice)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingsError(f"device {choice!r} does not exist: {torch.cuda.device_count()} CUDA device(s) found")
        return device
    return torch.device("cpu")
