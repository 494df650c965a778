/**
 * The JSON shapes of the node's HTTP API (and of its `GET /v1/events` stream): bigints as decimal strings,
 * secrets never shown while they matter.
 */
import type { AcceptedDirectTransfer, ChannelView } from "../channels/service.js";
import type { RouteCandidate } from "../payments/service.js";
import type { InvoiceRecord, MediatedPaymentRecord, PaymentRecord } from "../store/store.js";

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

/** A route as `GET /v1/routes` shows it. */
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
