"""Safe loading of model checkpoints, which are untrusted input.

``torch.load(..., weights_only=True)`` never executes pickled code; when it refuses a file, the
file's pickles are parsed (never loaded) to tell one holding code from one merely unreadable. A
checkpoint may be a plain state dict, or a training checkpoint ``{"model": state_dict, ...}``, with
or without the ``module.`` prefix that DistributedDataParallel adds. Weights load strictly: a checkpoint of
another architecture is an error that says what did not fit, and one holding NaN or infinite weights (a
diverged fine-tuning run) is refused naming the tensor.
"""

import _compat_pickle
import collections
import hashlib
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Dict, List, Union

from ..errors import CheckpointError
from ..files.input_files import check_regular_file

if TYPE_CHECKING:
    import torch

# PyTorch is imported only to read the weights: identifying a checkpoint (its SHA-256) needs none
StateDict = Dict[str, "torch.Tensor"]


def file_sha256(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _imported_globals(stream: IO[bytes]) -> List[str]:
    """The ``module.name`` globals that the pickle at ``stream``'s position imports, read from its opcodes, none run.

    Raises (ValueError, EOFError, ...) unless a complete pickle follows.
    """
    names, memo, pushed = [], {}, collections.deque([None, None], maxlen=2)  # pushed: the last two values, if strings
    for opcode, arg, _ in pickletools.genops(stream):
        if opcode.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
            memo[len(memo) if opcode.name == "MEMOIZE" else arg] = pushed[-1]
            continue
        if opcode.name in ("GLOBAL", "INST"):
            module, name = arg.split(" ", 1)  # protocols 0-2 write Python 2 names, which pickle maps as here
            module, name = _compat_pickle.NAME_MAPPING.get(
                (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
            names.append(f"{module}.{name}")
        elif opcode.name == "STACK_GLOBAL":  # pickle writes the module and name strings just before it
            names.append(f"{pushed[0]}.{pushed[1]}")
        is_string = opcode.stack_after in ([pickletools.pyunicode], [pickletools.pybytes_or_str])
        pushed.append(memo.get(arg) if opcode.name.endswith("GET") else arg if is_string else None)
    return names


def _unsafe_globals(path: Path) -> List[str]:
    """The globals besides torch's own tensor-rebuilding ones that the pickles in ``path`` import, each once.

    torch's weights-only unpickler knows protocol 2 only: on a code-bearing pickle of protocol 0, 4 or 5
    it fails with the same "Unsupported operand" as on random bytes, so its message cannot tell them apart.
    This parses the pickles without loading them: a ``torch.save`` zip's data.pkl, else each complete pickle
    from the file's start (a plain pickle has one; torch's legacy format four before the tensor data).
    """
    names = []
    try:
        with open(path, "rb") as handle:
            if zipfile.is_zipfile(handle):
                with zipfile.ZipFile(handle) as archive:
                    for member in archive.namelist():
                        if member.endswith("data.pkl"):
                            with archive.open(member) as stream:
                                names += _imported_globals(stream)
            else:
                handle.seek(0)
                while True:  # ends where no complete pickle follows: at the end of the file or at raw tensor data
                    names += _imported_globals(handle)
    except Exception:  # garbage fails to parse with many kinds of error; the complete pickles before it still count
        pass
    return list(dict.fromkeys(name for name in names if not _allowed_global(name)))


def _allowed_global(name: str) -> bool:
    """Whether ``torch.load(weights_only=True)`` accepts this global (torch's own list; its public part if it moved)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
    except ImportError:  # a private name: should a later torch move it, torch's own classes still pass
        return name.startswith("torch.") or name == "collections.OrderedDict"
    return name in _get_allowed_globals()


def existing_checkpoint(path: Union[str, Path]) -> Path:
    """``path`` as a ``Path``, or the error a missing checkpoint file gets."""
    return check_regular_file(path, "checkpoint", CheckpointError)


def read_state_dict(path: Union[str, Path]) -> StateDict:
    """Read the model weights from ``path`` without executing any pickled code."""
    import torch

    path = existing_checkpoint(path)
    try:
        with warnings.catch_warnings():  # torch's advice to report other protocols as a bug: the error below says more
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            content = torch.load(path, map_location="cpu", weights_only=True)
    # torch's unpickler fails on garbage with many kinds of error (IndexError, EOFError, ...)
    except Exception as error:
        unsafe = _unsafe_globals(path)
        if unsafe:
            named = ", ".join(unsafe[:3]) + (f" and {len(unsafe) - 3} more" if len(unsafe) > 3 else "")
            raise CheckpointError(f"checkpoint {path} holds Python objects besides tensors ({named}); "
                                  "they were not run and the file is refused for safety") from None
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch checkpoint "
                              f"({error.__class__.__name__})") from None
    if isinstance(content, dict) and isinstance(content.get("model"), dict):
        content = content["model"]
    if not isinstance(content, dict) or not content or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise CheckpointError(f"checkpoint {path} is not a state dict of tensors, nor a training checkpoint with a "
                              "'model' entry")
    if all(key.startswith("module.") for key in content):
        content = {key[len("module."):]: value for key, value in content.items()}
    for key, tensor in content.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"checkpoint {path}: tensor {key!r} holds NaN or infinite weights (what a diverged "
                                  "training run writes); the model would answer with empty masks")
    return content


def load_strict(module: "torch.nn.Module", state: StateDict, path: Union[str, Path], expected: str) -> None:
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
