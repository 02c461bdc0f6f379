"""Process-wide JAX settings for the command line: fastest verified CPU flags and the compilation cache."""

from __future__ import annotations

import os
from pathlib import Path

# Measured on the 2-core development CPU (benchmarks/xla_flags.py): equal outputs, faster convolutions.
CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def default_xla_flags(existing: str) -> str:
    """``existing`` plus the default CPU flags that it does not set already."""
    flags = existing.split()
    for flag in CPU_XLA_FLAGS:
        if not any(f.split("=")[0] == flag.split("=")[0] for f in flags):
            flags.append(flag)
    return " ".join(flags)


def configure_runtime(cache_dir: str | os.PathLike | None = None) -> None:
    """Set the default XLA flags (before JAX starts its backend) and enable the persistent compilation cache."""
    os.environ["XLA_FLAGS"] = default_xla_flags(os.environ.get("XLA_FLAGS", ""))
    import jax

    cache = Path(cache_dir or os.environ.get("JAXIR_CACHE_DIR", Path.home() / ".cache" / "jaxir" / "xla"))
    cache.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def release_freed_host_memory() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim(0)``); a no-op elsewhere. Loading a checkpoint
    leaves the orbax/NumPy staging buffers in glibc's free lists, which otherwise count in the peak RSS of the
    sampling that follows (``benchmarks/results_ldm.md``, "+trim")."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
