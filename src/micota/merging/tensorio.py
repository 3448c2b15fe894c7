"""Streaming safetensors IO: lazy per-tensor reads and a preallocated sharded writer.

- :class:`ModelWeights` indexes a model folder's ``*.safetensors`` shards by parsing each header
  (strictly: a truncated or corrupted header, an unknown dtype or out-of-file offsets are a
  :class:`UserError` naming the file) and reads ONE tensor at a time with ``readinto`` straight into
  a fresh torch buffer — a whole model is never resident. Pickle ``.bin`` checkpoints are refused
  unless ``allow_pickle`` (then loaded with ``torch.load(mmap=True, weights_only=True)``).
- :class:`ShardedWriter` knows every output tensor's name, dtype and shape up front, so it writes
  each shard's header first and then each tensor's bytes at its final offset (``os.pwrite``) in any
  order, from any thread. Shards follow HF naming (``model-00001-of-00002.safetensors``) with
  ``model.safetensors.index.json``. Output bytes depend only on the tensors, not on write order.

torch is imported only when a torch tensor is read or a torch dtype is named: headers
(:func:`read_header_raw`) and :class:`ShardedWriter` with safetensors dtype
codes (``"BF16"``) and numpy arrays serve the torch-free fast path (:mod:`micota.merging.fast`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from micota.errors import UserError
from micota.io import atomic_write_json

if TYPE_CHECKING:
    import torch

SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
MAX_HEADER = 100 * 1024 * 1024
_TORCH: dict[str, Any] = {}


def torch_dtypes() -> tuple[dict[str, "torch.dtype"], dict["torch.dtype", str]]:
    """(safetensors code -> torch dtype, torch dtype -> code); imports torch on first use."""
    if not _TORCH:
        import torch

        _TORCH["d"] = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}
        _TORCH["n"] = {v: k for k, v in _TORCH["d"].items()}
    return _TORCH["d"], _TORCH["n"]


def __getattr__(name: str) -> Any:  # DTYPES / DTYPE_NAMES, built lazily
    if name == "DTYPES":
        return torch_dtypes()[0]
    if name == "DTYPE_NAMES":
        return torch_dtypes()[1]
    raise AttributeError(name)


def _code(dtype: Any) -> str:
    return dtype if isinstance(dtype, str) else torch_dtypes()[1][dtype]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in file
    nbytes: int


@dataclass(frozen=True)
class RawInfo:
    """A header entry with its safetensors dtype code (no torch needed)."""

    name: str
    file: Path
    code: str
    shape: tuple[int, ...]
    start: int
    nbytes: int


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and validate one safetensors file's header (no tensor data is read)."""
    dt = torch_dtypes()[0]
    return {k: TensorInfo(r.name, r.file, dt[r.code], r.shape, r.start, r.nbytes) for k, r in read_header_raw(path).items()}


def read_header_raw(path: Path) -> dict[str, RawInfo]:
    """:func:`read_header` with dtype codes: the same checks, no torch."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UserError(f"{path}: truncated safetensors file (no header length)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise UserError(f"{path}: corrupted or truncated safetensors header (header length {n}, file size {size})")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("not an object")
    except (UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: corrupted safetensors header ({e})") from None
    data_start, data_len = 8 + n, size - 8 - n
    out: dict[str, RawInfo] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            code = meta["dtype"]
            size_of = SIZES[code]
            shape = tuple(int(s) for s in meta["shape"])
            b, e = (int(x) for x in meta["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path}: corrupted safetensors header entry for {name!r}") from None
        numel = 1
        for s in shape:
            numel *= s
        if not (0 <= b <= e <= data_len) or e - b != numel * size_of:
            raise UserError(f"{path}: tensor {name!r} lies outside the file or has the wrong size (truncated file?)")
        out[name] = RawInfo(name, path, code, shape, data_start + b, e - b)
    return out


class ModelWeights:
    """Lazy, thread-safe view of one model folder's weights (tensor name -> bytes on disk)."""

    def __init__(self, folder: str | os.PathLike, *, allow_pickle: bool = False):
        self.folder = Path(folder)
        self.infos: dict[str, TensorInfo] = {}
        self._pickled: dict[str, torch.Tensor] | None = None
        files = sorted(self.folder.glob("*.safetensors"))
        if files:
            for f in files:
                for name, info in read_header(f).items():
                    if name in self.infos:
                        raise UserError(f"{self.folder}: tensor {name!r} appears in two shards")
                    self.infos[name] = info
            return
        pickled = sorted(p for p in self.folder.glob("*.bin") if "training_args" not in p.name)
        if not pickled:
            raise UserError(f"{self.folder}: no *.safetensors weights found")
        if not allow_pickle:
            raise UserError(f"{self.folder}: only pickle weights ({pickled[0].name}); pickle can run code on load — pass --allow-pickle if you trust it")
        import torch

        self._pickled = {}
        for p in pickled:
            try:
                sd = torch.load(p, map_location="cpu", mmap=True, weights_only=True)
            except Exception as e:  # noqa: BLE001 - any unreadable pickle is bad input
                raise UserError(f"{p}: cannot read pickle checkpoint ({type(e).__name__})") from None
            for k, v in sd.items():
                self._pickled[k] = v
                self.infos[k] = TensorInfo(k, p, v.dtype, tuple(v.shape), 0, v.numel() * v.element_size())

    @property
    def files(self) -> list[Path]:
        return sorted({i.file for i in self.infos.values()})

    def __contains__(self, name: str) -> bool:
        return name in self.infos

    @property
    def pickled(self) -> bool:
        return self._pickled is not None

    def read(self, name: str, hasher: "FileHasher | None" = None, ticket: int | None = None) -> torch.Tensor:
        """Read one tensor into a new, writable CPU tensor (its bytes fed to ``hasher`` on ``ticket``)."""
        import torch

        info = self.infos[name]
        if self._pickled is not None:
            return self._pickled[name].clone()
        buf = self._read_bytes(info, 0, info.nbytes, name)
        if hasher is not None and ticket is not None:
            hasher.feed(info.file, ticket, info.start, memoryview(buf.numpy()))
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        return buf.view(info.dtype).reshape(info.shape)

    def read_range(self, name: str, start: int, count: int) -> torch.Tensor:
        """Elements ``[start, start + count)`` of one tensor, flattened, as a new writable tensor."""
        info = self.infos[name]
        es = info.dtype.itemsize
        return self._read_bytes(info, start * es, count * es, name).view(info.dtype)

    @staticmethod
    def _read_bytes(info: TensorInfo, offset: int, nbytes: int, name: str) -> "torch.Tensor":
        import torch

        buf = torch.empty(nbytes, dtype=torch.uint8)
        with open(info.file, "rb", buffering=0) as f:
            f.seek(info.start + offset)
            view, got = memoryview(buf.numpy()), 0
            while got < nbytes:
                n = f.readinto(view[got:])
                if not n:
                    raise UserError(f"{info.file}: truncated while reading tensor {name!r}")
                got += n
        return buf


class FileHasher:
    """sha256 of safetensors files computed from the tensor reads themselves (one pass over the bytes).

    Reads are ticketed per file in the order they are scheduled; each ``feed`` waits for its turn, so
    the hash sees the file front to back: a gap before a read (header, a tensor read elsewhere or not
    at all) is read from the file and hashed first, a range already hashed is skipped. Reads in file
    order (the engine's default order) make the gaps tiny; any order stays correct. ``finish`` hashes
    the tail and returns ``{file: hexdigest}``. ``skip`` gives up a ticket (a failed read).
    """

    def __init__(self, files: list[Path]):
        self._h = {f: hashlib.sha256() for f in files}
        self._done = {f: 0 for f in files}
        self._next = {f: 0 for f in files}
        self._turn = {f: 0 for f in files}
        self._cv = threading.Condition()
        self._aborted = False

    def abort(self) -> None:
        """Wake every waiting reader (they raise): the merge failed and pending reads were cancelled."""
        with self._cv:
            self._aborted = True
            self._cv.notify_all()

    def _wait(self, file: Path, ticket: int) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self._turn[file] == ticket or self._aborted)
            if self._aborted:
                raise RuntimeError("merge aborted")

    def schedule(self, file: Path) -> int | None:
        if file not in self._h:
            return None
        self._next[file] += 1
        return self._next[file] - 1

    def _catch_up(self, file: Path, upto: int) -> None:
        with open(file, "rb", buffering=0) as f:
            f.seek(self._done[file])
            while self._done[file] < upto:
                block = f.read(min(1 << 24, upto - self._done[file]))
                if not block:
                    raise UserError(f"{file}: changed while being read")
                self._h[file].update(block)
                self._done[file] += len(block)

    def feed(self, file: Path, ticket: int, start: int, data: memoryview) -> None:
        self._wait(file, ticket)
        try:
            if start > self._done[file]:
                self._catch_up(file, start)
            end = start + len(data)
            if end > self._done[file]:
                self._h[file].update(data[self._done[file] - start:])
                self._done[file] = end
        finally:
            self.skip(file, ticket)

    def skip(self, file: Path, ticket: int) -> None:
        """Give up ``ticket`` (no-op when it was already used)."""
        with self._cv:
            self._cv.wait_for(lambda: self._turn[file] >= ticket or self._aborted)
            if self._turn[file] == ticket:
                self._turn[file] += 1
                self._cv.notify_all()

    def finish(self) -> dict[Path, str]:
        for f in self._h:
            self._catch_up(f, f.stat().st_size)
        return {f: h.hexdigest() for f, h in self._h.items()}


def _shard_names(n: int) -> list[str]:
    if n == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


class ShardedWriter:
    """Write known tensors into size-bounded safetensors shards, in any order, thread-safely.

    ``fail_after_bytes`` (test hook) raises ``OSError`` once that many tensor bytes were written,
    simulating a disk that fills up midway. ``writeback``: after every that many bytes a background
    thread ``fdatasync``s the shards, so the disk writes while the merge goes on and ``finish``'s
    ``fsync`` waits only for the tail (the output is the same).
    """

    def __init__(self, out_dir: Path, specs: list[tuple[str, Any, tuple[int, ...]]], shard_size: int,
                 fail_after_bytes: int | None = None, writeback: int | None = None):
        """``specs``: (name, dtype, shape) with a torch dtype or a safetensors code (``"BF16"``)."""
        self.out_dir = out_dir
        shards: list[list[tuple[str, str, tuple[int, ...], int]]] = [[]]
        used = 0
        for name, dtype, shape in specs:
            dtype = _code(dtype)
            nbytes = SIZES[dtype]
            for s in shape:
                nbytes *= s
            if shards[-1] and used + nbytes > shard_size:
                shards.append([])
                used = 0
            shards[-1].append((name, dtype, shape, nbytes))
            used += nbytes
        self.names = _shard_names(len(shards))
        self.where: dict[str, tuple[int, int, int]] = {}  # name -> (shard, abs offset, nbytes)
        self._fds: list[int] = []
        self.total = 0
        for si, (fname, entries) in enumerate(zip(self.names, shards)):
            header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
            off = 0
            for name, dtype, shape, nbytes in entries:
                header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + nbytes]}
                off += nbytes
            hb = json.dumps(header, separators=(",", ":")).encode()
            hb += b" " * (-len(hb) % 8)
            fd = os.open(out_dir / fname, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            self._fds.append(fd)
            os.pwrite(fd, struct.pack("<Q", len(hb)) + hb, 0)
            os.ftruncate(fd, 8 + len(hb) + off)
            base = 8 + len(hb)
            for name, _, _, nbytes in entries:
                self.where[name] = (si, base + int(header[name]["data_offsets"][0]), nbytes)
            self.total += off
        self._lock = threading.Lock()
        self._written = 0
        self._fail_after = fail_after_bytes
        self._wb_every, self._wb_mark = writeback, 0
        self._wb_wake, self._wb_stop = threading.Event(), False
        self._wb_thread: threading.Thread | None = None
        if writeback:
            self._wb_thread = threading.Thread(target=self._flusher, name="writeback", daemon=True)
            self._wb_thread.start()

    def _flusher(self) -> None:
        sync = getattr(os, "fdatasync", os.fsync)
        while True:
            self._wb_wake.wait()
            self._wb_wake.clear()
            if self._wb_stop:
                return
            for fd in list(self._fds):
                try:
                    sync(fd)
                except OSError:  # finish()'s fsync reports a real failure
                    pass

    def _stop_flusher(self) -> None:
        if self._wb_thread is not None:
            self._wb_stop = True
            self._wb_wake.set()
            self._wb_thread.join()
            self._wb_thread = None

    def write(self, name: str, tensor: Any, byte_offset: int | None = None) -> None:
        """Write a tensor's bytes (or, with ``byte_offset``, one block of them starting there): a torch
        tensor, or a C-contiguous numpy array already in the output dtype's bit layout."""
        si, off, nbytes = self.where[name]
        if hasattr(tensor, "numpy"):  # torch
            import torch

            data = tensor.contiguous().view(-1).view(torch.uint8).numpy() if tensor.numel() else b""
        else:
            data = tensor.reshape(-1).view("u1") if tensor.size else b""
        if (len(data) != nbytes) if byte_offset is None else (byte_offset + len(data) > nbytes):
            raise RuntimeError(f"{name}: writer expected {nbytes} bytes, got {len(data)} at {byte_offset}")
        off += byte_offset or 0
        nbytes = len(data)
        with self._lock:
            self._written += nbytes
            if self._fail_after is not None and self._written > self._fail_after:
                raise OSError(28, "No space left on device (simulated)")
        mv, done = memoryview(data), 0
        while done < nbytes:
            done += os.pwrite(self._fds[si], mv[done:], off + done)
        if self._wb_every and self._written - self._wb_mark >= self._wb_every:
            self._wb_mark = self._written
            self._wb_wake.set()

    def finish(self) -> list[str]:
        """fsync and close every shard; write the index when sharded. Returns the shard file names."""
        self._stop_flusher()
        for fd in self._fds:
            os.fsync(fd)
            os.close(fd)
        self._fds = []
        if len(self.names) > 1:
            weight_map = {name: self.names[si] for name, (si, _, _) in sorted(self.where.items())}
            atomic_write_json(self.out_dir / "model.safetensors.index.json",
                              {"metadata": {"total_size": self.total}, "weight_map": weight_map})
        return self.names

    def close(self) -> None:
        self._stop_flusher()
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
