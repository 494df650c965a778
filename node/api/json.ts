/**
 * How the node's HTTP API shows its records: JSON with amounts, nonces and ids as decimal strings (token base
 * units), and the few parsers of API-only encodings (payment cursors, base64url transfers).
 */
import { QrwpError } from "../../protocol/index.js";
import type { AcceptedDirectTransfer, ChannelView } from "../channels/service.js";
import type { RouteCandidate } from "../payments/service.js";
import type {
  InvoiceRecord,
  ListedPayment,
  MediatedPaymentRecord,
  PaymentCursor,
  PaymentRecord,
} from "../store/store.js";

export function channelJson(c: ChannelView) {
  return {
    channelId: c.channelId.toString(),
    partner: c.partner,
    token: c.token,
    state: c.state,
    settleTimeoutSeconds: c.settleTimeoutSeconds,
    ourDeposit: c.ourDeposit.toString(),
    partnerDeposit: c.partnerDeposit.toString(),
    ourWithdraw: c.ourWithdraw.toString(),
    partnerWithdraw: c.partnerWithdraw.toString(),
    pendingWithdraw: {
      ours: c.pendingWithdraw.ours?.toString() ?? null,
      partner: c.pendingWithdraw.partner?.toString() ?? null,
    },
    ourBalance: c.ourBalance.toString(),
    partnerBalance: c.partnerBalance.toString(),
    ourNonce: c.ourNonce.toString(),
    partnerNonce: c.partnerNonce.toString(),
    ourLocked: c.ourLocked.toString(),
    partnerLocked: c.partnerLocked.toString(),
    pendingLocks: c.pendingLocks,
    closedAtSeconds: c.closedAtSeconds,
    closingParticipant: c.closingParticipant,
    totals: {
      sent: c.totals.sent.toString(),
      received: c.totals.received.toString(),
      sentCount: c.totals.sentCount,
      receivedCount: c.totals.receivedCount,
    },
  };
}

export function paymentJson(p: PaymentRecord) {
  return {
    paymentId: p.paymentId,
    direction: p.direction,
    channelId: p.channelId.toString(),
    partner: p.partner,
    token: p.token,
    amount: p.amount.toString(),
    nonce: p.nonce.toString(),
    status: p.status,
    error: p.errorCode ? { code: p.errorCode, message: p.errorMessage } : null,
    createdAtMs: p.createdAtMs,
    completedAtMs: p.completedAtMs,
  };
}

/**
 * A payment of the `payments` table as `GET /v1/payments[/:id]` show it: kind `direct`, or `routed` for a
 * routed payment received (its row has nonce 0: the HTLC's balance proofs are not one payment's).
 */
export function channelPaymentJson(p: PaymentRecord) {
  return { kind: p.direction === "incoming" && p.nonce === 0n ? "routed" : "direct", ...paymentJson(p) };
}

/** `GET /v1/payments`' `before` / `nextCursor`: `<createdAtMs>-<source>-<seq>` (see `PaymentCursor`). */
export function cursorText(c: PaymentCursor): string {
  return `${c.createdAtMs}-${c.source}-${c.seq}`;
}
export function parseCursor(text: string): PaymentCursor {
  const [createdAtMs, source, seq] = text.split("-").map(Number);
  if (!Number.isSafeInteger(createdAtMs) || !Number.isSafeInteger(seq) || (source !== 0 && source !== 1))
    throw new QrwpError("INVALID_ARGUMENT", "before must be a nextCursor of GET /v1/payments", {
      field: "before",
    });
  return { createdAtMs: createdAtMs as number, source, seq: seq as number };
}
export const listedPaymentJson = (l: ListedPayment) =>
  l.source === 0 ? channelPaymentJson(l.payment) : mediatedPaymentJson(l.payment);

/** A multi-hop payment as the API shows it (never the secret while pending). */
export function mediatedPaymentJson(p: MediatedPaymentRecord) {
  return {
    paymentId: p.paymentId,
    kind: "routed",
    direction: "outgoing",
    target: p.target,
    token: p.token,
    amount: p.amount.toString(),
    fee: p.fee.toString(),
    maxFee: p.maxFee === null ? null : p.maxFee.toString(),
    paymentHash: p.secretHash,
    preimage: p.status === "completed" ? p.secret : null,
    status: p.status,
    route: p.attempts.at(-1)?.route ?? [],
    attempts: p.attempts,
    error: p.errorCode ? { code: p.errorCode, message: p.errorMessage } : null,
    createdAtMs: p.createdAtMs,
    completedAtMs: p.completedAtMs,
  };
}

/** An invoice as the API shows it (the secret stays inside the node). */
export function invoiceJson(i: InvoiceRecord, payee: string) {
  return {
    paymentHash: i.paymentHash,
    payee,
    token: i.token,
    amount: i.amount.toString(),
    description: i.description,
    status: i.status,
    paidAmount: i.paidAmount.toString(),
    createdAtMs: i.createdAtMs,
    expiresAtMs: i.expiresAtMs,
    paidAtMs: i.paidAtMs,
  };
}

/** `POST /v1/transfers/direct`'s answer: bigints as decimal strings. */
export function acceptedDirectTransferJson(a: AcceptedDirectTransfer) {
  return {
    paymentId: a.paymentId,
    payments: a.payments.map((x) => ({ paymentId: x.paymentId, amount: x.amount.toString() })),
    channelId: a.channelId.toString(),
    nonce: a.nonce.toString(),
    amount: a.amount.toString(),
    token: a.token,
    partner: a.partner,
    processed: {
      channelId: a.processed.channelId.toString(),
      nonce: a.processed.nonce.toString(),
      signature: a.processed.signature,
    },
  };
}

/**
 * Decodes unpadded base64url strictly (the canonical encoding of the bytes only).
 * @throws QrwpError INVALID_ARGUMENT naming `field`
 */
export function fromBase64Url(text: string, field: string): Uint8Array {
  const bytes = Buffer.from(text, "base64url");
  if (bytes.toString("base64url") !== text) {
    throw new QrwpError("INVALID_ARGUMENT", `${field} must be unpadded base64url`, { field });
  }
  return new Uint8Array(bytes);
}

export function routeJson(r: RouteCandidate) {
  return {
    fee: r.fee.toString(),
    totalAmount: (r.hops[0]?.amount ?? 0n).toString(),
    hops: r.hops.map((h) => ({
      address: h.address,
      channelId: h.channelId.toString(),
      amount: h.amount.toString(),
      expiration: h.expiration.toString(),
      fee: h.fee.toString(),
    })),
  };
}
