/**
 * Our direct payments (Raiden's direct transfer): a payment to a channel partner is one `direct` change in our
 * next balance update (`OutgoingProofs`), its record `pending` in the proof's transaction and `completed`
 * or `failed` with the partner's answer. Retries under the same payment id never sign twice.
 */
import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import {
  QrwpError,
  assertArgument,
  isQrwpError,
  normalizeAddress,
  type ErrorCode,
} from "../../protocol/index.js";
import { assertSamePayment } from "../payment-retry.js";
import type { NodeStore, PaymentRecord } from "../store/store.js";
import type { Outcome, OutgoingProofs } from "./outgoing.js";
import type { ChannelRegistry } from "./registry.js";
import { eqAddr, type Live, type PayParams } from "./types.js";

/**
 * CONFLICT (field "paymentId") if `paymentId` names an outgoing payment of ours already, direct or routed:
 * one x402 invoice is paid one way or the other, never both.
 */
export function assertNewOutgoingId(store: NodeStore, paymentId: string): void {
  if (store.outgoingIdUse(paymentId) !== null) {
    throw new QrwpError("CONFLICT", `payment ${paymentId} already exists`, { field: "paymentId", paymentId });
  }
}

/**
 * Stores a pending direct payment with its proof's nonce (inside the proof's transaction).
 * @returns the record as stored. @throws QrwpError CONFLICT when the payment id is taken
 */
export function insertDirectPayment(store: NodeStore, payment: PaymentRecord, nonce: bigint): PaymentRecord {
  assertNewOutgoingId(store, payment.paymentId); // a concurrent call with the same id may have got here first
  const stored = { ...payment, nonce, createdAtMs: Date.now() };
  store.insertPayment(stored);
  return stored;
}

/** What {@link DirectPayments} needs. */
export interface DirectPaymentsInit {
  store: NodeStore;
  registry: ChannelRegistry;
  outgoing: OutgoingProofs;
  log: Logger;
}

export class DirectPayments {
  readonly #init: DirectPaymentsInit;

  constructor(init: DirectPaymentsInit) {
    this.#init = init;
  }

  /**
   * A payment by id: the outgoing one if we sent it, else the most recent incoming one with that id.
   * @throws QrwpError("PAYMENT_NOT_FOUND")
   */
  getPayment(paymentId: string): PaymentRecord {
    const p = this.#init.store.getPayment(paymentId);
    if (!p) throw new QrwpError("PAYMENT_NOT_FOUND", `payment ${paymentId} not found`, { paymentId });
    return p;
  }

  /** What an outgoing payment id is used by: a direct payment, a routed one, or nothing (one statement). */
  outgoingIdUse(paymentId: string): "direct" | "routed" | null {
    return this.#init.store.outgoingIdUse(paymentId);
  }

  /** Our outgoing direct payment with this id (any status), or null. */
  outgoingPayment(paymentId: string): PaymentRecord | null {
    return this.#init.store.getOutgoingPayment(paymentId);
  }

  /**
   * Pays `amount` base units of `token` to `target`, a direct channel partner: signs a new balance proof
   * (nonce + 1, transferredAmount + amount), persists it, sends it and waits for the partner's Processed.
   *
   * Outcomes: the payment `completed`; or `pending` when the proof was signed and stored but its delivery
   * failed (partner offline, timeout, dropped session): it completes later by re-delivery (before our next
   * proof on the channel, by the re-delivery timer, or on a retry), so the caller must not pay again under a new
   * id. A retry with the same `paymentId` and the same target, token and amount never signs a second proof:
   * it re-delivers a pending one (if the channel is still open) and returns the payment as it then stands.
   * @throws QrwpError INVALID_ARGUMENT | CHANNEL_NOT_FOUND | CHANNEL_STATE | INSUFFICIENT_CAPACITY |
   *   PEER_REJECTED (the partner refused it: status failed) | PEER_OFFLINE | HANDSHAKE_FAILED | TIMEOUT (only
   *   when nothing was signed for this payment) | CONFLICT (paymentId used by a routed payment, or by a direct
   *   one with another target, token or amount: `details.field` names the differing field)
   * `options.newId`: the caller has just seen that `params.paymentId` names no outgoing payment (`payAny`), so
   * the retry lookups are skipped; a reused id is still refused (CONFLICT) where the payment is stored, in
   * the proof's transaction.
   */
  async pay(params: PayParams, options: { newId?: boolean } = {}): Promise<PaymentRecord> {
    const existing =
      params.paymentId === undefined || options.newId === true
        ? null
        : this.#init.store.getOutgoingPayment(params.paymentId);
    if (existing) return this.#payAgain(existing, params);
    const { live, payment } = this.newDirectPayment(params, options);
    let result: Outcome;
    try {
      result = await this.#init.outgoing.enqueue(
        live,
        { kind: "direct", paymentId: payment.paymentId, amount: payment.amount },
        { payment },
      );
    } catch (err) {
      // Signed and stored, delivery outcome unknown: the payment is pending, not failed.
      const stored = this.#init.store.getOutgoingPayment(payment.paymentId);
      if (stored?.status === "pending" && isQrwpError(err) && err.details.pending === true) {
        this.#init.log.warn(
          { paymentId: payment.paymentId, code: err.code, reason: err.message },
          "direct payment signed but not acknowledged yet: pending",
        );
        return stored;
      }
      throw err;
    }
    if ("raced" in result) {
      // A call with the same id got its proof signed first: this one is answered as its retry.
      const raced = this.#init.store.getOutgoingPayment(payment.paymentId);
      // The call it raced with stored nothing (refused, or the partner unreachable): the id is free again.
      if (!raced) return this.pay(params);
      return this.#payAgain(raced, params);
    }
    if (!result.ok && this.#init.store.getOutgoingPayment(payment.paymentId) === null) {
      throw new QrwpError(result.code as ErrorCode, result.message, { paymentId: payment.paymentId }); // never sent
    }
    if (!result.ok) {
      throw new QrwpError(
        "PEER_REJECTED",
        `partner refused the transfer: ${result.code}: ${result.message}`,
        {
          paymentId: payment.paymentId,
          peerCode: result.code,
        },
      );
    }
    return this.#init.store.getOutgoingPayment(payment.paymentId) as PaymentRecord;
  }

  /**
   * A retry of our outgoing direct payment `existing` (same `paymentId`): CONFLICT naming the first differing
   * field of target, token and amount; else, if still pending on an open channel, its proof is re-delivered
   * (inside the channel's queue; an undelivered re-send leaves it pending) and the payment is returned as it
   * then stands. Never signs anything new.
   */
  async #payAgain(existing: PaymentRecord, params: PayParams): Promise<PaymentRecord> {
    this.#assertSamePayment(existing, params);
    const live = this.#init.registry.find(existing.channelId);
    if (existing.status !== "pending" || !live) return existing;
    return (await live.queue.add(() => this.#redeliverLocked(live, existing.paymentId))) as PaymentRecord;
  }

  /** CONFLICT (field "target" | "token" | "amount") unless `params` ask for the payment `existing` is. */
  #assertSamePayment(existing: PaymentRecord, params: PayParams): void {
    assertSamePayment(existing.paymentId, [
      ["target", eqAddr(existing.partner, normalizeAddress(params.target, "target"))],
      ["token", eqAddr(existing.token, normalizeAddress(params.token, "token"))],
      ["amount", existing.amount === params.amount],
    ]);
  }

  /**
   * Inside `live`'s queue: re-delivers the pending proofs of the channel if the payment `paymentId` (ours, on
   * this channel) is still pending and the channel open; returns the payment as it then stands.
   */
  async #redeliverLocked(live: Live, paymentId: string): Promise<PaymentRecord> {
    const now = this.#init.store.getOutgoingPayment(paymentId) as PaymentRecord;
    if (
      now.status === "pending" &&
      now.channelId === live.record.channelId &&
      live.record.state === "opened"
    ) {
      try {
        await this.#init.outgoing.resendPending(live);
      } catch (err) {
        if (!(isQrwpError(err) && err.details.pending === true)) throw err;
      }
    }
    return this.#init.store.getOutgoingPayment(paymentId) as PaymentRecord;
  }

  /** The open channel for a direct payment and its (not yet stored) pending record; CONFLICT on a reused id. */
  newDirectPayment(
    params: PayParams,
    options: { newId?: boolean } = {},
  ): { live: Live; payment: PaymentRecord } {
    const target = normalizeAddress(params.target, "target");
    const token = normalizeAddress(params.token, "token");
    assertArgument(params.amount > 0n, "amount must be > 0", "amount", params.amount);
    const paymentId = params.paymentId ?? randomUUID();
    const live = [...this.#init.registry.all()].find(
      (l) => eqAddr(l.record.partner, target) && eqAddr(l.record.token, token) && l.record.state === "opened",
    );
    if (!live) {
      throw new QrwpError("CHANNEL_NOT_FOUND", `no open channel with ${target} for token ${token}`, {
        target,
        token,
      });
    }
    if (options.newId !== true && params.paymentId !== undefined)
      assertNewOutgoingId(this.#init.store, paymentId);
    const payment: PaymentRecord = {
      paymentId,
      direction: "outgoing",
      channelId: live.record.channelId,
      partner: live.record.partner,
      token: live.record.token,
      amount: params.amount,
      nonce: 0n,
      status: "pending",
      errorCode: null,
      errorMessage: null,
      createdAtMs: Date.now(),
      completedAtMs: null,
    };
    return { live, payment };
  }

  /** Stores a pending direct payment with its proof's nonce (see the module function); returns it as stored. */
  insertDirectPayment(payment: PaymentRecord, nonce: bigint): PaymentRecord {
    return insertDirectPayment(this.#init.store, payment, nonce);
  }
}
