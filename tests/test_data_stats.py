"""micota stats: lengths, reflection markers, repeated n-grams, truncation; side-by-side outputs."""

from __future__ import annotations

import json

import pytest

from micota.data.stats import repeated_ngram_ratio, text_stats
from micota.records import Sample, SftExample


def test_text_stats_by_hand():
    texts = ["Wait, let me check. Hmm... wait!", "Alternatively, double-check it. let  me   check"]
    s = text_stats(texts, [10, 30], None)
    by = s["reflection_per_1k_by_marker"]
    assert by["wait"] == 50.0 and by["let me check"] == 50.0 and by["hmm"] == 25.0
    assert by["alternatively"] == 25.0 and by["double-check"] == 25.0
    assert s["reflection_per_1k"] == 175.0  # 7 markers / 40 tokens
    assert s["tokens"] == {"mean": 20.0, "median": 20.0, "p90": 28.0, "max": 30}
    assert s["truncation_rate"] is None
    assert repeated_ngram_ratio("a b c d a b c d") == pytest.approx(1 - 4 / 5)
    assert repeated_ngram_ratio("one two three") == 0.0
    assert text_stats(["x"], [1], [True, False, False, False])["truncation_rate"] == 0.25


def test_stats_cli_compares_dataset_and_samples(tiny_model_dir, tmp_path, cli):
    ds = tmp_path / "ds"
    ds.mkdir()
    rows = [SftExample(id=f"e{i}", problem_id="p", prompt=[{"role": "user", "content": "q"}],
                       completion=[{"role": "assistant", "content": "wait " * (i + 1) + "the answer is 3"}]) for i in range(3)]
    (ds / "data.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rows))
    gen = tmp_path / "gen"
    gen.mkdir()
    samples = [Sample(problem_id=f"p{i}", model="m", prompt="q", completion="so 1 + 2 = 3", finish_reason="length" if i == 0 else "stop",
                      prompt_tokens=1, completion_tokens=5, template_hash="t", config_hash="c", seed=0) for i in range(4)]
    (gen / "samples-00000.jsonl").write_text("".join(s.model_dump_json() + "\n" for s in samples))
    r = cli("stats", str(ds), str(gen), "--tokenizer", str(tiny_model_dir), "--out", str(tmp_path / "st"), "--labels", "long,mid")
    assert r.returncode == 0, r.stderr[-2000:]
    st = json.loads((tmp_path / "st" / "stats.json").read_text())["datasets"]
    assert st["long"]["n"] == 3 and st["long"]["truncation_rate"] is None and st["long"]["reflection_per_1k"] > 0
    assert st["mid"]["n"] == 4 and st["mid"]["truncation_rate"] == 0.25 and st["mid"]["reflection_per_1k"] == 0
    assert st["long"]["chars"]["max"] == len("wait " * 3 + "the answer is 3")
    md = (tmp_path / "st" / "stats.md").read_text()
    assert "| metric | long | mid |" in md and "| truncation rate | — | 0.25 |" in md
    assert (tmp_path / "st" / "lengths.png").stat().st_size > 1000 and (tmp_path / "st" / "manifest.json").is_file()
    bad = cli("stats", str(ds), str(gen), "--tokenizer", str(tiny_model_dir), "--labels", "one")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == ["error: --labels has 1 names for 2 inputs"]


def test_length_histograms_are_normalised_per_dataset_with_n_and_cap(tmp_path):
    from micota.data.stats import _plot

    big, small = [10] * 900 + [50] * 100, [40] * 3 + [90]  # 1000 rows vs 4: the small set must stay visible
    drawn = _plot({"teacher": big, "mid": small}, tmp_path / "l.png", {"mid": ("max_new_tokens", 96), "teacher": ("max_tokens", 5000)})
    for lab in ("teacher", "mid"):
        assert sum(drawn["heights"][lab]) == pytest.approx(1.0)  # shares of that dataset, not counts
    assert max(drawn["heights"]["mid"]) == pytest.approx(0.75)  # 3 of 4 completions in one bin
    assert "teacher (n=1000)" in drawn["legend"] and "mid (n=4)" in drawn["legend"]
    assert "cap max_new_tokens=96 (mid)" in drawn["legend"]  # drawn as a line inside the axis
    assert drawn["caps"][5000] == "cap max_tokens=5000 (teacher)" and not any("5000" in t for t in drawn["legend"])
    assert (tmp_path / "l.png").stat().st_size > 1000
