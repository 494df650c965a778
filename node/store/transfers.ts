/**
 * The node store's tables of mediated transfers: `transfers` (each role's state machine, protocol/transfers.ts,
 * as JSON), `secrets` (every secret we learnt, by secret hash) and `invoices` (payment hashes whose secret we
 * chose). `NodeStore` delegates to {@link TransferTables}; rows are decoded by node/store/codecs.ts.
 */
import type { SqliteDatabase } from "../../host/sqlite.js";
import { decodeRow } from "../../host/sqlite.js";
import { secretRow, toInvoice, toJson, toTransfer } from "./codecs.js";
import type { InvoiceRecord, TransferRecord } from "./types.js";

/** Transfers, secrets and invoices (see the module doc). Every call is durable on return. */
export class TransferTables {
  readonly #s: SqliteDatabase;

  constructor(s: SqliteDatabase) {
    this.#s = s;
  }

  putTransfer(t: TransferRecord): void {
    const now = Date.now();
    this.#s
      .sql(
        `INSERT INTO transfers(id, role, secret_hash, payment_id, state, done, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(id) DO UPDATE SET state = excluded.state, done = excluded.done, updated_at = excluded.updated_at`,
      )
      .run(t.id, t.role, t.secretHash, t.paymentId, toJson(t.state), t.done ? 1 : 0, now, now);
  }

  getTransfer(id: string): TransferRecord | null {
    const row: unknown = this.#s.sql("SELECT * FROM transfers WHERE id = ?").get(id);
    return row === undefined ? null : toTransfer(row);
  }

  transfersByHash(secretHash: string): TransferRecord[] {
    return this.#s
      .sql("SELECT * FROM transfers WHERE secret_hash = ? ORDER BY created_at")
      .all(secretHash.toLowerCase())
      .map(toTransfer);
  }

  /** Ids of the transfers with this secret hash, oldest first (no state decoded). */
  transferIdsByHash(secretHash: string): string[] {
    return this.#s
      .sql("SELECT id FROM transfers WHERE secret_hash = ? ORDER BY created_at")
      .pluck()
      .all(secretHash.toLowerCase()) as string[];
  }

  /** Deletes the finished transfers last written before `updatedBeforeMs` (one statement). @returns how many. */
  deleteDoneTransfers(updatedBeforeMs: number): number {
    return this.#s.sql("DELETE FROM transfers WHERE done = 1 AND updated_at < ?").run(updatedBeforeMs)
      .changes;
  }

  openTransfers(): TransferRecord[] {
    return this.#s.sql("SELECT * FROM transfers WHERE done = 0 ORDER BY created_at").all().map(toTransfer);
  }

  putSecret(secretHash: string, secret: string): void {
    this.#s
      .sql("INSERT OR IGNORE INTO secrets(secret_hash, secret, learned_at) VALUES (?, ?, ?)")
      .run(secretHash.toLowerCase(), secret.toLowerCase(), Date.now());
  }

  getSecret(secretHash: string): string | null {
    const row: unknown = this.#s
      .sql("SELECT secret FROM secrets WHERE secret_hash = ?")
      .get(secretHash.toLowerCase());
    return row === undefined ? null : decodeRow(secretRow, "secrets", row).secret;
  }

  insertInvoice(i: InvoiceRecord): void {
    this.#s
      .sql(
        `INSERT INTO invoices(payment_hash, secret, token, amount, description, status, paid_amount, created_at,
           expires_at, paid_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        i.paymentHash.toLowerCase(),
        i.secret,
        i.token,
        i.amount.toString(),
        i.description,
        i.status,
        i.paidAmount.toString(),
        i.createdAtMs,
        i.expiresAtMs,
        i.paidAtMs,
      );
  }

  getInvoice(paymentHash: string): InvoiceRecord | null {
    const row: unknown = this.#s
      .sql("SELECT * FROM invoices WHERE payment_hash = ?")
      .get(paymentHash.toLowerCase());
    return row === undefined ? null : toInvoice(row);
  }

  deleteExpiredInvoices(expiredBeforeMs: number): number {
    return this.#s.sql("DELETE FROM invoices WHERE status <> 'paid' AND expires_at < ?").run(expiredBeforeMs)
      .changes;
  }

  markInvoicePaid(paymentHash: string, paidAmount: bigint): void {
    this.#s
      .sql(
        "UPDATE invoices SET status = 'paid', paid_amount = ?, paid_at = ? WHERE payment_hash = ? AND status <> 'paid'",
      )
      .run(paidAmount.toString(), Date.now(), paymentHash.toLowerCase());
  }
}
