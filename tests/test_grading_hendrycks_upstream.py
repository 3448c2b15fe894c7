"""Differential test: `micota.grading.hendrycks.is_equiv` against the upstream MATH ``is_equiv``.

``_upstream_*`` below are transcribed from the Hendrycks MATH repository
(github.com/hendrycks/math, modeling/math_equivalence.py; MIT licence, (c) 2021 Dan Hendrycks et
al.), kept statement for statement so that every quirk survives: ``"\\%"`` in the original source
is a backslash followed by a percent sign (``\\%`` is no Python escape), so a bare ``%`` is kept;
any exception (an ``IndexError`` on a trailing ``\\frac`` or ``\\sqrt``, a failed ``assert``) makes
``is_equiv`` compare the raw strings.

Pairs: every (answer, reference) of the grading test tables, and every reference answer of the
six benchmarks against perturbed forms of itself (the perturbations each normalisation step
undoes, or almost undoes). Our implementation must agree on every pair.
"""

from __future__ import annotations

import json

import pytest

from micota.grading.hendrycks import is_equiv


# ---- upstream, transcribed ------------------------------------------------------------------
def _upstream_fix_fracs(string):
    substrs = string.split("\\frac")
    new_str = substrs[0]
    if len(substrs) > 1:
        substrs = substrs[1:]
        for substr in substrs:
            new_str += "\\frac"
            if substr[0] == "{":
                new_str += substr
            else:
                try:
                    assert len(substr) >= 2
                except AssertionError:
                    return string
                a = substr[0]
                b = substr[1]
                if b != "{":
                    if len(substr) > 2:
                        post_substr = substr[2:]
                        new_str += "{" + a + "}{" + b + "}" + post_substr
                    else:
                        new_str += "{" + a + "}{" + b + "}"
                else:
                    if len(substr) > 2:
                        post_substr = substr[2:]
                        new_str += "{" + a + "}" + b + post_substr
                    else:
                        new_str += "{" + a + "}" + b
    string = new_str
    return string


def _upstream_fix_a_slash_b(string):
    if len(string.split("/")) != 2:
        return string
    a = string.split("/")[0]
    b = string.split("/")[1]
    try:
        a = int(a)
        b = int(b)
        assert string == "{}/{}".format(a, b)
        new_string = "\\frac{" + str(a) + "}{" + str(b) + "}"
        return new_string
    except (ValueError, AssertionError):
        return string


def _upstream_remove_right_units(string):
    if "\\text{ " in string:
        splits = string.split("\\text{ ")
        assert len(splits) == 2
        return splits[0]
    else:
        return string


def _upstream_fix_sqrt(string):
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    new_string = splits[0]
    for split in splits[1:]:
        if split[0] != "{":
            a = split[0]
            new_substr = "\\sqrt{" + a + "}" + split[1:]
        else:
            new_substr = "\\sqrt" + split
        new_string += new_substr
    return new_string


def _upstream_strip_string(string):
    string = string.replace("\n", "")
    string = string.replace("\\!", "")
    string = string.replace("\\\\", "\\")
    string = string.replace("tfrac", "frac")
    string = string.replace("dfrac", "frac")
    string = string.replace("\\left", "")
    string = string.replace("\\right", "")
    string = string.replace("^{\\circ}", "")
    string = string.replace("^\\circ", "")
    string = string.replace("\\$", "")
    string = _upstream_remove_right_units(string)
    string = string.replace("\\%", "")
    string = string.replace("\\%", "")  # upstream: "\%" — the same two characters
    string = string.replace(" .", " 0.")
    string = string.replace("{.", "{0.")
    if len(string) == 0:
        return string
    if string[0] == ".":
        string = "0" + string
    if len(string.split("=")) == 2:
        if len(string.split("=")[0]) <= 2:
            string = string.split("=")[1]
    string = _upstream_fix_sqrt(string)
    string = string.replace(" ", "")
    string = _upstream_fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    string = _upstream_fix_a_slash_b(string)
    return string


def upstream_is_equiv(str1, str2):
    if str1 is None and str2 is None:
        return True
    if str1 is None or str2 is None:
        return False
    try:
        ss1 = _upstream_strip_string(str1)
        ss2 = _upstream_strip_string(str2)
        return ss1 == ss2
    except Exception:  # upstream: a bare except
        return str1 == str2


# ---- the pairs ------------------------------------------------------------------------------
PERTURB = [
    lambda s: s, lambda s: f" {s} ", lambda s: s + "%", lambda s: s + "\\%", lambda s: "\\$" + s,
    lambda s: s + "\\text{ units}", lambda s: s + "\\text{units}", lambda s: "x = " + s, lambda s: "abc = " + s,
    lambda s: s.replace("\\frac", "\\dfrac"), lambda s: s.replace("\\frac", "\\tfrac"), lambda s: s + "\\frac",
    lambda s: s + "\\frac1", lambda s: s + "\\sqrt", lambda s: s + "^\\circ", lambda s: s + "^{\\circ}",
    lambda s: "\\left(" + s + "\\right)", lambda s: s.replace(" ", ""), lambda s: s.replace("{", "{ "),
    lambda s: "." + s, lambda s: s + "0", lambda s: s + "/2", lambda s: "1/" + s, lambda s: s + "\\!",
    lambda s: s.replace("0.", "."), lambda s: s + "\n", lambda s: s + "\\\\", lambda s: s + "\\text{ m}\\text{ s}",
]

# answers that hit each upstream quirk at least once (the issue's examples among them)
QUIRKS = [
    ("50%", "50"), ("50\\%", "50"), ("\\frac{1}{2}\\frac", "\\frac{1}{2}"), ("1\\frac", "1\\frac"),
    ("\\frac1", "\\frac1"), ("\\frac1", "\\frac{1}"), ("\\sqrt", "\\sqrt"), ("0.5", ".5"), ("1/2", "0.5"),
    ("01/2", "\\frac{1}{2}"), ("1 /2", "\\frac{1}{2}"), ("k=5", "5"), ("abc=5", "5"),
]


def _table_pairs() -> list[tuple[str, str]]:
    import test_grading_hendrycks as h
    import test_grading_mathverify as mv
    import test_grading_modes as m

    from micota.grading import last_boxed

    pairs = [(a, b) for a, b, _ in h.HENDRYCKS_UPSTREAM]
    pairs += [(ans, ref) for ref, ans, *_ in h.TRICKY]
    pairs += [(p, g) for g, p, *_ in mv.UPSTREAM + mv.KNOWN_DIFFERENCES]
    pairs += [(last_boxed(c) or c, r) for c, r, *_ in m.CASES]
    return pairs + QUIRKS


def _benchmark_pairs(data_dir) -> list[tuple[str, str]]:
    pairs = []
    for name in ("gsm8k", "math500", "aime24", "aime25", "amc23", "olympiadbench"):
        with open(data_dir / f"{name}.jsonl", encoding="utf-8") as f:
            refs = [json.loads(line)["answer"] for line in f if line.strip()]
        pairs += [(p(r), r) for r in refs for p in PERTURB]
    return pairs


def test_issue_examples_follow_upstream():
    assert upstream_is_equiv("50%", "50") is False and is_equiv("50%", "50") is False
    assert is_equiv("50\\%", "50") is True
    assert upstream_is_equiv("1\\frac", "1") is False and is_equiv("1\\frac", "1") is False
    assert is_equiv("1\\frac", "1\\frac") is True


@pytest.fixture(scope="module")
def all_pairs(data_dir) -> list[tuple[str, str]]:
    return _table_pairs() + _benchmark_pairs(data_dir)


def test_differential_against_upstream(all_pairs):
    disagree = [(a, b) for a, b in all_pairs if is_equiv(a, b) is not upstream_is_equiv(a, b)]
    agree_true = sum(upstream_is_equiv(a, b) for a, b in all_pairs)
    print(f"\nhendrycks differential: {len(all_pairs)} pairs, {len(disagree)} disagreements, "
          f"{agree_true} equivalent upstream")
    assert len(all_pairs) > 20_000  # ~3.3k references x 28 perturbations + the tables
    assert 0.1 < agree_true / len(all_pairs) < 0.9  # both verdicts are exercised
    assert disagree == []
