"""What `import ducto_redis` costs, and what the embedded store adds when it is first used.

    python bench/import_time.py [--runs 15]

Each figure is the median wall time of a fresh interpreter running the statement, minus that of an
interpreter running `pass` (runs interleaved, so the machine's load hits all alike). fakeredis and
lupa are imported only when a MemoryStore is built, so a gateway or worker on a real Redis never
pays for them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

STATEMENTS = {
    "pass": "pass",
    "import ducto_redis": "import ducto_redis",
    "import ducto_redis; MemoryStore()": "import ducto_redis; ducto_redis.MemoryStore()",
}


def wall(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    times: dict[str, list[float]] = {name: [] for name in STATEMENTS}
    for _ in range(runs):
        for name, code in STATEMENTS.items():
            times[name].append(wall(code))
    base = statistics.median(times["pass"])
    print(f"| statement ({runs} interleaved runs, median, minus a bare interpreter) | ms |")
    print("|---|---:|")
    for name in list(STATEMENTS)[1:]:
        print(f"| `{name}` | {1000 * (statistics.median(times[name]) - base):.0f} |")


if __name__ == "__main__":
    main()
