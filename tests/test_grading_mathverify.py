"""`default` mode against the final-answer-equivalence cases of math-verify's public test suite.

Cases are rewritten from huggingface/Math-Verify (MIT licence, (c) 2024 The HuggingFace Team):
tests/test_all.py (functions named per table below) and tests/test_yujianll.py. Upstream compares
free text; here each upstream prediction is reduced to its final answer and put in a box, since
``default`` mode grades the last ``\\boxed{}`` only: (gold, boxed prediction, expected).
Upstream cases that test delimiter detection in free text ("Answer \\[ 9 \\]"), custom float
precision or long completions are represented by their final answers or left out.

Cases where our grader disagrees with upstream are NOT skipped: they live in KNOWN_DIFFERENCES,
which asserts our actual behaviour and says why.
"""

from __future__ import annotations

import math

import pytest

from micota.grading import grade_batch

# (gold, prediction inside \boxed{}, expected)
UPSTREAM: list[tuple[str, str, bool]] = [
    # test_all.py::test_number_extraction
    ("-5", "-5", True),
    ("7425000", "7,425,000", True),
    ("1000", "1000.0", True),
    ("1000.0", "1,000.0", True),
    ("0.4", ".4", True),
    ("1000.99", "1,000.99", True),
    ("1000.99", "\\$1,000.99", True),
    ("2", "AZYUK2A", False),
    # test_all.py::test_simple_fraction_notation
    ("10/9", "\\frac{10}{9}", True),
    ("-10/9", "-\\frac{10}{9}", True),
    # test_all.py::test_sets_handling
    ("$[0,1)$", "[0,1)", True),
    ("$[0,9)$", "[0,1)", False),
    ("$(0,9)$", "[0,9)", False),
    ("$1$", "-[0,1)", False),
    # test_all.py::test_latex_notation
    ("$10$", "(9+1)", True),
    ("$1/3$", "\\frac13", True),
    ("$1$", "\\frac3{3}", True),
    ("$\\sqrt{3}$", "\\sqrt3", True),
    ("$1/3$", "\\cfrac{1}{3}", True),
    ("$1/3$", "\\dfrac{1}{3}", True),
    ("$1/3$", "\\tfrac{1}{3}", True),
    ("$1/3$", "1/3", True),
    ("$1/3$", "\\left( \\frac{1}{3} \\right)", True),
    ("$1/3$", "\\frac{1}{3} \\text{meters}", True),
    ("$1/3$", "\\frac{1}{3} \\textbf{meters}", True),
    ("$1/3$", "k = \\frac{1}{3}", True),
    # test_all.py::test_percent_notation
    ("$28\\%$", "28 \\%", True),
    ("$28\\%$", "28", True),
    ("$0.28$", "28", False),
    ("$28/100$", "28", False),
    ("$28$", "28/100", False),
    ("$\\frac{28}{100}$", "28", False),
    ("$28*\\frac{1}{100}$", "28", False),
    # test_all.py::test_latex_notation_math (final answers of the MATH solutions)
    ("$2-2p$", "2-2p", True),
    ("$(3, \\frac{\\pi}{2})$", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("$\\frac{14}{3}$", "\\frac{14}{3}", True),
    ("$\\text{Evelyn}$", "\\text{Evelyn}", True),
    ("$90^\\circ$", "90^\\circ", True),
    ("$3\\sqrt{13}$", "3\\sqrt{13}", True),
    ("$\\frac{3}{56}$", "\\frac{3}{56}", True),
    ("$15\\mbox{ cm}^2$", "15\\mbox{ cm}^2", True),
    ("$-2,1$", "-2,1", True),
    ("$9$", "9", True),
    ("$204_5$", "204_5", True),
    ("$(6,31,-1)$", "(6,31,-1)", True),
    ("$1 \\pm \\sqrt{19}$", "1 \\pm \\sqrt{19}", True),
    ("$3 \\pm 2 \\sqrt{2}$", "3 \\pm 2 \\sqrt{2}", True),
    ("$\\{1\\pm\\sqrt{5},-2\\}$", "\\{1\\pm\\sqrt{5},-2\\}", True),
    ("$f(2) < f(1) < f(4)$", "f(2) < f(1) < f(4)", True),
    ("$2 \\sin b \\cos a$", "2 \\sin b \\cos a", True),
    ("$\\frac{\\pi r}{h+r}$", "\\frac{\\pi r}{h+r}", True),
    ("$125$ miles", "125\\textnormal{ miles}", True),
    ("$[-1, -\\frac{1}{2}) \\cup (-\\frac{1}{2}, 0) \\cup (0, 1) \\cup (1, \\infty)$",
     "[-1, -\\tfrac12) \\cup (-\\tfrac12, 0) \\cup (0, 1) \\cup (1, \\infty)", True),
    ("$\\sqrt{2}+\\sqrt{5}$", "\\sqrt 2+\\sqrt 5", True),
    ("$\\frac{9}{4}\\pi$", "\\frac94\\pi", True),
    ("$\\{-1\\} \\cup [0,7)$", "\\{-1\\} \\cup [0,7)", True),
    ("$\\begin{pmatrix} 0 & 3 \\\\ 0 & -1 \\end{pmatrix}$", "\n\\begin{pmatrix} 0 & 3 \\\\ 0 & -1 \\end{pmatrix}\n", True),
    # test_all.py::test_relations_math
    ("$x >= 5$", "x \\geq 5", True),
    ("$x < 3$", "x \\lt 3", True),
    ("$x \\leq 2$", "x <= 2", True),
    ("$x > 5$", "x \\gt 5", True),
    ("$x != 3$", "x \\neq 3", True),
    ("$x > 5$", "x < 5", False),
    ("$x \\geq 5$", "x \\leq 5", False),
    ("$x \\neq 5$", "x != 5", True),
    ("$x \\leq 5$", "5 \\geq x", True),
    ("$x \\geq 5$", "5 \\leq x", True),
    ("$x = 11$", "x = 5+5+1 = 7 =11", True),
    ("$7 = 11a+c$", "11a+c", False),
    ("$x = 1/3$", "x = 5+5+1 = 1/3 \\approx 11", True),
    ("$11$", "x=11", True),
    ("$11$", "x\\approx11", True),
    ("$1/3$", "x=1/3\\approx1.3", True),
    ("$x < 1$", "-x > -1", True),
    ("$x < 1$", "x > -1", False),
    ("$x <= 1$", "-x >= -1", True),
    ("$a +3z = 0$", "0", False),
    ("$1 = \\zzz = x = 0$", "0", True),
    ("$2x + z = 1$", "1", False),
    ("$a^2 + b = 0$", "0", False),
    ("$k=1$", "1", True),
    ("$1$", "k=1", True),
    ("$z = 1 + 1 = 2$", "z = 3+3 = 2", True),
    ("$2x+4y-3=0$", "y=-\\frac{1}{2}x+\\frac{3}{4}", True),
    ("$x^2/4 + y^2/3 = 1$", "x^2/16 + y^2/12 = 1/4", True),
    # test_all.py::test_matrix_extraction
    ("$\\begin{pmatrix}1 & 0 \\\\ 0 & 1\\end{pmatrix}$", "\\begin{pmatrix}1 & 0 \\\\ 0 & 1\\end{pmatrix}", True),
    ("$\\begin{bmatrix}0 & 0 \\\\0 & 0\\end{bmatrix}$", "\\begin{pmatrix}0 & 0 \\\\0 & 0\\end{pmatrix}", True),
    ("$\\begin{pmatrix}1 & 2 \\\\3 & 4\\end{pmatrix}$", "\\left[\\begin{array}{cc}1 & 2 \\\\3 & 4\\end{array}\\right]", True),
    ("$\\begin{pmatrix}\\frac{1}{2} & \\frac{3}{4} \\\\ \\frac{5}{6} & \\frac{7}{8}\\end{pmatrix}$",
     "\\begin{pmatrix}\\frac{1}{2} & \\frac{3}{4} \\\\ \\frac{5}{6} & \\frac{7}{8}\\end{pmatrix}", True),
    ("$\\begin{pmatrix}6 & 8 \\\\ 10 & 12\\end{pmatrix}$",
     "\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix} + \\begin{pmatrix}5 & 6 \\\\ 7 & 8\\end{pmatrix}", True),
    ("$\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}$", "\\begin{pmatrix}1 & 2 \\\\ 3 & 5\\end{pmatrix}", False),
    # test_all.py::test_complex_math_expressions (the cases at the default precision)
    ("$\\frac{1}{12}$", "0.0833333333333333", True),
    ("$(1,\\frac{9}{2})$", "(1,4.5)", True),
    ("$\\frac{x+2}{7}$", "\\frac{x}{7}+\\frac{2}{7}", True),
    ("$\\tan^2(y)+1$", "\\sec^2(y)", True),
    ("$34x+45y-20z+100=0$", "-34x-45y+20z-100=0", True),
    ("$\\frac{\\sqrt{\\sqrt{11}+\\sqrt{194}}}{15+2\\sqrt{33}}$", "\\frac{\\sqrt{\\sqrt{11}+\\sqrt{194}}}{2\\sqrt{33}+15}", True),
    ("$(a+5)(b+2)$", "(+5)(b+2)", False),
    ("$2$", "\\frac{1+\\sqrt{5}}{2}", False),
    ("$4$", "\\frac{34}{16}+\\frac{\\sqrt{1358}}{16}", False),
    ("$1\\sqrt{19}$", "1", False),
    ("$x+2n+1$", "x+1", False),
    # test_all.py::test_math_extraction_edge_cases / _additional_cases (their final answers)
    ("$16386.20$", "\\$16,\\!386.20", True),
    ("$16386.17$", "\\$16386.17", True),
    ("$14916$", "14{,}916", True),
    ("$\\left(\\frac{1}{5},\\frac{1}{6}\\right)$", "\\left( \\frac{1}{5}, \\frac{1}{6} \\right)", True),
    ("$\\left( \\frac{4}{3}, -\\frac{1}{3} \\right)$", "\\left( \\frac{4}{3}, -\\frac{1}{3} \\right)", True),
    ("$(\\tfrac{27}{8},\\tfrac{15}{8})$", "(0, 0)", False),
    ("$[-3,2]$", "(-\\infty, -3] \\cup [2, \\infty)", False),
    ("$(3,1)$", "{1,3}", False),
    ("$(1,3)$", "{1,3}", True),
    ("$20\\%$", "20\\%", True),
    ("$x-2y+z-1=0$", "x-2y+z-1=0", True),
    ("$[-4,0]$", "[-4, 0]", True),
    ("$(-6, 10)$", "(-6, 10)", True),
    ("$1112112_3$", "1112122_3", False),
    ("$\\text{C}$", "\\text{(C)}", True),
    ("$11111111100$", "11,\\! 111,\\! 111,\\! 100", True),
    ("$32349$", "32,\\! 349", True),
    ("$32349$", "32, 349", False),
    ("$(2, 12) \\cup (12, 102)$", "(2,12) \\cup (12,102)", True),
    ("$\\text{E}$", "E", True),
    ("$1,-2$", "1,-2", True),
    # test_all.py::test_set_rel_assymetry (prediction is a set: compared as a set either way)
    ("$-2 \\le x \\le 7$", "x \\in [-2,7]", True),
    # test_all.py::test_float_precision / test_sqrt_precision
    (f"{math.sqrt(17):.15f}", "\\sqrt{17}", True),
    ("$4$", "4\\sqrt{2}", False),
    # test_all.py::test_trailing_punctuation
    ("$\\frac{1}{3}$", "\\frac{1}{3}.", True),
    ("$\\frac{1}{3}$", "\\frac{1}{3},", True),
    ("$\\sqrt{2}$", "\\sqrt{2}.", True),
    ("$(1,2)$", "(1,2).", True),
    ("$5$", "5 \\text{ cm}.", True),
    ("$42$", "42.", True),
    ("$2$", "2^{10}.", False),
    ("$1, 2, 3$", "1, 2, 3, ...", False),
    # test_yujianll.py::test_string_extraction
    ("$n=1, 2, 3$", "n=1, 2, 3", True),
    ("$n=2, 3, 4$", "n=1, 2, 3", False),
    ("$D = (0, 1)$", "D = (0, 1)", True),
    ("$D = (0, 1)$", "D = (0, 1.5)", False),
    ("$F_n = \\sum_{k=0}^{n-1} F_k F_{n-k-1}$", "F_n = \\sum_{k=0}^{n-2} F_k F_{n-k-2}", False),
    # test_string_extraction (the cases below; its reversed 1 +- 1/e case is in KNOWN_DIFFERENCES)
    ("$F_n = \\sum_{k=0}^{n-1} F_k F_{n-k-1}$", "F_n = \\sum_{k=0}^{n-1} F_{n-k-1} F_k", True),
    ("$19, 46, and 82$", "19, 46, \\text{ and } 82", True),
    ("$19, 46, and 82$", "21, 36, and 82", False),
    ("$1 - \\frac{1}{\\mathrm{e}}$", "1 - \\frac{1}{\\mathrm{e}}", True),
    ("$\\pm 2021$", "2021", False),
    ("$\\pm 2021$", "{-2021, 2021}", True),
    ("$12:00$", "1:00", False),
    ("$12:00$", "12:00", True),
]

# Upstream cases where `default` mode (math-verify 0.9 on the boxed answer) says otherwise.
# (gold, boxed prediction, upstream expected, what we say, why)
_UNICODE_UNIT = ("upstream reads these from free text with its plain-number extractor (test_number_extraction, "
                 "expr mode); inside \\boxed{} math-verify 0.9 parses LaTeX, which does not drop a "
                 "non-LaTeX unit symbol, so the box does not parse to 1000.99")
KNOWN_DIFFERENCES: list[tuple[str, str, bool, bool, str]] = [
    # test_all.py::test_number_extraction
    ("1000.99", "1,000.99€", True, False, _UNICODE_UNIT),
    ("1000.99", "1,000.99m²", True, False, _UNICODE_UNIT),
    # test_string_extraction lists ("$1 - \\frac{1}{\\mathrm{e}}$", "$1 + \\frac{1}{\\mathrm{e}}$", 1):
    # a reversed expectation upstream (1 - 1/e != 1 + 1/e); we assert the mathematically right verdict
    ("$1 - \\frac{1}{\\mathrm{e}}$", "1 + \\frac{1}{\\mathrm{e}}", True, False,
     "upstream's expectation is reversed: 1 - 1/e and 1 + 1/e differ"),
]


def _completion(pred: str) -> str:
    return f"Some reasoning first. The final answer is $\\boxed{{{pred}}}$."


@pytest.fixture(scope="module")
def verdicts() -> dict[tuple[str, str], bool]:
    cases = [(g, p) for g, p, _ in UPSTREAM] + [(g, p) for g, p, *_ in KNOWN_DIFFERENCES]
    results = grade_batch([(_completion(p), g) for g, p in cases], "default", timeout=20.0)
    assert not [r for r in results if r.reason == "timeout"]
    return {case: r.correct for case, r in zip(cases, results)}


def test_table_is_large_and_balanced():
    assert len(UPSTREAM) + len(KNOWN_DIFFERENCES) >= 60
    assert sum(e for _, _, e in UPSTREAM) > 20 and sum(not e for _, _, e in UPSTREAM) > 20


@pytest.mark.parametrize("gold,pred,expected", UPSTREAM)
def test_upstream_case(verdicts, gold, pred, expected):
    assert verdicts[(gold, pred)] is expected


@pytest.mark.parametrize("gold,pred,upstream,ours,why", KNOWN_DIFFERENCES)
def test_known_difference(verdicts, gold, pred, upstream, ours, why):
    assert ours is not upstream and why
    assert verdicts[(gold, pred)] is ours
