"""Render results.json as Markdown: every number printed here comes from results.json.

Order: the validity checks (they decide whether a claim can be judged), the claims, then per
variant the data and the students beside the untouched student base, the TA, the merge curve and
the figures.
"""

from __future__ import annotations

from typing import Any


def fmt(x: Any, pct: bool = False) -> str:
    """Numbers as the report prints them (3 decimals; accuracies as fractions)."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    return f"{x:.3f}"


def _ci(v: Any) -> str:
    return f"[{fmt(v[0])}, {fmt(v[1])}]" if v else "n/a"


def _checks(res: dict[str, Any]) -> list[str]:
    checks = res.get("checks") or []
    if not checks:
        return []
    bad = sum(not c["passed"] for c in checks)
    lines = ["## Validity checks", "",
             f"{len(checks) - bad} of {len(checks)} pass. A claim with a failed check is **not testable** "
             "(micota.report.checks); thresholds are report-config keys.", "",
             "| check | value | threshold | passed | gates claims |", "|---|---:|---|---|---|"]
    for c in checks:
        lines.append(f"| {c['name']} | {fmt(c['value'])} | {c['threshold']} | {'pass' if c['passed'] else '**FAIL**'} | "
                     f"{', '.join(c['claims']) or '—'} |")
    return lines + [""]


def _claims(res: dict[str, Any]) -> list[str]:
    lines = ["## The paper's claims", "", "| claim | verdict | numbers | failed checks |", "|---|---|---|---|"]
    for c in res["claims"]:
        nums = "; ".join(f"{k} {(_ci(v) if isinstance(v, list) else fmt(v))}" for k, v in (c.get("numbers") or {}).items())
        lines.append(f"| ({c['id']}) {c['statement']} | **{c['verdict']}** | {nums or 'n/a'} | "
                     f"{', '.join(c.get('failed_checks') or []) or '—'} |")
    lines += ["", "Verdicts are computed from the CIs (see micota.report.claims): reproduced when the CI clears the "
              "threshold in the claimed direction, not reproduced when it clears it in the other direction, "
              "inconclusive otherwise; not testable when a validity check of the claim failed.", ""]
    lines += [f"- ({c['id']}) {c['verdict']}: {c['why']}." for c in res["claims"]]
    return lines + [""]


def _split_cells(b: dict[str, Any] | None) -> list[str]:
    if not b:
        return ["n/a"] * 4
    return [fmt(b["accuracy"]), _ci(b["ci95"]), fmt(b["mean_completion_tokens"]), fmt(b.get("truncated"))]


def _students(res: dict[str, Any]) -> list[str]:
    splits = sorted({s for v in list(res["variants"].values()) + [res.get("student_base") or {}] for s in v})
    head = "| variant | examples | mean trace tokens | seeds | " + " | ".join(
        f"{s} acc | {s} 95% CI | {s} mean tokens | {s} truncated" for s in splits) + " | BPC | uniform BPC |"
    lines = ["## Students per training-data variant", "", head, "|---|---:|---:|---:|" + "---:|---|---:|---:|" * len(splits) + "---:|---:|"]
    info = res.get("variant_info", {})
    if res.get("student_base"):
        cells = [c for s in splits for c in _split_cells(res["student_base"].get(s))]
        lines.append("| *untouched student base* | — | — | — | " + " | ".join(cells) + " | — | — |")
    for name, v in res["variants"].items():
        i, bpc = info.get(name, {}), res["bpc"].get(name, {})
        cells = [c for s in splits for c in _split_cells(v.get(s))]
        lines.append(f"| {name} | {fmt(i.get('examples'))} | {fmt(i.get('mean_trace_tokens'))} | {fmt(i.get('seeds'))} | "
                     + " | ".join(cells) + f" | {fmt(bpc.get('bpc'))} | {fmt(bpc.get('uniform_bpc'))} |")
    for key in res.get("empty", {}):
        if key.startswith("variants."):
            lines.append(f"| {key.split('.', 1)[1]} | 0 | " + " | ".join(["no data"] * (2 + 4 * len(splits))) + " | n/a | n/a |")
    lines += ["", "Accuracy: mean over problems of the share of correct samples (one sample per problem from each "
              "training seed; truncated completions are wrong); CI: percentile bootstrap over problems. BPC: summed "
              "completion bits / characters under the student base; uniform BPC: log2(vocabulary) × tokens / chars.", ""]
    if info:
        lines += ["Training (per seed): final loss; late loss drop = (m3 − m4) / (L_first − m4), the share of the run's "
                  "loss reduction made in its last quarter (m3, m4: mean logged loss over the 3rd, 4th quarter); lower bound = "
                  "the same with m3 − m4 reduced by z standard errors of the logged losses (the `converged` check); "
                  "vs final = (m3 − m4) / m4 (reported only):", "",
                  "| variant | final loss | late loss drop | lower bound (check) | vs final |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {', '.join(fmt(x) for x in i.get('final_loss') or [])} | "
                  f"{', '.join(fmt(x) for x in i.get('late_loss_drop') or [])} | "
                  f"{', '.join(fmt(x) for x in i.get('late_loss_drop_lower') or [])} | "
                  f"{', '.join(fmt(x) for x in i.get('late_loss_drop_vs_final') or [])} |" for k, i in info.items() if i.get("final_loss")]
        lines.append("")
    return lines


def _ta(res: dict[str, Any]) -> list[str]:
    ta = res.get("ta") or {}
    if not ta:
        return []
    lines = ["## Teacher assistant (untouched base, long-CoT fine-tune, merge)", "",
             "| model / split | problems | accuracy | 95% CI | mean tokens | truncated |", "|---|---:|---:|---|---:|---:|"]
    names = {"base_hard": "TA base / hard", "finetuned_hard": "fine-tuned TA / hard", "finetuned": "fine-tuned TA / test",
             "merged": "merged TA / test"}
    lines += [f"| {names.get(k, k)} | {fmt(v['n'])} | {fmt(v['accuracy'])} | {_ci(v['ci95'])} | "
              f"{fmt(v['mean_completion_tokens'])} | {fmt(v['truncated'])} |" for k, v in ta.items()]
    return lines + [""]


def _efficiency(res: dict[str, Any]) -> list[str]:
    eff = res.get("efficiency") or {}
    if not eff:
        return []
    lines = ["## Efficiency (micota.scoring.efficiency)", "",
             "| model | split | samples | accuracy | mean tokens | tokens per correct | reflections / 1k tokens | "
             "reflections / response | outcome efficiency |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model, by in eff.items():
        for split, m in by.items():
            lines.append(f"| {model} | {split} | " + " | ".join(fmt(m.get(k)) for k in (
                "n_samples", "accuracy", "mean_tokens", "tokens_per_correct", "reflections_per_1k_tokens",
                "reflections_per_response", "outcome_efficiency")) + " |")
    lines += ["", "Tokens per correct: all completion tokens / correct completions; outcome efficiency (arXiv 2412.21187): "
              "mean share of a completion up to the first statement of its correct final answer (0 if wrong).", ""]
    learn = (res.get("learnability") or {}).get("correlations") or {}
    if learn:
        lines += ["Which learnability metric tracked the students' accuracy across variants (Spearman ρ; lower metric = "
                  "more learnable, so a useful one is near −1):", "", "| metric | ρ | variants |", "|---|---:|---:|"]
        lines += [f"| {k} | {fmt(v.get('spearman'))} | {fmt(v.get('n_variants'))} |" for k, v in learn.items()] + [""]
    return lines


def render_markdown(res: dict[str, Any]) -> str:
    lines = [f"# {res['title']}", ""] + _checks(res) + _claims(res) + _students(res) + _ta(res) + _efficiency(res)
    if res.get("bases"):
        cols = sorted({k for b in res["bases"].values() for k in b if k != "params"})
        lines += ["System-1 bases as built (greedy accuracy under the default prompt and each style's system prompt, "
                  "measured when the bases were built):", "",
                  "| base | params | " + " | ".join(f"{c} acc" for c in cols) + " |", "|---|---:|" + "---:|" * len(cols)]
        lines += [f"| {role} | {fmt(b['params'])} | " + " | ".join(fmt(b.get(c)) for c in cols) + " |"
                  for role, b in res["bases"].items()] + [""]
    if res.get("base_bpc") or res.get("bpc"):
        lines += ["Bases on each trace style (bits per token vs the uniform guess log2 V):", "",
                  "| base / data | records | bits/token | uniform bits/token | BPC | uniform BPC |", "|---|---:|---:|---:|---:|---:|"]
        rows = {**{f"student/{k}": v for k, v in res.get("bpc", {}).items()}, **res.get("base_bpc", {})}
        lines += [f"| {k} | {fmt(v['n'])} | {fmt(v.get('bits_per_token'))} | {fmt(v.get('uniform_bits_per_token'))} | "
                  f"{fmt(v['bpc'])} | {fmt(v.get('uniform_bpc'))} |" for k, v in rows.items()] + [""]
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
    if res.get("merge_search"):
        lines += ["## Merge search (chosen point, dev split)", "", "| " + " | ".join(res["merge_search"]) + " |",
                  "|" + "---:|" * len(res["merge_search"]),
                  "| " + " | ".join(fmt(v) for v in res["merge_search"].values()) + " |", ""]
        sel = res.get("merge_selection")
        if sel:
            yes = {True: "yes", False: "**no**", None: "n/a"}
            goal = (f"length ratio {fmt(sel['target'])} ± {fmt(sel['length_tolerance'])}" if sel["rule"] == "target-length"
                    else f"length ratio <= {fmt(sel['target'])}")
            lines += [f"Selection rule `{sel['rule']}`: achieved length ratio {fmt(sel['length_ratio'])}; length target "
                      f"({goal}) reached: {yes[sel['target_reached']]}; within the accuracy tolerance "
                      f"({fmt(sel['tolerance'])}): {yes[sel['within_tolerance']]}.", ""]
    if res.get("figures"):
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in res["figures"]]
    return "\n".join(lines) + "\n"


def results_table(res: dict[str, Any]) -> str:
    """What `micota demo` prints: the validity summary, the students table and the verdicts."""
    md = render_markdown(res).split("\n")
    start = md.index("## Students per training-data variant") + 2
    end = md.index("", start)
    checks = res.get("checks") or []
    failed = [c["name"] for c in checks if not c["passed"]]
    head = [f"validity checks: {len(checks) - len(failed)} of {len(checks)} pass" + (f"; failed: {', '.join(failed)}" if failed else ""), ""]
    verdicts = [f"claim ({c['id']}): {c['verdict']}" + (f" (failed checks: {', '.join(c['failed_checks'])})" if c.get("failed_checks") else "")
                for c in res["claims"]]
    return "\n".join(head + md[start:end] + [""] + verdicts)
