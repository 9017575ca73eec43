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


def test_every_section_of_the_results_has_its_chart_drawn_from_its_table_and_shown_in_the_docs() -> None:
    docs = (BENCH.parent / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    text = charts.RESULTS.read_text(encoding="utf-8")
    sections = [part.partition("\n") for part in text.split("\n## ")[1:]]
    assert "Gateway (locust)" in {title for title, _, _ in sections}
    for title, _, body in sections:
        assert title in charts.SECTIONS, f"{title}: no chart in charts.SECTIONS"
        path = charts.CHARTS / f"{charts.slug(title)}.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        assert (data["columns"], data["rows"]) == charts.parse_table(body), f"{path.name} is not {title}'s table"
        assert charts.series(data, charts.SECTIONS[title])[0], f"{title}: nothing to draw"
        assert path.with_suffix(".svg").exists() and f"(../bench/charts/{path.stem}.svg)" in docs, title


def test_one_runs_latencies_are_drawn_a_bar_each_named_by_their_column() -> None:
    data = json.loads((BENCH / "charts" / "gateway-locust.json").read_text(encoding="utf-8"))
    unit = charts.SECTIONS["Gateway (locust)"].unit
    assert charts.series(data, charts.SECTIONS["Gateway (locust)"]) == (["p50", "p99", "max"],
                                                                        {unit: [31.0, 87.0, 140.0]})
    two = {"columns": ["run", "p50", "p99"], "rows": [["a", "1 ms", "2 ms"], ["b", "3 ms", "-"]]}
    by_column = charts.Chart(("p50", "p99"), "ms", by_column=True)
    assert charts.series(two, by_column) == (["a: p50", "a: p99", "b: p50"], {"ms": [1.0, 2.0, 3.0]})


def test_a_section_written_by_hand_gets_its_json_with_both_commands_and_its_note(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(charts, "RESULTS", tmp_path / "RESULTS.md")
    monkeypatch.setattr(charts, "CHARTS", tmp_path / "charts")
    (tmp_path / "RESULTS.md").write_text(
        "# Benchmark results\n\n## Cluster\n\nCommand: `python bench/cluster.py` — 2026-01-01 00:00 UTC.\n\n"
        "| load | single node decisions/s | 3-primary cluster decisions/s |\n|---|---:|---:|\n| charge | 10 | 9 |\n\n"
        "## Gateway (locust)\n\nCommand: `uvicorn app:app` then\n`locust -f l.py` — 2026-11-23 19:02 UTC, 60 s;\n"
        "32 users.\n\n| requests | p50 | p99 | max |\n|---|---:|---:|---:|\n| 100 | 31 ms | 87 ms | 140 ms |\n\n"
        "Prose after the table.\n", encoding="utf-8")
    made = charts.from_results("Gateway (locust)")
    assert [p.name for p in made] == ["gateway-locust.json"]
    assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == ["gateway-locust.json", "gateway-locust.svg"]
    data = json.loads(made[0].read_text(encoding="utf-8"))
    assert (data["command"], data["date"], data["note"]) == (
        "uvicorn app:app then locust -f l.py", "2026-11-23 19:02 UTC", "60 s; 32 users.")
    assert data["rows"] == [["100", "31 ms", "87 ms", "140 ms"]]
    with pytest.raises(SystemExit, match="no charted section"):
        charts.from_results("Gateway")
