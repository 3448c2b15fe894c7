"""merge-search on tiny models: probes each weight, writes the chosen model, curve.csv and curve.png."""

from __future__ import annotations

import csv
import json
import shutil

from micota.manifest import is_complete
from micota.models.tiny import save_tiny


def test_merge_search_cli_writes_curve_and_chosen_model(tmp_path, tiny_model_dir, cli):
    from conftest import TINY_TEXTS

    ft = save_tiny(tmp_path / "ft", TINY_TEXTS, vocab_size=400, seed=1)  # same tokenizer, other weights
    probe = tmp_path / "probe.jsonl"
    probe.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"What is {i}+1?", "answer": str(i + 1)}) + "\n" for i in range(3)))
    out = tmp_path / "ms"
    r = cli("merge-search", "--base", str(tiny_model_dir), "--finetuned", str(ft), "--probe", str(probe),
            "--target-length-ratio", "0.5", "--steps", "2", "--max-new-tokens", "12", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert is_complete(out) and (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    rows = list(csv.DictReader(open(out / "curve.csv")))
    assert [float(x["weight"]) for x in rows] == sorted(float(x["weight"]) for x in rows) and len(rows) == 2
    assert {0.5} <= {float(x["weight"]) for x in rows}  # bisection starts at the midpoint
    res = json.loads((out / "merge_search.json").read_text())
    ratios = {p["weight"]: p["length_ratio"] for p in res["points"]}
    best = min(ratios, key=lambda w: abs(ratios[w] - 0.5))
    assert res["chosen"]["weight"] == best  # tiny random models solve nothing, so every point is within tolerance
    assert (out / "curve.png").stat().st_size > 1000
    assert not (tmp_path / ".ms.work").exists()
    r = cli("merge-search", "--base", str(tiny_model_dir), "--finetuned", str(ft), "--probe", str(probe),
            "--densities", "1.5", "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "densities" in r.stderr
    assert not (tmp_path / "bad").exists()
