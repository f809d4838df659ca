"""Safe loading of model checkpoints, which are untrusted input.

``torch.load(..., weights_only=True)`` never executes pickled code. A checkpoint may be a plain
state dict, or a training checkpoint ``{"model": state_dict, ...}``, with or without the
``module.`` prefix that DistributedDataParallel adds. Weights load strictly: a checkpoint of
another architecture is an error that says what did not fit.
"""

import hashlib
import pickle
import re
from pathlib import Path
from typing import Dict, Union

import torch

from .errors import CheckpointError

StateDict = Dict[str, torch.Tensor]


def file_sha256(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: Union[str, Path]) -> StateDict:
    """Read the model weights from ``path`` without executing any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch reports code-bearing pickles as "Unsupported global: GLOBAL module.name"; anything else is garbage
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if unsafe is None:
            raise CheckpointError(f"checkpoint {path} is not a readable PyTorch checkpoint (UnpicklingError)") from None
        raise CheckpointError(
            f"checkpoint {path} holds Python objects besides tensors ({unsafe.group(1)}) and is refused for safety") from None
    except Exception as error:  # torch's unpickler fails on garbage with many kinds of error (IndexError, EOFError, ...)
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch checkpoint ({error.__class__.__name__})") from None
    if isinstance(content, dict) and isinstance(content.get("model"), dict):
        content = content["model"]
    if not isinstance(content, dict) or not content or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise CheckpointError(f"checkpoint {path} is not a state dict of tensors, nor a training checkpoint with a 'model' entry")
    if all(key.startswith("module.") for key in content):
        content = {key[len("module."):]: value for key, value in content.items()}
    return content


def load_strict(module: torch.nn.Module, state: StateDict, path: Union[str, Path], expected: str) -> None:
    """Load ``state`` into ``module``, or raise naming the file, the expected architecture and the misfit."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        problems = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong-shape", mismatched)):
            if keys:
                problems.append(f"{len(keys)} {what} key(s), e.g. {keys[0]}")
        raise CheckpointError(f"checkpoint {path} is not a {expected} checkpoint: {'; '.join(problems)}")
    module.load_state_dict(state, strict=True)
