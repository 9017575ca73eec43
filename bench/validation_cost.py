"""What input validation costs the client: building a decision's call (no I/O) here vs another revision.

Every rule of ``ducto_redis/validation.py`` runs while ``StoreCore`` builds a call, before anything is
sent; this times that building alone, for a charge without metadata, with typical metadata (a model
and token counts) and with a dict of metadata, and for a batch of 100. With ``--compare REV`` it
checks REV out in a temporary worktree and times both trees in alternating subprocesses (a noisy
machine's load falls on both alike), then prints — and with ``--write`` records — the ratio.

    python bench/validation_cost.py --compare main --rounds 5 --seconds 1 --write
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def measure(seconds: float) -> dict[str, float]:
    """Calls built per second for each case, in this process (whatever ``ducto_redis`` it imports)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results import timed

    from ducto_redis import CreditMetadata
    from ducto_redis.batch import charge_calls
    from ducto_redis.core import StoreCore
    from ducto_redis.settings import Settings

    core = StoreCore(Settings(namespace="bench", shards=64))
    meta = CreditMetadata(model="gpt-4o", input_tokens=1200, output_tokens=350)
    meta_dict = {"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 350, "reference_id": "req-8812"}
    batch = [{"user_id": f"user-{i}", "amount": 3, "operation_type": "chat", "metadata": meta} for i in range(100)]
    kw: dict[str, Any] = {"operation_type": "chat", "idempotency_key": "req-8812"}
    cases: dict[str, Any] = {
        "charge, no metadata": lambda: core.debit("user-1", 12, **kw),
        "charge, CreditMetadata": lambda: core.debit("user-1", 12, **kw, metadata=meta),
        "charge, dict metadata": lambda: core.debit("user-1", 12, **kw, metadata=meta_dict),
        "charge_many x100 (per decision)": lambda: charge_calls(core, batch),
    }
    out = {name: timed(op, seconds) for name, op in cases.items()}
    out["charge_many x100 (per decision)"] *= 100
    return out


def _run(tree: Path, seconds: float) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, __file__, "--json", "--seconds", str(seconds)], env=env, cwd=tree,
                          check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout))


def compare(rev: str, rounds: int, seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    """Median calls/s per case for this tree and for ``rev`` (alternating subprocesses)."""
    with tempfile.TemporaryDirectory(prefix="ducto-bench-") as tmp:
        other = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(other), rev], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            here: dict[str, list[float]] = {}
            there: dict[str, list[float]] = {}
            for _ in range(rounds):
                for tree, acc in ((ROOT, here), (other, there)):
                    for name, rate in _run(tree, seconds).items():
                        acc.setdefault(name, []).append(rate)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=False,
                           capture_output=True)
    return ({k: statistics.median(v) for k, v in here.items()}, {k: statistics.median(v) for k, v in there.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", default=None, help="a git revision to time against (e.g. main)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--json", action="store_true", help="print this tree's figures as JSON (internal)")
    parser.add_argument("--write", action="store_true", help="record the table in bench/RESULTS.md")
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args.seconds)))
        return
    if not args.compare:
        for name, rate in measure(args.seconds).items():
            print(f"{name}: {rate:,.0f} calls built/s ({1e6 / rate:.1f} µs)")
        return
    here, there = compare(args.compare, args.rounds, args.seconds)
    rows = ["| call built (no I/O) | this tree µs | " + args.compare + " µs | this tree vs " + args.compare + " |",
            "|---|---:|---:|---:|"]
    for name in here:
        rows.append(f"| {name} | {1e6 / here[name]:.1f} | {1e6 / there[name]:.1f} | {here[name] / there[name]:.2f}× |")
    table = "\n".join(rows)
    print(table)
    if args.write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results import write_section

        write_section("Input validation: the client's cost of building a call",
                      f"python bench/validation_cost.py --compare {args.compare} --rounds {args.rounds} "
                      f"--seconds {args.seconds} --write",
                      f"Median of {args.rounds} alternating runs per tree; the ratio is calls built per second "
                      "(above 1.00× is faster). A charge round trip to Redis costs ~250 µs here (Hot path).",
                      table)


if __name__ == "__main__":
    main()
