"""The fast merge path's compiled kernel (``kernel.c``): built on first use, loaded with ctypes.

The C source ships with the package and is compiled once per source version with the system C
compiler (``$CC``, else ``cc``) into ``$MICOTA_CACHE/kernels`` (default ``~/.cache/micota``), like
torch's and numba's extension caches; every later merge loads the cached library (a few ms). It is
required: without a compiler the fast path stops with one line, it never falls back to another
implementation, so a merge's bytes do not depend on what is installed. The flags forbid FMA
contraction and fast-math, so every float32 operation is the IEEE one numpy would do (tests compare
the kernel with a numpy implementation bit for bit, ``tests/merge_reference.py``); on x86-64 Linux
with GCC the entry points are cloned for AVX-512, AVX2 and baseline and picked at load time.

``Job`` mirrors ``mk_job`` in ``kernel.c`` field by field (its size is checked at load).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
import threading
from ctypes import c_double, c_float, c_int32, c_int64, c_uint32, c_uint64, c_void_p
from pathlib import Path

from micota.errors import UserError

SOURCE = Path(__file__).with_name("kernel.c")
FLAGS = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared"]


class Job(ctypes.Structure):
    """One kernel call's work (see ``mk_job`` in kernel.c for each field's meaning)."""

    _fields_ = [("b", c_void_p), ("f", c_void_p), ("out", c_void_p),
                ("b_bf16", c_int32), ("f_bf16", c_int32), ("out_bf16", c_int32), ("topk", c_int32),
                ("start", c_int64), ("n", c_int64), ("block", c_int64),
                ("states", c_void_p), ("keep_below", c_uint64), ("bits", c_void_p),
                ("thr", c_uint32), ("lo", c_uint32), ("hi", c_uint32), ("pad", c_uint32), ("left", c_int64),
                ("cands", c_void_p), ("ncands", c_int64), ("gt", c_int64), ("kept", c_int64),
                ("sum", c_double * 4),
                ("scale", c_float), ("w", c_float), ("div", c_float), ("lam", c_float), ("limit", c_float),
                ("has_scale", c_int32), ("has_div", c_int32), ("has_lam", c_int32), ("bad", c_int32)]


_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def library_path() -> Path:
    """Where this source version's library is cached (keyed by source, flags, compiler and machine)."""
    from micota.io import cache_dir

    cc = os.environ.get("CC", "cc")
    key = hashlib.sha256(SOURCE.read_bytes() + repr((FLAGS, cc, platform.machine())).encode()).hexdigest()[:16]
    return cache_dir() / "kernels" / f"merge-{key}.so"


def build(path: Path) -> None:
    """Compile kernel.c into ``path`` (atomically: concurrent first uses each build, one rename wins)."""
    cc = shlex.split(os.environ.get("CC", "cc"))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    os.close(fd)
    try:
        r = subprocess.run([*cc, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["no message"])[-1]
            raise UserError(f"the merge kernel did not compile ({cc[0]}: {last}); the fast merge path needs a "
                            f"C compiler (Debian: apt-get install gcc; or set CC)")
        os.replace(tmp, path)
    except FileNotFoundError:
        raise UserError(f"the fast merge path needs a C compiler to build its kernel once; '{cc[0]}' was not "
                        f"found (Debian: apt-get install gcc; or set CC)") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def lib() -> ctypes.CDLL:
    """The loaded kernel (built first if this source version is not cached yet)."""
    global _lib
    with _lock:
        if _lib is None:
            path = library_path()
            if not path.is_file():
                build(path)
            dll = ctypes.CDLL(str(path))
            for name in ("mk_masks", "mk_stats", "mk_apply"):
                getattr(dll, name).argtypes, getattr(dll, name).restype = [ctypes.POINTER(Job)], None
            dll.mk_sample.argtypes, dll.mk_sample.restype = [ctypes.POINTER(Job), c_int64, c_int64, c_void_p], c_int64
            dll.mk_portable.argtypes, dll.mk_portable.restype = [c_int32], None
            dll.mk_job_size.restype = c_int64
            if dll.mk_job_size() != ctypes.sizeof(Job):
                raise RuntimeError(f"kernel.py's Job ({ctypes.sizeof(Job)} bytes) does not mirror kernel.c's "
                                   f"mk_job ({dll.mk_job_size()} bytes)")
            _lib = dll
        return _lib
