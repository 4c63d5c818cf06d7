"""Reading CIFAR-10's pickled batches safely: an opcode scan that bounds the unpickler's stack and
memo, an allow-list unpickler that cannot run code or allocate more than a real batch needs, and
checks of what it returns."""

from __future__ import annotations

import math
import mmap
import pickle
import pickletools
from pathlib import Path

import numpy as np

from twolayer_xp.errors import one_line

CIFAR10_ROW = 3 * 32 * 32  # uint8 values of one image: 32 x 32 pixels x R, G, B


class DataError(ValueError):
    """Missing, corrupt or unexpected data files; the message says what and how to fix it."""


# Safe unpickling: the batches are Python 2 pickles of a dict holding bytes, lists and one numpy
# uint8 array. Only what rebuilds such a dict is allowed, each within a byte budget, so a crafted
# file can neither run code nor make the reader allocate more than a real batch needs.
# A real batch: 10000 rows of 3072 uint8 pixels, 10000 labels, 10000 filenames (at most ~40
# bytes each) and a batch label.
CIFAR10_BATCH_ROWS = 10_000
MAX_BATCH_ARRAY_BYTES = CIFAR10_BATCH_ROWS * CIFAR10_ROW  # 30,720,000: one batch's pixels
# Re-pickled (Python 3) batches write bytes as _codecs.encode(str, 'latin1'): the pixels once
# more, plus filenames and labels; 256 bytes a row is 6x what the real filenames take.
MAX_BATCH_TEXT_BYTES = MAX_BATCH_ARRAY_BYTES + CIFAR10_BATCH_ROWS * 256
# That text is UTF-8 in the file: up to 2 bytes a pixel. Official batches are ~31 MB.
MAX_BATCH_FILE_BYTES = 2 * MAX_BATCH_TEXT_BYTES
_NDARRAY = object()  # stands for numpy.ndarray: only _reconstruct may take it; it cannot be called
# The unpickler's own memory: its memo grows by one slot per opcode at most if every memo index is
# below the count of opcodes read so far (a pickler numbers its memo from 0 or 1), and its stack
# is bounded by the scan below. A real batch is ~90,000 opcodes (protocol 2; protocol 0: ~120,000)
# whose stack never holds more than a few thousand objects (picklers append 1000 items at a time).
MAX_BATCH_OPCODES = 1_000_000
MAX_STACK_DEPTH = 100_000
_MEMO_OPCODES = {"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"}


class _CheckedArray(np.ndarray):
    """An array that _reconstruct hands the pickle; its __setstate__ takes only uint8 data of the
    announced size, within the unpickler's budget, before numpy allocates anything."""

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("array state is not numpy's (shape, dtype, order, data)")
        shape, dtype, rawdata = state[-4], state[-3], state[-1]
        if not (isinstance(dtype, np.dtype) and dtype == np.uint8 and isinstance(rawdata, bytes)):
            raise pickle.UnpicklingError("a CIFAR-10 batch holds only uint8 arrays of raw bytes")
        if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
            raise pickle.UnpicklingError(f"array shape {shape!r} is not a tuple of sizes")
        if math.prod(shape) != len(rawdata):
            raise pickle.UnpicklingError(f"array shape {shape} does not match its {len(rawdata)} bytes")
        self.unpickler.spend("array_bytes", len(rawdata), MAX_BATCH_ARRAY_BYTES)
        super().__setstate__(state)


class _BatchUnpickler(pickle.Unpickler):
    def __init__(self, file):
        super().__init__(file, encoding="bytes")
        self.spent = {"text_bytes": 0, "array_bytes": 0}

    def find_class(self, module, name):
        allowed = {
            ("_codecs", "encode"): self._latin1,
            ("numpy.core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy", "ndarray"): _NDARRAY,
            ("numpy", "dtype"): _uint8_dtype,
        }
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR-10 batch")

    def spend(self, what: str, amount: int, cap: int) -> None:
        self.spent[what] += amount
        if self.spent[what] > cap:
            raise pickle.UnpicklingError(
                f"it decodes more than {cap} {what.replace('_', ' ')}; a batch needs less"
            )

    def _latin1(self, text, encoding):
        """_codecs.encode as Python 3 pickles bytes: (str, 'latin1'), one byte a character."""
        if type(text) is not str or encoding != "latin1":
            raise pickle.UnpicklingError(
                f"refusing _codecs.encode({type(text).__name__}, {encoding!r}): a batch encodes only str as 'latin1'"
            )
        self.spend("text_bytes", len(text), MAX_BATCH_TEXT_BYTES)
        return text.encode("latin1")

    def _reconstruct(self, cls, shape, dtype):
        if cls is not _NDARRAY:
            raise pickle.UnpicklingError("_reconstruct may rebuild only numpy.ndarray")
        array = _CheckedArray(0, dtype=np.uint8)
        array.unpickler = self
        return array


def _uint8_dtype(spec, align=False, copy=False):
    if spec not in ("u1", b"u1"):
        raise pickle.UnpicklingError(f"refusing numpy.dtype({spec!r}): a CIFAR-10 batch holds only uint8")
    return np.dtype("u1", False, True)  # a copy: the pickle's BUILD then sets state on it, not on uint8


def _check_opcodes(pages) -> None:
    """Walk the opcode stream of a pickle before anything is unpickled, as pickletools parses it
    (from a mapped file, where an argument announcing 2**40 bytes reads only what is there): more than
    MAX_BATCH_OPCODES opcodes, a stack deeper than MAX_STACK_DEPTH, or a memo index beyond the
    opcodes read so far (the unpickler would allocate a memo that large) is refused."""
    depth, marks = 0, []
    for count, (opcode, arg, _) in enumerate(pickletools.genops(pages)):
        memo, mark, to_mark, change = _EFFECTS[opcode.code]
        if count >= MAX_BATCH_OPCODES:
            raise pickle.UnpicklingError(f"it has more than {MAX_BATCH_OPCODES} opcodes; a batch needs fewer")
        if memo and not (type(arg) is int and 0 <= arg <= count):
            raise pickle.UnpicklingError(f"{opcode.name} of memo index {arg} after {count} opcodes")
        if mark:
            marks.append(depth)
        elif to_mark:  # pops everything since its MARK, then pushes
            depth = (marks.pop() if marks else 0) + change
        else:
            depth += change
        if depth + len(marks) > MAX_STACK_DEPTH:
            raise pickle.UnpicklingError(
                f"its stack grows beyond {MAX_STACK_DEPTH} objects; a batch needs fewer"
            )


# Per opcode: (a memo index, MARK, pops to its MARK, change of the stack: pushed - popped, or
# pushed alone for an opcode that pops to its MARK).
_EFFECTS = {
    op.code: (
        op.name in _MEMO_OPCODES,
        op.name == "MARK",
        pickletools.markobject in op.stack_before,
        len(op.stack_after) - (0 if pickletools.markobject in op.stack_before else len(op.stack_before)),
    )
    for op in pickletools.opcodes
}


def read_batch(path: Path, meta: bool = False):
    """(data (N, 3072) uint8, labels list) of a batch file, or the label names of batches.meta."""
    try:
        size = path.stat().st_size
        if size > MAX_BATCH_FILE_BYTES:
            raise DataError(f"{path} is {size} bytes; a CIFAR-10 batch is at most {MAX_BATCH_FILE_BYTES}")
        # Mapped, not read: both passes read the file's pages, and a length field of 2**40 reads
        # only what is there. A file that cannot be mapped (empty, a pipe, a device) ends here.
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as pages:
            _check_opcodes(pages)
            pages.seek(0)
            batch = _BatchUnpickler(pages).load()
    except FileNotFoundError:
        raise DataError(f"{path} is missing; delete its folder and run again to re-download") from None
    except DataError:
        raise
    except Exception as exc:  # whatever a crafted pickle provokes: one line, never a traceback
        raise DataError(
            f"{path} is not a readable CIFAR-10 batch ({one_line(exc, named=True, limit=240)})"
        ) from None
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, not a CIFAR-10 batch dict")
    if meta:
        names = batch.get(b"label_names")
        if not isinstance(names, list) or len(names) != 10 or not all(_ascii(n) for n in names):
            raise DataError(f"{path} has no list of 10 ASCII label names")
        return [n.decode() for n in names]
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != CIFAR10_ROW
    ):
        raise DataError(f"{path}: b'data' must be a uint8 array of shape (N, {CIFAR10_ROW})")
    if not isinstance(labels, list) or len(labels) != data.shape[0]:
        raise DataError(f"{path}: b'labels' must be a list of {data.shape[0]} ints")
    if not all(type(v) is int and 0 <= v <= 9 for v in labels):
        raise DataError(f"{path}: labels must be ints in [0, 9]")
    return np.asarray(data), np.asarray(labels, dtype=np.int64)


def _ascii(name) -> bool:
    return isinstance(name, bytes) and name.isascii() and 0 < len(name) <= 100
