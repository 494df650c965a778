/**
 * The HTTP relay of x402 direct streaming (PROTOCOL.md §11): the payer's node signs the next DirectTransfer
 * without sending it ({@link HttpRelay.signDirectTransfer}); the merchant's node accepts it relayed over HTTP
 * through the same incoming path as libp2p and answers a secp256k1-signed `Processed`
 * ({@link HttpRelay.acceptDirectTransfer}); the payer's node completes the payment with that acknowledgement
 * ({@link HttpRelay.confirmProcessed}).
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
  type ChannelMessage,
  type Envelope,
  type NodeKeys,
} from "../../protocol/index.js";
import type { RemotePeer } from "../../host/session-transport.js";
import type { Logger } from "pino";
import type { NodeStore, PaymentRecord } from "../store/store.js";
import type { IncomingProofs } from "./incoming.js";
import type { OutgoingProofs } from "./outgoing.js";
import type { DirectPayments } from "./direct-payments.js";
import type { ChannelRegistry } from "./registry.js";
import {
  directTransferOf,
  eqAddr,
  type AcceptedDirectTransfer,
  type PayParams,
  type ProcessedAcknowledgement,
  type SignedDirectTransfer,
} from "./types.js";

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

export class HttpRelay {
  readonly #store: NodeStore;
  readonly #keys: NodeKeys;
  readonly #registry: ChannelRegistry;
  readonly #outgoing: OutgoingProofs;
  readonly #direct: DirectPayments;
  readonly #incoming: IncomingProofs;
  readonly #log: Logger;

  constructor(init: HttpRelayInit) {
    this.#store = init.store;
    this.#keys = init.keys;
    this.#registry = init.registry;
    this.#outgoing = init.outgoing;
    this.#direct = init.direct;
    this.#incoming = init.incoming;
    this.#log = init.log;
  }

  /**
   * Signs (does not send) a direct payment of `amount` base units of `token` to `target`, a channel partner,
   * for delivery by the client over HTTP (x402 direct streaming): like {@link pay} it runs in the channel's
   * queue, first re-sends earlier pending proofs over libp2p, checks capacity (refreshing deposits once) and
   * signs the next balance proof (nonce + 1, transferredAmount + amount); the proof (status pending, with its
   * DirectTransfer message) and the payment (pending) are committed in one transaction. Nothing is sent.
   * The payment completes on {@link confirmProcessed} with the partner's signed
   * acknowledgement, or on the partner's Processed over libp2p: the proof is re-sent before our next proof on
   * the channel, and by the re-delivery timer once older than {@link RESEND_AFTER_MS}.
   * `options.notAfterMs` (unix ms): the caller's deadline; once past it (the queue or an earlier proof's
   * re-send took that long) nothing is signed, so a client that gave up is never charged.
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
    return (await live.queue.add(async () => {
      const end = await this.#outgoing.nextEnd(live, (e) => withDirect(e, payment.amount), false);
      if (options.notAfterMs !== undefined && Date.now() > options.notAfterMs)
        throw new QrwpError("TIMEOUT", "the caller's deadline passed before the transfer could be signed", {
          field: "notAfterMs",
          notAfterMs: options.notAfterMs,
        });
      const { stored } = this.#outgoing.signAndPersist(
        live,
        end,
        (balanceProof) => directTransferOf(payment, balanceProof),
        (nonce) => this.#direct.insertDirectPayment(payment, nonce),
      );
      this.#log.info(
        {
          channelId: live.record.channelId.toString(),
          nonce: stored.signed.proof.nonce.toString(),
          paymentId: payment.paymentId,
        },
        "signed direct transfer for HTTP delivery",
      );
      this.#outgoing.holdForHttp(stored);
      return {
        payment: this.#store.getPayment(payment.paymentId) as PaymentRecord,
        transfer: stored.message as Uint8Array,
      };
    })) as SignedDirectTransfer;
  }

  /**
   * Completes our outgoing direct payment with the partner's signed acknowledgement relayed over HTTP: the
   * payment's proof must be the one named (`channelId`, `nonce`) and `signature` must recover the channel
   * partner over `processedDigest` of OUR stored proof. Then, in the channel's queue and one transaction, the
   * proof is acknowledged and the payment completed, exactly as a Processed over libp2p does. A payment
   * already completed (the libp2p re-send got there first) is returned unchanged.
   * @throws QrwpError PAYMENT_NOT_FOUND (field "paymentId") | INVALID_ARGUMENT (field "processed.channelId" /
   *   "processed.nonce") | INVALID_SIGNATURE (field "processed.signature") | CONFLICT (the payment failed)
   */
  async confirmProcessed(paymentId: string, ack: ProcessedAcknowledgement): Promise<PaymentRecord> {
    const payment = this.#store.getPayment(paymentId);
    if (!payment || payment.direction !== "outgoing") {
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
      const current = this.#store.getPayment(paymentId) as PaymentRecord;
      if (current.status === "completed") return current;
      if (current.status === "failed") {
        throw new QrwpError("CONFLICT", `payment ${paymentId} failed: the partner refused its proof`, {
          field: "paymentId",
        });
      }
      this.#outgoing.acknowledged(live, stored, [paymentId]);
      this.#log.info(
        { channelId: live.record.channelId.toString(), nonce: payment.nonce.toString(), paymentId },
        "direct transfer acknowledged over HTTP",
      );
      return this.#store.getPayment(paymentId) as PaymentRecord;
    })) as PaymentRecord;
  }

  /**
   * Accepts a DirectTransfer relayed over HTTP (x402 direct streaming): `encoded` is the payer's
   * `encodeEnvelope({id: 0, body: DirectTransfer})`. The sender is the partner of the channel named by the
   * balance proof, verified under the ML-DSA-65 key this node learned for that partner over libp2p. If `token`
   * is given the channel's token must be it. Then the same acceptance path as a DirectTransfer over libp2p
   * (PROTOCOL.md §7), serialized with the partner's libp2p requests; an identical transfer again returns the
   * same answer without any change. On success we sign the EIP-712 `Processed` acknowledgement of the proof
   * (secp256k1), after the proof is durable.
   * @throws QrwpError INVALID_MESSAGE (field "transfer": not a DirectTransfer envelope) | CHANNEL_NOT_FOUND |
   *   INVALID_TRANSFER (field "token") | UNKNOWN_PARTNER_KEY | the §7 refusals with `details.field` prefixed
   *   by "transfer." (INVALID_SIGNATURE, STALE_NONCE, INVALID_TRANSFER, INSUFFICIENT_CAPACITY, CONFLICT,
   *   CHANNEL_STATE)
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
    if (msg.type !== "DirectTransfer" || envelope.replyTo !== undefined) {
      throw new QrwpError("INVALID_MESSAGE", `transfer must be a DirectTransfer request, not ${msg.type}`, {
        field: "transfer",
      });
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
      reply = await this.#incoming.serialized(partner, () => this.#incoming.onDirectTransfer(from, msg));
    } catch (err) {
      if (!isQrwpError(err) || typeof err.details.field !== "string") throw err;
      throw new QrwpError(err.code, err.message, { ...err.details, field: `transfer.${err.details.field}` });
    }
    if (reply.type !== "Processed") throw new QrwpError("INTERNAL", `unexpected acceptance ${reply.type}`);
    // Signed only now: the proof is durable (committed by #acceptProof). RFC 6979: a repeat gets the same bytes.
    const signature = signDigest(processedDigest(p), this.#keys.secp256k1PrivateKey);
    this.#log.info(
      { channelId: p.channelId.toString(), nonce: p.nonce.toString(), paymentId: msg.paymentId, partner },
      "accepted direct transfer over HTTP",
    );
    return {
      paymentId: msg.paymentId,
      channelId: p.channelId,
      nonce: p.nonce,
      amount: msg.amount,
      token: live.record.token,
      partner,
      processed: { channelId: p.channelId, nonce: p.nonce, signature },
    };
  }
}
