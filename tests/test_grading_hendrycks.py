"""`hendrycks` mode (MATH ``is_equiv`` string normalisation) and where it disagrees with `default`.

HENDRYCKS_UPSTREAM is rewritten from the Hendrycks MATH repository (github.com/hendrycks/math,
MIT licence), modeling/math_equivalence_test.py: (answer, answer, is_equiv expected).
TRICKY is ours: correct-but-differently-written answers (and a few wrong ones) in the spirit of the
issue's "20 tricky cases", asserting what each mode says — string matching misgrades many correct
answers, which is why `default` (math-verify) is the accurate mode and `hendrycks` the
paper-comparable one.
"""

from __future__ import annotations

import pytest

from micota.grading import grade_batch
from micota.grading.hendrycks import is_equiv, strip_string

# modeling/math_equivalence_test.py (hendrycks/math), one row per test method.
HENDRYCKS_UPSTREAM: list[tuple[str, str, bool]] = [
    ("\\tfrac{1}{2} + \\frac1{72}", "\\\\frac{1}{2} + 2/3", False),  # test_fractions
    ("10, 4, -2", "4, 10, -2", False),  # test_order
    ("10, 4, 2", "4, 12, 2", False),  # test_order2
    ("\\tfrac{1}{2} +\\! \\frac1{72}", "\\\\dfrac{1}{2} +\\frac{1}{72}", True),  # test_dfrac
    ("10\\text{ units}", "10 ", True),  # test_units
    ("10\\text{ units}", "100 ", False),  # test_units2
    ("10", "\\$10", True),  # test_dollars
    ("\\left(x-2\\right)\\left(x+2\\right)", "(x-2)(x+2)", True),  # test_parentheses
    ("0.1, 4, 2", "4, .1, 2", False),  # test_decimals
    ("0.1", ".1", True),  # test_decimals2
    ("10\\%", "10", True),  # test_percentage
    ("10\\sqrt{3} + \\sqrt4", "10\\sqrt3 + \\sqrt{4}", True),  # test_sqrt
    ("\\frac34i", "\\frac{3}{4}i", True),  # test_frac
    ("\\tfrac83", "\\frac{8}{3}", True),  # test_tfrac
    ("5x - 7y + 11z + 4 = 0", "x + y - z + 2 = 0", False),  # test_expression
    ("1/2", "\\frac{1}{2}", True),  # test_half
]

# (reference, boxed answer, hendrycks says, default says, what it shows)
TRICKY: list[tuple[str, str, bool, bool, str]] = [
    ("\\{1,2\\}", "\\{2,1\\}", False, True, "set order"),
    ("2\\sqrt{2}", "\\sqrt8", False, True, "unsimplified radical"),
    ("x^2+2x+1", "(x+1)^2", False, True, "factored polynomial"),
    ("\\text{(C)}", "C", False, True, "multiple-choice letter"),
    ("\\frac{1}{4}", "0.25", False, True, "decimal for a fraction"),
    ("3", "3.0", False, True, "trailing .0"),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", False, True, "unrationalised denominator"),
    ("-\\frac{1}{2}", "\\frac{-1}{2}", False, True, "sign placement"),
    ("1000", "1{,}000", False, True, "thousands separator"),
    ("[2,5]", "x \\in [2, 5]", False, True, "membership prefix"),
    ("\\frac{\\pi}{2}", "\\pi/2", False, True, "slash with a symbol"),
    ("2,3", "3,2", False, True, "unordered list of solutions"),
    ("\\frac{1}{2}", "0.5", True, True, "the one decimal MATH special-cases"),
    ("\\frac{3}{4}", "3/4", True, True, "a/b rewritten"),
    ("\\frac{3}{4}", "\\dfrac34", True, True, "dfrac and \\frac34"),
    ("10", "10\\%", True, True, "percent sign dropped"),
    ("5", "x = 5", True, True, "short x= prefix"),
    ("90", "90^\\circ", True, True, "degrees"),
    ("18", "\\$18", True, True, "dollar sign"),
    ("(1,2)", "(1, 2)", True, True, "spaces"),
    ("2", "2\\text{ cm}", True, True, "units after \\text{ "),
    ("2\\sqrt{3}", "2\\sqrt3", True, True, "\\sqrt3 brace fix"),
    ("y = 2x + 3", "2x+3", True, True, "short y= prefix"),
    ("\\pi", "3.14", False, False, "a rounded value is wrong in both"),
    ("7", "8", False, False, "wrong"),
    ("\\frac{1}{2}", "\\frac{1}{3}", False, False, "wrong"),
]


@pytest.mark.parametrize("a,b,expected", HENDRYCKS_UPSTREAM)
def test_is_equiv_matches_upstream_tests(a, b, expected):
    assert is_equiv(a, b) is expected


@pytest.mark.parametrize("raw,normal", [
    ("\\frac12", "\\frac{1}{2}"),
    ("\\frac1{72}", "\\frac{1}{72}"),
    ("0.5", "\\frac{1}{2}"),
    ("3/4", "\\frac{3}{4}"),
    ("\\sqrt2", "\\sqrt{2}"),
    ("k = 7", "7"),
    ("\\left( 1, 2 \\right)", "(1,2)"),
    (".5", "\\frac{1}{2}"),  # the leading 0 is added first, then 0.5 -> \frac{1}{2}
    (".25", "0.25"),
    ("5\\text{ inches}", "5"),
    ("x^{\\circ}", "x"),
])
def test_strip_string_steps(raw, normal):
    assert strip_string(raw) == normal


def test_unnormalisable_falls_back_to_raw_equality():
    two_units = "1\\text{ m}\\text{ s}"
    with pytest.raises(ValueError):
        strip_string(two_units)
    assert is_equiv(two_units, two_units) and not is_equiv(two_units, "1")


@pytest.fixture(scope="module")
def tricky_verdicts() -> dict[str, list[bool]]:
    pairs = [(f"So the answer is \\boxed{{{ans}}}.", ref) for ref, ans, *_ in TRICKY]
    return {mode: [r.correct for r in grade_batch(pairs, mode, timeout=20.0)] for mode in ("hendrycks", "default")}


@pytest.mark.parametrize("k", range(len(TRICKY)), ids=[f"{t[0]}|{t[1]}" for t in TRICKY])
def test_tricky_case_in_both_modes(tricky_verdicts, k):
    ref, ans, hendrycks, default, _ = TRICKY[k]
    assert tricky_verdicts["hendrycks"][k] is hendrycks
    assert tricky_verdicts["default"][k] is default


def test_string_match_misgrades_correct_answers(tricky_verdicts):
    correct = [k for k, t in enumerate(TRICKY) if t[3]]  # the answers that are in fact right
    missed = [TRICKY[k][:2] for k in correct if not tricky_verdicts["hendrycks"][k]]
    assert len(correct) == 23 and len(missed) == 12
    assert all(tricky_verdicts["default"][k] for k in correct)
