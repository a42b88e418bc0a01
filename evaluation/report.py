"""The reproduction report of one evaluation set: our set values beside the papers' values, in the layout of the
paper's table (one section per matching table, its metric columns as rows), with the difference ``ours - paper``."""

from __future__ import annotations

import math
from typing import Any

from evaluation.paper import PaperRow

__all__ = ["build_report", "report_markdown"]


def _decimals(value: float | None) -> int:
    """The decimals the paper prints: 4 below 10 (``0.6920``, ``4.8676``), else 2 to 4 (``21.70``, ``111.42``,
    ``67.3318``)."""
    if value is None or not math.isfinite(value) or abs(value) < 10:
        return 4
    return max(2, len(f"{value:.4f}".rstrip("0").split(".")[1]))


def _num(value: float | None, decimals: int | None = None, sign: str = "") -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    decimals = decimals if decimals is not None else (2 if abs(value) >= 10 else 4)
    return f"{value:{sign}.{decimals}f}"


def build_report(summary: dict[str, Any], rows: list[PaperRow], method: str | None,
                 paper_dataset: str | None = None) -> dict[str, Any]:
    """The report as a dict (written as ``report.json``).

    ``summary``: the evaluation callback's set summary (``dataset``, ``stage``, ``scale``, ``num_images``,
    ``metrics``, ``higher_is_better``, ``skipped``). ``rows``: the paper rows matched for this set."""
    ours: dict[str, float] = summary["metrics"]
    tables, compared = [], set()
    for row in rows:
        lines = []
        for cell in row.cells:
            for i, metric in enumerate((cell.metric, *cell.also)):
                if i > 0 and metric not in ours and metric not in summary["skipped"]:
                    continue  # another convention, not among this run's metrics
                value = ours.get(metric)
                diff = None if value is None or cell.value is None else value - cell.value
                lines.append({"column": cell.column, "metric": metric, "main": i == 0,
                              "higher_is_better": cell.higher_is_better, "ours": value, "paper": cell.value,
                              "diff": diff, "skipped": summary["skipped"].get(metric)})
                compared.add(metric)
        tables.append({"paper": row.paper, "title": row.title, "table": row.table, "caption": row.caption,
                       "method": row.method, "row": row.row, "dataset": row.dataset, "scale": row.scale,
                       "source": row.source, "note": row.note, "rows": lines})
    return {"dataset": summary["dataset"], "paper_dataset": paper_dataset or summary["dataset"],
            "stage": summary["stage"], "scale": summary["scale"], "num_images": summary["num_images"],
            "method": method, "tables": tables,
            "other_metrics": {k: v for k, v in ours.items() if k not in compared},
            "higher_is_better": summary.get("higher_is_better", {}), "skipped": dict(summary["skipped"])}


def report_markdown(report: dict[str, Any], methods: list[str] | None = None) -> str:
    """``report.md``: a heading, one table per paper table, our other metrics, the skipped ones."""
    name, scale = report["dataset"], report["scale"]
    alias = "" if report["paper_dataset"] == name else f" (compared as the papers' {report['paper_dataset']})"
    out = [f"# {name} x{scale}{alias}: ours vs {report['method'] or 'no paper method'}", "",
           f"Ours: `{report['stage']}` on {report['num_images']} images. Our values are the set means of "
           "`per_image.csv` (FID: one value over the set); diff = ours - paper; the arrow is the paper's."]
    if report["method"] is None:
        out += ["", "No paper method is set: give the evaluation callback `paper_method` ("
                + ", ".join(methods or []) + ") to compare with the papers' tables."]
    elif not report["tables"]:
        out += ["", f"The paper values hold no {report['method']} row for {report['paper_dataset']} at x{scale}."]
    for table in report["tables"]:
        out += ["", f"## {table['source']}", "", f"{table['title']}, Table {table['table']}: {table['caption']}.", "",
                "| metric | ours | paper | diff |", "| --- | ---: | ---: | ---: |"]
        for line in table["rows"]:
            arrow = "↑" if line["higher_is_better"] else "↓"
            label = (f"{line['column']} {arrow} (`{line['metric']}`)" if line["main"]
                     else f"&nbsp;&nbsp;as `{line['metric']}`")
            places = None if line["paper"] is None else _decimals(line["paper"])
            ours = _num(line["ours"], places) if line["skipped"] is None else "skipped"
            out.append(f"| {label} | {ours} | {_num(line['paper'], places)} | {_num(line['diff'], places, '+')} |")
        if table["note"]:
            out += ["", f"Note: {table['note']}"]
    if report["other_metrics"]:
        hib = report["higher_is_better"]
        out += ["", "## Our other metrics", "", "| metric | ours |", "| --- | ---: |"]
        out += [f"| `{k}` {'↑' if hib.get(k, True) else '↓'} | {_num(v)} |" for k, v in report["other_metrics"].items()]
    if report["skipped"]:
        out += ["", "## Skipped", ""] + [f"- `{k}`: {v}" for k, v in report["skipped"].items()]
    return "\n".join(out) + "\n"
