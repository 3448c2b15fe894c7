"""micota.io's digest cache: a large file's sha256 is computed once and reused until the file changes.

Digests are checked against hashlib on the bytes; a planted (wrong) entry shows when the cache answered
instead of the file, so each test can tell a hit from a rehash. Files are made old enough (RACY_NS) by
waiting once, not by lowering the threshold.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np
import pytest

from micota import io
from micota.io import DIGEST_MIN, RACY_NS, cached_sha256, sha256_file

FAKE = "f" * 64


def _entry(path):
    return io._digest_entry(os.stat(path))


@pytest.fixture(scope="module")
def old_files(tmp_path_factory):
    """Three DIGEST_MIN-byte files last changed more than RACY_NS ago, with their digests (w1, w2 stay
    unchanged; the first test changes w0)."""
    d = tmp_path_factory.mktemp("big")
    out = {}
    for i in range(3):
        data = np.random.default_rng(i).integers(0, 256, DIGEST_MIN, dtype=np.uint8).tobytes()
        (d / f"w{i}.bin").write_bytes(data)
        out[d / f"w{i}.bin"] = hashlib.sha256(data).hexdigest()
    time.sleep(RACY_NS / 1e9 + 0.2)
    return out


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MICOTA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MICOTA_HASH_CACHE", raising=False)
    return tmp_path / "cache" / "sha256"


def test_a_large_file_is_hashed_once_and_rehashed_when_it_changes(old_files, cache):
    path, true = next(iter(old_files.items()))
    assert sha256_file(path) == true and cached_sha256(path) == true
    entry = _entry(path)
    assert entry.is_file() and entry.is_relative_to(cache) and entry.read_text().split() == [true, str(path.resolve())]
    entry.write_text(FAKE + " planted\n")  # now a hit is visible
    assert sha256_file(path) == FAKE
    # change one byte in place and put mtime back: size and mtime match, ctime does not (cannot be set)
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(12345)
        byte = f.read(1)
        f.seek(12345)
        f.write(bytes([byte[0] ^ 1]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns and os.stat(path).st_size == st.st_size
    data = path.read_bytes()
    assert sha256_file(path) == hashlib.sha256(data).hexdigest() != true
    assert cached_sha256(path) is None  # just changed: not cached (racy), so the next call rehashes too


def test_a_file_written_just_now_is_not_cached(tmp_path, cache):
    p = tmp_path / "fresh.bin"
    data = os.urandom(DIGEST_MIN)
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()
    assert not _entry(p).exists() and cached_sha256(p) is None


def test_small_files_and_the_switch_bypass_the_cache(tmp_path, old_files, cache, monkeypatch):
    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * (DIGEST_MIN - 1))
    assert io._digest_entry(os.stat(small)) is None
    assert sha256_file(small) == hashlib.sha256(small.read_bytes()).hexdigest()
    assert not cache.exists()
    path, true = list(old_files.items())[1]
    sha256_file(path)
    _entry(path).write_text(FAKE + "\n")
    monkeypatch.setenv("MICOTA_HASH_CACHE", "off")
    assert sha256_file(path) == true and cached_sha256(path) is None


def test_a_broken_entry_or_an_unwritable_cache_costs_only_a_rehash(tmp_path, old_files, cache, monkeypatch):
    path, true = list(old_files.items())[2]
    sha256_file(path)
    for junk in ("", "not a digest\n", "F" * 64 + "\n", "\xff"):
        _entry(path).write_text(junk, errors="surrogateescape") if junk != "\xff" else _entry(path).write_bytes(b"\xff\xfe")
        assert sha256_file(path) == true, repr(junk)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory would go")
    monkeypatch.setenv("MICOTA_CACHE", str(blocker / "cache"))
    assert sha256_file(path) == true and cached_sha256(path) is None


@pytest.mark.parametrize("compatible", [False, True], ids=["fast-path", "torch-engine"])
def test_a_merge_records_cached_digests_and_caches_the_ones_it_computes(tmp_path, cache, monkeypatch, compatible):
    """Both engines: a cold merge records hashlib's digests of the weight files and caches them; a later
    merge of the same unchanged files takes them from the cache (a planted entry shows through)."""
    from micota.merging import MergeConfig, merge
    from micota.merging.synth import make_pair

    monkeypatch.setattr(io, "DIGEST_MIN", 1)  # the tiny pair's files are far below 32 MiB
    base, (ft,) = make_pair(tmp_path / "m", dtype="bfloat16", tie=False, hidden=64, intermediate=128, vocab=128)
    time.sleep(RACY_NS / 1e9 + 0.2)
    cfg = dict(method="ties", weight=0.7, density=0.5, seed=3, mergekit_compatible=compatible)
    first = merge(MergeConfig.two_model(base, ft, out=tmp_path / "a", **cfg))
    report = json.loads((first / "merge_report.json").read_text())
    assert report["engine"] == ("torch" if compatible else "fast")
    weights = {"base": base / "model.safetensors", "model_0": ft / "model.safetensors"}
    for key, f in weights.items():
        true = hashlib.sha256(f.read_bytes()).hexdigest()
        assert report["inputs"][key]["files"]["model.safetensors"] == true
        assert cached_sha256(f) == true
    _entry(weights["model_0"]).write_text(FAKE + "\n")
    second = merge(MergeConfig.two_model(base, ft, out=tmp_path / "b", **cfg))
    files = json.loads((second / "merge_report.json").read_text())["inputs"]["model_0"]["files"]
    assert files["model.safetensors"] == FAKE
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()


def test_the_pipeline_fingerprint_of_a_large_file_follows_its_content(tmp_path, cache):
    """Above 64 MiB the planner used size + mtime (until 2026-11-27): a same-size copy with the old mtime
    (``cp -p``) kept stale stage outputs. Now the content decides, read once and then from the cache."""
    from micota.pipeline.planner import fingerprint

    f = tmp_path / "big" / "model.safetensors"
    f.parent.mkdir()
    f.write_bytes(np.random.default_rng(0).integers(0, 256, (64 << 20) + 1, dtype=np.uint8).tobytes())
    time.sleep(RACY_NS / 1e9 + 0.2)
    before = fingerprint(f.parent, {})
    assert fingerprint(f.parent, {}) == before and cached_sha256(f) is not None
    st = os.stat(f)
    f.write_bytes(np.random.default_rng(1).integers(0, 256, (64 << 20) + 1, dtype=np.uint8).tobytes())
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (os.stat(f).st_size, os.stat(f).st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert fingerprint(f.parent, {}) != before


def test_hashing_inputs_shows_a_bar_only_for_what_is_not_cached(old_files, cache, monkeypatch, capsys):
    from micota import progress

    monkeypatch.setattr(progress, "HASH_BAR_MIN", DIGEST_MIN)  # one 32 MiB file stands for a large model
    files = sorted(old_files)[1:]  # the first test changes w0 in place
    assert progress.sha256_files(files) == {f: old_files[f] for f in files}
    err = capsys.readouterr().err
    assert "hashing inputs" in err and "MiB" in err
    assert progress.sha256_files(files) == {f: old_files[f] for f in files}  # all cached now: no bar
    assert "hashing inputs" not in capsys.readouterr().err
