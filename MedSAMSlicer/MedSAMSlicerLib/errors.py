"""Errors the engine raises for bad input, so callers can show one clear message.

Every message names the offending thing (file, prompt, option) and what was expected.
The command line turns these into a one-line error and a non-zero exit; the Slicer
module shows them in a message box.
"""


class MedSAMError(Exception):
    """Base class of all user-facing engine errors."""


class ImageError(MedSAMError):
    """An image could not be read, or is not a scalar 2D/3D image."""


class PromptError(MedSAMError):
    """A prompt file or a prompt inside it is malformed, degenerate or outside the image."""


class CheckpointError(MedSAMError):
    """A model checkpoint is missing, corrupt or of another architecture."""


class SettingsError(MedSAMError):
    """An option (device, intensity window, axis, model id) has an invalid value."""


class OutputError(MedSAMError):
    """An output cannot be written where asked (not writable, disk full, a file in the way) or would replace an
    input."""
