-- Sync to the centre (boxsync/, SQL in ledger/sync.py). Both tables are append-only and sealed
-- like the rest: the box's own record of what it sent and what the centre acknowledged.

-- One row per batch formed, in seq order (gap-free from 1). ranges: JSON {table: [from, to]},
-- the row ids (from, to] the batch covers; the high-water mark of a table is the largest `to`.
-- The batch's bytes are rebuilt from the ledger rows on every retry and must hash to `hash`.
CREATE TABLE sync_batches (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    seq INTEGER NOT NULL UNIQUE,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    ranges TEXT NOT NULL,
    rows INTEGER NOT NULL
);

-- One row per acknowledged batch, with the centre's signed receipt and its receive time.
CREATE TABLE sync_acks (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    seq INTEGER NOT NULL UNIQUE,
    receipt TEXT NOT NULL,
    received_ms INTEGER
);

INSERT INTO ledger_retention VALUES ('sync_batches', NULL, 100);
INSERT INTO ledger_retention VALUES ('sync_acks', NULL, 100);

CREATE TRIGGER sync_batches_append_only BEFORE UPDATE ON sync_batches BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER sync_acks_append_only BEFORE UPDATE ON sync_acks BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER sync_batches_no_delete BEFORE DELETE ON sync_batches BEGIN SELECT RAISE(ABORT, 'sync records are never deleted'); END;
CREATE TRIGGER sync_acks_no_delete BEFORE DELETE ON sync_acks BEGIN SELECT RAISE(ABORT, 'sync records are never deleted'); END;
