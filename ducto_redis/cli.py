"""The `ducto-redis` command."""

from __future__ import annotations

import argparse
import sys

from .settings import Settings


def _store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .memory import MemoryStore
    from .store import RedisStore

    if getattr(args, "memory", False):
        return MemoryStore(args.namespace)
    return RedisStore.from_url(args.redis_url, namespace=args.namespace)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ducto-redis`` command."""
    settings = Settings()
    parser = argparse.ArgumentParser(prog="ducto-redis", description="Credits and spend caps on Redis.")
    parser.add_argument("--redis-url", default=settings.redis_url, help="default: $DUCTO_REDIS_URL")
    parser.add_argument("--namespace", default=settings.namespace, help="default: $DUCTO_NAMESPACE")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the spend-cap scenario (embedded store unless --redis)")
    demo.add_argument("--redis", action="store_true", help="run it on the Redis at --redis-url instead")

    bal = sub.add_parser("balance", help="print a user's balance")
    bal.add_argument("user_id")
    bal.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)

    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo
        from .memory import MemoryStore
        from .store import RedisStore

        if args.redis:
            store = RedisStore.from_url(args.redis_url, namespace=args.namespace + "-demo")
        else:
            store = MemoryStore(args.namespace)
        run_demo(store)
        return 0
    if args.command == "balance":
        b = _store(args).get_balance(args.user_id)
        print(f"{b.user_id}: balance {b.balance} held {b.held} available {b.available} "
              f"lifetime_purchased {b.lifetime_purchased}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
