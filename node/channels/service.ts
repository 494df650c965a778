/**
 * The channel engine, composed: {@link ChannelService} builds its modules, routes a peer's requests to them
 * and is the one object the payments layer, the HTTP API and the runtime hold. Each module owns one thing:
 *
 * - `registry.ts`: the channels in memory, derived balances, the partner key book, channel events;
 * - `manager.ts`: open, announce, deposit, close, settle (the on-chain lifecycle the node drives);
 * - `outgoing.ts`: our balance proofs (the outbox: batch, build, sign, persist, send, acknowledge, re-deliver);
 * - `direct-payments.ts`: our direct payments (records, retries under one id) on top of the outbox;
 * - `evidence.ts`: when our updates carry ML-DSA-65 evidence, and sending it alone;
 * - `incoming.ts`: the partner's balance proofs (verify, persist, acknowledge);
 * - `cooperative-settle.ts`: both sides of a cooperative settle;
 * - `withdraw.ts`: withdraw from an open channel (request, co-sign, submit; capacity reserved until mined);
 * - `http-relay.ts`: x402 direct streaming's transfer and acknowledgement relayed over HTTP;
 * - `chain-calls.ts`, `partners.ts`: coded chain calls; how a partner is reached.
 *
 * What the chain does on its own (a partner's close, contests, settlement, unlocks) is the channel
 * monitor's (`node/monitor/`), which reads and acts through the same registry, chain calls and manager.
 *
 * Rules the engine keeps (Raiden spec, LDK persistence):
 * - All changes to OUR balance proofs on one channel go through one serialized queue; a payment is signed,
 *   persisted, sent and acknowledged before the next one starts on that channel.
 * - A balance proof is durable in SQLite before the message that carries it (or acknowledges it) is sent.
 * - A peer's message is fully validated before it changes state; refusals are coded and change nothing.
 */
import type { Logger } from "pino";
import {
  QrwpError,
  type BatchedReply,
  type ChannelMessage,
  type Lock,
  type MessageBatch,
  type MessageBatchReply,
  type NodeKeys,
  type TransferDescription,
} from "../../protocol/index.js";
import type { Deployment } from "../../chain/index.js";
import type { RemotePeer, SessionTransport } from "../../host/session-transport.js";
import { errorFields, errorReply } from "../../host/session-transport.js";
import type { NodeStore, PaymentRecord } from "../store/store.js";
import { ChainCalls, type HubOperations } from "./chain-calls.js";
import { CooperativeSettle } from "./cooperative-settle.js";
import { HttpRelay } from "./http-relay.js";
import { IncomingProofs } from "./incoming.js";
import { ChannelManager } from "./manager.js";
import { OutgoingProofs } from "./outgoing.js";
import { DirectPayments } from "./direct-payments.js";
import type { EvidencePolicy } from "./evidence.js";
import { Partners } from "./partners.js";
import { ChannelRegistry } from "./registry.js";
import { Withdraws } from "./withdraw.js";
import type {
  AcceptedDirectTransfer,
  ChannelSummary,
  ChannelView,
  OpenChannelParams,
  PartnerProof,
  PayParams,
  ProcessedAcknowledgement,
  ProofDelivery,
  SignedDirectTransfer,
  TransferHooks,
} from "./types.js";

export * from "./types.js";
export type { ChannelEventMap, ChannelStateEvent } from "./registry.js";

export interface ChannelServiceInit {
  store: NodeStore;
  keys: NodeKeys;
  hub: HubOperations;
  deployment: Deployment;
  transport: SessionTransport;
  log: Logger;
  /** Our dialable multiaddrs (with /p2p/<peerId>), announced to partners. */
  listenAddrs: () => string[];
  /** How often pending proofs are checked for re-delivery (ms). Default 2000. */
  redeliveryIntervalMs?: number;
  /** When our updates carry ML-DSA-65 evidence (defaults in `outgoing.ts`). */
  evidence?: Partial<EvidencePolicy>;
}

export class ChannelService {
  readonly registry: ChannelRegistry;
  readonly chain: ChainCalls;
  readonly manager: ChannelManager;
  readonly outgoing: OutgoingProofs;
  readonly direct: DirectPayments;
  readonly incoming: IncomingProofs;
  readonly httpRelay: HttpRelay;
  readonly cooperative: CooperativeSettle;
  readonly withdraws: Withdraws;
  readonly #partners: Partners;
  readonly #transport: SessionTransport;
  readonly #listenAddrs: () => string[];
  readonly #log: Logger;
  readonly #redeliveryIntervalMs: number;
  #redeliveryTimer: NodeJS.Timeout | undefined;
  #redelivering = false;

  constructor(init: ChannelServiceInit) {
    const { store, keys, deployment, log } = init;
    this.#transport = init.transport;
    this.#listenAddrs = init.listenAddrs;
    this.#log = log;
    this.#redeliveryIntervalMs = init.redeliveryIntervalMs ?? 2000;
    this.registry = new ChannelRegistry(store, keys.address, log);
    this.chain = new ChainCalls(init.hub, store, this.registry, log);
    this.#partners = new Partners(init.transport, store);
    const shared = { store, keys, deployment, registry: this.registry, chain: this.chain, log };
    this.outgoing = new OutgoingProofs({
      ...shared,
      partners: this.#partners,
      ...(init.evidence ? { evidence: init.evidence } : {}),
    });
    this.incoming = new IncomingProofs(shared);
    this.direct = new DirectPayments({ ...shared, outgoing: this.outgoing });
    this.httpRelay = new HttpRelay({
      ...shared,
      outgoing: this.outgoing,
      direct: this.direct,
      incoming: this.incoming,
    });
    this.cooperative = new CooperativeSettle({
      ...shared,
      partners: this.#partners,
      outgoing: this.outgoing,
    });
    this.withdraws = new Withdraws({
      ...shared,
      partners: this.#partners,
      outgoing: this.outgoing,
      incoming: this.incoming,
    });
    this.manager = new ChannelManager({
      ...shared,
      partners: this.#partners,
      cooperative: this.cooperative,
      listenAddrs: init.listenAddrs,
    });
  }

  get address(): string {
    return this.registry.address;
  }

  /** Loads channels from the store, starts handling peer requests, resumes unacknowledged payments. */
  async start(): Promise<void> {
    this.registry.loadAll();
    this.#transport.setHandler((from, body) => this.#handleRequest(from, body));
    this.#transport.onSession = (address, peerId) => {
      void this.#transport
        .request(address, { type: "PeerInfo", multiaddrs: this.#listenAddrs() }, null)
        .catch((err: unknown) =>
          this.#log.debug({ peer: address, err: errorFields(err) }, "PeerInfo not delivered"),
        );
      this.#log.debug({ peer: address, peerId }, "peer session");
    };
    this.outgoing.resumePending();
    this.#redeliveryTimer = setInterval(() => void this.#redeliver(), this.#redeliveryIntervalMs);
    this.#redeliveryTimer.unref();
    void this.manager.reconnectPartners();
  }

  async stop(): Promise<void> {
    if (this.#redeliveryTimer) clearInterval(this.#redeliveryTimer);
    this.outgoing.stop();
    await Promise.all([...this.registry.all()].map((l) => l.queue.onIdle()));
  }

  async #redeliver(): Promise<void> {
    if (this.#redelivering) return;
    this.#redelivering = true;
    try {
      await this.outgoing.redeliverDue();
    } finally {
      this.#redelivering = false;
    }
  }

  /**
   * The messages of a batch, in order, each exactly as if it came alone: a refused one gets its `Error`
   * reply in its place and the others go on (docs/PROTOCOL.md §9, "Batches").
   */
  async #handleBatch(from: RemotePeer, batch: MessageBatch): Promise<MessageBatchReply> {
    const outcomes = await this.incoming.hooks().requestBatch(from, batch.messages);
    const replies: BatchedReply[] = [];
    let refused = 0;
    let firstRefusal: { type: string; err: { code?: string; message: string } } | undefined;
    outcomes.forEach((outcome, i) => {
      if ("error" in outcome) {
        const err = outcome.error;
        refused++;
        firstRefusal ??= { type: batch.messages[i]?.type ?? "?", err: errorFields(err) };
        replies.push(errorReply(err));
        return;
      }
      const reply = outcome.reply;
      if (reply.type !== "RevealSecret" && reply.type !== "Ok" && reply.type !== "Error") {
        throw new QrwpError("INTERNAL", `unexpected reply ${reply.type} in a batch`);
      }
      replies.push(reply);
    });
    if (firstRefusal) {
      // Rate-limited per peer, as the transport's own warnings: a batch cannot multiply a peer's log lines.
      this.#transport.warnPeer(
        from.peerId,
        { peer: from.address, refused, of: batch.messages.length, first: firstRefusal },
        "refused peer requests in a batch",
      );
    }
    return { type: "MessageBatchReply", replies };
  }

  async #handleRequest(from: RemotePeer, body: ChannelMessage): Promise<ChannelMessage> {
    switch (body.type) {
      case "BalanceUpdate":
        return this.incoming.serialized(from.address, () => this.incoming.onBalanceUpdate(from, body));
      case "Evidence":
        return this.incoming.serialized(from.address, () => this.incoming.onEvidence(from, body));
      case "DirectTransfer":
        return this.incoming.serialized(from.address, () => this.incoming.onDirectTransfer(from, body));
      case "LockedTransfer":
        return this.incoming.serialized(from.address, () => this.incoming.onLockedTransfer(from, body));
      case "Unlock":
        return this.incoming.serialized(from.address, () => this.incoming.onUnlock(from, body));
      case "LockExpired":
        return this.incoming.serialized(from.address, () => this.incoming.onLockExpired(from, body));
      case "RevealSecret":
      case "SecretRequest":
      case "TransferFailed":
        return this.incoming.hooks().request(from, body);
      case "MessageBatch":
        return this.#handleBatch(from, body);
      case "ChannelAnnounce":
        return this.manager.onChannelAnnounce(from, body.channelId, body.multiaddrs);
      case "CooperativeSettleRequest":
        return this.cooperative.onRequest(from, body);
      case "WithdrawRequest":
        return this.withdraws.onRequest(from, body);
      case "PeerInfo":
        return this.manager.onPeerInfo(from, body.multiaddrs);
      default:
        throw new QrwpError("INVALID_MESSAGE", `unexpected request ${body.type}`, { field: "type" });
    }
  }

  /** Plugs in the payments layer (mediated transfers). */
  setTransferHooks(hooks: TransferHooks): void {
    this.incoming.setTransferHooks(hooks);
  }

  // ---- reads (registry) ----

  /** Every channel's state and balances without payment totals (cheap: the router's hot path). */
  channelSummaries(): ChannelSummary[] {
    return [...this.registry.all()].map((l) => this.registry.summary(l));
  }

  /** Every channel the node knows (any state) with derived balances in token base units. */
  listChannels(): ChannelView[] {
    return [...this.registry.all()].map((l) => this.registry.view(l));
  }

  /** @throws QrwpError CHANNEL_NOT_FOUND */
  getChannel(channelId: bigint): ChannelView {
    return this.registry.view(this.registry.get(channelId));
  }

  /** One channel's state and balances without payment totals (cheap). @throws QrwpError CHANNEL_NOT_FOUND */
  channelSummary(channelId: bigint): ChannelSummary {
    return this.registry.summary(this.registry.get(channelId));
  }

  /** The open channel (not closing) with `partner` for `token`, or null. */
  openChannelWith(partner: string, token: string): ChannelSummary | null {
    const live = this.registry.findOpen(partner, token);
    return live && !live.closing ? this.registry.summary(live) : null;
  }

  /** Unsettled channels (opened or closed) on which the partner has signed a balance proof (nonce >= 1). */
  channelsWithPartnerProofs(): bigint[] {
    return [...this.registry.all()]
      .filter((l) => l.record.state !== "settled" && (l.partnerLatest?.proof.nonce ?? 0n) > 0n)
      .map((l) => l.record.channelId);
  }

  /** The partner's latest proof on an unsettled channel with its ML-DSA-65 key (see `ChannelRegistry.partnerProof`). */
  partnerProof(channelId: bigint): PartnerProof | null {
    return this.registry.partnerProof(channelId);
  }

  /** True when an unsettled channel is with `address` (a protected peer). */
  isPartner(address: string): boolean {
    return this.registry.isPartner(address);
  }

  /** The node's time for lock decisions: max(wall clock, latest block timestamp), unix seconds. */
  nowSeconds(): bigint {
    return this.registry.nowSeconds();
  }

  /** Our pending lock with this secret hash on a channel (acknowledged or pending), or undefined. */
  ourLock(channelId: bigint, secretHash: string): Lock | undefined {
    return this.registry.ourLock(channelId, secretHash);
  }

  /** The partner's pending lock with this secret hash on a channel (what we may claim), or undefined. */
  partnerLock(channelId: bigint, secretHash: string): Lock | undefined {
    return this.registry.partnerLock(channelId, secretHash);
  }

  // ---- lifecycle (manager) ----

  /** Opens a channel on chain and announces it (see `ChannelManager.openChannel` for checks and errors). */
  openChannel(params: OpenChannelParams): Promise<ChannelView> {
    return this.manager.openChannel(params);
  }

  /** Raises our total deposit to `totalDeposit` base units (see `ChannelManager.deposit`). */
  deposit(channelId: bigint, totalDeposit: bigint): Promise<ChannelView> {
    return this.manager.deposit(channelId, totalDeposit);
  }

  /** Closes cooperatively (default) or unilaterally (see `ChannelManager.close`). */
  close(channelId: bigint, options: { cooperative?: boolean } = {}): Promise<ChannelView> {
    return this.manager.close(channelId, options);
  }

  /** Settles a closed channel after its settle timeout (see `ChannelManager.settle`). */
  settle(channelId: bigint): Promise<ChannelView> {
    return this.manager.settle(channelId);
  }

  /** Withdraws `amount` base units of our balance from an open channel (see `withdraw.ts`). */
  withdraw(channelId: bigint, amount: bigint): Promise<ChannelView> {
    return this.withdraws.withdraw(channelId, amount);
  }

  // ---- payments (outgoing proofs, HTTP relay) ----

  /** Pays a channel partner directly, `amount` base units (see `OutgoingProofs.pay` for outcomes and errors). */
  pay(params: PayParams, options: { newId?: boolean } = {}): Promise<PaymentRecord> {
    return this.direct.pay(params, options);
  }

  /** What an outgoing payment id is used by: a direct payment, a routed one, or nothing (one statement). */
  outgoingIdUse(paymentId: string): "direct" | "routed" | null {
    return this.direct.outgoingIdUse(paymentId);
  }

  /** A direct payment by id. @throws QrwpError PAYMENT_NOT_FOUND */
  getPayment(paymentId: string): PaymentRecord {
    return this.direct.getPayment(paymentId);
  }

  /** Our outgoing direct payment with this id, or null. */
  outgoingPayment(paymentId: string): PaymentRecord | null {
    return this.direct.outgoingPayment(paymentId);
  }

  /**
   * Adds `lock` on the channel with a LockedTransfer; `persist` runs in the transaction that stores its proof
   * (see `OutgoingProofs.sendLockedTransfer`).
   */
  sendLockedTransfer(
    channelId: bigint,
    lock: Lock,
    transfer: TransferDescription,
    persist?: () => void,
  ): Promise<ProofDelivery> {
    return this.outgoing.sendLockedTransfer(channelId, lock, transfer, persist);
  }

  /** Pays our pending lock for `sha256(secret)` off-chain (Unlock). */
  sendUnlock(channelId: bigint, secret: string, paymentId: string): Promise<ProofDelivery> {
    return this.outgoing.sendUnlock(channelId, secret, paymentId);
  }

  /** Removes our pending lock for `secretHash` (LockExpired). */
  sendLockExpired(channelId: bigint, secretHash: string): Promise<ProofDelivery> {
    return this.outgoing.sendLockExpired(channelId, secretHash);
  }

  /** Signs, without sending, a direct transfer for HTTP delivery (x402 direct streaming; `HttpRelay`). */
  signDirectTransfer(
    params: PayParams,
    options: { notAfterMs?: number } = {},
  ): Promise<SignedDirectTransfer> {
    return this.httpRelay.signDirectTransfer(params, options);
  }

  /** Signs, without sending, several direct payments to one partner, normally under one proof (`HttpRelay`). */
  signDirectTransfers(
    target: string,
    token: string,
    payments: { amount: bigint; paymentId: string; notAfterMs?: number }[],
  ): Promise<PromiseSettledResult<SignedDirectTransfer>[]> {
    return this.httpRelay.signDirectTransfers(target, token, payments);
  }

  /** Completes our direct payment with the partner's signed acknowledgement relayed over HTTP. */
  confirmProcessed(paymentId: string, ack: ProcessedAcknowledgement): Promise<PaymentRecord> {
    return this.httpRelay.confirmProcessed(paymentId, ack);
  }

  /** Accepts a DirectTransfer relayed over HTTP and signs its `Processed` (`HttpRelay`). */
  acceptDirectTransfer(
    encoded: Uint8Array,
    options: { token?: string } = {},
  ): Promise<AcceptedDirectTransfer> {
    return this.httpRelay.acceptDirectTransfer(encoded, options);
  }
}
