/**
 * The merchant's receipts of x402 payments: one row per payment hash that bought a resource. SQLite
 * (host/sqlite.ts; rows read are decoded by a codec, a corrupt one is `QrwpError("INTERNAL")` naming the
 * column). The primary key makes a payment usable exactly once: {@link ReceiptStore.insertOnce} is the
 * arbiter between concurrent uses of the same `PAYMENT-SIGNATURE` (the first claim wins, every other use is a
 * replay). Only paid requests add rows; an unpaid 402 never touches this store.
 *
 * Group commit: `insertOnce` claims the payment hash in memory at once (synchronously, so the arbiter is
 * exact within the process) and the claims of one event-loop turn are written in ONE transaction right
 * after it (`setImmediate`), before or right after the paid response leaves. That write is not fsync'd
 * (`synchronous = NORMAL`): it survives a crash of the process at once, and a crash of the machine once the
 * WAL is synced, which happens at least every {@link RECEIPTS_SYNC_MS} while receipts are written (a
 * checkpoint) and at {@link ReceiptStore.close}. So a machine crash can lose the receipts of the last second,
 * which makes those payments usable once more (a resource served twice for one payment); it never loses a
 * payment (the merchant's node holds those durably). Reads (`get`, `list`, `count`) see claimed receipts.
 */
import type Database from "better-sqlite3";
import { z } from "zod";
import { randomBytes } from "node:crypto";
import { column, decodeRow, openSqlite, type SqliteDatabase } from "../host/sqlite.js";

/** How often the WAL of written receipts is synced to disk at the latest (ms): the machine-crash window. */
export const RECEIPTS_SYNC_MS = 1000;

/** One receipt. */
export interface Receipt {
  /** The invoice's payment hash (0x 32-byte hex, lower case). */
  paymentHash: string;
  /** What was bought, e.g. `GET /weather`. */
  route: string;
  /** Token base units, decimal. */
  amount: string;
  /** Token address. */
  asset: string;
  /** The payer's address when known (direct mode: the channel partner; routed mode: unknown, null). */
  payer: string | null;
  /** How it was paid: `routed` (an invoice paid over HTLCs) or `direct` (a balance proof on a channel). */
  mode: ReceiptMode;
  /** Unix ms. */
  createdAtMs: number;
}

/** How an x402 payment reached the merchant's node. */
export type ReceiptMode = "routed" | "direct";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS receipts (
  payment_hash TEXT PRIMARY KEY,
  route TEXT NOT NULL,
  amount TEXT NOT NULL,
  asset TEXT NOT NULL,
  payer TEXT,
  mode TEXT NOT NULL DEFAULT 'routed',
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS receipts_created ON receipts (created_at);
CREATE TABLE IF NOT EXISTS receipts_meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
`;

const receiptRow = z.object({
  payment_hash: column.bytes32Text,
  route: z.string(),
  amount: column.uintText,
  asset: column.addressText,
  payer: column.addressText.nullable(),
  mode: z.enum(["routed", "direct"]),
  created_at: column.int,
});
const countRow = z.object({ n: column.uint });
const metaRow = z.object({ value: z.string().regex(/^[0-9a-f]{64}$/) });

/** A `receipts` row decoded. @throws QrwpError INTERNAL naming the column of a corrupt row */
function fromRow(row: unknown): Receipt {
  const r = decodeRow(receiptRow, "receipts", row);
  return {
    paymentHash: r.payment_hash,
    route: r.route,
    amount: r.amount,
    asset: r.asset,
    payer: r.payer,
    mode: r.mode,
    createdAtMs: r.created_at,
  };
}

/** Files from before direct mode lack the `mode` column; every receipt they hold was routed. */
function addModeColumn(db: Database.Database): void {
  const columns = db
    .prepare("PRAGMA table_info(receipts)")
    .all()
    .map((row) => decodeRow(z.object({ name: z.string() }), "table_info(receipts)", row).name);
  if (columns.length > 0 && !columns.includes("mode"))
    db.exec("ALTER TABLE receipts ADD COLUMN mode TEXT NOT NULL DEFAULT 'routed'");
}

/** SQLite receipts; `path` `":memory:"` for a throwaway store. */
export class ReceiptStore {
  readonly #s: SqliteDatabase;
  readonly #insert: Database.Statement;
  readonly #get: Database.Statement;
  readonly #list: Database.Statement;
  readonly #count: Database.Statement;
  /** Claimed, not yet written (payment hash, lower case → receipt). */
  #pending = new Map<string, Receipt>();
  #flushScheduled: NodeJS.Immediate | null = null;
  #syncTimer: NodeJS.Timeout | null = null;

  constructor(path: string) {
    this.#s = openSqlite(path, { label: "receipts", schema: SCHEMA, migrate: addModeColumn });
    const db = this.#s.db;
    this.#insert = db.prepare(
      "INSERT OR IGNORE INTO receipts (payment_hash, route, amount, asset, payer, mode, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    );
    this.#get = db.prepare("SELECT * FROM receipts WHERE payment_hash = ?");
    this.#list = db.prepare("SELECT * FROM receipts ORDER BY created_at DESC, payment_hash LIMIT ?");
    this.#count = db.prepare("SELECT COUNT(*) AS n FROM receipts");
  }

  /**
   * Claims `receipt` unless its payment hash is already there (written or claimed); the write follows
   * within the event-loop turn (see the module docs).
   * @returns true if this call claimed it.
   */
  insertOnce(receipt: Receipt): boolean {
    const key = receipt.paymentHash.toLowerCase();
    if (this.#pending.has(key) || this.#get.get(key) !== undefined) return false;
    this.#pending.set(key, { ...receipt, paymentHash: key });
    this.#flushScheduled ??= setImmediate(() => this.flush());
    return true;
  }

  /**
   * Writes every claimed receipt in one transaction (not fsync'd; see the module docs). Called after each
   * event-loop turn that claimed one, and by the reads and {@link close}.
   */
  flush(): void {
    if (this.#flushScheduled) clearImmediate(this.#flushScheduled);
    this.#flushScheduled = null;
    if (this.#pending.size === 0) return;
    const batch = this.#pending;
    this.#s.transaction(
      () => {
        for (const r of batch.values())
          this.#insert.run(r.paymentHash, r.route, r.amount, r.asset, r.payer, r.mode, r.createdAtMs);
      },
      { durable: false },
    );
    this.#pending = new Map();
    this.#syncTimer ??= setTimeout(() => this.#sync(), RECEIPTS_SYNC_MS).unref();
  }

  /** Syncs the WAL to disk (a passive checkpoint fsyncs it first). */
  #sync(): void {
    this.#syncTimer = null;
    if (this.#s.isOpen) this.#s.db.pragma("wal_checkpoint(PASSIVE)");
  }

  /** The receipt of a payment hash (written or claimed), or null. */
  get(paymentHash: string): Receipt | null {
    const key = paymentHash.toLowerCase();
    const pending = this.#pending.get(key);
    if (pending) return pending;
    const row: unknown = this.#get.get(key);
    return row === undefined ? null : fromRow(row);
  }

  /** The newest `limit` receipts (default 100), newest first. */
  list(limit = 100): Receipt[] {
    this.flush();
    return this.#list.all(limit).map(fromRow);
  }

  /** Number of receipts. */
  count(): number {
    this.flush();
    return decodeRow(countRow, "receipts", this.#count.get()).n;
  }

  /**
   * A 32-byte secret kept in this file under `name` (created at first use): the HMAC key of the stateless
   * direct-mode tickets survives a restart, so the tickets clients cached stay valid.
   */
  secret(name: string): Buffer {
    const get = () => this.#s.sql("SELECT value FROM receipts_meta WHERE key = ?").get(name);
    let row: unknown = get();
    if (row === undefined) {
      this.#s.transaction(() =>
        this.#s
          .sql("INSERT OR IGNORE INTO receipts_meta (key, value) VALUES (?, ?)")
          .run(name, randomBytes(32).toString("hex")),
      );
      row = get();
    }
    return Buffer.from(decodeRow(metaRow, "receipts_meta", row).value, "hex");
  }

  /** Writes what is claimed, syncs it to disk and closes the file. */
  close(): void {
    if (!this.#s.isOpen) return;
    this.flush();
    if (this.#syncTimer) clearTimeout(this.#syncTimer);
    this.#syncTimer = null;
    this.#s.close();
  }
}
