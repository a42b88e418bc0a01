"""The papers' table values (``paper_values.yaml``): which rows a run is compared with, and what each column means.

A run is compared with the rows of one method (``TUDSR-S``, ``StrSR-F``, ...; see the YAML header) on one data set
at one scale. Each matching table becomes one :class:`PaperRow`: its source (paper, table, row label, data set,
scale) and its cells, each mapped to our metric name and the paper's arrow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULT_PAPER_VALUES", "PaperCell", "PaperRow", "PaperValues"]

DEFAULT_PAPER_VALUES = Path(__file__).with_name("paper_values.yaml")


@dataclass(frozen=True)
class PaperCell:
    """One printed value: the column as printed, our metric for it (and further conventions to show beside)."""

    column: str
    metric: str
    higher_is_better: bool
    value: float | None
    also: tuple[str, ...] = ()


@dataclass(frozen=True)
class PaperRow:
    """One row of one table for one data set."""

    paper: str
    table: int
    caption: str
    method: str
    row: str
    dataset: str
    scale: int
    cells: tuple[PaperCell, ...]
    note: str | None = None
    title: str = ""

    @property
    def source(self) -> str:
        return f"{self.paper} Table {self.table}, row {self.row}, {self.dataset}, x{self.scale}"


@dataclass
class PaperValues:
    """The parsed file: :meth:`rows` selects, :attr:`methods` lists the method names."""

    papers: dict[str, dict[str, Any]]
    tables: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "PaperValues":
        return _load(str(Path(path or DEFAULT_PAPER_VALUES).resolve()))

    @property
    def methods(self) -> list[str]:
        return sorted({row["method"] for table in self.tables for row in table["rows"]})

    def all_rows(self) -> list[PaperRow]:
        out = []
        for table in self.tables:
            paper = self.papers[table["paper"]]
            for row in table["rows"]:
                if len(row["values"]) != len(table["columns"]):
                    raise ValueError(f"{table['paper']} Table {table['table']}, {row['dataset']}: "
                                     f"{len(row['values'])} values for {len(table['columns'])} columns")
                cells = []
                for column, value in zip(table["columns"], row["values"], strict=True):
                    spec = paper["columns"][column]
                    cells.append(PaperCell(column, spec["metric"], bool(spec["higher_is_better"]),
                                           None if value is None else float(value), tuple(spec.get("also", ()))))
                out.append(PaperRow(table["paper"], int(table["table"]), table["caption"], row["method"], row["row"],
                                    row["dataset"], int(table["scale"]), tuple(cells), row.get("note"),
                                    paper.get("title", "")))
        return out

    def rows(self, method: str, dataset: str, scale: int) -> list[PaperRow]:
        """The rows of ``method`` on ``dataset`` (case-insensitive) at ``scale``, in file order."""
        if method not in self.methods:
            raise ValueError(f"unknown paper method '{method}'; the paper values hold {self.methods}")
        key = dataset.lower()
        return [r for r in self.all_rows() if r.method == method and r.dataset.lower() == key and r.scale == scale]


@lru_cache(maxsize=4)
def _load(path: str) -> PaperValues:
    with open(path) as f:
        data = yaml.safe_load(f)
    return PaperValues(papers=data["papers"], tables=data["tables"])
