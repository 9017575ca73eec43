"""Instructions Redis executes per decision, counted by callgrind: repeatable on a noisy machine.

Timings on this 2-core machine swing by 2x from run to run; instruction counts do not follow the
machine's load, though they differ a little from one server to the next (random ids, hash seeds,
where the Lua collector's cycles fall: up to ~2% at the default span), so compare medians
(``--repeat 3``) from one run. Each case starts a private ``redis-server`` under ``valgrind
--tool=callgrind``, makes ``--calls`` decisions (after the same setup) and again ``--calls`` +
``--span`` (1000), and reports the difference / span: what one decision costs Redis, network
handling included, startup and setup excluded. Every row is also given as a ratio to the reference
debit script (``../shared/bench/reference_debit.lua``: balance + daily window + member counter +
XADD, by EVALSHA), measured in the same run.

Cases: ``reference``, ``noop`` (FCALL of a function returning 1), ``limits`` (the ``limits``
library's moving-window ``hit()``), ``charge`` (one daily deny cap), ``charge_many`` (100 per call,
per decision), ``charge_many_64`` (the same over 1 000 users in 64 shards, as bench/hotpath.py's
charge_many rows: ~60 script calls per 100), ``charge_many_16``, ``charge_many_8``,
``charge_many_1`` (the same in namespaces of fewer shards: what the shard count costs a batch),
``floor_64``, ``floor_1`` (the least a batched debit can do with the store's layout,
bench/floor_debit_many.lua, sent as ``charge_many_64`` / ``charge_many_1`` send theirs: the part of a
batched decision's cost the layout sets), ``team`` (``deduct_team``, member with a cap),
``reserve_deduct`` (the pair, per pair), ``allowance`` (``charge_with_allowance``, paid part),
``add`` (``add_credits``).
``--code PATH`` measures another checkout of ducto-redis (e.g. a ``git worktree`` of an older
commit), so two versions compare in one run. ``--profile REDIS_SERVER`` shows instead where each
case's instructions go, function by function (see :func:`profile` for a redis-server with symbols).

Usage::

    python bench/instructions.py [--calls 200] [--span 1000] [--repeat 1] [--code PATH] [--write] [case ...]
    python bench/instructions.py --profile PATH/TO/redis-server [--top 25] charge
    python bench/instructions.py --client [--span 1000] [--write] [case ...]

``--client`` counts the other side: the client process' instructions per decision (callgrind on
Python, a plain private redis-server answering), ``reference`` / ``charge`` one call at a time and
``reference_100`` / ``charge_many_100`` batched (as bench/hotpath.py's x100 rows), each as a ratio to
the reference sent the same way: the caller's CPU as a count the machine's load does not change.

Needs ``valgrind`` and ``redis-server`` on PATH. Nothing here is asserted by a test.
"""

from __future__ import annotations

import argparse
import re
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
REFERENCE = ROOT.parent / "shared" / "bench" / "reference_debit.lua"


def _spread(shards: int) -> tuple[str, str, str, int]:
    """``charge_many`` as bench/hotpath.py sends it (100 per call over 1 000 users) in a namespace of
    ``shards`` shards: a script call per shard a batch touches (64: ~60 per 100; 1: one call of 100)."""
    calls = {64: "~60 script calls", 16: "~16 script calls", 8: "~8 script calls", 1: "one script call"}[shards]
    return (
        f"charge_many, 100 per call over 1 000 users in {shards} shard{'s' if shards > 1 else ''} "
        f"({calls} per 100), per decision",
        "from ducto_redis import RedisStore\nfrom ducto_redis.batch import ChargeRequest\nimport random\n"
        f"s = RedisStore.from_url(URL, namespace='cg{shards}', shards={shards})\ns.setup()\n"
        "for u in range(1000):\n    s.add_credits(f'u{u}', 10**12)\n"
        "rng = random.Random(7)\n"
        "batches = [[ChargeRequest(f'u{rng.randrange(1000)}', 1, 'x') for _ in range(100)] for _ in range(64)]",
        "s.charge_many(batches[i % 64])",
        100,
    )


FLOOR = ROOT / "bench" / "floor_debit_many.lua"


FLOOR_SETUP = """
from ducto_redis.keys import shard_of
import random
r.function_load(open(FLOOR).read(), replace=True)
def key(u):
    return '{{f:%d}}:u%d' % (shard_of('u', f'u{{u}}', {shards}), u)
for u in range(1000):
    r.hset(key(u), 'b', 10**12)
rng = random.Random(7)
batches = []
for b in range(64):
    groups = {{}}
    for j in range(100):
        u = rng.randrange(1000)
        sh = shard_of('u', f'u{{u}}', {shards})
        g = groups.setdefault(sh, (['{{f:%d}}:ledger' % sh], []))
        g[0].append(key(u))
        g[1].extend([f'c{{b}}x{{j}}', 1, f'\\tcharge\\tu\\tu{{u}}\\t\\t\\t\\t\\t\\t'])
    batches.append(list(groups.values()))
"""
FLOOR_CALL = """p = r.pipeline(transaction=False)
    for keys, args in batches[i % 64]:
        p.fcall('floor_many', len(keys), *keys, *args)
    p.execute()"""


def _floor(shards: int) -> tuple[str, str, str, int]:
    """The floor of ``charge_many`` with the store's layout (bench/floor_debit_many.lua): the same
    1 000 users and batches of 100 as :func:`_spread`, grouped by the store's shard of each user, one
    FCALL per shard a batch touches: per call the FCALL and one XADD, per account an HMGET and an
    HSET, and the least Lua that joins them (no caps, holds, grants, idempotency keys or models)."""
    return (
        f"floor: a minimal batched debit, 1 000 users in {shards} shard{'s' if shards > 1 else ''}, per decision",
        FLOOR_SETUP.format(shards=shards),
        FLOOR_CALL,
        100,
    )


# Each case: (label, setup, one decision's code, decisions the code makes). The code sees `s` (a
# RedisStore), `r` (a plain redis-py client), `i` (the call number) and whatever the setup made.
STORE_SETUP = """
from ducto_redis import RedisStore, SpendCap
s = RedisStore.from_url(URL, namespace='cg', shards=8)
s.setup()
for u in range(20):
    s.add_credits(f'u{u}', 10**12)
"""
CASES: dict[str, tuple[str, str, str, int]] = {
    "reference": (
        "reference debit script (EVALSHA)",
        "sha = r.script_load(open(REFERENCE).read())\nr.hset('ref:{t}:bal', 'balance', 10**15)",
        "r.evalsha(sha, 4, 'ref:{t}:bal', 'ref:{t}:day', 'ref:{t}:mem', 'ref:{t}:ledger', 1, 10**15, 'm1', 10**15,"
        " f'e{i}', 1735689600000, 90000)",
        1,
    ),
    "noop": (
        "FCALL of a function returning 1",
        "r.function_load(\"#!lua name=noop\\nredis.register_function('noop', function() return 1 end)\", replace=True)",
        "r.fcall('noop', 0)",
        1,
    ),
    "limits": (
        "limits moving-window hit()",
        "from limits import parse, storage, strategies\n"
        "lim = strategies.MovingWindowRateLimiter(storage.RedisStorage(URL))\nitem = parse('1000000000/day')",
        "lim.hit(item, 'k')",
        1,
    ),
    "charge": (
        "RedisStore.charge, one daily deny cap",
        STORE_SETUP + "for u in range(20):\n"
        "    s.set_spend_cap(SpendCap(user_id=f'u{u}', cap_type='daily', limit=10**12, action='deny'))",
        "s.charge(f'u{i % 20}', 1, 'x')",
        1,
    ),
    "charge_many": (
        "charge_many, 100 per call, per decision",
        STORE_SETUP + "from ducto_redis.batch import ChargeRequest\nfor u in range(20):\n"
        "    s.set_spend_cap(SpendCap(user_id=f'u{u}', cap_type='daily', limit=10**12, action='deny'))\n"
        "reqs = [ChargeRequest(f'u{u % 20}', 1, 'x') for u in range(100)]",
        "s.charge_many(reqs)",
        100,
    ),
    **{f"charge_many_{n}": _spread(n) for n in (64, 16, 8, 1)},
    **{f"floor_{n}": _floor(n) for n in (64, 1)},
    "team": (
        "deduct_team, member with a cap",
        STORE_SETUP + "tid = s.create_team('T', initial_balance=10**12).team_id\nfor u in range(20):\n"
        "    s.add_team_member(tid, f'u{u}', spend_cap=10**9)",
        "s.deduct_team(tid, f'u{i % 20}', 1)",
        1,
    ),
    "reserve_deduct": (
        "reserve_credits + deduct_credits (the pair)",
        STORE_SETUP,
        "s.deduct_credits(f'u{i % 20}', s.reserve_credits(f'u{i % 20}', 5, 'x').reservation_id, 3)",
        1,
    ),
    "allowance": (
        "charge_with_allowance (allowance used up: the paid path)",
        STORE_SETUP + "from ducto_redis import PricingConfigData, PlanDefinition\n"
        "s.set_active_pricing(PricingConfigData(models={'m': 'input_tokens'},"
        " plans={'pro': PlanDefinition(id='pro', name='Pro', free_allowance=10)}))\n"
        "for u in range(20):\n    s.set_user_plan(f'u{u}', 'pro')\n    s.charge_with_allowance(f'u{u}', 10, 'x')",
        "s.charge_with_allowance(f'u{i % 20}', 1, 'x')",
        1,
    ),
    "add": ("add_credits", STORE_SETUP, "s.add_credits(f'u{i % 20}', 1)", 1),
}
# --client: what the calling process executes per decision (callgrind on the client, a plain private
# redis-server): the batched yardstick beside the cases above that a client sends one by one
CLIENT_CASES: dict[str, tuple[str, str, str, int]] = {
    "reference_100": (
        "reference debit script, redis-py pipelined x100",
        "sha = r.script_load(open(REFERENCE).read())\nr.hset('ref:{t}:bal', 'balance', 10**15)",
        "p = r.pipeline(transaction=False)\n    for j in range(100):\n"
        "        p.evalsha(sha, 4, 'ref:{t}:bal', 'ref:{t}:day', 'ref:{t}:mem', 'ref:{t}:ledger', 1, 10**15, 'm1',"
        " 10**15, f'e{i}-{j}', 1735689600000, 90000)\n    p.execute()",
        100,
    ),
    "charge_many_100": (
        "RedisStore.charge_many x100 (100 users in 64 shards, as bench/hotpath.py's row)",
        "from ducto_redis import RedisStore\nfrom ducto_redis.batch import ChargeRequest\n"
        "s = RedisStore.from_url(URL, namespace='cgc')\ns.setup()\n"
        "for u in range(100):\n    s.add_credits(f'batch-{u}', 10**12)\n"
        "reqs = [ChargeRequest(f'batch-{u}', 1, 'bench') for u in range(100)]",
        "s.charge_many(reqs)",
        100,
    ),
}
CLIENT_DEFAULT = ("reference", "charge", "reference_100", "charge_many_100")

WORKLOAD = """
import sys
sys.path.insert(0, {code!r})
import redis
URL = 'redis://127.0.0.1:{port}/0'
REFERENCE = {reference!r}
FLOOR = {floor!r}
r = redis.Redis.from_url(URL, decode_responses=True)
{setup}
for i in range({calls}):
    {call}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(port: int, tries: int, pause: float) -> None:
    """Until the redis-server on ``port`` answers PING (``tries`` times, ``pause`` s apart)."""
    for _ in range(tries):
        ping = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True)
        if ping.stdout.strip() == "PONG":
            return
        time.sleep(pause)


def _workload(code: str, case: str, port: int, decisions: int) -> str:
    """The Python program that runs ``case``'s setup and ``decisions`` against Redis on ``port``."""
    _label, setup, call, per_call = {**CASES, **CLIENT_CASES}[case]
    return WORKLOAD.format(code=code, port=port, reference=str(REFERENCE), floor=str(FLOOR), setup=setup,
                           calls=decisions // per_call, call=call)


def _totals(out: Path, folder: str) -> int:
    """The instructions a callgrind output file counted in all (its folder removed once read)."""
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            shutil.rmtree(folder, ignore_errors=True)
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def instructions(code: str, case: str, decisions: int, binary: str = "redis-server",
                 by_function: dict[str, int] | None = None) -> int:
    """Total instructions of a callgrind'ed redis-server that served the setup and ``decisions``;
    with ``by_function``, each function's own instructions are put there too (callgrind_annotate)."""
    port, folder = free_port(), tempfile.mkdtemp(prefix="ducto-cg-")
    out = Path(folder) / "callgrind.out"
    server = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary,
                               "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                               "--dir", folder], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(port, 600, 0.1)
        try:
            subprocess.run([sys.executable, "-c", _workload(code, case, port, decisions)], check=True)
        finally:
            subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
            server.wait(120)
    finally:
        if server.poll() is None:
            server.kill()
    if by_function is not None:
        annotated = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=no", str(out)],
                                   capture_output=True, text=True, check=True).stdout
        for m in _FUNCTION_LINE.finditer(annotated):
            by_function[m.group(2)] = int(m.group(1).replace(",", ""))
    return _totals(out, folder)


def client_instructions(code: str, case: str, decisions: int) -> int:
    """Total instructions of a callgrind'ed client process that ran the setup and ``decisions``
    against a plain private redis-server (Redis' own work is not counted)."""
    port, folder = free_port(), tempfile.mkdtemp(prefix="ducto-cgc-")
    out = Path(folder) / "callgrind.out"
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", folder],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(port, 100, 0.05)
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c",
                        _workload(code, case, port, decisions)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        server.terminate()
        server.wait(30)
    return _totals(out, folder)


_FUNCTION_LINE = re.compile(r"^\s*([\d,]+) \([ \d.]+%\)\s+(\S+?:\S+)", re.MULTILINE)


def profile(code: str, case: str, calls: int, binary: str, top: int) -> list[tuple[float, str]]:
    """Where one decision's instructions go: each function's own instructions per decision (the
    difference of two runs, as :func:`per_decision`), the ``top`` largest. Function names need a
    redis-server built with symbols: Debian's source (``apt-get source redis``, which needs a deb-src
    line) built with ``make MALLOC=libc redis-server`` names Redis' and Lua's functions."""
    first: dict[str, int] = {}
    second: dict[str, int] = {}
    instructions(code, case, calls, binary, first)
    instructions(code, case, calls + 1000, binary, second)
    diff = [((second.get(f, 0) - first.get(f, 0)) / 1000, f) for f in set(first) | set(second)]
    return sorted(diff, reverse=True)[:top]


def per_decision(code: str, case: str, calls: int, span: int = 1000, repeat: int = 1) -> float:
    """Redis instructions of one decision: (calls + span decisions) − (calls decisions), / span; with
    ``repeat`` > 1 the median of that many such measurements. The counts are exact, but not the same
    from one server to the next (random ids, hash seeds, where the Lua collector's cycles fall): two
    runs of the same code differ by up to ~2% at span 1000; a longer span and a median narrow it."""
    runs = sorted((instructions(code, case, calls + span) - instructions(code, case, calls)) / span
                  for _ in range(repeat))
    return runs[len(runs) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("cases", nargs="*", help=f"any of {', '.join(CASES)} (default: all)")
    ap.add_argument("--calls", type=int, default=200, help="decisions before the measured 1000 (default 200)")
    ap.add_argument("--code", default=str(ROOT), help="the ducto-redis checkout to measure")
    ap.add_argument("--span", type=int, default=1000,
                    help="decisions measured after --calls (default 1000; longer: less spread, slower)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure each case this many times on fresh servers and keep the median (default 1)")
    ap.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    ap.add_argument("--profile", metavar="REDIS_SERVER",
                    help="instead: each case's top functions per decision, on this redis-server built with symbols")
    ap.add_argument("--top", type=int, default=25, help="functions shown per case with --profile (default 25)")
    ap.add_argument("--client", action="store_true",
                    help=f"instead: the client process' instructions per decision ({', '.join(CLIENT_DEFAULT)} "
                         f"by default; any case, and {', '.join(CLIENT_CASES)})")
    opts = ap.parse_args()
    if opts.client:
        client_main(opts)
        return
    if unknown := set(opts.cases) - set(CASES):
        ap.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    if not (shutil.which("valgrind") and shutil.which("redis-server")):
        sys.exit("needs valgrind and redis-server on PATH")
    if opts.calls % 100:
        ap.error("--calls must be a multiple of 100 (charge_many makes 100 decisions per call)")
    wanted = opts.cases or list(CASES)
    if opts.profile:
        for case in wanted:
            print(f"\n{CASES[case][0]}: own instructions per decision, by function", flush=True)
            for n, fn in profile(opts.code, case, opts.calls, opts.profile, opts.top):
                print(f"{n:12,.0f}  {fn}", flush=True)
        return
    if opts.span % 100 or opts.span <= 0:
        ap.error("--span must be a positive multiple of 100")
    reference = per_decision(opts.code, "reference", opts.calls, opts.span, opts.repeat)
    rows = ["| decision | Redis instructions per decision | vs the reference debit |", "|---|---:|---:|"]
    for case in wanted:
        n = reference if case == "reference" else per_decision(opts.code, case, opts.calls, opts.span, opts.repeat)
        rows.append(f"| {CASES[case][0]} | {n:,.0f} | {n / reference:.2f}× |")
        print(rows[-1], flush=True)
    if opts.write:
        write_section("Redis instructions per decision", "python bench/instructions.py " + " ".join(sys.argv[1:]),
                      "callgrind on a private redis-server (the machine's load does not change it; one server "
                      "to the next, up to ~2%); each row also as a ratio to the reference debit script measured "
                      "in the same run.",
                      "\n".join(rows))


def client_main(opts: argparse.Namespace) -> None:
    """``--client``: each case's client instructions per decision, and as a ratio to the reference
    sent the same way (one by one: ``reference``; batched: ``reference_100``)."""
    if unknown := set(opts.cases) - set(CASES) - set(CLIENT_CASES):
        sys.exit(f"unknown case(s): {', '.join(sorted(unknown))}")
    if not shutil.which("valgrind"):
        sys.exit("needs valgrind and redis-server on PATH")
    wanted = opts.cases or list(CLIENT_DEFAULT)
    span = max(opts.span, 100) // 100 * 100
    got: dict[str, float] = {}
    for case in dict.fromkeys(["reference", "reference_100", *wanted]):
        got[case] = (client_instructions(opts.code, case, opts.calls + span)
                     - client_instructions(opts.code, case, opts.calls)) / span
    rows = ["| client | instructions per decision | vs the reference sent the same way |", "|---|---:|---:|"]
    for case in wanted:
        label, _s, _c, per_call = {**CASES, **CLIENT_CASES}[case]
        base = got["reference_100" if per_call > 1 else "reference"]
        rows.append(f"| {label} | {got[case]:,.0f} | {got[case] / base:.2f}× |")
        print(rows[-1], flush=True)
    if opts.write:
        write_section("Client instructions per decision", "python bench/instructions.py " + " ".join(sys.argv[1:]),
                      "callgrind on the client process (a plain private redis-server answers it): what a decision "
                      "costs the caller's CPU, Redis' work not counted; batched cases as a ratio to redis-py "
                      "pipelining the reference script x100, single calls to its one-by-one EVALSHA, measured "
                      "in the same run.",
                      "\n".join(rows))


if __name__ == "__main__":
    main()
