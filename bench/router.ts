/**
 * Router benchmark on the real LN graph (CLN listchannels snapshot of 2021-04-16), amounts in msat.
 * 1) load + import time, node/edge counts; 2) 10,000 queries (fixed seed, amounts log-uniform in
 * [1,000, 10,000,000] msat): latency p50/p99, queries/s, heap, share found; 3) simulated payments over
 * hidden balances (uniform random split of each channel) with scorer learning and up to 10 attempts.
 * Sections 2 and 3 run twice with two ways of picking (source, target):
 * - "uniform": both uniformly among all nodes (the old figure; many nodes have no enabled channel in the
 *   needed direction, so those pairs are unroutable by construction);
 * - "active": sources among nodes with at least one enabled outgoing edge, targets among nodes with at
 *   least one enabled incoming edge.
 * Writes bench/results/router.json. The graph is `../shared/data/ln-graph-2021-04-16.listchannels.json.gz`
 * beside the repository (resolved from this file's location), or the file named by `LN_GRAPH`.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";
import { ChannelGraph, Scorer, findRoute, importClnListChannels } from "../router/index.js";
import type { Path } from "../router/index.js";

const GRAPH_FILE = "ln-graph-2021-04-16.listchannels.json.gz";
/** The repository's root: this file is `<root>/bench/router.ts`. */
const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const FILE = process.env.LN_GRAPH ?? resolve(REPO_ROOT, "..", "shared", "data", GRAPH_FILE);
const QUERIES = Number(process.env.QUERIES ?? 10_000);
const PAYMENTS = Number(process.env.PAYMENTS ?? 1000);
const MAX_ATTEMPTS = 10;
const MIN_AMOUNT = 1_000;
const MAX_AMOUNT = 10_000_000;
const SEED = 20210416;

/** mulberry32: small deterministic PRNG. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const logUniform = (rand: () => number): bigint =>
  BigInt(Math.round(Math.exp(Math.log(MIN_AMOUNT) + rand() * (Math.log(MAX_AMOUNT) - Math.log(MIN_AMOUNT)))));

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;
}

type Sampling = "uniform" | "active";

/** Picks a (source, target) pair with source !== target. */
function pairPicker(sources: string[], targets: string[]): (rand: () => number) => [string, string] {
  return (rand) => {
    for (;;) {
      const s = sources[Math.floor(rand() * sources.length)]!;
      const t = targets[Math.floor(rand() * targets.length)]!;
      if (s !== t) return [s, t];
    }
  };
}

const loadAtStart = +loadavg()[0]!.toFixed(2);
const t0 = performance.now();
const json: unknown = JSON.parse(gunzipSync(readFileSync(FILE)).toString("utf8"));
const tParse = performance.now();
const imp = importClnListChannels(json, new ChannelGraph());
const tLoad = performance.now();
const graph = imp.graph;
const nodes = graph.nodes();
const withOut = nodes.filter((n) => graph.edgesFrom(n).some((e) => !e.disabled));
const withIn = nodes.filter((n) => graph.edgesTo(n).some((e) => !e.disabled));
const load = {
  file: FILE,
  parseMs: Math.round(tParse - t0),
  importMs: Math.round(tLoad - tParse),
  nodes: graph.nodeCount,
  channels: graph.channelCount,
  directedEdges: graph.edgeCount,
  skipped: imp.skipped,
  nodesWithEnabledOutgoing: withOut.length,
  nodesWithEnabledIncoming: withIn.length,
};
console.log("Load");
console.table([load]);

const pickers: Record<Sampling, (rand: () => number) => [string, string]> = {
  uniform: pairPicker(nodes, nodes),
  active: pairPicker(withOut, withIn),
};

// 2) queries
function runQueries(sampling: Sampling) {
  const rand = rng(SEED);
  const pick = pickers[sampling];
  const lat: number[] = [];
  let found = 0;
  const tq = performance.now();
  for (let i = 0; i < QUERIES; i++) {
    const [s, t] = pick(rand);
    const amount = logUniform(rand);
    const a = performance.now();
    const r = findRoute(graph, { source: s, target: t, amount });
    lat.push(performance.now() - a);
    if (r) found++;
  }
  const qElapsed = performance.now() - tq;
  lat.sort((x, y) => x - y);
  return {
    sampling,
    queries: QUERIES,
    p50Ms: +pct(lat, 0.5).toFixed(2),
    p99Ms: +pct(lat, 0.99).toFixed(2),
    maxMs: +(lat.at(-1) ?? 0).toFixed(2),
    queriesPerSec: Math.round(QUERIES / (qElapsed / 1000)),
    heapUsedMB: Math.round(process.memoryUsage().heapUsed / 2 ** 20),
    shareFound: +(found / QUERIES).toFixed(4),
  };
}

console.log(`Queries: ${QUERIES}, amounts log-uniform in [${MIN_AMOUNT}, ${MAX_AMOUNT}] msat, seed ${SEED}`);
const queries = (["uniform", "active"] as const).map((s) => {
  const r = runQueries(s);
  console.log(`  ${s}: done`);
  return r;
});
console.table(queries);

// 3) simulated payments over hidden balances (the same hidden balances for both samplings)
function hiddenBalances(): Map<string, number> {
  const rand = rng(SEED + 1);
  const balance = new Map<string, number>(); // `${channelId}|${source}` -> liquidity source can send
  for (const e of graph.edges()) {
    const k = `${e.channelId}|${e.source}`;
    if (balance.has(k)) continue;
    const cap = Number(e.capacity);
    const mine = Math.floor(rand() * (cap + 1));
    balance.set(k, mine);
    balance.set(`${e.channelId}|${e.target}`, cap - mine);
  }
  return balance;
}

function runPayments(sampling: Sampling) {
  const rand = rng(SEED + 2);
  const pick = pickers[sampling];
  const balance = hiddenBalances();
  const scorer = new Scorer();
  let ok = 0;
  let attemptsSum = 0;
  let noRoute = 0;
  let feeSum = 0n;
  const tp = performance.now();
  for (let i = 0; i < PAYMENTS; i++) {
    const [s, t] = pick(rand);
    const amount = logUniform(rand);
    let attempts = 0;
    let paid = false;
    while (attempts < MAX_ATTEMPTS) {
      const r: Path | null = findRoute(graph, { source: s, target: t, amount, scorer });
      if (!r) {
        if (attempts === 0) noRoute++;
        break;
      }
      attempts++;
      const failed = r.hops.find(
        (h) => (balance.get(`${h.channelId}|${h.from}`) ?? 0) < Number(h.amountToForward),
      );
      if (failed) {
        for (const h of r.hops) {
          if (h === failed) break;
          scorer.recordSuccess(h.channelId, h.amountToForward, h.from);
        }
        scorer.recordFailure(failed.channelId, failed.amountToForward, failed.from);
        continue;
      }
      for (const h of r.hops) {
        const amt = Number(h.amountToForward);
        balance.set(`${h.channelId}|${h.from}`, balance.get(`${h.channelId}|${h.from}`)! - amt);
        balance.set(`${h.channelId}|${h.to}`, (balance.get(`${h.channelId}|${h.to}`) ?? 0) + amt);
      }
      paid = true;
      feeSum += r.totalFee;
      break;
    }
    attemptsSum += attempts;
    if (paid) ok++;
  }
  return {
    sampling,
    payments: PAYMENTS,
    maxAttempts: MAX_ATTEMPTS,
    successRate: +(ok / PAYMENTS).toFixed(4),
    noRouteAtAll: noRoute,
    meanAttempts: +(attemptsSum / PAYMENTS).toFixed(2),
    meanFeeMsatOfSuccesses: ok ? Number(feeSum / BigInt(ok)) : 0,
    scorerEntries: scorer.size,
    elapsedS: +((performance.now() - tp) / 1000).toFixed(1),
  };
}

console.log("Simulated payments (hidden balances: uniform random split of each channel's capacity)");
const payments = (["uniform", "active"] as const).map((s) => runPayments(s));
console.table(payments);

mkdirSync("bench/results", { recursive: true });
writeFileSync(
  "bench/results/router.json",
  JSON.stringify(
    {
      date: new Date().toISOString(),
      node: process.version,
      machine: {
        cpus: cpus().length,
        loadavg1mAtStart: loadAtStart,
        loadavg1mAtEnd: +loadavg()[0]!.toFixed(2),
      },
      amountsMsat: [MIN_AMOUNT, MAX_AMOUNT],
      seed: SEED,
      sampling: {
        uniform: "source and target uniformly among all nodes (the earlier figure)",
        active:
          "source among nodes with >= 1 enabled outgoing edge, target among nodes with >= 1 enabled incoming edge",
      },
      load,
      queries,
      payments,
    },
    null,
    2,
  ),
);
console.log("wrote bench/results/router.json");
