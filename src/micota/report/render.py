"""Render results.json as Markdown: every number printed here comes from results.json."""

from __future__ import annotations

from typing import Any


def fmt(x: Any, pct: bool = False) -> str:
    """Numbers as the report prints them (3 decimals; accuracies as fractions)."""
    if x is None:
        return "n/a"
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    return f"{x:.3f}"


def _ci(v: Any) -> str:
    return f"[{fmt(v[0])}, {fmt(v[1])}]" if v else "n/a"


def render_markdown(res: dict[str, Any]) -> str:
    lines = [f"# {res['title']}", ""]
    splits = sorted({s for v in res["variants"].values() for s in v})
    lines += ["## Students per training-data variant", "",
              "| variant | " + " | ".join(f"{s} acc | {s} 95% CI | {s} mean tokens" for s in splits) + " | BPC (student base) |",
              "|---|" + "---:|---|---:|" * len(splits) + "---:|"]
    for name, v in res["variants"].items():
        cells = []
        for s in splits:
            b = v.get(s)
            cells += [fmt(b["accuracy"]), _ci(b["ci95"]), fmt(b["mean_completion_tokens"])] if b else ["n/a"] * 3
        bpc = res["bpc"].get(name, {}).get("bpc")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {fmt(bpc)} |")
    for key in res.get("empty", {}):
        if key.startswith("variants."):
            lines.append(f"| {key.split('.', 1)[1]} | " + " | ".join(["no data"] * 3 * len(splits)) + " | n/a |")
    lines += ["", "Accuracy: mean over problems of the share of correct samples (truncated completions are wrong); "
              "CI: percentile bootstrap over problems. BPC: summed completion bits / characters under the student base.", ""]
    if res.get("bases"):
        cols = sorted({k for b in res["bases"].values() for k in b if k != "params"})
        lines += ["Base models before any SFT (greedy accuracy):", "",
                  "| base | params | " + " | ".join(f"{c} acc" for c in cols) + " |", "|---|---:|" + "---:|" * len(cols)]
        lines += [f"| {role} | {fmt(b['params'])} | " + " | ".join(fmt(b.get(c)) for c in cols) + " |"
                  for role, b in res["bases"].items()] + [""]
    if res.get("empty"):
        lines += ["Stage outputs that came out empty (their variant has no student):", ""]
        lines += [f"- {k}: {why}" for k, why in res["empty"].items()] + [""]
    if res["comparisons"]:
        lines += ["## Paired comparisons against the baseline (per problem)", "",
                  "| comparison | split | problems | accuracy diff | 95% CI |", "|---|---|---:|---:|---|"]
        for name, comp in res["comparisons"].items():
            for split, c in comp.items():
                lines.append(f"| {name} | {split} | {fmt(c['n'])} | {fmt(c['diff'])} | {_ci([c['lo'], c['hi']])} |")
        lines.append("")
    lines += ["## The paper's claims", "", "| claim | verdict | numbers |", "|---|---|---|"]
    for c in res["claims"]:
        nums = "; ".join(f"{k} {(_ci(v) if isinstance(v, list) else fmt(v))}" for k, v in (c.get("numbers") or {}).items())
        lines.append(f"| ({c['id']}) {c['statement']} | **{c['verdict']}** | {nums or 'n/a'} |")
    lines += ["", "Verdicts are computed from the CIs (see micota.report.claims): reproduced when the CI clears the "
              "threshold in the claimed direction, not reproduced when it clears it in the other direction, "
              "inconclusive otherwise.", ""]
    for c in res["claims"]:
        lines.append(f"- ({c['id']}) {c['verdict']}: {c['why']}.")
    if res.get("merge_search"):
        lines += ["", "## Merge search (chosen point)", "", "| " + " | ".join(res["merge_search"]) + " |",
                  "|" + "---:|" * len(res["merge_search"]),
                  "| " + " | ".join(fmt(v) for v in res["merge_search"].values()) + " |"]
    if res.get("figures"):
        lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in res["figures"]]
    return "\n".join(lines) + "\n"


def results_table(res: dict[str, Any]) -> str:
    """The variants table alone (what `micota demo` prints)."""
    md = render_markdown(res).split("\n")
    start = md.index("## Students per training-data variant") + 2
    end = md.index("", start)
    verdicts = [f"claim ({c['id']}): {c['verdict']}" for c in res["claims"]]
    return "\n".join(md[start:end] + [""] + verdicts)
