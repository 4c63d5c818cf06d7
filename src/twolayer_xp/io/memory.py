"""Host memory: what is still free, and sizes in words, for checks made before allocating."""

from __future__ import annotations

import os


def available_bytes() -> int | None:
    """Memory the host can still hand out (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def size_text(n: float) -> str:
    """Bytes in words: 1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def check_fits(need: int, what: str, fix: str) -> None:
    """ValueError in one line when ``need`` bytes for ``what`` exceed the memory available."""
    have = available_bytes()
    if have is not None and need > have:
        raise ValueError(
            f"{what} needs about {size_text(need)} of memory but {size_text(have)} is available; {fix}"
        )
