/**
 * The channel registry: the node's channels in memory (`Live`, always equal to what the store holds), the
 * balances derived from their proofs, the partners' ML-DSA-65 key book, and the channel events the other
 * layers subscribe to. Every module of the channel engine reads channels here; none keeps its own copy.
 */
import { EventEmitter } from "node:events";
import { Queue } from "@libp2p/utils";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { getAddress } from "ethers";
import type { Logger } from "pino";
import {
  EMPTY_CHANNEL_END,
  QrwpError,
  distributableAmount,
  findLock,
  lockedAmountOf,
  nextLifecycle,
  type LifecycleEvent,
  type Lock,
} from "../../protocol/index.js";
import type { RemotePeer } from "../../host/session-transport.js";
import { errorFields } from "../../host/session-transport.js";
import type {
  ChannelBase,
  ChannelRecord,
  NodeStore,
  PaymentRecord,
  PendingWithdraw,
} from "../store/store.js";
import {
  cosignedKey,
  endOf,
  eqAddr,
  equalBytes,
  partnerKeyMetaKey,
  type ChannelSummary,
  type ChannelView,
  type Live,
  type PartnerProof,
} from "./types.js";

/** What changed on a channel, as the API's event stream and the watchtower client see it. */
export interface ChannelStateEvent {
  channelId: bigint;
  state: ChannelRecord["state"];
  /** Why: "opened", "closed", "settled", "deposit", "withdraw", "contested", "cooperative". */
  reason: string;
}

/**
 * The registry's events (Node's typed EventEmitter). Listeners run synchronously after the write and must
 * not throw (a throwing listener is logged and ignored).
 * - `partnerProof`: a partner's latest evidenced balance proof on the channel changed, or its partner's ML-DSA key
 *   was first learned while the channel holds its proofs (a watchtower appointment can be built).
 * - `channel`: a channel's state or deposits changed.
 * - `payment`: a direct payment (ours or to us) was stored or reached its final status, after the write
 *   committed: an outgoing one when signed (`pending`) and when acknowledged (`completed`) or refused
 *   (`failed`); an incoming one once, when stored (`completed`). The record as the store now holds it.
 */
export interface ChannelEventMap {
  partnerProof: [channelId: bigint];
  channel: [event: ChannelStateEvent];
  payment: [payment: PaymentRecord];
}

export class ChannelRegistry {
  readonly #store: NodeStore;
  readonly #log: Logger;
  readonly #live = new Map<string, Live>();
  /** Partners' ML-DSA-65 keys (by lower-case address), as persisted in `meta` (cached, misses included). */
  readonly #partnerKeys = new Map<string, Uint8Array | null>();
  /** Latest block timestamp seen on chain (seconds); see {@link nowSeconds}. */
  #chainTimeSeconds = 0;
  readonly events = new EventEmitter<ChannelEventMap>();
  /** Our address (checksummed). */
  readonly address: string;

  constructor(store: NodeStore, address: string, log: Logger) {
    this.#store = store;
    this.address = address;
    this.#log = log;
  }

  /** Loads every stored channel (at start). */
  loadAll(): void {
    for (const record of this.#store.listChannels()) this.load(record);
  }

  /** Builds (or rebuilds) the in-memory view of a stored channel from its proofs. */
  load(record: ChannelRecord): Live {
    const acked = this.#store.latestStoredProof(record.channelId, this.address, "acked");
    const partner = this.#store.latestStoredProof(record.channelId, record.partner);
    const partnerEvidenced = this.#store.latestEvidencedProof(record.channelId, record.partner);
    // A stored evidence of ours may never have reached the partner (it is stored before it is sent): after a
    // load we count none, so the latest acknowledged proof gets its evidence again (the partner answers Ok).
    const ourEvidencedNonce = 0n;
    const now = Date.now();
    const live: Live = {
      record,
      ourEnd: acked ? endOf(acked) : EMPTY_CHANNEL_END,
      ourLatestNonce: this.#store.latestBalanceProof(record.channelId, this.address)?.proof.nonce ?? 0n,
      ourPending: this.#store.pendingProofs(record.channelId, this.address),
      partnerEnd: partner ? endOf(partner) : EMPTY_CHANNEL_END,
      partnerLatest: partner?.signed ?? null,
      partnerEvidenced: partnerEvidenced?.signed ?? null,
      // After a restart the clock of an un-evidenced proof starts again: the bound is measured from here.
      partnerUnevidencedSinceMs:
        partner && partner.signed.proof.nonce > (partnerEvidenced?.signed.proof.nonce ?? 0n) ? now : null,
      ourEvidencedNonce,
      ourUnevidencedSinceMs: acked && acked.signed.proof.nonce > ourEvidencedNonce ? now : null,
      outbox: [],
      flushQueued: false,
      queue: new Queue<unknown>({ concurrency: 1 }),
      closing: this.#store.getMeta(cosignedKey(record.channelId)) !== null,
      ourPendingWithdraw: this.#store.getWithdraw(record.channelId, this.address),
      partnerPendingWithdraw: this.#store.getWithdraw(record.channelId, record.partner),
    };
    this.#live.set(record.channelId.toString(), live);
    return live;
  }

  /**
   * Re-reads a channel's record and pending withdraws from the store into its in-memory view, in place (the
   * queue and the proofs stay): after a transaction that changed them in memory rolled back.
   */
  refresh(channelId: bigint): void {
    const live = this.find(channelId);
    const record = this.#store.getChannel(channelId);
    if (!live || !record) return;
    live.record = record;
    live.ourPendingWithdraw = this.#store.getWithdraw(channelId, this.address);
    live.partnerPendingWithdraw = this.#store.getWithdraw(channelId, record.partner);
  }

  /** Every channel in memory. */
  all(): IterableIterator<Live> {
    return this.#live.values();
  }

  has(channelId: bigint): boolean {
    return this.#live.has(channelId.toString());
  }

  find(channelId: bigint): Live | undefined {
    return this.#live.get(channelId.toString());
  }

  /** @throws QrwpError CHANNEL_NOT_FOUND */
  get(channelId: bigint): Live {
    const live = this.#live.get(channelId.toString());
    if (!live)
      throw new QrwpError("CHANNEL_NOT_FOUND", `channel ${channelId} not found`, {
        channelId: channelId.toString(),
      });
    return live;
  }

  /** The open channel (closing or not) with `partner` for `token`. */
  findOpen(partner: string, token: string): Live | undefined {
    for (const l of this.#live.values()) {
      if (eqAddr(l.record.partner, partner) && eqAddr(l.record.token, token) && l.record.state === "opened")
        return l;
    }
    return undefined;
  }

  /**
   * Persists `live.record` (state, deposits, close data) and tells `channel` listeners why.
   */
  save(live: Live, reason: string): void {
    this.#store.updateChannel(live.record);
    this.emit("channel", { channelId: live.record.channelId, state: live.record.state, reason });
  }

  /**
   * Moves the channel's lifecycle by `event` (protocol/channel-lifecycle.ts `nextLifecycle`), persists it and
   * tells `channel` listeners; false when nothing changed.
   * @throws QrwpError CHANNEL_STATE for a transition the chain cannot make
   */
  transition(live: Live, event: LifecycleEvent): boolean {
    const current = live.record;
    const next = nextLifecycle(current, event);
    if (next === current) return false;
    live.record = { ...baseOf(current), ...next };
    this.save(live, event.type);
    return true;
  }

  /** Emits an event; a listener that throws is logged, never propagated to the code that made the change. */
  emit<K extends keyof ChannelEventMap>(type: K, ...args: ChannelEventMap[K]): void {
    try {
      (this.events.emit as (t: K, ...a: ChannelEventMap[K]) => boolean)(type, ...args);
    } catch (err) {
      this.#log.warn({ event: type, err: errorFields(err) }, "channel event listener failed");
    }
  }

  /** Our spendable balance, the partner's, and both cumulative transferred amounts (base units). */
  balances(live: Live): {
    ourBalance: bigint;
    partnerBalance: bigint;
    sentTransferred: bigint;
    receivedTransferred: bigint;
  } {
    // What we can send counts an unacknowledged proof as spent (conservative): the worse of acked and pending.
    const ourFunds = ourFundsOf(live);
    let ourBalance = distributableAmount(ourFunds, live.ourEnd, live.partnerEnd);
    for (const p of live.ourPending) {
      const b = distributableAmount(ourFunds, endOf(p), live.partnerEnd);
      if (b < ourBalance) ourBalance = b;
    }
    return {
      ourBalance,
      partnerBalance: distributableAmount(partnerFundsOf(live), live.partnerEnd, live.ourEnd),
      sentTransferred: live.ourEnd.transferredAmount,
      receivedTransferred: live.partnerEnd.transferredAmount,
    };
  }

  /** The channel's state and balances, without the payment totals (which read every payment row). */
  summary(live: Live): ChannelSummary {
    const r = live.record;
    const b = this.balances(live);
    return {
      channelId: r.channelId,
      partner: r.partner,
      token: r.token,
      state: r.state,
      settleTimeoutSeconds: r.settleTimeoutSeconds,
      ourDeposit: r.ourDeposit,
      partnerDeposit: r.partnerDeposit,
      ourWithdraw: r.ourWithdraw,
      partnerWithdraw: r.partnerWithdraw,
      pendingWithdraw: {
        ours: live.ourPendingWithdraw?.totalWithdraw ?? null,
        partner: live.partnerPendingWithdraw?.totalWithdraw ?? null,
      },
      ourBalance: b.ourBalance,
      partnerBalance: b.partnerBalance,
      ourNonce: live.ourLatestNonce,
      partnerNonce: live.partnerLatest?.proof.nonce ?? 0n,
      ourLocked: lockedAmountOf(live.ourEnd.locks),
      partnerLocked: lockedAmountOf(live.partnerEnd.locks),
      pendingLocks: { ours: live.ourEnd.locks.length, partner: live.partnerEnd.locks.length },
      closedAtSeconds: r.state === "opened" ? null : r.closedAtSeconds,
      closingParticipant: r.state === "opened" ? null : r.closingParticipant,
    };
  }

  view(live: Live): ChannelView {
    return { ...this.summary(live), totals: this.#store.paymentTotals(live.record.channelId) };
  }

  /** True when we have a channel in any state but settled with `address` (a peer the node must keep). */
  isPartner(address: string): boolean {
    for (const l of this.#live.values()) {
      if (l.record.state !== "settled" && eqAddr(l.record.partner, address)) return true;
    }
    return false;
  }

  /** True when any channel (settled included) is with `address`: a peer whose addresses the node keeps. */
  isKnownPartner(address: string): boolean {
    for (const l of this.#live.values()) if (eqAddr(l.record.partner, address)) return true;
    return false;
  }

  /** Our pending lock with this secret hash on a channel (acknowledged or still pending), or undefined. */
  ourLock(channelId: bigint, secretHash: string): Lock | undefined {
    const live = this.find(channelId);
    if (!live) return undefined;
    return (
      findLock(live.ourEnd, secretHash) ??
      live.ourPending.map((p) => findLock(endOf(p), secretHash)).find(Boolean)
    );
  }

  /** The partner's pending lock with this secret hash on a channel (what we may claim), or undefined. */
  partnerLock(channelId: bigint, secretHash: string): Lock | undefined {
    const live = this.find(channelId);
    return live ? findLock(live.partnerEnd, secretHash) : undefined;
  }

  /**
   * The partner's latest accepted balance proof that carries evidence (an ML-DSA-65 signature: what a
   * watchtower takes) on an unsettled channel, with the ML-DSA-65 key that verified it (persisted in `meta`
   * with the proof). Null when the channel is unknown or settled, holds no evidenced partner proof, or the
   * key is unknown (learned from the partner's next PeerInfo or proof; the `partnerProof` event fires then).
   */
  partnerProof(channelId: bigint): PartnerProof | null {
    const live = this.find(channelId);
    if (!live || live.record.state === "settled" || !live.partnerEvidenced) return null;
    if (live.partnerEvidenced.proof.nonce < 1n) return null;
    const key = this.partnerKey(live.record.partner);
    if (!key) return null;
    return { channelId, partner: live.record.partner, signed: live.partnerEvidenced, mldsaPublicKey: key };
  }

  /** The partner's ML-DSA-65 key as persisted, or null (cached, including misses). */
  partnerKey(partner: string): Uint8Array | null {
    const k = partner.toLowerCase();
    if (!this.#partnerKeys.has(k)) {
      const hex = this.#store.getMeta(partnerKeyMetaKey(partner));
      this.#partnerKeys.set(k, hex ? hexToBytes(hex) : null);
    }
    return this.#partnerKeys.get(k) ?? null;
  }

  /** A copy of `key` when it differs from the partner's persisted key (so it must be written), else null. */
  changedPartnerKey(partner: string, key: Uint8Array): Uint8Array | null {
    const known = this.partnerKey(partner);
    return known && equalBytes(known, key) ? null : Uint8Array.from(key);
  }

  /** Records in the cache a key that was just persisted (inside the caller's transaction). */
  rememberPartnerKey(partner: string, key: Uint8Array): void {
    this.#partnerKeys.set(partner.toLowerCase(), key);
  }

  /**
   * Keeps a channel partner's ML-DSA key from its session when none is stored yet (stores written before
   * keys were kept), and signals its channels with proofs so their appointments can be built.
   */
  learnPartnerKey(from: RemotePeer): void {
    const partner = getAddress(from.address);
    if (this.partnerKey(partner)) return;
    const key = Uint8Array.from(from.mldsaPublicKey);
    this.#store.setMeta(partnerKeyMetaKey(partner), bytesToHex(key));
    this.#partnerKeys.set(partner.toLowerCase(), key);
    for (const l of this.#live.values()) {
      if (eqAddr(l.record.partner, partner) && l.partnerEvidenced)
        this.emit("partnerProof", l.record.channelId);
    }
  }

  /**
   * The node's time for lock decisions: the later of the wall clock and the latest block timestamp seen
   * (a chain whose clock runs ahead must not let us keep a lock it already considers expired), unix seconds.
   */
  nowSeconds(): bigint {
    return BigInt(Math.max(Math.floor(Date.now() / 1000), this.#chainTimeSeconds));
  }

  /** The channel monitor reports the latest block timestamp (seconds); never goes back. */
  observeChainTime(timestampSeconds: number): void {
    if (timestampSeconds > this.#chainTimeSeconds) this.#chainTimeSeconds = timestampSeconds;
  }

  /** CHANNEL_STATE naming the channel's state (or "closing") and what was expected. */
  stateError(live: Live, expected: string): QrwpError {
    return new QrwpError(
      "CHANNEL_STATE",
      `channel ${live.record.channelId} is ${live.closing ? "closing" : live.record.state}, expected ${expected}`,
      {
        channelId: live.record.channelId.toString(),
        state: live.record.state,
      },
    );
  }
}

/** The fields of a channel record that do not depend on its state. */
function baseOf(r: ChannelRecord): ChannelBase {
  return {
    channelId: r.channelId,
    partner: r.partner,
    token: r.token,
    settleTimeoutSeconds: r.settleTimeoutSeconds,
    ourDeposit: r.ourDeposit,
    partnerDeposit: r.partnerDeposit,
    ourWithdraw: r.ourWithdraw,
    partnerWithdraw: r.partnerWithdraw,
    openedAtMs: r.openedAtMs,
    updatedAtMs: r.updatedAtMs,
  };
}

/**
 * What we put in the channel and did not take out: our deposit minus our total withdraw, counting a
 * co-signed withdraw not mined yet (and not expired) as taken out (base units).
 */
export function ourFundsOf(live: Live): bigint {
  return live.record.ourDeposit - effectiveWithdraw(live.record.ourWithdraw, live.ourPendingWithdraw);
}

/** The partner's deposit minus its total withdraw, counting its pending co-signed withdraw (base units). */
export function partnerFundsOf(live: Live): bigint {
  return (
    live.record.partnerDeposit - effectiveWithdraw(live.record.partnerWithdraw, live.partnerPendingWithdraw)
  );
}

function effectiveWithdraw(mined: bigint, pending: PendingWithdraw | null): bigint {
  return pending && pending.totalWithdraw > mined ? pending.totalWithdraw : mined;
}
