"""The benchmarks' pictures: each section of bench/RESULTS.md kept as a small JSON beside it
(bench/charts/<section>.json, written by ``results.write_section``) and drawn as an SVG chart
(bench/charts/<section>.svg, matplotlib: ``pip install '.[bench]'``) that docs/benchmarks.md shows.

    python bench/charts.py                  # draw every chart from its JSON
    python bench/charts.py --from-results   # first make the JSONs from RESULTS.md's tables as they are
    python bench/charts.py --from-results --section 'Gateway (locust)'   # only that section's JSON

Drawing needs no benchmark run: the figures are read from the JSONs, so a chart is redrawn in a
second and always shows the table next to it.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
CHARTS = HERE / "charts"
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class Chart:
    """What to draw of a section's table: which numeric columns, in what unit, which rows."""

    columns: tuple[str, ...]
    unit: str
    row_has: str = ""  # only rows whose cells contain this text (e.g. "entries/s")
    by_column: bool = False  # one bar per chosen cell, named by its column (one run's p50, p99, max)


SECTIONS = {
    "Hot path": Chart(("decisions/s",), "decisions per second (more is better)"),
    "Flusher": Chart(("value",), "ledger entries per second into PostgreSQL (more is better)", row_has="entries/s"),
    "Manager and plans": Chart(("decisions/s",), "decisions per second (more is better)"),
    "Redis-side cost of a debit": Chart(("server µs per call",), "Redis CPU µs per call (less is better)"),
    "Cluster": Chart(("single node decisions/s", "3-primary cluster decisions/s"),
                     "decisions per second (more is better)"),
    "Redis instructions per decision": Chart(("Redis instructions per decision",),
                                             "Redis instructions per decision, callgrind (less is better)"),
    "Client instructions per decision": Chart(("instructions per decision",),
                                              "client instructions per decision, callgrind (less is better)"),
    "Import time": Chart(("ms",), "milliseconds (less is better)"),
    "ducto 1.0's own test suite": Chart(("passed", "collected"), "tests of ducto 1.0's suite (passed of collected)"),
    "Embedded ledger (MemoryStore)": Chart(("charge/s (median round)",), "charges per second (more is better)"),
    "Decision service (locust)": Chart(("req/s (median)",), "requests per second, locust (more is better)"),
    "Gateway (locust)": Chart(("p50", "p99", "max"), "ms per request through CreditMiddleware, locust (less is better)",
                              by_column=True),
    "Input validation: the client's cost of building a call": Chart(
        ("this tree µs", "main µs"), "µs of client CPU to build a call, no I/O (less is better)"),
}


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def parse_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The first markdown table of ``text``: its header and its rows, as cell strings."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    if len(lines) < 2:
        return [], []

    def cells(line: str) -> list[str]:
        return [c.strip().strip("`") for c in line.strip().strip("|").split("|")]

    return cells(lines[0]), [cells(ln) for ln in lines[2:]]


def save(title: str, command: str, date: str, note: str, table: str) -> Path:
    """Keep a section's table as JSON next to RESULTS.md; draw its chart when matplotlib is there."""
    columns, rows = parse_table(table)
    CHARTS.mkdir(exist_ok=True)
    path = CHARTS / f"{slug(title)}.json"
    path.write_text(json.dumps({"title": title, "command": command, "date": date, "note": note,
                                "columns": columns, "rows": rows}, indent=1, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    try:
        draw(path)
    except ImportError:
        print(f"{path.name}: saved; `pip install '.[bench]'` and run `python bench/charts.py` to draw it")
    return path


def number(cell: str) -> float | None:
    m = NUMBER.search(cell)
    return float(m.group(0).replace(",", "")) if m else None


def series(data: dict[str, Any], chart: Chart) -> tuple[list[str], dict[str, list[float]]]:
    """Row labels and, per chosen column, the numbers to draw (rows without a number are left out);
    with ``by_column``, a label per cell (its column's name) and one series."""
    columns: list[str] = data["columns"]
    picked = [(c, columns.index(c)) for c in chart.columns if c in columns]
    rows = [row for row in data["rows"] if not chart.row_has or any(chart.row_has in cell for cell in row[1:])]
    labels: list[str] = []
    if chart.by_column:  # one series: a bar per (row, column) that has a number
        bars: list[float] = []
        for row in rows:
            for c, i in picked:
                if i < len(row) and (n := number(row[i])) is not None:
                    labels.append(c if len(rows) == 1 else f"{row[0]}: {c}")
                    bars.append(n)
        return labels, {chart.unit: bars}
    values: dict[str, list[float]] = {c: [] for c, _ in picked}
    for row in rows:
        nums = [number(row[i]) if i < len(row) else None for _, i in picked]
        if picked and all(n is not None for n in nums):
            labels.append(row[0])
            for (c, _), n in zip(picked, nums, strict=True):
                values[c].append(n or 0.0)
    return labels, values


def draw(path: Path) -> Path | None:
    """Draw the chart of one section's JSON as an SVG beside it (None: nothing to draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(path.read_text(encoding="utf-8"))
    chart = SECTIONS.get(data["title"])
    if chart is None:
        return None
    labels, values = series(data, chart)
    if not labels:
        return None
    plt.rcParams["svg.hashsalt"] = "ducto-redis"  # the same figures draw the same file
    plt.rcParams["svg.fonttype"] = "none"  # text stays text: small files, searchable labels
    height = 0.35 * len(labels) * max(1, len(values)) ** 0.5 + (2.0 if len(values) > 1 else 1.4)
    fig, ax = plt.subplots(figsize=(9, height))
    n, bar = len(values), 0.8 / len(values)
    for k, (column, nums) in enumerate(values.items()):
        ys = [i + (k - (n - 1) / 2) * bar for i in range(len(labels))]
        bars = ax.barh(ys, nums, height=bar, label=column if n > 1 else None)
        whole = all(v.is_integer() for v in nums)  # whole numbers (31 ms) stay whole
        ax.bar_label(bars, labels=[f"{v:,.0f}" if v >= 100 or whole else f"{v:,.2f}" for v in nums],
                     padding=3, fontsize=8)
    ax.set_yticks(range(len(labels)), labels=labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(chart.unit, fontsize=9)
    ax.set_title(f"{data['title']} — {data['date']}", fontsize=10, loc="left")
    ax.margins(x=0.15)
    ax.spines[["top", "right"]].set_visible(False)
    if n > 1:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=n, frameon=False)
    fig.text(0.01, 0.005, data["command"], fontsize=6, color="#666")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    out = path.with_suffix(".svg")
    fig.savefig(out, format="svg", metadata={"Date": None})
    plt.close(fig)
    return out


def from_results(only: str | None = None) -> list[Path]:
    """Make the JSON of every section of RESULTS.md (or of the section titled ``only``) from its
    text as it stands: the command(s) before the date, the note between the date and the table."""
    text = RESULTS.read_text(encoding="utf-8")
    made = []
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        title, _, body = part.partition("\n")
        if title not in SECTIONS or (only is not None and title != only):
            continue
        command, date, note = "", "", ""
        if m := re.search(r"Command: (.*?)(\d{4}-\d\d-\d\d \d\d:\d\d UTC)", body, re.S):
            command = " then ".join(re.findall(r"`([^`]+)`", m.group(1)))  # a server, then its load
            date = m.group(2)
            note = " ".join(body[m.end():].split("\n|", 1)[0].split()).lstrip(".,;— ")
        made.append(save(title, command, date, note, body))
    if only is not None and not made:
        raise SystemExit(f"no charted section {only!r} in {RESULTS.name} (charts.SECTIONS lists them)")
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from-results", action="store_true", help="make the JSONs from RESULTS.md's tables first")
    ap.add_argument("--section", metavar="TITLE",
                    help="with --from-results: only this section (e.g. 'Gateway (locust)')")
    args = ap.parse_args()
    if args.from_results:
        from_results(args.section)
    for path in sorted(CHARTS.glob("*.json")):
        out = draw(path)
        print(f"{path.name} -> {out.name if out else 'no chart'}")


if __name__ == "__main__":
    main()
