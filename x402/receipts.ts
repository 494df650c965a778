/**
 * The merchant's receipts of x402 payments: one row per payment hash that bought a resource. SQLite
 * (better-sqlite3, WAL, `synchronous = FULL`: a receipt is durable when {@link ReceiptStore.insertOnce}
 * returns). The primary key makes a payment usable exactly once: `insertOnce` is the arbiter between
 * concurrent uses of the same `PAYMENT-SIGNATURE` (the first insert wins, every other use is a replay).
 * Only paid requests add rows; an unpaid 402 never touches this store.
 */
import Database from "better-sqlite3";

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

interface ReceiptRow {
  payment_hash: string;
  route: string;
  amount: string;
  asset: string;
  payer: string | null;
  mode: string;
  created_at: number;
}

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

function fromRow(r: ReceiptRow): Receipt {
  return {
    paymentHash: r.payment_hash,
    route: r.route,
    amount: r.amount,
    asset: r.asset,
    payer: r.payer,
    mode: r.mode === "direct" ? "direct" : "routed",
    createdAtMs: r.created_at,
  };
}

/** SQLite receipts; `path` `":memory:"` for a throwaway store. */
export class ReceiptStore {
  readonly #db: Database.Database;
  readonly #insert: Database.Statement;
  readonly #get: Database.Statement;
  readonly #list: Database.Statement;
  readonly #count: Database.Statement;

  constructor(path: string) {
    this.#db = new Database(path);
    this.#db.pragma("journal_mode = WAL");
    this.#db.pragma("synchronous = FULL");
    this.#db.exec(SCHEMA);
    // Files from before direct mode lack the column; every receipt they hold was routed.
    const columns = this.#db.prepare("PRAGMA table_info(receipts)").all() as { name: string }[];
    if (!columns.some((c) => c.name === "mode"))
      this.#db.exec("ALTER TABLE receipts ADD COLUMN mode TEXT NOT NULL DEFAULT 'routed'");
    this.#insert = this.#db.prepare(
      "INSERT OR IGNORE INTO receipts (payment_hash, route, amount, asset, payer, mode, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    );
    this.#get = this.#db.prepare("SELECT * FROM receipts WHERE payment_hash = ?");
    this.#list = this.#db.prepare("SELECT * FROM receipts ORDER BY created_at DESC, payment_hash LIMIT ?");
    this.#count = this.#db.prepare("SELECT COUNT(*) AS n FROM receipts");
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
    const row = this.#get.get(paymentHash.toLowerCase()) as ReceiptRow | undefined;
    return row ? fromRow(row) : null;
  }

  /** The newest `limit` receipts (default 100), newest first. */
  list(limit = 100): Receipt[] {
    return (this.#list.all(limit) as ReceiptRow[]).map(fromRow);
  }

  /** Number of receipts. */
  count(): number {
    return (this.#count.get() as { n: number }).n;
  }

  close(): void {
    this.#db.close();
  }
}
