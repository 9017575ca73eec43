"""Instructions Redis executes per store call, counted by callgrind: repeatable on a noisy machine.

Timings on this 2-core machine swing by 2x from run to run; instruction counts do not. Each case
starts a private ``redis-server`` under ``valgrind --tool=callgrind``, makes ``--calls`` calls (after
the same setup) and again ``--calls`` + 1000, and reports the difference / 1000: what one call
costs Redis, network handling included, startup and setup excluded.

Cases: ``charge`` (a user debit), ``team`` (``deduct_team`` with a member cap), ``add`` (``add_credits``).
``--code PATH`` measures another checkout of ducto-redis (e.g. a ``git worktree`` of an older
commit), so two versions compare in one run.

Usage::

    python bench/instructions.py [--calls 200] [--code PATH] [--write] [charge team add]

Needs ``valgrind`` and ``redis-server`` on PATH. Nothing here is asserted by a test.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import write_section

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = """
import sys
sys.path.insert(0, {code!r})
from ducto_redis import RedisStore
s = RedisStore.from_url('redis://127.0.0.1:{port}/0', namespace='cg')
s.setup()
for i in range(20):
    s.add_credits(f'u{{i}}', 10**12)
tid = s.create_team('T', initial_balance=10**12).team_id
for i in range(20):
    s.add_team_member(tid, f'u{{i}}', spend_cap=10**9)
for i in range({n}):
    if {case!r} == 'charge':
        s.charge(f'u{{i % 20}}', 1, 'x')
    elif {case!r} == 'team':
        s.deduct_team(tid, f'u{{i % 20}}', 1)
    else:
        s.add_credits(f'u{{i % 20}}', 1)
"""
CASES = {"charge": "RedisStore.charge", "team": "deduct_team (member cap)", "add": "add_credits"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def instructions(code: str, case: str, n: int) -> int:
    """Total instructions of a callgrind'ed redis-server that served the setup and ``n`` calls."""
    port, folder = free_port(), tempfile.mkdtemp(prefix="ducto-cg-")
    out = Path(folder) / "callgrind.out"
    server = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "redis-server",
                               "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                               "--dir", folder], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            ping = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True)
            if ping.stdout.strip() == "PONG":
                break
            time.sleep(0.1)
        subprocess.run([sys.executable, "-c", WORKLOAD.format(code=code, port=port, n=n, case=case)], check=True)
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
        server.wait(120)
    finally:
        if server.poll() is None:
            server.kill()
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", help=f"any of {', '.join(CASES)} (default: all)")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--code", default=str(ROOT), help="the ducto-redis checkout to measure")
    ap.add_argument("--write", action="store_true")
    opts = ap.parse_args()
    if unknown := set(opts.cases) - set(CASES):
        ap.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    if not (shutil.which("valgrind") and shutil.which("redis-server")):
        sys.exit("needs valgrind and redis-server on PATH")
    rows = ["| call | Redis instructions per call |", "|---|---:|"]
    for case in opts.cases or list(CASES):
        per_call = (instructions(opts.code, case, opts.calls + 1000) - instructions(opts.code, case, opts.calls)) / 1000
        rows.append(f"| {CASES[case]} | {per_call:,.0f} |")
        print(rows[-1], flush=True)
    if opts.write:
        write_section("Redis instructions per call", "python bench/instructions.py " + " ".join(sys.argv[1:]),
                      "callgrind on a private redis-server (deterministic: the machine's load does not change it).",
                      "\n".join(rows))


if __name__ == "__main__":
    main()
