"""File primitives every stage uses: atomic writes, atomic directories, hashing.

- :func:`atomic_write_text` / :func:`atomic_write_json`: temp file in the same directory + fsync +
  ``os.replace``; a reader never sees half a file.
- :func:`atomic_dir`: build a whole output directory under a temporary sibling name and rename it
  into place only when the body finishes; on error the temporary directory is removed, so nothing
  that looks complete is left behind. It never replaces an existing output unless ``overwrite``.
- :func:`output_lock`: one writer per output. An advisory ``fcntl.flock`` on ``.NAME.lock`` beside
  the output, released by the OS when the holder dies (a killed run never blocks the next); a second
  writer fails at once naming the holder's pid and command; the holder removes the file when done
  (a killed holder leaves it, unlocked, and the next writer reuses it). Taking it sweeps the stale
  ``.NAME.*.partial`` siblings a killed writer left. :func:`call_locked` runs a stage function under
  the lock of its config's output field; every stage entry (CLI, pipeline runner, launcher) uses it.
- :func:`sha256_file`: a file's sha256; large files through a digest cache keyed by their stat
  (``$MICOTA_CACHE/sha256``), so unchanged weights are hashed once.
- :func:`check_under`: a path a stage writes must lie under its output directory.
- :func:`write_error` / :func:`os_errors_from_writers`: a failed write that a library reports as
  another exception type (torch's ``PytorchStreamWriter``/``inline_container.cc`` RuntimeError,
  safetensors' ``SafetensorError: ... I/O error``) becomes the ``OSError`` it is, so a full or
  read-only disk is one ``error:`` line wherever it happens (a checkpoint, the final model).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from micota.errors import UserError


_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a failed write names no file: name the output
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert pydantic models, paths, tuples and sets into plain JSON values."""
    if hasattr(obj, "model_dump"):
        return to_jsonable(obj.model_dump(mode="json"))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(to_jsonable(v) for v in obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def dumps_canonical(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces): the input of every hash."""
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=indent, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


# ----------------------------------------------------------------------------- one writer per output
OUT_FIELDS = ("out", "out_dir", "output", "output_dir")  # the config field naming a stage's output
_HELD: dict[str, list[int]] = {}  # lock path -> [fd, depth]: re-entrant within one process


def _lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def _holder(fd: int) -> str:
    for _ in range(20):  # the holder writes its pid right after locking: give it a moment
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        except (OSError, ValueError):
            info = None
        if isinstance(info, dict):
            return f"pid {info.get('pid')}: {info.get('cmd')}"
        time.sleep(0.05)
    return "pid unknown"


def sweep_partials(out: str | os.PathLike) -> list[Path]:
    """Remove ``.NAME.*.partial`` siblings of ``out`` (call only while holding its lock)."""
    out = Path(out)
    gone = []
    for p in out.parent.glob(f".{out.name}.*.partial"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        gone.append(p)
    return gone


@contextlib.contextmanager
def output_lock(out: str | os.PathLike) -> Iterator[Path]:
    """Hold the advisory lock of output ``out`` (a directory) for the body; see the module doc."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory (choose another output path)")
    lock = _lock_path(out)
    key = os.path.realpath(lock)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield out
        finally:
            _HELD[key][1] -= 1
        return
    fd = _acquire(lock, out)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "cmd": " ".join(sys.argv)[:500]}).encode(), 0)
        _HELD[key] = [fd, 1]
        sweep_partials(out)
        yield out
    finally:
        _HELD.pop(key, None)
        with contextlib.suppress(OSError):
            os.unlink(lock)  # removed while still locked: a waiter then sees a different file and retries
        os.close(fd)  # releases the flock


def _acquire(lock: Path, out: Path) -> int:
    """Open and flock ``lock`` (non-blocking); retry if the file was replaced meanwhile."""
    while True:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        except OSError as e:
            raise UserError(f"{out}: cannot write the output here ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(fd)
            os.close(fd)
            raise UserError(f"{out}: another micota process is writing this output ({who}); "
                            "wait for it to finish or choose another output") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed it as we opened it: lock the current file


def stage_output(cfg: Any) -> Path | None:
    """The directory a stage config writes: its ``writer_dir()`` when it has one (one task of a split
    generate output writes, and locks, only its task's directory), else its ``out``-like field."""
    writer = getattr(cfg, "writer_dir", None)
    if callable(writer):
        return Path(writer())
    for f in OUT_FIELDS:
        v = getattr(cfg, f, None)
        if v:
            return Path(v)
    return None


def call_locked(fn: Callable[[Any], Any], cfg: Any) -> Any:
    """``fn(cfg)`` under the lock of the config's output. Under a multi-process launcher only rank 0
    locks (the ranks of one stage are one writer)."""
    out = stage_output(cfg)
    if out is None or os.environ.get("RANK", "0") != "0":
        return fn(cfg)
    with output_lock(out):
        return fn(cfg)


def check_under(path: str | os.PathLike, root: str | os.PathLike, *, what: str = "path") -> Path:
    """``path`` if it lies under ``root`` (after resolving ``..`` and links), else a :class:`UserError`."""
    p, r = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    if p != r and r not in p.parents:
        raise UserError(f"{what} {path} lies outside the output directory {root}")
    return Path(path)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` only if the body completes.

    Holds ``final``'s :func:`output_lock` throughout; an output that appeared meanwhile is never
    replaced unless ``overwrite`` (then it is moved aside first and removed after the rename).
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise UserError(f"{final}: output already exists (remove it or choose another path)")
    with output_lock(final):
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
        try:
            os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700
            yield tmp
            old = None
            if final.exists():
                if not overwrite:
                    raise UserError(f"{final}: output appeared while this one was built (pass overwrite to replace it)")
                old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old.partial", dir=final.parent))
                os.replace(final, old / "x")
            os.replace(tmp, final)
            _fsync_dir(final.parent)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            name = os.fspath(e.filename) if isinstance(e, OSError) and isinstance(e.filename, (str, os.PathLike)) else ""
            if name.startswith(str(tmp)):  # a full disk names the file by the output's name, not the hidden partial
                raise OSError(e.errno, e.strerror, str(final) + name[len(str(tmp)):]) from None
            raise


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def cache_dir() -> Path:
    """micota's cache (converted models, compiled kernels, file digests): ``$MICOTA_CACHE`` or
    ``~/.cache/micota``."""
    return Path(os.environ.get("MICOTA_CACHE") or Path.home() / ".cache" / "micota")


DIGEST_MIN = 32 << 20  # files at least this large have their sha256 cached (smaller ones hash in < 20 ms)
RACY_NS = 2_000_000_000  # a file changed less than this long before hashing is not cached (see below)


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 18, on_bytes: Callable[[int], Any] | None = None) -> str:
    """sha256 of a file's bytes, read into one reused buffer small enough to stay in the L2 cache
    (hashlib releases the GIL: threads hash beside other work). Measured on a 1 GB file in the page
    cache: 0.65 s CPU, against 0.87 s from a memory map (the hash then waits on DRAM) or fresh buffers.

    Files of :data:`DIGEST_MIN` bytes or more go through a digest cache, as git's index and DVC do:
    ``$MICOTA_CACHE/sha256/`` maps the file's identity and change stamps — (device, inode, size,
    mtime_ns, ctime_ns) — to its digest, so a weight file hashed once (a merge search merges the same
    pair at every point; every stage hashes its model inputs) is not read again until it changes. Any
    write changes mtime and ctime (ctime cannot be set back, ``touch -d`` included), so a changed file
    misses. A digest is stored only when the stat before and after hashing agree and both stamps are
    more than :data:`RACY_NS` old — a write landing in the same timestamp tick as the hash would
    otherwise leave a stale entry (git's "racy" case). ``MICOTA_HASH_CACHE=off`` disables it; an
    unwritable cache only costs the rehash. ``on_bytes(n)`` is called as bytes are hashed (a bar).
    """
    path = Path(path)
    st, started = os.stat(path), time.time_ns()
    if (got := cached_sha256(path, st)) is not None:
        return got
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            if on_bytes is not None:
                on_bytes(n)
    digest = h.hexdigest()
    remember_sha256(path, digest, st, started)
    return digest


def cached_sha256(path: str | os.PathLike, st: os.stat_result | None = None) -> str | None:
    """The cached digest of ``path`` (stat ``st`` if already taken), or None (a miss, a small file, off)."""
    entry = _digest_entry(st or os.stat(path))
    if entry is None:
        return None
    try:
        got = (entry.read_text().split() or [""])[0]
    except (OSError, UnicodeDecodeError):
        return None
    return got if len(got) == 64 and all(c in "0123456789abcdef" for c in got) else None


def remember_sha256(path: str | os.PathLike, digest: str, st: os.stat_result, started_ns: int) -> None:
    """Cache ``digest`` for ``path``, hashed from the file as stat ``st`` showed it at ``started_ns``
    (``time.time_ns()`` before the first byte was read) — stored only when the file's stamps still
    match and are more than :data:`RACY_NS` older than the start."""
    entry = _digest_entry(st)
    if entry is None or started_ns - max(st.st_mtime_ns, st.st_ctime_ns) <= RACY_NS:
        return
    with contextlib.suppress(OSError):  # a cache is an optimisation: a read-only or full disk skips it
        if _stamps(os.stat(path)) != _stamps(st):
            return
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f".{entry.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(f"{digest} {Path(path).resolve()}\n")
        os.replace(tmp, entry)


def _stamps(st: os.stat_result) -> tuple[int, ...]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _digest_entry(st: os.stat_result) -> Path | None:
    """The cache file for a file with this stat (None when the file is small or the cache is off)."""
    if st.st_size < DIGEST_MIN or os.environ.get("MICOTA_HASH_CACHE", "").lower() in ("0", "off", "false", "no"):
        return None
    key = hashlib.sha256(":".join(map(str, _stamps(st))).encode()).hexdigest()
    return cache_dir() / "sha256" / key[:2] / key[2:]


def sha256_path(path: str | os.PathLike) -> str:
    """Hash of a file, or of a directory's files (relative names + contents, sorted).

    Hidden temporaries (names starting with '.') are ignored so a directory being resumed hashes
    the same as its finished parts.
    """
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such file or directory")
    h = hashlib.sha256()
    for p in visible_files(path):
        h.update(str(p.relative_to(path)).encode() + b"\0" + sha256_file(p).encode() + b"\n")
    return h.hexdigest()


def visible_files(folder: Path) -> list[Path]:
    """A folder's files, sorted, without hidden ones (a name in the relative path starting with '.')."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))


# ----------------------------------------------------------------------------- write failures
_WRITER_MESSAGES = ("PytorchStreamWriter", "inline_container.cc", "Error while serializing", "I/O error")


def _disk_full(where: Path) -> bool:
    """Whether the file system holding ``where`` (or its nearest existing parent) has < 1 MiB left."""
    for p in (where, *where.parents):
        try:
            st = os.statvfs(p)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize < (1 << 20)
    return False


def write_error(e: BaseException, where: str | os.PathLike | None = None) -> OSError | None:
    """The ``OSError`` behind ``e`` when ``e`` is a failed write, else None.

    An ``OSError`` is returned as is. torch and safetensors report write failures as other types:
    safetensors names the OS error (``... I/O error: No space left on device (os error 28)``);
    torch's zip writer only says ``unexpected pos`` or ``file write failed``, so its cause is read
    from the disk: < 1 MiB free under ``where`` means ENOSPC."""
    if isinstance(e, OSError):
        return e
    msg = str(e)
    if not any(m in msg for m in _WRITER_MESSAGES):
        return None
    where_s = os.fspath(where) if where is not None else None
    if m := re.search(r"os error (\d+)", msg):
        code = int(m.group(1))
        return OSError(code, os.strerror(code), where_s)
    if where is not None and _disk_full(Path(where)):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where_s)
    return OSError(errno.EIO, f"write failed ({' '.join(msg.split())[:200]})", where_s)


@contextlib.contextmanager
def os_errors_from_writers(where: str | os.PathLike) -> Iterator[None]:
    """Re-raise a failed write inside the body (see :func:`write_error`) as its ``OSError``."""
    try:
        yield
    except OSError:
        raise
    except Exception as e:
        err = write_error(e, where)
        if err is None:
            raise
        raise err from None
