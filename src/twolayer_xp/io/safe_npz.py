"""Read the arrays of an untrusted ``.npz`` only after their headers pass the caller's checks.

``np.load`` trusts a member's ``.npy`` header: it allocates whatever shape the header claims and
inflates whatever the zip holds. Here every member's zip entry and ``.npy`` header (shape, dtype)
are read first, for a few hundred bytes each; the caller's ``check`` sees all of them and may
refuse; only then is any data decompressed, in bounded chunks, into arrays of exactly the
announced size. Nothing is ever unpickled. Every fault, zip-level or not, is one ``NpzError``.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import numpy.lib.format as npy_format

MAX_MEMBERS = 64  # a checkpoint holds 5 arrays plus a few extras
CHUNK = 1 << 20


class NpzError(ValueError):
    """The archive, or one of its members, is not a plain-array ``.npz`` we agree to read."""


@dataclass(frozen=True)
class ArrayHeader:
    """What a member's ``.npy`` header announces, before any of its data is read."""

    shape: tuple
    dtype: np.dtype
    fortran_order: bool
    info: zipfile.ZipInfo
    data_offset: int  # bytes of magic + header before the data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_npz(
    path: str | os.PathLike | BinaryIO, names: Callable[[str], bool], check: Callable[[dict], None]
) -> dict:
    """{name: array} for the ``name.npy`` members with ``names(name)`` true (others are never read).

    path: a file name, or a binary file already opened (``files.open_regular``: checked to be a
    regular file of a plausible size first).

    ``check({name: ArrayHeader})`` runs before any data is decompressed; it raises to refuse.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            members = _members(zf, names)
            headers = {name: _header(zf, name, info) for name, info in members.items()}
            check(headers)
            return {name: _data(zf, name, h) for name, h in headers.items()}
    except NpzError:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        raise NpzError(f"{type(exc).__name__}: {exc}") from None


def _members(zf: zipfile.ZipFile, names: Callable[[str], bool]) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise NpzError(f"it holds {len(infos)} members; a checkpoint has at most {MAX_MEMBERS}")
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename[: -len(".npy")]
        if not info.filename.endswith(".npy") or not names(name):
            continue
        if name in members:
            raise NpzError(f"array {name!r} appears twice")
        if info.flag_bits & 0x1:
            raise NpzError(f"array {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise NpzError(
                f"array {name!r} uses zip compression method {info.compress_type}; expected stored or deflated"
            )
        members[name] = info
    return members


def _header(zf: zipfile.ZipFile, name: str, info: zipfile.ZipInfo) -> ArrayHeader:
    with zf.open(info) as f:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(f)
        else:
            raise NpzError(f"array {name!r} is .npy format version {version}; expected 1.0 or 2.0")
        header = ArrayHeader(tuple(shape), dtype, fortran_order, info, f.tell())
    if dtype.hasobject:
        raise NpzError(f"array {name!r} holds Python objects (dtype {dtype}); only plain arrays are read")
    if info.file_size != header.data_offset + header.nbytes:
        raise NpzError(
            f"array {name!r} is {info.file_size} bytes in the zip but its header {shape} {dtype} "
            f"implies {header.data_offset + header.nbytes}"
        )
    return header


def _data(zf: zipfile.ZipFile, name: str, header: ArrayHeader) -> np.ndarray:
    raw = np.empty(header.nbytes, dtype=np.uint8)
    with zf.open(header.info) as f:
        f.read(header.data_offset)
        done = 0
        while done < header.nbytes:
            chunk = f.read(min(CHUNK, header.nbytes - done))
            if not chunk:
                raise NpzError(f"array {name!r} is truncated after {done} of {header.nbytes} bytes")
            raw[done : done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            done += len(chunk)
        if f.read(1):  # also makes zipfile compare the CRC-32 at the end of the member
            raise NpzError(f"array {name!r} holds more data than its header announces")
    array = raw.view(header.dtype)
    if header.fortran_order:
        return array.reshape(header.shape[::-1]).T
    return array.reshape(header.shape)
