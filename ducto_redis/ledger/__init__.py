"""The durable ledger: Redis Streams flushed into PostgreSQL, analytics, restore and reconcile."""
