/**
 * The channel node's core: opens channels on-chain, makes and accepts direct payments (one new EIP-712 +
 * ML-DSA-65 balance proof per payment), closes cooperatively or unilaterally, contests a partner's close with
 * the partner's latest balance proof, and settles after the settle timeout.
 *
 * Rules this file keeps (Raiden spec, LDK persistence):
 * - All changes to OUR balance proofs on one channel go through one serialized queue; a payment is signed,
 *   persisted, sent and acknowledged before the next one starts on that channel.
 * - A balance proof is durable in SQLite before the message that carries it (or acknowledges it) is sent.
 * - A peer's message is fully validated before it changes state; refusals are coded and change nothing.
 */
import { randomUUID } from "node:crypto";
import { Queue } from "@libp2p/utils";
import { getAddress } from "ethers";
import type { Logger } from "pino";
import {
  EMPTY_LOCKS_ROOT,
  QrwpError,
  assertArgument,
  balanceHash,
  cooperativeSettleDigest,
  isQrwpError,
  recoverDigestSigner,
  signBalanceProof,
  signBalanceProofUpdate,
  signDigest,
  verifyBalanceProof,
  type BalanceProof,
  type ChannelMessage,
  type DirectTransfer,
  type NodeKeys,
  type SignedBalanceProof,
} from "../../protocol/index.js";
import type { Deployment, HubClient } from "../../chain/index.js";
import type { ChannelTransport, RemotePeer } from "../p2p/channel-transport.js";
import { errorFields } from "../p2p/channel-transport.js";
import type { ChannelRecord, NodeStore, PaymentRecord } from "../store/store.js";

/** Default settle timeout for channels we open (seconds of block.timestamp). */
export const DEFAULT_SETTLE_TIMEOUT_SECONDS = 3600;

export interface ChannelServiceInit {
  store: NodeStore;
  keys: NodeKeys;
  hub: HubClient;
  deployment: Deployment;
  transport: ChannelTransport;
  log: Logger;
  /** Our dialable multiaddrs (with /p2p/<peerId>), announced to partners. */
  listenAddrs: () => string[];
  /** How often the chain is polled for closes and settle deadlines (ms). Default 2000. */
  chainPollMs?: number;
}

/** A channel with derived balances, as the API shows it. Amounts are token base units. */
export interface ChannelView {
  channelId: bigint;
  partner: string;
  token: string;
  state: ChannelRecord["state"];
  settleTimeoutSeconds: number;
  ourDeposit: bigint;
  partnerDeposit: bigint;
  ourBalance: bigint;
  partnerBalance: bigint;
  ourNonce: bigint;
  partnerNonce: bigint;
  closedAtSeconds: number | null;
  closingParticipant: string | null;
  totals: { sent: bigint; received: bigint; sentCount: number; receivedCount: number };
}

/** What {@link ChannelService.openChannel} takes. */
export interface OpenChannelParams {
  partner: string;
  /** The partner's multiaddr ending in /p2p/<peerId>; optional when the partner is already known. */
  partnerMultiaddr?: string;
  token: string;
  depositAmount: bigint;
  settleTimeoutSeconds?: number;
}

/** What {@link ChannelService.pay} takes. */
export interface PayParams {
  target: string;
  token: string;
  amount: bigint;
  paymentId?: string;
}

/** In-memory view of a channel's balance proofs; always equal to what the store holds. */
interface Live {
  record: ChannelRecord;
  /** Our highest-nonce balance proof (the next one uses nonce + 1). */
  ourLatest: SignedBalanceProof | null;
  /** What the partner has accepted from us: transferredAmount of our last acknowledged proof. */
  ourTransferred: bigint;
  /** The partner's highest-nonce balance proof we accepted. */
  partnerLatest: SignedBalanceProof | null;
  /** Outgoing queue: every change to OUR balance proofs on this channel runs here, one at a time. */
  queue: Queue<unknown>;
  /** Set while a cooperative settle or close is in progress: no new outgoing payments. */
  closing: boolean;
}

const eqAddr = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();

export class ChannelService {
  readonly #store: NodeStore;
  readonly #keys: NodeKeys;
  readonly #hub: HubClient;
  readonly #deployment: Deployment;
  readonly #transport: ChannelTransport;
  readonly #log: Logger;
  readonly #listenAddrs: () => string[];
  readonly #chainPollMs: number;
  readonly #live = new Map<string, Live>();
  #pollTimer: NodeJS.Timeout | undefined;
  #polling = false;
  #stopped = false;

  constructor(init: ChannelServiceInit) {
    this.#store = init.store;
    this.#keys = init.keys;
    this.#hub = init.hub;
    this.#deployment = init.deployment;
    this.#transport = init.transport;
    this.#log = init.log;
    this.#listenAddrs = init.listenAddrs;
    this.#chainPollMs = init.chainPollMs ?? 2000;
  }

  get address(): string {
    return this.#keys.address;
  }

  /** Loads channels from the store, starts handling peer requests, resumes unacknowledged payments. */
  async start(): Promise<void> {
    for (const record of this.#store.listChannels()) this.#load(record);
    this.#transport.setHandler((from, body) => this.#handleRequest(from, body));
    this.#transport.onSession = (address, peerId) => {
      void this.#transport
        .request(address, { type: "PeerInfo", multiaddrs: this.#listenAddrs() }, null)
        .catch((err: unknown) =>
          this.#log.debug({ peer: address, err: errorFields(err) }, "PeerInfo not delivered"),
        );
      this.#log.debug({ peer: address, peerId }, "peer session");
    };
    for (const live of this.#live.values()) {
      if (
        live.record.state === "opened" &&
        this.#store.pendingOutgoingPayments(live.record.channelId).length > 0
      ) {
        void live.queue
          .add(() => this.#resendPending(live))
          .catch((err: unknown) =>
            this.#log.warn(
              { channelId: live.record.channelId.toString(), err: errorFields(err) },
              "resend after restart failed; will retry on next payment",
            ),
          );
      }
    }
    this.#schedulePoll();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#pollTimer) clearTimeout(this.#pollTimer);
    await Promise.all([...this.#live.values()].map((l) => l.queue.onIdle()));
  }

  #load(record: ChannelRecord): Live {
    const ourLatest = this.#store.latestBalanceProof(record.channelId, this.address);
    const acked = this.#store.latestAcknowledgedTransferred(record.channelId, this.address);
    const live: Live = {
      record,
      ourLatest,
      ourTransferred: acked,
      partnerLatest: this.#store.latestBalanceProof(record.channelId, record.partner),
      queue: new Queue<unknown>({ concurrency: 1 }),
      closing: this.#store.getMeta(cosignedKey(record.channelId)) !== null,
    };
    this.#live.set(record.channelId.toString(), live);
    return live;
  }

  #get(channelId: bigint): Live {
    const live = this.#live.get(channelId.toString());
    if (!live)
      throw new QrwpError("CHANNEL_NOT_FOUND", `channel ${channelId} not found`, {
        channelId: channelId.toString(),
      });
    return live;
  }

  #balances(live: Live): {
    ourBalance: bigint;
    partnerBalance: bigint;
    sentTransferred: bigint;
    receivedTransferred: bigint;
  } {
    // Capacity counts our latest signed proof as spent even before it is acknowledged (conservative).
    const sentTransferred = live.ourLatest?.proof.transferredAmount ?? 0n;
    const spent = sentTransferred > live.ourTransferred ? sentTransferred : live.ourTransferred;
    const receivedTransferred = live.partnerLatest?.proof.transferredAmount ?? 0n;
    return {
      ourBalance: live.record.ourDeposit - spent + receivedTransferred,
      partnerBalance: live.record.partnerDeposit - receivedTransferred + live.ourTransferred,
      sentTransferred: live.ourTransferred,
      receivedTransferred,
    };
  }

  #view(live: Live): ChannelView {
    const r = live.record;
    const b = this.#balances(live);
    return {
      channelId: r.channelId,
      partner: r.partner,
      token: r.token,
      state: r.state,
      settleTimeoutSeconds: r.settleTimeoutSeconds,
      ourDeposit: r.ourDeposit,
      partnerDeposit: r.partnerDeposit,
      ourBalance: b.ourBalance,
      partnerBalance: b.partnerBalance,
      ourNonce: live.ourLatest?.proof.nonce ?? 0n,
      partnerNonce: live.partnerLatest?.proof.nonce ?? 0n,
      closedAtSeconds: r.closedAtSeconds,
      closingParticipant: r.closingParticipant,
      totals: this.#store.paymentTotals(r.channelId),
    };
  }

  /** Every channel the node knows (any state) with derived balances in token base units. */
  listChannels(): ChannelView[] {
    return [...this.#live.values()].map((l) => this.#view(l));
  }

  /**
   * One channel with derived balances.
   * @throws QrwpError("CHANNEL_NOT_FOUND")
   */
  getChannel(channelId: bigint): ChannelView {
    return this.#view(this.#get(channelId));
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

  #target(partner: string): { peerId?: string; multiaddrs: string[] } | null {
    const peer = this.#store.getPeer(partner);
    return peer ? { peerId: peer.peerId, multiaddrs: peer.multiaddrs } : null;
  }

  async #request(partner: string, body: ChannelMessage): Promise<ChannelMessage> {
    const reply = await this.#transport.request(partner, body, this.#target(partner));
    if (reply.type === "Error") {
      throw new QrwpError("PEER_REJECTED", `peer refused ${body.type}: ${reply.code}: ${reply.message}`, {
        peer: partner,
        peerCode: reply.code,
      });
    }
    return reply;
  }

  /**
   * Opens a channel with `partner` on-chain (openChannel + setTotalDeposit through the Bridge) and announces
   * it to the partner, who checks it on-chain. The partner must be reachable first (no gas is spent otherwise).
   * @throws QrwpError INVALID_ARGUMENT | PEER_OFFLINE | HANDSHAKE_FAILED | CONFLICT | CHAIN_ERROR
   */
  async openChannel(params: OpenChannelParams): Promise<ChannelView> {
    const partner = getAddress(params.partner);
    assertArgument(
      !eqAddr(partner, this.address),
      "cannot open a channel with ourselves",
      "partner",
      partner,
    );
    const token = getAddress(params.token);
    assertArgument(params.depositAmount >= 0n, "deposit must be >= 0", "deposit", params.depositAmount);
    const settleTimeoutSeconds = params.settleTimeoutSeconds ?? DEFAULT_SETTLE_TIMEOUT_SECONDS;
    for (const l of this.#live.values()) {
      if (
        eqAddr(l.record.partner, partner) &&
        eqAddr(l.record.token, token) &&
        l.record.state !== "settled"
      ) {
        throw new QrwpError("CONFLICT", `a channel with ${partner} for this token already exists`, {
          channelId: l.record.channelId.toString(),
        });
      }
    }
    let target = this.#target(partner);
    if (params.partnerMultiaddr) {
      const peerId = params.partnerMultiaddr.split("/p2p/")[1];
      assertArgument(
        peerId,
        "partnerMultiaddr must end with /p2p/<peerId>",
        "partnerMultiaddr",
        params.partnerMultiaddr,
      );
      target = { peerId, multiaddrs: [params.partnerMultiaddr.split("/p2p/")[0] as string] };
      this.#store.upsertPeer({ address: partner, peerId, multiaddrs: target.multiaddrs });
    }
    if (!target) {
      throw new QrwpError("PEER_OFFLINE", "partner's address is unknown: give partnerMultiaddr", {
        field: "partnerMultiaddr",
      });
    }
    await this.#transport.connect(partner, target);

    const { channelId } = await this.#chain("openChannel", () =>
      this.#hub.openChannel(partner, token, settleTimeoutSeconds),
    );
    const now = Date.now();
    const record: ChannelRecord = {
      channelId,
      partner,
      token,
      state: "opened",
      settleTimeoutSeconds,
      ourDeposit: 0n,
      partnerDeposit: 0n,
      closedAtSeconds: null,
      closingParticipant: null,
      openedAtMs: now,
      updatedAtMs: now,
    };
    this.#store.insertChannel(record);
    const live = this.#load(record);
    this.#log.info({ channelId: channelId.toString(), partner, token }, "channel opened on-chain");
    if (params.depositAmount > 0n) {
      await this.#chain("setTotalDeposit", () => this.#hub.setTotalDeposit(channelId, params.depositAmount));
      live.record.ourDeposit = params.depositAmount;
      this.#store.updateChannel(live.record);
    }
    await this.#request(partner, { type: "ChannelAnnounce", channelId, multiaddrs: this.#listenAddrs() });
    return this.#view(live);
  }

  /**
   * Raises our on-chain total deposit to `totalDeposit` (monotonic, idempotent on retry).
   * @throws QrwpError CHANNEL_NOT_FOUND | CHANNEL_STATE | INVALID_ARGUMENT | CHAIN_ERROR
   */
  async deposit(channelId: bigint, totalDeposit: bigint): Promise<ChannelView> {
    const live = this.#get(channelId);
    return (await live.queue.add(async () => {
      if (live.record.state !== "opened") throw this.#stateError(live, "opened");
      assertArgument(
        totalDeposit > live.record.ourDeposit,
        "totalDeposit must exceed the current deposit",
        "totalDeposit",
        totalDeposit,
      );
      await this.#chain("setTotalDeposit", () => this.#hub.setTotalDeposit(channelId, totalDeposit));
      live.record.ourDeposit = totalDeposit;
      this.#store.updateChannel(live.record);
      return this.#view(live);
    })) as ChannelView;
  }

  /**
   * Pays `amount` base units of `token` to `target`, a direct channel partner: signs a new balance proof
   * (nonce + 1, transferredAmount + amount), persists it, sends it and waits for the partner's Processed.
   * @throws QrwpError INVALID_ARGUMENT | CHANNEL_NOT_FOUND | CHANNEL_STATE | INSUFFICIENT_CAPACITY |
   *   PEER_OFFLINE | PEER_REJECTED | TIMEOUT | CONFLICT (paymentId reused)
   */
  async pay(params: PayParams): Promise<PaymentRecord> {
    const target = getAddress(params.target);
    const token = getAddress(params.token);
    assertArgument(params.amount > 0n, "amount must be > 0", "amount", params.amount);
    const paymentId = params.paymentId ?? randomUUID();
    const live = [...this.#live.values()].find(
      (l) => eqAddr(l.record.partner, target) && eqAddr(l.record.token, token) && l.record.state === "opened",
    );
    if (!live) {
      throw new QrwpError("CHANNEL_NOT_FOUND", `no open channel with ${target} for token ${token}`, {
        target,
        token,
      });
    }
    if (this.#store.getPayment(paymentId)?.direction === "outgoing") {
      throw new QrwpError("CONFLICT", `payment ${paymentId} already exists`, {
        field: "paymentId",
        paymentId,
      });
    }
    return (await live.queue.add(() => this.#payLocked(live, paymentId, params.amount))) as PaymentRecord;
  }

  async #payLocked(live: Live, paymentId: string, amount: bigint): Promise<PaymentRecord> {
    if (live.record.state !== "opened" || live.closing) throw this.#stateError(live, "opened");
    await this.#resendPending(live);
    if (this.#balances(live).ourBalance < amount) {
      await this.#refreshDeposits(live);
      const { ourBalance } = this.#balances(live);
      if (ourBalance < amount) {
        throw new QrwpError("INSUFFICIENT_CAPACITY", `balance ${ourBalance} is less than amount ${amount}`, {
          channelId: live.record.channelId.toString(),
          balance: ourBalance.toString(),
          amount: amount.toString(),
        });
      }
    }
    const proof: BalanceProof = {
      chainId: BigInt(this.#deployment.chainId),
      hub: this.#deployment.hub,
      channelId: live.record.channelId,
      nonce: (live.ourLatest?.proof.nonce ?? 0n) + 1n,
      transferredAmount: live.ourTransferred + amount,
      lockedAmount: 0n,
      locksRoot: EMPTY_LOCKS_ROOT,
    };
    const signed = signBalanceProof(proof, this.#keys);
    const payment: PaymentRecord = {
      paymentId,
      direction: "outgoing",
      channelId: live.record.channelId,
      partner: live.record.partner,
      token: live.record.token,
      amount,
      nonce: proof.nonce,
      status: "pending",
      errorCode: null,
      errorMessage: null,
      createdAtMs: Date.now(),
      completedAtMs: null,
    };
    // Durable before send: the proof and the pending payment commit together.
    this.#store.transaction(() => {
      this.#store.insertBalanceProof(this.address, signed);
      this.#store.insertPayment(payment);
    });
    live.ourLatest = signed;
    await this.#deliver(live, payment, signed);
    return this.#store.getPayment(paymentId) as PaymentRecord;
  }

  /** Sends one pending transfer and records the outcome. Throws (payment stays pending) if no reply came. */
  async #deliver(live: Live, payment: PaymentRecord, signed: SignedBalanceProof): Promise<void> {
    const message: DirectTransfer = {
      type: "DirectTransfer",
      paymentId: payment.paymentId,
      amount: payment.amount,
      balanceProof: signed,
    };
    const reply = await this.#transport.request(
      live.record.partner,
      message,
      this.#target(live.record.partner),
    );
    if (
      reply.type === "Processed" &&
      reply.nonce === signed.proof.nonce &&
      reply.channelId === live.record.channelId
    ) {
      this.#store.finishOutgoingPayment(payment.paymentId, "completed");
      live.ourTransferred = signed.proof.transferredAmount;
      return;
    }
    // Refused: the partner did not store this proof. The next proof (nonce + 1) builds on what the
    // partner acknowledged (ourTransferred). The partner still has the bytes of the refused proof; an honest
    // partner never uses it and a dishonest one gains at most `amount` (see docs/DECISIONS.md).
    const code = reply.type === "Error" ? reply.code : "INVALID_MESSAGE";
    const message2 = reply.type === "Error" ? reply.message : `unexpected reply ${reply.type}`;
    this.#store.finishOutgoingPayment(payment.paymentId, "failed", { code, message: message2 });
    this.#log.warn({ paymentId: payment.paymentId, peerCode: code }, "partner refused transfer");
    throw new QrwpError("PEER_REJECTED", `partner refused the transfer: ${code}: ${message2}`, {
      paymentId: payment.paymentId,
      peerCode: code,
    });
  }

  /** Re-sends unacknowledged transfers in nonce order (after a restart or a lost reply). */
  async #resendPending(live: Live): Promise<void> {
    for (const payment of this.#store.pendingOutgoingPayments(live.record.channelId)) {
      const signed = this.#store.balanceProofAt(live.record.channelId, this.address, payment.nonce);
      if (!signed)
        throw new QrwpError("INTERNAL", `missing balance proof for pending payment ${payment.paymentId}`);
      this.#log.info(
        { paymentId: payment.paymentId, nonce: payment.nonce.toString() },
        "re-sending unacknowledged transfer",
      );
      try {
        await this.#deliver(live, payment, signed);
      } catch (err) {
        if (isQrwpError(err) && err.code === "PEER_REJECTED") continue;
        throw err;
      }
    }
  }

  async #refreshDeposits(live: Live): Promise<void> {
    const [ours, theirs] = await Promise.all([
      this.#hub.getParticipant(live.record.channelId, this.address),
      this.#hub.getParticipant(live.record.channelId, live.record.partner),
    ]);
    if (ours.totalDeposit !== live.record.ourDeposit || theirs.totalDeposit !== live.record.partnerDeposit) {
      live.record.ourDeposit = ours.totalDeposit;
      live.record.partnerDeposit = theirs.totalDeposit;
      this.#store.updateChannel(live.record);
    }
  }

  /**
   * Closes a channel. Cooperative (default): both sign the final balances and the chain pays out at once.
   * Unilateral: submits the partner's latest balance proof; the channel settles after the settle timeout.
   * @throws QrwpError CHANNEL_NOT_FOUND | CHANNEL_STATE | PEER_OFFLINE | PEER_REJECTED | CHAIN_ERROR
   */
  async close(channelId: bigint, options: { cooperative?: boolean } = {}): Promise<ChannelView> {
    const live = this.#get(channelId);
    return (await live.queue.add(async () => {
      if (live.record.state !== "opened") throw this.#stateError(live, "opened");
      const cooperative = options.cooperative ?? true;
      if (cooperative && live.closing) throw this.#stateError(live, "opened");
      const wasClosing = live.closing;
      live.closing = true;
      try {
        if (cooperative) await this.#cooperativeSettle(live);
        else await this.#closeUnilaterally(live);
      } finally {
        live.closing = wasClosing;
      }
      return this.#view(live);
    })) as ChannelView;
  }

  async #cooperativeSettle(live: Live): Promise<void> {
    await this.#resendPending(live);
    await this.#refreshDeposits(live);
    const onchain = await this.#hub.getChannel(live.record.channelId);
    const amounts = this.#settleAmounts(live, onchain.participant1, onchain.participant2);
    const args = {
      chainId: BigInt(this.#deployment.chainId),
      hub: this.#deployment.hub,
      channelId: live.record.channelId,
      ...amounts,
    };
    const ourSignature = signDigest(cooperativeSettleDigest(args), this.#keys.secp256k1PrivateKey);
    const reply = await this.#request(live.record.partner, {
      type: "CooperativeSettleRequest",
      channelId: live.record.channelId,
      ...amounts,
      signature: ourSignature,
    });
    if (reply.type !== "CooperativeSettleResponse")
      throw new QrwpError("PEER_REJECTED", `unexpected reply ${reply.type}`);
    const signer = recoverDigestSigner(cooperativeSettleDigest(args), reply.signature);
    if (!eqAddr(signer, live.record.partner)) {
      throw new QrwpError(
        "INVALID_SIGNATURE",
        "partner's cooperative settle signature is not the partner's",
        { field: "signature" },
      );
    }
    const weAreP1 = eqAddr(amounts.participant1, this.address);
    await this.#chain("cooperativeSettle", () =>
      this.#hub.cooperativeSettle(
        live.record.channelId,
        amounts.participant1,
        amounts.participant1Amount,
        amounts.participant2,
        amounts.participant2Amount,
        weAreP1 ? ourSignature : reply.signature,
        weAreP1 ? reply.signature : ourSignature,
      ),
    );
    live.record.state = "settled";
    this.#store.updateChannel(live.record);
    this.#log.info(
      { channelId: live.record.channelId.toString(), ...stringify(amounts) },
      "channel settled cooperatively",
    );
  }

  #settleAmounts(live: Live, participant1: string, participant2: string) {
    const b = this.#balances(live);
    const ourAmount = live.record.ourDeposit - b.sentTransferred + b.receivedTransferred;
    const partnerAmount = live.record.partnerDeposit - b.receivedTransferred + b.sentTransferred;
    const weAreP1 = eqAddr(participant1, this.address);
    return {
      participant1: getAddress(participant1),
      participant1Amount: weAreP1 ? ourAmount : partnerAmount,
      participant2: getAddress(participant2),
      participant2Amount: weAreP1 ? partnerAmount : ourAmount,
    };
  }

  async #closeUnilaterally(live: Live): Promise<void> {
    const partnerProof = live.partnerLatest;
    await this.#chain("closeChannel", () =>
      this.#hub.closeChannel(
        live.record.channelId,
        live.record.partner,
        partnerProof
          ? {
              nonce: partnerProof.proof.nonce,
              balanceHash: balanceHash(partnerProof.proof),
              signature: partnerProof.signature,
            }
          : null,
      ),
    );
    const onchain = await this.#hub.getChannel(live.record.channelId);
    live.record.state = "closed";
    live.record.closedAtSeconds = onchain.closedAtSeconds;
    live.record.closingParticipant = this.address;
    this.#store.updateChannel(live.record);
    this.#log.info(
      { channelId: live.record.channelId.toString(), settleTimeoutSeconds: live.record.settleTimeoutSeconds },
      "channel closed unilaterally",
    );
  }

  /**
   * Settles a closed channel once its settle timeout has passed, with the balance data matching the proofs
   * stored on-chain for each side. Called by the chain poller; callable directly.
   * @throws QrwpError CHANNEL_STATE (not closed or timeout not reached) | CHAIN_ERROR
   */
  async settle(channelId: bigint): Promise<ChannelView> {
    const live = this.#get(channelId);
    return (await live.queue.add(async () => {
      await this.#syncFromChain(live);
      if (live.record.state === "settled") return this.#view(live);
      if (live.record.state !== "closed") throw this.#stateError(live, "closed");
      const now = await this.#hub.latestTimestamp();
      const deadline = (live.record.closedAtSeconds ?? 0) + live.record.settleTimeoutSeconds;
      if (now <= deadline) {
        throw new QrwpError("CHANNEL_STATE", `settle timeout has not passed (${deadline - now} s left)`, {
          channelId: channelId.toString(),
          settleableAtSeconds: deadline + 1,
        });
      }
      const onchain = await this.#hub.getChannel(channelId);
      const data = async (participant: string) => {
        const { nonce } = await this.#hub.getParticipant(channelId, participant);
        const proof = nonce === 0n ? null : this.#store.balanceProofAt(channelId, participant, nonce);
        if (nonce !== 0n && !proof)
          throw new QrwpError("INTERNAL", `no balance proof of ${participant} with nonce ${nonce}`);
        return {
          participant,
          transferredAmount: proof?.proof.transferredAmount ?? 0n,
          lockedAmount: proof?.proof.lockedAmount ?? 0n,
          locksRoot: proof?.proof.locksRoot ?? EMPTY_LOCKS_ROOT,
        };
      };
      await this.#chain("settleChannel", async () =>
        this.#hub.settleChannel(
          channelId,
          await data(onchain.participant1),
          await data(onchain.participant2),
        ),
      );
      live.record.state = "settled";
      this.#store.updateChannel(live.record);
      this.#log.info({ channelId: channelId.toString() }, "channel settled");
      return this.#view(live);
    })) as ChannelView;
  }

  /** Reads the channel's on-chain state; on a partner's close, contests with the partner's latest proof. */
  async #syncFromChain(live: Live): Promise<void> {
    const onchain = await this.#hub.getChannel(live.record.channelId);
    if (onchain.state === "settled" && live.record.state !== "settled") {
      live.record.state = "settled";
      this.#store.updateChannel(live.record);
      this.#log.info({ channelId: live.record.channelId.toString() }, "channel settled on-chain");
      return;
    }
    if (onchain.state !== "closed") return;
    if (live.record.state === "opened") {
      live.record.state = "closed";
      live.record.closedAtSeconds = onchain.closedAtSeconds;
      live.record.closingParticipant = onchain.closingParticipant;
      this.#store.updateChannel(live.record);
      this.#log.warn(
        { channelId: live.record.channelId.toString(), closer: onchain.closingParticipant },
        "partner closed the channel",
      );
    }
    if (eqAddr(onchain.closingParticipant, live.record.partner) && live.partnerLatest) {
      const stored = await this.#hub.getParticipant(live.record.channelId, live.record.partner);
      const latest = live.partnerLatest;
      const now = await this.#hub.latestTimestamp();
      if (
        stored.nonce < latest.proof.nonce &&
        now <= onchain.closedAtSeconds + onchain.settleTimeoutSeconds
      ) {
        const counter = signBalanceProofUpdate(latest.proof, latest.signature, this.#keys);
        await this.#chain("updateNonClosingBalanceProof", () =>
          this.#hub.updateNonClosingBalanceProof(
            live.record.channelId,
            live.record.partner,
            this.address,
            {
              nonce: latest.proof.nonce,
              balanceHash: balanceHash(latest.proof),
              signature: latest.signature,
            },
            counter,
          ),
        );
        this.#log.info(
          { channelId: live.record.channelId.toString(), nonce: latest.proof.nonce.toString() },
          "contested partner's close with its latest balance proof",
        );
      }
    }
  }

  #schedulePoll(): void {
    if (this.#stopped) return;
    this.#pollTimer = setTimeout(() => void this.#poll(), this.#chainPollMs);
    this.#pollTimer.unref();
  }

  async #poll(): Promise<void> {
    if (this.#polling || this.#stopped) return;
    this.#polling = true;
    try {
      for (const live of this.#live.values()) {
        if (live.record.state === "settled") continue;
        try {
          if (live.record.state === "opened") {
            await live.queue.add(() => this.#syncFromChain(live));
          } else if (live.record.state === "closed") {
            await live.queue.add(() => this.#syncFromChain(live));
            const now = await this.#hub.latestTimestamp();
            if (
              live.record.state === "closed" &&
              now > (live.record.closedAtSeconds ?? 0) + live.record.settleTimeoutSeconds
            ) {
              await this.settle(live.record.channelId);
            }
          }
        } catch (err) {
          this.#log.warn(
            { channelId: live.record.channelId.toString(), err: errorFields(err) },
            "chain sync failed; will retry",
          );
        }
      }
    } finally {
      this.#polling = false;
      this.#schedulePoll();
    }
  }

  async #chain<T>(action: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (isQrwpError(err)) throw err;
      throw new QrwpError(
        "CHAIN_ERROR",
        `${action} failed: ${err instanceof Error ? err.message.slice(0, 300) : String(err)}`,
        { action },
        { cause: err },
      );
    }
  }

  #stateError(live: Live, expected: string): QrwpError {
    return new QrwpError(
      "CHANNEL_STATE",
      `channel ${live.record.channelId} is ${live.closing ? "closing" : live.record.state}, expected ${expected}`,
      {
        channelId: live.record.channelId.toString(),
        state: live.record.state,
      },
    );
  }

  // ---- requests from peers ----

  async #handleRequest(from: RemotePeer, body: ChannelMessage): Promise<ChannelMessage> {
    switch (body.type) {
      case "DirectTransfer":
        return this.#onDirectTransfer(from, body);
      case "ChannelAnnounce":
        return this.#onChannelAnnounce(from, body.channelId, body.multiaddrs);
      case "CooperativeSettleRequest":
        return this.#onCooperativeSettle(from, body);
      case "PeerInfo":
        // Only channel partners' addresses are kept, so unknown peers cannot grow the table.
        if ([...this.#live.values()].some((l) => eqAddr(l.record.partner, from.address))) {
          this.#store.upsertPeer({
            address: from.address,
            peerId: from.peerId,
            multiaddrs: body.multiaddrs.map(stripP2p),
          });
        }
        return { type: "Ok" };
      default:
        throw new QrwpError("INVALID_MESSAGE", `unexpected request ${body.type}`, { field: "type" });
    }
  }

  async #onChannelAnnounce(
    from: RemotePeer,
    channelId: bigint,
    multiaddrs: string[],
  ): Promise<ChannelMessage> {
    if (this.#live.has(channelId.toString())) return { type: "Ok" };
    const onchain = await this.#hub.getChannel(channelId);
    const parties = [onchain.participant1, onchain.participant2];
    if (
      onchain.state !== "opened" ||
      !parties.some((p) => eqAddr(p, from.address)) ||
      !parties.some((p) => eqAddr(p, this.address))
    ) {
      throw new QrwpError("CHANNEL_NOT_FOUND", `channel ${channelId} is not an open channel between us`, {
        field: "channelId",
      });
    }
    const [ours, theirs] = await Promise.all([
      this.#hub.getParticipant(channelId, this.address),
      this.#hub.getParticipant(channelId, from.address),
    ]);
    const now = Date.now();
    const record: ChannelRecord = {
      channelId,
      partner: getAddress(from.address),
      token: getAddress(onchain.token),
      state: "opened",
      settleTimeoutSeconds: onchain.settleTimeoutSeconds,
      ourDeposit: ours.totalDeposit,
      partnerDeposit: theirs.totalDeposit,
      closedAtSeconds: null,
      closingParticipant: null,
      openedAtMs: now,
      updatedAtMs: now,
    };
    this.#store.upsertPeer({
      address: from.address,
      peerId: from.peerId,
      multiaddrs: multiaddrs.slice(0, 8).map(stripP2p),
    });
    if (!this.#live.has(channelId.toString())) {
      this.#store.insertChannel(record);
      this.#load(record);
      this.#log.info(
        { channelId: channelId.toString(), partner: record.partner },
        "partner opened a channel with us",
      );
    }
    return { type: "Ok" };
  }

  async #onDirectTransfer(from: RemotePeer, msg: DirectTransfer): Promise<ChannelMessage> {
    try {
      return this.#acceptTransfer(from, msg);
    } catch (err) {
      if (!(isQrwpError(err) && err.code === "INSUFFICIENT_CAPACITY")) throw err;
      // The partner may have deposited since we last looked: refresh once from the chain and re-check.
      await this.#refreshDeposits(this.#get(msg.balanceProof.proof.channelId));
      return this.#acceptTransfer(from, msg);
    }
  }

  /** Validates and stores a partner's transfer; synchronous, so validation and the write are atomic. */
  #acceptTransfer(from: RemotePeer, msg: DirectTransfer): ChannelMessage {
    const signed = msg.balanceProof;
    const p = signed.proof;
    if (p.chainId !== BigInt(this.#deployment.chainId) || !eqAddr(p.hub, this.#deployment.hub)) {
      throw new QrwpError("INVALID_TRANSFER", "balance proof is for another chain or hub", {
        field: "balanceProof.hub",
      });
    }
    const live = this.#get(p.channelId);
    if (!eqAddr(live.record.partner, from.address)) {
      throw new QrwpError("CHANNEL_NOT_FOUND", "channel is not with this peer", {
        field: "balanceProof.channelId",
      });
    }
    // After we co-signed a cooperative settle, a new transfer would not be in the co-signed amounts.
    if (live.record.state !== "opened" || live.closing) throw this.#stateError(live, "opened");
    if (msg.amount <= 0n) throw new QrwpError("INVALID_TRANSFER", "amount must be > 0", { field: "amount" });
    verifyBalanceProof(signed, from.address, from.mldsaPublicKey);
    const last = live.partnerLatest;
    const lastNonce = last?.proof.nonce ?? 0n;
    if (p.nonce <= lastNonce) {
      const earlier = this.#store.balanceProofAt(p.channelId, live.record.partner, p.nonce);
      if (
        earlier &&
        earlier.signature === signed.signature &&
        this.#store.getIncomingPayment(p.channelId, msg.paymentId)
      ) {
        return { type: "Processed", channelId: p.channelId, nonce: p.nonce }; // idempotent re-delivery
      }
      throw new QrwpError("STALE_NONCE", `nonce ${p.nonce} is not above ${lastNonce}`, {
        field: "balanceProof.nonce",
      });
    }
    if (p.lockedAmount !== 0n || p.locksRoot.toLowerCase() !== EMPTY_LOCKS_ROOT) {
      throw new QrwpError("INVALID_TRANSFER", "direct transfers carry no locks", {
        field: "balanceProof.locksRoot",
      });
    }
    const lastTransferred = last?.proof.transferredAmount ?? 0n;
    if (p.transferredAmount - lastTransferred !== msg.amount) {
      throw new QrwpError("INVALID_TRANSFER", "transferredAmount does not grow by amount", {
        field: "amount",
      });
    }
    const partnerCanSpend = live.record.partnerDeposit + live.ourTransferred;
    if (p.transferredAmount > partnerCanSpend) {
      throw new QrwpError("INSUFFICIENT_CAPACITY", "transfer exceeds the partner's balance", {
        field: "amount",
      });
    }
    if (this.#store.getIncomingPayment(p.channelId, msg.paymentId)) {
      throw new QrwpError("CONFLICT", `payment ${msg.paymentId} was already received`, {
        field: "paymentId",
      });
    }
    const now = Date.now();
    this.#store.transaction(() => {
      this.#store.insertBalanceProof(live.record.partner, signed);
      this.#store.insertPayment({
        paymentId: msg.paymentId,
        direction: "incoming",
        channelId: p.channelId,
        partner: live.record.partner,
        token: live.record.token,
        amount: msg.amount,
        nonce: p.nonce,
        status: "completed",
        errorCode: null,
        errorMessage: null,
        createdAtMs: now,
        completedAtMs: now,
      });
    });
    live.partnerLatest = signed;
    return { type: "Processed", channelId: p.channelId, nonce: p.nonce };
  }

  async #onCooperativeSettle(
    from: RemotePeer,
    msg: Extract<ChannelMessage, { type: "CooperativeSettleRequest" }>,
  ): Promise<ChannelMessage> {
    const live = this.#get(msg.channelId);
    if (!eqAddr(live.record.partner, from.address)) {
      throw new QrwpError("CHANNEL_NOT_FOUND", "channel is not with this peer", { field: "channelId" });
    }
    if (live.record.state !== "opened" || live.closing) throw this.#stateError(live, "opened");
    // Stop our own payments and wait for any in flight, so the balances we sign are final.
    live.closing = true;
    try {
      await live.queue.onIdle();
      const onchain = await this.#hub.getChannel(msg.channelId);
      if (
        !eqAddr(onchain.participant1, msg.participant1) ||
        !eqAddr(onchain.participant2, msg.participant2)
      ) {
        throw new QrwpError("INVALID_ARGUMENT", "participants are not the channel's on-chain participants", {
          field: "participant1",
        });
      }
      await this.#refreshDeposits(live);
      const expected = this.#settleAmounts(live, msg.participant1, msg.participant2);
      if (
        expected.participant1Amount !== msg.participant1Amount ||
        expected.participant2Amount !== msg.participant2Amount
      ) {
        throw new QrwpError("INVALID_ARGUMENT", "cooperative settle amounts do not match our balances", {
          field: "participant1Amount",
          expected: stringify(expected),
        });
      }
      const args = {
        chainId: BigInt(this.#deployment.chainId),
        hub: this.#deployment.hub,
        channelId: msg.channelId,
        ...expected,
      };
      const digest = cooperativeSettleDigest(args);
      if (!eqAddr(recoverDigestSigner(digest, msg.signature), from.address)) {
        throw new QrwpError("INVALID_SIGNATURE", "cooperative settle signature is not the partner's", {
          field: "signature",
        });
      }
      // Persisted before the signature leaves: after a restart we still refuse transfers on this channel.
      this.#store.setMeta(cosignedKey(msg.channelId), "1");
      const signature = signDigest(digest, this.#keys.secp256k1PrivateKey);
      this.#log.info({ channelId: msg.channelId.toString() }, "co-signed cooperative settle");
      return { type: "CooperativeSettleResponse", channelId: msg.channelId, signature };
    } catch (err) {
      live.closing = false;
      throw err;
    }
    // `closing` stays set for good: the chain poller marks the channel settled when the partner's
    // transaction lands; we can still close unilaterally if it never does.
  }
}

function cosignedKey(channelId: bigint): string {
  return `cooperative-settle-cosigned:${channelId}`;
}

function stripP2p(addr: string): string {
  return addr.split("/p2p/")[0] as string;
}

function stringify(o: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, String(v)]));
}
