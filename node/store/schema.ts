/**
 * The node store's SQL schema: the DDL at version {@link SCHEMA_VERSION} and the migrations of older files
 * (v1 -> v2: balance proof locks, status and message; v2 -> v3: channel withdraw totals). `NodeStore` opens
 * its file with host/sqlite.ts `openSqlite(path, NODE_STORE_SCHEMA)`.
 */
import type Database from "better-sqlite3";
import { z } from "zod";
import { decodeRow, type OpenSqliteOptions } from "../../host/sqlite.js";

/** The version this code writes (`meta.schema_version`). */
export const SCHEMA_VERSION = 3;

/** Every table at {@link SCHEMA_VERSION}, idempotent. */
export const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS peers (
  address TEXT PRIMARY KEY,
  peer_id TEXT NOT NULL,
  multiaddrs TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS channels (
  channel_id TEXT PRIMARY KEY,
  partner TEXT NOT NULL,
  token TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('opened','closed','settled')),
  settle_timeout_seconds INTEGER NOT NULL,
  our_deposit TEXT NOT NULL,
  partner_deposit TEXT NOT NULL,
  closed_at_seconds INTEGER,
  closing_participant TEXT,
  opened_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  our_withdraw TEXT NOT NULL DEFAULT '0',
  partner_withdraw TEXT NOT NULL DEFAULT '0'
);
CREATE TABLE IF NOT EXISTS withdraws (
  channel_id TEXT NOT NULL,
  participant TEXT NOT NULL,
  total_withdraw TEXT NOT NULL,
  expiry_timestamp TEXT NOT NULL,
  participant_signature TEXT NOT NULL,
  partner_signature TEXT,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (channel_id, participant)
);
CREATE TABLE IF NOT EXISTS balance_proofs (
  channel_id TEXT NOT NULL,
  signer TEXT NOT NULL,
  nonce INTEGER NOT NULL,
  chain_id TEXT NOT NULL,
  hub TEXT NOT NULL,
  transferred_amount TEXT NOT NULL,
  locked_amount TEXT NOT NULL,
  locks_root TEXT NOT NULL,
  signature TEXT NOT NULL,
  pq_signature BLOB NOT NULL,
  created_at INTEGER NOT NULL,
  locks BLOB,
  status TEXT NOT NULL DEFAULT 'acked' CHECK (status IN ('pending','acked','refused')),
  message BLOB,
  PRIMARY KEY (channel_id, signer, nonce)
);
CREATE INDEX IF NOT EXISTS balance_proofs_pending ON balance_proofs(channel_id, signer) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS payments (
  payment_id TEXT NOT NULL,
  direction TEXT NOT NULL CHECK (direction IN ('outgoing','incoming')),
  channel_id TEXT NOT NULL,
  partner TEXT NOT NULL,
  token TEXT NOT NULL,
  amount TEXT NOT NULL,
  nonce INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending','completed','failed')),
  error_code TEXT,
  error_message TEXT,
  created_at INTEGER NOT NULL,
  completed_at INTEGER,
  PRIMARY KEY (direction, channel_id, payment_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS payments_outgoing_id ON payments(payment_id) WHERE direction = 'outgoing';
CREATE INDEX IF NOT EXISTS payments_by_id ON payments(payment_id, created_at);
CREATE INDEX IF NOT EXISTS payments_status ON payments(status, direction);
CREATE INDEX IF NOT EXISTS payments_created ON payments(created_at);
CREATE TABLE IF NOT EXISTS transfers (
  id TEXT PRIMARY KEY,
  role TEXT NOT NULL CHECK (role IN ('initiator','mediator','target')),
  secret_hash TEXT NOT NULL,
  payment_id TEXT NOT NULL,
  state TEXT NOT NULL,
  done INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_by_hash ON transfers(secret_hash);
DROP INDEX IF EXISTS transfers_open;
CREATE INDEX IF NOT EXISTS transfers_done_updated ON transfers(done, updated_at);
CREATE TABLE IF NOT EXISTS secrets (
  secret_hash TEXT PRIMARY KEY,
  secret TEXT NOT NULL,
  learned_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mediated_payments (
  payment_id TEXT PRIMARY KEY,
  target TEXT NOT NULL,
  token TEXT NOT NULL,
  amount TEXT NOT NULL,
  max_fee TEXT,
  secret_hash TEXT NOT NULL,
  secret TEXT,
  status TEXT NOT NULL CHECK (status IN ('pending','completed','failed')),
  fee TEXT NOT NULL,
  attempts TEXT NOT NULL,
  error_code TEXT,
  error_message TEXT,
  created_at INTEGER NOT NULL,
  completed_at INTEGER,
  deadline_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS mediated_payments_created ON mediated_payments(created_at);
CREATE TABLE IF NOT EXISTS invoices (
  payment_hash TEXT PRIMARY KEY,
  secret TEXT NOT NULL,
  token TEXT NOT NULL,
  amount TEXT NOT NULL,
  description TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('open','paid','expired')),
  paid_amount TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  paid_at INTEGER
);
CREATE INDEX IF NOT EXISTS invoices_unpaid_expiry ON invoices(expires_at) WHERE status <> 'paid';
`;

const tableInfoRow = z.object({ name: z.string() });
const metaValueRow = z.object({ value: z.string().regex(/^[0-9]{1,9}$/) });

/** The column names of `table` (empty when the table does not exist). */
function columnsOf(db: Database.Database, table: string): string[] {
  return db
    .prepare(`PRAGMA table_info(${table})`)
    .all()
    .map((row) => decodeRow(tableInfoRow, `table_info(${table})`, row).name);
}

/**
 * v1 -> v2: balance proofs gain `locks`, `status` and `message`. Our v1 proofs (signer is not the channel's
 * partner) take their status from the direct payment they carried; re-delivery rebuilds the message.
 */
function migrateV1(db: Database.Database): void {
  const cols = columnsOf(db, "balance_proofs");
  if (cols.length === 0 || cols.includes("status")) return;
  db.exec(`ALTER TABLE balance_proofs ADD COLUMN locks BLOB;
    ALTER TABLE balance_proofs ADD COLUMN status TEXT NOT NULL DEFAULT 'acked' CHECK (status IN ('pending','acked','refused'));
    ALTER TABLE balance_proofs ADD COLUMN message BLOB;
    UPDATE balance_proofs SET status = CASE (
        SELECT p.status FROM payments p WHERE p.direction = 'outgoing' AND p.channel_id = balance_proofs.channel_id
          AND p.nonce = balance_proofs.nonce)
      WHEN 'pending' THEN 'pending' WHEN 'failed' THEN 'refused' ELSE 'acked' END
    WHERE signer <> (SELECT c.partner FROM channels c WHERE c.channel_id = balance_proofs.channel_id);`);
}

/** v2 -> v3: channels gain the totals withdrawn on chain (0 for channels from before withdraws). */
function migrateV2(db: Database.Database): void {
  const cols = columnsOf(db, "channels");
  if (cols.length === 0 || cols.includes("our_withdraw")) return;
  db.exec(`ALTER TABLE channels ADD COLUMN our_withdraw TEXT NOT NULL DEFAULT '0';
    ALTER TABLE channels ADD COLUMN partner_withdraw TEXT NOT NULL DEFAULT '0';`);
}

/**
 * How `NodeStore` opens its file: the version lives in `meta.schema_version`; versions 1 and 2 are migrated
 * (each step checks the columns it adds, so a half-migrated file from an older release is finished too).
 */
export const NODE_STORE_SCHEMA: OpenSqliteOptions = {
  label: "node store",
  schema: SCHEMA,
  migrate: (db) => {
    migrateV1(db);
    migrateV2(db);
  },
  version: {
    current: SCHEMA_VERSION,
    oldest: 1,
    read: (db) => {
      if (columnsOf(db, "meta").length === 0) return null;
      const row: unknown = db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get();
      return row === undefined ? null : Number(decodeRow(metaValueRow, "meta", row).value);
    },
    write: (db, version) => {
      db.prepare(
        "INSERT INTO meta(key, value) VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
      ).run(String(version));
    },
  },
};
