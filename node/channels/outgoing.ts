/**
 * The outgoing balance-proof path (Raiden's mediated/direct transfer rules, LDK's persist-before-send): every
 * change to OUR balance proofs on a channel (direct payment, lock, unlock, lock expiry) runs in the channel's
 * queue, one at a time: build the next end, reach the partner, sign (EIP-712 secp256k1 + ML-DSA-65), persist
 * (proof, message and the caller's rows in one transaction), send, record the partner's answer. A proof
 * whose answer never came stays `pending` and is re-delivered, same bytes: before the next proof on the
 * channel, at start, on a retry under the same payment id, and by {@link OutgoingProofs.redeliverDue}.
 */
import { randomUUID } from "node:crypto";
import { getAddress } from "ethers";
import type { Logger } from "pino";
import {
  QrwpError,
  assertArgument,
  balanceDataOf,
  decodeEnvelope,
  distributableAmount,
  encodeEnvelope,
  findLock,
  isQrwpError,
  secretHashOf,
  signBalanceProof,
  withDirect,
  withLock,
  withUnlock,
  withoutLock,
  type BalanceProof,
  type ChannelEnd,
  type ChannelMessage,
  type ErrorCode,
  type Lock,
  type NodeKeys,
  type SignedBalanceProof,
  type TransferDescription,
} from "../../protocol/index.js";
import type { Deployment } from "../../chain/index.js";
import { errorFields } from "../../host/session-transport.js";
import { assertSamePayment } from "../payment-retry.js";
import type { NodeStore, PaymentRecord, StoredProof } from "../store/store.js";
import type { ChainCalls } from "./chain-calls.js";
import type { Partners } from "./partners.js";
import { ourFundsOf, type ChannelRegistry } from "./registry.js";
import {
  RESEND_AFTER_MS,
  directTransferOf,
  endOf,
  eqAddr,
  type Live,
  type PayParams,
  type ProofDelivery,
} from "./types.js";

/** What {@link OutgoingProofs} needs. */
export interface OutgoingProofsInit {
  store: NodeStore;
  keys: NodeKeys;
  deployment: Deployment;
  registry: ChannelRegistry;
  chain: ChainCalls;
  partners: Partners;
  log: Logger;
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

  constructor(init: OutgoingProofsInit) {
    this.#store = init.store;
    this.#keys = init.keys;
    this.#deployment = init.deployment;
    this.#registry = init.registry;
    this.#chain = init.chain;
    this.#partners = init.partners;
    this.#log = init.log;
  }

  /** Marks a proof signed for HTTP delivery (x402 direct streaming): libp2p re-delivery waits for it. */
  holdForHttp(stored: StoredProof): void {
    this.#heldForHttp.add(stored);
  }

  /** After a restart: re-delivers, in each open channel's queue, the proofs that were never answered. */
  resumePending(): void {
    for (const live of this.#registry.all()) {
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
   * A payment by id: the outgoing one if we sent it, else the most recent incoming one with that id.
   * @throws QrwpError("PAYMENT_NOT_FOUND")
   */
  getPayment(paymentId: string): PaymentRecord {
    const p = this.#store.getPayment(paymentId);
    if (!p) throw new QrwpError("PAYMENT_NOT_FOUND", `payment ${paymentId} not found`, { paymentId });
    return p;
  }

  /** Our outgoing direct payment with this id (any status), or null. */
  outgoingPayment(paymentId: string): PaymentRecord | null {
    const p = this.#store.getPayment(paymentId);
    return p?.direction === "outgoing" ? p : null;
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
   */
  async pay(params: PayParams): Promise<PaymentRecord> {
    const existing = params.paymentId === undefined ? null : this.#store.getPayment(params.paymentId);
    if (existing?.direction === "outgoing") return this.#payAgain(existing, params);
    const { live, payment } = this.newDirectPayment(params);
    return (await live.queue.add(async () => {
      // A retry with the same id that arrived while this one waited for the queue: answered, not signed.
      const raced = this.#store.getPayment(payment.paymentId);
      if (raced?.direction === "outgoing") {
        this.#assertSamePayment(raced, params);
        return this.#redeliverLocked(live, raced.paymentId);
      }
      let result: ProofDelivery;
      try {
        result = await this.#sendProof(
          live,
          (end) => withDirect(end, payment.amount),
          (balanceProof) => directTransferOf(payment, balanceProof),
          (nonce) => this.insertDirectPayment(payment, nonce),
        );
      } catch (err) {
        // Signed and stored, delivery outcome unknown: the payment is pending, not failed.
        const stored = this.#store.getPayment(payment.paymentId);
        if (stored?.status === "pending" && isQrwpError(err) && err.details.pending === true) {
          this.#log.warn(
            { paymentId: payment.paymentId, code: err.code, reason: err.message },
            "direct payment signed but not acknowledged yet: pending",
          );
          return stored;
        }
        throw err;
      }
      if (!result.ok && this.#store.getPayment(payment.paymentId) === null) {
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
      return this.#store.getPayment(payment.paymentId) as PaymentRecord;
    })) as PaymentRecord;
  }

  /**
   * A retry of our outgoing direct payment `existing` (same `paymentId`): CONFLICT naming the first differing
   * field of target, token and amount; else, if still pending on an open channel, its proof is re-delivered
   * (inside the channel's queue; an undelivered re-send leaves it pending) and the payment is returned as it
   * then stands. Never signs anything new.
   */
  async #payAgain(existing: PaymentRecord, params: PayParams): Promise<PaymentRecord> {
    this.#assertSamePayment(existing, params);
    const live = this.#registry.find(existing.channelId);
    if (existing.status !== "pending" || !live) return existing;
    return (await live.queue.add(() => this.#redeliverLocked(live, existing.paymentId))) as PaymentRecord;
  }

  /** CONFLICT (field "target" | "token" | "amount") unless `params` ask for the payment `existing` is. */
  #assertSamePayment(existing: PaymentRecord, params: PayParams): void {
    assertSamePayment(existing.paymentId, [
      ["target", eqAddr(existing.partner, getAddress(params.target))],
      ["token", eqAddr(existing.token, getAddress(params.token))],
      ["amount", existing.amount === params.amount],
    ]);
  }

  /**
   * Inside `live`'s queue: re-delivers the pending proofs of the channel if the payment `paymentId` (ours, on
   * this channel) is still pending and the channel open; returns the payment as it then stands.
   */
  async #redeliverLocked(live: Live, paymentId: string): Promise<PaymentRecord> {
    const now = this.#store.getPayment(paymentId) as PaymentRecord;
    if (
      now.status === "pending" &&
      now.channelId === live.record.channelId &&
      live.record.state === "opened"
    ) {
      try {
        await this.resendPending(live);
      } catch (err) {
        if (!(isQrwpError(err) && err.details.pending === true)) throw err;
      }
    }
    return this.#store.getPayment(paymentId) as PaymentRecord;
  }

  /** The open channel for a direct payment and its (not yet stored) pending record; CONFLICT on a reused id. */
  newDirectPayment(params: PayParams): { live: Live; payment: PaymentRecord } {
    const target = getAddress(params.target);
    const token = getAddress(params.token);
    assertArgument(params.amount > 0n, "amount must be > 0", "amount", params.amount);
    const paymentId = params.paymentId ?? randomUUID();
    const live = [...this.#registry.all()].find(
      (l) => eqAddr(l.record.partner, target) && eqAddr(l.record.token, token) && l.record.state === "opened",
    );
    if (!live) {
      throw new QrwpError("CHANNEL_NOT_FOUND", `no open channel with ${target} for token ${token}`, {
        target,
        token,
      });
    }
    this.#assertNewOutgoing(paymentId);
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

  #assertNewOutgoing(paymentId: string): void {
    // A routed payment with this id counts too: one x402 invoice is paid one way or the other, never both.
    if (
      this.#store.getPayment(paymentId)?.direction === "outgoing" ||
      this.#store.getMediatedPayment(paymentId) !== null
    ) {
      throw new QrwpError("CONFLICT", `payment ${paymentId} already exists`, {
        field: "paymentId",
        paymentId,
      });
    }
  }

  /** Stores a pending direct payment with its proof's nonce (inside the proof's transaction). */
  insertDirectPayment(payment: PaymentRecord, nonce: bigint): void {
    this.#assertNewOutgoing(payment.paymentId); // a concurrent call with the same id may have got here first
    this.#store.insertPayment({ ...payment, nonce, createdAtMs: Date.now() });
  }

  /**
   * Sends a LockedTransfer adding `lock` on the channel (serialized with every other proof on it).
   * @returns the delivery outcome; `ok: false` means the partner refused it (no lock exists).
   * @throws QrwpError CHANNEL_NOT_FOUND | CHANNEL_STATE | INSUFFICIENT_CAPACITY | TOO_MANY_LOCKS before
   *   anything is sent; PEER_OFFLINE | HANDSHAKE_FAILED | TIMEOUT when the outcome is unknown (the proof
   *   stays pending and is re-sent before the next one).
   */
  async sendLockedTransfer(
    channelId: bigint,
    lock: Lock,
    transfer: TransferDescription,
  ): Promise<ProofDelivery> {
    const live = this.#registry.get(channelId);
    return (await live.queue.add(() =>
      this.#sendProof(
        live,
        (end) => withLock(end, lock),
        (balanceProof) => ({
          type: "LockedTransfer",
          paymentId: transfer.paymentId,
          initiator: transfer.initiator,
          target: transfer.target,
          lock,
          route: transfer.route,
          initiatorMultiaddrs: transfer.initiatorMultiaddrs,
          balanceProof,
        }),
      ),
    )) as ProofDelivery;
  }

  /**
   * Pays our pending lock for `sha256(secret)` off-chain (Unlock). A lock that is no longer pending is a no-op.
   * @throws as {@link sendLockedTransfer} when the outcome is unknown.
   */
  async sendUnlock(channelId: bigint, secret: string, paymentId: string): Promise<ProofDelivery> {
    const live = this.#registry.get(channelId);
    const secretHash = secretHashOf(secret);
    return (await live.queue.add(async () => {
      await this.resendPending(live);
      if (!findLock(live.ourEnd, secretHash)) return { ok: true, nonce: live.ourLatestNonce };
      return this.#sendProof(
        live,
        (end) => withUnlock(end, secretHash),
        (balanceProof) => ({ type: "Unlock", paymentId, secret, balanceProof }),
        undefined,
        true,
      );
    })) as ProofDelivery;
  }

  /** Removes our pending lock for `secretHash` (LockExpired). A lock no longer pending is a no-op. */
  async sendLockExpired(channelId: bigint, secretHash: string): Promise<ProofDelivery> {
    const live = this.#registry.get(channelId);
    return (await live.queue.add(async () => {
      await this.resendPending(live);
      if (!findLock(live.ourEnd, secretHash)) return { ok: true, nonce: live.ourLatestNonce };
      return this.#sendProof(
        live,
        (end) => withoutLock(end, secretHash),
        (balanceProof) => ({ type: "LockExpired", secretHash, balanceProof }),
        undefined,
        true,
      );
    })) as ProofDelivery;
  }

  /**
   * The one path for our balance proofs sent over libp2p (run inside the channel's queue): the next end
   * ({@link #nextEnd}), the partner reached, then signed and persisted ({@link #signAndPersist}), sent, and
   * the partner's answer recorded.
   */
  async #sendProof(
    live: Live,
    next: (end: ChannelEnd) => ChannelEnd,
    message: (balanceProof: SignedBalanceProof) => ChannelMessage,
    persist?: (nonce: bigint) => void,
    allowClosing = false,
  ): Promise<ProofDelivery> {
    const end = await this.nextEnd(live, next, allowClosing);
    // Reach the partner before anything is signed or stored: an offline partner is a clean failure.
    const unreachable = await this.#partners.reach(live.record.partner);
    if (unreachable) return { ok: false, ...unreachable };
    const { stored, body } = this.signAndPersist(live, end, message, persist);
    return this.#deliver(live, stored, body);
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
    await this.resendPending(live);
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
   * Signs our next balance proof (nonce = highest signed + 1) committing to `end` and persists it, pending,
   * with the encoded envelope `{id: 0, body: message(proof)}` that carries it and `persist`'s writes, in one
   * transaction (durable before anything is sent); then records it as pending in memory. Synchronous.
   */
  signAndPersist(
    live: Live,
    next: ChannelEnd,
    message: (balanceProof: SignedBalanceProof) => ChannelMessage,
    persist?: (nonce: bigint) => void,
  ): { stored: StoredProof; body: ChannelMessage } {
    const nonce = live.ourLatestNonce + 1n;
    const end = { ...next, nonce };
    const proof: BalanceProof = {
      chainId: BigInt(this.#deployment.chainId),
      hub: this.#deployment.hub,
      channelId: live.record.channelId,
      nonce,
      ...balanceDataOf(end),
    };
    const signed = signBalanceProof(proof, this.#keys);
    const body = message(signed);
    const encoded = encodeEnvelope({ id: 0, body });
    const createdAtMs = Date.now();
    // Durable before send: the proof, its locks, the message and the caller's records commit together.
    this.#store.transaction(() => {
      this.#store.insertBalanceProof(this.#registry.address, signed, {
        locks: end.locks,
        status: "pending",
        message: encoded,
        createdAtMs,
      });
      persist?.(nonce);
    });
    if (body.type === "DirectTransfer") this.#paymentChanged(body.paymentId);
    const stored: StoredProof = {
      signed,
      locks: end.locks,
      status: "pending",
      message: encoded,
      createdAtMs,
    };
    live.ourLatestNonce = nonce;
    live.ourPending.push(stored);
    return { stored, body };
  }

  /**
   * Our proof `stored` was acknowledged by the partner (Processed over libp2p, or its signed acknowledgement
   * over HTTP): in one transaction the proof is `acked` and its direct payment (if any) `completed`; then the
   * in-memory acknowledged end advances to it. Idempotent.
   */
  acknowledged(live: Live, stored: StoredProof, paymentId: string | null): void {
    const nonce = stored.signed.proof.nonce;
    const wasPending = paymentId !== null && this.#store.getPayment(paymentId)?.status === "pending";
    this.#store.transaction(() => {
      this.#store.setProofStatus(live.record.channelId, this.#registry.address, nonce, "acked");
      if (paymentId) this.#store.finishOutgoingPayment(paymentId, "completed");
    });
    live.ourPending = live.ourPending.filter((p) => p.signed.proof.nonce !== nonce);
    if (nonce > live.ourEnd.nonce) live.ourEnd = endOf(stored);
    if (wasPending) this.#paymentChanged(paymentId);
  }

  /** Tells the registry's `payment` listeners how our outgoing direct payment `paymentId` now stands. */
  #paymentChanged(paymentId: string): void {
    const payment = this.#store.getPayment(paymentId);
    if (payment?.direction === "outgoing") this.#registry.emit("payment", payment);
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
    const payment = body.type === "DirectTransfer" ? body.paymentId : null;
    if (reply.type === "Processed" && reply.nonce === nonce && reply.channelId === live.record.channelId) {
      this.acknowledged(live, stored, payment);
      return { ok: true, nonce };
    }
    // Refused: the partner did not store this proof. The next proof (nonce + 1) builds on the acknowledged
    // end. The partner still has the bytes of the refused proof; an honest partner never uses it and a
    // dishonest one gains at most this proof's increment (see docs/DECISIONS.md).
    const code = reply.type === "Error" ? reply.code : "INVALID_MESSAGE";
    const text = reply.type === "Error" ? reply.message : `unexpected reply ${reply.type}`;
    this.#store.transaction(() => {
      this.#store.setProofStatus(live.record.channelId, this.#registry.address, nonce, "refused");
      if (payment) this.#store.finishOutgoingPayment(payment, "failed", { code, message: text });
    });
    if (payment) this.#paymentChanged(payment);
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
