/**
 * Exact payment routes: buildRoute's fee/expiry arithmetic to the wei on a hand-computed 3-hop example,
 * findPaymentRoutes (maxFee, local balances, exclusions, wei-scale amounts) and properties on small random
 * NetworkGraphs: every route respects capacities and htlc bounds, fees equal the per-hop schedules, and
 * when no feasible path exists none is returned.
 */
import { expect } from "chai";
import fc from "fast-check";
import { addressOf } from "../../protocol/index.js";
import {
  NetworkGraph,
  buildRoute,
  findPaymentRoutes,
  forwardingFee,
  signChannelUpdate,
  splitPayment,
  type PaymentRoute,
  type UnsignedChannelUpdate,
} from "../../router/index.js";
import { expectCode } from "./helpers.js";

interface TestKey {
  address: string;
  secp256k1PrivateKey: Uint8Array;
}

const KEYS: TestKey[] = Array.from({ length: 6 }, (_, i) => {
  const sk = new Uint8Array(32);
  sk[30] = 0x77;
  sk[31] = i + 1;
  return { secp256k1PrivateKey: sk, address: addressOf(sk) };
});

/** chai compares bigints (its typings only say number). */
const atMost = (actual: bigint, limit: bigint, what: string): unknown =>
  expect(actual, what).to.be.at.most(limit as unknown as number);
const atLeast = (actual: bigint, limit: bigint, what: string): unknown =>
  expect(actual, what).to.be.at.least(limit as unknown as number);

const CHAIN = 31337n;
const HUB = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const TOKEN = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512";
const NOW = 1_700_000_000n;

type Schedule = Pick<
  UnsignedChannelUpdate,
  "feeFlat" | "feePpm" | "expiryDeltaSeconds" | "htlcMinimum" | "htlcMaximum" | "capacityHint" | "disabled"
>;

const BIG = 10n ** 24n;
const DEFAULT_SCHEDULE: Schedule = {
  feeFlat: 0n,
  feePpm: 0,
  expiryDeltaSeconds: 0,
  htlcMinimum: 0n,
  htlcMaximum: BIG,
  capacityHint: BIG,
  disabled: false,
};

function open(g: NetworkGraph, channelId: bigint, a: TestKey, b: TestKey, depA = BIG, depB = BIG): void {
  g.applyEvent({
    type: "ChannelOpened",
    channelId,
    participant1: a.address,
    participant2: b.address,
    token: TOKEN,
    settleTimeoutSeconds: 3600n,
  });
  g.applyEvent({ type: "ChannelNewDeposit", channelId, participant: a.address, totalDeposit: depA });
  g.applyEvent({ type: "ChannelNewDeposit", channelId, participant: b.address, totalDeposit: depB });
}

let nonce = 1n;
function publish(
  g: NetworkGraph,
  channelId: bigint,
  from: TestKey,
  to: TestKey,
  s: Partial<Schedule> = {},
): void {
  const u = signChannelUpdate(
    {
      chainId: CHAIN,
      hub: HUB,
      token: TOKEN,
      channelId,
      participant: from.address,
      partner: to.address,
      nonce: nonce++,
      ...DEFAULT_SCHEDULE,
      ...s,
    },
    from,
  );
  expect(g.applyUpdate(u).status).to.equal("applied");
}

const [I, H1, H2, T, A, B] = KEYS as [TestKey, TestKey, TestKey, TestKey, TestKey, TestKey];

/** I -c1- H1 -c2- H2 -c3- T, fee schedules chosen so that every floor division truncates. */
function threeHop(): NetworkGraph {
  const g = new NetworkGraph({ chainId: CHAIN, hub: HUB });
  open(g, 1n, I, H1);
  open(g, 2n, H1, H2);
  open(g, 3n, H2, T);
  // the payer's own schedule is never charged to itself
  publish(g, 1n, I, H1, { feeFlat: 999n, feePpm: 999_999, expiryDeltaSeconds: 99_999 });
  publish(g, 2n, H1, H2, { feeFlat: 50_000_000_000n, feePpm: 1000, expiryDeltaSeconds: 900 });
  publish(g, 3n, H2, T, { feeFlat: 1000n, feePpm: 2500, expiryDeltaSeconds: 600 });
  return g;
}

const AMOUNT = 1_234_567_890_123_456_789n;
// Hand-computed:
// H2 on c3: 1000 + floor(1_234_567_890_123_456_789 * 2500 / 1e6) = 1000 + 3_086_419_725_308_641
// H1 on c2: 50_000_000_000 + floor(1_237_654_309_848_766_430 * 1000 / 1e6) = 5e10 + 1_237_654_309_848_766
const EXPECTED_HOPS = [
  {
    address: H1.address,
    channelId: 1n,
    lockAmount: 1_238_892_014_158_615_196n,
    expiration: NOW + 3600n + 600n + 900n,
    fee: 1_237_704_309_848_766n,
  },
  {
    address: H2.address,
    channelId: 2n,
    lockAmount: 1_237_654_309_848_766_430n,
    expiration: NOW + 3600n + 600n,
    fee: 3_086_419_725_309_641n,
  },
  { address: T.address, channelId: 3n, lockAmount: AMOUNT, expiration: NOW + 3600n, fee: 0n },
];

describe("router: buildRoute", () => {
  it("computes fees and expirations to the wei on a 3-hop route", () => {
    const g = threeHop();
    const hops = buildRoute({
      path: [
        { channelId: 1n, from: I.address, to: H1.address },
        { channelId: 2n, from: H1.address, to: H2.address },
        { channelId: 3n, from: H2.address, to: T.address },
      ],
      amount: AMOUNT,
      finalExpiryDeltaSeconds: 3600,
      nowSeconds: NOW,
      policy: (c, f) => g.policy(c, f),
    });
    expect(hops).to.deep.equal(EXPECTED_HOPS);
    expect(hops[0]!.lockAmount - AMOUNT).to.equal(4_324_124_035_158_407n);
    expect(forwardingFee({ feeFlat: 1000n, feePpm: 2500 }, AMOUNT)).to.equal(3_086_419_725_309_641n);
  });

  it("refuses broken paths, unusable directions and exceeded limits", () => {
    const g = threeHop();
    const policy = (c: bigint, f: string) => g.policy(c, f);
    const base = { amount: 1000n, finalExpiryDeltaSeconds: 10, nowSeconds: 0, policy };
    const e1 = { channelId: 1n, from: I.address, to: H1.address };
    const e2 = { channelId: 2n, from: H1.address, to: H2.address };
    const back = { channelId: 1n, from: H1.address, to: I.address };
    expectCode(() => buildRoute({ ...base, path: [] }), "INVALID_ARGUMENT");
    expectCode(() => buildRoute({ ...base, path: [e2, e1] }), "INVALID_ARGUMENT");
    expectCode(() => buildRoute({ ...base, path: [e1, back] }), "INVALID_ARGUMENT"); // loop
    expectCode(() => buildRoute({ ...base, path: [back] }), "INVALID_ARGUMENT"); // H1 published nothing on c1
    expectCode(() => buildRoute({ ...base, amount: BIG, path: [e1, e2] }), "INSUFFICIENT_CAPACITY");
    publish(g, 2n, H1, H2, { htlcMinimum: 2000n });
    expect(
      expectCode(() => buildRoute({ ...base, path: [e1, e2] }), "INVALID_ARGUMENT").details.hop,
    ).to.equal(1);
    expectCode(() => buildRoute({ ...base, amount: 0n, path: [e1] }), "INVALID_ARGUMENT");
    expectCode(() => buildRoute({ ...base, nowSeconds: -1, path: [e1] }), "INVALID_ARGUMENT");
  });
});

describe("router: findPaymentRoutes", () => {
  it("finds the hand-computed 3-hop route for a wei-scale amount", () => {
    const g = threeHop();
    atLeast(AMOUNT, BigInt(Number.MAX_SAFE_INTEGER) + 1n, "amount beyond 2^53");
    const routes = findPaymentRoutes({
      graph: g,
      token: TOKEN,
      source: I.address,
      target: T.address,
      amount: AMOUNT,
      finalExpiryDeltaSeconds: 3600,
      nowSeconds: NOW,
      k: 3,
    });
    expect(routes.length).to.equal(1);
    expect(routes[0]!.hops).to.deep.equal(EXPECTED_HOPS);
    expect(routes[0]!.totalFee).to.equal(4_324_124_035_158_407n);
    expect(routes[0]!.totalAmount).to.equal(EXPECTED_HOPS[0]!.lockAmount);
    expect(routes[0]!.expiration).to.equal(NOW + 5100n);
    const q = { graph: g, token: TOKEN, source: I.address, target: T.address, finalExpiryDeltaSeconds: 3600 };
    // 10^24 + change: far beyond 2^53 and still exact
    const huge = findPaymentRoutes({ ...q, amount: BIG / 2n + 7n, nowSeconds: NOW, k: 1 });
    expect(huge[0]!.hops[2]!.lockAmount).to.equal(BIG / 2n + 7n);
    expect(huge[0]!.hops[1]!.fee).to.equal(1000n + ((BIG / 2n + 7n) * 2500n) / 1_000_000n);
    expect(findPaymentRoutes({ ...q, amount: BIG, nowSeconds: NOW, k: 1 })).to.deep.equal([]);
    expect(
      findPaymentRoutes({ ...q, amount: 1n, nowSeconds: NOW, k: 1, maxExpiryDeltaSeconds: 5000 }),
    ).to.deep.equal([]);
  });

  it("drops routes over maxFee and sorts by cost", () => {
    // I -A- T costs 10 + 0.1%; I -B- T costs 1000 + 1%
    const g = new NetworkGraph({ chainId: CHAIN, hub: HUB });
    open(g, 1n, I, A);
    open(g, 2n, A, T);
    open(g, 3n, I, B);
    open(g, 4n, B, T);
    publish(g, 1n, I, A);
    publish(g, 3n, I, B);
    publish(g, 2n, A, T, { feeFlat: 10n, feePpm: 1000 });
    publish(g, 4n, B, T, { feeFlat: 1000n, feePpm: 10_000 });
    const q = {
      graph: g,
      token: TOKEN,
      source: I.address,
      target: T.address,
      amount: 100_000n,
      finalExpiryDeltaSeconds: 60,
      nowSeconds: NOW,
      k: 5,
    };
    const all = findPaymentRoutes(q);
    expect(all.map((r) => r.totalFee)).to.deep.equal([110n, 2000n]);
    expect(all[0]!.cost).to.be.lessThan(all[1]!.cost);
    expect(findPaymentRoutes({ ...q, maxFee: 1999n }).map((r) => r.totalFee)).to.deep.equal([110n]);
    expect(findPaymentRoutes({ ...q, maxFee: 2000n }).length).to.equal(2);
    expect(findPaymentRoutes({ ...q, maxFee: 109n })).to.deep.equal([]);
    expect(findPaymentRoutes({ ...q, excludeChannels: [2n] }).map((r) => r.totalFee)).to.deep.equal([2000n]);
    expect(findPaymentRoutes({ ...q, k: 1 }).length).to.equal(1);
    expectCode(() => findPaymentRoutes({ ...q, k: 0 }), "INVALID_ARGUMENT");
    expectCode(() => findPaymentRoutes({ ...q, target: I.address }), "INVALID_ARGUMENT");
  });

  it("uses the payer's exact local balances for its own channels", () => {
    const g = new NetworkGraph({ chainId: CHAIN, hub: HUB });
    open(g, 1n, I, H1);
    open(g, 2n, H1, T);
    publish(g, 2n, H1, T, { feeFlat: 5n });
    // I published nothing for channel 1: only its local balance makes it usable
    const q = {
      graph: g,
      token: TOKEN,
      source: I.address,
      target: T.address,
      amount: 10n ** 18n,
      finalExpiryDeltaSeconds: 60,
      nowSeconds: NOW,
      k: 1,
    };
    expect(findPaymentRoutes(q)).to.deep.equal([]);
    const ok = findPaymentRoutes({ ...q, localBalances: new Map([[1n, 10n ** 18n + 5n]]) });
    expect(ok.map((r) => r.totalAmount)).to.deep.equal([10n ** 18n + 5n]);
    expect(findPaymentRoutes({ ...q, localBalances: new Map([[1n, 10n ** 18n + 4n]]) })).to.deep.equal([]);
    // a published hint of the payer is replaced by its local balance, both ways
    publish(g, 1n, I, H1, { capacityHint: 1n });
    expect(findPaymentRoutes(q)).to.deep.equal([]);
    expect(findPaymentRoutes({ ...q, localBalances: new Map([[1n, 2n * 10n ** 18n]]) }).length).to.equal(1);
  });
});

describe("router: splitPayment", () => {
  it("splits over channel-disjoint routes when no single route carries the amount", () => {
    // two parallel paths I-A-T and I-B-T, each carrying at most 600
    const g = new NetworkGraph({ chainId: CHAIN, hub: HUB });
    open(g, 1n, I, A);
    open(g, 2n, A, T);
    open(g, 3n, I, B);
    open(g, 4n, B, T);
    publish(g, 1n, I, A);
    publish(g, 3n, I, B);
    publish(g, 2n, A, T, { feeFlat: 1n, capacityHint: 600n });
    publish(g, 4n, B, T, { feeFlat: 2n, capacityHint: 600n });
    const q = {
      graph: g,
      token: TOKEN,
      source: I.address,
      target: T.address,
      amount: 1000n,
      finalExpiryDeltaSeconds: 60,
      nowSeconds: NOW,
    };
    expect(findPaymentRoutes({ ...q, k: 4 })).to.deep.equal([]);
    const split = splitPayment(q)!;
    // the cheaper path (via A) is saturated first
    expect(split.parts.map((r) => r.hops.at(-1)!.lockAmount)).to.deep.equal([600n, 400n]);
    expect(split.parts.map((r) => r.hops[0]!.address)).to.deep.equal([A.address, B.address]);
    expect(new Set(split.parts.flatMap((r) => r.hops.map((h) => h.channelId))).size).to.equal(4);
    expect(split.totalFee).to.equal(3n);
    expect(split.totalAmount).to.equal(1003n);
    expect(splitPayment({ ...q, maxFee: 2n })).to.equal(null);
    expect(splitPayment({ ...q, maxParts: 1 })).to.equal(null);
    expect(splitPayment({ ...q, amount: 1300n })).to.equal(null);
    expect(splitPayment({ ...q, amount: 600n })!.parts.length).to.equal(1);
  });
});

// ---------------------------------------------------------------------------------------------------------
// properties

interface Direction {
  channelId: bigint;
  from: string;
  to: string;
}

const arbCase = fc
  .record({
    nodes: fc.integer({ min: 2, max: 5 }),
    scale: fc.oneof(
      fc.constant(1000n),
      fc.constant(10n ** 18n),
      fc.bigInt({ min: 10n ** 15n, max: 10n ** 24n }),
      fc.bigInt({ min: 1n, max: 10n ** 9n }),
    ),
    amountPct: fc.integer({ min: 1, max: 1_000_000 }),
    channels: fc.array(
      fc.record({
        a: fc.nat(4),
        b: fc.nat(4),
        depA: fc.integer({ min: 0, max: 3_000_000 }),
        depB: fc.integer({ min: 0, max: 3_000_000 }),
        dirs: fc.tuple(
          ...[0, 1].map(() =>
            fc.option(
              fc.record({
                feeFlat: fc.integer({ min: 0, max: 20_000 }),
                feePpm: fc.integer({ min: 0, max: 200_000 }),
                expiryDeltaSeconds: fc.integer({ min: 0, max: 5000 }),
                htlcMinimum: fc.integer({ min: 0, max: 600_000 }),
                htlcSpan: fc.option(fc.integer({ min: 0, max: 3_000_000 })),
                capacityHint: fc.integer({ min: 0, max: 3_000_000 }),
                disabled: fc.integer({ min: 0, max: 9 }).map((v) => v === 0),
              }),
              { freq: 4 },
            ),
          ),
        ),
      }),
      { maxLength: 7 },
    ),
    src: fc.nat(4),
    dst: fc.nat(4),
    local: fc.option(fc.array(fc.integer({ min: 0, max: 3_000_000 }), { minLength: 7, maxLength: 7 })),
    maxFeePct: fc.option(fc.integer({ min: 0, max: 400_000 })),
    final: fc.integer({ min: 0, max: 10_000 }),
  })
  .filter((x) => x.src % x.nodes !== x.dst % x.nodes);

type Case = typeof arbCase extends fc.Arbitrary<infer C> ? C : never;

const arbPolicy = fc.record({
  feeFlat: fc.integer({ min: 0, max: 2000 }),
  feePpm: fc.integer({ min: 0, max: 20_000 }),
  expiryDeltaSeconds: fc.integer({ min: 0, max: 5000 }),
  htlcMinimum: fc.integer({ min: 0, max: 1000 }),
  htlcSpan: fc.option(fc.integer({ min: 100_000, max: 3_000_000 })),
  capacityHint: fc.integer({ min: 200_000, max: 1_500_000 }),
  disabled: fc.constant(false),
});

/** Source 0 and target 1 joined by 2..4 parallel two-hop paths (0 - m - 1): where splitting pays off. */
const arbParallelCase: fc.Arbitrary<Case> = fc
  .record({
    scale: fc.oneof(fc.constant(1000n), fc.constant(10n ** 18n)),
    amountPct: fc.integer({ min: 100_000, max: 2_200_000 }),
    paths: fc.array(fc.tuple(arbPolicy, arbPolicy), { minLength: 2, maxLength: 4 }),
    local: fc.option(fc.array(fc.integer({ min: 200_000, max: 1_500_000 }), { minLength: 8, maxLength: 8 })),
    maxFeePct: fc.option(fc.integer({ min: 20_000, max: 300_000 })),
    final: fc.integer({ min: 0, max: 10_000 }),
  })
  .map((p) => ({
    nodes: 6,
    scale: p.scale,
    amountPct: p.amountPct,
    channels: p.paths.flatMap(([first, second], i) => [
      { a: 0, b: i + 2, depA: 3_000_000, depB: 0, dirs: [first, null] as const },
      { a: i + 2, b: 1, depA: 3_000_000, depB: 0, dirs: [second, null] as const },
    ]) as unknown as Case["channels"],
    src: 0,
    dst: 1,
    local: p.local,
    maxFeePct: p.maxFeePct,
    final: p.final,
  }));

/** All amounts of a case are `value * scale / 1000` base units (wei-scale, beyond 2^53, for large scales). */
function buildCase(x: Case) {
  const amt = (v: number): bigint => (BigInt(v) * x.scale) / 1000n;
  const g = new NetworkGraph({ chainId: CHAIN, hub: HUB });
  const dirs: Direction[] = [];
  const local = new Map<bigint, bigint>();
  const source = KEYS[x.src % x.nodes]!;
  const target = KEYS[x.dst % x.nodes]!;
  x.channels.forEach((c, i) => {
    const a = KEYS[c.a % x.nodes]!;
    const b = KEYS[c.b % x.nodes]!;
    if (a === b) return;
    const id = BigInt(i + 1);
    open(g, id, a, b, amt(c.depA), amt(c.depB));
    [
      [a, b],
      [b, a],
    ].forEach(([from, to], d) => {
      dirs.push({ channelId: id, from: from!.address, to: to!.address });
      const s = c.dirs[d];
      if (s) {
        const htlcMinimum = amt(s.htlcMinimum);
        publish(g, id, from!, to!, {
          feeFlat: amt(s.feeFlat),
          feePpm: s.feePpm,
          expiryDeltaSeconds: s.expiryDeltaSeconds,
          htlcMinimum,
          htlcMaximum: s.htlcSpan === null ? BIG * BIG : htlcMinimum + amt(s.htlcSpan),
          capacityHint: amt(s.capacityHint),
          disabled: s.disabled,
        });
      }
      if (x.local && from === source) local.set(id, amt(x.local[i]!));
    });
  });
  const amount = amt(x.amountPct) > 0n ? amt(x.amountPct) : 1n;
  return {
    g,
    dirs,
    source: source.address,
    target: target.address,
    amount,
    local: x.local ? local : undefined,
    maxFee: x.maxFeePct === null ? undefined : (amount * BigInt(x.maxFeePct)) / 1_000_000n,
  };
}

type Built = ReturnType<typeof buildCase>;

/** Limits of the sending direction, computed here from the graph's raw data (not through its policy()). */
function limitsOf(c: Built, channelId: bigint, from: string) {
  const ch = c.g.channel(channelId)!;
  if (c.local && from === c.source && c.local.has(channelId)) {
    return { capacity: c.local.get(channelId)!, min: 0n, max: c.local.get(channelId)! };
  }
  const u = c.g.latestUpdate(channelId, from);
  if (!u || u.disabled) return undefined;
  const held =
    ch.participant1Deposit + ch.participant2Deposit - ch.participant1Withdraw - ch.participant2Withdraw;
  return {
    capacity: u.capacityHint < held ? u.capacityHint : held,
    min: u.htlcMinimum,
    max: u.htlcMaximum,
  };
}

/** The exact route of a path computed independently, or null if it violates a limit. */
function exactRoute(c: Built, path: Direction[], final: number) {
  let lock = c.amount;
  let fees = 0n;
  for (let i = path.length - 1; i >= 0; i--) {
    const lim = limitsOf(c, path[i]!.channelId, path[i]!.from);
    if (!lim || lock > lim.capacity || lock < lim.min || lock > lim.max) return null;
    if (i > 0) {
      const u = c.g.latestUpdate(path[i]!.channelId, path[i]!.from)!;
      if (!u) return null;
      const fee = u.feeFlat + (lock * BigInt(u.feePpm)) / 1_000_000n;
      fees += fee;
      lock += fee;
    }
  }
  void final;
  return { fees };
}

function anyFeasible(c: Built, final: number): boolean {
  const visit = (node: string, seen: Set<string>, path: Direction[]): boolean => {
    if (node === c.target) {
      const r = exactRoute(c, path, final);
      return r !== null && (c.maxFee === undefined || r.fees <= c.maxFee);
    }
    for (const d of c.dirs) {
      if (d.from !== node || seen.has(d.to)) continue;
      seen.add(d.to);
      path.push(d);
      const ok = visit(d.to, seen, path);
      path.pop();
      seen.delete(d.to);
      if (ok) return true;
    }
    return false;
  };
  return visit(c.source, new Set([c.source]), []);
}

function checkRoute(c: Built, r: PaymentRoute, final: number): void {
  const n = r.hops.length;
  expect(n).to.be.greaterThan(0);
  let sender = c.source;
  const seen = new Set([c.source]);
  let feeSum = 0n;
  for (let i = 0; i < n; i++) {
    const h = r.hops[i]!;
    const ch = c.g.channel(h.channelId)!;
    expect(ch, `hop ${i} channel`).to.not.equal(undefined);
    expect([ch.participant1, ch.participant2]).to.include(sender);
    expect([ch.participant1, ch.participant2]).to.include(h.address);
    expect([...seen], `hop ${i} revisits a node`).to.not.include(h.address);
    seen.add(h.address);
    const lim = limitsOf(c, h.channelId, sender)!;
    expect(lim, `hop ${i} usable`).to.not.equal(undefined);
    atMost(h.lockAmount, lim.capacity, `hop ${i} capacity`);
    atLeast(h.lockAmount, lim.min, `hop ${i} htlcMinimum`);
    atMost(h.lockAmount, lim.max, `hop ${i} htlcMaximum`);
    if (i < n - 1) {
      const next = r.hops[i + 1]!;
      const u = c.g.latestUpdate(next.channelId, h.address)!;
      expect(h.fee).to.equal(u.feeFlat + (next.lockAmount * BigInt(u.feePpm)) / 1_000_000n);
      expect(h.lockAmount).to.equal(next.lockAmount + h.fee);
      expect(h.expiration).to.equal(next.expiration + BigInt(u.expiryDeltaSeconds));
    } else {
      expect(h.address).to.equal(c.target);
      expect(h.lockAmount).to.equal(c.amount);
      expect(h.fee).to.equal(0n);
      expect(h.expiration).to.equal(NOW + BigInt(final));
    }
    feeSum += h.fee;
    sender = h.address;
  }
  expect(r.totalFee).to.equal(feeSum);
  expect(r.totalAmount).to.equal(r.hops[0]!.lockAmount);
  expect(r.totalAmount - c.amount).to.equal(r.totalFee);
  expect(r.expiration).to.equal(r.hops[0]!.expiration);
  if (c.maxFee !== undefined) atMost(r.totalFee, c.maxFee, "maxFee");
}

describe("router: findPaymentRoutes properties", () => {
  it("property: routes respect capacities, htlc bounds, maxFee and the per-hop fee schedules", () => {
    let withRoutes = 0;
    let withWeiRoutes = 0;
    fc.assert(
      fc.property(arbCase, (x) => {
        const c = buildCase(x);
        const routes = findPaymentRoutes({
          graph: c.g,
          token: TOKEN,
          source: c.source,
          target: c.target,
          amount: c.amount,
          ...(c.maxFee === undefined ? {} : { maxFee: c.maxFee }),
          ...(c.local ? { localBalances: c.local } : {}),
          finalExpiryDeltaSeconds: x.final,
          nowSeconds: NOW,
          k: 3,
        });
        expect(routes.length).to.be.at.most(3);
        const keys = new Set<string>();
        for (const r of routes) {
          checkRoute(c, r, x.final);
          keys.add(r.hops.map((h) => `${h.channelId}>${h.address}`).join(","));
        }
        expect(keys.size).to.equal(routes.length);
        for (let i = 1; i < routes.length; i++) expect(routes[i - 1]!.cost).to.be.at.most(routes[i]!.cost);
        if (!anyFeasible(c, x.final)) expect(routes).to.deep.equal([]);
        if (routes.length > 0) withRoutes++;
        if (routes.length > 0 && c.amount > BigInt(Number.MAX_SAFE_INTEGER)) withWeiRoutes++;
      }),
      { numRuns: 200, seed: 11 },
    );
    // the generator must exercise the interesting case often enough
    expect(withRoutes).to.be.greaterThan(20);
    expect(withWeiRoutes).to.be.greaterThan(5);
  });

  it("property: splitPayment parts are valid, channel-disjoint, sum to the amount and respect maxFee", () => {
    let splits = 0;
    fc.assert(
      fc.property(fc.oneof(arbCase, arbParallelCase), (x) => {
        const c = buildCase(x);
        const params = {
          graph: c.g,
          token: TOKEN,
          source: c.source,
          target: c.target,
          amount: c.amount,
          ...(c.maxFee === undefined ? {} : { maxFee: c.maxFee }),
          ...(c.local ? { localBalances: c.local } : {}),
          finalExpiryDeltaSeconds: x.final,
          nowSeconds: NOW,
        };
        const split = splitPayment({ ...params, maxParts: 3 });
        const single = findPaymentRoutes({ ...params, k: 1 });
        if (single.length > 0) expect(split?.parts.length).to.equal(1);
        if (!split) return;
        expect(split.parts.length).to.be.within(1, 3);
        const channels = split.parts.flatMap((r) => r.hops.map((h) => h.channelId));
        expect(new Set(channels).size).to.equal(channels.length);
        let delivered = 0n;
        for (const r of split.parts) {
          const part = r.hops.at(-1)!.lockAmount;
          // each part is checked as a payment of its own amount, with the whole fee budget
          checkRoute({ ...c, amount: part }, r, x.final);
          delivered += part;
        }
        expect(delivered).to.equal(c.amount);
        expect(split.totalFee).to.equal(split.parts.reduce((s, r) => s + r.totalFee, 0n));
        if (c.maxFee !== undefined) atMost(split.totalFee, c.maxFee, "maxFee of all parts");
        if (split.parts.length > 1) splits++;
      }),
      { numRuns: 200, seed: 5 },
    );
    expect(splits).to.be.greaterThan(10);
  });
});
