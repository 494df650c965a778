/**
 * The merchant's receipts of x402 payments: one row per payment hash that bought a resource. SQLite
 * (host/sqlite.ts: WAL, `synchronous = FULL`: a receipt is durable when {@link ReceiptStore.insertOnce}
 * returns; rows read are decoded by a codec, a corrupt one is `QrwpError("INTERNAL")` naming the column). The primary key makes a payment usable exactly once: `insertOnce` is the arbiter between
 * concurrent uses of the same `PAYMENT-SIGNATURE` (the first insert wins, every other use is a replay).
 * Only paid requests add rows; an unpaid 402 never touches this store.
 */
import type Database from "better-sqlite3";
import { z } from "zod";
import { column, decodeRow, openSqlite, type SqliteDatabase } from "../host/sqlite.js";

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

  /** Records `receipt` unless its payment hash is already there. @returns true if this call inserted it. */
  insertOnce(receipt: Receipt): boolean {
    const r = this.#insert.run(
      receipt.paymentHash.toLowerCase(),
      receipt.route,
      receipt.amount,
      receipt.asset,
      receipt.payer,
      receipt.mode,
      receipt.createdAtMs,
    );
    return r.changes === 1;
  }

  /** The receipt of a payment hash, or null. */
  get(paymentHash: string): Receipt | null {
    const row: unknown = this.#get.get(paymentHash.toLowerCase());
    return row === undefined ? null : fromRow(row);
  }

  /** The newest `limit` receipts (default 100), newest first. */
  list(limit = 100): Receipt[] {
    return this.#list.all(limit).map(fromRow);
  }

  /** Number of receipts. */
  count(): number {
    return decodeRow(countRow, "receipts", this.#count.get()).n;
  }

  close(): void {
    this.#s.close();
  }
}
