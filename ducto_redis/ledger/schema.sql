-- ducto-redis ledger schema. {schema} is replaced by the configured schema name (DUCTO_LEDGER_SCHEMA).
-- One row per ledger entry, written by the flusher; idempotent by (namespace, entry_id).
CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {schema}.ledger (
    entry_id        text NOT NULL,             -- the transaction / reservation id (unique in its namespace)
    namespace       text NOT NULL,
    shard           integer NOT NULL,
    stream_ms       bigint NOT NULL,           -- Redis stream id: order within a shard
    stream_seq      bigint NOT NULL,
    stream_row      integer NOT NULL DEFAULT 0, -- the row's place in its stream entry (a batch's rows share one)
    ts              timestamptz NOT NULL,      -- Redis TIME when the script ran
    account_kind    char(1) NOT NULL,          -- u = user, t = team
    account_id      text NOT NULL,
    member          text,                      -- team entries: the member who spent
    kind            text NOT NULL,             -- credit hold settle debit release expire config
    amount          bigint NOT NULL DEFAULT 0, -- signed change of the balance
    balance_after   bigint,
    held_after      bigint,
    hold            bigint,                    -- amount of the hold made or resolved
    reservation_id  text,
    operation_type  text,
    model           text,
    tx_type         text,
    idempotency_key text,
    expires_ms      bigint,
    cap_action      text,
    reason          text,
    metadata        jsonb,
    extra           jsonb,
    PRIMARY KEY (namespace, entry_id)
);

-- Older schemas: the row's place in its entry, and the key (namespace, entry_id) instead of
-- entry_id alone (a debit's id is its place in its shard's stream, unique within a namespace).
ALTER TABLE {schema}.ledger ADD COLUMN IF NOT EXISTS stream_row integer NOT NULL DEFAULT 0;
DO $$
BEGIN
    IF (SELECT count(*) FROM information_schema.key_column_usage
        WHERE table_schema = '{schema}' AND table_name = 'ledger' AND constraint_name = 'ledger_pkey') = 1 THEN
        ALTER TABLE {schema}.ledger DROP CONSTRAINT ledger_pkey;
        ALTER TABLE {schema}.ledger ADD PRIMARY KEY (namespace, entry_id);
    END IF;
END $$;

-- Indexes are what the flusher pays for on every row, so there are few and cheap ones:
-- * no per-account index: restore and reconcile read a whole namespace and sort it (an index on
--   (account, stream order) took ~half the flusher's Postgres time: random inserts over every account);
-- * time: a BRIN index, not a B-tree. Rows arrive in (nearly) time order, so block ranges map to
--   time ranges; the B-tree on (namespace, ts) cost ~3 us of ~9 us per row COPYed, BRIN next to
--   nothing, and the analytics (sums over a time window) scan the ranges it selects.
-- Older schemas' indexes are dropped.
DROP INDEX IF EXISTS {schema}.ledger_account_order;
DROP INDEX IF EXISTS {schema}.ledger_spend_ts;
CREATE INDEX IF NOT EXISTS ledger_ts_brin ON {schema}.ledger USING brin (ts);
CREATE INDEX IF NOT EXISTS ledger_team_member
    ON {schema}.ledger (namespace, account_id, member, ts) WHERE account_kind = 't';

-- Entries PostgreSQL refused (a data error in one row: bad encoding, a NUL, a number that is not one,
-- an index row too large). The flusher halves a refused batch to find them, stores every other row,
-- and keeps each refused one here: the ledger's columns as far as they can be read, PostgreSQL's
-- reason and the raw COPY line. `ducto-redis status` counts them. Nothing is ever deleted here.
CREATE TABLE IF NOT EXISTS {schema}.ledger_quarantine (
    namespace       text NOT NULL,
    shard           integer NOT NULL,
    stream_ms       bigint NOT NULL,
    stream_seq      bigint NOT NULL,
    stream_row      integer NOT NULL DEFAULT 0,
    entry_id        text,
    ts              timestamptz,
    account_kind    text,
    account_id      text,
    member          text,
    kind            text,
    amount          bigint,
    balance_after   bigint,
    held_after      bigint,
    hold            bigint,
    reservation_id  text,
    operation_type  text,
    model           text,
    tx_type         text,
    idempotency_key text,
    expires_ms      bigint,
    cap_action      text,
    reason          text,
    metadata        jsonb,
    extra           jsonb,
    refused_because text NOT NULL,             -- PostgreSQL's error
    raw             bytea NOT NULL,            -- the COPY line the flusher built from the stream entry
    quarantined_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, shard, stream_ms, stream_seq, stream_row)
);
