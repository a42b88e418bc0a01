"""The papers' table values: complete for the TUDSR-S and StrSR-F/Z rows, internally consistent (the tables that
repeat a row agree cell by cell), arrows that match our metrics, and the report built from them."""

from __future__ import annotations

import pytest

from evaluation import FID, METRICS, NIQE, DISTSMetric, LPIPSMetric
from evaluation.paper import PaperValues
from evaluation.report import build_report, report_markdown

# our metrics whose class says lower is better; every other metric is higher-is-better
LOWER = {"fid": FID, "niqe": NIQE, "dists": DISTSMetric, "lpips_alex": LPIPSMetric, "lpips_vgg": LPIPSMetric}


def _values(paper: PaperValues, method: str, dataset: str, scale: int, table: int) -> dict[str, float | None]:
    (row,) = [r for r in paper.rows(method, dataset, scale) if r.table == table]
    return {cell.metric: cell.value for cell in row.cells}


def test_every_column_maps_to_one_of_our_metrics_with_the_papers_arrow() -> None:
    paper = PaperValues.load()
    for name, spec in paper.papers.items():
        for column, entry in spec["columns"].items():
            for metric in (entry["metric"], *entry.get("also", ())):
                assert metric in METRICS, f"{name} {column}: {metric}"
            lower = entry["metric"] in LOWER and not LOWER[entry["metric"]].higher_is_better
            assert entry["higher_is_better"] == (not lower), f"{name} {column}"
    assert len(paper.all_rows()) == 4 + 3 + 12 + 9 + 2 + 2 + 2


def test_the_rows_cover_every_data_set_of_the_tables() -> None:
    paper = PaperValues.load()
    for dataset in ("RealSR", "DRealSR", "RealLQ250", "RealLR200"):
        assert [r.table for r in paper.rows("TUDSR-S", dataset, 4)] == [1, 4]
        assert [r.table for r in paper.rows("TUDSR-S M4", dataset, 4)] == [4]
    for dataset in ("RealSR", "DRealSR", "RealLQ250"):
        assert [r.table for r in paper.rows("TUDSR-S", dataset, 8)] == [2, 5]
    assert paper.rows("TUDSR-S", "RealLR200", 8) == []  # out of memory in the paper
    for method in ("StrSR-F", "StrSR-Z"):
        assert [(r.table, r.dataset) for r in paper.rows(method, "div2k-val", 4)] == [(1, "DIV2K-val")]
        assert [r.table for r in paper.rows(method, "RealSR", 4) + paper.rows(method, "RealLQ250", 4)] == [2, 3]
    with pytest.raises(ValueError, match="unknown paper method"):
        paper.rows("TUDSR", "RealSR", 4)


def test_repeated_rows_agree_between_tables() -> None:
    """TUDSR Table 1's TUDSR-S is Table 4's M2N2; Table 2's is Table 5's M4N2 (same model, same sets)."""
    paper = PaperValues.load()
    for dataset in ("RealSR", "DRealSR", "RealLQ250", "RealLR200"):
        main, ablation = _values(paper, "TUDSR-S", dataset, 4, 1), _values(paper, "TUDSR-S", dataset, 4, 4)
        shared = [m for m in ablation if main.get(m) is not None]
        assert len(shared) >= 6 and all(main[m] == ablation[m] for m in shared), dataset
    for dataset in ("RealSR", "DRealSR", "RealLQ250"):
        assert _values(paper, "TUDSR-S", dataset, 8, 2) == _values(paper, "TUDSR-S", dataset, 8, 5), dataset
    strsr = _values(paper, "StrSR-F", "RealSR", 4, 2)  # spot checks against the printed tables
    assert (strsr["lpips_alex"], strsr["dists"], strsr["niqe"], strsr["maniqa"], strsr["musiq"]) == \
        (0.2599, 0.1665, 3.8090, 0.6333, 67.3318)
    assert _values(paper, "TUDSR-S", "RealSR", 4, 1)["fid"] == 111.42


def test_report_rows_follow_the_table_and_compute_the_difference() -> None:
    paper = PaperValues.load()
    rows = paper.rows("TUDSR-S", "RealSR", 8)
    summary = {"dataset": "RealSR", "stage": "test", "scale": 8, "num_images": 100,
               "metrics": {"musiq": 60.0, "clipiqa": 0.7, "psnr_rgb": 20.0},
               "higher_is_better": {"musiq": True, "clipiqa": True, "psnr_rgb": True},
               "skipped": {"niqe": "missing niqe_modelparameters.mat"}}
    report = build_report(summary, rows, "TUDSR-S")
    assert [t["table"] for t in report["tables"]] == [2, 5]
    musiq = next(r for r in report["tables"][0]["rows"] if r["metric"] == "musiq")
    assert musiq["paper"] == 67.2225 and musiq["diff"] == pytest.approx(60.0 - 67.2225)
    assert report["other_metrics"] == {"psnr_rgb": 20.0}
    md = report_markdown(report)
    assert "| MUSIQ ↑ (`musiq`) | 60.0000 | 67.2225 | -7.2225 |" in md
    assert "| NIQE ↓ (`niqe`) | skipped | 4.6839 | - |" in md
    assert "| C-IQA ↑ (`clipiqa`) | 0.7000 | 0.6920 | +0.0080 |" in md
