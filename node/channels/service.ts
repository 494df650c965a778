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
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { Queue, RateLimiter } from "@libp2p/utils";
import { peerIdFromString } from "@libp2p/peer-id";
import { multiaddr } from "@multiformats/multiaddr";
import { getAddress } from "ethers";
import type { Logger } from "pino";
import {
  EMPTY_CHANNEL_END,
  EMPTY_LOCKS_ROOT,
  QrwpError,
  assertArgument,
  balanceDataOf,
  balanceHash,
  checkProofMatches,
  cooperativeSettleDigest,
  decodeEnvelope,
  distributableAmount,
  encodeEnvelope,
  findLock,
  isQrwpError,
  lockedAmountOf,
  processedDigest,
  recoverDigestSigner,
  secretHashOf,
  signBalanceProof,
  signBalanceProofUpdate,
  signDigest,
  verifyBalanceProof,
  withDirect,
  withLock,
  withUnlock,
  withoutLock,
  type BalanceProof,
  type ChannelEnd,
  type ChannelMessage,
  type DirectTransfer,
  type Envelope,
  type ErrorCode,
  type Lock,
  type LockedTransfer,
  type NodeKeys,
  type SignedBalanceProof,
  type TransferDescription,
} from "../../protocol/index.js";
import type { Deployment, HubClient } from "../../chain/index.js";
import type { SessionTransport, RemotePeer } from "../../host/session-transport.js";
import { errorFields } from "../../host/session-transport.js";
import { assertSamePayment } from "../payment-retry.js";
import type { ChannelRecord, NodeStore, PaymentRecord, StoredProof } from "../store/store.js";

/** Default settle timeout for channels we open (seconds of block.timestamp). */
export const DEFAULT_SETTLE_TIMEOUT_SECONDS = 3600;

/**
 * The chain poller re-sends a pending proof over libp2p only once it is at least this old (ms), so a direct
 * transfer signed for HTTP delivery ({@link ChannelService.signDirectTransfer}) normally reaches the partner
 * through the client first. The next proof on the channel re-sends pending ones at once, whatever their age.
 */
export const POLLER_RESEND_AFTER_MS = 10_000;

export interface ChannelServiceInit {
  store: NodeStore;
  keys: NodeKeys;
  hub: HubClient;
  deployment: Deployment;
  transport: SessionTransport;
  log: Logger;
  /** Our dialable multiaddrs (with /p2p/<peerId>), announced to partners. */
  listenAddrs: () => string[];
  /** How often the chain is polled for closes and settle deadlines (ms). Default 2000. */
  chainPollMs?: number;
}

/**
 * What the payments layer (node/payments) plugs into the channel layer: it owns the mediated-transfer
 * state machines; the channel layer owns balance proofs. Hooks named `*Received` run inside the store
 * transaction that accepts the partner's proof and return work to run after the reply is sent.
 */
export interface TransferHooks {
  lockReceived(
    msg: LockedTransfer,
    channel: { channelId: bigint; partner: string; token: string },
  ): () => void;
  unlockReceived(
    channelId: bigint,
    partner: string,
    secretHash: string,
    secret: string,
    lock: Lock,
  ): () => void;
  lockExpiredReceived(channelId: bigint, partner: string, secretHash: string): () => void;
  /** May the partner remove its lock now (it expired, or we declined it), given we do not know its secret? */
  mayRemoveLock(channelId: bigint, partner: string, lock: Lock, nowSeconds: bigint): boolean;
  /** Handles RevealSecret / SecretRequest / TransferFailed requests. */
  request(from: RemotePeer, body: ChannelMessage): Promise<ChannelMessage>;
}

/**
 * The partner's latest accepted balance proof on an unsettled channel, with the ML-DSA-65 key that verified
 * it: what a watchtower appointment is built from (`createAppointment`).
 */
export interface PartnerProof {
  channelId: bigint;
  partner: string;
  signed: SignedBalanceProof;
  mldsaPublicKey: Uint8Array;
}

/** Outcome of sending one balance proof to the partner. */
export type ProofDelivery = { ok: true; nonce: bigint } | { ok: false; code: string; message: string };

/** A channel with derived balances and payment totals, as the API shows it. Amounts are token base units. */
export interface ChannelView extends ChannelSummary {
  totals: { sent: bigint; received: bigint; sentCount: number; receivedCount: number };
}

/** A channel's state and derived balances (token base units). */
export interface ChannelSummary {
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
  /** Sum of our pending locks / the partner's pending locks (base units). */
  ourLocked: bigint;
  partnerLocked: bigint;
  pendingLocks: { ours: number; partner: number };
  closedAtSeconds: number | null;
  closingParticipant: string | null;
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

/** What {@link ChannelService.signDirectTransfer} returns. */
export interface SignedDirectTransfer {
  /** Our outgoing payment, status `pending` until the partner's acknowledgement (amount in base units). */
  payment: PaymentRecord;
  /**
   * `encodeEnvelope({id: 0, body: DirectTransfer})` (CBOR, protocol/messages.ts): exactly the bytes stored
   * with the proof, and what the libp2p re-send carries.
   */
  transfer: Uint8Array;
}

/**
 * The receiver's acknowledgement of one balance proof: its secp256k1 signature (65 bytes `r ‖ s ‖ v`, 0x-hex)
 * over the EIP-712 `Processed(channelId, nonce, balanceHash)` digest of that proof
 * (protocol/balance-proof.ts `processedDigest`).
 */
export interface ProcessedAcknowledgement {
  channelId: bigint;
  nonce: bigint;
  signature: string;
}

/** What {@link ChannelService.acceptDirectTransfer} returns (amount in token base units). */
export interface AcceptedDirectTransfer {
  paymentId: string;
  channelId: bigint;
  nonce: bigint;
  amount: bigint;
  token: string;
  /** The payer: the channel's partner. */
  partner: string;
  processed: ProcessedAcknowledgement;
}

/**
 * The hub's refusals that are the client's mistakes (found when estimating gas or simulating: nothing was
 * sent): [code, field (null: the field the caller names), reason].
 */
const HUB_REFUSALS: Record<string, [ErrorCode, string | null, string]> = {
  ChannelHubInvalidToken: ["INVALID_ARGUMENT", "token", "the token is not a contract"],
  ChannelHubInvalidSettleTimeout: ["INVALID_ARGUMENT", "settleTimeoutSeconds", "settle timeout out of range"],
  ChannelHubChannelAlreadyOpen: ["CONFLICT", "partner", "a channel with this partner and token is open"],
  ChannelHubDepositNotIncreasing: ["INVALID_ARGUMENT", null, "the total deposit must increase"],
  ChannelHubDepositOverflow: ["INVALID_ARGUMENT", null, "the deposit overflows"],
  ChannelHubInvalidChannelState: ["CHANNEL_STATE", null, "the channel is not open"],
  ChannelHubNotParticipant: ["CHANNEL_STATE", null, "we are not a participant of the channel"],
};

/**
 * A failed chain call as a QrwpError: a QrwpError as it is; with `refusalField` (calls a client asked for:
 * open, deposit), a hub refusal of {@link HUB_REFUSALS} as its client error naming the table's field, else
 * `refusalField`; anything else CHAIN_ERROR for `action`.
 */
function chainError(action: string, err: unknown, refusalField?: string): QrwpError {
  if (isQrwpError(err)) return err;
  const name = String((err as { errorName?: unknown }).errorName);
  const refusal = refusalField === undefined ? undefined : HUB_REFUSALS[name];
  if (refusal) {
    return new QrwpError(refusal[0], `the hub refuses ${action}: ${refusal[2]} (${name})`, {
      field: refusal[1] ?? refusalField,
    });
  }
  return new QrwpError(
    "CHAIN_ERROR",
    `${action} failed: ${err instanceof Error ? err.message.slice(0, 300) : String(err)}`,
    { action },
    { cause: err },
  );
}

/**
 * A partner's `/.../p2p/<peerId>` multiaddr as a dial target (`peerId` and the address without it).
 * @throws QrwpError INVALID_ARGUMENT (field "partnerMultiaddr") when it is no multiaddr or names no valid peer id.
 */
function parsePartnerMultiaddr(text: string): { peerId: string; multiaddrs: string[] } {
  // "/ip4/…/tcp/…/p2p/<id>"; the same "/p2p/<id>" twice (a dialable address with its id appended) is accepted.
  const [addr, peerId, ...rest] = text.split("/p2p/");
  let valid = peerId !== undefined && rest.every((r) => r === peerId) && addr !== undefined && addr !== "";
  if (valid) {
    try {
      multiaddr(addr as string);
      peerIdFromString(peerId as string);
    } catch {
      valid = false;
    }
  }
  assertArgument(
    valid,
    "partnerMultiaddr must be a multiaddr ending with /p2p/<peerId>",
    "partnerMultiaddr",
    text,
  );
  return { peerId: peerId as string, multiaddrs: [addr as string] };
}

/** In-memory view of a channel's balance proofs; always equal to what the store holds. */
interface Live {
  record: ChannelRecord;
  /** Our state as of our last acknowledged proof: what the next proof builds on. */
  ourEnd: ChannelEnd;
  /** Highest nonce we ever signed (acknowledged, refused or pending); the next proof uses + 1. */
  ourLatestNonce: bigint;
  /** Our proofs sent but not yet acknowledged or refused (normally at most one). */
  ourPending: StoredProof[];
  /** The partner's state as of its latest accepted proof. */
  partnerEnd: ChannelEnd;
  /** The partner's highest-nonce balance proof we accepted. */
  partnerLatest: SignedBalanceProof | null;
  /** Outgoing queue: every change to OUR balance proofs on this channel runs here, one at a time. */
  queue: Queue<unknown>;
  /** Set while a cooperative settle or close is in progress: no new outgoing payments. */
  closing: boolean;
}

const eqAddr = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();

/** ChannelAnnounce messages of unknown channels one peer may send per minute (each is checked on chain). */
const ANNOUNCES_PER_PEER_PER_MINUTE = 10;
/** Times an opener asks again after its partner answered a ChannelAnnounce with RATE_LIMITED. */
const ANNOUNCE_RETRIES = 3;
/** ChannelAnnounce messages of unknown channels checked on chain per second, from all peers together. */
const ANNOUNCES_PER_SECOND = 20;

export class ChannelService {
  readonly #store: NodeStore;
  readonly #keys: NodeKeys;
  readonly #hub: HubClient;
  /** Chain reads a peer's ChannelAnnounce may cause: per peer, and in total (each costs three eth_calls). */
  readonly #announcesPerPeer = new RateLimiter({ points: ANNOUNCES_PER_PEER_PER_MINUTE, duration: 60 });
  readonly #announcesTotal = new RateLimiter({ points: ANNOUNCES_PER_SECOND, duration: 1 });
  readonly #deployment: Deployment;
  readonly #transport: SessionTransport;
  readonly #log: Logger;
  readonly #listenAddrs: () => string[];
  readonly #chainPollMs: number;
  readonly #live = new Map<string, Live>();
  #pollTimer: NodeJS.Timeout | undefined;
  #hooks: TransferHooks | undefined;
  /** Latest block timestamp seen by the poller (seconds); see {@link nowSeconds}. */
  #chainTimeSeconds = 0;
  #polling = false;
  #stopped = false;
  /** Partners' ML-DSA-65 keys (by lower-case address), as persisted in `meta` (see {@link partnerProof}). */
  readonly #partnerKeys = new Map<string, Uint8Array | null>();
  /** Proofs signed for HTTP delivery: the poller gives them a head start before re-sending over libp2p. */
  readonly #heldForHttp = new WeakSet<StoredProof>();
  /**
   * Per partner (lower-case address), the tail of the chain that runs the partner's proofs one at a time,
   * whether they came over libp2p or were relayed over HTTP ({@link acceptDirectTransfer}).
   */
  readonly #inbound = new Map<string, Promise<unknown>>();
  /**
   * Called (synchronously, after the write) whenever a partner's latest balance proof on a channel changes,
   * and when a partner's ML-DSA key is first learned for channels that already hold its proofs. Must be
   * cheap and must not throw (the watchtower client only records the channel id here).
   */
  onPartnerProof: (channelId: bigint) => void = () => undefined;

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
      if (live.record.state === "opened" && live.ourPending.length > 0) {
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
    void this.#reconnectPartners();
  }

  /**
   * Dials the partners of our open channels after a start, so they learn our (possibly new) addresses from
   * the PeerInfo sent on each new session, and pending proofs can be re-sent. Failures are only logged.
   */
  async #reconnectPartners(): Promise<void> {
    for (const live of this.#live.values()) {
      if (live.record.state !== "opened" || this.#transport.isConnected(live.record.partner)) continue;
      const target = this.#target(live.record.partner);
      if (!target) continue;
      await this.#transport
        .connect(live.record.partner, target)
        .catch((err: unknown) =>
          this.#log.debug(
            { peer: live.record.partner, err: errorFields(err) },
            "partner not reachable at start",
          ),
        );
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#pollTimer) clearTimeout(this.#pollTimer);
    await Promise.all([...this.#live.values()].map((l) => l.queue.onIdle()));
  }

  #load(record: ChannelRecord): Live {
    const acked = this.#store.latestStoredProof(record.channelId, this.address, "acked");
    const partner = this.#store.latestStoredProof(record.channelId, record.partner);
    const live: Live = {
      record,
      ourEnd: acked ? endOf(acked) : EMPTY_CHANNEL_END,
      ourLatestNonce: this.#store.latestBalanceProof(record.channelId, this.address)?.proof.nonce ?? 0n,
      ourPending: this.#store.pendingProofs(record.channelId, this.address),
      partnerEnd: partner ? endOf(partner) : EMPTY_CHANNEL_END,
      partnerLatest: partner?.signed ?? null,
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
    // What we can send counts an unacknowledged proof as spent (conservative): the worse of acked and pending.
    let ourBalance = distributableAmount(live.record.ourDeposit, live.ourEnd, live.partnerEnd);
    for (const p of live.ourPending) {
      const b = distributableAmount(live.record.ourDeposit, endOf(p), live.partnerEnd);
      if (b < ourBalance) ourBalance = b;
    }
    return {
      ourBalance,
      partnerBalance: distributableAmount(live.record.partnerDeposit, live.partnerEnd, live.ourEnd),
      sentTransferred: live.ourEnd.transferredAmount,
      receivedTransferred: live.partnerEnd.transferredAmount,
    };
  }

  /** The channel's state and balances, without the payment totals (which read every payment row). */
  #summary(live: Live): ChannelSummary {
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
      ourNonce: live.ourLatestNonce,
      partnerNonce: live.partnerLatest?.proof.nonce ?? 0n,
      ourLocked: lockedAmountOf(live.ourEnd.locks),
      partnerLocked: lockedAmountOf(live.partnerEnd.locks),
      pendingLocks: { ours: live.ourEnd.locks.length, partner: live.partnerEnd.locks.length },
      closedAtSeconds: r.closedAtSeconds,
      closingParticipant: r.closingParticipant,
    };
  }

  #view(live: Live): ChannelView {
    return { ...this.#summary(live), totals: this.#store.paymentTotals(live.record.channelId) };
  }

  /**
   * Every channel's state and balances (token base units) without payment totals: cheap enough for the
   * router's hot path (route queries, channel updates).
   */
  channelSummaries(): ChannelSummary[] {
    return [...this.#live.values()].map((l) => this.#summary(l));
  }

  /** Unsettled channels (opened or closed) on which the partner has signed a balance proof (nonce >= 1). */
  channelsWithPartnerProofs(): bigint[] {
    return [...this.#live.values()]
      .filter((l) => l.record.state !== "settled" && (l.partnerLatest?.proof.nonce ?? 0n) > 0n)
      .map((l) => l.record.channelId);
  }

  /**
   * The partner's latest accepted balance proof on an unsettled channel, with the ML-DSA-65 key that
   * verified it (persisted in `meta` with the proof). Null when the channel is unknown or settled, holds no
   * partner proof (nonce 0), or the key is unknown (a store written before keys were kept: it is learned from
   * the partner's next PeerInfo or proof, and {@link onPartnerProof} fires then).
   */
  partnerProof(channelId: bigint): PartnerProof | null {
    const live = this.#live.get(channelId.toString());
    if (!live || live.record.state === "settled" || !live.partnerLatest) return null;
    if (live.partnerLatest.proof.nonce < 1n) return null;
    const key = this.#partnerKey(live.record.partner);
    if (!key) return null;
    return { channelId, partner: live.record.partner, signed: live.partnerLatest, mldsaPublicKey: key };
  }

  /** The partner's ML-DSA-65 key as persisted, or null (cached, including misses). */
  #partnerKey(partner: string): Uint8Array | null {
    const k = partner.toLowerCase();
    if (!this.#partnerKeys.has(k)) {
      const hex = this.#store.getMeta(partnerKeyMetaKey(partner));
      this.#partnerKeys.set(k, hex ? hexToBytes(hex) : null);
    }
    return this.#partnerKeys.get(k) ?? null;
  }

  /** A copy of `key` when it differs from the partner's persisted key (so it must be written), else null. */
  #changedPartnerKey(partner: string, key: Uint8Array): Uint8Array | null {
    const known = this.#partnerKey(partner);
    return known && equalBytes(known, key) ? null : Uint8Array.from(key);
  }

  /**
   * Keeps a channel partner's ML-DSA key from its session when none is stored yet (stores written before
   * keys were kept), and signals its channels with proofs so their appointments can be built.
   */
  #learnPartnerKey(from: RemotePeer): void {
    const partner = getAddress(from.address);
    if (this.#partnerKey(partner)) return;
    const key = Uint8Array.from(from.mldsaPublicKey);
    this.#store.setMeta(partnerKeyMetaKey(partner), bytesToHex(key));
    this.#partnerKeys.set(partner.toLowerCase(), key);
    for (const l of this.#live.values()) {
      if (eqAddr(l.record.partner, partner) && l.partnerLatest) this.#partnerProofChanged(l.record.channelId);
    }
  }

  #partnerProofChanged(channelId: bigint): void {
    try {
      this.onPartnerProof(channelId);
    } catch (err) {
      this.#log.warn(
        { channelId: channelId.toString(), err: errorFields(err) },
        "partner-proof listener failed",
      );
    }
  }

  /**
   * The node's time for lock decisions: the later of the wall clock and the latest block timestamp seen
   * (a chain whose clock runs ahead must not let us keep a lock it already considers expired), unix seconds.
   */
  nowSeconds(): bigint {
    return BigInt(Math.max(Math.floor(Date.now() / 1000), this.#chainTimeSeconds));
  }

  /** Our pending lock with this secret hash on a channel (acknowledged or still pending), or undefined. */
  ourLock(channelId: bigint, secretHash: string): Lock | undefined {
    const live = this.#live.get(channelId.toString());
    if (!live) return undefined;
    return (
      findLock(live.ourEnd, secretHash) ??
      live.ourPending.map((p) => findLock(endOf(p), secretHash)).find(Boolean)
    );
  }

  /** The open channel with `partner` for `token`, or null. */
  openChannelWith(partner: string, token: string): ChannelSummary | null {
    const live = [...this.#live.values()].find(
      (l) =>
        eqAddr(l.record.partner, partner) && eqAddr(l.record.token, token) && l.record.state === "opened",
    );
    return live && !live.closing ? this.#summary(live) : null;
  }

  /** True when we have a channel in any state but settled with `address` (a peer the node must keep). */
  isPartner(address: string): boolean {
    for (const l of this.#live.values()) {
      if (l.record.state !== "settled" && eqAddr(l.record.partner, address)) return true;
    }
    return false;
  }

  /** The partner's pending lock with this secret hash on a channel (what we may claim), or undefined. */
  partnerLock(channelId: bigint, secretHash: string): Lock | undefined {
    const live = this.#live.get(channelId.toString());
    return live ? findLock(live.partnerEnd, secretHash) : undefined;
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

  /** Our outgoing direct payment with this id (any status), or null. */
  outgoingPayment(paymentId: string): PaymentRecord | null {
    const p = this.#store.getPayment(paymentId);
    return p?.direction === "outgoing" ? p : null;
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
   * it to the partner, who checks it on-chain. The partner must be reachable first, and the wallet must hold
   * `depositAmount` (base units) of the token (no gas is spent otherwise).
   * @throws QrwpError INVALID_ARGUMENT (field "partnerMultiaddr" when the partner's address is unknown and
   *   none was given; "deposit" for a deposit the hub refuses) | INSUFFICIENT_FUNDS (field "deposit") |
   *   PEER_OFFLINE | HANDSHAKE_FAILED | CONFLICT | CHAIN_ERROR
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
    if (params.partnerMultiaddr) target = parsePartnerMultiaddr(params.partnerMultiaddr);
    if (!target) {
      // A client mistake, not an outage: we never learnt where this partner listens.
      throw new QrwpError("INVALID_ARGUMENT", "partner's address is unknown: give partnerMultiaddr", {
        field: "partnerMultiaddr",
      });
    }
    if (params.depositAmount > 0n) await this.#assertWalletHolds(token, params.depositAmount, "deposit");
    try {
      await this.#transport.connect(partner, target);
    } catch (err) {
      // The node at the given multiaddr proved another address: the client named the wrong node.
      if (
        params.partnerMultiaddr &&
        isQrwpError(err) &&
        err.code === "HANDSHAKE_FAILED" &&
        err.details.field === "address"
      )
        throw new QrwpError("INVALID_ARGUMENT", "the node at partnerMultiaddr is not the partner", {
          field: "partnerMultiaddr",
          actual: err.details.actual,
        });
      throw err;
    }
    if (params.partnerMultiaddr && target.peerId)
      this.#store.upsertPeer({ address: partner, peerId: target.peerId, multiaddrs: target.multiaddrs });

    const { channelId } = await this.#hub
      .openChannel(partner, token, settleTimeoutSeconds)
      .catch((err: unknown) => {
        throw chainError("openChannel", err, "partner");
      });
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
      await this.#chainDeposit("deposit", () => this.#hub.setTotalDeposit(channelId, params.depositAmount));
      live.record.ourDeposit = params.depositAmount;
      this.#store.updateChannel(live.record);
    }
    await this.#announce(partner, channelId);
    return this.#view(live);
  }

  /**
   * Sends ChannelAnnounce; a partner that answers RATE_LIMITED (its budget for checking announced channels on
   * chain is spent, perhaps by strangers) is asked again after 1, 2 and 4 s.
   * @throws QrwpError PEER_REJECTED (any other refusal, or still rate-limited) | PEER_OFFLINE | TIMEOUT
   */
  async #announce(partner: string, channelId: bigint): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.#request(partner, { type: "ChannelAnnounce", channelId, multiaddrs: this.#listenAddrs() });
        return;
      } catch (err) {
        const rateLimited = isQrwpError(err) && err.details.peerCode === "RATE_LIMITED";
        if (!rateLimited || attempt >= ANNOUNCE_RETRIES) throw err;
        await new Promise((r) => setTimeout(r, 1000 * 2 ** attempt));
      }
    }
  }

  /**
   * Raises our on-chain total deposit to `totalDeposit` (base units; monotonic, idempotent on retry). The
   * deposit is simulated before anything is approved or sent (chain/hub-client.ts `setTotalDeposit`).
   * @throws QrwpError CHANNEL_NOT_FOUND | CHANNEL_STATE | INVALID_ARGUMENT (field "totalDeposit") |
   *   INSUFFICIENT_FUNDS (field "totalDeposit": the wallet holds less than the increase) | CHAIN_ERROR
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
      await this.#chainDeposit("totalDeposit", () => this.#hub.setTotalDeposit(channelId, totalDeposit));
      live.record.ourDeposit = totalDeposit;
      this.#store.updateChannel(live.record);
      return this.#view(live);
    })) as ChannelView;
  }

  /**
   * Pays `amount` base units of `token` to `target`, a direct channel partner: signs a new balance proof
   * (nonce + 1, transferredAmount + amount), persists it, sends it and waits for the partner's Processed.
   *
   * Outcomes: the payment `completed`; or `pending` when the proof was signed and stored but its delivery
   * failed (partner offline, timeout, dropped session): it completes later by re-delivery (before our next
   * proof on the channel, by the chain poller, or on a retry), so the caller must not pay again under a new
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
    const { live, payment } = this.#newDirectPayment(params);
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
          (nonce) => this.#insertDirectPayment(payment, nonce),
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
    const live = this.#live.get(existing.channelId.toString());
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
        await this.#resendPending(live);
      } catch (err) {
        if (!(isQrwpError(err) && err.details.pending === true)) throw err;
      }
    }
    return this.#store.getPayment(paymentId) as PaymentRecord;
  }

  /**
   * Signs (does not send) a direct payment of `amount` base units of `token` to `target`, a channel partner,
   * for delivery by the client over HTTP (x402 direct streaming): like {@link pay} it runs in the channel's
   * queue, first re-sends earlier pending proofs over libp2p, checks capacity (refreshing deposits once) and
   * signs the next balance proof (nonce + 1, transferredAmount + amount); the proof (status pending, with its
   * DirectTransfer message) and the payment (pending) are committed in one transaction. Nothing is sent.
   * The payment completes on {@link confirmProcessed} with the partner's signed
   * acknowledgement, or on the partner's Processed over libp2p: the proof is re-sent before our next proof on
   * the channel, and by the chain poller once older than {@link POLLER_RESEND_AFTER_MS}.
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
    const { live, payment } = this.#newDirectPayment(params);
    return (await live.queue.add(async () => {
      const end = await this.#nextEnd(live, (e) => withDirect(e, payment.amount), false);
      if (options.notAfterMs !== undefined && Date.now() > options.notAfterMs)
        throw new QrwpError("TIMEOUT", "the caller's deadline passed before the transfer could be signed", {
          field: "notAfterMs",
          notAfterMs: options.notAfterMs,
        });
      const { stored } = this.#signAndPersist(
        live,
        end,
        (balanceProof) => directTransferOf(payment, balanceProof),
        (nonce) => this.#insertDirectPayment(payment, nonce),
      );
      this.#log.info(
        {
          channelId: live.record.channelId.toString(),
          nonce: stored.signed.proof.nonce.toString(),
          paymentId: payment.paymentId,
        },
        "signed direct transfer for HTTP delivery",
      );
      this.#heldForHttp.add(stored);
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
    const live = this.#get(payment.channelId);
    return (await live.queue.add(async () => {
      const stored = this.#store.storedProofAt(payment.channelId, this.address, payment.nonce);
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
      this.#acknowledged(live, stored, paymentId);
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
    const live = this.#live.get(p.channelId.toString());
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
    const mldsaPublicKey = this.#partnerKey(partner);
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
      reply = await this.#serialized(partner, () => this.#onDirectTransfer(from, msg));
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

  /** The open channel for a direct payment and its (not yet stored) pending record; CONFLICT on a reused id. */
  #newDirectPayment(params: PayParams): { live: Live; payment: PaymentRecord } {
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
  #insertDirectPayment(payment: PaymentRecord, nonce: bigint): void {
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
    const live = this.#get(channelId);
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
    const live = this.#get(channelId);
    const secretHash = secretHashOf(secret);
    return (await live.queue.add(async () => {
      await this.#resendPending(live);
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
    const live = this.#get(channelId);
    return (await live.queue.add(async () => {
      await this.#resendPending(live);
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
    const end = await this.#nextEnd(live, next, allowClosing);
    // Reach the partner before anything is signed or stored: an offline partner is a clean failure.
    if (!this.#transport.isConnected(live.record.partner)) {
      const target = this.#target(live.record.partner);
      try {
        if (!target) throw new QrwpError("PEER_OFFLINE", "partner's address is unknown");
        await this.#transport.connect(live.record.partner, target);
      } catch (err) {
        const e = isQrwpError(err) ? err : null;
        return { ok: false, code: e?.code ?? "PEER_OFFLINE", message: e?.message ?? "partner unreachable" };
      }
    }
    const { stored, body } = this.#signAndPersist(live, end, message, persist);
    return this.#deliver(live, stored, body);
  }

  /**
   * Inside the channel's queue: refuses unless the channel is open (and not closing, unless `allowClosing`),
   * re-sends what is pending, and returns `next` of our acknowledged end if we can afford it (refreshing
   * deposits from the chain once when short).
   * @throws QrwpError CHANNEL_STATE | INSUFFICIENT_CAPACITY | what {@link #deliver} throws for a pending proof
   */
  async #nextEnd(
    live: Live,
    next: (end: ChannelEnd) => ChannelEnd,
    allowClosing: boolean,
  ): Promise<ChannelEnd> {
    if (live.record.state !== "opened" || (live.closing && !allowClosing))
      throw this.#stateError(live, "opened");
    await this.#resendPending(live);
    let end = next(live.ourEnd);
    if (distributableAmount(live.record.ourDeposit, end, live.partnerEnd) < 0n) {
      await this.#refreshDeposits(live);
      end = next(live.ourEnd);
      const balance = distributableAmount(live.record.ourDeposit, live.ourEnd, live.partnerEnd);
      if (distributableAmount(live.record.ourDeposit, end, live.partnerEnd) < 0n) {
        throw new QrwpError("INSUFFICIENT_CAPACITY", `balance ${balance} is too low for this transfer`, {
          channelId: live.record.channelId.toString(),
          balance: balance.toString(),
        });
      }
    }
    // The awaits above may have let a close or a partner's cooperative settle begin.
    if (live.record.state !== "opened" || (live.closing && !allowClosing))
      throw this.#stateError(live, "opened");
    return end;
  }

  /**
   * Signs our next balance proof (nonce = highest signed + 1) committing to `end` and persists it, pending,
   * with the encoded envelope `{id: 0, body: message(proof)}` that carries it and `persist`'s writes, in one
   * transaction (durable before anything is sent); then records it as pending in memory. Synchronous.
   */
  #signAndPersist(
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
      this.#store.insertBalanceProof(this.address, signed, {
        locks: end.locks,
        status: "pending",
        message: encoded,
        createdAtMs,
      });
      persist?.(nonce);
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
    return { stored, body };
  }

  /**
   * Our proof `stored` was acknowledged by the partner (Processed over libp2p, or its signed acknowledgement
   * over HTTP): in one transaction the proof is `acked` and its direct payment (if any) `completed`; then the
   * in-memory acknowledged end advances to it. Idempotent.
   */
  #acknowledged(live: Live, stored: StoredProof, paymentId: string | null): void {
    const nonce = stored.signed.proof.nonce;
    this.#store.transaction(() => {
      this.#store.setProofStatus(live.record.channelId, this.address, nonce, "acked");
      if (paymentId) this.#store.finishOutgoingPayment(paymentId, "completed");
    });
    live.ourPending = live.ourPending.filter((p) => p.signed.proof.nonce !== nonce);
    if (nonce > live.ourEnd.nonce) live.ourEnd = endOf(stored);
  }

  /** Sends one pending proof and records the outcome. Throws (the proof stays pending) if no reply came. */
  async #deliver(live: Live, stored: StoredProof, body: ChannelMessage): Promise<ProofDelivery> {
    const nonce = stored.signed.proof.nonce;
    let reply: ChannelMessage;
    try {
      reply = await this.#transport.request(live.record.partner, body, this.#target(live.record.partner));
    } catch (err) {
      // Outcome unknown: the proof stays pending and is re-sent before the next one (and by the poller).
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
      this.#acknowledged(live, stored, payment);
      return { ok: true, nonce };
    }
    // Refused: the partner did not store this proof. The next proof (nonce + 1) builds on the acknowledged
    // end. The partner still has the bytes of the refused proof; an honest partner never uses it and a
    // dishonest one gains at most this proof's increment (see docs/DECISIONS.md).
    const code = reply.type === "Error" ? reply.code : "INVALID_MESSAGE";
    const text = reply.type === "Error" ? reply.message : `unexpected reply ${reply.type}`;
    this.#store.transaction(() => {
      this.#store.setProofStatus(live.record.channelId, this.address, nonce, "refused");
      if (payment) this.#store.finishOutgoingPayment(payment, "failed", { code, message: text });
    });
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
  async #resendPending(live: Live): Promise<void> {
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
    this.#assertNoLocks(live);
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
    await this.#registerKnownSecrets(live);
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
      await this.#registerKnownSecrets(live);
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
      this.#chainTimeSeconds = Math.max(
        this.#chainTimeSeconds,
        await this.#hub.latestTimestamp().catch(() => 0),
      );
      for (const live of this.#live.values()) {
        if (live.record.state === "settled") {
          if (this.#store.getMeta(`unlocked:${live.record.channelId}`) === null) {
            await this.#unlockSettled(live).catch((err: unknown) =>
              this.#log.warn(
                { channelId: live.record.channelId.toString(), err: errorFields(err) },
                "unlock failed; will retry",
              ),
            );
          }
          continue;
        }
        try {
          if (live.record.state === "opened") {
            await live.queue.add(() => this.#syncFromChain(live));
            // A proof signed for HTTP delivery gets a head start before the libp2p re-send.
            const due = Date.now() - POLLER_RESEND_AFTER_MS;
            if (live.ourPending.some((p) => !this.#heldForHttp.has(p) || p.createdAtMs <= due))
              await live.queue.add(() => this.#resendPending(live));
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
      throw chainError(action, err);
    }
  }

  /**
   * Runs a `setTotalDeposit` of {@link HubClient} (simulated before anything is sent) and turns the hub's
   * refusals of the deposit into coded client errors naming `field`: not increasing, overflow ->
   * INVALID_ARGUMENT; channel not open / not ours -> CHANNEL_STATE. QrwpErrors (INSUFFICIENT_FUNDS,
   * INVALID_ARGUMENT) pass with `field`; anything else is CHAIN_ERROR.
   */
  async #chainDeposit<T>(field: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (isQrwpError(err)) {
        if (err.details.field === "totalDeposit" && field !== "totalDeposit")
          throw new QrwpError(err.code, err.message.replace("totalDeposit", field), {
            ...err.details,
            field,
          });
        throw err;
      }
      throw chainError("setTotalDeposit", err, field);
    }
  }

  /**
   * Refuses (INSUFFICIENT_FUNDS, naming `field`) before any transaction when our wallet holds less than
   * `amount` base units of `token` (wei for ETH). A token address that is no ERC-20 is INVALID_ARGUMENT
   * (field "token").
   */
  async #assertWalletHolds(token: string, amount: bigint, field: string): Promise<void> {
    let balance: bigint;
    try {
      balance = await this.#hub.tokenBalance(token, this.address);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code === "BAD_DATA" || code === "CALL_EXCEPTION")
        throw new QrwpError("INVALID_ARGUMENT", "token is not an ERC-20 contract", { field: "token", token });
      throw chainError("tokenBalance", err);
    }
    if (balance < amount)
      throw new QrwpError(
        "INSUFFICIENT_FUNDS",
        `the wallet holds ${balance} base units of the token; ${field} needs ${amount}`,
        { field, token, balance, needed: amount },
      );
  }

  /**
   * On a close, registers on-chain every secret we know for the partner's pending locks that is not
   * registered yet, so an early unlock after settle cannot send those amounts back to the partner.
   */
  async #registerKnownSecrets(live: Live): Promise<void> {
    const secrets: string[] = [];
    for (const lock of live.partnerEnd.locks) {
      const secret = this.#store.getSecret(lock.secretHash);
      if (secret && (await this.#hub.secretRevealedAt(lock.secretHash)) === 0n) secrets.push(secret);
    }
    if (secrets.length === 0) return;
    await this.#chain("registerSecretBatch", () => this.#hub.registerSecretBatch(secrets));
    this.#log.warn(
      { channelId: live.record.channelId.toString(), secrets: secrets.length },
      "channel closing: registered known secrets of the partner's locks",
    );
  }

  /** A cooperative settle pays no locks: refuse it while any lock is pending in either direction. */
  #assertNoLocks(live: Live): void {
    if (live.ourEnd.locks.length > 0 || live.partnerEnd.locks.length > 0) {
      throw new QrwpError(
        "CHANNEL_STATE",
        "locks are pending on this channel: wait for them or close unilaterally",
        {
          channelId: live.record.channelId.toString(),
          ourLocks: live.ourEnd.locks.length,
          partnerLocks: live.partnerEnd.locks.length,
        },
      );
    }
  }

  /**
   * After settle, the hub keeps each side's locked amount; `unlock` pays every lock whose secret was
   * registered before its expiration to the receiver and the rest back to the sender, once. We call it for
   * both sides when every lock has expired (so no later registration can change the outcome).
   */
  async #unlockSettled(live: Live): Promise<void> {
    const channelId = live.record.channelId;
    const key = `unlocked:${channelId}`;
    if (this.#store.getMeta(key) !== null) return;
    const now = await this.#hub.latestTimestamp();
    let remaining = 0;
    for (const [sender, receiver] of [
      [this.address, live.record.partner],
      [live.record.partner, this.address],
    ] as const) {
      const kept = await this.#hub.getLockedBalance(channelId, sender);
      if (kept.lockedAmount === 0n) continue;
      const proof = this.#store.storedProofByLocksRoot(channelId, sender, kept.locksRoot);
      if (!proof) {
        this.#log.error(
          { channelId: channelId.toString(), sender },
          "no stored locks match the settled locksroot",
        );
        continue;
      }
      const lastExpiration = proof.locks.reduce((m, l) => (l.expiration > m ? l.expiration : m), 0n);
      if (BigInt(now) <= lastExpiration) {
        remaining++;
        continue;
      }
      await this.#chain("unlock", () => this.#hub.unlock(channelId, sender, receiver, proof.locks));
      this.#log.info(
        { channelId: channelId.toString(), sender, locks: proof.locks.length },
        "unlocked settled locks",
      );
    }
    if (remaining === 0) this.#store.setMeta(key, String(Date.now()));
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
        return this.#serialized(from.address, () => this.#onDirectTransfer(from, body));
      case "LockedTransfer":
        return this.#serialized(from.address, () => this.#onLockedTransfer(from, body));
      case "Unlock":
        return this.#serialized(from.address, () => this.#onUnlock(from, body));
      case "LockExpired":
        return this.#serialized(from.address, () => this.#onLockExpired(from, body));
      case "RevealSecret":
      case "SecretRequest":
      case "TransferFailed":
        return this.#requireHooks().request(from, body);
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
          this.#learnPartnerKey(from);
        }
        return { type: "Ok" };
      default:
        throw new QrwpError("INVALID_MESSAGE", `unexpected request ${body.type}`, { field: "type" });
    }
  }

  /**
   * Runs `fn` after every earlier proof of `partner` (over libp2p or HTTP) finished, so the partner's proofs
   * are accepted one at a time whatever path they came by.
   */
  #serialized<T>(partner: string, fn: () => Promise<T>): Promise<T> {
    const key = partner.toLowerCase();
    const run = (this.#inbound.get(key) ?? Promise.resolve()).then(fn);
    const tail = run.catch(() => undefined);
    this.#inbound.set(key, tail);
    void tail.then(() => {
      if (this.#inbound.get(key) === tail) this.#inbound.delete(key);
    });
    return run;
  }

  async #onChannelAnnounce(
    from: RemotePeer,
    channelId: bigint,
    multiaddrs: string[],
  ): Promise<ChannelMessage> {
    if (this.#live.has(channelId.toString())) return { type: "Ok" };
    try {
      this.#announcesPerPeer.consume(from.peerId);
      this.#announcesTotal.consume("all");
    } catch {
      throw new QrwpError("RATE_LIMITED", "too many channel announcements; retry later", {
        field: "channelId",
      });
    }
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
    // The session proved the partner's ML-DSA key: keep it, so its proofs relayed over HTTP can be verified.
    this.#learnPartnerKey(from);
    return { type: "Ok" };
  }

  /**
   * Accepts a partner's balance proof: checks chain/hub/channel/partner/state, both signatures, that it
   * commits to exactly `expected(partnerEnd)` with a higher nonce, and that the partner can afford it;
   * then stores it (with `persist`'s writes, in one transaction) and acknowledges with Processed.
   * An identical re-delivery is acknowledged again without any change.
   */
  async #acceptProof(
    from: RemotePeer,
    signed: SignedBalanceProof,
    expected: (partnerEnd: ChannelEnd) => ChannelEnd,
    persist: (live: Live, end: ChannelEnd) => (() => void) | void,
    isRedelivery: (live: Live) => boolean,
  ): Promise<ChannelMessage> {
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
    verifyBalanceProof(signed, from.address, from.mldsaPublicKey);
    // A proof we already hold is acknowledged again whatever the channel's state (closing included): the
    // partner must not count it refused while we count it received (it came first over HTTP, say).
    if (p.nonce <= (live.partnerLatest?.proof.nonce ?? 0n)) {
      const earlier = this.#store.balanceProofAt(p.channelId, live.record.partner, p.nonce);
      if (earlier && earlier.signature === signed.signature && isRedelivery(live)) {
        return { type: "Processed", channelId: p.channelId, nonce: p.nonce }; // idempotent re-delivery
      }
    }
    // After we co-signed a cooperative settle, a new proof would not be in the co-signed amounts.
    if (live.record.state !== "opened" || live.closing) throw this.#stateError(live, "opened");
    const check = () => {
      // Read at each check: the partner's latest may move while deposits are refreshed below.
      const lastNonce = live.partnerLatest?.proof.nonce ?? 0n;
      const end = checkProofMatches(p, lastNonce, expected(live.partnerEnd));
      if (distributableAmount(live.record.partnerDeposit, end, live.ourEnd) < 0n) {
        throw new QrwpError("INSUFFICIENT_CAPACITY", "transfer exceeds the partner's balance", {
          field: "balanceProof.transferredAmount",
        });
      }
      return end;
    };
    let end: ChannelEnd;
    try {
      end = check();
    } catch (err) {
      if (!(isQrwpError(err) && err.code === "INSUFFICIENT_CAPACITY")) throw err;
      // The partner may have deposited since we last looked: refresh once from the chain and re-check.
      await this.#refreshDeposits(live);
      end = check();
    }
    if (live.record.state !== "opened" || live.closing) throw this.#stateError(live, "opened");
    let after: (() => void) | void = undefined;
    const newKey = this.#changedPartnerKey(live.record.partner, from.mldsaPublicKey);
    this.#store.transaction(() => {
      this.#store.insertBalanceProof(live.record.partner, signed, { locks: end.locks, status: "acked" });
      // The key that verified the proof, durable with it: a watchtower appointment needs it after a restart.
      if (newKey) this.#store.setMeta(partnerKeyMetaKey(live.record.partner), bytesToHex(newKey));
      after = persist(live, end);
    });
    if (newKey) this.#partnerKeys.set(live.record.partner.toLowerCase(), newKey);
    live.partnerEnd = end;
    live.partnerLatest = signed;
    this.#partnerProofChanged(p.channelId);
    const run = after as (() => void) | undefined;
    if (run) setImmediate(run);
    return { type: "Processed", channelId: p.channelId, nonce: p.nonce };
  }

  async #onDirectTransfer(from: RemotePeer, msg: Extract<ChannelMessage, { type: "DirectTransfer" }>) {
    const channelId = msg.balanceProof.proof.channelId;
    if (msg.amount <= 0n) throw new QrwpError("INVALID_TRANSFER", "amount must be > 0", { field: "amount" });
    return this.#acceptProof(
      from,
      msg.balanceProof,
      (end) => withDirect(end, msg.amount),
      (live, end) => {
        if (this.#store.getIncomingPayment(channelId, msg.paymentId)) {
          throw new QrwpError("CONFLICT", `payment ${msg.paymentId} was already received`, {
            field: "paymentId",
          });
        }
        const now = Date.now();
        this.#store.insertPayment({
          paymentId: msg.paymentId,
          direction: "incoming",
          channelId,
          partner: live.record.partner,
          token: live.record.token,
          amount: msg.amount,
          nonce: end.nonce,
          status: "completed",
          errorCode: null,
          errorMessage: null,
          createdAtMs: now,
          completedAtMs: now,
        });
      },
      () => {
        // The payment id and amount are outside the signature: a re-delivery must name the payment that
        // this very proof carried, or any old proof could be wrapped as "payment X arrived".
        const earlier = this.#store.getIncomingPayment(channelId, msg.paymentId);
        return (
          earlier !== null && earlier.nonce === msg.balanceProof.proof.nonce && earlier.amount === msg.amount
        );
      },
    );
  }

  async #onLockedTransfer(from: RemotePeer, msg: LockedTransfer): Promise<ChannelMessage> {
    const hooks = this.#requireHooks();
    const nowSeconds = this.nowSeconds();
    if (msg.lock.expiration <= nowSeconds) {
      throw new QrwpError("EXPIRY_TOO_SOON", "the lock has already expired", { field: "lock.expiration" });
    }
    // A lock outliving the settle window could be unlocked back to its sender before we may register its
    // secret (ChannelHub.unlock reads the registry when called): refuse it.
    const live = this.#live.get(msg.balanceProof.proof.channelId.toString());
    if (live && msg.lock.expiration >= nowSeconds + BigInt(live.record.settleTimeoutSeconds)) {
      throw new QrwpError("INVALID_TRANSFER", "the lock expires after the channel's settle timeout", {
        field: "lock.expiration",
        settleTimeoutSeconds: live.record.settleTimeoutSeconds,
      });
    }
    return this.#acceptProof(
      from,
      msg.balanceProof,
      (end) => withLock(end, msg.lock),
      (live) =>
        hooks.lockReceived(msg, {
          channelId: live.record.channelId,
          partner: live.record.partner,
          token: live.record.token,
        }),
      (live) => findLock(live.partnerEnd, msg.lock.secretHash) !== undefined,
    );
  }

  async #onUnlock(
    from: RemotePeer,
    msg: Extract<ChannelMessage, { type: "Unlock" }>,
  ): Promise<ChannelMessage> {
    const hooks = this.#requireHooks();
    const secretHash = secretHashOf(msg.secret);
    let lock: Lock | undefined;
    return this.#acceptProof(
      from,
      msg.balanceProof,
      (end) => {
        lock = findLock(end, secretHash);
        return withUnlock(end, secretHash);
      },
      (live) => {
        this.#store.putSecret(secretHash, msg.secret);
        return hooks.unlockReceived(
          live.record.channelId,
          live.record.partner,
          secretHash,
          msg.secret,
          lock as Lock,
        );
      },
      () => true,
    );
  }

  async #onLockExpired(
    from: RemotePeer,
    msg: Extract<ChannelMessage, { type: "LockExpired" }>,
  ): Promise<ChannelMessage> {
    const hooks = this.#requireHooks();
    const nowSeconds = this.nowSeconds();
    return this.#acceptProof(
      from,
      msg.balanceProof,
      (end) => {
        const lock = findLock(end, msg.secretHash);
        if (lock) {
          const channelId = msg.balanceProof.proof.channelId;
          if (this.#store.getSecret(msg.secretHash) !== null) {
            throw new QrwpError("INVALID_TRANSFER", "we know this lock's secret: it is not expired for us", {
              field: "secretHash",
            });
          }
          if (!hooks.mayRemoveLock(channelId, from.address, lock, nowSeconds)) {
            throw new QrwpError("INVALID_TRANSFER", "the lock has not expired yet", { field: "secretHash" });
          }
        }
        return withoutLock(end, msg.secretHash);
      },
      (live) => hooks.lockExpiredReceived(live.record.channelId, live.record.partner, msg.secretHash),
      () => true,
    );
  }

  #requireHooks(): TransferHooks {
    if (!this.#hooks) throw new QrwpError("INTERNAL", "mediated transfers are not enabled");
    return this.#hooks;
  }

  /** Plugs in the payments layer (mediated transfers). */
  setTransferHooks(hooks: TransferHooks): void {
    this.#hooks = hooks;
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
      this.#assertNoLocks(live);
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

/** `meta` key of a partner's ML-DSA-65 public key (hex), the one that verified its latest proof. */
function partnerKeyMetaKey(partner: string): string {
  return `partner-mldsa-key:${getAddress(partner)}`;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
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

function directTransferOf(payment: PaymentRecord, balanceProof: SignedBalanceProof): DirectTransfer {
  return { type: "DirectTransfer", paymentId: payment.paymentId, amount: payment.amount, balanceProof };
}

function endOf(stored: StoredProof): ChannelEnd {
  return {
    nonce: stored.signed.proof.nonce,
    transferredAmount: stored.signed.proof.transferredAmount,
    locks: stored.locks,
  };
}
