"""Reports: Markdown tables, plots and the paper's claim verdicts from stage outputs.

:func:`build_report` (:class:`ReportConfig`) is the ``report`` pipeline stage; see
:mod:`micota.report.build` for inputs and the traceability contract, :mod:`micota.report.claims`
for the verdict rules.
"""

from micota.report.build import ReportConfig, build_report, build_results, load_graded

__all__ = ["ReportConfig", "build_report", "build_results", "load_graded"]
