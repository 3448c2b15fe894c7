"""Recipes that cannot run code or write outside ``out:``, and runs that cannot trample each other.

Every probe runs ``python -m micota`` as a real subprocess from a scratch directory and asserts: exit
code 2, exactly one ``error:`` line, nothing written outside the output, no marker file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from micota.records import Problem, Sample, SftExample, write_jsonl_atomic

REPO = Path(__file__).resolve().parents[1]


def micota(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "micota", *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=timeout)


# One interpreter for several invocations: ``micota.cli.main`` per argv, each with its own stdout/stderr
# (file descriptors 1 and 2, so C-level writes are caught too) and exit code. ``-P``: like ``python -m
# micota``, nothing is imported from the current directory.
_MANY = """
import json, os, sys, tempfile, traceback
calls, result = json.loads(sys.argv[1]), sys.argv[2]
from micota.cli import main
saved, out = (os.dup(1), os.dup(2)), []
for argv in calls:
    sys.argv = ["micota", *argv]
    with tempfile.TemporaryFile() as o, tempfile.TemporaryFile() as e:
        os.dup2(o.fileno(), 1)
        os.dup2(e.fileno(), 2)
        try:
            main(argv)
            rc = 0
        except SystemExit as x:
            rc = x.code if isinstance(x.code, int) else int(x.code is not None)
        except BaseException:
            traceback.print_exc()
            rc = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        o.seek(0)
        e.seek(0)
        out.append([rc, o.read().decode(errors="replace"), e.read().decode(errors="replace")])
with open(result, "w") as f:
    json.dump(out, f)
"""


def micota_many(calls: list[list[str]], *, cwd: Path, env: dict | None = None, timeout: float = 600) -> list[subprocess.CompletedProcess]:
    """``micota(*argv)`` for each argv, run one after another in a single subprocess (one start-up)."""
    full = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    with tempfile.TemporaryDirectory() as d:
        res = Path(d) / "results.json"
        r = subprocess.run([sys.executable, "-P", "-c", _MANY, json.dumps(calls), str(res)], cwd=cwd, env=full,
                           capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0 and res.exists(), r.stderr[-3000:]
        return [subprocess.CompletedProcess(["micota", *argv], rc, o, e) for argv, (rc, o, e) in zip(calls, json.loads(res.read_text()))]


def popen(*args: str, cwd: Path) -> subprocess.Popen:
    log = open(cwd / "first.log", "w")  # a file, not a pipe: progress bars must never block the writer
    return subprocess.Popen([sys.executable, "-m", "micota", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=log, env={**os.environ, "PYTHONPATH": str(REPO / "src")})


def one_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, no traceback, exactly one ``error:`` line and it is the last (progress bars may precede it)."""
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = r.stderr.strip().splitlines()
    errors = [x for x in lines if x.startswith("error:")]
    assert "Traceback" not in r.stderr and len(errors) == 1 and lines[-1] == errors[0], r.stderr[-3000:]
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def box(tmp_path):
    """A scratch world: ``box/work`` is the user's directory (cwd), a marker path, and a snapshot."""
    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "MARKER"
    # an importable module beside the recipe that leaves a marker when imported
    (work / "evil.py").write_text(textwrap.dedent(f"""
        open({str(marker)!r}, "w").write("imported")
        from micota.pipeline.mix import MixConfig
        def run(cfg: MixConfig):
            return None
    """))
    sft = work / "sft.jsonl"
    write_jsonl_atomic(sft, [SftExample(id=f"e{i}", problem_id=f"p{i}", prompt=[{"role": "user", "content": "q"}],
                                        completion=[{"role": "assistant", "content": "a"}]) for i in range(4)])
    return tmp_path, work, marker


def write_recipe(work: Path, name: str, spec: dict) -> Path:
    p = work / f"{name}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


# ----------------------------------------------------------------------------- names, launchers, kinds
def test_traversal_variant_name_is_refused_and_writes_nothing(box):
    tmp, work, marker = box
    before = tree(tmp)
    spec = {"name": "esc", "out": "run", "variants": {"x/../../../ESCAPED": str(work / "sft.jsonl")},
            "stages": {"m": {"kind": "mix", "foreach": "variants", "inputs": {"datasets": {"a": "${variant}"}}}}}
    calls = [["run", str(write_recipe(work, "esc", spec)), *extra] for extra in ([], ["--dry-run"])]
    for k, bad in enumerate(("../up", ".hidden", "a/b", "a..b")):
        spec2 = {**spec, "variants": {"ok": str(work / "sft.jsonl")}, "stages": {bad: {"kind": "mix", "inputs": {"datasets": {"a": "x"}}}}}
        calls.append(["run", str(write_recipe(work, f"esc{k}", spec2)), "--dry-run"])
    results = micota_many(calls, cwd=work)
    for r in results[:2]:
        one_error(r, "variant name", "x/../../../ESCAPED")
    for r in results[2:]:
        one_error(r, "stage name")
    assert tree(tmp) - before == {f"work/{p.name}" for p in work.glob("esc*.yaml")}
    assert not list(tmp.parent.rglob("ESCAPED*"))
    # a valid recipe with dotted variant names still runs and stays inside out:
    spec["variants"] = {"v1.long": str(work / "sft.jsonl")}
    r = micota("run", str(write_recipe(work, "ok", spec)), cwd=work)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {p.name for p in (work / "run").iterdir() if p.name.startswith("m.v1.long-")}


def test_launcher_args_cannot_run_commands(box):
    tmp, work, marker = box
    inject = ["--no-python", "sh", "-c", f"touch {marker}"]
    cases = (({"type": "torchrun", "args": inject}, "'--no-python'"),
             ({"type": "accelerate", "args": ["--no_python", "sh", "-c", f"touch {marker}"]}, "'--no_python'"),
             ({"type": "torchrun", "args": ["--standalone", "evil.py"]}, "'evil.py'"),
             ({"type": "torchrun", "args": ["--nnodes=1", "-m", "evil"]}, "'-m'"),
             # the launcher's own options pass the check (the plan is printed)
             ({"type": "torchrun", "args": ["--rdzv-backend", "c10d", "--rdzv-endpoint=host:29500", "--max_restarts", "2"]}, None))
    calls = []
    for k, (launcher, needle) in enumerate(cases):
        spec = {"name": "inj", "out": "run", "stages": {"t": {"kind": "train", "base": str(work), "data": str(work / "sft.jsonl"),
                                                               "launcher": launcher}}}
        recipe = str(write_recipe(work, f"inj{k}", spec))
        calls += [["run", recipe], ["run", recipe, "--dry-run"]] if needle else [["run", recipe, "--dry-run"]]
    results = micota_many(calls, cwd=work)
    for (_, needle), r in zip([c for c in cases[:-1] for _ in (0, 1)], results[:-1]):
        one_error(r, needle, "--allow-launcher-args")
    assert results[-1].returncode == 0, results[-1].stderr[-2000:]
    assert not marker.exists()
    assert not (work / "run").exists()


def test_import_path_kind_needs_allow_plugins_and_dry_run_imports_nothing(box):
    tmp, work, marker = box
    spec = {"name": "imp", "out": "run", "stages": {"s": {"kind": "evil:run", "inputs": {"datasets": {"a": "x"}}}}}
    recipe = write_recipe(work, "imp", spec)
    for r in micota_many([["run", str(recipe), *extra] for extra in (["--dry-run"], [])], cwd=work):
        one_error(r, "evil:run", "--allow-plugins")
    # a module that shadows a library micota imports is not picked up from the user's directory either
    (work / "typer.py").write_text(f"open({str(marker)!r}, 'w').write('shadowed')\n")
    spec_ok = {"name": "fine", "out": "run", "stages": {"m": {"kind": "mix", "inputs": {"datasets": {"a": str(work / "sft.jsonl")}}}}}
    r = micota("run", str(write_recipe(work, "fine", spec_ok)), "--dry-run", cwd=work)
    assert r.returncode == 0, r.stderr[-2000:]
    (work / "typer.py").unlink()
    assert not marker.exists()
    assert not (work / "run").exists()
    r = micota("run", str(recipe), "--dry-run", "--allow-plugins", cwd=work)  # the explicit opt-in works
    assert r.returncode == 0, r.stderr[-2000:]
    assert marker.read_text() == "imported"


def test_installed_entry_point_kind_is_allowed(box, tmp_path):
    tmp, work, marker = box
    site = tmp_path / "site"
    (site / "plugdemo").mkdir(parents=True)
    (site / "plugdemo" / "__init__.py").write_text(
        "from micota.pipeline.mix import MixConfig, mix_datasets\n\ndef run(cfg: MixConfig):\n    return mix_datasets(cfg)\n")
    dist = site / "plugdemo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugdemo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[micota.stage_kinds]\nplugmix = plugdemo:run\n")
    spec = {"name": "ep", "out": "run", "stages": {"m": {"kind": "plugmix", "inputs": {"datasets": {"a": str(work / "sft.jsonl")}}}}}
    r = micota("run", str(write_recipe(work, "ep", spec)), cwd=work,
               env={"PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(site)])})
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((work / "run").glob("m-*/data.jsonl"))) == 1


def test_yaml_alias_bomb_is_refused_quickly(box):
    tmp, work, marker = box
    lines = ["name: bomb", "out: run", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8)]  # 10^8 leaves
    (work / "bomb.yaml").write_text("\n".join(lines + ["stages: {}"]) + "\n")
    t0 = time.monotonic()
    one_error(micota("run", "bomb.yaml", "--dry-run", cwd=work), "more than 1,000,000 values")
    assert time.monotonic() - t0 < 30


# ----------------------------------------------------------------------------- one writer per output
def _hold_when_locked(lock: Path, proc: subprocess.Popen, seconds: float = 600) -> None:
    """Wait until ``proc`` holds ``lock``, then freeze it (SIGSTOP): a deterministic race."""
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None and not lock.exists():
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGSTOP)
    assert proc.poll() is None, "the first writer exited before taking its lock"
    assert lock.exists()


def _problems(path: Path, k: int) -> Path:
    write_jsonl_atomic(path, [Problem(id=f"q{i}", problem=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(k)])
    return path


def test_two_generates_on_one_out_second_fails_naming_the_first(tmp_path, tiny_model_dir):
    probs = _problems(tmp_path / "p.jsonl", 8)
    out = tmp_path / "gen"
    args = ["generate", str(tiny_model_dir), "--problems", str(probs), "--out", str(out), "--max-new-tokens", "16"]
    first = popen(*args, cwd=tmp_path)
    try:
        _hold_when_locked(tmp_path / ".gen.lock", first)
        second = micota(*args, cwd=tmp_path)
        line = one_error(second, "another micota process is writing", f"pid {first.pid}", "generate")
        assert str(out) in line
    finally:
        os.kill(first.pid, signal.SIGCONT)
        rc = first.wait(600)
    assert rc == 0, (tmp_path / "first.log").read_text()[-2000:]
    rows = [json.loads(x) for f in sorted(out.glob("samples-*.jsonl")) for x in f.read_text().splitlines()]
    assert len(rows) == 8 and len({(r["problem_id"], r["sample_idx"]) for r in rows}) == 8
    assert not (tmp_path / ".gen.lock").exists()  # released and removed


def test_stale_lock_from_a_killed_writer_never_blocks(tmp_path, tiny_model_dir):
    probs = _problems(tmp_path / "p.jsonl", 8)
    out = tmp_path / "gen"
    args = ["generate", str(tiny_model_dir), "--problems", str(probs), "--out", str(out), "--max-new-tokens", "16"]
    first = popen(*args, cwd=tmp_path)
    _hold_when_locked(tmp_path / ".gen.lock", first)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert (tmp_path / ".gen.lock").exists()  # left behind, but no longer locked
    r = micota(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]


def test_two_pipeline_runs_on_one_out(box):
    tmp, work, marker = box
    spec = {"name": "race", "out": "run", "stages": {"m": {"kind": "mix", "inputs": {"datasets": {"a": str(work / "sft.jsonl")}}}}}
    recipe = write_recipe(work, "race", spec)
    # the first run holds the lock: a process that takes it the way micota run does, then waits
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from micota.io import output_lock
        with output_lock({str(work / 'run')!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)], cwd=work, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    try:
        assert holder.stdout.readline().strip() == "locked"
        one_error(micota("run", str(recipe), cwd=work), "another micota process", f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    r = micota("run", str(recipe), cwd=work)  # the holder died: its lock does not block
    assert r.returncode == 0, r.stderr[-2000:]


def test_merge_refuses_to_replace_and_sweeps_stale_partials(tmp_path):
    from micota.io import atomic_dir

    out = tmp_path / "out"
    stale = tmp_path / ".out.abc123.partial"  # what a killed merge leaves
    stale.mkdir()
    (stale / "model-00001.safetensors").write_bytes(b"x" * 1000)
    with pytest.raises(Exception, match="appeared while"):
        with atomic_dir(out) as d:
            (d / "a").write_text("mine")
            out.mkdir()  # another writer (without the lock) finished first
            (out / "theirs").write_text("kept")
    assert (out / "theirs").read_text() == "kept" and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_readers_deduplicate_samples_and_say_so(tmp_path):
    d = tmp_path / "samples"
    d.mkdir()
    rows = [Sample(problem_id=f"q{i}", sample_idx=0, model="m", prompt="p", completion=f"\\boxed{{{i}}}", finish_reason="stop",
                   prompt_tokens=1, completion_tokens=1, template_hash="t", config_hash="c", seed=0, source="s",
                   reference=str(i)) for i in range(5)]
    write_jsonl_atomic(d / "samples-00000.jsonl", rows)
    write_jsonl_atomic(d / "samples-00001.jsonl", rows[:3])  # a second writer's copy
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(b"".join(r.model_dump_json().encode() + b"\n" for r in rows) + b'{"problem_id": "q9", "sam')
    r, torn_r = micota_many([["filter", str(d), "--out", str(tmp_path / "f"), "--max-tokens", "100"],
                             ["filter", str(torn), "--out", str(tmp_path / "g")]], cwd=tmp_path)
    assert "3 duplicate rows" in r.stderr
    one_error(torn_r, "torn.jsonl:6")
    assert not (tmp_path / "g").exists()


# ----------------------------------------------------------------------------- one error line
def test_output_path_that_is_a_file(tmp_path, tiny_model_dir):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    probs = _problems(tmp_path / "p.jsonl", 2)
    spec = {"name": "f", "out": str(blocker), "stages": {"m": {"kind": "mix", "inputs": {"datasets": {"a": str(probs)}}}}}
    world, gen, run = micota_many([["world", "build", "--out", str(blocker)],
                                   ["generate", str(tiny_model_dir), "--problems", str(probs), "--out", str(blocker)],
                                   ["run", str(write_recipe(tmp_path, "f", spec))]], cwd=tmp_path)
    one_error(world, "blocker")
    one_error(gen, "not a directory")
    one_error(run, "not a directory")
    assert blocker.read_text() == "a file"


def test_read_only_and_full_disk(tmp_path, tiny_model_dir, small_disk, data_dir):
    """Every stage given an output on a read-only disk, and generate on a full one: one line each."""
    probs = _problems(tmp_path / "p.jsonl", 24)
    sft = tmp_path / "sft.jsonl"
    write_jsonl_atomic(sft, [SftExample(id="e0", problem_id="p0", prompt=[{"role": "user", "content": "What is 1+1?"}],
                                        completion=[{"role": "assistant", "content": "\\boxed{2}"}])])
    samples = tmp_path / "samples.jsonl"
    write_jsonl_atomic(samples, [Sample(problem_id="q0", model="m", problem="What is 1+1?", prompt="p", completion="\\boxed{2}",
                                        finish_reason="stop", prompt_tokens=1, completion_tokens=3, template_hash="t",
                                        config_hash="c", seed=0, reference="2", correct=True)])
    recipe = write_recipe(tmp_path, "ro", {"name": "ro", "out": "RO/run",
                                           "stages": {"m": {"kind": "mix", "inputs": {"datasets": {"a": str(sft)}}}}})
    ro = small_disk(64)
    subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
    recipe.write_text(recipe.read_text().replace("RO", str(ro)))
    full = small_disk(12)
    model, bench = str(tiny_model_dir), ["--benchmarks", "gsm8k", "--limit", "1", "--data-dir", str(data_dir)]
    read_only = [["generate", model, "--problems", str(probs), "--out", str(ro / "g")],
                 ["world", "build", "--out", str(ro / "w")],
                 ["eval", model, *bench, "--out", str(ro / "e")],
                 ["filter", str(samples), "--out", str(ro / "f")],
                 ["bpc", model, "--data", str(sft), "--out", str(ro / "b")],
                 ["train", model, "--data", str(sft), "--out", str(ro / "t")],
                 ["merge", "--base", model, "--finetuned", model, "--out", str(ro / "m")],
                 ["run", str(recipe)]]
    *ro_results, gen_full = micota_many(
        [*read_only, ["generate", model, "--problems", str(probs), "--out", str(full / "g"), "--max-new-tokens", "32",
                      "--batch-size", "4"]], cwd=tmp_path)
    for argv, r in zip(read_only, ro_results):
        assert "Read-only file system" in one_error(r), argv[0]
    assert not list(ro.iterdir())
    one_error(gen_full, "No space left on device")
    assert not (full / "g" / "manifest.json").exists()


def test_filter_and_train_on_a_full_disk(tmp_path, tiny_model_dir, small_disk):
    """filter (a 40 kB dataset onto 16 kB) and train (a checkpoint, then the final model, onto a disk
    too small for it): one line, exit 2, no manifest.json, no half-written model left behind."""
    samples = tmp_path / "samples.jsonl"
    write_jsonl_atomic(samples, [Sample(problem_id=f"q{i}", sample_idx=0, model="m", problem=f"What is {i} + {i}?",
                                        prompt="p", completion="Adding. " * 100 + f"\\boxed{{{2 * i}}}", finish_reason="stop",
                                        prompt_tokens=1, completion_tokens=20, template_hash="t", config_hash="c", seed=0,
                                        source="s", reference=str(2 * i), correct=True, grade_mode="default")
                                 for i in range(40)])
    disk = small_disk(16)

    sft = tmp_path / "sft.jsonl"
    write_jsonl_atomic(sft, [SftExample(id=f"e{i}", problem_id=f"p{i}", prompt=[{"role": "user", "content": "What is 1+1?"}],
                                        completion=[{"role": "assistant", "content": "\\boxed{2}"}]) for i in range(4)])
    weights = (tiny_model_dir / "model.safetensors").stat().st_size
    train = ["train", str(tiny_model_dir), "--data", str(sft), "--max-steps", "2", "--batch-size", "2"]
    # the checkpoint at step 1 (weights, then the 2x larger AdamW state) fills a disk 1.5x the weights
    ck_disk = small_disk(weights * 3 // 2 // 1024)
    # without checkpoints the final model fills a disk 3/4 of its weights
    final_disk = small_disk(weights * 3 // 4 // 1024)
    results = micota_many([["filter", str(samples), "--out", str(disk / "f")],
                           [*train, "--save-steps", "1", "--out", str(ck_disk / "t")],
                           [*train, "--no-save-checkpoints", "--out", str(final_disk / "t")]], cwd=tmp_path)
    for r, d in zip(results, (disk / "f", ck_disk / "t", final_disk / "t")):
        one_error(r, str(d), "No space left on device")
    assert sorted(p.name for p in disk.iterdir()) == []  # no output, no partial, no lock file
    from micota.training.sft import _last_checkpoint

    for d in (ck_disk, final_disk):
        assert not (d / "t").exists() and not (d / ".t.partial").exists(), sorted(tree(d))
        assert not list(d.rglob("manifest.json")) and not list(d.rglob("*.lock"))
        assert _last_checkpoint(d / ".t.checkpoints") is None  # a torn checkpoint is never resumed from


def test_corrupt_weights_pickle_and_nan_are_one_line(tmp_path, tiny_model_dir):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    probs = _problems(tmp_path / "p.jsonl", 2)
    data = tmp_path / "sft.jsonl"
    write_jsonl_atomic(data, [SftExample(id=f"e{i}", problem_id=f"p{i}", prompt=[{"role": "user", "content": "What is 1+1?"}],
                                         completion=[{"role": "assistant", "content": "\\boxed{2}"}]) for i in range(4)])
    torn = tmp_path / "torn"
    shutil.copytree(tiny_model_dir, torn)
    w = torn / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    nan = tmp_path / "nan"
    shutil.copytree(tiny_model_dir, nan)
    sd = load_file(nan / "model.safetensors")
    for v in sd.values():
        if v.is_floating_point():
            v.fill_(float("nan"))
    save_file(sd, nan / "model.safetensors", metadata={"format": "pt"})
    results = micota_many([["generate", str(torn), "--problems", str(probs), "--out", str(tmp_path / "g")],
                           ["bpc", str(torn), "--data", str(data), "--out", str(tmp_path / "b")],
                           ["train", str(torn), "--data", str(data), "--out", str(tmp_path / "t")],
                           ["generate", str(pickled), "--problems", str(probs), "--out", str(tmp_path / "g")],
                           ["bpc", str(nan), "--data", str(data), "--out", str(tmp_path / "b")]], cwd=tmp_path)
    for r, needle in zip(results, ("truncated", "truncated", "truncated", "--allow-pickle", "NaN/Inf")):
        one_error(r, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan", "p.jsonl", "pickled", "sft.jsonl", "torn"]


def test_templates_blocked_or_runaway_and_malformed_gguf(tmp_path, tiny_model_dir):
    probs = _problems(tmp_path / "p.jsonl", 2)
    blocked = tmp_path / "blocked.jinja"
    blocked.write_text("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    marker = tmp_path / "MARKER"
    runaway = tmp_path / "loop.jinja"
    runaway.write_text("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}x")
    gguf = (("trunc.gguf", b"GGUF\x03\x00\x00\x00"), ("random.gguf", os.urandom(4096)),
            ("huge.gguf", b"GGUF\x03\x00\x00\x00" + (2**63 - 1).to_bytes(8, "little") * 2))
    for name, data in gguf:
        (tmp_path / name).write_bytes(data)
    gen = ["--problems", str(probs), "--out", str(tmp_path / "g")]
    t0 = time.monotonic()
    results = micota_many([["generate", str(tiny_model_dir), *gen, "--template", str(blocked)],
                           ["generate", str(tiny_model_dir), *gen, "--template", str(runaway)],
                           *[["generate", str(tmp_path / name), *gen] for name, _ in gguf]],
                          cwd=tmp_path, env={"MICOTA_CACHE": str(tmp_path / "cache")})
    assert time.monotonic() - t0 < 300  # the render limit is 10 s; the rest is start-up on a loaded machine
    one_error(results[0], "chat template")
    one_error(results[1], "longer than 10s")
    for r, (name, _) in zip(results[2:], gguf):
        one_error(r, name)
    assert not marker.exists() and not (tmp_path / "g").exists()


def test_gguf_cache_is_keyed_by_content(tmp_path, tiny_model_dir, monkeypatch):
    """A GGUF file changed in place (same path, same size, same mtime) is converted again; an
    unchanged one reuses its conversion."""
    import gguf
    import numpy as np
    from conftest import write_gguf
    from safetensors.numpy import load_file

    from micota.models.load import resolve_model

    gg = write_gguf(tiny_model_dir, tmp_path / "model.gguf")
    data = tmp_path / "sft.jsonl"
    write_jsonl_atomic(data, [SftExample(id=f"e{i}", problem_id=f"p{i}", prompt=[{"role": "user", "content": f"What is {i}+{i}?"}],
                                         completion=[{"role": "assistant", "content": f"\\boxed{{{2 * i}}}"}]) for i in range(3)])
    cache = tmp_path / "cache"

    def bpc(out: str) -> float:
        r = micota("bpc", str(gg), "--data", str(data), "--out", str(tmp_path / out), cwd=tmp_path, env={"MICOTA_CACHE": str(cache)})
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads((tmp_path / out / "summary.json").read_text())["bpc_mean"]

    def converted() -> list[Path]:
        return sorted((cache / "models").glob("gguf-model-*"))

    def final_norm(d: Path) -> np.ndarray:
        return load_file(d / "model.safetensors")["model.norm.weight"]

    first = bpc("b1")
    [c1] = converted()
    assert np.array_equal(final_norm(c1), load_file(tiny_model_dir / "model.safetensors")["model.norm.weight"])
    before = gg.stat()
    [t] = [t for t in gguf.GGUFReader(gg).tensors if t.name == "output_norm.weight"]
    with open(gg, "r+b") as f:  # the final norm's weights become 2.0, in place
        f.seek(t.data_offset)
        f.write(np.full(int(t.n_elements), 2.0, dtype=np.float32).tobytes())
    os.utime(gg, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (gg.stat().st_size, gg.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    second = bpc("b2")
    assert second != first
    [c2] = [d for d in converted() if d != c1]
    assert np.all(final_norm(c2) == 2.0) and np.array_equal(final_norm(c1), final_norm(tiny_model_dir))
    # unchanged now: the second conversion is reused as it is
    stamp = (c2 / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setenv("MICOTA_CACHE", str(cache))
    assert resolve_model(gg) == str(c2)
    assert converted() == sorted([c1, c2]) and (c2 / "model.safetensors").stat().st_mtime_ns == stamp


def test_oversized_prompt_refused_or_dropped_and_counted(tmp_path, tiny_model_dir):
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    ctx = cfg["max_position_embeddings"]
    p = tmp_path / "p.jsonl"
    write_jsonl_atomic(p, [Problem(id="big", problem="1 + " * ctx, answer="0"),
                           Problem(id="ok", problem="What is 1 + 1?", answer="2")])
    args = ["generate", str(tiny_model_dir), "--problems", str(p), "--max-new-tokens", "4"]
    refused, r = micota_many([[*args, "--out", str(tmp_path / "g")], [*args, "--out", str(tmp_path / "g2"), "--drop-long-prompts"]],
                             cwd=tmp_path)
    one_error(refused, "'big'", f"context of {ctx:,}")
    assert not (tmp_path / "g").exists()
    assert r.returncode == 0, r.stderr[-2000:]
    man = json.loads((tmp_path / "g2" / "manifest.json").read_text())
    assert man["counts"]["dropped_long_prompts"] == 1 and man["counts"]["samples"] == 1


def test_corrupt_newest_checkpoint_falls_back(tmp_path):
    from micota.training.sft import _last_checkpoint

    ck = tmp_path / "ck"
    for step, ok in ((10, True), (20, True), (30, False)):
        d = ck / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step}) if ok else '{"global_st')
    assert _last_checkpoint(ck) == str(ck / "checkpoint-20")
    (ck / "checkpoint-20" / "optimizer.pt").write_bytes(b"torn")  # a kill while saving the optimizer
    assert _last_checkpoint(ck) == str(ck / "checkpoint-10")


# ----------------------------------------------------------------------------- grader workers
def test_grader_workers_die_with_their_parent_and_respect_limits(tmp_path):
    (tmp_path / "hangmod.py").write_text(textwrap.dedent("""
        from micota.grading import GRADERS, GradeResult, register_grader

        @register_grader("hang")
        def hang(completion, reference):
            if completion == "HANG":
                while True:
                    pass
            if completion == "HOG":
                b = bytearray(16 << 30)  # beyond the worker's address-space limit: MemoryError
            return GRADERS["default"](completion, reference)
    """))
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import threading, sys
        import hangmod
        from micota.grading import grade_batch
        from micota.grading.pool import POOL
        print(grade_batch([("HOG", "1"), ("\\\\boxed{1}", "1")], "hang", workers=1, timeout=60)[0].reason, flush=True)
        print(" ".join(str(w.proc.pid) for w in POOL._workers), flush=True)
        grade_batch([("HANG", "1"), ("HANG", "1")], "hang", workers=2, timeout=600)
    """)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(tmp_path)])})
    assert parent.stdout.readline().strip() == "error"  # MemoryError under RLIMIT_AS: wrong, not fatal
    first_worker = int(parent.stdout.readline().split()[0])
    time.sleep(3)  # both workers are now spinning on HANG
    workers = [int(p) for p in subprocess.run(["pgrep", "-f", "micota.grading.pool import _worker_main"], capture_output=True,
                                                text=True).stdout.split()]
    mine = [p for p in workers if _ppid(p) == parent.pid]
    assert first_worker in mine and len(mine) == 2
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in mine):
        time.sleep(0.1)
    assert not any(_alive(p) for p in mine), "grading workers outlived their parent"
    assert "Traceback" not in parent.stderr.read()


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


class _Answers:
    """A generation backend that answers every prompt at once: a boxed number, and every 100th
    sample an exponent tower (what the pre-screen catches)."""

    name = model_id = "answers"

    def __init__(self, tokenizer):
        self.tokenizer, self.k = tokenizer, 0

    def generate(self, prompts, params):
        from micota.generation.backends import Completion

        out = []
        for _ in prompts:
            comps = []
            for _ in range(params.n):
                self.k += 1
                text = "\\boxed{10^{10^{10}}}" if self.k % 100 == 0 else f"So the answer is \\boxed{{{self.k % 7}}}"
                comps.append(Completion(text, "stop", 8))
            out.append(comps)
        return out


def test_grade_shows_progress_on_stderr(tmp_path, tiny_model_dir, data_dir):
    from micota.eval import EvalConfig, evaluate
    from micota.models import load_tokenizer

    ev = tmp_path / "ev"
    evaluate(EvalConfig(model="answers", benchmarks=["gsm8k"], out=ev, limit=200, n=5, temperature=1.0, max_new_tokens=50,
                        data_dir=data_dir), backend=_Answers(load_tokenizer(tiny_model_dir)))
    r = micota("grade", str(ev), "--grade-mode", "default", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    bar = [x for x in r.stderr.replace("\r", "\n").splitlines() if x.startswith("grading gsm8k (default)")]
    assert bar and "0/1000" in bar[0] and "1000/1000" in bar[-1] and "item/s" in bar[-1], r.stderr[-2000:]
    assert "10 too complex (pre-screen)" in bar[-1] and "item/s" not in r.stdout  # stdout: the summary only
    rows = [json.loads(x) for x in (ev / "grades" / "default" / "graded.jsonl").read_text().splitlines()]
    assert len(rows) == 1000 and sum(x["grade_reason"] == "too_complex" for x in rows) == 10


@pytest.mark.parametrize("answer,costly", [
    ("\\boxed{2^{10}}", False), ("\\boxed{10!}", False), ("\\boxed{2^{2^{3}}}", False), ("\\boxed{\\frac{1}{2}}", False),
    ("\\boxed{1{,}000{,}000}", False), ("\\boxed{x^{2}+1}", False), ("The answer is 42.", False),
    ("\\boxed{10^{10^{10}}}", True), ("\\boxed{10^10^10}", True), ("\\boxed{9^{(9^{9})}}", True),
    ("\\boxed{(10^{10})!}", True), ("\\boxed{100000!}", True), ("\\boxed{10^{1000000}}", True),
    ("\\boxed{" + "7" * 100_001 + "}", True), ("x" * 1_000_001, True), ("{" * 300 + "}" * 300, True),
])
def test_prescreen_flags_only_pathological_answers(answer, costly):
    from micota.grading import grade_batch
    from micota.grading.extract import too_costly

    assert (too_costly(answer) is not None) == costly
    if costly:
        t0 = time.monotonic()
        assert grade_batch([(answer, "5")], timeout=30)[0].reason == "too_complex"
        assert time.monotonic() - t0 < 5
