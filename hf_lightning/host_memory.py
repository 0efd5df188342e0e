"""Host memory while training on CPU: keep glibc's freed heap mapped, so steps do not page-fault.

A training step frees its activations and allocates them again in the next step. glibc's `malloc` hands freed
memory back to the kernel by heuristics that adapt to the process's whole allocation history: it trims the top of
the heap once the free part passes a threshold, and it serves blocks above another threshold (at most 32 MB) with
their own `mmap`, unmapped again on `free`. The kernel then maps and zeroes those pages once more on first touch.
On all-MiniLM-L6-v2 (sequence 128, batch 16, 2 CPU cores) that is 16,000-55,000 page faults and 0.1-0.4 s of system
time a step, different in every process (a raw PyTorch loop and `transformers.Trainer` pay it too), and on the
benchmark machine hf_lightning's process paid the most: 1.09x a raw loop's step time in the same lock-step run,
0.98x with freed memory kept (`benchmarks/README.md`).

`keep_freed_host_memory()` turns both hand-backs off (`M_MMAP_MAX` 0, `M_TRIM_THRESHOLD` 2 GB) for the span
of a CPU `train()`: once the heap has grown over the first steps, the pages a step frees are the ones the next
step reuses. The heap may hold more than glibc would keep between steps (peak RSS on the benchmark jobs did not
grow: tiny BERT and MiniLM, `benchmarks/README.md`); set the argument to False where host memory is tight. On exit it
returns the free memory (`malloc_trim`) and sets the thresholds to the values glibc's adaptive ones reach under
tensor workloads (mmap above 32 MB, trim above 64 MB). Nothing happens off glibc (macOS, musl) or when
`TrainingArguments.keep_freed_host_memory` is False.
"""

from __future__ import annotations

import ctypes
import functools
import platform
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameters (glibc <malloc.h>)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

_MMAP_MAX_DEFAULT = 65536
_MMAP_THRESHOLD_AFTER = 32 * 1024 * 1024
_TRIM_THRESHOLD_AFTER = 64 * 1024 * 1024
_TRIM_NEVER = 2**31 - 1  # the largest `mallopt` takes (an int): only a free heap top above 2 GB is trimmed


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (the one whose `mallopt` these parameters mean); looked up once."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL("libc.so.6")  # glibc's soname on every Linux architecture
    for name in ("mallopt", "malloc_trim"):
        if not hasattr(libc, name):
            return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def _set(libc: ctypes.CDLL, settings: dict[int, int]) -> bool:
    """Apply `mallopt` settings; glibc answers 1 for each one it took."""
    return all(libc.mallopt(param, value) == 1 for param, value in settings.items())


@contextmanager
def keep_freed_host_memory(enabled: bool = True) -> Iterator[bool]:
    """Within the block, glibc keeps freed memory mapped (no heap trimming, no per-block mmap); yields whether it
    applied."""
    libc = _glibc() if enabled else None
    applied = libc is not None and _set(libc, {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: _TRIM_NEVER})
    try:
        yield applied
    finally:
        if libc is not None:
            _set(
                libc,
                {
                    M_MMAP_MAX: _MMAP_MAX_DEFAULT,
                    M_MMAP_THRESHOLD: _MMAP_THRESHOLD_AFTER,
                    M_TRIM_THRESHOLD: _TRIM_THRESHOLD_AFTER,
                },
            )
            libc.malloc_trim(0)
