"""micota decontaminate: hand-made overlaps, short exact duplicates, keep vs drop, SFT rows, CLI, pipeline kind."""

from __future__ import annotations

import json

import pytest

from micota.data.decontaminate import DecontaminateConfig, decontaminate, ngrams, words
from micota.records import Problem, SftExample, read_jsonl


def _bench(tmp_path):
    d = tmp_path / "bench"
    d.mkdir()
    rows = [Problem(id="b1", problem="Find the number of ordered pairs $(x, y)$ of integers such that $x^2 + y^2 = 25$.", answer="12"),
            Problem(id="b2", problem="Compute $2+2$.", answer="4")]
    (d / "mini.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rows))
    return d / "mini.jsonl"


TRAIN = [
    ("t1", "Let us find the number of ordered pairs (x,y) of integers such that x^2+y^2=50."),  # 8-gram shared
    ("t2", "Find the number of unordered pairs of primes below 100."),                         # 5 shared words only
    ("t3", "compute 2 + 2"),                                                                     # short exact duplicate
    ("t4", "Compute 2+2+2."),                                                                    # contains "compute 2 2"
    ("t5", "A train leaves at noon."),
]


def test_words_and_ngrams():
    assert words("$x^2 + 3x$, \\frac{a}{b}") == ["x", "2", "3x", "frac", "a", "b"]
    assert ngrams(["a", "b", "c"], 2) == {("a", "b"), ("b", "c")}
    assert ngrams(["a"], 8) == {("a",)} and ngrams([], 8) == set()


def test_flags_drops_and_counts(tmp_path):
    bench = _bench(tmp_path)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(Problem(id=i, problem=t, answer="1").model_dump_json() + "\n" for i, t in TRAIN))
    out = decontaminate(DecontaminateConfig(data=str(data), out=str(tmp_path / "o"), against=[str(bench)]))
    kept = [p.id for p in read_jsonl(out / "data.jsonl", Problem)]
    flagged = {f["id"]: f for f in map(json.loads, (out / "flagged.jsonl").read_text().splitlines())}
    assert kept == ["t2", "t5"] and set(flagged) == {"t1", "t3", "t4"}
    assert flagged["t1"]["matches"] == ["mini:b1"] and len(flagged["t1"]["ngram"].split()) == 8
    rep = json.loads((out / "decontamination.json").read_text())
    assert (rep["rows"], rep["flagged"], rep["dropped"], rep["kept"]) == (5, 3, 3, 2)
    assert rep["flagged_by_benchmark"] == {str(bench): 3} and len(rep["benchmark_files"][str(bench)]["sha256"]) == 64
    # t1 shares a 16-word run ("find ... x 2 y 2"): a 17-gram lets it through, a 16-gram does not
    out9 = decontaminate(DecontaminateConfig(data=str(data), out=str(tmp_path / "o9"), against=[str(bench)], ngram=17))
    out14 = decontaminate(DecontaminateConfig(data=str(data), out=str(tmp_path / "o14"), against=[str(bench)], ngram=16))
    assert "t1" not in [p.id for p in read_jsonl(out14 / "data.jsonl", Problem)]
    assert "t1" in [p.id for p in read_jsonl(out9 / "data.jsonl", Problem)]


def test_keep_marks_sft_rows(tmp_path):
    bench = _bench(tmp_path)
    d = tmp_path / "sft"
    d.mkdir()
    rows = [SftExample(id=i, problem_id=i, prompt=[{"role": "user", "content": t + "\nPlease reason step by step."}],
                       completion=[{"role": "assistant", "content": "Compute 2+2. \\boxed{4}"}]) for i, t in TRAIN]
    (d / "data.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rows))
    out = decontaminate(DecontaminateConfig(data=str(d), out=str(tmp_path / "o"), against=[str(bench)], keep=True))
    got = read_jsonl(out / "data.jsonl", SftExample)
    assert len(got) == 5  # kept, marked; t5's completion repeats a benchmark problem but completions are not read
    assert {r.id for r in got if r.meta.get("contaminated")} == {"t1", "t3", "t4"}


def test_real_benchmarks_cli_and_stage_kind(tmp_path, cli, data_dir):
    from micota.pipeline.stages import get_stage_kind

    gsm = [json.loads(x) for x in (data_dir / "gsm8k.jsonl").read_text().splitlines()[:3]]
    data = tmp_path / "train.jsonl"
    rows = [Problem(id="copy", problem="Rephrased: " + gsm[0]["problem"], answer="1"),
            Problem(id="fresh", problem="How many legs do three spiders have in total?", answer="24")]
    data.write_text("".join(r.model_dump_json() + "\n" for r in rows))
    r = cli("decontaminate", str(data), "--against", "gsm8k,math500", "--out", str(tmp_path / "o"),
            "--data-dir", str(data_dir))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1 of 2 rows" in r.stdout and "gsm8k: 1" in r.stdout and "math500: 0" in r.stdout
    assert [p.id for p in read_jsonl(tmp_path / "o" / "data.jsonl", Problem)] == ["fresh"]
    from micota.data.benchmarks import load_problems
    assert [p.id for p in load_problems(str(tmp_path / "o"))] == ["fresh"]  # a generate stage can read the output dir
    cls, fn = get_stage_kind("decontaminate").load()
    assert cls is DecontaminateConfig and fn is decontaminate
    bad = cli("decontaminate", str(data), "--against", "nope", "--out", str(tmp_path / "o2"))
    assert bad.returncode == 2 and "unknown benchmark" in bad.stderr
    with pytest.raises(Exception, match="at least one"):
        DecontaminateConfig(data="x", out="y", against=[])
