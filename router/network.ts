/**
 * `NetworkGraph`: the public channel graph of one ChannelHub deployment (chainId, hub), per token, built from
 * on-chain channel events (router-local types: router/ never imports chain/; the node translates its chain
 * follower's events) and from verified {@link ChannelUpdate}s (gossip).
 *
 * A channel direction (channelId, participant -> partner) is routable once its participant has published a
 * non-disabled update; its capacity is `min(capacityHint, what the channel holds)`, where the channel holds
 * `participant1Deposit + participant2Deposit - participant1Withdraw - participant2Withdraw`.
 * The payer may override its own directions with exact local balances ({@link LocalBalances}).
 * Closed and settled channels are removed with their updates; their ids are remembered (bounded) so that
 * late updates for them are ignored instead of buffered.
 *
 * Amounts are exact bigints (wei-scale, 1e24 and more). The path search (pathfind.ts) works on float64
 * numbers: {@link NetworkGraph.searchGraph} hands it a {@link ChannelGraph} whose edges carry the exact
 * bigints and their `Number()` conversions (rounded to nearest, which is monotone, so a lock that fits a
 * capacity exactly also fits it in the search unless fees added in float push it over by an ulp). The
 * search proposes paths; route.ts rebuilds each with exact bigint arithmetic and re-checks every limit,
 * so float rounding can cost a route at an exact boundary but never lets an invalid one through.
 *
 * Memory is bounded by the on-chain channel set (each channel cost gas) plus {@link NetworkGraphInit}'s
 * `maxPendingUpdates` and `maxClosedChannels`.
 */
import {
  QrwpError,
  assertArgument,
  normalizeAddress,
  toSafeValue,
  type ErrorCode,
} from "../protocol/index.js";
import {
  normalizeChannelUpdateFields,
  verifyChannelUpdate,
  type ChannelUpdate,
  type UnsignedChannelUpdate,
} from "./channel-update.js";
import { ChannelGraph, type ChannelEdge } from "./graph.js";
import type { SourceEdgeOverride } from "./pathfind.js";

/** The ChannelHub's `ChannelOpened` event, router-local shape. */
export interface ChannelOpenedEvent {
  type: "ChannelOpened";
  channelId: bigint;
  participant1: string;
  participant2: string;
  token: string;
  settleTimeoutSeconds: bigint;
}
/** The ChannelHub's `ChannelNewDeposit` event: `participant`'s total deposit is now `totalDeposit`. */
export interface ChannelNewDepositEvent {
  type: "ChannelNewDeposit";
  channelId: bigint;
  participant: string;
  totalDeposit: bigint;
}
/** The ChannelHub's `ChannelWithdraw` event: `participant`'s total withdraw is now `totalWithdraw`. */
export interface ChannelWithdrawEvent {
  type: "ChannelWithdraw";
  channelId: bigint;
  participant: string;
  totalWithdraw: bigint;
}
/** The ChannelHub's `ChannelClosed` event (the channel stops being routable). */
export interface ChannelClosedEvent {
  type: "ChannelClosed";
  channelId: bigint;
}
/** The ChannelHub's `ChannelSettled` event (also emitted by a cooperative settle). */
export interface ChannelSettledEvent {
  type: "ChannelSettled";
  channelId: bigint;
}
/** The on-chain events a NetworkGraph consumes, in chain order. */
export type NetworkChainEvent =
  | ChannelOpenedEvent
  | ChannelNewDepositEvent
  | ChannelWithdrawEvent
  | ChannelClosedEvent
  | ChannelSettledEvent;

/** An open channel as the chain describes it (addresses EIP-55, amounts base units). */
export interface NetworkChannel {
  channelId: bigint;
  token: string;
  participant1: string;
  participant2: string;
  settleTimeoutSeconds: bigint;
  participant1Deposit: bigint;
  participant2Deposit: bigint;
  /** Total withdraws (already out of the channel), base units. */
  participant1Withdraw: bigint;
  participant2Withdraw: bigint;
}

/** One direction of an open channel and the latest update its participant published (if any). */
export interface NetworkDirection {
  channelId: bigint;
  token: string;
  /** Forwarder of this direction. */
  participant: string;
  partner: string;
  update: ChannelUpdate | undefined;
}

/** Outcome of {@link NetworkGraph.applyUpdate}. */
export type ApplyUpdateResult =
  /** Verified and stored as the direction's latest update. */
  | { status: "applied" }
  /** Verified, but the channel is not known yet: kept in the bounded pending buffer. */
  | { status: "pending" }
  /** Not newer than the stored (or pending) update of the direction. */
  | { status: "stale"; storedNonce: bigint }
  /** The channel was closed or settled. */
  | { status: "closed" }
  /** Invalid: bad shape, signature, chain, hub, token or participants. */
  | { status: "rejected"; code: ErrorCode; field: string; reason: string };

/** The payer's exact spendable amount per own channel (channelId -> base units), for its own directions. */
export interface LocalBalances {
  /** The payer's address; only directions whose participant it is are overridden. */
  address: string;
  spendable: ReadonlyMap<bigint, bigint>;
}

/** The exact forwarding policy and limits of one direction, as route.ts uses them. */
export interface ForwardingPolicy {
  feeFlat: bigint;
  feePpm: number;
  expiryDeltaSeconds: number;
  htlcMinimum: bigint;
  htlcMaximum: bigint;
  /** Largest lock amount the direction can carry now (published hint bounded by deposits, or local balance). */
  capacity: bigint;
}

/** Options of {@link NetworkGraph.toChannelGraph}. */
export interface ChannelGraphOptions {
  /** Exact balances for the payer's own directions. */
  local?: LocalBalances;
  /** Channels left out. */
  excludeChannels?: Iterable<bigint>;
}

/** Construction options of a {@link NetworkGraph}. */
export interface NetworkGraphInit {
  /** EIP-155 chain id of the deployment; updates for another chain are rejected. */
  chainId: bigint;
  /** ChannelHub address; updates for another hub are rejected. */
  hub: string;
  /** Verified updates of not-yet-known channels kept until the channel appears (default 256, oldest evicted). */
  maxPendingUpdates?: number;
  /** Closed/settled channel ids remembered to ignore late updates (default 65,536, oldest forgotten). */
  maxClosedChannels?: number;
}

/** Default of {@link NetworkGraphInit.maxPendingUpdates}. */
export const DEFAULT_MAX_PENDING_UPDATES = 256;
/** Default of {@link NetworkGraphInit.maxClosedChannels}. */
export const DEFAULT_MAX_CLOSED_CHANNELS = 65_536;

const SEARCH_GRAPH_CACHE = 4;

const key = (channelId: bigint, participant: string): string => `${channelId}:${participant}`;

function sameUpdate(a: ChannelUpdate, b: UnsignedChannelUpdate & { signature?: string }): boolean {
  return (
    a.signature === b.signature &&
    a.nonce === b.nonce &&
    a.chainId === b.chainId &&
    a.hub === b.hub &&
    a.token === b.token &&
    a.channelId === b.channelId &&
    a.participant === b.participant &&
    a.partner === b.partner &&
    a.feeFlat === b.feeFlat &&
    a.feePpm === b.feePpm &&
    a.expiryDeltaSeconds === b.expiryDeltaSeconds &&
    a.htlcMinimum === b.htlcMinimum &&
    a.htlcMaximum === b.htlcMaximum &&
    a.capacityHint === b.capacityHint &&
    a.disabled === b.disabled
  );
}

function rejected(code: ErrorCode, field: string, reason: string): ApplyUpdateResult {
  return { status: "rejected", code, field, reason };
}

/** The public channel graph of one deployment; see the module docs. */
export class NetworkGraph {
  readonly chainId: bigint;
  /** ChannelHub address, EIP-55. */
  readonly hub: string;
  readonly #maxPending: number;
  readonly #maxClosed: number;
  readonly #channels = new Map<bigint, NetworkChannel>();
  /** direction key -> latest update; re-inserted on every change, so iteration order is oldest first. */
  readonly #updates = new Map<string, ChannelUpdate>();
  readonly #pending = new Map<string, ChannelUpdate>();
  readonly #closed = new Set<bigint>();
  readonly #searchGraphs = new Map<string, { version: number; graph: ChannelGraph }>();
  #version = 0;

  /** @throws QrwpError INVALID_ARGUMENT on a bad chainId, hub or limit. */
  constructor(init: NetworkGraphInit) {
    assertArgument(
      typeof init.chainId === "bigint" && init.chainId >= 0n,
      "chainId must be a uint",
      "chainId",
    );
    this.chainId = init.chainId;
    this.hub = normalizeAddress(init.hub, "hub");
    this.#maxPending = init.maxPendingUpdates ?? DEFAULT_MAX_PENDING_UPDATES;
    this.#maxClosed = init.maxClosedChannels ?? DEFAULT_MAX_CLOSED_CHANNELS;
    assertArgument(
      Number.isSafeInteger(this.#maxPending) && this.#maxPending >= 0,
      "bad limit",
      "maxPending",
    );
    assertArgument(Number.isSafeInteger(this.#maxClosed) && this.#maxClosed >= 0, "bad limit", "maxClosed");
  }

  /** Increases on every change (a cache key for derived graphs). */
  get version(): number {
    return this.#version;
  }

  /** Number of open channels. */
  get channelCount(): number {
    return this.#channels.size;
  }

  /** Number of verified updates waiting for their channel. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /**
   * Applies one on-chain event (in chain order; re-delivery is harmless). An open on a remembered closed id
   * re-opens it (a replay from an earlier block); deposits, withdraws, closes and settles of unknown channels
   * are ignored. A deposit raises what the channel holds (and so its directions' capacity), a withdraw
   * lowers it. Opening a channel applies the pending updates of its participants.
   * @returns whether the graph changed.
   * @throws QrwpError INVALID_ARGUMENT on a malformed event or a deposit or withdraw by a non-participant.
   */
  applyEvent(event: NetworkChainEvent): boolean {
    assertArgument(typeof event === "object" && event !== null, "event must be an object", "event");
    assertArgument(
      typeof event.channelId === "bigint" && event.channelId >= 0n,
      "channelId must be a uint",
      "channelId",
      event.channelId,
    );
    switch (event.type) {
      case "ChannelOpened":
        return this.#open(event);
      case "ChannelNewDeposit": {
        const participant = normalizeAddress(event.participant, "participant");
        assertArgument(
          typeof event.totalDeposit === "bigint" && event.totalDeposit >= 0n,
          "totalDeposit must be a uint",
          "totalDeposit",
          event.totalDeposit,
        );
        const ch = this.#channels.get(event.channelId);
        if (!ch) return false;
        if (participant === ch.participant1) ch.participant1Deposit = event.totalDeposit;
        else if (participant === ch.participant2) ch.participant2Deposit = event.totalDeposit;
        else assertArgument(false, "deposit by a non-participant", "participant", participant);
        this.#version++;
        return true;
      }
      case "ChannelWithdraw": {
        const participant = normalizeAddress(event.participant, "participant");
        assertArgument(
          typeof event.totalWithdraw === "bigint" && event.totalWithdraw >= 0n,
          "totalWithdraw must be a uint",
          "totalWithdraw",
          event.totalWithdraw,
        );
        const ch = this.#channels.get(event.channelId);
        if (!ch) return false;
        if (participant === ch.participant1) ch.participant1Withdraw = event.totalWithdraw;
        else if (participant === ch.participant2) ch.participant2Withdraw = event.totalWithdraw;
        else assertArgument(false, "withdraw by a non-participant", "participant", participant);
        this.#version++;
        return true;
      }
      case "ChannelClosed":
      case "ChannelSettled":
        return this.#remove(event.channelId);
      default:
        throw new QrwpError("INVALID_ARGUMENT", "unknown event type", {
          field: "type",
          value: toSafeValue((event as { type?: unknown }).type),
        });
    }
  }

  #open(e: ChannelOpenedEvent): boolean {
    const participant1 = normalizeAddress(e.participant1, "participant1");
    const participant2 = normalizeAddress(e.participant2, "participant2");
    const token = normalizeAddress(e.token, "token");
    assertArgument(participant1 !== participant2, "participants must differ", "participant2", participant2);
    assertArgument(
      typeof e.settleTimeoutSeconds === "bigint" && e.settleTimeoutSeconds >= 0n,
      "settleTimeoutSeconds must be a uint",
      "settleTimeoutSeconds",
      e.settleTimeoutSeconds,
    );
    const existing = this.#channels.get(e.channelId);
    if (existing) {
      assertArgument(
        existing.participant1 === participant1 && existing.participant2 === participant2,
        "channel re-opened with other participants",
        "participant1",
        participant1,
      );
      return false;
    }
    this.#closed.delete(e.channelId);
    this.#channels.set(e.channelId, {
      channelId: e.channelId,
      token,
      participant1,
      participant2,
      settleTimeoutSeconds: e.settleTimeoutSeconds,
      participant1Deposit: 0n,
      participant2Deposit: 0n,
      participant1Withdraw: 0n,
      participant2Withdraw: 0n,
    });
    this.#version++;
    for (const p of [participant1, participant2]) {
      const k = key(e.channelId, p);
      const pending = this.#pending.get(k);
      if (pending === undefined) continue;
      this.#pending.delete(k);
      this.#applyToKnown(pending);
    }
    return true;
  }

  #remove(channelId: bigint): boolean {
    const ch = this.#channels.get(channelId);
    const wasClosed = this.#closed.has(channelId);
    if (!wasClosed) {
      this.#closed.add(channelId);
      if (this.#closed.size > this.#maxClosed) this.#closed.delete(this.#closed.values().next().value!);
    }
    if (!ch) return false;
    this.#channels.delete(channelId);
    for (const p of [ch.participant1, ch.participant2]) {
      this.#updates.delete(key(channelId, p));
      this.#pending.delete(key(channelId, p));
    }
    this.#version++;
    return true;
  }

  /**
   * Verifies and applies a channel update (as received from gossip or published by this node). Checks, in
   * order: shape; chainId and hub; an exact duplicate of the stored update is `stale` without re-verifying;
   * the signature recovers `participant`; closed channel; unknown channel (kept pending, bounded);
   * token, participant and partner match the channel; nonce strictly greater than the stored one.
   * Never throws.
   */
  applyUpdate(update: ChannelUpdate): ApplyUpdateResult {
    let u: UnsignedChannelUpdate;
    try {
      u = normalizeChannelUpdateFields(update);
    } catch (err) {
      const field = String((err as { details?: { field?: unknown } }).details?.field ?? "update");
      return rejected("INVALID_MESSAGE", field, (err as Error).message);
    }
    const signed: ChannelUpdate = { ...u, signature: update.signature };
    if (u.chainId !== this.chainId) return rejected("INVALID_MESSAGE", "chainId", "update for another chain");
    if (u.hub !== this.hub) return rejected("INVALID_MESSAGE", "hub", "update for another hub");
    const k = key(u.channelId, u.participant);
    const known = this.#updates.get(k) ?? this.#pending.get(k);
    if (known && known.nonce >= u.nonce && sameUpdate(known, signed)) {
      return { status: "stale", storedNonce: known.nonce };
    }
    try {
      verifyChannelUpdate(signed);
    } catch (err) {
      return rejected("INVALID_SIGNATURE", "signature", (err as Error).message);
    }
    if (this.#closed.has(u.channelId)) return { status: "closed" };
    if (!this.#channels.has(u.channelId)) {
      const p = this.#pending.get(k);
      if (p && p.nonce >= u.nonce) return { status: "stale", storedNonce: p.nonce };
      if (this.#maxPending === 0) return { status: "pending" };
      this.#pending.delete(k);
      this.#pending.set(k, signed);
      if (this.#pending.size > this.#maxPending) this.#pending.delete(this.#pending.keys().next().value!);
      return { status: "pending" };
    }
    return this.#applyToKnown(signed);
  }

  /** Applies a verified update to a known channel. */
  #applyToKnown(u: ChannelUpdate): ApplyUpdateResult {
    const ch = this.#channels.get(u.channelId)!;
    if (u.token !== ch.token) return rejected("INVALID_MESSAGE", "token", "token differs from the channel's");
    const partner =
      u.participant === ch.participant1
        ? ch.participant2
        : u.participant === ch.participant2
          ? ch.participant1
          : undefined;
    if (partner === undefined) {
      return rejected("INVALID_MESSAGE", "participant", "signer is not a participant of the channel");
    }
    if (u.partner !== partner)
      return rejected("INVALID_MESSAGE", "partner", "partner is not the other participant");
    const k = key(u.channelId, u.participant);
    const stored = this.#updates.get(k);
    if (stored && stored.nonce >= u.nonce) return { status: "stale", storedNonce: stored.nonce };
    this.#updates.delete(k);
    this.#updates.set(k, u);
    this.#version++;
    return { status: "applied" };
  }

  /** Whether the channel was closed or settled (remembered up to `maxClosedChannels` ids). */
  isClosed(channelId: bigint): boolean {
    return this.#closed.has(channelId);
  }

  /** An open channel (a copy), or undefined. */
  channel(channelId: bigint): NetworkChannel | undefined {
    const ch = this.#channels.get(channelId);
    return ch ? { ...ch } : undefined;
  }

  /** Open channels (copies), of one token if given. */
  channels(token?: string): NetworkChannel[] {
    const t = token === undefined ? undefined : normalizeAddress(token, "token");
    const out: NetworkChannel[] = [];
    for (const ch of this.#channels.values()) if (t === undefined || ch.token === t) out.push({ ...ch });
    return out;
  }

  /** Both directions of every open channel (of one token if given) with their latest updates. */
  directions(token?: string): NetworkDirection[] {
    const out: NetworkDirection[] = [];
    for (const ch of this.channels(token)) {
      for (const [participant, partner] of [
        [ch.participant1, ch.participant2],
        [ch.participant2, ch.participant1],
      ] as const) {
        const update = this.#updates.get(key(ch.channelId, participant));
        out.push({ channelId: ch.channelId, token: ch.token, participant, partner, update });
      }
    }
    return out;
  }

  /** The latest applied update of a direction, or undefined. */
  latestUpdate(channelId: bigint, participant: string): ChannelUpdate | undefined {
    const u = this.#updates.get(key(channelId, normalizeAddress(participant, "participant")));
    return u ? { ...u } : undefined;
  }

  /** The latest update of every direction, the most recently applied last; at most `limit` (the newest). */
  updates(limit?: number): ChannelUpdate[] {
    const all = [...this.#updates.values()];
    const from = limit === undefined ? 0 : Math.max(0, all.length - limit);
    return all.slice(from).map((u) => ({ ...u }));
  }

  /**
   * The exact policy and limits of a usable direction, or undefined when it is not usable (unknown or
   * closed channel, `from` not a participant, no update or a disabled one). With `local` and `from` equal to
   * `local.address`, a channel in `local.spendable` is usable with capacity = the local balance, htlc bounds
   * [0, balance] and the published fee schedule (if any; it only matters when the payer forwards).
   */
  policy(channelId: bigint, from: string, local?: LocalBalances): ForwardingPolicy | undefined {
    const ch = this.#channels.get(channelId);
    if (!ch) return undefined;
    const f = normalizeAddress(from, "from");
    if (f !== ch.participant1 && f !== ch.participant2) return undefined;
    const u = this.#updates.get(key(channelId, f));
    const spendable =
      local !== undefined && normalizeAddress(local.address, "local.address") === f
        ? local.spendable.get(channelId)
        : undefined;
    if (spendable !== undefined) {
      return {
        feeFlat: u?.feeFlat ?? 0n,
        feePpm: u?.feePpm ?? 0,
        expiryDeltaSeconds: u?.expiryDeltaSeconds ?? 0,
        htlcMinimum: 0n,
        htlcMaximum: spendable,
        capacity: spendable,
      };
    }
    if (!u || u.disabled) return undefined;
    const held = channelFunds(ch);
    return {
      feeFlat: u.feeFlat,
      feePpm: u.feePpm,
      expiryDeltaSeconds: u.expiryDeltaSeconds,
      htlcMinimum: u.htlcMinimum,
      htlcMaximum: u.htlcMaximum,
      capacity: u.capacityHint < held ? u.capacityHint : held,
    };
  }

  /**
   * A new {@link ChannelGraph} of one token's usable directions for `findRoute`/`findRoutes`: channel ids
   * as decimal strings, nodes as EIP-55 addresses, exact amounts (the graph mirrors them as float64),
   * `lockTimeoutSeconds` = `expiryDeltaSeconds`, `htlcMaximum` bounded by nothing else. Directions without a
   * usable policy are left out. O(channels of the token) per call.
   * @throws QrwpError INVALID_ARGUMENT on a bad token.
   */
  toChannelGraph(token: string, options: ChannelGraphOptions = {}): ChannelGraph {
    const exclude = new Set<bigint>(options.excludeChannels ?? []);
    const g = new ChannelGraph();
    for (const d of this.directions(token)) {
      if (exclude.has(d.channelId)) continue;
      const p = this.policy(d.channelId, d.participant, options.local);
      if (p) g.addEdge(edgeOf(d, p, false));
    }
    return g;
  }

  /**
   * @internal The cached search graph of a token (route.ts): every direction of every open channel, those
   * without a usable published policy as disabled edges, so that the payer's own directions can be enabled
   * per query through pathfind's `sourceEdgeOverrides`. Rebuilt when the graph changed. Shared: never
   * mutate it.
   */
  searchGraph(token: string): ChannelGraph {
    const t = normalizeAddress(token, "token");
    const cached = this.#searchGraphs.get(t);
    if (cached && cached.version === this.#version) return cached.graph;
    const g = new ChannelGraph();
    for (const d of this.directions(t)) {
      const p = this.policy(d.channelId, d.participant);
      g.addEdge(edgeOf(d, p ?? DISABLED_POLICY, p === undefined));
    }
    this.#searchGraphs.delete(t);
    this.#searchGraphs.set(t, { version: this.#version, graph: g });
    if (this.#searchGraphs.size > SEARCH_GRAPH_CACHE) {
      this.#searchGraphs.delete(this.#searchGraphs.keys().next().value!);
    }
    return g;
  }

  /** @internal pathfind `sourceEdgeOverrides` for the payer's local balances in `token`. */
  sourceOverrides(token: string, local: LocalBalances): Map<string, SourceEdgeOverride> {
    const out = new Map<string, SourceEdgeOverride>();
    const t = normalizeAddress(token, "token");
    for (const channelId of local.spendable.keys()) {
      const ch = this.#channels.get(channelId);
      if (!ch || ch.token !== t) continue;
      const p = this.policy(channelId, local.address, local);
      if (!p) continue;
      out.set(channelId.toString(), {
        capacity: p.capacity,
        htlcMinimum: p.htlcMinimum,
        htlcMaximum: p.htlcMaximum,
      });
    }
    return out;
  }
}

const DISABLED_POLICY: ForwardingPolicy = {
  feeFlat: 0n,
  feePpm: 0,
  expiryDeltaSeconds: 0,
  htlcMinimum: 0n,
  htlcMaximum: 0n,
  capacity: 0n,
};

function edgeOf(d: NetworkDirection, p: ForwardingPolicy, disabled: boolean): ChannelEdge {
  return {
    channelId: d.channelId.toString(),
    source: d.participant,
    target: d.partner,
    capacity: p.capacity,
    feeBaseAmount: p.feeFlat,
    feePpm: p.feePpm,
    lockTimeoutSeconds: p.expiryDeltaSeconds,
    disabled,
    htlcMinimum: p.htlcMinimum,
    htlcMaximum: p.htlcMaximum,
  };
}

/**
 * What a channel holds: both deposits minus both total withdraws (base units). The hub keeps this >= 0; a
 * graph that saw a withdraw's event before a deposit's (never in chain order) reads 0, not a negative amount.
 */
export function channelFunds(ch: NetworkChannel): bigint {
  const held =
    ch.participant1Deposit + ch.participant2Deposit - ch.participant1Withdraw - ch.participant2Withdraw;
  return held > 0n ? held : 0n;
}
