/**
 * The HTTP relay of x402 direct streaming (PROTOCOL.md §11): the payer's node signs the next balance proof
 * without sending it ({@link HttpRelay.signDirectTransfer}; calls that arrive together share ONE proof, a
 * DirectTransfer alone or a BalanceUpdate of direct changes); the merchant's node accepts it relayed over HTTP
 * through the same incoming path as libp2p and answers a secp256k1-signed `Processed`
 * ({@link HttpRelay.acceptDirectTransfer}); the payer's node completes every payment of the proof with that
 * acknowledgement ({@link HttpRelay.confirmProcessed}).
 */
import {
  QrwpError,
  assertArgument,
  decodeEnvelope,
  isQrwpError,
  processedDigest,
  recoverDigestSigner,
  signDigest,
  withDirect,
  type BalanceChange,
  type ChannelEnd,
  type ChannelMessage,
  type Envelope,
  type NodeKeys,
} from "../../protocol/index.js";
import type { RemotePeer } from "../../host/session-transport.js";
import type { Logger } from "pino";
import type { NodeStore, PaymentRecord, StoredProof } from "../store/store.js";
import type { IncomingProofs } from "./incoming.js";
import { directPaymentIdsOf, type OutgoingProofs } from "./outgoing.js";
import type { DirectPayments } from "./direct-payments.js";
import type { ChannelRegistry } from "./registry.js";
import {
  directTransferOf,
  eqAddr,
  type AcceptedDirectTransfer,
  type Live,
  type PayParams,
  type ProcessedAcknowledgement,
  type SignedDirectTransfer,
} from "./types.js";

/**
 * Most payments one HTTP-delivered proof carries. The client puts the envelope in its retry's
 * `PAYMENT-SIGNATURE` header (base64 of JSON of base64url: ×1.8); with ML-DSA evidence (3.3 KB) and 16
 * direct changes (~90 bytes each) that stays under 9 KB, inside Node's default 16 KiB header limit.
 */
export const HTTP_BATCH_MAX_PAYMENTS = 16;

/**
 * How long a signing call waits for the relayed acknowledgement of our pending HTTP-delivered proof on the
 * channel (ms) before the proof is re-sent over libp2p (the next proof must build on an acknowledged one).
 * Only while the channel's clients relay acknowledgements: once one is not relayed in time, signing
 * re-sends at once until an acknowledgement arrives over HTTP again.
 */
export const HTTP_ACK_WAIT_MS = 500;

/** A signing call waiting for the channel's next HTTP-delivered proof. */
interface WaitingSignature {
  payment: PaymentRecord;
  notAfterMs: number | undefined;
  settled: boolean;
  resolve: (signed: SignedDirectTransfer) => void;
  reject: (err: unknown) => void;
}

/** Per channel: the signing calls waiting for a proof, and whether acknowledgements come back over HTTP. */
interface HttpOutbox {
  waiting: WaitingSignature[];
  draining: boolean;
  /** Our latest proof signed for HTTP delivery. */
  lastSigned: StoredProof | null;
  /** True once a proof of ours was acknowledged over HTTP, false when one was not in time. */
  relaysAcks: boolean;
  /** Calls waiting for the acknowledgement of {@link lastSigned}. */
  wake: (() => void)[];
}

/** What {@link HttpRelay} needs. */
export interface HttpRelayInit {
  store: NodeStore;
  keys: NodeKeys;
  registry: ChannelRegistry;
  outgoing: OutgoingProofs;
  direct: DirectPayments;
  incoming: IncomingProofs;
  log: Logger;
}

/** Answers a waiting signing call once (later answers are ignored). */
function settle(item: WaitingSignature, outcome: { value: SignedDirectTransfer } | { error: unknown }): void {
  if (item.settled) return;
  item.settled = true;
  if ("error" in outcome) item.reject(outcome.error);
  else item.resolve(outcome.value);
}

export class HttpRelay {
  readonly #store: NodeStore;
  readonly #keys: NodeKeys;
  readonly #registry: ChannelRegistry;
  readonly #outgoing: OutgoingProofs;
  readonly #direct: DirectPayments;
  readonly #incoming: IncomingProofs;
  readonly #log: Logger;
  /** Per channel (id as decimal). */
  readonly #outboxes = new Map<string, HttpOutbox>();

  constructor(init: HttpRelayInit) {
    this.#store = init.store;
    this.#keys = init.keys;
    this.#registry = init.registry;
    this.#outgoing = init.outgoing;
    this.#direct = init.direct;
    this.#incoming = init.incoming;
    this.#log = init.log;
    this.#registry.events.on("payment", (payment) => {
      // An acknowledgement by any path (a libp2p re-send too) wakes the calls waiting on the channel.
      if (payment.direction === "outgoing" && payment.status !== "pending") this.#wake(payment.channelId);
    });
  }

  /**
   * Signs (does not send) a direct payment of `amount` base units of `token` to `target`, a channel partner,
   * for delivery by the client over HTTP (x402 direct streaming). Calls on one channel are folded together:
   * one flush at a time, in the channel's queue, takes every call waiting (up to
   * {@link HTTP_BATCH_MAX_PAYMENTS}), re-sends earlier pending proofs over libp2p (like {@link pay}), checks
   * each payment against our capacity (refreshing deposits once; one we cannot afford is refused alone), and
   * signs ONE balance proof (nonce + 1, transferredAmount + the sum): a `DirectTransfer` for one payment, a
   * `BalanceUpdate` of direct changes for several. The proof (status pending, with the envelope) and every
   * payment (pending) commit in one transaction. Nothing is sent; every caller gets the same envelope.
   * While our previous HTTP-delivered proof on the channel waits for its relayed acknowledgement, a flush
   * waits for it up to {@link HTTP_ACK_WAIT_MS} first (so the next proof builds on it without a libp2p
   * round trip), and the calls arriving meanwhile join the flush.
   * The payments complete on {@link confirmProcessed} with the partner's signed acknowledgement, or on the
   * partner's Processed over libp2p: the proof is re-sent before our next proof on the channel, and by the
   * re-delivery timer once older than {@link RESEND_AFTER_MS}.
   * `options.notAfterMs` (unix ms): the caller's deadline; once past it (the queue or an earlier proof's
   * re-send took that long) nothing is signed for it, so a client that gave up is never charged.
   * @returns the pending payment and the exact stored envelope bytes.
   * @throws QrwpError INVALID_ARGUMENT | CHANNEL_NOT_FOUND | CHANNEL_STATE | INSUFFICIENT_CAPACITY |
   *   CONFLICT (paymentId reused) | INVALID_ARGUMENT (field "notAfterMs": already past on arrival) |
   *   TIMEOUT (field "notAfterMs": passed while waiting for the channel); PEER_OFFLINE | PEER_REJECTED | TIMEOUT
   *   when an earlier pending proof could not be resolved (nothing new is signed then: the partner must be
   *   reachable over libp2p unless every earlier proof was acknowledged).
   */
  async signDirectTransfer(
    params: PayParams,
    options: { notAfterMs?: number } = {},
  ): Promise<SignedDirectTransfer> {
    if (options.notAfterMs !== undefined)
      assertArgument(
        options.notAfterMs > Date.now(),
        "notAfterMs is already past: nothing was signed",
        "notAfterMs",
        options.notAfterMs,
      );
    const { live, payment } = this.#direct.newDirectPayment(params);
    const box = this.#outbox(live.record.channelId);
    return new Promise<SignedDirectTransfer>((resolve, reject) => {
      box.waiting.push({ payment, notAfterMs: options.notAfterMs, settled: false, resolve, reject });
      this.#drain(live, box);
    });
  }

  /**
   * {@link signDirectTransfer} for several payments to one partner at once (one HTTP call of the client for
   * the payments of its concurrent requests): they join the channel's next flush together, so they normally
   * share one proof. Each payment has its own outcome, in order; one refused (CONFLICT, INSUFFICIENT_CAPACITY,
   * its `notAfterMs`, ...) does not stop the others.
   */
  signDirectTransfers(
    target: string,
    token: string,
    payments: { amount: bigint; paymentId: string; notAfterMs?: number }[],
  ): Promise<PromiseSettledResult<SignedDirectTransfer>[]> {
    return Promise.allSettled(
      payments.map((p) =>
        this.signDirectTransfer(
          { target, token, amount: p.amount, paymentId: p.paymentId },
          p.notAfterMs !== undefined ? { notAfterMs: p.notAfterMs } : {},
        ),
      ),
    );
  }

  #outbox(channelId: bigint): HttpOutbox {
    const key = channelId.toString();
    let box = this.#outboxes.get(key);
    if (!box) {
      box = { waiting: [], draining: false, lastSigned: null, relaysAcks: false, wake: [] };
      this.#outboxes.set(key, box);
    }
    return box;
  }

  #wake(channelId: bigint): void {
    const box = this.#outboxes.get(channelId.toString());
    if (!box || box.wake.length === 0) return;
    const wake = box.wake;
    box.wake = [];
    for (const w of wake) w();
  }

  /** Runs the channel's flushes one after another until no signing call waits (one drain per channel). */
  #drain(live: Live, box: HttpOutbox): void {
    if (box.draining) return;
    box.draining = true;
    void (async () => {
      try {
        while (box.waiting.length > 0) {
          await this.#awaitRelayedAck(live, box);
          // As the libp2p outbox does: the requests read in this round of the event loop join this proof.
          if (box.waiting.length < HTTP_BATCH_MAX_PAYMENTS) await new Promise((r) => setImmediate(r));
          const items = box.waiting.splice(0, HTTP_BATCH_MAX_PAYMENTS);
          try {
            await live.queue.add(() => this.#signBatch(live, box, items));
          } catch (err) {
            for (const item of items) settle(item, { error: err });
          }
        }
      } finally {
        box.draining = false;
      }
    })();
  }

  /**
   * Outside the channel's queue (the acknowledgement needs it): while our latest HTTP-delivered proof is
   * pending and the channel's clients relay acknowledgements, waits for it up to {@link HTTP_ACK_WAIT_MS}.
   */
  async #awaitRelayedAck(live: Live, box: HttpOutbox): Promise<void> {
    const pending = () => box.lastSigned !== null && live.ourPending.includes(box.lastSigned);
    if (!box.relaysAcks || !pending()) return;
    const deadline = Date.now() + HTTP_ACK_WAIT_MS;
    while (pending() && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now());
        box.wake.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    if (pending()) box.relaysAcks = false; // not relayed in time: the flush re-sends it over libp2p
  }

  /**
   * Inside the channel's queue: signs and persists one proof for `items` (see {@link signDirectTransfer});
   * settles every item exactly once (a thrown error rejects those still open, through the caller).
   */
  async #signBatch(live: Live, box: HttpOutbox, items: WaitingSignature[]): Promise<void> {
    let end: ChannelEnd = await this.#outgoing.nextEnd(live, (e) => e, false);
    const now = Date.now();
    const included: WaitingSignature[] = [];
    const ids = new Set<string>();
    const deposits = { refreshed: false };
    for (const item of items) {
      const { paymentId, amount } = item.payment;
      try {
        if (item.notAfterMs !== undefined && now > item.notAfterMs)
          throw new QrwpError("TIMEOUT", "the caller's deadline passed before the transfer could be signed", {
            field: "notAfterMs",
            notAfterMs: item.notAfterMs,
          });
        // A call with the same id in this flush, or (checked again in the transaction; here only when others
        // share the proof, so that it alone is refused) one stored since it was queued, or a routed payment.
        if (
          ids.has(paymentId) ||
          (items.length > 1 &&
            (this.#direct.outgoingPayment(paymentId) !== null ||
              this.#store.getMediatedPayment(paymentId) !== null))
        )
          throw new QrwpError("CONFLICT", `payment ${paymentId} already exists`, {
            field: "paymentId",
            paymentId,
          });
        const next = withDirect(end, amount);
        await this.#outgoing.assertAffordable(live, end, next, deposits);
        ids.add(paymentId);
        end = next;
        included.push(item);
      } catch (err) {
        settle(item, { error: err });
      }
    }
    if (included.length === 0) return;
    // The deposit refresh may have let a close or a partner's cooperative settle begin.
    if (live.record.state !== "opened" || live.closing) throw this.#registry.stateError(live, "opened");
    const first = included[0] as WaitingSignature;
    const changes: BalanceChange[] = included.map((i) => ({
      kind: "direct",
      paymentId: i.payment.paymentId,
      amount: i.payment.amount,
    }));
    const { stored, payments } = this.#outgoing.signAndPersist(
      live,
      end,
      (balanceProof) =>
        included.length === 1
          ? directTransferOf(first.payment, balanceProof)
          : { type: "BalanceUpdate", changes, balanceProof },
      (nonce) => included.map((item) => this.#direct.insertDirectPayment(item.payment, nonce)),
    );
    this.#log.debug(
      {
        channelId: live.record.channelId.toString(),
        nonce: stored.signed.proof.nonce.toString(),
        payments: included.length,
      },
      "signed a balance proof for HTTP delivery",
    );
    this.#outgoing.holdForHttp(stored);
    box.lastSigned = stored;

    included.forEach((item, i) =>
      settle(item, {
        value: { payment: payments[i] as PaymentRecord, transfer: stored.message as Uint8Array },
      }),
    );
  }

  /**
   * Completes our outgoing direct payment with the partner's signed acknowledgement relayed over HTTP: the
   * payment's proof must be the one named (`channelId`, `nonce`) and `signature` must recover the channel
   * partner over `processedDigest` of OUR stored proof. Then, in the channel's queue and one transaction, the
   * proof is acknowledged and every payment it carries completed, exactly as a Processed over libp2p does. A
   * payment already completed (the libp2p re-send or another payment of the same proof got there first) is
   * returned unchanged.
   * @throws QrwpError PAYMENT_NOT_FOUND (field "paymentId") | INVALID_ARGUMENT (field "processed.channelId" /
   *   "processed.nonce") | INVALID_SIGNATURE (field "processed.signature") | CONFLICT (the payment failed)
   */
  async confirmProcessed(paymentId: string, ack: ProcessedAcknowledgement): Promise<PaymentRecord> {
    const payment = this.#store.getOutgoingPayment(paymentId);
    if (!payment) {
      throw new QrwpError("PAYMENT_NOT_FOUND", `no outgoing payment ${paymentId}`, { field: "paymentId" });
    }
    assertArgument(
      ack.channelId === payment.channelId,
      "processed.channelId is not the payment's channel",
      "processed.channelId",
      ack.channelId,
    );
    assertArgument(
      ack.nonce === payment.nonce,
      "processed.nonce is not the nonce of the payment's balance proof",
      "processed.nonce",
      ack.nonce,
    );
    const live = this.#registry.get(payment.channelId);
    return (await live.queue.add(async () => {
      const stored = this.#store.storedProofAt(payment.channelId, this.#registry.address, payment.nonce);
      if (!stored) throw new QrwpError("INTERNAL", `payment ${paymentId} has no balance proof`);
      let signer: string;
      try {
        signer = recoverDigestSigner(processedDigest(stored.signed.proof), ack.signature);
      } catch (err) {
        throw new QrwpError(
          "INVALID_SIGNATURE",
          "processed.signature is malformed",
          { field: "processed.signature" },
          { cause: err },
        );
      }
      if (!eqAddr(signer, live.record.partner)) {
        throw new QrwpError("INVALID_SIGNATURE", "processed.signature is not the partner's over this proof", {
          field: "processed.signature",
        });
      }
      const current = this.#store.getOutgoingPayment(paymentId) as PaymentRecord;
      if (current.status === "completed") return current;
      if (current.status === "failed") {
        throw new QrwpError("CONFLICT", `payment ${paymentId} failed: the partner refused its proof`, {
          field: "paymentId",
        });
      }
      // One acknowledgement completes every payment the proof carries.
      const paymentIds = stored.message ? directPaymentIdsOf(decodeEnvelope(stored.message).body) : [];
      this.#outgoing.acknowledged(live, stored, paymentIds.includes(paymentId) ? paymentIds : [paymentId]);
      this.#outbox(live.record.channelId).relaysAcks = true;
      this.#log.debug(
        { channelId: live.record.channelId.toString(), nonce: payment.nonce.toString(), paymentId },
        "balance proof acknowledged over HTTP",
      );
      return this.#store.getOutgoingPayment(paymentId) as PaymentRecord;
    })) as PaymentRecord;
  }

  /**
   * Accepts a balance proof relayed over HTTP (x402 direct streaming): `encoded` is the payer's
   * `encodeEnvelope({id: 0, body})` with `body` a DirectTransfer, or a BalanceUpdate whose changes are all
   * direct payments (several payments signed together, {@link signDirectTransfer}). The sender is the partner
   * of the channel named by the balance proof, verified under the ML-DSA-65 key this node learned for that
   * partner over libp2p. If `token` is given the channel's token must be it. Then the same acceptance path as
   * over libp2p (PROTOCOL.md §7 and §7.3), serialized with the partner's libp2p requests; an identical transfer
   * again returns the same answer without any change. On success we sign the EIP-712 `Processed`
   * acknowledgement of the proof (secp256k1), after the proof is durable.
   * @returns the payments the proof carries (`paymentId` is the only one's, null for several; `amount` their
   *   sum) and the acknowledgement.
   * @throws QrwpError INVALID_MESSAGE (field "transfer": not a DirectTransfer or an all-direct BalanceUpdate
   *   envelope) | CHANNEL_NOT_FOUND | INVALID_TRANSFER (field "token") | UNKNOWN_PARTNER_KEY | the §7
   *   refusals with `details.field` prefixed by "transfer." (INVALID_SIGNATURE, STALE_NONCE, INVALID_TRANSFER,
   *   INSUFFICIENT_CAPACITY, CONFLICT, CHANNEL_STATE, EVIDENCE_REQUIRED)
   */
  async acceptDirectTransfer(
    encoded: Uint8Array,
    options: { token?: string } = {},
  ): Promise<AcceptedDirectTransfer> {
    let envelope: Envelope;
    try {
      envelope = decodeEnvelope(encoded);
    } catch (err) {
      throw new QrwpError(
        "INVALID_MESSAGE",
        `transfer is not a valid message: ${err instanceof Error ? err.message : String(err)}`,
        { field: "transfer", messageField: isQrwpError(err) ? err.details.field : undefined },
      );
    }
    const msg = envelope.body;
    const direct =
      msg.type === "DirectTransfer" ||
      (msg.type === "BalanceUpdate" && msg.changes.every((c) => c.kind === "direct"));
    if (!direct || envelope.replyTo !== undefined) {
      throw new QrwpError(
        "INVALID_MESSAGE",
        `transfer must be a DirectTransfer or a BalanceUpdate of direct payments, not ${msg.type}`,
        { field: "transfer" },
      );
    }
    const p = msg.balanceProof.proof;
    const live = this.#registry.find(p.channelId);
    if (!live) {
      throw new QrwpError("CHANNEL_NOT_FOUND", `channel ${p.channelId} is not one of ours`, {
        field: "transfer.balanceProof.channelId",
      });
    }
    if (options.token !== undefined && !eqAddr(options.token, live.record.token)) {
      throw new QrwpError("INVALID_TRANSFER", "the transfer's channel is for another token", {
        field: "token",
        channelToken: live.record.token,
      });
    }
    const partner = live.record.partner;
    const mldsaPublicKey = this.#registry.partnerKey(partner);
    if (!mldsaPublicKey) {
      throw new QrwpError(
        "UNKNOWN_PARTNER_KEY",
        "the partner's ML-DSA-65 key is not known yet: it must connect over libp2p once",
        { field: "transfer", partner },
      );
    }
    const from: RemotePeer = {
      address: partner,
      mldsaPublicKey,
      peerId: this.#store.getPeer(partner)?.peerId ?? "",
    };
    let reply: ChannelMessage;
    try {
      reply = await this.#incoming.serialized(partner, () =>
        msg.type === "DirectTransfer"
          ? this.#incoming.onDirectTransfer(from, msg)
          : this.#incoming.onBalanceUpdate(from, msg),
      );
    } catch (err) {
      if (!isQrwpError(err) || typeof err.details.field !== "string") throw err;
      throw new QrwpError(err.code, err.message, { ...err.details, field: `transfer.${err.details.field}` });
    }
    if (reply.type !== "Processed") throw new QrwpError("INTERNAL", `unexpected acceptance ${reply.type}`);
    // Signed only now: the proof is durable (committed by #acceptProof). RFC 6979: a repeat gets the same bytes.
    const signature = signDigest(processedDigest(p), this.#keys.secp256k1PrivateKey);
    const payments =
      msg.type === "DirectTransfer"
        ? [{ paymentId: msg.paymentId, amount: msg.amount }]
        : msg.changes.flatMap((c) =>
            c.kind === "direct" ? [{ paymentId: c.paymentId, amount: c.amount }] : [],
          );
    this.#log.debug(
      { channelId: p.channelId.toString(), nonce: p.nonce.toString(), payments: payments.length, partner },
      "accepted a balance proof over HTTP",
    );
    return {
      paymentId: payments.length === 1 ? (payments[0] as { paymentId: string }).paymentId : null,
      payments,
      channelId: p.channelId,
      nonce: p.nonce,
      amount: payments.reduce((sum, x) => sum + x.amount, 0n),
      token: live.record.token,
      partner,
      processed: { channelId: p.channelId, nonce: p.nonce, signature },
    };
  }
}
