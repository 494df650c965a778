/**
 * Payment routes with exact amounts and lock expirations (the team's convention, issue 3):
 *
 * A route for a payment of `amount` from initiator I to target T over hops h1..hn (hn = T) is a
 * `RouteHop[]`, hop i being the lock I (i = 0) or h(i) sends to `hops[i].address` over `hops[i].channelId`:
 * - `hops[n-1].lockAmount = amount`, `hops[n-1].expiration = now + finalExpiryDeltaSeconds`, `fee = 0`;
 * - for i < n-1, with S the fee schedule `hops[i].address` published for channel `hops[i+1].channelId`:
 *   `hops[i].fee = S.feeFlat + hops[i+1].lockAmount * S.feePpm / 1e6` (floor),
 *   `hops[i].lockAmount = hops[i+1].lockAmount + hops[i].fee`,
 *   `hops[i].expiration = hops[i+1].expiration + S.expiryDeltaSeconds`.
 * Total fees = `hops[0].lockAmount - amount`. All bigint, exact to the wei.
 *
 * {@link findPaymentRoutes} searches a {@link NetworkGraph} with pathfind.ts in float64 approximations of
 * the amounts (see network.ts), then rebuilds every candidate with {@link buildRoute} and re-checks it
 * exactly (capacities, htlc bounds, maxFee, expiry); a candidate that fails is dropped. Source: BOLT 4 / BOLT 7 (fees, cltv_expiry_delta), LND/LDK (backward search).
 */
import { QrwpError, assertArgument, forwardingFee, normalizeAddress } from "../protocol/index.js";
import type { ForwardingPolicy, LocalBalances, NetworkGraph } from "./network.js";
import { findRoutes, type Path, type RouteQuery, type Scorer } from "./pathfind.js";

/** One hop of a payment route (see the module docs). */
export interface RouteHop {
  /** The node receiving this hop's lock (EIP-55). */
  address: string;
  /** Channel the lock is sent over. */
  channelId: bigint;
  /** Amount locked on this hop, base units. */
  lockAmount: bigint;
  /** Lock expiration, unix seconds. */
  expiration: bigint;
  /** Fee `address` keeps for forwarding onto the next hop (0 for the last hop). */
  fee: bigint;
}

/** One channel direction of a path: `from` sends to `to` over `channelId`. */
export interface PathEdge {
  channelId: bigint;
  from: string;
  to: string;
}

/** Exact policy of the direction (channelId, from), or undefined if it cannot be used. */
export type PolicyLookup = (channelId: bigint, from: string) => ForwardingPolicy | undefined;

/** Parameters of {@link buildRoute}. */
export interface BuildRouteParams {
  /** Directions from the initiator (`path[0].from`) to the target (`path[n-1].to`), contiguous, no loop. */
  path: readonly PathEdge[];
  /** Amount the target receives, base units (> 0). */
  amount: bigint;
  /** Seconds between now and the last hop's lock expiration (what the target requires). */
  finalExpiryDeltaSeconds: number;
  /** Current time, unix seconds. */
  nowSeconds: bigint | number;
  /** The published (or local) policy of each direction, e.g. `(c, f) => graph.policy(c, f, local)`. */
  policy: PolicyLookup;
}

/** A payment route with its totals. */
export interface PaymentRoute {
  hops: RouteHop[];
  /** What the initiator locks on its channel: `hops[0].lockAmount` = amount + totalFee. */
  totalAmount: bigint;
  totalFee: bigint;
  /** Expiration of the first hop's lock (the latest of the route), unix seconds. */
  expiration: bigint;
  /** Search cost (fee + lock-time risk + probability penalties), base units; routes are sorted by it. */
  cost: number;
}

/** Parameters of {@link findPaymentRoutes}. */
export interface FindPaymentRoutesParams {
  graph: NetworkGraph;
  token: string;
  /** The initiator (payer). */
  source: string;
  target: string;
  /** Amount the target receives, base units (> 0). */
  amount: bigint;
  /** Routes whose total fee exceeds this are dropped. */
  maxFee?: bigint;
  finalExpiryDeltaSeconds: number;
  nowSeconds: bigint | number;
  /** At most this many routes (1..32). */
  k: number;
  /** Learnt liquidity; keys are decimal channel ids and EIP-55 forwarder addresses, amounts base units. */
  scorer?: Scorer;
  excludeChannels?: Iterable<bigint>;
  /** The initiator's exact spendable amount per own channel (overrides its published capacity hints). */
  localBalances?: ReadonlyMap<bigint, bigint>;
  /** Routes whose first lock expires more than this many seconds after now are not searched. */
  maxExpiryDeltaSeconds?: number;
  /** Fixed search cost per hop, base units (default 0: fees and probabilities alone decide). */
  hopPenalty?: bigint;
}

/** Largest k accepted by {@link findPaymentRoutes}. */
export const MAX_ROUTES = 32;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
/**
 * Above 2^53 the search's fee sums are float64 approximations; its maxFee gets `amount >> 30` (about 1e-9
 * of the amount) of slack so rounding does not prune a route that the exact maxFee check keeps.
 */
const MAX_FEE_SLACK_SHIFT = 30n;

/** The fee rule mediators apply (protocol/transfers.ts), re-exported for route building. */
export { forwardingFee };

function toSeconds(v: bigint | number, field: string): bigint {
  assertArgument(
    (typeof v === "bigint" && v >= 0n) || (typeof v === "number" && Number.isSafeInteger(v) && v >= 0),
    `${field} must be a non-negative integer`,
    field,
    v,
  );
  return BigInt(v);
}

function pathError(
  code: "INVALID_ARGUMENT" | "INSUFFICIENT_CAPACITY",
  hop: number,
  reason: string,
): QrwpError {
  return new QrwpError(code, `route hop ${hop}: ${reason}`, { field: "path", hop });
}

/**
 * Builds the exact `RouteHop[]` of a path (convention in the module docs) and checks every hop's lock
 * against the sending direction's limits: `htlcMinimum <= lockAmount <= min(htlcMaximum, capacity)`.
 * @throws QrwpError INVALID_ARGUMENT (`details.field` "path", `details.hop`) on an empty, broken or looping
 *   path, an unusable direction or an htlc bound; INSUFFICIENT_CAPACITY when a lock exceeds a capacity;
 *   INVALID_ARGUMENT on a bad amount, delta or time.
 */
export function buildRoute(params: BuildRouteParams): RouteHop[] {
  const { path, amount, policy } = params;
  assertArgument(typeof amount === "bigint" && amount > 0n, "amount must be > 0", "amount", amount);
  assertArgument(
    Number.isSafeInteger(params.finalExpiryDeltaSeconds) && params.finalExpiryDeltaSeconds >= 0,
    "finalExpiryDeltaSeconds must be a non-negative integer",
    "finalExpiryDeltaSeconds",
    params.finalExpiryDeltaSeconds,
  );
  const now = toSeconds(params.nowSeconds, "nowSeconds");
  assertArgument(Array.isArray(path) && path.length > 0, "path must have at least one hop", "path");
  const n = path.length;
  const seen = new Set<string>([normalizeAddress(path[0]!.from, "path.from")]);
  const policies: ForwardingPolicy[] = [];
  for (let i = 0; i < n; i++) {
    const e = path[i]!;
    const from = normalizeAddress(e.from, "path.from");
    const to = normalizeAddress(e.to, "path.to");
    if (i > 0 && from !== normalizeAddress(path[i - 1]!.to, "path.to")) {
      throw pathError("INVALID_ARGUMENT", i, "does not start where the previous hop ends");
    }
    if (seen.has(to)) throw pathError("INVALID_ARGUMENT", i, "path visits a node twice");
    seen.add(to);
    const p = policy(e.channelId, from);
    if (!p) throw pathError("INVALID_ARGUMENT", i, `direction ${e.channelId} from ${from} is not usable`);
    policies.push(p);
  }
  const hops = new Array<RouteHop>(n);
  hops[n - 1] = {
    address: normalizeAddress(path[n - 1]!.to, "path.to"),
    channelId: path[n - 1]!.channelId,
    lockAmount: amount,
    expiration: now + BigInt(params.finalExpiryDeltaSeconds),
    fee: 0n,
  };
  for (let i = n - 2; i >= 0; i--) {
    const schedule = policies[i + 1]!; // hops[i].address's policy on channel hops[i+1].channelId
    const next = hops[i + 1]!;
    const fee = forwardingFee(schedule, next.lockAmount);
    hops[i] = {
      address: normalizeAddress(path[i]!.to, "path.to"),
      channelId: path[i]!.channelId,
      lockAmount: next.lockAmount + fee,
      expiration: next.expiration + BigInt(schedule.expiryDeltaSeconds),
      fee,
    };
  }
  for (let i = 0; i < n; i++) {
    const p = policies[i]!;
    const lock = hops[i]!.lockAmount;
    if (lock > p.capacity) {
      throw pathError("INSUFFICIENT_CAPACITY", i, `lock ${lock} exceeds capacity ${p.capacity}`);
    }
    if (lock < p.htlcMinimum) throw pathError("INVALID_ARGUMENT", i, `lock ${lock} below htlcMinimum`);
    if (lock > p.htlcMaximum) throw pathError("INVALID_ARGUMENT", i, `lock ${lock} above htlcMaximum`);
  }
  return hops;
}

/**
 * Up to `k` payment routes from `source` to `target` for `amount` of `token`, sorted by search cost (then
 * fee, then length). Each is exact ({@link buildRoute}) and within every limit; routes over `maxFee` are
 * dropped. The search graph is cached per token until the NetworkGraph changes.
 * @returns possibly empty.
 * @throws QrwpError INVALID_ARGUMENT on bad parameters.
 */
export function findPaymentRoutes(params: FindPaymentRoutesParams): PaymentRoute[] {
  const { graph, amount, maxFee, k } = params;
  assertArgument(typeof amount === "bigint" && amount > 0n, "amount must be > 0", "amount", amount);
  assertArgument(
    maxFee === undefined || (typeof maxFee === "bigint" && maxFee >= 0n),
    "maxFee must be >= 0",
    "maxFee",
    maxFee,
  );
  assertArgument(Number.isInteger(k) && k >= 1 && k <= MAX_ROUTES, `k must be 1..${MAX_ROUTES}`, "k", k);
  assertArgument(
    Number.isSafeInteger(params.finalExpiryDeltaSeconds) && params.finalExpiryDeltaSeconds >= 0,
    "finalExpiryDeltaSeconds must be a non-negative integer",
    "finalExpiryDeltaSeconds",
    params.finalExpiryDeltaSeconds,
  );
  const hopPenalty = params.hopPenalty ?? 0n;
  assertArgument(typeof hopPenalty === "bigint" && hopPenalty >= 0n, "hopPenalty >= 0", "hopPenalty");
  const now = toSeconds(params.nowSeconds, "nowSeconds");
  const token = normalizeAddress(params.token, "token");
  const source = normalizeAddress(params.source, "source");
  const target = normalizeAddress(params.target, "target");
  assertArgument(source !== target, "source equals target", "target", target);

  const local: LocalBalances | undefined = params.localBalances
    ? { address: source, spendable: params.localBalances }
    : undefined;
  const exclude = new Set<bigint>(params.excludeChannels ?? []);
  const query: RouteQuery = {
    source,
    target,
    amount,
    finalLockTimeoutSeconds: params.finalExpiryDeltaSeconds,
    penaltyBase: Number(hopPenalty),
  };
  if (maxFee !== undefined) query.maxFee = maxFee + (amount > MAX_SAFE ? amount >> MAX_FEE_SLACK_SHIFT : 0n);
  if (params.maxExpiryDeltaSeconds !== undefined) query.maxLockTimeoutSeconds = params.maxExpiryDeltaSeconds;
  if (params.scorer) query.scorer = params.scorer;
  if (exclude.size > 0) query.excludeChannels = new Set([...exclude].map((c) => c.toString()));
  if (local) query.sourceEdgeOverrides = graph.sourceOverrides(token, local);

  const paths: Path[] = findRoutes(graph.searchGraph(token), query, Math.min(MAX_ROUTES, k + 2));
  const policy: PolicyLookup = (channelId, from) =>
    exclude.has(channelId) ? undefined : graph.policy(channelId, from, local);
  const routes: PaymentRoute[] = [];
  for (const p of paths) {
    let hops: RouteHop[];
    try {
      hops = buildRoute({
        path: p.hops.map((h) => ({ channelId: BigInt(h.channelId), from: h.from, to: h.to })),
        amount,
        finalExpiryDeltaSeconds: params.finalExpiryDeltaSeconds,
        nowSeconds: now,
        policy,
      });
    } catch {
      continue; // float rounding at an exact boundary
    }
    const totalAmount = hops[0]!.lockAmount;
    const totalFee = totalAmount - amount;
    const expiration = hops[0]!.expiration;
    if (maxFee !== undefined && totalFee > maxFee) continue;
    if (
      params.maxExpiryDeltaSeconds !== undefined &&
      expiration - now > BigInt(params.maxExpiryDeltaSeconds)
    ) {
      continue;
    }
    routes.push({ hops, totalAmount, totalFee, expiration, cost: p.cost });
  }
  routes.sort(
    (a, b) =>
      a.cost - b.cost ||
      (a.totalFee < b.totalFee ? -1 : a.totalFee > b.totalFee ? 1 : 0) ||
      a.hops.length - b.hops.length,
  );
  return routes.slice(0, k);
}

/** Parameters of {@link splitPayment}. */
export interface SplitPaymentParams extends Omit<FindPaymentRoutesParams, "k"> {
  /** At most this many parts (1..16, default 4). */
  maxParts?: number;
  /** Parts smaller than this are not proposed (default 1). */
  minPartAmount?: bigint;
}

/** A multi-part payment proposal: one route per part, parts channel-disjoint. */
export interface PaymentSplit {
  parts: PaymentRoute[];
  /** Sum of the parts' fees (`maxFee` bounds it). */
  totalFee: bigint;
  /** Sum of what the initiator locks over all parts. */
  totalAmount: bigint;
}

/** Largest `maxParts` of {@link splitPayment}. */
export const MAX_PARTS = 16;
/** How many times a probe amount is halved before {@link splitPayment} gives up on a part. */
const MAX_HALVINGS = 16;

/**
 * Proposes a multi-part payment (BOLT 4 basic MPP shape) when no single route carries `amount`. Greedy,
 * part by part: the best route for the whole remaining amount if one exists; otherwise the best route for
 * a probe amount (halved until one routes), saturated to the largest amount that exact route carries
 * (binary search on {@link buildRoute}, no further graph search). Every channel a part uses is then
 * excluded, so parts never share a channel and each part's capacity check stays exact on its own. The
 * `maxFee` budget is shared in proportion to the amounts (a part of x may use `feeLeft * x / remaining`).
 * A single route is returned as one part when one exists.
 * @returns the parts (their target amounts sum to `amount`), or null when this greedy finds no split
 *   within `maxParts`.
 * @throws QrwpError INVALID_ARGUMENT on bad parameters.
 */
export function splitPayment(params: SplitPaymentParams): PaymentSplit | null {
  const maxParts = params.maxParts ?? 4;
  assertArgument(
    Number.isInteger(maxParts) && maxParts >= 1 && maxParts <= MAX_PARTS,
    `maxParts must be 1..${MAX_PARTS}`,
    "maxParts",
    maxParts,
  );
  const minPart = params.minPartAmount ?? 1n;
  assertArgument(typeof minPart === "bigint" && minPart >= 1n, "minPartAmount >= 1", "minPartAmount");
  assertArgument(
    typeof params.amount === "bigint" && params.amount > 0n,
    "amount must be > 0",
    "amount",
    params.amount,
  );
  const { maxParts: _m, minPartAmount: _p, ...base } = params;
  const source = normalizeAddress(params.source, "source");
  const local: LocalBalances | undefined = params.localBalances
    ? { address: source, spendable: params.localBalances }
    : undefined;
  const policy: PolicyLookup = (channelId, from) => params.graph.policy(channelId, from, local);
  const excluded = new Set<bigint>(params.excludeChannels ?? []);
  const parts: PaymentRoute[] = [];
  let remaining = params.amount;
  let feeLeft = params.maxFee;
  const budget = (x: bigint): bigint | undefined =>
    feeLeft === undefined ? undefined : (feeLeft * x) / remaining;
  const best = (x: bigint): PaymentRoute | undefined => {
    const maxFee = budget(x);
    return findPaymentRoutes({
      ...base,
      amount: x,
      k: 1,
      excludeChannels: excluded,
      ...(maxFee === undefined ? {} : { maxFee }),
    })[0];
  };
  while (remaining > 0n) {
    if (parts.length === maxParts) return null;
    let route = best(remaining);
    let part = remaining;
    if (!route) {
      if (parts.length === maxParts - 1) return null; // the last part must carry everything left
      let probe = remaining;
      for (let i = 0; i < MAX_HALVINGS && !route; i++) {
        probe = (probe + 1n) / 2n;
        if (probe < minPart) break;
        route = best(probe);
      }
      if (!route) return null;
      // saturate: the largest x in [probe, remaining) this exact route carries within its fee budget
      const path = pathOf(source, route);
      let lo = probe;
      let hi = remaining; // does not route (searched above)
      let loRoute = route;
      while (hi - lo > 1n) {
        const mid = lo + (hi - lo) / 2n;
        const r = exactOn(path, mid, params, policy, budget(mid));
        if (r) {
          lo = mid;
          loRoute = { ...r, cost: route.cost }; // the search cost at the probe amount
        } else hi = mid;
      }
      route = loRoute;
      part = lo;
    }
    parts.push(route);
    for (const h of route.hops) excluded.add(h.channelId);
    if (feeLeft !== undefined) feeLeft -= route.totalFee;
    remaining -= part;
  }
  return {
    parts,
    totalFee: parts.reduce((s, r) => s + r.totalFee, 0n),
    totalAmount: parts.reduce((s, r) => s + r.totalAmount, 0n),
  };
}

function pathOf(source: string, route: PaymentRoute): PathEdge[] {
  return route.hops.map((h, i) => ({
    channelId: h.channelId,
    from: i === 0 ? source : route.hops[i - 1]!.address,
    to: h.address,
  }));
}

/** The route over `path` for `amount` if it satisfies every limit and the fee budget, else undefined. */
function exactOn(
  path: PathEdge[],
  amount: bigint,
  params: SplitPaymentParams,
  policy: PolicyLookup,
  maxFee: bigint | undefined,
): PaymentRoute | undefined {
  let hops: RouteHop[];
  try {
    hops = buildRoute({
      path,
      amount,
      finalExpiryDeltaSeconds: params.finalExpiryDeltaSeconds,
      nowSeconds: params.nowSeconds,
      policy,
    });
  } catch {
    return undefined;
  }
  const totalFee = hops[0]!.lockAmount - amount;
  if (maxFee !== undefined && totalFee > maxFee) return undefined;
  const now = BigInt(params.nowSeconds);
  if (
    params.maxExpiryDeltaSeconds !== undefined &&
    hops[0]!.expiration - now > BigInt(params.maxExpiryDeltaSeconds)
  ) {
    return undefined;
  }
  return { hops, totalAmount: hops[0]!.lockAmount, totalFee, expiration: hops[0]!.expiration, cost: 0 };
}
