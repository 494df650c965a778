/**
 * The outgoing balance-proof path (Raiden's mediated/direct transfer rules, LDK's persist-before-send, a
 * Lightning commitment covering many HTLC updates): every change to OUR balance proofs on a channel (direct
 * payment, lock, unlock, lock expiry) waits in the channel's outbox; one flush at a time, in the channel's
 * queue, folds everything waiting (up to `MAX_BATCH_CHANGES`) into ONE BalanceUpdate: build the next end
 * change by change (a change we cannot afford is refused alone), reach the partner, sign (EIP-712 secp256k1,
 * plus ML-DSA-65 evidence when due: docs/PROTOCOL.md §7.4), persist (proof, message and every change's rows
 * in one transaction), send, record the partner's answer for all of them. Changes arriving while an update
 * is in flight go into the next one. A proof whose answer never came stays `pending` and is re-delivered,
 * same bytes: before the next proof on the channel, at start, on a retry under the same payment id, and by
 * {@link OutgoingProofs.redeliverDue}. When an update carries ML-DSA-65 evidence, and sending it alone, is
 * `evidence.ts`.
 */
import type { Logger } from "pino";
import {
  MAX_BATCH_CHANGES,
  QrwpError,
  balanceDataOf,
  decodeEnvelope,
  distributableAmount,
  encodeEnvelope,
  findLock,
  lockChangeOf,
  isQrwpError,
  secretHashOf,
  signBalanceProof,
  withDirect,
  withLock,
  withUnlock,
  withoutLock,
  type BalanceChange,
  type BalanceProof,
  type ChannelEnd,
  type ChannelMessage,
  type Lock,
  type NodeKeys,
  type SignedBalanceProof,
  type TransferDescription,
} from "../../protocol/index.js";
import type { Deployment } from "../../chain/index.js";
import { errorFields } from "../../host/session-transport.js";
import type { NodeStore, PaymentRecord, StoredProof } from "../store/store.js";
import type { ChainCalls } from "./chain-calls.js";
import type { Partners } from "./partners.js";
import { ourFundsOf, type ChannelRegistry } from "./registry.js";
import { assertNewOutgoingId, insertDirectPayment } from "./direct-payments.js";
import { EvidenceSender, type EvidencePolicy } from "./evidence.js";
import { RESEND_AFTER_MS, endOf, type Live, type OutboundChange, type ProofDelivery } from "./types.js";

/** What {@link OutgoingProofs} needs. */
export interface OutgoingProofsInit {
  store: NodeStore;
  keys: NodeKeys;
  deployment: Deployment;
  registry: ChannelRegistry;
  chain: ChainCalls;
  partners: Partners;
  log: Logger;
  /** Default: {@link DEFAULT_EVIDENCE_EVERY_UPDATES}, {@link DEFAULT_EVIDENCE_DELAY_MS}. */
  evidence?: Partial<EvidencePolicy>;
}

/** How a change in the outbox ended: its update's delivery, or `raced` (see `OutboundChange`). */
export type Outcome = ProofDelivery | { raced: true };

/** `end` after one change (the same rules the receiver applies). */
function applyChange(end: ChannelEnd, change: BalanceChange): ChannelEnd {
  switch (change.kind) {
    case "direct":
      return withDirect(end, change.amount);
    case "lock":
      return withLock(end, change.lock);
    case "unlock":
      return withUnlock(end, secretHashOf(change.secret));
    case "expire":
      return withoutLock(end, change.secretHash);
  }
}

/** The ids of the direct payments a message of ours carries (a DirectTransfer or a BalanceUpdate's). */
export function directPaymentIdsOf(body: ChannelMessage): string[] {
  if (body.type === "DirectTransfer") return [body.paymentId];
  if (body.type === "BalanceUpdate") {
    return body.changes.flatMap((c) => (c.kind === "direct" ? [c.paymentId] : []));
  }
  return [];
}

export class OutgoingProofs {
  readonly #store: NodeStore;
  readonly #keys: NodeKeys;
  readonly #deployment: Deployment;
  readonly #registry: ChannelRegistry;
  readonly #chain: ChainCalls;
  readonly #partners: Partners;
  readonly #log: Logger;
  /** Proofs signed for HTTP delivery: {@link redeliverDue} gives them a head start before re-sending over libp2p. */
  readonly #heldForHttp = new WeakSet<StoredProof>();
  /** Our ML-DSA-65 evidence: when an update carries it, and sending it alone (docs/PROTOCOL.md §7.4). */
  readonly evidence: EvidenceSender;

  constructor(init: OutgoingProofsInit) {
    this.#store = init.store;
    this.#keys = init.keys;
    this.#deployment = init.deployment;
    this.#registry = init.registry;
    this.#chain = init.chain;
    this.#partners = init.partners;
    this.#log = init.log;
    this.evidence = new EvidenceSender({ ...init, address: init.registry.address });
  }

  /** Stops the evidence timers (the node is shutting down). */
  stop(): void {
    this.evidence.stop();
  }

  /** Marks a proof signed for HTTP delivery (x402 direct streaming): libp2p re-delivery waits for it. */
  holdForHttp(stored: StoredProof): void {
    this.#heldForHttp.add(stored);
  }

  /** After a restart: re-delivers, in each open channel's queue, the proofs that were never answered. */
  resumePending(): void {
    for (const live of this.#registry.all()) {
      if (live.record.state === "opened") this.evidence.resume(live);
      if (live.record.state === "opened" && live.ourPending.length > 0) {
        void live.queue
          .add(() => this.resendPending(live))
          .catch((err: unknown) =>
            this.#log.warn(
              { channelId: live.record.channelId.toString(), err: errorFields(err) },
              "resend after restart failed; will retry on next payment",
            ),
          );
      }
    }
  }

  /**
   * Re-delivers the pending proofs of every open channel that are due (a proof signed for HTTP delivery
   * once older than {@link RESEND_AFTER_MS}); failures are logged and retried at the next call.
   */
  async redeliverDue(): Promise<void> {
    const due = Date.now() - RESEND_AFTER_MS;
    for (const live of this.#registry.all()) {
      if (live.record.state !== "opened") continue;
      if (!live.ourPending.some((p) => !this.#heldForHttp.has(p) || p.createdAtMs <= due)) continue;
      await live.queue
        .add(() => this.resendPending(live))
        .catch((err: unknown) =>
          this.#log.warn(
            { channelId: live.record.channelId.toString(), err: errorFields(err) },
            "re-delivery failed; will retry",
          ),
        );
    }
  }

  /**
   * Adds `lock` on the channel in our next balance update (a LockedTransfer change). `persist` runs inside
   * the transaction that stores the proof carrying the lock (see `OutboundChange.persist`).
   * @returns the delivery outcome; `ok: false` means the partner refused it (no lock exists).
   * @throws QrwpError CHANNEL_NOT_FOUND | CHANNEL_STATE | INSUFFICIENT_CAPACITY | TOO_MANY_LOCKS before
   *   anything is sent; PEER_OFFLINE | HANDSHAKE_FAILED | TIMEOUT when the outcome is unknown (the proof
   *   stays pending and is re-sent before the next one).
   */
  async sendLockedTransfer(
    channelId: bigint,
    lock: Lock,
    transfer: TransferDescription,
    persist?: () => void,
  ): Promise<ProofDelivery> {
    const live = this.#registry.get(channelId);
    return (await this.enqueue(live, lockChangeOf(transfer, lock), { persist })) as ProofDelivery;
  }

  /**
   * Pays our pending lock for `sha256(secret)` off-chain (an Unlock change). A lock that is no longer pending
   * is a no-op. Allowed while the channel is closing.
   * @throws as {@link sendLockedTransfer} when the outcome is unknown.
   */
  async sendUnlock(channelId: bigint, secret: string, paymentId: string): Promise<ProofDelivery> {
    const live = this.#registry.get(channelId);
    return (await this.enqueue(live, { kind: "unlock", paymentId, secret })) as ProofDelivery;
  }

  /** Removes our pending lock for `secretHash` (a LockExpired change). A lock no longer pending is a no-op. */
  async sendLockExpired(channelId: bigint, secretHash: string): Promise<ProofDelivery> {
    const live = this.#registry.get(channelId);
    return (await this.enqueue(live, { kind: "expire", secretHash })) as ProofDelivery;
  }

  /**
   * Puts a change in the channel's outbox and makes sure a flush is queued; settles with its update's
   * outcome (see `OutboundChange`). A direct payment gives its pending `payment` record (stored with the
   * proof); `persist` runs in the proof's transaction.
   */
  enqueue(
    live: Live,
    change: BalanceChange,
    options: { payment?: PaymentRecord; persist?: (() => void) | undefined } = {},
  ): Promise<Outcome> {
    const promise = new Promise<Outcome>((resolve, reject) => {
      const item: OutboundChange = { change, resolve, reject };
      if (options.payment) item.payment = options.payment;
      if (options.persist) item.persist = options.persist;
      live.outbox.push(item);
    });
    this.#scheduleFlush(live);
    return promise;
  }

  #scheduleFlush(live: Live): void {
    if (live.flushQueued) return;
    live.flushQueued = true;
    void live.queue
      .add(() => this.#flush(live))
      .catch((err: unknown) =>
        this.#log.error(
          { channelId: live.record.channelId.toString(), err: errorFields(err) },
          "flush failed",
        ),
      );
  }

  /**
   * Inside the channel's queue: takes what waits in the outbox (up to {@link MAX_BATCH_CHANGES}) and sends it
   * as one update; every item is settled exactly once (an unexpected error rejects those still open).
   */
  async #flush(live: Live): Promise<void> {
    // Let the event loop's current round of input (HTTP requests, messages read together) reach the outbox
    // first: one turn of latency for a fuller update (and fewer updates, each one round trip).
    if (live.outbox.length < MAX_BATCH_CHANGES) await new Promise((resolve) => setImmediate(resolve));
    live.flushQueued = false;
    const items = live.outbox.splice(0, MAX_BATCH_CHANGES);
    if (live.outbox.length > 0) this.#scheduleFlush(live);
    if (items.length === 0) return;
    const open = new Set(items);
    const settle = (item: OutboundChange, outcome: Outcome | { error: unknown }) => {
      if (!open.delete(item)) return;
      if ("error" in outcome) item.reject(outcome.error);
      else item.resolve(outcome);
    };
    const raced: OutboundChange[] = [];
    try {
      await this.#sendBatch(live, items, settle, raced);
    } catch (err) {
      for (const item of [...open]) if (!raced.includes(item)) settle(item, { error: err });
    } finally {
      // Same-id duplicates are answered once the first one's proof is stored (as a retry of it).
      for (const item of raced) settle(item, { raced: true });
    }
  }

  /** Whether a change may go out while the channel is closing (only what pays or removes existing locks). */
  static #allowedWhileClosing(change: BalanceChange): boolean {
    return change.kind === "unlock" || change.kind === "expire";
  }

  /**
   * Builds, signs, persists and delivers one update for `items` (see {@link #flush}): refuses items the
   * channel's state or our capacity does not allow, answers no-ops and same-id duplicates, and settles the
   * rest with the update's outcome (or rejects them, outcome unknown, by throwing).
   */
  async #sendBatch(
    live: Live,
    items: OutboundChange[],
    settle: (item: OutboundChange, outcome: Outcome | { error: unknown }) => void,
    raced: OutboundChange[],
  ): Promise<void> {
    const refuseByState = (list: OutboundChange[]) =>
      list.filter((item) => {
        const allowed =
          live.record.state === "opened" &&
          (!live.closing || OutgoingProofs.#allowedWhileClosing(item.change));
        if (!allowed) settle(item, { error: this.#registry.stateError(live, "opened") });
        return allowed;
      });
    let pending = refuseByState(items);
    if (pending.length === 0) return;
    await this.#resendBeforeNew(live);
    pending = refuseByState(pending);
    let end = live.ourEnd;
    const included: OutboundChange[] = [];
    const ids = new Set<string>();
    const deposits = { refreshed: false };
    for (const item of pending) {
      const change = item.change;
      try {
        switch (change.kind) {
          case "direct": {
            const use = ids.has(change.paymentId) ? "direct" : this.#store.outgoingIdUse(change.paymentId);
            if (use === "direct") {
              raced.push(item);
              continue;
            }
            if (use !== null) assertNewOutgoingId(this.#store, change.paymentId); // routed: CONFLICT
            break;
          }
          case "lock":
            break;
          case "unlock":
          case "expire": {
            const secretHash = change.kind === "unlock" ? secretHashOf(change.secret) : change.secretHash;
            if (!findLock(end, secretHash)) {
              settle(item, { ok: true, nonce: live.ourLatestNonce }); // no longer pending: nothing to do
              continue;
            }
            break;
          }
        }
        const next = applyChange(end, change);
        await this.assertAffordable(live, end, next, deposits);
        if (change.kind === "direct") ids.add(change.paymentId);
        end = next;
        included.push(item);
      } catch (err) {
        settle(item, { error: err });
      }
    }
    // The awaits above may have let a close or a partner's cooperative settle begin.
    const sending = refuseByState(included);
    if (sending.length === 0) return;
    if (sending.length !== included.length) {
      // `end` folded in a change that is now refused: rebuild it from the survivors.
      end = sending.reduce((acc, item) => applyChange(acc, item.change), live.ourEnd);
    }
    // Reach the partner before anything is signed or stored: an offline partner is a clean failure.
    const unreachable = await this.#partners.reach(live.record.partner);
    if (unreachable) {
      for (const item of sending) settle(item, { ok: false, ...unreachable });
      return;
    }
    const changes = sending.map((item) => item.change);
    const { stored, body } = this.signAndPersist(
      live,
      end,
      (balanceProof) => ({ type: "BalanceUpdate", changes, balanceProof }),
      (nonce) => {
        const payments: PaymentRecord[] = [];
        for (const item of sending) {
          if (item.payment) payments.push(insertDirectPayment(this.#store, item.payment, nonce));
          item.persist?.();
        }
        return payments;
      },
    );
    const delivery = await this.#deliver(live, stored, body);
    for (const item of sending) settle(item, delivery);
  }

  /**
   * Inside the channel's queue, while folding changes into one update: refuses `next` (our end after one more
   * change) unless our funds cover it, refreshing the deposits from the chain once per update
   * (`deposits.refreshed`) when short.
   * @param end - our end before the change (its balance is named in the refusal), token base units.
   * @throws QrwpError INSUFFICIENT_CAPACITY (`details.balance`: what `end` leaves us, base units)
   */
  async assertAffordable(
    live: Live,
    end: ChannelEnd,
    next: ChannelEnd,
    deposits: { refreshed: boolean },
  ): Promise<void> {
    if (distributableAmount(ourFundsOf(live), next, live.partnerEnd) >= 0n) return;
    if (!deposits.refreshed) {
      deposits.refreshed = true;
      await this.#chain.refreshDeposits(live);
      if (distributableAmount(ourFundsOf(live), next, live.partnerEnd) >= 0n) return;
    }
    const balance = distributableAmount(ourFundsOf(live), end, live.partnerEnd);
    throw new QrwpError("INSUFFICIENT_CAPACITY", `balance ${balance} is too low for this transfer`, {
      channelId: live.record.channelId.toString(),
      balance: balance.toString(),
    });
  }

  /**
   * Inside the channel's queue: refuses unless the channel is open (and not closing, unless `allowClosing`),
   * re-sends what is pending, and returns `next` of our acknowledged end if we can afford it (refreshing
   * deposits from the chain once when short).
   * @throws QrwpError CHANNEL_STATE | INSUFFICIENT_CAPACITY | what {@link #deliver} throws for a pending proof
   */
  async nextEnd(
    live: Live,
    next: (end: ChannelEnd) => ChannelEnd,
    allowClosing: boolean,
  ): Promise<ChannelEnd> {
    if (live.record.state !== "opened" || (live.closing && !allowClosing))
      throw this.#registry.stateError(live, "opened");
    await this.#resendBeforeNew(live);
    let end = next(live.ourEnd);
    if (distributableAmount(ourFundsOf(live), end, live.partnerEnd) < 0n) {
      await this.#chain.refreshDeposits(live);
      end = next(live.ourEnd);
      const balance = distributableAmount(ourFundsOf(live), live.ourEnd, live.partnerEnd);
      if (distributableAmount(ourFundsOf(live), end, live.partnerEnd) < 0n) {
        throw new QrwpError("INSUFFICIENT_CAPACITY", `balance ${balance} is too low for this transfer`, {
          channelId: live.record.channelId.toString(),
          balance: balance.toString(),
        });
      }
    }
    // The awaits above may have let a close or a partner's cooperative settle begin.
    if (live.record.state !== "opened" || (live.closing && !allowClosing))
      throw this.#registry.stateError(live, "opened");
    return end;
  }

  /**
   * Signs our next balance proof (nonce = highest signed + 1) committing to `end`, with ML-DSA-65 evidence
   * when due (`EvidenceSender.due`), and persists it, pending, with the encoded envelope
   * `{id: 0, body: message(proof)}` that carries it and `persist`'s writes, in one transaction (durable
   * before anything is sent); then records it as pending in memory and announces the direct payments
   * `persist` stored (the payment records it returns, as stored) to the registry's `payment` listeners.
   * Synchronous. @returns the stored proof, the message and those payments
   */
  signAndPersist(
    live: Live,
    next: ChannelEnd,
    message: (balanceProof: SignedBalanceProof) => ChannelMessage,
    persist?: (nonce: bigint) => PaymentRecord[] | void,
  ): { stored: StoredProof; body: ChannelMessage; payments: PaymentRecord[] } {
    const nonce = live.ourLatestNonce + 1n;
    const end = { ...next, nonce };
    const proof: BalanceProof = {
      chainId: BigInt(this.#deployment.chainId),
      hub: this.#deployment.hub,
      channelId: live.record.channelId,
      nonce,
      ...balanceDataOf(end),
    };
    const signed = signBalanceProof(proof, this.#keys, { evidence: this.evidence.due(live, nonce) });
    const body = message(signed);
    const encoded = encodeEnvelope({ id: 0, body });
    const createdAtMs = Date.now();
    // Durable before send: the proof, its locks, the message and the caller's records commit together.
    const payments = this.#store.transaction(() => {
      this.#store.insertBalanceProof(this.#registry.address, signed, {
        locks: end.locks,
        status: "pending",
        message: encoded,
        createdAtMs,
      });
      return persist?.(nonce) ?? [];
    });
    const stored: StoredProof = {
      signed,
      locks: end.locks,
      status: "pending",
      message: encoded,
      createdAtMs,
    };
    live.ourLatestNonce = nonce;
    live.ourPending.push(stored);
    for (const payment of payments) this.#registry.emit("payment", payment);
    return { stored, body, payments };
  }

  /**
   * Our proof `stored` was acknowledged by the partner (Processed over libp2p, or its signed acknowledgement
   * over HTTP): in one transaction the proof is `acked` and the direct payments it carried `completed`; then
   * the in-memory acknowledged end advances to it, and evidence bookkeeping with it. Idempotent.
   */
  acknowledged(live: Live, stored: StoredProof, paymentIds: readonly string[]): void {
    const nonce = stored.signed.proof.nonce;
    const changed: string[] = [];
    // Not fsync'd: lost in a crash, the proof is pending again, re-delivered, and acknowledged again.
    this.#store.transaction(
      () => {
        this.#store.setProofStatus(live.record.channelId, this.#registry.address, nonce, "acked");
        for (const id of paymentIds) if (this.#store.finishOutgoingPayment(id, "completed")) changed.push(id);
      },
      { durable: false },
    );
    live.ourPending = live.ourPending.filter((p) => p.signed.proof.nonce !== nonce);
    if (nonce > live.ourEnd.nonce) {
      live.ourEnd = endOf(stored);
      this.evidence.acknowledged(live, stored.signed, stored.createdAtMs);
    }
    for (const id of changed) this.#paymentChanged(id);
  }

  /** Tells the registry's `payment` listeners how our outgoing direct payment `paymentId` now stands. */
  #paymentChanged(paymentId: string): void {
    const payment = this.#store.getOutgoingPayment(paymentId);
    if (payment) this.#registry.emit("payment", payment);
  }

  /** Sends one pending proof and records the outcome. Throws (the proof stays pending) if no reply came. */
  async #deliver(live: Live, stored: StoredProof, body: ChannelMessage): Promise<ProofDelivery> {
    const nonce = stored.signed.proof.nonce;
    let reply: ChannelMessage;
    try {
      reply = await this.#partners.transport.request(
        live.record.partner,
        body,
        this.#partners.target(live.record.partner),
      );
    } catch (err) {
      // Outcome unknown: the proof stays pending and is re-sent before the next one (and by the re-delivery timer).
      const e = isQrwpError(err) ? err : null;
      throw new QrwpError(
        e?.code ?? "TIMEOUT",
        `${body.type} not acknowledged: ${e?.message ?? String(err)}`,
        { channelId: live.record.channelId.toString(), nonce: nonce.toString(), pending: true },
        { cause: err },
      );
    }
    live.ourPending = live.ourPending.filter((p) => p !== stored);
    const payments = directPaymentIdsOf(body);
    if (reply.type === "Processed" && reply.nonce === nonce && reply.channelId === live.record.channelId) {
      this.acknowledged(live, stored, payments);
      return { ok: true, nonce };
    }
    // Refused: the partner did not store this proof. The next proof (nonce + 1) builds on the acknowledged
    // end. The partner still has the bytes of the refused proof; an honest partner never uses it and a
    // dishonest one gains at most this proof's increment (see docs/DECISIONS.md).
    const code = reply.type === "Error" ? reply.code : "INVALID_MESSAGE";
    const text = reply.type === "Error" ? reply.message : `unexpected reply ${reply.type}`;
    this.#store.transaction(() => {
      this.#store.setProofStatus(live.record.channelId, this.#registry.address, nonce, "refused");
      for (const id of payments) this.#store.finishOutgoingPayment(id, "failed", { code, message: text });
    });
    for (const id of payments) this.#paymentChanged(id);
    this.#log.warn(
      {
        channelId: live.record.channelId.toString(),
        type: body.type,
        nonce: nonce.toString(),
        peerCode: code,
      },
      "partner refused balance proof",
    );
    return { ok: false, code, message: text };
  }

  /** Re-sends unacknowledged proofs in nonce order (after a restart or a lost reply). */
  async resendPending(live: Live): Promise<void> {
    for (const stored of [...live.ourPending]) {
      const body = stored.message
        ? decodeEnvelope(stored.message).body
        : this.#legacyDirectTransfer(live, stored);
      this.#log.info(
        {
          channelId: live.record.channelId.toString(),
          type: body.type,
          nonce: stored.signed.proof.nonce.toString(),
        },
        "re-sending unacknowledged balance proof",
      );
      await this.#deliver(live, stored, body);
    }
  }

  /**
   * Re-delivers the channel's pending proofs before a new one is built on them. If that fails, the earlier
   * proofs stay pending (their outcome is unknown), but nothing new was signed: the error is rethrown
   * without `details.pending`, so the new changes fail definitively (a mediator declines upstream with the
   * code, a payment is refused) instead of being taken for sent.
   */
  async #resendBeforeNew(live: Live): Promise<void> {
    try {
      await this.resendPending(live);
    } catch (err) {
      if (!(isQrwpError(err) && err.details.pending === true)) throw err;
      const { pending: _pending, ...details } = err.details;
      throw new QrwpError(err.code, err.message, details, { cause: err });
    }
  }

  /** A schema-v1 pending direct payment has no stored message: rebuild it from the payment row. */
  #legacyDirectTransfer(live: Live, stored: StoredProof): ChannelMessage {
    const payment = this.#store
      .pendingOutgoingPayments(live.record.channelId)
      .find((p) => p.nonce === stored.signed.proof.nonce);
    if (!payment) throw new QrwpError("INTERNAL", "pending proof without its message or payment");
    return {
      type: "DirectTransfer",
      paymentId: payment.paymentId,
      amount: payment.amount,
      balanceProof: stored.signed,
    };
  }
}
