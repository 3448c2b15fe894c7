"""merge-search: Pareto front, selection rules and refinement on hand-made tables; the keyed, resumable
work directories and the whole CLI on tiny models."""

from __future__ import annotations

import csv
import json

import pytest

from micota.manifest import is_complete
from micota.models.tiny import save_tiny
from micota.pipeline.merge_search import (MergeSearchConfig, _Prober, _row, merge_search, next_refinement, pareto_flags,
                                          select)


def pt(method, weight, accuracy, mean_tokens, density=None, ft=(0.5, 100.0), reference=False, tol=0.1):
    """A table row as merge_search builds it, from a hand-chosen accuracy and length."""
    cfg = MergeSearchConfig(base="b", finetuned="f", probe="p", out="o", accuracy_tolerance=tol)
    return _row(method, weight, density, {"accuracy": accuracy, "mean_tokens": mean_tokens, "truncated": 0.0, "n": 10},
                {"accuracy": ft[0], "mean_tokens": ft[1]}, cfg, reference)


def cfg_(**kw):
    return MergeSearchConfig(base="b", finetuned="f", probe="p", out="o", **kw)


def test_pareto_front_of_a_hand_made_table():
    table = [pt("ties", 0.3, 0.40, 30), pt("ties", 0.5, 0.45, 50), pt("ties", 0.7, 0.44, 60),  # 0.7 dominated by 0.5
             pt("dare_ties", 0.5, 0.45, 50),   # equal to ties 0.5: neither dominates the other
             pt("task_arithmetic", 0.7, 0.50, 80), pt("task_arithmetic", 1.0, 0.50, 95),  # 1.0: same acc, longer
             pt("linear", 0.5, 0.10, 20, reference=True)]  # shortest: on the front
    assert pareto_flags(table) == [True, True, False, True, True, False, True]


def test_target_length_rule_prefers_within_tolerance_then_closest():
    # fine-tune: accuracy 0.5, 100 tokens; tolerance 0.1 -> accuracy >= 0.45 qualifies
    table = [pt("ties", 0.3, 0.30, 50),              # exactly on target but loses too much accuracy
             pt("ties", 0.5, 0.46, 62),              # within tolerance, |0.62 - 0.5| = 0.12
             pt("dare_ties", 0.7, 0.48, 70, 0.8),    # within tolerance, farther
             pt("task_arithmetic", 0.6, 0.45, 40),   # within tolerance (retained 0.9 exactly), |0.4 - 0.5| = 0.10 -> chosen
             pt("linear", 0.5, 0.50, 50, reference=True)]  # perfect, but a reference: never selected
    chosen, got = select(table, cfg_(target_length_ratio=0.5))
    assert (chosen["method"], chosen["weight"]) == ("task_arithmetic", 0.6)
    # |0.40 - 0.5| = 0.10 > the default length tolerance 0.05: within tolerance, target NOT reached
    assert got == {"length_ratio": 0.4, "within_tolerance": True, "target_reached": False, "met": False}
    assert select(table, cfg_(target_length_ratio=0.5, length_tolerance=0.1))[1]["met"] is True
    assert table[3]["retained"] == pytest.approx(0.9) and table[3]["within_tolerance"] and not table[0]["within_tolerance"]
    # tie on distance: higher accuracy wins
    chosen, _ = select([pt("ties", 0.4, 0.46, 40), pt("ties", 0.6, 0.48, 60)], cfg_(target_length_ratio=0.5))
    assert chosen["weight"] == 0.6
    # nothing within tolerance: the most accurate, and the target is NOT met
    chosen, got = select([pt("ties", 0.3, 0.2, 50), pt("ties", 0.9, 0.4, 90)], cfg_(target_length_ratio=0.5))
    assert chosen["weight"] == 0.9 and got["met"] is False and got["within_tolerance"] is False
    assert got["target_reached"] is False and got["length_ratio"] == 0.9


def test_undefined_retention_is_never_within_tolerance():
    p = pt("ties", 0.5, 0.0, 50, ft=(0.0, 100.0))
    assert p["retained"] is None and p["within_tolerance"] is False and p["length_ratio"] == 0.5
    chosen, got = select([p, pt("ties", 0.7, 0.0, 80, ft=(0.0, 100.0))], cfg_(target_length_ratio=0.5, accuracy_tolerance=1.0))
    assert got["met"] is False and got["target_reached"] is True and chosen["weight"] == 0.5  # all equally (in)accurate: the closest to the target


def test_within_tolerance_but_far_from_the_target_is_not_reported_as_reached():
    """The reported case: only the fine-tune-like point keeps accuracy; it is chosen at length ratio 0.998 for a
    target of 0.5 — within tolerance, target NOT reached, goal NOT met, and the summary line says each."""
    from micota.pipeline.merge_search import describe

    table = [pt("ties", 0.5, 0.2, 50), pt("ties", 1.0, 0.5, 99.8)]
    cfg = cfg_(target_length_ratio=0.5)
    chosen, got = select(table, cfg)
    assert chosen["weight"] == 1.0
    assert got == {"length_ratio": pytest.approx(0.998), "within_tolerance": True, "target_reached": False, "met": False}
    line = describe({"chosen": chosen, "finetuned": {"accuracy": 0.5},
                     "selection": {"rule": "target-length", "target": 0.5, "tolerance": 0.1, "length_tolerance": 0.05, **got}})
    assert "length ratio 0.998" in line and "NOT reached" in line and "within accuracy tolerance 0.1" in line
    assert "goal NOT met" in line


def test_max_accuracy_rule():
    table = [pt("ties", 0.3, 0.30, 40), pt("ties", 0.5, 0.44, 58), pt("ties", 0.7, 0.49, 75), pt("ties", 1.0, 0.5, 100)]
    chosen, got = select(table, cfg_(select="max-accuracy", max_length_ratio=0.6))
    assert chosen["weight"] == 0.5 and got["met"] and got["target_reached"] and got["length_ratio"] == 0.58
    assert got["within_tolerance"] is False  # 0.44 < 0.9 × 0.5: reported, though this rule has no accuracy goal
    chosen, got = select(table, cfg_(select="max-accuracy", max_length_ratio=0.2))
    assert chosen["weight"] == 0.3 and not got["met"] and not got["target_reached"]  # nothing short enough: the shortest


def test_refinement_needs_no_monotonicity():
    # length jumps in a step and back down: the best point is 0.7; its better neighbour is 0.5 (0.9 is far off)
    table = [pt("ties", 0.3, 0.46, 95), pt("ties", 0.5, 0.46, 90), pt("ties", 0.7, 0.47, 55), pt("ties", 0.9, 0.45, 99),
             pt("dare_ties", 0.5, 0.1, 50, 0.7)]
    cfg = cfg_(target_length_ratio=0.5)
    assert next_refinement(table, cfg) == ("ties", None, 0.6)
    table.append(pt("ties", 0.6, 0.30, 70))  # midpoint probed (and poor): next the other side of the best
    assert next_refinement(table, cfg) == ("ties", None, 0.8)
    table.append(pt("ties", 0.8, 0.30, 70))
    assert next_refinement(table, cfg) == ("ties", None, 0.65)  # between 0.7 and its (new) better neighbour 0.6
    # references never steer the refinement
    only_ref = [pt("linear", 0.5, 0.5, 50, reference=True), pt("ties", 0.5, 0.5, 90)]
    assert next_refinement(only_ref, cfg) is None


def test_refinement_goes_below_the_first_grid_weight_towards_the_base():
    # the style switches below the grid: every grid point writes the fine-tune's full length; the base
    # (weight 0 of every series, 20 tokens) is the best point's better neighbour, so refine towards 0
    table = [pt("dare_ties", w, 0.5, 100, 0.5) for w in (0.2, 0.35, 0.5)]
    cfg = cfg_(target_length_ratio=0.5)
    base = pt("base", 0.0, 0.45, 20)
    assert next_refinement(table, cfg) == ("dare_ties", 0.5, 0.275)  # without the base: only inside the grid
    assert next_refinement(table, cfg, base_row=base) == ("dare_ties", 0.5, 0.1)
    table.append(pt("dare_ties", 0.1, 0.48, 60, 0.5))
    assert next_refinement(table, cfg, base_row=base) == ("dare_ties", 0.5, 0.05)  # 0.1 (0.6) and the base (0.2) bracket 0.5


def test_refinement_prefers_the_neighbour_that_brackets_the_target():
    # measured shape (miniature world, seed 0): the base writes 0.19 of the fine-tune's length, the first grid
    # point 0.72, the next 0.76. 0.35 is the closer neighbour of the best point (0.2) but on the same side of
    # the target 0.5; the base is on the other side, so the target lies between 0 and 0.2
    table = [pt("dare_ties", 0.2, 0.78, 72.4, 0.5), pt("dare_ties", 0.35, 0.70, 76.4, 0.5), pt("dare_ties", 0.5, 0.41, 91.4, 0.5)]
    base = pt("base", 0.0, 0.52, 19.0)
    cfg = cfg_(target_length_ratio=0.5)
    assert next_refinement(table, cfg, base_row=base) == ("dare_ties", 0.5, 0.1)
    assert next_refinement(table, cfg_(select="max-accuracy", max_length_ratio=0.8), base_row=base) == ("dare_ties", 0.5, 0.275)


@pytest.fixture
def two_tiny(tmp_path, tiny_model_dir):
    from conftest import TINY_TEXTS

    ft = save_tiny(tmp_path / "ft", TINY_TEXTS, vocab_size=400, seed=1)  # same tokenizer, other weights
    probe = tmp_path / "probe.jsonl"
    probe.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"What is {i}+1?", "answer": str(i + 1)}) + "\n" for i in range(3)))
    return tiny_model_dir, ft, probe


def test_work_dirs_are_keyed_by_inputs_and_resume(tmp_path, two_tiny):
    base, ft, probe = two_tiny
    cfg = MergeSearchConfig(base=str(base), finetuned=str(ft), probe=str(probe), out=tmp_path / "out", max_new_tokens=6)
    work = tmp_path / ".out.work"
    first = _Prober(cfg, work).point("task_arithmetic", 0.5, None)
    (d,) = [p for p in work.iterdir() if p.name.startswith("task_arithmetic-w0.5000-")]
    assert is_complete(d / "samples") and not (d / "model").exists()  # merged weights deleted once probed
    # tamper with the stored samples: an unchanged config reuses them (resume) ...
    f = next((d / "samples").glob("*.jsonl"))
    f.write_text("".join(json.dumps({**json.loads(x), "completion_tokens": 999}) + "\n" for x in f.read_text().splitlines()))
    assert _Prober(cfg, work).point("task_arithmetic", 0.5, None)["mean_tokens"] == 999
    # ... a changed fine-tune (same path, new content), probe file or setting never does
    from conftest import TINY_TEXTS

    save_tiny(tmp_path / "ft", TINY_TEXTS, vocab_size=400, seed=2)
    again = _Prober(cfg, work).point("task_arithmetic", 0.5, None)
    assert again["mean_tokens"] <= 6 and again["n"] == first["n"]
    probe.write_text(probe.read_text().splitlines()[0] + "\n")
    assert _Prober(cfg, work).point("task_arithmetic", 0.5, None)["n"] == 1
    assert len([p for p in work.iterdir() if p.name.startswith("task_arithmetic-w0.5000-")]) == 3
    keys = {json.dumps(json.loads((p / "key.json").read_text()), sort_keys=True) for p in work.iterdir()}
    assert len(keys) == 3


def test_a_same_size_copy_with_the_old_mtime_is_a_changed_input(tmp_path, two_tiny):
    """`cp -p` of another fine-tune of the same shape keeps name, size and mtime: the content decides."""
    import os

    from conftest import TINY_TEXTS

    base, ft, probe = two_tiny
    cfg = MergeSearchConfig(base=str(base), finetuned=str(ft), probe=str(probe), out=tmp_path / "out", max_new_tokens=6)
    work = tmp_path / ".out.work"
    _Prober(cfg, work).point("task_arithmetic", 0.5, None)
    weights = ft / "model.safetensors"
    other = save_tiny(tmp_path / "other", TINY_TEXTS, vocab_size=400, seed=2) / "model.safetensors"
    st = weights.stat()
    assert other.stat().st_size == st.st_size and other.read_bytes() != weights.read_bytes()
    weights.write_bytes(other.read_bytes())
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    _Prober(cfg, work).point("task_arithmetic", 0.5, None)
    assert len([p for p in work.iterdir() if p.name.startswith("task_arithmetic-w0.5000-")]) == 2


def test_merge_search_cli_writes_table_plot_and_chosen_model(tmp_path, two_tiny, cli):
    base, ft, probe = two_tiny
    out = tmp_path / "ms"
    r = cli("merge-search", "--base", str(base), "--finetuned", str(ft), "--problems", str(probe),
            "--methods", "task_arithmetic,dare_ties", "--weights", "0.5,1.0", "--densities", "0.7", "--steps", "1",
            "--linear-reference-weights", "0.5", "--target-length-ratio", "0.5", "--max-new-tokens", "12", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert is_complete(out) and (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    res = json.loads((out / "merge_search.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
    for row in ("base", "finetuned"):
        assert {"accuracy", "mean_tokens", "truncated", "n"} <= set(res[row]) and res[row]["n"] == 3
    pts = res["points"]
    keys = {"method", "weight", "density", "accuracy", "mean_tokens", "truncated", "n", "length_ratio", "retained",
            "within_tolerance", "on_pareto", "reference"}
    assert all(keys <= set(p) for p in pts)
    grid = [(p["method"], p["weight"], p["density"]) for p in pts if not p["reference"]]
    assert grid[:4] == [("task_arithmetic", 0.5, None), ("task_arithmetic", 1.0, None), ("dare_ties", 0.5, 0.7), ("dare_ties", 1.0, 0.7)]
    assert len(grid) == 5 and grid[4][1] in (0.25, 0.75)  # one refinement: a midpoint of the best point's series (the base is its weight 0)
    assert [(p["method"], p["weight"]) for p in pts if p["reference"]] == [("linear", 0.5)]
    # the tiny random fine-tune solves nothing: retention undefined, nothing within tolerance, target not met
    assert res["finetuned"]["accuracy"] == 0 and all(p["retained"] is None and not p["within_tolerance"] for p in pts)
    sel = res["selection"]
    assert {k: sel[k] for k in ("rule", "target", "tolerance", "length_tolerance", "within_tolerance", "met")} == {
        "rule": "target-length", "target": 0.5, "tolerance": 0.1, "length_tolerance": 0.05, "within_tolerance": False,
        "met": False}
    assert res["chosen"]["within_tolerance"] is False and not res["chosen"]["reference"]
    ratios = {(p["method"], p["weight"]): p["length_ratio"] for p in pts if not p["reference"]}
    assert abs(res["chosen"]["length_ratio"] - 0.5) == min(abs(v - 0.5) for v in ratios.values())
    assert sel["length_ratio"] == res["chosen"]["length_ratio"]
    assert sel["target_reached"] is (abs(sel["length_ratio"] - 0.5) <= 0.05)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: manifest[k] for k in ("within_tolerance", "target_reached", "met")} == {
        k: sel[k] for k in ("within_tolerance", "target_reached", "met")}
    assert "chose " in r.stdout and "goal NOT met" in r.stdout and r.stdout.strip().endswith(str(out))
    assert "NOT within accuracy tolerance" in r.stdout
    assert "warning: merge-search:" in r.stderr and "retention is undefined" in r.stderr
    # the chosen model was re-merged into OUT, with the task-vector block in its report
    report = json.loads((out / "merge_report.json").read_text())
    assert report["method"] == res["chosen"]["method"] and report["task_vector"]["delta_norm"] > 0
    rows = list(csv.DictReader(open(out / "merge_search.csv")))
    assert [x["method"] for x in rows[:2]] == ["base", "finetuned"] and len(rows) == 2 + len(pts)
    assert sum(x["chosen"] == "True" for x in rows) == 1
    assert (out / "pareto.png").stat().st_size > 5000
    assert not (tmp_path / ".ms.work").exists()


def test_bad_search_input_is_one_line_exit_2(tmp_path, two_tiny, cli):
    base, ft, probe = two_tiny
    for extra, word in ((["--densities", "1.5"], "densities"), (["--methods", "nope"], "unknown method"),
                        (["--select", "max-accuracy"], "max-length-ratio")):
        out = tmp_path / "bad"
        r = cli("merge-search", "--base", str(base), "--finetuned", str(ft), "--problems", str(probe), *extra, "--out", str(out))
        assert r.returncode == 2 and r.stderr.startswith("error: ") and word in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert not out.exists()
