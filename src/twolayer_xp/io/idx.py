"""Reading IDX files (MNIST's format), gzipped or not, as strictly as the CIFAR-10 batches.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the values in C order. Only unsigned bytes (type
0x08) are read. The header is checked against what the caller expects (the item shape and the
most rows it may hold) before anything is allocated; the data must then be exactly the
announced size, no byte short and no byte over, so a truncated download or a gzip bomb is one
DataError, not a wrong array or an exhausted memory.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from twolayer_xp.io.cifar_batches import DataError
from twolayer_xp.io.files import FileRefused, open_regular

UBYTE = 0x08  # IDX type code of unsigned bytes
MAX_IDX_FILE_BYTES = 256 << 20  # MNIST's largest file is 47 MB uncompressed
CHUNK = 1 << 20


def read_idx(path: Path, item_shape: tuple, max_rows: int) -> np.ndarray:
    """(N, *item_shape) uint8 from an IDX file with N <= max_rows (a ``.gz`` is decompressed
    while it is read)."""
    try:
        with open_regular(path, MAX_IDX_FILE_BYTES) as raw:
            f = gzip.GzipFile(fileobj=raw, mode="rb") if path.name.endswith(".gz") else raw
            shape = _header(f, path, item_shape, max_rows)
            data = _exactly(f, path, math.prod(shape))
    except FileNotFoundError:
        raise DataError(f"{path} is missing; delete its folder and run again to re-download") from None
    except FileRefused as exc:
        raise DataError(f"{exc}; data sets are read only from regular files") from None
    except (OSError, EOFError, zlib.error) as exc:  # gzip's BadGzipFile is an OSError
        raise DataError(f"{path} is not a readable IDX file ({type(exc).__name__}: {exc})") from None
    return data.reshape(shape)


def _header(f, path: Path, item_shape: tuple, max_rows: int) -> tuple:
    magic = f.read(4)
    if len(magic) != 4 or magic[:2] != b"\0\0":
        raise DataError(f"{path} is not an IDX file (magic {magic.hex() or 'missing'})")
    if magic[2] != UBYTE:
        raise DataError(f"{path} holds IDX type 0x{magic[2]:02x}; only unsigned bytes (0x08) are read")
    ndim = magic[3]
    if ndim != 1 + len(item_shape):
        raise DataError(f"{path} has {ndim} dimensions; expected {1 + len(item_shape)}")
    raw = f.read(4 * ndim)
    if len(raw) != 4 * ndim:
        raise DataError(f"{path} ends inside its header")
    shape = struct.unpack(f">{ndim}I", raw)
    if shape[1:] != tuple(item_shape) or not 0 < shape[0] <= max_rows:
        raise DataError(
            f"{path} announces shape {shape}; expected (N, {', '.join(map(str, item_shape))}) "
            f"with 0 < N <= {max_rows}".replace(", )", ")")
        )
    return shape


def _exactly(f, path: Path, nbytes: int) -> np.ndarray:
    out = np.empty(nbytes, dtype=np.uint8)
    done = 0
    while done < nbytes:
        chunk = f.read(min(CHUNK, nbytes - done))
        if not chunk:
            raise DataError(f"{path} is truncated: {done} of the {nbytes} data bytes its header announces")
        out[done : done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        done += len(chunk)
    if f.read(1):
        raise DataError(f"{path} holds more data than the {nbytes} bytes its header announces")
    return out


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file's bytes for a uint8 array (what tests and users who convert data write)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
