"""The `ducto-redis` command: demo, balance, and the ledger's operator tools."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Any

from .settings import Settings


def _store(args: argparse.Namespace) -> Any:
    from .store import RedisStore

    return RedisStore.from_url(
        args.redis_url, namespace=args.namespace, database_url=args.database_url, ledger_schema=args.ledger_schema
    )


def _database_url(args: argparse.Namespace) -> str:
    if not args.database_url:
        raise SystemExit("ducto-redis: set --database-url or DUCTO_DATABASE_URL")
    return str(args.database_url)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ducto-redis`` command; returns its exit code."""
    settings = Settings()
    parser = argparse.ArgumentParser(prog="ducto-redis", description="Credits and spend caps on Redis.")
    parser.add_argument("--redis-url", default=settings.redis_url, help="default: $DUCTO_REDIS_URL")
    parser.add_argument("--namespace", default=settings.namespace, help="default: $DUCTO_NAMESPACE")
    parser.add_argument("--database-url", default=settings.database_url, help="default: $DUCTO_DATABASE_URL")
    parser.add_argument("--ledger-schema", default=settings.ledger_schema, help="default: $DUCTO_LEDGER_SCHEMA")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the spend-cap scenario (embedded store unless --redis)")
    demo.add_argument("--redis", action="store_true", help="run it on the Redis at --redis-url instead")
    bal = sub.add_parser("balance", help="print a user's balance")
    bal.add_argument("user_id")
    sub.add_parser("migrate", help="create the ledger schema in Postgres")
    flush = sub.add_parser("flush", help="copy ledger entries from Redis into Postgres (until interrupted)")
    flush.add_argument("--once", action="store_true", help="drain what is there, then exit")
    flush.add_argument("--batch", type=int, default=20_000, help="entries per Postgres transaction")
    sub.add_parser("status", help="print the ledger backlog and lag")
    sub.add_parser("restore", help="rebuild every Redis key of the namespace from the ledger")
    sub.add_parser("reconcile", help="compare Redis with the ledger; exit code 1 on drift")

    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo
        from .memory import MemoryStore
        from .store import RedisStore

        store: Any = (
            RedisStore.from_url(args.redis_url, namespace=args.namespace + "-demo")
            if args.redis else MemoryStore(args.namespace)
        )
        run_demo(store)
        return 0
    if args.command == "balance":
        b = _store(args).get_balance(args.user_id)
        print(f"{b.user_id}: balance {b.balance} held {b.held} available {b.available} "
              f"lifetime_purchased {b.lifetime_purchased}")
        return 0
    if args.command == "migrate":
        from .ledger.flusher import migrate

        migrate(_database_url(args), args.ledger_schema)
        print(f"ledger schema {args.ledger_schema!r} ready")
        return 0
    if args.command == "flush":
        from .ledger.flusher import LedgerFlusher, migrate

        url = _database_url(args)
        migrate(url, args.ledger_schema)
        flusher = LedgerFlusher(_store(args), url, batch=args.batch)
        if args.once:
            print(f"flushed {flusher.drain(timeout=3600)} entries")
            return 0
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            flusher.run(stop)
        print(f"flushed {flusher.flushed} entries")
        return 0
    if args.command == "status":
        lag = _store(args).ledger_lag()
        print(f"backlog {lag.backlog} entries, pending {lag.pending}, "
              f"oldest unflushed {lag.oldest_unflushed_age_ms} ms")
        return 0
    if args.command == "restore":
        n = _store(args).restore_from_ledger(_database_url(args), progress=True)
        print(f"restored {n} accounts")
        return 0
    if args.command == "reconcile":
        drift = _store(args).reconcile_with_ledger(_database_url(args))
        for account, lines in sorted(drift.items()):
            for line in lines:
                print(f"{account}: {line}")
        print(f"{len(drift)} accounts drift" if drift else "0 drift")
        return 1 if drift else 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
