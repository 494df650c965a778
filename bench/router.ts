/**
 * Router benchmark on the real LN graph (CLN listchannels snapshot of 2021-04-16), amounts in msat.
 * 1) load + import time, node/edge counts; 2) 10,000 random queries (fixed seed, amounts log-uniform in
 * [1,000, 10,000,000] msat): latency p50/p99, queries/s, heap, share found; 3) simulated payments over
 * hidden balances (uniform random split of each channel) with scorer learning and up to 10 attempts.
 * Writes bench/results/router.json.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { ChannelGraph, Scorer, findRoute, importClnListChannels } from "../router/index.js";
import type { Path } from "../router/index.js";

const FILE = process.env.LN_GRAPH ?? "/work/shared/data/ln-graph-2021-04-16.listchannels.json.gz";
const QUERIES = Number(process.env.QUERIES ?? 10_000);
const PAYMENTS = Number(process.env.PAYMENTS ?? 1000);
const MAX_ATTEMPTS = 10;
const MIN_AMOUNT = 1_000;
const MAX_AMOUNT = 10_000_000;

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

const rand = rng(20210416);
const logUniform = (): bigint =>
  BigInt(Math.round(Math.exp(Math.log(MIN_AMOUNT) + rand() * (Math.log(MAX_AMOUNT) - Math.log(MIN_AMOUNT)))));

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;
}

const t0 = performance.now();
const json: unknown = JSON.parse(gunzipSync(readFileSync(FILE)).toString("utf8"));
const tParse = performance.now();
const imp = importClnListChannels(json, new ChannelGraph());
const tLoad = performance.now();
const graph = imp.graph;
const nodes = graph.nodes();
const load = {
  file: FILE,
  parseMs: Math.round(tParse - t0),
  importMs: Math.round(tLoad - tParse),
  nodes: graph.nodeCount,
  channels: graph.channelCount,
  directedEdges: graph.edgeCount,
  skipped: imp.skipped,
};
console.log("Load");
console.table([load]);

// 2) random queries
console.log(`Queries: ${QUERIES}, amounts log-uniform in [${MIN_AMOUNT}, ${MAX_AMOUNT}] msat, seed 20210416`);
const lat: number[] = [];
let found = 0;
const tq = performance.now();
for (let i = 0; i < QUERIES; i++) {
  const s = nodes[Math.floor(rand() * nodes.length)]!;
  let t = nodes[Math.floor(rand() * nodes.length)]!;
  if (t === s) t = nodes[(nodes.indexOf(s) + 1) % nodes.length]!;
  const amount = logUniform();
  const a = performance.now();
  const r = findRoute(graph, { source: s, target: t, amount });
  lat.push(performance.now() - a);
  if (r) found++;
  if ((i + 1) % 2000 === 0)
    console.log(`  ${i + 1}/${QUERIES} (${((performance.now() - tq) / 1000).toFixed(1)} s)`);
}
const qElapsed = performance.now() - tq;
lat.sort((x, y) => x - y);
const queries = {
  queries: QUERIES,
  p50Ms: +pct(lat, 0.5).toFixed(2),
  p99Ms: +pct(lat, 0.99).toFixed(2),
  maxMs: +(lat.at(-1) ?? 0).toFixed(2),
  queriesPerSec: Math.round(QUERIES / (qElapsed / 1000)),
  heapUsedMB: Math.round(process.memoryUsage().heapUsed / 2 ** 20),
  shareFound: +(found / QUERIES).toFixed(4),
};
console.table([queries]);

// 3) simulated payments over hidden balances
const balance = new Map<string, number>(); // `${channelId}|${source}` -> liquidity source can send
for (const e of graph.edges()) {
  const k = `${e.channelId}|${e.source}`;
  if (balance.has(k)) continue;
  const cap = Number(e.capacity);
  const mine = Math.floor(rand() * (cap + 1));
  balance.set(k, mine);
  balance.set(`${e.channelId}|${e.target}`, cap - mine);
}
const scorer = new Scorer();
let ok = 0;
let attemptsSum = 0;
let noRoute = 0;
let feeSum = 0n;
const tp = performance.now();
for (let i = 0; i < PAYMENTS; i++) {
  // payers/payees among nodes with channels on both sides to avoid trivially unroutable pairs
  const s = nodes[Math.floor(rand() * nodes.length)]!;
  let t = nodes[Math.floor(rand() * nodes.length)]!;
  if (t === s) t = nodes[(nodes.indexOf(s) + 1) % nodes.length]!;
  const amount = logUniform();
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
const payments = {
  payments: PAYMENTS,
  maxAttempts: MAX_ATTEMPTS,
  successRate: +(ok / PAYMENTS).toFixed(4),
  noRouteAtAll: noRoute,
  meanAttempts: +(attemptsSum / PAYMENTS).toFixed(2),
  meanFeeMsatOfSuccesses: ok ? Number(feeSum / BigInt(ok)) : 0,
  scorerEntries: scorer.size,
  elapsedS: +((performance.now() - tp) / 1000).toFixed(1),
};
console.log("Simulated payments (hidden balances: uniform random split of each channel's capacity)");
console.table([payments]);

mkdirSync("bench/results", { recursive: true });
writeFileSync(
  "bench/results/router.json",
  JSON.stringify(
    { date: new Date().toISOString(), amountsMsat: [MIN_AMOUNT, MAX_AMOUNT], load, queries, payments },
    null,
    2,
  ),
);
console.log("wrote bench/results/router.json");
