"""micota filter: grading, drop reasons, per-problem selection, dedupe, SFT rows, bad input."""

from __future__ import annotations

import json

import pytest

from micota.errors import UserError
from micota.filtering import FilterConfig, filter_samples
from micota.generation.prompts import build_messages
from micota.manifest import is_complete
from micota.records import Sample, SftExample, read_jsonl


def _s(pid: str, idx: int, completion: str, *, tokens: int = 10, finish: str = "stop", ref: str | None = "7",
       correct: bool | None = None, problem: str | None = "What is 3 + 4?") -> dict:
    return Sample(problem_id=pid, sample_idx=idx, model="teacher", prompt="<rendered>", completion=completion,
                  finish_reason=finish, prompt_tokens=5, completion_tokens=tokens, template_hash="t", config_hash="c",
                  seed=0, source="toy", problem=problem, reference=ref, correct=correct).model_dump()


def _write(path, rows) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "samples-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


ROWS = [
    _s("a", 0, "3 + 4 = 7, so \\boxed{7}.", tokens=12),          # correct (graded here)
    _s("a", 1, "Quick: \\boxed{7}", tokens=5),                   # correct, shorter
    _s("a", 2, "3 + 4 = 7, so \\boxed{7}.", tokens=12),          # duplicate of a#0
    _s("a", 3, "It is \\boxed{8}.", tokens=6),                   # incorrect
    _s("b", 0, "long " * 30 + "\\boxed{7}", tokens=300),         # too long for max_tokens=100
    _s("b", 1, "cut off \\boxed{7}", finish="length"),           # truncated
    _s("b", 2, "   ", tokens=1),                                 # empty
    _s("c", 0, "anything \\boxed{5}", ref=None),                 # no grade, no reference
    _s("c", 1, "pre-graded", correct=True, ref=None),            # already graded: kept as is
]


@pytest.mark.parametrize("per_problem,kept_ids", [
    ("first", ["a#0", "c#1"]),
    ("shortest", ["a#1", "c#1"]),
    ("all", ["a#0", "a#1", "c#1"]),
])
def test_filter_reasons_selection_and_rows(tmp_path, per_problem, kept_ids):
    _write(tmp_path / "gen", ROWS)
    out = filter_samples(FilterConfig(samples=str(tmp_path / "gen"), out=str(tmp_path / "ds"), max_tokens=100, per_problem=per_problem))
    rows = read_jsonl(out / "data.jsonl", SftExample)
    assert sorted(r.id for r in rows) == kept_ids
    rep = json.loads((out / "filter_report.json").read_text())
    dropped = {"duplicate": 1, "incorrect": 1, "too_long": 1, "truncated": 1, "empty": 1, "ungradable": 1}
    if per_problem != "all":
        dropped["not_selected"] = 1
    assert rep["dropped"] == dropped and rep["kept"] == len(kept_ids) and rep["samples"] == len(ROWS)
    assert rep["completion_tokens_all"]["max"] == 300 and rep["samples_run_complete"] is False
    r = next(r for r in rows if r.problem_id == "a")
    assert [m.model_dump() for m in r.prompt] == build_messages("What is 3 + 4?")
    assert r.completion[0].role == "assistant" and r.meta["model"] == "teacher" and r.meta["source"] == "toy"
    assert is_complete(out)


def test_filter_without_eos_requirement_keeps_truncated_correct(tmp_path):
    _write(tmp_path / "gen", [_s("b", 1, "cut off \\boxed{7}", finish="length", correct=True)])
    out = filter_samples(FilterConfig(samples=str(tmp_path / "gen" / "samples-00000.jsonl"), out=str(tmp_path / "ds"), require_eos=False))
    assert [r.id for r in read_jsonl(out / "data.jsonl", SftExample)] == ["b#1"]


def test_filter_nothing_survives_is_an_error(tmp_path):
    _write(tmp_path / "gen", [_s("a", 0, "It is \\boxed{8}.")])
    with pytest.raises(UserError, match="no sample survived filtering .*incorrect: 1"):
        filter_samples(FilterConfig(samples=str(tmp_path / "gen"), out=str(tmp_path / "ds")))
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("case,expect", [
    ("missing_field", "field 'completion'"),
    ("no_problem_text", "no 'problem' text"),
    ("non_utf8", "not valid UTF-8"),
])
def test_filter_bad_input_cli(tmp_path, cli, case, expect):
    gen = tmp_path / "gen"
    gen.mkdir()
    row = _s("a", 0, "\\boxed{7}")
    if case == "missing_field":
        row.pop("completion")
    if case == "no_problem_text":
        row["problem"] = None
    data = (json.dumps(row) + "\n").encode()
    if case == "non_utf8":
        data = data.replace(b"boxed", b"box\xffed")
    (gen / "samples-00000.jsonl").write_bytes(data)
    r = cli("filter", str(gen), "--out", str(tmp_path / "ds"))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], r.stderr
    assert not (tmp_path / "ds").exists()
