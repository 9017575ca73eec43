"""The `ducto-redis` command: demo, balance, pricing (validate | set | get), and the ledger's operator tools."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Any

from .settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    """The settings of the command line's options, checked as the environment's are (one rule)."""
    from pydantic import ValidationError

    from .validation import invalid_input

    try:
        return Settings(redis_url=args.redis_url, namespace=args.namespace, database_url=args.database_url,
                        ledger_schema=args.ledger_schema)
    except ValidationError as exc:
        raise invalid_input(exc) from exc


def _store(args: argparse.Namespace) -> Any:
    from .store import RedisStore

    return RedisStore.from_settings(_settings(args))


def _database_url(args: argparse.Namespace) -> str:
    if not args.database_url:
        raise SystemExit("ducto-redis: set --database-url or DUCTO_DATABASE_URL")
    return str(args.database_url)


def load_pricing_file(path: str) -> dict[str, Any]:
    """The raw pricing config of a JSON or YAML file (:func:`ducto_redis.config.read_pricing_file`);
    a file that cannot be read ends the command with its message."""
    from .config import read_pricing_file
    from .errors import ConfigError

    try:
        return read_pricing_file(path)
    except ConfigError as exc:
        raise SystemExit(f"ducto-redis: {exc}") from None


def _pricing(args: argparse.Namespace) -> int:
    import json

    from .errors import ConfigError
    from .pricing import PricingEngine

    if args.pricing_command == "get":
        active = _store(args).get_active_pricing()
        if active is None:
            print("no active pricing config", file=sys.stderr)
            return 1
        print(json.dumps(active.model_dump(mode="json", exclude_none=True), indent=2))
        return 0
    data = load_pricing_file(args.file)
    try:
        engine = PricingEngine.from_dict(data)
    except ConfigError as exc:
        print(f"invalid pricing config {args.file}: {exc}", file=sys.stderr)
        return 1
    config = engine.pricing_schema()
    summary = (f"{len(config.models)} models, {len(config.tools)} tools, {len(config.fixed)} fixed jobs, "
               f"{len(config.plans or {})} plans, min_balance {config.min_balance}")
    if args.pricing_command == "validate":
        print(f"valid: {summary}")
        return 0
    store = _store(args)
    pid = store.set_active_pricing(config, label=args.label)
    active = store.get_active_pricing()
    print(f"active pricing {pid} version {active.version if active else '?'}: {summary}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """The demo on the embedded store with its ledger in a temporary SQLite file (restarted at the
    end), or with --redis on the Redis at --redis-url."""
    import tempfile
    from pathlib import Path

    from .demo import run_demo
    from .memory import MemoryStore
    from .store import RedisStore

    if args.redis:
        run_demo(RedisStore.from_url(args.redis_url, namespace=args.namespace + "-demo"))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        ledger = str(Path(tmp) / "ledger.sqlite")
        print(f"ledger file: {ledger} (SQLite; MemoryStore(ledger_file=...) or DUCTO_LEDGER_FILE)")
        run_demo(MemoryStore(args.namespace, ledger_file=ledger),
                 reopen=lambda: MemoryStore(args.namespace, ledger_file=ledger))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ducto-redis`` command; returns its exit code (2: bad input, named)."""
    from .errors import InvalidInputError

    try:
        return _main(argv)
    except InvalidInputError as exc:
        print(f"ducto-redis: {exc}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="ducto-redis", description="Credits and spend caps on Redis.")
    parser.add_argument("--redis-url", default=settings.redis_url, help="default: $DUCTO_REDIS_URL")
    parser.add_argument("--namespace", default=settings.namespace, help="default: $DUCTO_NAMESPACE")
    parser.add_argument("--database-url", default=settings.database_url, help="default: $DUCTO_DATABASE_URL")
    parser.add_argument("--ledger-schema", default=settings.ledger_schema, help="default: $DUCTO_LEDGER_SCHEMA")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the seed scenarios (caps, teams, a priced call)")
    demo.add_argument("--redis", action="store_true", help="run it on the Redis at --redis-url instead")
    bal = sub.add_parser("balance", help="print a user's balance")
    bal.add_argument("user_id")
    sub.add_parser("migrate", help="create the ledger schema in Postgres")
    flush = sub.add_parser("flush", help="copy ledger entries from Redis into Postgres (until interrupted)")
    flush.add_argument("--once", action="store_true", help="drain what is there, then exit")
    flush.add_argument("--batch", type=int, default=20_000, help="entries per Postgres transaction")
    flush.add_argument("--processes", type=int, default=1,
                       help="flusher processes sharing the work (each holds about one core)")
    flush.add_argument("--claim-idle-ms", type=int, default=30_000,
                       help="take over entries another flusher left pending this long (a dead flusher's)")
    sub.add_parser("status", help="print the ledger backlog and lag")
    restore = sub.add_parser("restore", help="rebuild every Redis key of the namespace from the ledger "
                             "(refused while entries are unflushed or keys live, unless --force)")
    restore.add_argument("--dry-run", action="store_true", help="write nothing; report what would be written")
    restore.add_argument("--force", action="store_true",
                         help="restore although entries are not flushed yet (their decisions are lost) or keys live")
    restore.add_argument("--target-namespace", default=None,
                         help="restore into this namespace instead (a drill: the live one is only read)")
    reconcile = sub.add_parser("reconcile", help="compare Redis with the ledger, every account on both sides; "
                               "exit 1 on drift, 3 when accounts wait to be flushed")
    reconcile.add_argument("--ledger-namespace", default=None,
                           help="compare with the ledger of this namespace (after a drill restore)")
    pricing = sub.add_parser("pricing", help="validate, publish or print the pricing config (JSON; YAML with PyYAML)")
    psub = pricing.add_subparsers(dest="pricing_command", required=True)
    psub.add_parser("validate", help="check every formula of a pricing file; exit 1 if invalid").add_argument("file")
    pset = psub.add_parser("set", help="validate a pricing file and publish it as the next active version")
    pset.add_argument("file")
    pset.add_argument("--label", default=None)
    psub.add_parser("get", help="print the active pricing config (JSON); exit 1 if none")
    sweep = sub.add_parser("sweep-credits", help="remove expired unspent credit grants (run it from cron)")
    sweep.add_argument("--dry-run", action="store_true", help="report what would expire, write nothing")

    args = parser.parse_args(argv)
    _settings(args)  # every option checked before anything runs
    if args.command == "demo":
        return _demo(args)
    if args.command == "pricing":
        return _pricing(args)
    if args.command == "balance":
        b = _store(args).get_balance(args.user_id)
        print(f"{b.user_id}: balance {b.balance} held {b.held} available {b.available} "
              f"lifetime_purchased {b.lifetime_purchased}")
        return 0
    if args.command == "migrate":
        from .ledger.flusher import migrate

        migrate(_database_url(args), _settings(args).ledger_schema)
        print(f"ledger schema {args.ledger_schema!r} ready")
        return 0
    if args.command == "flush":
        from .ledger import ops

        stop = threading.Event()
        if not args.once:
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
        report = None
        with contextlib.suppress(KeyboardInterrupt):
            report = ops.flush(_store(args), _database_url(args), once=args.once, batch=args.batch,
                               claim_idle_ms=args.claim_idle_ms, processes=args.processes, stop=stop,
                               redis_url=args.redis_url)
        for line in report.lines() if report else []:
            print(line)
        return 0 if report is None or report.complete else 1
    if args.command == "status":
        from .ledger import ops

        for line in ops.status(_store(args), args.database_url).lines():
            print(line)
        return 0
    if args.command == "restore":
        from .ledger.recovery import RestoreRefused, progress_bar

        try:
            report = _store(args).restore_ledger(
                _database_url(args), dry_run=args.dry_run, force=args.force, target_namespace=args.target_namespace,
                progress=None if args.dry_run else progress_bar)
        except RestoreRefused as exc:
            for line in exc.report.lines():
                print(line, file=sys.stderr)
            return 1
        for line in report.lines():
            print(line)
        return 1 if report.refusals else 0
    if args.command == "sweep-credits":
        r = _store(args).sweep_expired_credits(dry_run=args.dry_run)
        print(f"{'would expire' if r.dry_run else 'expired'} {r.expired_count} grants, {r.expired_amount} credits")
        return 0
    if args.command == "reconcile":
        result = _store(args).reconcile_ledger(_database_url(args), ledger_namespace=args.ledger_namespace)
        for line in result.lines():
            print(line)
        return int(result.exit_code)
    return 2


if __name__ == "__main__":
    sys.exit(main())
