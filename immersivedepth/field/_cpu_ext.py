"""Build-on-first-use loader for the fused C++ CPU kernels (``csrc/``: one ``.cpp`` per op, ``bindings.cpp``).

The extension is compiled once with ``torch.utils.cpp_extension.load`` into a cache directory and reused by
later processes. The build name includes a hash of the sources and headers (their paths and contents), the torch
version and the CPU's instruction-set flags, so an edited source, a new torch or a different machine sharing the
cache never loads a stale binary, and two checkouts do not keep rebuilding each other's build directory.

Environment variables:
    IMMERSIVEDEPTH_EXT_CACHE     cache directory (default ``~/.cache/immersivedepth/torch_extensions``)
    IMMERSIVEDEPTH_DISABLE_CPU_EXT=1   never build/load the extension (everything falls back to pure torch)

``load_cpu_ext()`` returns the module or ``None``; the first failure is reported with one warning and remembered
for the rest of the process, so callers can fall back silently afterwards.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["load_cpu_ext", "cpu_ext_error", "SOURCE_DIR", "SOURCES", "HEADERS", "default_cache_dir"]

SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
#: Translation units, in a fixed order (one per op plus the bindings); ``HEADERS`` are hashed into the build name.
SOURCES = tuple(sorted(SOURCE_DIR.glob("*.cpp")))
HEADERS = tuple(sorted(SOURCE_DIR.glob("*.h")))

_lock = threading.Lock()
_module: ModuleType | None = None
_error: str | None = None
_tried = False


def default_cache_dir() -> Path:
    """Directory that holds compiled extensions (created on demand)."""
    env = os.environ.get("IMMERSIVEDEPTH_EXT_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "immersivedepth" / "torch_extensions"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _arch_flags() -> list[str]:
    """``-march=native`` where the compiler accepts it (the build is per machine anyway), else nothing."""
    if platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64"):
        return ["-march=native"]
    return []


def _cflags() -> list[str]:
    return ["-O3", "-fopenmp", *_arch_flags()]


def _build_name() -> str:
    h = hashlib.sha1()
    for src in SOURCES + HEADERS:
        h.update(str(src).encode())  # one build per checkout: ninja would rebuild a build dir shared by two paths
        h.update(src.read_bytes())
    h.update(torch.__version__.encode())
    h.update(_cpu_flags().encode())
    h.update(" ".join(_cflags()).encode())
    return f"immersivedepth_field_cpu_{h.hexdigest()[:12]}"


def _first_error_line(message: str) -> str:
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for ln in lines:
        if "error" in ln.lower() and "build stopped" not in ln:
            return ln
    return lines[-1] if lines else "unknown error"


def cpu_ext_error() -> str | None:
    """Why the extension is unavailable (``None`` if it loaded or was never tried)."""
    return _error


def load_cpu_ext(verbose: bool = False, warn: bool = True) -> ModuleType | None:
    """Compile (first call only) and import the fused CPU op module; ``None`` if that is impossible.

    Args:
        verbose: show the compiler output.
        warn: emit one ``RuntimeWarning`` naming the reason when the build fails.
    """
    global _module, _error, _tried
    with _lock:
        if _tried:
            return _module
        _tried = True
        if os.environ.get("IMMERSIVEDEPTH_DISABLE_CPU_EXT", "") not in ("", "0"):
            _error = "disabled by IMMERSIVEDEPTH_DISABLE_CPU_EXT"
            return None
        cxx = os.environ.get("CXX", "c++")
        if shutil.which(cxx) is None:
            _error = f"no C++ compiler found (looked for {cxx!r}; install g++ or set CXX)"
        else:
            try:
                from torch.utils.cpp_extension import load

                name = _build_name()
                build_dir = default_cache_dir() / name
                build_dir.mkdir(parents=True, exist_ok=True)
                _module = load(
                    name=name,
                    sources=[str(src) for src in SOURCES],
                    extra_cflags=_cflags(),
                    extra_ldflags=["-fopenmp"],
                    build_directory=str(build_dir),
                    verbose=verbose,
                )
            except Exception as exc:  # compiler errors, missing ninja, ...
                _module = None
                _error = f"{type(exc).__name__}: {_first_error_line(str(exc))}"
        if _module is None and warn:
            warnings.warn(
                f"ImmersiveDepth fused CPU op unavailable ({_error}); falling back to the pure-PyTorch path "
                "(correct but several times slower).",
                RuntimeWarning,
                stacklevel=2,
            )
        return _module
