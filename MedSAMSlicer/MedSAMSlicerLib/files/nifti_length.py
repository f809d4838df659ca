"""Whether a NIfTI file holds all the voxel data its header promises.

ITK's NIfTI reader fills what a truncated ``.nii`` or ``.nii.gz`` lacks with zeros or garbage, and reads
a header with no data behind it as an empty image, without an error: an interrupted copy would be
segmented as if it were the scan. The header says how many bytes follow it (NIfTI-1 and NIfTI-2, either
byte order); a ``.nii`` is measured by its size, a ``.nii.gz`` by decompressing it once (nothing kept).
"""

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Optional

from ..errors import ImageError

CHUNK_BYTES = 1 << 20


def check_nifti_length(path: Path) -> None:
    """Raise ``ImageError`` when the NIfTI file ``path`` ends before the voxel data its header promises."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    try:
        with (gzip.open(path, "rb") if name.endswith(".gz") else open(path, "rb")) as stream:
            header = stream.read(540)
            promised = _promised_bytes(header)
            if promised is None:
                return  # not a NIfTI header this understands: ITK's reader has its say
            held = len(header) + _remaining(stream, promised - len(header))
    except EOFError:  # the compressed stream ends early
        raise ImageError(f"image {path} is incomplete: its compressed data ends before the voxels its header "
                         "promises (a copy or download cut short?)") from None
    except (OSError, zlib.error) as error:
        raise ImageError(f"image {path} cannot be read: the file is damaged ({error.__class__.__name__})") from None
    if held < promised:
        raise ImageError(f"image {path} is incomplete: its header promises {promised} bytes, the file holds {held} "
                         "(a copy or download cut short?)")


def _remaining(stream, wanted: int) -> int:
    """Bytes that can still be read from ``stream``, counting up to ``wanted``."""
    count = 0
    while count < wanted:
        block = stream.read(min(CHUNK_BYTES, wanted - count))
        if not block:
            break
        count += len(block)
    return count


def _promised_bytes(header: bytes) -> Optional[int]:
    """Header, extensions and voxel data in bytes, from a NIfTI-1 or NIfTI-2 header; None if it is neither."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348 and header[344:347] == b"n+1":
            dims = struct.unpack(order + "8h", header[40:56])
            bits = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
        elif len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540 and header[4:7] == b"n+2":
            dims = struct.unpack(order + "8q", header[16:80])
            bits = struct.unpack(order + "h", header[14:16])[0]
            offset = struct.unpack(order + "q", header[168:176])[0]
        else:
            continue
        if not 1 <= dims[0] <= 7 or bits <= 0 or any(d < 0 for d in dims[1:dims[0] + 1]):
            return None
        return max(offset, 540 if header[4:7] == b"n+2" else 348) + math.prod(dims[1:dims[0] + 1]) * bits // 8
    return None
