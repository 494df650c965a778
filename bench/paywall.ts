/**
 * Paid HTTP requests per second through the x402 paywall, against the unpaid route in the same run
 * (`npm run bench:paywall`).
 *
 * Starts a Hardhat chain and `qrwp node start` processes with `devnet/harness.ts`,
 *
 *   payer ------ direct ------ merchant-node        (100 QTT per side)
 *     \__ mediator (1000 + 100 ppm) __/             (only with --modes ...,routed)
 *
 * and the merchant app `examples/weather-merchant.ts` as a child process backed by the merchant node's API
 * (`GET /weather` priced, `GET /health` free). The client loop runs in this process. Per concurrency level
 * (`--concurrency`, default "1,4,16"), in this order, so that every paid figure has its unpaid baseline
 * measured moments before on the same machine (the routed levels first, then the direct channel is opened
 * and the direct levels run):
 *
 * - `baseline`: N unpaid `GET /health` with plain `fetch` (the app's floor: HTTP + fastify, no payment);
 * - `direct`: N `GET /weather` through ONE `qrwpFetchClient` (x402/client.ts) shared by the C workers, as an
 *   application would hold it: the first request of the run met a 402 and paid; every later one reuses the
 *   route's cached requirements and goes straight with a payment (the payer node signs the next balance
 *   proof for the price; the merchant node verifies and stores it; the acknowledgement is relayed back);
 * - `routed` (opt-in): N `GET /weather` paid through the mediator (`prefer: "routed"`; a 402 and a fresh
 *   invoice each).
 *
 * A request's latency runs from the call to its body being read; req/s is requests over the phase's wall
 * time. After each paid phase it checks every response (200, `PAYMENT-RESPONSE` success), that the
 * merchant's receipts file holds exactly the phase's payment hashes at the price and mode, and, once no
 * lock is pending, that the merchant node received N * price and the payer spent N * (price + fee) to the
 * wei. Per phase it reports the CPU time (user + system, /proc) of the merchant node, the merchant app, the
 * payer node and this process per request, and the machine's load. Prints a markdown table, writes
 * bench/results/paywall.json, exits 1 on a failed request or check.
 *
 *   --n <list>            requests per phase by concurrency level, the last repeats (default "300,1000,3000")
 *   --concurrency <list>  comma-separated requests in flight per level (default "1,4,16")
 *   --warmup <n>          unpaid requests, then paid requests per mode, before the phases, 16 in flight, not
 *                         measured (default 2000)
 *   --modes <list>        baseline,direct,routed (default baseline,direct; env QRWP_BENCH_MODES)
 *   --cpu-prof [dir]      CPU-profile the payer node, the merchant node, the merchant app (`--cpu-prof`, via
 *                         QRWP_CPU_PROF_DIR, which also works alone) and this process (inspector) into <dir>
 *                         (default a new temp directory); prints CPU per request by category per phase
 *                         (bench/profile-summary.ts); the results JSON goes to <dir>, not bench/results
 *   --dir <path>          data directories and logs, kept (default: a temp directory, removed after success)
 */
import "core-js/actual/promise/with-resolvers.js";
import { mkdirSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import Database from "better-sqlite3";
import { Command, InvalidArgumentError, Option } from "commander";
import { parseUnits } from "ethers";
import { decodePaymentResponseHeader } from "@x402/core/http";
import {
  countAt,
  countList,
  positiveInt,
  latencySummary,
  concurrencyList,
  machineLoad,
  processCpuMs,
  round2,
  runConcurrently,
} from "./common.js";
import { runDevnetBench, sleep, step, writeResults } from "./devnet-bench.js";
import { formatSummary, loadProfiles, summarize as summarizeProfile, type Phase } from "./profile-summary.js";
import { ROOT, type MerchantProcess, type NodeProcess } from "../devnet/harness.js";
import { qrwpFetchClient, type QrwpFetchClient } from "../x402/index.js";

const RESULTS_FILE = join(ROOT, "bench", "results", "paywall.json");
const UNIT = parseUnits("1", 18);
/** Price of `GET /weather`: 0.001 QTT (base units). */
const PRICE = UNIT / 1000n;
const MEDIATOR_FEE = { feeFlat: 1000n, feePpm: 100 };
/** The mediator's fee for forwarding PRICE (what the router computes). */
const ROUTED_FEE = MEDIATOR_FEE.feeFlat + (PRICE * BigInt(MEDIATOR_FEE.feePpm)) / 1_000_000n;
const MAX_FEE = PRICE / 100n;
const DEPOSIT = 100n * UNIT;
/**
 * Default requests before the measured phases, per kind, 16 in flight, not measured: freshly started
 * processes serve their first thousands of requests markedly slower while V8 compiles the hot paths (see
 * bench:payments' warm-up).
 */
const DEFAULT_WARMUP = 2000;
/** Requests in flight during the warm-up. */
const WARMUP_CONCURRENCY = 16;
const ROUTE_WAIT_MS = 90_000;
const LOCK_WAIT_MS = 60_000;

const MODES = ["baseline", "direct", "routed"] as const;
type Mode = (typeof MODES)[number];

/** CPU time (ms, user + system, all threads) per request of each process in a phase. */
interface CpuPerRequest {
  merchantNode: number;
  merchantApp: number;
  payerNode: number;
  /** This process: the client loop (qrwpFetch / fetch). */
  client: number;
}

/** One phase's figures (latencies in ms). */
interface PhaseResult {
  mode: Mode;
  concurrency: number;
  requests: number;
  totalSeconds: number;
  requestsPerSecond: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
  cpuMsPerRequest: CpuPerRequest;
  /** Paid phases: the receipts and balance checks (null for the baseline). */
  check: PaidCheck | null;
  /** 1-minute load average at the end of the phase, and the core count. */
  load: { loadAvg1m: number; cores: number };
}

/** What a paid phase verified. */
interface PaidCheck {
  ok: boolean;
  /** Receipts' `mode` values seen in the phase. */
  receiptModes: string[];
  newReceipts: number;
  merchantReceived: string;
  merchantExpected: string;
  payerSpent: string;
  payerExpected: string;
  /** Direct: balance proofs the payer signed on the direct channel in the phase (payments per proof = N / this). */
  proofs: number | null;
}

/** One line of the summary table: a concurrency level's paid figure against its unpaid baseline. */
interface LevelSummary {
  concurrency: number;
  mode: Exclude<Mode, "baseline">;
  paidPerSecond: number;
  unpaidPerSecond: number | null;
  /** paid / unpaid. */
  ratio: number | null;
  paidLatencyMs: { p50: number; p99: number };
  cpuMsPerRequest: CpuPerRequest;
  loadAvg1m: number;
}

function modeList(value: string): Mode[] {
  const list = value.split(",").map((v) => v.trim());
  for (const m of list)
    if (!(MODES as readonly string[]).includes(m))
      throw new InvalidArgumentError(`must be a comma-separated subset of ${MODES.join(",")}`);
  return MODES.filter((m) => list.includes(m));
}

interface ChannelJson {
  partner: string;
  state: string;
  ourBalance: string;
  ourLocked: string;
  partnerLocked: string;
}

/**
 * Waits until none of `nodes`' channels holds a lock, then returns each node's total `ourBalance` over its
 * channels (base units).
 */
async function settledBalances(nodes: NodeProcess[]): Promise<bigint[]> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    const all = await Promise.all(
      nodes.map(async (n) => (await n.api.call<{ channels: ChannelJson[] }>("GET", "/v1/channels")).channels),
    );
    if (all.flat().every((c) => c.ourLocked === "0" && c.partnerLocked === "0"))
      return all.map((chs) => chs.reduce((s, c) => s + BigInt(c.ourBalance), 0n));
    if (Date.now() > deadline) throw new Error(`locks still pending after ${LOCK_WAIT_MS} ms`);
    await sleep(50);
  }
}

/** One unpaid `GET /health`; resolves with its latency (ms). */
async function healthOnce(merchant: MerchantProcess): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`${merchant.url}/health`);
  const body = (await res.json()) as { ok?: boolean };
  if (res.status !== 200 || body.ok !== true) throw new Error(`GET /health -> ${res.status}`);
  return performance.now() - t0;
}

/** One paid `GET /weather`; resolves with its latency (ms) and the payment hash. */
async function weatherOnce(
  merchant: MerchantProcess,
  client: QrwpFetchClient,
  i: number,
): Promise<{ ms: number; paymentHash: string }> {
  const city = `city-${i % 50}`;
  const t0 = performance.now();
  const res = await client(`${merchant.url}/weather?city=${city}`);
  const body = (await res.json()) as { city?: string; error?: string };
  const ms = performance.now() - t0;
  const header = res.headers.get("payment-response");
  if (res.status !== 200 || body.city !== city || !header)
    throw new Error(`GET /weather -> ${res.status} ${JSON.stringify(body)}`);
  const settle = decodePaymentResponseHeader(header);
  if (!settle.success) throw new Error(`PAYMENT-RESPONSE not a success: ${JSON.stringify(settle)}`);
  return { ms, paymentHash: settle.transaction.toLowerCase() };
}

/** Receipts created at or after `sinceMs`, read from the merchant app's SQLite file (read-only). */
function receiptsSince(
  file: string,
  sinceMs: number,
): { paymentHash: string; amount: string; mode: string }[] {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return db
      .prepare("SELECT payment_hash AS paymentHash, amount, mode FROM receipts WHERE created_at >= ?")
      .all(sinceMs) as { paymentHash: string; amount: string; mode: string }[];
  } finally {
    db.close();
  }
}

/** The markdown tables: the summary per level, then every phase. */
function markdown(levels: LevelSummary[], phases: PhaseResult[]): string {
  const cpu = (c: CpuPerRequest) => `${c.merchantNode} | ${c.merchantApp} | ${c.payerNode} | ${c.client}`;
  const lines = [
    "| mode | in flight | paid req/s | unpaid req/s | paid/unpaid | p50 ms | p99 ms | " +
      "CPU ms/req merchant node | merchant app | payer node | client | load 1m |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const l of levels)
    lines.push(
      `| ${l.mode} | ${l.concurrency} | ${l.paidPerSecond} | ${l.unpaidPerSecond ?? "-"} | ` +
        `${l.ratio ?? "-"} | ${l.paidLatencyMs.p50} | ${l.paidLatencyMs.p99} | ${cpu(l.cpuMsPerRequest)} | ` +
        `${l.loadAvg1m} |`,
    );
  lines.push(
    "",
    "| phase | in flight | requests | req/s | p50 ms | p99 ms | CPU ms/req merchant node | merchant app | " +
      "payer node | client | load 1m | checks |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
  );
  for (const p of phases)
    lines.push(
      `| ${p.mode} | ${p.concurrency} | ${p.requests} | ${p.requestsPerSecond} | ${p.latencyMs.p50} | ` +
        `${p.latencyMs.p99} | ${cpu(p.cpuMsPerRequest)} | ${p.load.loadAvg1m} | ` +
        `${p.check ? (p.check.ok ? "receipts + balances ok" : "FAILED") : "-"} |`,
    );
  return lines.join("\n");
}

/** Now on process.hrtime's clock, in microseconds (the clock of V8's profile timestamps on Linux). */
const nowUs = () => Number(process.hrtime.bigint() / 1000n);

/** Profiles this process with the inspector (the children are profiled by `--cpu-prof`). */
async function profileSelf(): Promise<() => Promise<unknown>> {
  const session = new Session();
  session.connect();
  await session.post("Profiler.setSamplingInterval", { interval: 1000 });
  await session.post("Profiler.enable");
  await session.post("Profiler.start");
  return async () => {
    const { profile } = await session.post("Profiler.stop");
    session.disconnect();
    return profile;
  };
}

async function run(options: {
  n: number[];
  concurrency: number[];
  modes: Mode[];
  warmup: number;
  dir?: string;
  cpuProf?: string | true;
}): Promise<number> {
  const envProfDir = process.env.QRWP_CPU_PROF_DIR || undefined;
  // Outside the bench directory, which is removed after a successful run without --dir.
  const profDir: string | undefined =
    options.cpuProf === undefined
      ? envProfDir && resolve(envProfDir)
      : resolve(
          options.cpuProf === true ? join(tmpdir(), `qrwp-paywall-cpu-prof-${Date.now()}`) : options.cpuProf,
        );
  if (profDir) process.env.QRWP_CPU_PROF_DIR = profDir; // read by the harness when it spawns children
  const windows: (Phase & { process: Record<string, number> })[] = [];
  const stopSelfProfile = profDir ? await profileSelf() : null;
  const summary =
    `modes ${options.modes.join(", ")}; concurrency ${options.concurrency.join(", ")}, requests per phase ` +
    options.concurrency.map((_, i) => countAt(options.n, i)).join(", ");
  const children = "the merchant app, nodes and chain";
  const code = await runDevnetBench(
    { name: "paywall", dir: options.dir, summary, children },
    async (d, _dir, machine) => {
      const token = d.token;
      const chainId = d.deployment.chainId.toString();
      const routed = options.modes.includes("routed");
      const names = routed ? ["payer", "mediator", "merchant-node"] : ["payer", "merchant-node"];
      for (const name of names) await d.initNode(name, 3n * DEPOSIT);
      step(`starting ${names.join(", ")} (qrwp node start)`);
      // Routed payments need the router to see the channels soon; direct ones do not poll the chain.
      const chainPollMs = routed ? 250 : 1000;
      const [payer, merchantNode, mediator] = await Promise.all([
        d.startNode("payer", { chainPollMs }),
        d.startNode("merchant-node", { chainPollMs }),
        ...(routed ? [d.startNode("mediator", { ...MEDIATOR_FEE, chainPollMs: 250 })] : []),
      ]);
      const open = async (a: NodeProcess, b: NodeProcess) => {
        const view = await a.api.call<{ channelId: string }>("POST", "/v1/channels", {
          partner: b.address,
          partnerMultiaddr: b.multiaddr,
          token,
          deposit: DEPOSIT.toString(),
        });
        await b.api.call("POST", `/v1/channels/${view.channelId}/deposit`, {
          totalDeposit: DEPOSIT.toString(),
        });
        step(`  channel ${view.channelId}: ${a.name} <-> ${b.name}, ${DEPOSIT / UNIT} QTT each side`);
        return view.channelId;
      };
      const channelIds: Record<string, string> = {};
      if (mediator) {
        channelIds["payer-mediator"] = await open(payer!, mediator);
        channelIds["mediator-merchant"] = await open(mediator, merchantNode!);
      }
      step("starting the merchant app (examples/weather-merchant.ts) backed by merchant-node");
      const merchant = await d.startMerchant("weather-merchant", merchantNode!, {
        price: PRICE,
        logLevel: "warn",
      });
      step(`  ${merchant.url}: GET /weather for ${PRICE} base units, GET /health free`);
      const node = { apiUrl: payer!.apiUrl, token: payer!.api.token };
      const common = { node, maxAmount: PRICE, maxFee: MAX_FEE, asset: token, chainId };
      // One client per mode for the whole run, shared by every worker: its requirements cache is the app's.
      const clients = {
        direct: qrwpFetchClient(common),
        routed: qrwpFetchClient({ ...common, prefer: "routed" }),
      };

      if (routed) {
        step("waiting for the payer's router to find the 2-hop route to merchant-node");
        const q = new URLSearchParams({ target: merchantNode!.address, token, amount: PRICE.toString() });
        const deadline = Date.now() + ROUTE_WAIT_MS;
        for (;;) {
          const { routes } = await payer!.api.call<{ routes: { hops: unknown[] }[] }>(
            "GET",
            `/v1/routes?${q}`,
          );
          if (routes.some((r) => r.hops.length === 2)) break;
          if (Date.now() > deadline) throw new Error(`no 2-hop route after ${ROUTE_WAIT_MS} ms`);
          await sleep(250);
        }
      }
      const warmup = { baseline: options.warmup, paid: options.warmup };
      step(`warm-up: ${warmup.baseline} unpaid requests, ${WARMUP_CONCURRENCY} in flight`);
      await runConcurrently(warmup.baseline, WARMUP_CONCURRENCY, () => healthOnce(merchant));
      /** A probe paid as `mode` says so in its receipt; then the mode's warm-up. */
      const warmUp = async (mode: "direct" | "routed") => {
        step(`warm-up: ${warmup.paid} paid requests, ${mode}, ${WARMUP_CONCURRENCY} in flight`);
        const probe = await weatherOnce(merchant, clients[mode], 0);
        const seen = receiptsSince(merchant.receiptsFile, 0).find((r) => r.paymentHash === probe.paymentHash);
        if (seen?.mode !== mode) throw new Error(`the ${mode} probe was paid "${seen?.mode}", not "${mode}"`);
        await runConcurrently(warmup.paid - 1, WARMUP_CONCURRENCY, (i) =>
          weatherOnce(merchant, clients[mode], i),
        );
      };

      const pids = {
        merchantNode: merchantNode!.child.pid,
        merchantApp: merchant.child.pid,
        payerNode: payer!.child.pid,
      };
      /** Runs `body` as a phase: wall time window, CPU per process, and the profile window. */
      const measured = async <T>(name: string, requests: number, body: () => Promise<T>) => {
        const cpu0 = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, processCpuMs(pid).all]));
        const self0 = process.cpuUsage();
        const startUs = nowUs();
        const out = await body();
        const endUs = nowUs();
        const self = process.cpuUsage(self0);
        const per = (ms: number) => round2(ms / requests);
        const cpuMsPerRequest: CpuPerRequest = {
          merchantNode: per(processCpuMs(pids.merchantNode).all - cpu0.merchantNode!),
          merchantApp: per(processCpuMs(pids.merchantApp).all - cpu0.merchantApp!),
          payerNode: per(processCpuMs(pids.payerNode).all - cpu0.payerNode!),
          client: per((self.user + self.system) / 1000),
        };
        windows.push({
          name,
          payments: requests,
          startUs,
          endUs,
          process: { ...cpuMsPerRequest },
        });
        return { out, cpuMsPerRequest };
      };

      const phases: PhaseResult[] = [];
      const levels: LevelSummary[] = [];
      const report = (p: PhaseResult) =>
        step(
          `  ${p.requestsPerSecond} req/s, p50 ${p.latencyMs.p50} ms, p99 ${p.latencyMs.p99} ms, CPU ms/req ` +
            `merchant node ${p.cpuMsPerRequest.merchantNode}, app ${p.cpuMsPerRequest.merchantApp}, payer ` +
            `${p.cpuMsPerRequest.payerNode}, client ${p.cpuMsPerRequest.client}; load ${p.load.loadAvg1m}` +
            (p.check?.proofs ? `; ${round2(p.requests / p.check.proofs)} payments per proof` : "") +
            (p.check ? `; checks ${p.check.ok ? "ok" : "FAILED " + JSON.stringify(p.check)}` : ""),
        );

      /** One paid phase: N requests at `c`, then the receipts and balance checks. */
      const paidPhase = async (mode: "direct" | "routed", c: number, n: number): Promise<PhaseResult> => {
        const [payerBefore, merchantBefore] = await settledBalances([payer!, merchantNode!]);
        const ourNonce = async () =>
          BigInt(
            (
              await payer!.api.call<{ ourNonce: string }>(
                "GET",
                `/v1/channels/${channelIds["payer-merchant"]}`,
              )
            ).ourNonce,
          );
        const nonceBefore = mode === "direct" ? await ourNonce() : 0n;
        step(`phase: ${mode}, ${n} paid requests, concurrency ${c}`);
        const sinceMs = Date.now();
        const { out, cpuMsPerRequest } = await measured(`${mode} c=${c}`, n, () =>
          runConcurrently(n, c, (i) => weatherOnce(merchant, clients[mode], i)),
        );
        const { results, seconds } = out;
        const load = machineLoad();
        const [payerAfter, merchantAfter] = await settledBalances([payer!, merchantNode!]);
        const proofs = mode === "direct" ? Number((await ourNonce()) - nonceBefore) : null;
        const hashes = new Set(results.map((r) => r.paymentHash));
        const receipts = receiptsSince(merchant.receiptsFile, sinceMs);
        const modes = [...new Set(receipts.map((r) => r.mode))];
        const fee = mode === "routed" ? ROUTED_FEE : 0n;
        const merchantReceived = (merchantAfter as bigint) - (merchantBefore as bigint);
        const payerSpent = (payerBefore as bigint) - (payerAfter as bigint);
        const check: PaidCheck = {
          ok:
            hashes.size === n &&
            receipts.length === n &&
            receipts.every((r) => hashes.has(r.paymentHash) && r.amount === PRICE.toString()) &&
            modes.length === 1 &&
            modes[0] === mode &&
            merchantReceived === BigInt(n) * PRICE &&
            payerSpent === BigInt(n) * (PRICE + fee),
          receiptModes: modes,
          newReceipts: receipts.filter((r) => hashes.has(r.paymentHash)).length,
          merchantReceived: merchantReceived.toString(),
          merchantExpected: (BigInt(n) * PRICE).toString(),
          payerSpent: payerSpent.toString(),
          payerExpected: (BigInt(n) * (PRICE + fee)).toString(),
          proofs,
        };
        return {
          mode,
          concurrency: c,
          requests: results.length,
          totalSeconds: round2(seconds),
          requestsPerSecond: round2(results.length / seconds),
          latencyMs: latencySummary(results.map((r) => r.ms)),
          cpuMsPerRequest,
          check,
          load,
        };
      };

      // Routed first: once the direct channel is open, the cheapest route to the merchant is that channel.
      const paidModes = (["routed", "direct"] as const).filter((m) => options.modes.includes(m));
      for (const mode of paidModes) {
        if (mode === "direct") channelIds["payer-merchant"] = await open(payer!, merchantNode!);
        await warmUp(mode);
        await levelsOf(mode);
      }
      if (paidModes.length === 0) await levelsOf(null);

      /** Per concurrency level: the unpaid baseline, then `mode`'s paid phase. */
      async function levelsOf(mode: "direct" | "routed" | null): Promise<void> {
        for (const [i, c] of options.concurrency.entries()) {
          const n = countAt(options.n, i);
          let baseline: PhaseResult | null = null;
          if (options.modes.includes("baseline")) {
            step(`phase: baseline, ${n} unpaid GET /health, concurrency ${c}`);
            const { out, cpuMsPerRequest } = await measured(`baseline c=${c}`, n, () =>
              runConcurrently(n, c, () => healthOnce(merchant)),
            );
            baseline = {
              mode: "baseline",
              concurrency: c,
              requests: out.results.length,
              totalSeconds: round2(out.seconds),
              requestsPerSecond: round2(out.results.length / out.seconds),
              latencyMs: latencySummary(out.results),
              cpuMsPerRequest,
              check: null,
              load: machineLoad(),
            };
            phases.push(baseline);
            report(baseline);
          }
          if (mode) {
            const p = await paidPhase(mode, c, n);
            phases.push(p);
            report(p);
            levels.push({
              concurrency: c,
              mode,
              paidPerSecond: p.requestsPerSecond,
              unpaidPerSecond: baseline?.requestsPerSecond ?? null,
              ratio: baseline ? round2(p.requestsPerSecond / baseline.requestsPerSecond) : null,
              paidLatencyMs: { p50: p.latencyMs.p50, p99: p.latencyMs.p99 },
              cpuMsPerRequest: p.cpuMsPerRequest,
              loadAvg1m: p.load.loadAvg1m,
            });
          }
        }
      }

      const table = markdown(levels, phases);
      console.log(
        `\nx402 paywall: examples/weather-merchant.ts (fastify, a child process) backed by merchant-node; ` +
          `client loop in the bench process (one qrwpFetchClient per mode); price ${PRICE} base units` +
          (routed ? `, mediator fee ${ROUTED_FEE}` : ""),
      );
      console.log(
        `machine: ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, ${machine.platform}; load ` +
          `average ${machine.loadAverage1mAtStart} at the start (other work on the machine skews every figure)\n`,
      );
      console.log(table);
      const allOk = phases.every((p) => p.check === null || p.check.ok);
      console.log(
        allOk
          ? "\nverified per paid phase: every response 200 with PAYMENT-RESPONSE, the merchant's receipts of the " +
              "phase are exactly its payments at the price and mode, the merchant node received N * price and the " +
              "payer spent N * (price + fee), to the wei"
          : "\nCHECK FAILED (see above)",
      );

      const resultsFile = profDir ? join(profDir, "paywall.json") : RESULTS_FILE;
      if (profDir) mkdirSync(profDir, { recursive: true });
      writeResults(resultsFile, {
        benchmark: "paywall",
        date: new Date().toISOString(),
        machine,
        parameters: {
          topology:
            "payer <-> merchant-node (direct)" +
            (routed ? "; payer -> mediator -> merchant-node (routed)" : ""),
          merchantApp: "examples/weather-merchant.ts, log level warn",
          client: "one qrwpFetchClient per mode shared by the workers (requirements cached per route)",
          channelIds,
          requestsPerPhase: options.concurrency.map((_, i) => countAt(options.n, i)),
          concurrency: options.concurrency,
          modes: options.modes,
          warmup,
          priceBaseUnits: PRICE.toString(),
          ...(routed
            ? {
                mediatorFee: { feeFlat: MEDIATOR_FEE.feeFlat.toString(), feePpm: MEDIATOR_FEE.feePpm },
                routedFeeBaseUnits: ROUTED_FEE.toString(),
              }
            : {}),
          depositPerSideBaseUnits: DEPOSIT.toString(),
          chainPollMs,
          cpuProfiled: profDir !== undefined,
        },
        levels,
        phases,
        markdown: table,
      });
      return allOk;
    },
  );
  if (stopSelfProfile) {
    const profile = await stopSelfProfile();
    if (profDir && code === 0) {
      mkdirSync(join(profDir, "client"), { recursive: true });
      writeFileSync(join(profDir, "client", "client.cpuprofile"), JSON.stringify(profile));
      printProfiles(profDir, windows);
    }
  }
  return code;
}

/** Writes `<profDir>/phases.json` and prints each process's profile per phase (the children wrote theirs as they stopped). */
function printProfiles(profDir: string, phases: (Phase & { process: Record<string, number> })[]): void {
  writeFileSync(join(profDir, "phases.json"), JSON.stringify({ phases }, null, 2) + "\n");
  const processes = [
    ["merchant-node", "merchantNode"],
    ["weather-merchant", "merchantApp"],
    ["payer", "payerNode"],
    ["client", "client"],
  ] as const;
  for (const [dir, key] of processes) {
    const profiles = loadProfiles([join(profDir, dir, dir === "client" ? "client.cpuprofile" : "")]);
    for (const phase of phases) {
      console.log(`\n## ${dir}, ${phase.name}: per request by category\n`);
      console.log(`process CPU (user + system, all threads): ${phase.process[key]} ms/request\n`);
      console.log(formatSummary(summarizeProfile(profiles, phase), { per: phase.payments }));
    }
  }
  step(
    `profiles in ${profDir}; again: npx tsx bench/profile-summary.ts ${profDir}/<process> --phases ${profDir}/phases.json`,
  );
}

const program = new Command("bench:paywall")
  .description("paid x402 requests per second through the paywall against the unpaid route, per concurrency")
  .option(
    "--n <list>",
    "requests per phase by concurrency level (the last repeats)",
    countList,
    [300, 1000, 3000],
  )
  .option("--concurrency <list>", "comma-separated requests in flight per level", concurrencyList, [1, 4, 16])
  .addOption(
    new Option("--modes <list>", "comma-separated modes: baseline, direct, routed")
      .env("QRWP_BENCH_MODES")
      .argParser(modeList)
      .default(["baseline", "direct"], "baseline,direct"),
  )
  .option(
    "--warmup <n>",
    "unpaid, then paid requests per mode, before the phases",
    positiveInt,
    DEFAULT_WARMUP,
  )
  .option("--cpu-prof [dir]", "CPU-profile the payer node, merchant node, merchant app and this process")
  .option("--dir <path>", "directory for data and logs, kept after the run (default: a temp directory)")
  .action(
    async (opts: {
      n: number[];
      concurrency: number[];
      modes: Mode[];
      warmup: number;
      dir?: string;
      cpuProf?: string | true;
    }) => {
      process.exitCode = await run(opts);
    },
  );
await program.parseAsync(process.argv);
