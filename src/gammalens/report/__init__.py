"""The self-contained HTML report of one or several runs: decay profiles, γ per head, sinks, fit quality,
comparison and the atlas map — inline SVG, no network (docs/atlas.md).

>>> from gammalens.report import write_report
>>> write_report([Path("runs/minilm-20260101-000000-0123abcd")], Path("report.html"))   # doctest: +SKIP
"""

from gammalens.report.html import render_report, write_report

__all__ = ["render_report", "write_report"]
