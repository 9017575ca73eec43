"""The benchmarks' pictures: a section written to RESULTS.md keeps its figures as JSON and gets a chart."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import charts  # noqa: E402
import results  # noqa: E402

pytest.importorskip("matplotlib")


def test_a_written_section_keeps_its_figures_as_json_and_draws_its_chart(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "PATH", tmp_path / "RESULTS.md")
    monkeypatch.setattr(charts, "CHARTS", tmp_path / "charts")
    table = ("| load | single node decisions/s | 3-primary cluster decisions/s | cluster / single |\n"
             "|---|---:|---:|---:|\n| charge, 2 processes | 4,879 | 4,324 | 0.89× |\n")
    results.write_section("Cluster", "python bench/cluster.py --write", "a note", table)
    assert "| charge, 2 processes | 4,879 |" in (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    data = json.loads((tmp_path / "charts" / "cluster.json").read_text(encoding="utf-8"))
    assert data["rows"] == [["charge, 2 processes", "4,879", "4,324", "0.89×"]]
    assert data["command"] == "python bench/cluster.py --write"
    svg = (tmp_path / "charts" / "cluster.svg").read_text(encoding="utf-8")
    assert svg.startswith("<?xml") and "<svg" in svg
    assert charts.series(data, charts.SECTIONS["Cluster"]) == (
        ["charge, 2 processes"],
        {"single node decisions/s": [4879.0], "3-primary cluster decisions/s": [4324.0]})


def test_every_chart_the_docs_show_is_drawn_from_the_figures_beside_it() -> None:
    docs = (BENCH.parent / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    shown = [line.split("(../bench/charts/")[1].rstrip(")") for line in docs.splitlines()
             if "(../bench/charts/" in line]
    assert len(shown) >= 5
    for name in shown:
        assert (BENCH / "charts" / name).exists() and (BENCH / "charts" / name).with_suffix(".json").exists()


def test_flusher_rows_are_picked_by_their_unit() -> None:
    data = {"columns": ["measure", "value"], "rows": [["drain", "77,015 entries/s"], ["lag p99", "395 ms"]]}
    assert charts.series(data, charts.SECTIONS["Flusher"]) == (["drain"], {"value": [77015.0]})
