"""The Backend interface: an array namespace bound to one device, one subclass per library."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import threading
from typing import Any, ClassVar

import array_api_compat as aac
import numpy as np

from twolayer_xp.errors import one_line

DTYPES = ("float32", "float64")


class CudaUnavailableError(RuntimeError):
    """CUDA was asked for but cannot be used here; the message is one line with the fix."""


class Backend:
    """An array namespace ``xp`` bound to one ``device`` of one library.

    Subclasses own their library's quirks (device names, host transfer, synchronization);
    everything else in the package computes on ``xp`` and creates arrays with ``device=``.
    """

    name: ClassVar[str]  # the user-facing backend name, e.g. "numpy"
    module: ClassVar[str]  # the library's import name, for version reports
    # True when ``asarray`` builds from host memory only (numpy, array-api-strict): another
    # library's array on a device must be moved to the CPU first (torch and CuPy take a GPU's).
    host_inputs_only: ClassVar[bool] = False

    def __init__(self, xp: Any, device: Any):
        self.xp, self.device = xp, device

    # -- what a subclass provides ------------------------------------------------------------

    @classmethod
    def owns_type(cls, x: Any) -> bool:
        """True when ``x`` is an array of this library (on any device)."""
        raise NotImplementedError

    @classmethod
    def create(cls, kind: str | None, index: int | None, device: Any) -> Backend:
        """From ``kind`` ("cpu"/"cuda") and GPU ``index``, or from a library ``device`` object."""
        raise NotImplementedError

    @classmethod
    def host(cls, x: Any) -> np.ndarray:
        """``x`` (an array of this library) as a numpy array on the host."""
        return np.asarray(x)

    @classmethod
    def in_host_memory(cls, x: Any) -> bool:
        """True when ``x`` (an array of this library) lives in the host's memory, so that
        looking at its values is no device sync: numpy's, torch's on the CPU, strict's on its
        CPU_DEVICE."""
        return False

    @classmethod
    def host_view(cls, x: Any) -> np.ndarray | None:
        """``x`` (an array of this library) as numpy when it is in host memory (a view, no
        device sync), else None."""
        return cls.host(x) if cls.in_host_memory(x) else None

    @property
    def device_label(self) -> str:
        """Short, user-facing device name: 'cpu', 'cuda:0', 'device1', ..."""
        return "cpu"

    @property
    def host_memory(self) -> bool:
        """True when arrays live in the host's memory (a CPU device), so host limits apply."""
        return True

    @property
    def host_arrays(self) -> bool:
        """True when looking at an array's values is never a device sync (numpy, torch on the
        CPU); False on a GPU, and for array-api-strict, whose devices stand in for one."""
        return False

    def synchronize(self) -> None:
        """Wait for queued device work, so that a timer measures the work and not its launch."""

    def activate(self):
        """A context in which this backend's device is the library's current one. CuPy computes
        on the current GPU and array-api-compat's CuPy creation functions ignore ``device=``,
        so a model on cuda:1 computed (and made new arrays) on GPU 0 outside it. Elsewhere
        ``device=`` and the arrays' own devices decide: a no-op."""
        return contextlib.nullcontext()

    def quiet_overflow(self):
        """A context that silences the library's own overflow warnings: training detects
        non-finite losses itself and says so in one message."""
        return contextlib.nullcontext()

    def limit_threads(self, count: int | None):
        """A context in which this backend computes with at most ``count`` CPU threads (None:
        as the libraries are configured). A GPU backend is unaffected. The count comes from
        ``core.threads.choose``; the environment variables are never written."""
        return contextlib.nullcontext()

    def threads_in_effect(self) -> int | None:
        """The CPU threads this backend's pool has outside this package's own open limits: what
        the library made of the environment, or a limit the user set some other way; None where
        it has none or does not say (a GPU)."""
        return None

    def threads_now(self) -> int | None:
        """The CPU threads this backend's pool computes with for the calling thread now, inside
        any open limit (OpenMP's count is per thread; OpenBLAS may ignore a count set from
        another Python thread): what a training call in this thread really gets. None where it
        has none or does not say (a GPU)."""
        return None

    def gpu_name(self) -> str | None:
        """The GPU's marketing name, for reports; None on a CPU."""
        return None

    def supported_dtypes(self) -> tuple[str, ...]:
        info = self.xp.__array_namespace_info__()
        return tuple(sorted(info.dtypes(device=self.device, kind="real floating")))

    # -- shared behaviour -------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={self.device_label})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Backend) and (self.name, self.device_label) == (
            other.name,
            other.device_label,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.device_label))

    def __reduce__(self):
        # The namespace module cannot be pickled: a copy resolves its library again (a fitted
        # model pickles for joblib; deepcopy works).
        from . import resolve

        return resolve, (self.device, self.name)

    def owns(self, x: Any) -> bool:
        return self.owns_type(x)

    def holds(self, x: Any) -> bool:
        """True when ``x`` is an array of this library on this backend's device (``owns`` asks
        the library only: an array on another device must be moved before it meets this one's)."""
        return self.owns_type(x) and aac.device(x) == self.device

    def dtype(self, dtype: Any) -> Any:
        """The namespace's float dtype for ``dtype`` ('float32', 'float64', or a dtype object)."""
        name = dtype_name(dtype)
        supported = self.supported_dtypes()
        if name not in supported:
            raise ValueError(
                f"dtype={name!r} is not supported on device {self.device_label} of "
                f"{self.name}; use one of {list(supported)}"
            )
        return getattr(self.xp, name)

    def asarray(self, x: Any, dtype: Any = None, copy: bool | None = None) -> Any:
        """Place a host (numpy) or same-library array on this device; ``copy=True`` before mutating."""
        if isinstance(dtype, str):
            dtype = self.dtype(dtype)
        return self.xp.asarray(x, dtype=dtype, device=self.device, copy=copy)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Bring an array of this backend (or a Python scalar) to the host: the one sync."""
        return self.host(x) if self.owns_type(x) else np.asarray(x)

    def versions(self) -> dict[str, str]:
        """Versions of numpy, array-api-compat and this library, for run records."""
        versions = {"numpy": np.__version__, "array_api_compat": aac.__version__}
        if self.module != "numpy":
            versions[self.name] = getattr(importlib.import_module(self.module), "__version__", "unknown")
        return versions


def dtype_name(dtype: Any) -> str:
    """'float32' or 'float64' for a name or any library's float dtype; ValueError otherwise."""
    if isinstance(dtype, str):
        name = dtype
    else:
        name = str(dtype).rsplit(".", 1)[-1].strip("'>")
        name = {"float": "float64", "double": "float64"}.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"dtype must be {' or '.join(map(repr, DTYPES))}, got {dtype!r}")
    return name


def import_or_explain(module: str, fix: str):
    """Import ``module`` or raise ImportError in one line with the command that fixes it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"backend {module!r} is not installed ({one_line(exc, named=True)}); fix: {fix}"
        ) from None


@functools.cache
def keep_freed_host_memory() -> bool:
    """Stop glibc from returning large freed blocks to the OS after every step.

    A training step frees and reallocates temporaries of a few MB (a population's (N, K*H)
    arrays); glibc's adaptive thresholds hand them back to the OS and the next step faults them
    in again, page by page (measured: ~1,700 page faults per step at K=64 on digits, 1.75x the
    time). Fixed thresholds keep them in the heap: blocks up to 32 MiB come from the heap and
    up to 256 MiB of freed heap is kept for reuse. Once per process; glibc only (elsewhere a no-op).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 256 << 20))
    except (OSError, AttributeError):
        return False


class SharedLimit:
    """A process-wide thread pool's count, set for a context and restored after, by contexts
    that may overlap (two Python threads training at once): the latest entered that is still
    open sets the count, and the last one out restores what the pool had before the first.
    (Each context restoring its own saved count left the pool lowered for good when they closed
    out of order.) ``apply(count)`` sets the pool's count and returns how to undo it; ``read()``
    is the pool's count now."""

    def __init__(self, apply, read):
        self.apply, self.read, self.lock = apply, read, threading.Lock()
        self.open, self.undo, self.before = [], None, None

    @contextlib.contextmanager
    def __call__(self, count: int):
        entry = [count]  # compared by identity: two contexts may ask the same count
        with self.lock:
            if not self.open:
                self.before = self.read()
            undo = self.apply(count)
            if not self.open:
                self.undo = undo
            self.open.append(entry)
        try:
            yield
        finally:
            with self.lock:
                self.open = [e for e in self.open if e is not entry]
                if self.open:
                    self.apply(self.open[-1][0])
                else:
                    self.undo()

    def outside(self) -> int | None:
        """The pool's count outside every open limit: what the library and the user made it, not
        another training's limit."""
        with self.lock:
            return self.before if self.open else self.read()


def blas_threads(count: int | None):
    """threadpoolctl's limit on the BLAS and OpenMP pools loaded in this process (numpy's
    OpenBLAS or MKL): changed at run time for the context, restored after (~20-50 us)."""
    if count is None:
        return contextlib.nullcontext()
    return _blas_limit(count)


def blas_threads_in_effect() -> int | None:
    """The threads of the BLAS pools loaded in this process (numpy's OpenBLAS or MKL), the most
    of them, outside this package's own limits; None without one."""
    return _blas_limit.outside()


def blas_threads_now() -> int | None:
    """The threads of the BLAS pools as the calling thread sees them now, open limits included."""
    return _blas_pool_threads()


def _limit_blas(count: int):
    return _thread_pools().limit(limits=count).restore_original_limits


def _blas_pool_threads() -> int | None:
    counts = [pool.num_threads for pool in _thread_pools().lib_controllers if pool.user_api == "blas"]
    return max(counts) if counts else None


_blas_limit = SharedLimit(_limit_blas, _blas_pool_threads)


@functools.cache
def _thread_pools():
    """The pools found once: finding them (threadpool_limits does it on every call) costs
    0.4-2 ms, as much as several digits steps. numpy's BLAS loads with numpy, before any of this."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()
