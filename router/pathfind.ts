/**
 * Route search over a {@link ChannelGraph}.
 *
 * Dijkstra runs BACKWARDS from the target to the source (as LND and LDK do): walking upstream, the amount
 * each channel must carry is known exactly, namely the downstream amount plus the fee the forwarding node
 * charges on that downstream amount. Edges are filtered on `disabled`, capacity, htlcMinimum/htlcMaximum.
 *
 * Cost of using edge u->v to carry `a` (costModel "full", the default):
 * - fee charged by u (zero when u is the payer itself);
 * - lock-time penalty `a * lockTimeoutSeconds * riskFactor`, with {@link DEFAULT_RISK_FACTOR} =
 *   15e-9 per block (LND's default attempt risk factor) / 600 s per block = 2.5e-11 per base unit per second;
 * - probability penalty `-ln(P) * (penaltyBase + a * penaltyAmountMultiplier)`, P being the success
 *   probability under a uniform liquidity prior on [lower, upper] (LDK's probabilistic scorer):
 *   `P = (upper + 1 - a) / (upper + 1 - lower)` (`P = (capacity + 1 - a)/(capacity + 1)` with no knowledge),
 *   1 when a <= lower, and 0 (edge unusable) when a >= a learnt failure bound.
 *   Defaults follow LDK: {@link DEFAULT_PENALTY_BASE} 30,000 base units and
 *   {@link DEFAULT_PENALTY_AMOUNT_MULTIPLIER} 192 / 2^20 of the amount.
 * costModel "fee" uses the fee alone (used to check optimality against brute force).
 *
 * Amounts inside the search are JS numbers, exact up to 2^53 - 1 base units (9e15 msat = 90k BTC). Larger
 * amounts (wei-scale tokens) are searched with float64 approximations (relative error about 2^-53 per
 * operation; `Number()` rounds monotonically, so `a <= b` on exact values stays true on their conversions);
 * either way the returned path is recomputed and checked with exact bigints, and a path that fails is dropped.
 * Note: htlcMinimum is not monotone in the amount, so with a binding htlcMinimum a label-setting search
 * (this one, LND's, LDK's) may miss a cheaper path that only a larger amount could use.
 */
import { assertArgument } from "../protocol/index.js";
import type { ChannelGraph } from "./graph.js";

/** LND's default risk factor (15e-9 per block) per second at 600 s/block. */
export const DEFAULT_RISK_FACTOR = 15e-9 / 600;
/** LDK's `liquidity_penalty_multiplier_msat` (30,000). */
export const DEFAULT_PENALTY_BASE = 30_000;
/** LDK's `liquidity_penalty_amount_multiplier_msat` (192) per 2^20 of the amount. */
export const DEFAULT_PENALTY_AMOUNT_MULTIPLIER = 192 / 2 ** 20;

/** One hop of a path found over a {@link ChannelGraph}: the channel `from -> to`. */
export interface PathHop {
  channelId: string;
  from: string;
  to: string;
  /** Amount locked on this channel (what `to` receives over it). */
  amountToForward: bigint;
  /** Fee charged by `from` for forwarding onto this channel (0 for the first hop: the payer). */
  fee: bigint;
  /** Lock timeout of the transfer on this channel, seconds from now. */
  lockTimeoutSeconds: number;
}

/**
 * A path from the payer to the target over a {@link ChannelGraph}, in the graph's units. (QRWP payment
 * routes with exact wei amounts and lock expirations are `PaymentRoute`s, built by route.ts.)
 */
export interface Path {
  hops: PathHop[];
  /** Amount the payer sends (= amount + totalFee). */
  totalAmount: bigint;
  totalFee: bigint;
  /** Lock timeout on the payer's channel (the longest of the route). */
  totalLockTimeoutSeconds: number;
  /** Search cost of the path (fee + lock-time + probability penalties, without `extraPenalty`), graph units. */
  cost: number;
}

/** Exact limits of one edge leaving the payer, replacing the published ones (the payer knows its balances). */
export interface SourceEdgeOverride {
  capacity: bigint;
  htlcMinimum: bigint;
  htlcMaximum: bigint | null;
}

/** Route query. */
export interface RouteQuery {
  source: string;
  target: string;
  /** Amount the target must receive, base units (> 0). */
  amount: bigint;
  maxFee?: bigint;
  maxLockTimeoutSeconds?: number;
  /** Lock timeout the target requires on the last hop (default 0). */
  finalLockTimeoutSeconds?: number;
  scorer?: Scorer;
  /** "full" (default): fee + lock-time + probability penalty; "fee": fee only. */
  costModel?: "full" | "fee";
  riskFactor?: number;
  penaltyBase?: number;
  penaltyAmountMultiplier?: number;
  /** Extra cost per edge use, keyed by channelId (used by {@link findRoutes}). */
  extraPenalty?: ReadonlyMap<string, number>;
  /** Channels never used. */
  excludeChannels?: ReadonlySet<string>;
  /**
   * For edges leaving `source`, keyed by channelId: exact capacity and htlc bounds that replace the graph's,
   * and the edge is used even if the graph has it disabled, with success probability 1 (the payer knows its
   * balance, as LDK treats first hops). Edges leaving `source` not in the map keep theirs.
   */
  sourceEdgeOverrides?: ReadonlyMap<string, SourceEdgeOverride>;
}

interface Bounds {
  lower: number;
  /** Exclusive: amounts >= upper are believed to fail. Infinity = unknown. */
  upper: number;
}

/**
 * Learns channel liquidity from payment attempts. Bounds are kept per channel and direction
 * (`from` = the forwarding node); without `from` they apply to both directions. No decay yet.
 */
export class Scorer {
  private readonly bounds = new Map<string, Bounds>();

  private key(channelId: string, from?: string): string {
    return from === undefined ? channelId : `${channelId}|${from}`;
  }

  private get(k: string): Bounds {
    let b = this.bounds.get(k);
    if (!b) {
      b = { lower: 0, upper: Infinity };
      this.bounds.set(k, b);
    }
    return b;
  }

  /** Forwarding `amount` over the channel failed for lack of liquidity: amounts >= amount now score ~0. */
  recordFailure(channelId: string, amount: bigint, from?: string): void {
    const b = this.get(this.key(channelId, from));
    const a = Number(amount);
    b.upper = Math.min(b.upper, a);
    if (b.lower >= b.upper) b.lower = 0;
  }

  /** Forwarding `amount` over the channel succeeded: the channel had at least `amount`. */
  recordSuccess(channelId: string, amount: bigint, from?: string): void {
    const b = this.get(this.key(channelId, from));
    const a = Number(amount);
    b.lower = Math.max(b.lower, a);
    if (b.upper <= b.lower) b.upper = Infinity;
  }

  /** Forgets everything. */
  reset(): void {
    this.bounds.clear();
  }

  /** Number of channels with learnt bounds. */
  get size(): number {
    return this.bounds.size;
  }

  /**
   * Success probability of carrying `amount` over a channel of `capacity` forwarded by `from`: uniform
   * liquidity on [lower, min(capacity, upper - 1)]. Differences are taken before adding 1, so the result
   * stays > 0 for `amount == capacity` also beyond 2^53 (where `capacity + 1 == capacity` in float64).
   */
  probability(channelId: string, from: string, amount: number, capacity: number): number {
    if (amount > capacity) return 0;
    let lower = 0;
    let upper = Infinity;
    for (const k of [channelId, `${channelId}|${from}`]) {
      const b = this.bounds.get(k);
      if (!b) continue;
      lower = Math.max(lower, b.lower);
      upper = Math.min(upper, b.upper);
    }
    if (amount >= upper) return 0;
    if (amount <= lower) return 1;
    if (upper <= capacity) return (upper - amount) / (upper - lower);
    return (capacity - amount + 1) / (capacity - lower + 1);
  }
}

/** Uniform-prior success probability without a scorer (differences first: exact-boundary safe in float64). */
function priorProbability(amount: number, capacity: number): number {
  if (amount > capacity) return 0;
  return (capacity - amount + 1) / (capacity + 1);
}

/**
 * fee = feeBase + floor(amount * ppm / 1e6): exact while amount <= 2^53 - 1, a float64 approximation above
 * (where amounts themselves are approximations; paths are re-checked exactly).
 */
function feeOf(feeBase: number, ppm: number, amount: number): number {
  const p = amount * ppm;
  if (p <= Number.MAX_SAFE_INTEGER || amount > Number.MAX_SAFE_INTEGER)
    return feeBase + Math.floor(p / 1_000_000);
  return feeBase + Number((BigInt(amount) * BigInt(ppm)) / 1_000_000n);
}

/** Binary min-heap of (cost, node). */
class Heap {
  private readonly costs: number[] = [];
  private readonly nodes: number[] = [];
  get size(): number {
    return this.costs.length;
  }
  push(cost: number, node: number): void {
    const c = this.costs;
    const n = this.nodes;
    let i = c.length;
    c.push(cost);
    n.push(node);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (c[p]! <= cost) break;
      c[i] = c[p]!;
      n[i] = n[p]!;
      i = p;
    }
    c[i] = cost;
    n[i] = node;
  }
  pop(): [number, number] {
    const c = this.costs;
    const n = this.nodes;
    const topC = c[0]!;
    const topN = n[0]!;
    const lastC = c.pop()!;
    const lastN = n.pop()!;
    const len = c.length;
    if (len > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= len) break;
        const r = l + 1;
        const m = r < len && c[r]! < c[l]! ? r : l;
        if (c[m]! >= lastC) break;
        c[i] = c[m]!;
        n[i] = n[m]!;
        i = m;
      }
      c[i] = lastC;
      n[i] = lastN;
    }
    return [topC, topN];
  }
}

/**
 * Finds the cheapest route delivering `amount` to `target`, or null when none satisfies the constraints.
 * @throws QrwpError INVALID_ARGUMENT on a bad query.
 */
export function findRoute(graph: ChannelGraph, q: RouteQuery): Path | null {
  assertArgument(typeof q.amount === "bigint" && q.amount > 0n, "amount must be > 0", "amount", q.amount);
  assertArgument(Number.isFinite(Number(q.amount)), "amount too large", "amount", q.amount);
  assertArgument(q.source !== q.target, "source equals target", "target", q.target);
  const src = graph.nodeIndex(q.source);
  const dst = graph.nodeIndex(q.target);
  if (src === undefined || dst === undefined) return null;

  const full = (q.costModel ?? "full") === "full";
  const risk = q.riskFactor ?? DEFAULT_RISK_FACTOR;
  const pBase = q.penaltyBase ?? DEFAULT_PENALTY_BASE;
  const pAmt = q.penaltyAmountMultiplier ?? DEFAULT_PENALTY_AMOUNT_MULTIPLIER;
  const scorer = q.scorer && q.scorer.size > 0 ? q.scorer : undefined;
  const extra = q.extraPenalty && q.extraPenalty.size > 0 ? q.extraPenalty : undefined;
  const exclude = q.excludeChannels && q.excludeChannels.size > 0 ? q.excludeChannels : undefined;
  const overrides = sourceOverrides(q.sourceEdgeOverrides);
  const amount = Number(q.amount);
  const maxFee = q.maxFee === undefined ? Infinity : Number(q.maxFee);
  const maxLock = q.maxLockTimeoutSeconds ?? Infinity;
  const finalLock = q.finalLockTimeoutSeconds ?? 0;
  if (finalLock > maxLock) return null;

  const n = graph.nodeCount;
  const a = graph.arrays;
  const cost = new Float64Array(n).fill(Infinity);
  const baseCost = new Float64Array(n); // cost without extraPenalty
  const send = new Float64Array(n); // amount that must arrive at the node over its incoming channel
  const lock = new Float64Array(n); // lock timeout required on the node's incoming channel
  const next = new Int32Array(n).fill(-1); // edge index taken out of the node
  const done = new Uint8Array(n);
  cost[dst] = 0;
  send[dst] = amount;
  lock[dst] = finalLock;
  const heap = new Heap();
  heap.push(0, dst);

  while (heap.size > 0) {
    const [c, v] = heap.pop();
    if (done[v] || c > cost[v]!) continue;
    done[v] = 1;
    if (v === src) break;
    const carry = send[v]!;
    const vLock = lock[v]!;
    for (const e of graph.inEdgeIndices(v)) {
      const u = a.src[e]!;
      if (done[u] || u === dst) continue;
      const isPayer = u === src;
      const ov = isPayer && overrides ? overrides.get(graph.edgeAt(e)!.channelId) : undefined;
      if (a.disabled[e] && !ov) continue;
      if (exclude && exclude.has(graph.edgeAt(e)!.channelId)) continue;
      const capacity = ov ? ov.capacity : a.capacity[e]!;
      if (ov) {
        if (carry > capacity || carry < ov.htlcMin || carry > ov.htlcMax) continue;
      } else if (carry > capacity || carry < a.htlcMin[e]! || carry > a.htlcMax[e]!) continue;
      const fee = isPayer ? 0 : feeOf(a.feeBase[e]!, a.feePpm[e]!, carry);
      const uSend = carry + fee;
      if (uSend - amount > maxFee) continue;
      const uLock = isPayer ? vLock : vLock + a.lock[e]!;
      if (uLock > maxLock) continue;
      let edgeCost = fee;
      // an override is the payer's exact balance: success is certain, no probability penalty
      if (full && !ov) {
        let p: number;
        if (scorer) {
          const edge = graph.edgeAt(e)!;
          p = scorer.probability(edge.channelId, edge.source, carry, capacity);
        } else p = priorProbability(carry, capacity);
        if (p <= 0) continue;
        edgeCost += (isPayer ? 0 : carry * a.lock[e]! * risk) - Math.log(p) * (pBase + carry * pAmt);
      }
      const extraCost = extra ? (extra.get(graph.edgeAt(e)!.channelId) ?? 0) : 0;
      const nc = c + edgeCost + extraCost;
      if (nc < cost[u]!) {
        cost[u] = nc;
        baseCost[u] = baseCost[v]! + edgeCost;
        send[u] = uSend;
        lock[u] = uLock;
        next[u] = e;
        heap.push(nc, u);
      }
    }
  }
  if (next[src] === -1) return null;
  return buildPath(graph, src, dst, next, q, baseCost[src]!);
}

interface NumericOverride {
  capacity: number;
  htlcMin: number;
  htlcMax: number;
}

function sourceOverrides(
  m: ReadonlyMap<string, SourceEdgeOverride> | undefined,
): Map<string, NumericOverride> | undefined {
  if (!m || m.size === 0) return undefined;
  const out = new Map<string, NumericOverride>();
  for (const [channelId, o] of m) {
    out.set(channelId, {
      capacity: Number(o.capacity),
      htlcMin: Number(o.htlcMinimum),
      htlcMax: o.htlcMaximum === null ? Infinity : Number(o.htlcMaximum),
    });
  }
  return out;
}

/** Rebuilds the path along `next` with exact bigint arithmetic and re-checks every constraint. */
function buildPath(
  graph: ChannelGraph,
  src: number,
  dst: number,
  next: Int32Array,
  q: RouteQuery,
  cost: number,
): Path | null {
  const edges: number[] = [];
  for (let u = src; u !== dst;) {
    const e = next[u]!;
    if (e < 0 || edges.length > graph.nodeCount) return null;
    edges.push(e);
    u = graph.arrays.dst[e]!;
  }
  const hops: PathHop[] = new Array<PathHop>(edges.length);
  let downstream = q.amount;
  let lockS = q.finalLockTimeoutSeconds ?? 0;
  for (let i = edges.length - 1; i >= 0; i--) {
    const edge = graph.edgeAt(edges[i]!)!;
    const carry = downstream;
    const ov = i === 0 ? q.sourceEdgeOverrides?.get(edge.channelId) : undefined;
    const limits = ov ?? edge;
    if ((edge.disabled && !ov) || carry > limits.capacity || carry < limits.htlcMinimum) return null;
    if (limits.htlcMaximum !== null && carry > limits.htlcMaximum) return null;
    const fee = i === 0 ? 0n : edge.feeBaseAmount + (carry * BigInt(edge.feePpm)) / 1_000_000n;
    hops[i] = {
      channelId: edge.channelId,
      from: edge.source,
      to: edge.target,
      amountToForward: carry,
      fee,
      lockTimeoutSeconds: lockS,
    };
    downstream = carry + fee;
    if (i > 0) lockS += edge.lockTimeoutSeconds;
  }
  const totalAmount = hops[0]!.amountToForward;
  const totalFee = totalAmount - q.amount;
  if (q.maxFee !== undefined && totalFee > q.maxFee) return null;
  const totalLock = hops[0]!.lockTimeoutSeconds;
  if (q.maxLockTimeoutSeconds !== undefined && totalLock > q.maxLockTimeoutSeconds) return null;
  return { hops, totalAmount, totalFee, totalLockTimeoutSeconds: totalLock, cost };
}

/**
 * Up to `k` distinct alternative routes: after each route, every channel it used gets an extra cost
 * (`penaltyPerUse`, default: that route's fee + {@link DEFAULT_PENALTY_BASE}) so later searches prefer
 * other channels. Routes are returned in the order found; duplicates are dropped.
 */
export function findRoutes(graph: ChannelGraph, q: RouteQuery, k: number, penaltyPerUse?: number): Path[] {
  assertArgument(Number.isInteger(k) && k >= 1, "k must be >= 1", "k", k);
  const extra = new Map<string, number>(q.extraPenalty ?? []);
  const routes: Path[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < k * 2 && routes.length < k; i++) {
    const r = findRoute(graph, { ...q, extraPenalty: extra });
    if (!r) break;
    const key = r.hops.map((h) => `${h.channelId}:${h.from}`).join(",");
    const pen = penaltyPerUse ?? Number(r.totalFee) + DEFAULT_PENALTY_BASE;
    for (const h of r.hops) extra.set(h.channelId, (extra.get(h.channelId) ?? 0) + pen);
    if (seen.has(key)) continue;
    seen.add(key);
    routes.push(r);
  }
  return routes;
}
