"""The CLI contract, through real ``python -m micota`` subprocesses: exit codes (0 / 2 / 130), one
``error:`` line per usage error with "did you mean", ``--version``, ``--help`` showing every default,
the one flag vocabulary (old spellings warn), and the rerun rule (same config → skip; different
config → error naming the flags; ``--overwrite`` replaces; a larger ``--limit`` extends)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from micota import __version__

INTERRUPTED = re.compile(r"^interrupted — rerun the same command to resume \((\d+)/(\d+) samples done\)$")


def one_error(r: subprocess.CompletedProcess, fragment: str) -> str:
    """Exit 2, no traceback, and the last stderr line is the one ``error:`` line holding ``fragment``."""
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    assert "Traceback" not in r.stderr, r.stderr[-1500:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and r.stderr.strip().splitlines()[-1] == errors[0], r.stderr[-1500:]
    assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("probs") / "problems.jsonl"
    p.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                         for i in range(30)))
    return p


# ----------------------------------------------------------------------------- exit codes and messages
def test_version_and_usage_errors(cli):
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"micota {__version__}"
    r = cli()
    one_error(r, "error: give a command")
    assert "Commands:" in r.stderr  # the help comes first
    one_error(cli("evl"), "no such command 'evl'; did you mean 'eval'?")
    one_error(cli("eval", "m", "--out", "x", "--max-new-token", "3"), "no such option --max-new-token; did you mean --max-new-tokens?")
    one_error(cli("eval", "m", "--out", "x", "--n", "abc"), "'--n'")
    one_error(cli("eval"), "Missing argument")
    one_error(cli("generate", "m", "--problems", "gsm8k"), "error: missing --out")
    one_error(cli("generate", "m", "--problems", "gsm8k", "--out", "x", "--n", "0"), "error: --n: Input should be greater than or equal to 1 (got 0)")
    one_error(cli("world"), "give a command")


def test_yaml_errors_name_the_key_with_did_you_mean(cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_new_token: 3\n")
    one_error(cli("generate", "m", "--problems", "gsm8k", "--out", str(tmp_path / "o"), "--config", str(cfg)),
              f"{cfg}: unknown key 'max_new_token'; did you mean max_new_tokens?")
    cfg.write_text("temperature: hot\n")
    one_error(cli("generate", "m", "--problems", "gsm8k", "--out", str(tmp_path / "o"), "--config", str(cfg)),
              f"{cfg}: temperature: Input should be a valid number")
    assert not (tmp_path / "o").exists()


def test_deprecated_spellings_warn_and_still_work(cli, tmp_path, tiny_model_dir):
    warn = "warning: --use-chat-template is deprecated, use --chat-template"
    r = cli("train", str(tiny_model_dir), "--no-use-chat-template", "--out", str(tmp_path / "t"))  # --data missing
    assert warn in r.stderr
    one_error(r, "error: missing --data")
    r = cli("grade", str(tmp_path / "nothing"), "--mode", "hendrycks")
    assert "warning: --mode is deprecated, use --grade-mode" in r.stderr
    one_error(r, "not a finished eval output")
    r = cli("merge-search", "--base", "b", "--finetuned", "f", "--probe", "p.jsonl", "--out", str(tmp_path / "ms"), "--steps", "-1")
    assert "warning: --probe is deprecated, use --problems" in r.stderr
    one_error(r, "--steps: Input should be greater than or equal to 0")


# ----------------------------------------------------------------------------- --help
def _blocks(help_text: str) -> dict[str, str]:
    """Option help blocks of a plain click help page: first flag -> its whole text."""
    blocks: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        m = re.match(r"^  (--[a-z0-9-]+)", line)
        if m:
            current = m.group(1)
            blocks[current] = line
        elif current and line.startswith("    "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in blocks.items()}


def _rendered(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def _leaf_commands():
    import typer

    from micota.cli import app

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    return list(walk(typer.main.get_command(app), []))


def _help(path: list[str], capsys) -> str:
    """``micota PATH --help`` rendered in-process (the same click app the subprocess runs; 16 fewer torch imports)."""
    from micota.cli import main

    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    out = capsys.readouterr()
    assert e.value.code == 0, (path, out.err)
    return out.out


def test_help_of_every_command_shows_each_default(capsys):
    from micota.cli.eval import GradeConfig
    from micota.data.decontaminate import DecontaminateConfig
    from micota.data.stats import StatsConfig
    from micota.data.world.build import WorldConfig
    from micota.data.world.pretrain import PretrainConfig
    from micota.eval import EvalConfig
    from micota.filtering import FilterConfig
    from micota.generation.runner import GenerateConfig
    from micota.merging import MergeConfig
    from micota.pipeline.merge_search import MergeSearchConfig
    from micota.scoring.bpc import BpcConfig
    from micota.training.config import TrainConfig

    configs = {"eval": EvalConfig, "generate": GenerateConfig, "grade": GradeConfig, "train": TrainConfig,
               "filter": FilterConfig, "bpc": BpcConfig, "merge-search": MergeSearchConfig, "world build": WorldConfig,
               "world pretrain": PretrainConfig, "decontaminate": DecontaminateConfig}
    renamed = {"use_chat_template": "--chat-template", "probe": "--problems"}
    # hand-written commands: option -> the default its help must show (from the config class, not the help)
    manual = {"merge": {f"--{k.replace('_', '-')}": MergeConfig.model_fields[k].default
                        for k in ("method", "seed", "threads", "shard_size", "max_bytes_in_flight", "embed_policy")},
              "stats": {"--tokenizer": StatsConfig.model_fields["tokenizer"].default}}
    leaves = _leaf_commands()
    assert {" ".join(p) for p, _ in leaves} >= set(configs) | set(manual) | {"run", "demo", "world show", "models prepare"}
    for path, cmd in leaves:
        name = " ".join(path)
        text = _help(path, capsys)
        assert "[default: [" not in text and "['" not in text, name  # no Python reprs
        blocks = _blocks(text)
        expected: dict[str, object] = dict(manual.get(name, {}))
        if name in configs:
            for fname, f in configs[name].model_fields.items():
                if f.is_required():
                    continue
                default = f.get_default(call_default_factory=True)
                flag = renamed.get(fname, "--" + fname.replace("_", "-"))
                if default is not None and flag in blocks:
                    expected[flag] = default
            assert "--overwrite" in blocks or name == "grade", name
        for p in cmd.params:  # typer-level defaults of hand-written options (--n 2, --out demo-out, ...)
            if p.param_type_name == "option" and p.default not in (None, False) and not p.hidden and p.opts[0] != "--help":
                expected.setdefault(p.opts[0], p.default)
        assert expected or name in ("run", "models prepare", "grade"), name  # grade: every option defaults to unset
        for flag, default in expected.items():
            assert f"[default: {_rendered(default)}]" in blocks[flag], (name, flag, blocks[flag])
    assert "[target-length|max-accuracy]" in _blocks(_help(["merge-search"], capsys))["--select"]


# ----------------------------------------------------------------------------- the rerun rule
def test_rerun_rule_generate_filter_stats(cli, tmp_path, tiny_model_dir, problems):
    out = tmp_path / "gen"
    base = ["generate", str(tiny_model_dir), "--problems", str(problems), "--max-new-tokens", "6", "--limit", "4", "--out", str(out)]
    r = cli(*base)
    assert r.returncode == 0, r.stderr[-1500:]
    shards = sorted(out.glob("samples-*.jsonl"))
    before = {p.name: p.read_bytes() for p in shards}
    man = (out / "manifest.json").read_bytes()

    r = cli(*base, "--batch-size", "3")  # scheduling keys are not a change
    assert r.returncode == 0 and f"{out}: already complete with the same config — skipped" in r.stderr
    assert r.stdout.strip() == str(out)
    assert {p.name: p.read_bytes() for p in out.glob("samples-*.jsonl")} == before and (out / "manifest.json").read_bytes() == man

    r = cli(*base[:-6], "--max-new-tokens", "4", "--temperature", "0.5", "--limit", "4", "--out", str(out))
    one_error(r, "finished with a different config (--max-new-tokens 6 → 4, --temperature 0.0 → 0.5); pass --overwrite")
    assert {p.name: p.read_bytes() for p in out.glob("samples-*.jsonl")} == before

    r = cli(*base[:-4], "--limit", "6", "--out", str(out))  # a larger --limit extends the finished output
    assert r.returncode == 0, r.stderr[-1500:]
    assert "resuming 4/6 samples already done" in r.stderr
    assert json.loads((out / "manifest.json").read_text())["counts"]["samples"] == 6

    r = cli(*base[:-6], "--max-new-tokens", "4", "--limit", "4", "--out", str(out), "--overwrite")
    assert r.returncode == 0, r.stderr[-1500:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["max_new_tokens"] == 4 and m["counts"]["samples"] == 4

    # filter needs correct samples, which the tiny model does not write: hand-made ones
    from micota.records import Sample

    hand = tmp_path / "hand"
    hand.mkdir()
    (hand / "samples-00000.jsonl").write_text("".join(Sample(
        problem_id=f"p{i}", problem=f"What is {i} + {i}?", model="m", prompt="q", completion=f"so \\boxed{{{2 * i}}}", finish_reason="stop", prompt_tokens=1,
        completion_tokens=5, template_hash="t", config_hash="c", seed=0, source="x", reference=str(2 * i)).model_dump_json() + "\n"
        for i in range(3)))
    filt = tmp_path / "filt"
    fbase = ["filter", str(hand), "--grade-mode", "default", "--out", str(filt)]
    r = cli(*fbase)
    assert r.returncode == 0, r.stderr[-1500:]
    r2 = cli(*fbase[:2], "--mode", "default", "--out", str(filt))  # the old spelling: same config, skipped
    assert r2.returncode == 0 and "already complete with the same config — skipped" in r2.stderr
    assert "warning: --mode is deprecated, use --grade-mode" in r2.stderr
    one_error(cli(*fbase, "--max-tokens", "3"), "(--max-tokens 16000 → 3); pass --overwrite")
    stats = tmp_path / "stats"
    sbase = ["stats", str(out), "--tokenizer", str(tiny_model_dir), "--out", str(stats)]
    assert cli(*sbase).returncode == 0
    assert "skipped" in cli(*sbase).stderr
    one_error(cli(*sbase, "--labels", "x"), "(--labels unset → ['x']); pass --overwrite")
    r = cli(*sbase, "--labels", "x", "--overwrite")
    assert r.returncode == 0, r.stderr[-1500:]
    st = json.loads((stats / "stats.json").read_text())["datasets"]
    assert st["x"]["token_cap"] == {"max_new_tokens": 4}  # read from the samples' generate manifest


def test_rerun_rule_merge_and_out_flag(cli, tmp_path, tiny_model_dir):
    import shutil

    out = tmp_path / "merged"
    ft = shutil.copytree(tiny_model_dir, tmp_path / "ft")  # same weights: a zero task vector, still a real merge
    args = ["merge", "--base", str(tiny_model_dir), "--finetuned", str(ft), "--weight", "0.5", "--density", "0.5"]
    r = cli(*args, "--out", str(out))
    assert r.returncode == 0 and r.stdout.strip() == str(out), r.stderr[-1500:]
    r = cli(*args, "--out", str(out))
    assert r.returncode == 0 and "already complete with the same config — skipped" in r.stderr
    one_error(cli(*args, "--seed", "3", "--out", str(out)), "(--seed 0 → 3); pass --overwrite")
    r = cli(*args, "--seed", "3", str(out), "--overwrite")  # the old positional OUT still works, with a warning
    assert r.returncode == 0, r.stderr[-1500:]
    assert "warning: OUT as a positional argument is deprecated, use --out OUT" in r.stderr
    assert json.loads((out / "manifest.json").read_text())["config"]["seed"] == 3
    one_error(cli("merge", "--base", str(tiny_model_dir), "--finetuned", str(ft), "--weight", "1"), "missing --out")


def test_not_a_micota_output_is_never_replaced(cli, tmp_path, tiny_model_dir, problems):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    one_error(cli("filter", str(tmp_path), "--out", str(out), "--overwrite"), "not a finished micota filter output")
    assert (out / "notes.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------- Ctrl-C
@pytest.mark.parametrize("command", ["generate", "eval"])
def test_ctrl_c_exits_130_with_one_line_and_resumes(command, tmp_path, tiny_model_dir, problems, data_dir):
    out = tmp_path / "o"
    if command == "generate":
        argv = ["generate", str(tiny_model_dir), "--problems", str(problems), "--out", str(out)]
        shard_dir = out
    else:
        argv = ["eval", str(tiny_model_dir), "--benchmarks", "gsm8k", "--data-dir", str(data_dir), "--limit", "30", "--out", str(out)]
        shard_dir = out / "gsm8k"
    argv += ["--max-new-tokens", "120", "--batch-size", "1"]
    # a background job (`make test &`, CI harnesses) inherits SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: give the child the default disposition a terminal's Ctrl-C meets
    proc = subprocess.Popen([sys.executable, "-m", "micota", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        rows = sum(len(p.read_text().splitlines()) for p in shard_dir.glob("samples-*.jsonl"))
        if rows >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-1500:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    m = INTERRUPTED.match(last)
    assert m and 2 <= int(m.group(1)) < 30 and m.group(2) == "30", last
    assert not (out / "manifest.json").exists() and not (shard_dir / "manifest.json").exists()
    done = int(m.group(1))
    kept = sum(len(p.read_text().splitlines()) for p in shard_dir.glob("samples-*.jsonl"))
    assert kept == done


def test_resume_line_after_interrupt(cli, tmp_path, tiny_model_dir, problems):
    """A partial output (rows of 2 of 5 problems) resumes and says so."""
    out = tmp_path / "g"
    assert cli("generate", str(tiny_model_dir), "--problems", str(problems), "--limit", "2", "--max-new-tokens", "4",
               "--out", str(out)).returncode == 0
    (out / "manifest.json").unlink()  # what an interrupted run leaves: rows, no manifest
    one_error(cli("generate", str(tiny_model_dir), "--problems", str(problems), "--limit", "5", "--max-new-tokens", "5",
                  "--out", str(out)), "holds unfinished samples from a different config (--max-new-tokens 4 → 5)")
    r = cli("generate", str(tiny_model_dir), "--problems", str(problems), "--limit", "5", "--max-new-tokens", "4", "--out", str(out))
    assert r.returncode == 0, r.stderr[-1500:]
    assert "generate g: resuming 2/5 samples already done" in r.stderr


# ----------------------------------------------------------------------------- run --dry-run
def test_dry_run_prints_the_plan_on_stdout(cli, tmp_path):
    repo = Path(__file__).resolve().parents[1]
    r = cli("run", str(repo / "recipes" / "miniature-quick.yaml"), "--dry-run", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-1500:]
    assert "\nworld " in r.stdout and "\nreport " in r.stdout and "world " not in r.stderr
    assert not (tmp_path / "o").exists()


def test_dry_run_checks_inputs_relative_to_the_recipe(cli, tmp_path):
    import importlib.util

    repo = Path(__file__).resolve().parents[1]
    recipe = repo / "recipes" / "paper" / "qwen2.5-1.5b.yaml"
    r = cli("run", str(recipe), "--dry-run", "--out", str(tmp_path / "o"), cwd=tmp_path)  # not the repo root
    lacking = [m for m in ("vllm", "deepspeed") if importlib.util.find_spec(m) is None]
    if lacking:
        line = one_error(r, "missing optional extras: ")
        for m in lacking:
            assert f"pip install 'micota[{m}]'" in line
        assert "teacher_gen (backend: vllm)" in line or "vllm" not in lacking
    else:
        assert r.returncode == 0 and "\nteacher_gen " in r.stdout
    assert not (tmp_path / "o").exists()
    copied = tmp_path / "elsewhere" / "recipe.yaml"
    copied.parent.mkdir()
    copied.write_text(recipe.read_text())
    line = one_error(cli("run", str(copied), "--dry-run", "--out", str(tmp_path / "o")),
                     f"3 input paths not found (relative paths are relative to the pipeline file's directory {copied.parent})")
    assert "math_train.jsonl (used by stages.train_problems.inputs.data" in line  # the decontamination stage reads it
    assert "accelerate_zero3.yaml (used by launcher.config_file)" in line
    assert "benchmarks (used by " in line and "stages.ta_eval.inputs.data_dir" in line


def test_thread_default_follows_the_load():
    from micota.cli import thread_default

    assert thread_default(ncpu=2, load1=0.3) is None  # idle: torch's own default
    assert thread_default(ncpu=2, load1=1.2) == 1
    assert thread_default(ncpu=2, load1=9.0) == 1  # never below one
    assert thread_default(ncpu=16, load1=3.6) == 12


def test_thread_default_is_applied_and_overridable(tmp_path):
    code = "import sys; sys.argv = ['micota', '--version']\nimport micota.cli, torch\nprint(torch.get_num_threads())"
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_NUM_THREADS", "MICOTA_THREADS")}
    got = subprocess.run([sys.executable, "-c", code], env={**env, "MICOTA_THREADS": "1"}, capture_output=True, text=True)
    assert got.stdout.split()[-1] == "1", got.stderr[-800:]
    bad = subprocess.run([sys.executable, "-m", "micota", "--version"], env={**env, "MICOTA_THREADS": "lots"},
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: MICOTA_THREADS='lots': expected a positive integer or 'torch'"


def test_train_logs_a_line_per_step_when_not_a_terminal_and_follows_the_rerun_rule(cli, tmp_path, tiny_model_dir):
    from micota.generation.prompts import build_messages
    from micota.records import SftExample

    ds = tmp_path / "ds.jsonl"
    ds.write_text("".join(SftExample(id=f"e{i}", problem_id=f"p{i}", prompt=build_messages(f"What is {i} + 1?"),
                                     completion=[{"role": "assistant", "content": f"The answer is \\boxed{{{i + 1}}}."}]
                                     ).model_dump_json() + "\n" for i in range(4)))
    out = tmp_path / "model"
    argv = ["train", str(tiny_model_dir), "--data", str(ds), "--out", str(out), "--max-steps", "3", "--batch-size", "2",
            "--logging-steps", "1", "--no-save-checkpoints", "--max-length", "256"]
    r = cli(*argv)  # stderr is a pipe, not a terminal
    assert r.returncode == 0, r.stderr[-2000:]
    steps = [ln for ln in r.stderr.splitlines() if ln.startswith("train step ")]
    assert [ln.split()[2] for ln in steps] == ["1/3", "2/3", "3/3"], r.stderr[-2000:]
    assert re.match(r"train step 3/3 \(100%\) loss [0-9.e+-]+ .*· \d+ s elapsed, ETA 0 s$", steps[-1]), steps[-1]
    assert "Truncating" not in r.stderr  # pre-flight drops over-long examples; TRL has nothing to truncate
    assert "{'loss'" not in r.stdout  # no bare Trainer dicts
    again = cli(*argv)
    assert again.returncode == 0 and "already complete with the same config — skipped" in again.stderr
    one_error(cli(*argv[:-1], "128"), "(--max-length 256 → 128); pass --overwrite")
