/**
 * The node store's payment tables: `payments` (direct payments both ways and routed payments received, one
 * row per balance proof that carried one) and `mediated_payments` (routed payments we sent, with every
 * attempt), and the newest-first list over both. `NodeStore` delegates to {@link PaymentTables}; rows are
 * decoded by node/store/codecs.ts.
 */
import type { SqliteDatabase } from "../../host/sqlite.js";
import { decodeRow } from "../../host/sqlite.js";
import { paymentAmountRow, seqRow, toMediated, toPayment } from "./codecs.js";
import type {
  ListedPayment,
  MediatedPaymentRecord,
  PaymentCursor,
  PaymentDirection,
  PaymentRecord,
  PaymentStatus,
} from "./types.js";

const mediatedParams = (p: MediatedPaymentRecord) =>
  [
    p.paymentId,
    p.target,
    p.token,
    p.amount.toString(),
    p.maxFee === null ? null : p.maxFee.toString(),
    p.secretHash.toLowerCase(),
    p.secret,
    p.status,
    p.fee.toString(),
    JSON.stringify(p.attempts),
    p.errorCode,
    p.errorMessage,
    p.createdAtMs,
    p.completedAtMs,
    p.deadlineMs,
  ] as const;

/** Direct and routed payments (see the module doc). Every call is durable on return. */
export class PaymentTables {
  readonly #s: SqliteDatabase;

  constructor(s: SqliteDatabase) {
    this.#s = s;
  }

  insertPayment(p: PaymentRecord): void {
    this.#s
      .sql(
        `INSERT INTO payments(payment_id, direction, channel_id, partner, token, amount, nonce, status, error_code,
           error_message, created_at, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        p.paymentId,
        p.direction,
        p.channelId.toString(),
        p.partner,
        p.token,
        p.amount.toString(),
        Number(p.nonce),
        p.status,
        p.errorCode,
        p.errorMessage,
        p.createdAtMs,
        p.completedAtMs,
      );
  }

  /** @returns whether a pending payment changed (false: none with this id, or no longer pending). */
  finishOutgoingPayment(
    paymentId: string,
    status: "completed" | "failed",
    error?: { code: string; message: string },
  ): boolean {
    const { changes } = this.#s
      .sql(
        `UPDATE payments SET status = ?, error_code = ?, error_message = ?, completed_at = ?
         WHERE direction = 'outgoing' AND payment_id = ? AND status = 'pending'`,
      )
      .run(status, error?.code ?? null, error?.message ?? null, Date.now(), paymentId);
    return changes > 0;
  }

  getPayment(paymentId: string): PaymentRecord | null {
    // Two index lookups (the unique outgoing index, then payments_by_id newest first): no sort per call.
    const row: unknown =
      this.#s.sql("SELECT * FROM payments WHERE payment_id = ? AND direction = 'outgoing'").get(paymentId) ??
      this.#s
        .sql(
          "SELECT * FROM payments WHERE payment_id = ? AND direction = 'incoming' ORDER BY created_at DESC LIMIT 1",
        )
        .get(paymentId);
    return row === undefined ? null : toPayment(row);
  }

  getOutgoingPayment(paymentId: string): PaymentRecord | null {
    const row: unknown = this.#s
      .sql("SELECT * FROM payments WHERE payment_id = ? AND direction = 'outgoing'")
      .get(paymentId);
    return row === undefined ? null : toPayment(row);
  }

  /** What an outgoing payment id is used by: a direct payment, a routed one, or nothing (no row decoded). */
  outgoingIdUse(paymentId: string): "direct" | "routed" | null {
    // One statement, two index probes (a statement's call costs more than its probe here).
    const row = this.#s
      .sql(
        `SELECT EXISTS(SELECT 1 FROM payments WHERE payment_id = @id AND direction = 'outgoing') AS direct,
                EXISTS(SELECT 1 FROM mediated_payments WHERE payment_id = @id) AS routed`,
      )
      .get({ id: paymentId }) as { direct: number; routed: number };
    return row.direct === 1 ? "direct" : row.routed === 1 ? "routed" : null;
  }

  getIncomingPayment(channelId: bigint, paymentId: string): PaymentRecord | null {
    const row: unknown = this.#s
      .sql("SELECT * FROM payments WHERE direction = 'incoming' AND channel_id = ? AND payment_id = ?")
      .get(channelId.toString(), paymentId);
    return row === undefined ? null : toPayment(row);
  }

  pendingOutgoingPayments(channelId: bigint): PaymentRecord[] {
    return this.#s
      .sql(
        "SELECT * FROM payments WHERE direction = 'outgoing' AND status = 'pending' AND channel_id = ? ORDER BY nonce",
      )
      .all(channelId.toString())
      .map(toPayment);
  }

  paymentTotals(channelId: bigint): {
    sent: bigint;
    received: bigint;
    sentCount: number;
    receivedCount: number;
  } {
    const rows = this.#s
      .sql("SELECT direction, amount FROM payments WHERE channel_id = ? AND status = 'completed'")
      .all(channelId.toString());
    const totals = { sent: 0n, received: 0n, sentCount: 0, receivedCount: 0 };
    for (const row of rows) {
      const r = decodeRow(paymentAmountRow, "payments", row);
      if (r.direction === "outgoing") {
        totals.sent += BigInt(r.amount);
        totals.sentCount++;
      } else {
        totals.received += BigInt(r.amount);
        totals.receivedCount++;
      }
    }
    return totals;
  }

  insertMediatedPayment(p: MediatedPaymentRecord): void {
    this.#s
      .sql(
        `INSERT INTO mediated_payments(payment_id, target, token, amount, max_fee, secret_hash, secret, status, fee,
           attempts, error_code, error_message, created_at, completed_at, deadline_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(...mediatedParams(p));
  }

  updateMediatedPayment(p: MediatedPaymentRecord): void {
    this.#s
      .sql(
        `INSERT INTO mediated_payments(payment_id, target, token, amount, max_fee, secret_hash, secret, status, fee,
           attempts, error_code, error_message, created_at, completed_at, deadline_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(payment_id) DO UPDATE SET secret = excluded.secret, status = excluded.status, fee = excluded.fee,
           attempts = excluded.attempts, error_code = excluded.error_code, error_message = excluded.error_message,
           completed_at = excluded.completed_at`,
      )
      .run(...mediatedParams(p));
  }

  getMediatedPayment(paymentId: string): MediatedPaymentRecord | null {
    const row: unknown = this.#s.sql("SELECT * FROM mediated_payments WHERE payment_id = ?").get(paymentId);
    return row === undefined ? null : toMediated(row);
  }

  mediatedPaymentByHash(secretHash: string): MediatedPaymentRecord | null {
    const row: unknown = this.#s
      .sql("SELECT * FROM mediated_payments WHERE secret_hash = ? ORDER BY created_at DESC LIMIT 1")
      .get(secretHash.toLowerCase());
    return row === undefined ? null : toMediated(row);
  }

  pendingMediatedPayments(): MediatedPaymentRecord[] {
    return this.#s.sql("SELECT * FROM mediated_payments WHERE status = 'pending'").all().map(toMediated);
  }

  /** See {@link NodeStore.listPayments}: one statement per table, merged newest first. */
  listPayments(query: {
    limit: number;
    status?: PaymentStatus;
    direction?: PaymentDirection;
    before?: PaymentCursor;
  }): { payments: ListedPayment[]; nextCursor: PaymentCursor | null } {
    // One statement per table; each reads its created_at index backwards from the cursor, `limit + 1` rows.
    const params = {
      status: query.status ?? null,
      direction: query.direction ?? null,
      at: query.before?.createdAtMs ?? Number.MAX_SAFE_INTEGER,
      src: query.before?.source ?? 0,
      seq: query.before?.seq ?? 0,
      limit: query.limit + 1,
    };
    const { direction: _direction, ...rest } = params;
    const after = (source: number) =>
      `created_at <= @at AND (created_at < @at OR ${source} < @src OR (${source} = @src AND rowid < @seq))
         AND (@status IS NULL OR status = @status)`;
    const channel = this.#s
      .sql(
        `SELECT rowid AS seq, * FROM payments WHERE ${after(0)} AND (@direction IS NULL OR direction = @direction)
           ORDER BY created_at DESC, rowid DESC LIMIT @limit`,
      )
      .all(params)
      .map((row): ListedPayment => {
        const { seq, created_at } = decodeRow(seqRow, "payments", row);
        return { source: 0, payment: toPayment(row), cursor: { createdAtMs: created_at, source: 0, seq } };
      });
    const routed =
      query.direction === "incoming"
        ? []
        : this.#s
            .sql(
              `SELECT rowid AS seq, * FROM mediated_payments WHERE ${after(1)}
                 ORDER BY created_at DESC, rowid DESC LIMIT @limit`,
            )
            .all(rest)
            .map((row): ListedPayment => {
              const { seq, created_at } = decodeRow(seqRow, "mediated_payments", row);
              return {
                source: 1,
                payment: toMediated(row),
                cursor: { createdAtMs: created_at, source: 1, seq },
              };
            });
    const newerFirst = (a: PaymentCursor, b: PaymentCursor) =>
      b.createdAtMs - a.createdAtMs || b.source - a.source || b.seq - a.seq;
    const merged = [...channel, ...routed].sort((a, b) => newerFirst(a.cursor, b.cursor));
    const page = merged.slice(0, query.limit);
    return {
      payments: page,
      nextCursor: merged.length > query.limit ? (page.at(-1)?.cursor ?? null) : null,
    };
  }
}
