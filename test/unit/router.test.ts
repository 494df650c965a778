import { expect } from "chai";
import fc from "fast-check";
import {
  ChannelGraph,
  Scorer,
  SECONDS_PER_BLOCK,
  findRoute,
  findRoutes,
  importClnListChannels,
  importLndDescribeGraph,
} from "../../router/index.js";
import type { ChannelEdge, Path } from "../../router/index.js";

function edge(channelId: string, source: string, target: string, o: Partial<ChannelEdge> = {}): ChannelEdge {
  return {
    channelId,
    source,
    target,
    capacity: 1_000_000n,
    feeBaseAmount: 1n,
    feePpm: 100,
    lockTimeoutSeconds: 600,
    disabled: false,
    htlcMinimum: 1n,
    htlcMaximum: null,
    ...o,
  };
}

/** chai compares bigints (its typings only say number). */
const atMost = (actual: bigint, limit: bigint, what: string): unknown =>
  expect(actual, what).to.be.at.most(limit as unknown as number);

function fee(e: ChannelEdge, amount: bigint): bigint {
  return e.feeBaseAmount + (amount * BigInt(e.feePpm)) / 1_000_000n;
}

/** Checks a route against the graph: every hop exists, bounds hold, fees and locks add up. */
function checkRoute(g: ChannelGraph, r: Path, source: string, target: string, amount: bigint): void {
  expect(r.hops.length).to.be.greaterThan(0);
  expect(r.hops[0]!.from).to.equal(source);
  expect(r.hops.at(-1)!.to).to.equal(target);
  expect(r.hops.at(-1)!.amountToForward).to.equal(amount);
  expect(r.hops[0]!.fee).to.equal(0n);
  let sum = 0n;
  const visited = new Set<string>([source]);
  r.hops.forEach((h, i) => {
    const e = g.getEdge(h.channelId, h.from);
    expect(e, `hop ${i}`).to.not.equal(undefined);
    expect(e!.target).to.equal(h.to);
    expect(e!.disabled).to.equal(false);
    atMost(h.amountToForward, e!.capacity, `hop ${i} capacity`);
    atMost(e!.htlcMinimum, h.amountToForward, `hop ${i} htlcMinimum`);
    if (e!.htlcMaximum !== null) atMost(h.amountToForward, e!.htlcMaximum, `hop ${i} htlcMaximum`);
    if (i > 0) {
      expect(h.from).to.equal(r.hops[i - 1]!.to);
      expect(h.fee).to.equal(fee(e!, h.amountToForward));
      expect(r.hops[i - 1]!.amountToForward).to.equal(h.amountToForward + h.fee);
      expect(r.hops[i - 1]!.lockTimeoutSeconds).to.equal(h.lockTimeoutSeconds + e!.lockTimeoutSeconds);
    }
    expect([...visited], `hop ${i} revisits a node`).to.not.include(h.to);
    visited.add(h.to);
    sum += h.fee;
  });
  expect(r.totalFee).to.equal(sum);
  expect(r.totalAmount).to.equal(amount + sum);
  expect(r.totalLockTimeoutSeconds).to.equal(r.hops[0]!.lockTimeoutSeconds);
}

/** Minimum total fee over all simple paths (brute force), or null. */
function bruteForceMinFee(g: ChannelGraph, source: string, target: string, amount: bigint): bigint | null {
  let best: bigint | null = null;
  const path: ChannelEdge[] = [];
  const visit = (node: string, seen: Set<string>): void => {
    if (node === source) {
      // path is target-first reversed: path[0] is the last hop
      let carry = amount;
      let total = 0n;
      for (let i = 0; i < path.length; i++) {
        const e = path[i]!;
        if (e.disabled || carry > e.capacity || carry < e.htlcMinimum) return;
        if (e.htlcMaximum !== null && carry > e.htlcMaximum) return;
        if (i < path.length - 1) {
          const f = fee(e, carry);
          total += f;
          carry += f;
        }
      }
      if (best === null || total < best) best = total;
      return;
    }
    for (const e of g.edgesTo(node)) {
      if (seen.has(e.source)) continue;
      seen.add(e.source);
      path.push(e);
      visit(e.source, seen);
      path.pop();
      seen.delete(e.source);
    }
  };
  visit(target, new Set([target]));
  return best;
}

const arbGraph = fc
  .record({
    nodes: fc.integer({ min: 2, max: 7 }),
    edges: fc.array(
      fc.record({
        s: fc.nat(6),
        t: fc.nat(6),
        capacity: fc.bigInt({ min: 0n, max: 20_000n }),
        feeBaseAmount: fc.bigInt({ min: 0n, max: 50n }),
        feePpm: fc.integer({ min: 0, max: 200_000 }),
        lockTimeoutSeconds: fc.integer({ min: 0, max: 5000 }),
        disabled: fc.integer({ min: 0, max: 9 }).map((v) => v < 2),
        htlcMinimum: fc.bigInt({ min: 0n, max: 3_000n }),
        htlcMaximum: fc.option(fc.bigInt({ min: 0n, max: 20_000n })),
      }),
      { maxLength: 18 },
    ),
    amount: fc.bigInt({ min: 1n, max: 10_000n }),
    src: fc.nat(6),
    dst: fc.nat(6),
  })
  .filter((x) => x.src % x.nodes !== x.dst % x.nodes);

type GraphCase = typeof arbGraph extends fc.Arbitrary<infer T> ? T : never;

function build(x: GraphCase, htlcMinBinding: boolean) {
  const g = new ChannelGraph();
  for (let i = 0; i < x.nodes; i++) g.internNode(`n${i}`);
  x.edges.forEach((e, i) => {
    const s = e.s % x.nodes;
    const t = e.t % x.nodes;
    if (s === t) return;
    g.addEdge(
      edge(`c${i}`, `n${s}`, `n${t}`, {
        capacity: e.capacity,
        feeBaseAmount: e.feeBaseAmount,
        feePpm: e.feePpm,
        lockTimeoutSeconds: e.lockTimeoutSeconds,
        disabled: e.disabled,
        htlcMinimum: htlcMinBinding ? e.htlcMinimum : 0n,
        htlcMaximum: e.htlcMaximum,
      }),
    );
  });
  return { g, source: `n${x.src % x.nodes}`, target: `n${x.dst % x.nodes}` };
}

describe("router: importers", () => {
  it("parses a CLN listchannels sample and skips a malformed record", () => {
    const doc = {
      channels: [
        {
          source: "A",
          destination: "B",
          short_channel_id: "1x1x0",
          satoshis: 50000,
          amount_msat: "50000000msat",
          active: true,
          base_fee_millisatoshi: 1000,
          fee_per_millionth: 10,
          delay: 144,
          htlc_minimum_msat: "1000msat",
          htlc_maximum_msat: "49500000msat",
        },
        {
          source: "B",
          destination: "A",
          short_channel_id: "1x1x0",
          satoshis: 50000,
          active: false,
          base_fee_millisatoshi: 0,
          fee_per_millionth: 1,
          delay: 40,
          htlc_minimum_msat: 1000,
        },
        { source: "B", destination: "C", short_channel_id: "2x1x0", active: "yes" },
      ],
    };
    const r = importClnListChannels(doc);
    expect(r.imported).to.equal(2);
    expect(r.skipped).to.equal(1);
    expect(r.issues[0]).to.contain("channels[2]");
    const ab = r.graph.getEdge("1x1x0", "A")!;
    expect(ab.capacity).to.equal(50_000_000n);
    expect(ab.feeBaseAmount).to.equal(1000n);
    expect(ab.feePpm).to.equal(10);
    expect(ab.lockTimeoutSeconds).to.equal(144 * SECONDS_PER_BLOCK);
    expect(ab.htlcMinimum).to.equal(1000n);
    expect(ab.htlcMaximum).to.equal(49_500_000n);
    const ba = r.graph.getEdge("1x1x0", "B")!;
    expect(ba.disabled).to.equal(true);
    expect(ba.capacity).to.equal(50_000_000n);
    expect(ba.htlcMaximum).to.equal(null);
    expect(() => importClnListChannels({ nope: 1 })).to.throw(/listchannels/);
  });

  it("parses an LND describegraph sample and skips a malformed record", () => {
    const pol = (base: string, rate: string, delta: number) => ({
      time_lock_delta: delta,
      min_htlc: "1000",
      fee_base_msat: base,
      fee_rate_milli_msat: rate,
      disabled: false,
      max_htlc_msat: "990000000",
    });
    const doc = {
      nodes: [],
      edges: [
        {
          channel_id: "123",
          node1_pub: "X",
          node2_pub: "Y",
          capacity: "1000000",
          node1_policy: pol("1000", "1", 40),
          node2_policy: null,
        },
        { channel_id: "124", node1_pub: "Y", node2_pub: "Z", capacity: "-5", node1_policy: pol("0", "0", 1) },
      ],
    };
    const r = importLndDescribeGraph(doc);
    expect(r.imported).to.equal(1);
    expect(r.skipped).to.equal(1);
    expect(r.missingPolicies).to.equal(1);
    const xy = r.graph.getEdge("123", "X")!;
    expect(xy.target).to.equal("Y");
    expect(xy.capacity).to.equal(1_000_000_000n);
    expect(xy.lockTimeoutSeconds).to.equal(40 * 600);
    expect(xy.htlcMaximum).to.equal(990_000_000n);
    expect(r.graph.getEdge("123", "Y")).to.equal(undefined);
  });
});

describe("router: graph", () => {
  it("adds, updates and removes channels", () => {
    const g = new ChannelGraph();
    g.addEdge(edge("c1", "a", "b"));
    g.addEdge(edge("c1", "b", "a"));
    g.addEdge(edge("c1", "a", "b", { feePpm: 5 }));
    expect(g.edgeCount).to.equal(2);
    expect(g.edgesFrom("a")[0]!.feePpm).to.equal(5);
    expect(g.nodes()).to.deep.equal(["a", "b"]);
    expect(g.removeChannel("c1")).to.equal(true);
    expect(g.edgeCount).to.equal(0);
    expect(g.edgesFrom("a")).to.deep.equal([]);
    expect(() => g.addEdge(edge("c2", "a", "a"))).to.throw();
  });
});

describe("router: pathfinding", () => {
  it("accumulates fees backwards on a 3-hop line", () => {
    const g = new ChannelGraph();
    g.addEdge(edge("ab", "a", "b", { feeBaseAmount: 7n, feePpm: 1000 }));
    g.addEdge(edge("bc", "b", "c", { feeBaseAmount: 10n, feePpm: 10_000 }));
    g.addEdge(edge("cd", "c", "d", { feeBaseAmount: 1n, feePpm: 100_000, lockTimeoutSeconds: 1200 }));
    const r = findRoute(g, { source: "a", target: "d", amount: 1000n, finalLockTimeoutSeconds: 60 })!;
    checkRoute(g, r, "a", "d", 1000n);
    // c charges 1 + 100 = 101 on 1000; b charges 10 + 11 = 21 on 1101
    expect(r.hops.map((h) => h.fee)).to.deep.equal([0n, 21n, 101n]);
    expect(r.totalAmount).to.equal(1122n);
    expect(r.totalLockTimeoutSeconds).to.equal(60 + 1200 + 600);
    expect(findRoute(g, { source: "a", target: "d", amount: 1000n, maxFee: 121n })).to.equal(null);
    expect(findRoute(g, { source: "a", target: "d", amount: 1000n, maxLockTimeoutSeconds: 1000 })).to.equal(
      null,
    );
    expect(findRoute(g, { source: "d", target: "a", amount: 1000n })).to.equal(null);
  });

  it("property: returned routes are valid and fee-optimal vs brute force (fee-only cost)", () => {
    fc.assert(
      fc.property(arbGraph, (x) => {
        const { g, source, target } = build(x, false);
        const best = bruteForceMinFee(g, source, target, x.amount);
        const r = findRoute(g, { source, target, amount: x.amount, costModel: "fee" });
        if (best === null) {
          expect(r).to.equal(null);
          return;
        }
        expect(r).to.not.equal(null);
        checkRoute(g, r!, source, target, x.amount);
        expect(r!.totalFee).to.equal(best);
      }),
      { numRuns: 400, seed: 42 },
    );
  });

  it("property: with binding htlc minimums and the full cost, routes are valid; none when none exists", () => {
    fc.assert(
      fc.property(arbGraph, (x) => {
        const { g, source, target } = build(x, true);
        const r = findRoute(g, { source, target, amount: x.amount });
        const best = bruteForceMinFee(g, source, target, x.amount);
        if (r) checkRoute(g, r, source, target, x.amount);
        if (best === null) expect(r).to.equal(null);
        for (const alt of findRoutes(g, { source, target, amount: x.amount }, 3)) {
          checkRoute(g, alt, source, target, x.amount);
        }
      }),
      { numRuns: 300, seed: 7 },
    );
  });

  it("scorer: a recorded failure makes the router avoid the failed channel", () => {
    const g = new ChannelGraph();
    g.addEdge(edge("s-a", "s", "a", { feeBaseAmount: 0n, feePpm: 0 }));
    g.addEdge(edge("a-t", "a", "t", { feeBaseAmount: 0n, feePpm: 0 }));
    g.addEdge(edge("s-b", "s", "b", { feeBaseAmount: 0n, feePpm: 0 }));
    g.addEdge(edge("b-t", "b", "t", { feeBaseAmount: 50n, feePpm: 1000 }));
    const scorer = new Scorer();
    const q = { source: "s", target: "t", amount: 10_000n, scorer };
    expect(findRoute(g, q)!.hops.map((h) => h.channelId)).to.deep.equal(["s-a", "a-t"]);
    scorer.recordFailure("a-t", 10_000n, "a");
    expect(findRoute(g, q)!.hops.map((h) => h.channelId)).to.deep.equal(["s-b", "b-t"]);
    // a smaller amount is still allowed through the failed channel
    expect(scorer.probability("a-t", "a", 5_000, 1_000_000)).to.be.greaterThan(0);
    scorer.recordSuccess("b-t", 20_000n, "b");
    expect(scorer.probability("b-t", "b", 20_000, 1_000_000)).to.equal(1);
  });

  it("findRoutes returns distinct alternatives", () => {
    const g = new ChannelGraph();
    for (const m of ["a", "b", "c"]) {
      g.addEdge(edge(`s-${m}`, "s", m));
      g.addEdge(edge(`${m}-t`, m, "t"));
    }
    const rs = findRoutes(g, { source: "s", target: "t", amount: 1000n }, 3);
    expect(rs.length).to.equal(3);
    expect(new Set(rs.map((r) => r.hops[0]!.to)).size).to.equal(3);
  });
});
