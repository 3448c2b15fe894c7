"""Answer extraction edge cases and the three modes on the references as the data gives them."""

from __future__ import annotations

import pytest

from micota.errors import UserError
from micota.grading import GRADERS, grade, grade_batch, is_correct, last_boxed, last_number
from micota.grading.modes import gold_latex

# (text, last boxed content or None)
BOXED: list[tuple[str, str | None]] = [
    ("no box at all, the answer is 5", None),
    ("empty \\boxed{} here", ""),
    ("blank \\boxed{   }", ""),
    ("first \\boxed{3}, then corrected: \\boxed{4}", "4"),
    ("\\fbox{7}", "7"),
    ("\\boxed{3} and finally \\fbox{8}", "8"),
    ("half: \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("deep \\boxed{\\sqrt{\\frac{a^{2}}{b_{1}}}} end", "\\sqrt{\\frac{a^{2}}{b_{1}}}"),
    ("set \\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    ("unbalanced escaped \\boxed{\\{1,2}", "\\{1,2"),
    ("matrix \\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("brace-less $\\boxed 5$.", "5"),
    ("brace-less at the end \\boxed 12", "12"),
    ("spaced \\boxed {9}", "9"),
    ("cut off mid-box: \\boxed{3} then \\boxed{\\frac{1}{", None),
    ("\\boxedfoo{1} is not a box", None),
]


@pytest.mark.parametrize("text,expected", BOXED)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("The answer is 2,125 dollars.", "2125"),
    ("costs $18.50 in total", "18.50"),
    ("1, 2, 3", "3"),
    ("temperature -7 degrees", "-7"),
    ("it is 12{,}000 or 12,\\!000", "12000"),
    ("no digits", None),
])
def test_last_number(text, expected):
    assert last_number(text) == expected


@pytest.mark.parametrize("ref,latex", [("025", "$25$"), ("27.0", "$27$"), ("-1", "$-1$"), ("0", "$0$"),
                                       ("$69$,$84$", "$69$,$84$"), ("\\frac{1}{2}", "$\\frac{1}{2}$"),
                                       ("2,125", "$2,125$")])
def test_gold_latex(ref, latex):
    assert gold_latex(ref) == latex


# (completion, reference, mode, correct, reason, extracted)
CASES = [
    # the data's own reference formats (SOURCES.md)
    ("so \\boxed{25}", "025", "default", True, "match", "25"),  # AIME leading zero
    ("so \\boxed{025}", "025", "default", True, "match", "025"),
    ("so \\boxed{26}", "025", "default", False, "mismatch", "26"),
    ("so \\boxed{27}", "27", "default", True, "match", "27"),  # AMC
    ("so \\boxed{27.0}", "27", "default", True, "match", "27.0"),
    ("so \\boxed{-1}", "-1", "default", True, "match", "-1"),
    ("so \\boxed{69, 84}", "$69$,$84$", "default", True, "match", "69, 84"),  # OlympiadBench
    ("so \\boxed{84,69}", "$69$,$84$", "default", True, "match", "84,69"),
    ("so \\boxed{69}", "$69$,$84$", "default", False, "mismatch", "69"),
    ("so \\boxed{(2,7,13), (1,8,19)}", "$(1,8,19), (2,7,13)$", "default", True, "match", "(2,7,13), (1,8,19)"),
    ("so \\boxed{2125}", "2,125", "gsm8k", True, "match", "2125"),  # GSM8K separators
    ("so \\boxed{\\$2,125.00}", "2,125", "gsm8k", True, "match", "\\$2,125.00"),
    # edge cases: no box, empty box, earlier box, \fbox, nested braces
    ("the answer is 5", "5", "default", False, "no_answer", None),
    ("the answer is \\boxed{}", "5", "default", False, "empty_box", ""),
    ("I first thought \\boxed{5} but it is \\boxed{6}", "5", "default", False, "mismatch", "6"),
    ("I first thought \\boxed{6} but it is \\boxed{5}", "5", "default", True, "match", "5"),
    ("\\fbox{5}", "5", "default", True, "match", "5"),
    ("\\boxed{\\frac{1}{2}}", "0.5", "default", True, "match", "\\frac{1}{2}"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "hendrycks", True, "match", "\\frac{1}{2}"),
    ("no box", "5", "hendrycks", False, "no_answer", None),
    ("\\boxed{}", "5", "hendrycks", False, "empty_box", ""),
    ("cut off \\boxed{5} and then \\boxed{\\frac{1}{", "5", "default", False, "no_answer", None),
    # gsm8k: last number when there is no box; the box wins when there is one
    ("She pays 3 + 4 = 7 dollars. Answer: 7", "7", "gsm8k", True, "match", "7"),
    ("The total is $1,234.", "1234", "gsm8k", True, "match", "1234"),
    ("We get 7, then \\boxed{8}, then 7", "7", "gsm8k", False, "mismatch", "8"),
    ("\\boxed{18 \\text{ dollars}}", "18", "gsm8k", True, "match", "18 \\text{ dollars}"),
    ("no numbers here", "18", "gsm8k", False, "no_answer", None),
    ("\\boxed{}", "18", "gsm8k", False, "empty_box", ""),
    ("\\boxed{x}", "18", "gsm8k", False, "mismatch", "x"),
    # gsm8k compares the WHOLE box (issue 11): the last number inside it is not the answer
    ("\\boxed{\\frac{1}{4}}", "4", "gsm8k", False, "mismatch", "\\frac{1}{4}"),
    ("\\boxed{2^{10}}", "10", "gsm8k", False, "mismatch", "2^{10}"),
    ("\\boxed{3 + 4 = 7}", "7", "gsm8k", False, "mismatch", "3 + 4 = 7"),
    ("\\boxed{\\frac{1}{4}}", "0.25", "gsm8k", True, "match", "\\frac{1}{4}"),
    ("\\boxed{-\\dfrac{3}{2}}", "-1.5", "gsm8k", True, "match", "-\\dfrac{3}{2}"),
    ("\\boxed{1/4}", "0.25", "gsm8k", True, "match", "1/4"),
    ("\\boxed{25\\%}", "25", "gsm8k", True, "match", "25\\%"),
    ("\\boxed{18.}", "18", "gsm8k", True, "match", "18."),
    ("\\boxed{1{,}000}", "1000", "gsm8k", True, "match", "1{,}000"),
    # grader failures are reason "error" (counted by eval), not a silent "wrong"
    ("\\boxed{5}", "no number", "gsm8k", False, "error", None),
    ("\\boxed{5}", "", "default", False, "error", "5"),
]


@pytest.fixture(scope="module")
def case_results():
    out = []
    for mode in GRADERS:
        idx = [k for k, c in enumerate(CASES) if c[2] == mode]
        out += list(zip(idx, grade_batch([(CASES[k][0], CASES[k][1]) for k in idx], mode)))
    return dict(out)


@pytest.mark.parametrize("k", range(len(CASES)), ids=[f"{c[2]}:{c[0][-24:]}|{c[1]}" for c in CASES])
def test_grade_case(case_results, k):
    _, _, _, correct, reason, extracted = CASES[k]
    r = case_results[k]
    assert (r.correct, r.reason, r.extracted) == (correct, reason, extracted)


def test_is_correct_and_grade_agree():
    assert is_correct("\\boxed{2\\sqrt{2}}", "\\sqrt{8}") is True
    assert is_correct("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", mode="hendrycks") is False
    r = grade("\\boxed{3}", "4")
    assert (r.correct, r.extracted, r.reason) == (False, "3", "mismatch")


def test_unknown_mode_is_a_user_error():
    with pytest.raises(UserError, match="unknown grading mode 'nope'.*default, gsm8k, hendrycks"):
        grade("\\boxed{1}", "1", mode="nope")
