/**
 * Paid HTTP requests per second through the x402 paywall (`npm run bench:paywall`).
 *
 * Starts a Hardhat chain and three `qrwp node start` processes with `devnet/harness.ts`,
 *
 *   payer --- mediator --- merchant        (mediator: 1000 + 100 ppm; 100 QTT per side)
 *     \________ direct ______/             (opened before the direct phase only, so routed stays routed)
 *
 * and the merchant app `examples/weather-merchant.ts` as a fourth child process backed by the merchant
 * node's API (`GET /weather` priced, `GET /health` free). The client loop runs in this process, one phase
 * per mode and concurrency level (`--concurrency`, default "1,4"):
 *
 * - `baseline`: N unpaid `GET /health` with plain `fetch` (the app's floor: HTTP + fastify, no payment);
 * - `routed`: N `GET /weather` with `qrwpFetch` (x402/client.ts): 402 with a fresh invoice of the merchant
 *   node, the payer node pays it over HTLCs through the mediator, the retry with the preimage is verified
 *   against the merchant node, settled (receipt) and served;
 * - `direct`: the same once the payer has a direct channel with the merchant: `qrwpFetch` pays by direct
 *   streaming (the payer node signs the next balance proof for the price; the retry carries it; the merchant
 *   node verifies and stores it; the acknowledgement is relayed back). A probe request checks that the
 *   receipt's `mode` is "direct" (the bench fails otherwise).
 *
 * A request's latency runs from the call to its body being read; req/s is requests over the phase's wall
 * time. After each paid phase it checks every response (200, `PAYMENT-RESPONSE` success), that the merchant's
 * newest N receipts are exactly the phase's payment hashes at the price, and, once no lock is pending, that
 * the merchant node received N * price and the payer spent N * (price + fee) to the wei. Prints a markdown
 * table, writes bench/results/paywall.json, exits 1 on a failed request or check.
 *
 *   --n <count>           requests per phase (1-1000, default 100)
 *   --concurrency <list>  comma-separated requests in flight per phase (default "1,4")
 *   --modes <list>        baseline,routed,direct (default all; env QRWP_BENCH_MODES)
 *   --dir <path>          data directories and logs, kept (default: a temp directory, removed after success)
 */
import "core-js/actual/promise/with-resolvers.js";
import { loadavg } from "node:os";
import { join } from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { parseUnits } from "ethers";
import { decodePaymentResponseHeader } from "@x402/core/http";
import { latencySummary, concurrencyList, positiveInt, round2, runConcurrently } from "./common.js";
import { runDevnetBench, sleep, step, writeResults } from "./devnet-bench.js";
import { ROOT, type MerchantProcess, type NodeProcess, type ReceiptJson } from "../devnet/harness.js";
import { qrwpFetch } from "../x402/index.js";

const RESULTS_FILE = join(ROOT, "bench", "results", "paywall.json");
const UNIT = parseUnits("1", 18);
/** Price of `GET /weather`: 0.001 QTT (base units). */
const PRICE = UNIT / 1000n;
const MEDIATOR_FEE = { feeFlat: 1000n, feePpm: 100 };
/** The mediator's fee for forwarding PRICE (what the router computes). */
const ROUTED_FEE = MEDIATOR_FEE.feeFlat + (PRICE * BigInt(MEDIATOR_FEE.feePpm)) / 1_000_000n;
const MAX_FEE = PRICE / 100n;
const DEPOSIT = 100n * UNIT;
const WARMUP = { baseline: 20, paid: 3 };
const ROUTE_WAIT_MS = 90_000;
const LOCK_WAIT_MS = 60_000;

const MODES = ["baseline", "routed", "direct"] as const;
type Mode = (typeof MODES)[number];

/** One phase's figures (latencies in ms). */
interface PhaseResult {
  mode: Mode;
  concurrency: number;
  requests: number;
  totalSeconds: number;
  requestsPerSecond: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
  /** Paid phases: the receipts and balance checks (null for the baseline). */
  check: PaidCheck | null;
  loadAverage1m: number;
}

/** What a paid phase verified. */
interface PaidCheck {
  ok: boolean;
  /** Receipts' `mode` values seen in the phase (absent field = "routed"). */
  receiptModes: string[];
  newReceipts: number;
  merchantReceived: string;
  merchantExpected: string;
  payerSpent: string;
  payerExpected: string;
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

/** One paid `GET /weather` with `qrwpFetch`; resolves with its latency (ms) and the payment hash. */
async function weatherOnce(
  merchant: MerchantProcess,
  payer: NodeProcess,
  token: string,
  chainId: string,
  i: number,
): Promise<{ ms: number; paymentHash: string }> {
  const city = `city-${i % 50}`;
  const t0 = performance.now();
  const res = await qrwpFetch(`${merchant.url}/weather?city=${city}`, undefined, {
    node: { apiUrl: payer.apiUrl, token: payer.api.token },
    maxAmount: PRICE,
    maxFee: MAX_FEE,
    asset: token,
    chainId,
  });
  const body = (await res.json()) as { city?: string; error?: string };
  const ms = performance.now() - t0;
  const header = res.headers.get("payment-response");
  if (res.status !== 200 || body.city !== city || !header)
    throw new Error(`GET /weather -> ${res.status} ${JSON.stringify(body)}`);
  const settle = decodePaymentResponseHeader(header);
  if (!settle.success) throw new Error(`PAYMENT-RESPONSE not a success: ${JSON.stringify(settle)}`);
  return { ms, paymentHash: settle.transaction.toLowerCase() };
}

/** The merchant's newest `limit` receipts (admin token). */
async function newestReceipts(merchant: MerchantProcess, limit: number): Promise<ReceiptJson[]> {
  return (await merchant.api.call<{ receipts: ReceiptJson[] }>("GET", `/v1/receipts?limit=${limit}`))
    .receipts;
}

/** The markdown table of every phase. */
function markdown(phases: PhaseResult[]): string {
  const label: Record<Mode, string> = {
    baseline: "baseline (GET /health, unpaid)",
    routed: "routed (qrwpFetch, 1 mediator)",
    direct: "direct streaming (qrwpFetch)",
  };
  const lines = [
    "| mode | concurrency | requests | req/s | p50 ms | p99 ms | load 1m | checks |",
    "|---|---:|---:|---:|---:|---:|---:|---|",
  ];
  for (const p of phases)
    lines.push(
      `| ${label[p.mode]} | ${p.concurrency} | ${p.requests} | ${p.requestsPerSecond} | ${p.latencyMs.p50} | ` +
        `${p.latencyMs.p99} | ${p.loadAverage1m} | ` +
        `${p.check ? (p.check.ok ? "receipts + balances ok" : "FAILED") : "-"} |`,
    );
  return lines.join("\n");
}

async function run(options: {
  n: number;
  concurrency: number[];
  modes: Mode[];
  dir?: string;
}): Promise<number> {
  const summary =
    `modes ${options.modes.join(", ")}; ${options.n} requests per phase, ` +
    `concurrency ${options.concurrency.join(", ")}`;
  const children = "the merchant app, nodes and chain";
  return runDevnetBench(
    { name: "paywall", dir: options.dir, summary, children },
    async (d, _dir, machine) => {
      const token = d.token;
      const chainId = d.deployment.chainId.toString();
      for (const name of ["payer", "mediator", "merchant-node"]) await d.initNode(name, 3n * DEPOSIT);
      step("starting payer, mediator (1000 + 100 ppm) and merchant-node (qrwp node start)");
      const [payer, mediator, merchantNode] = await Promise.all([
        d.startNode("payer", { chainPollMs: 250 }),
        d.startNode("mediator", { ...MEDIATOR_FEE, chainPollMs: 250 }),
        d.startNode("merchant-node", { chainPollMs: 250 }),
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
      channelIds["payer-mediator"] = await open(payer!, mediator!);
      channelIds["mediator-merchant"] = await open(mediator!, merchantNode!);
      step("starting the merchant app (examples/weather-merchant.ts) backed by merchant-node");
      const merchant = await d.startMerchant("weather-merchant", merchantNode!, {
        price: PRICE,
        logLevel: "warn",
      });
      step(`  ${merchant.url}: GET /weather for ${PRICE} base units, GET /health free`);

      const phases: PhaseResult[] = [];
      let routeFoundAfterMs: number | null = null;

      /** One paid phase: N qrwpFetch requests at `c`, then the receipts and balance checks. */
      const paidPhase = async (mode: "routed" | "direct", c: number): Promise<PhaseResult> => {
        const [payerBefore, merchantBefore] = await settledBalances([payer!, merchantNode!]);
        step(`phase: ${mode}, ${options.n} paid requests, concurrency ${c}`);
        const { results, seconds } = await runConcurrently(options.n, c, (i) =>
          weatherOnce(merchant, payer!, token, chainId, i),
        );
        const [payerAfter, merchantAfter] = await settledBalances([payer!, merchantNode!]);
        const hashes = new Set(results.map((r) => r.paymentHash));
        const receipts = await newestReceipts(merchant, options.n);
        const modes = [...new Set(receipts.map((r) => r.mode ?? "routed"))];
        const fee = mode === "routed" ? ROUTED_FEE : 0n;
        const n = BigInt(options.n);
        const merchantReceived = (merchantAfter as bigint) - (merchantBefore as bigint);
        const payerSpent = (payerBefore as bigint) - (payerAfter as bigint);
        const check: PaidCheck = {
          ok:
            hashes.size === options.n &&
            receipts.length === options.n &&
            receipts.every((r) => hashes.has(r.paymentHash) && r.amount === PRICE.toString()) &&
            modes.length === 1 &&
            modes[0] === mode &&
            merchantReceived === n * PRICE &&
            payerSpent === n * (PRICE + fee),
          receiptModes: modes,
          newReceipts: receipts.filter((r) => hashes.has(r.paymentHash)).length,
          merchantReceived: merchantReceived.toString(),
          merchantExpected: (n * PRICE).toString(),
          payerSpent: payerSpent.toString(),
          payerExpected: (n * (PRICE + fee)).toString(),
        };
        return {
          mode,
          concurrency: c,
          requests: results.length,
          totalSeconds: round2(seconds),
          requestsPerSecond: round2(results.length / seconds),
          latencyMs: latencySummary(results.map((r) => r.ms)),
          check,
          loadAverage1m: round2(loadavg()[0] ?? NaN),
        };
      };
      const report = (p: PhaseResult) =>
        step(
          `  ${p.requestsPerSecond} req/s, p50 ${p.latencyMs.p50} ms, p99 ${p.latencyMs.p99} ms` +
            (p.check ? `, checks ${p.check.ok ? "ok" : "FAILED " + JSON.stringify(p.check)}` : ""),
        );

      if (options.modes.includes("baseline")) {
        await runConcurrently(WARMUP.baseline, 1, () => healthOnce(merchant));
        for (const c of options.concurrency) {
          step(`phase: baseline, ${options.n} unpaid GET /health, concurrency ${c}`);
          const { results, seconds } = await runConcurrently(options.n, c, () => healthOnce(merchant));
          const p: PhaseResult = {
            mode: "baseline",
            concurrency: c,
            requests: results.length,
            totalSeconds: round2(seconds),
            requestsPerSecond: round2(results.length / seconds),
            latencyMs: latencySummary(results),
            check: null,
            loadAverage1m: round2(loadavg()[0] ?? NaN),
          };
          phases.push(p);
          report(p);
        }
      }

      if (options.modes.includes("routed")) {
        step("waiting for the payer's router to find the 2-hop route to merchant-node");
        const t0 = performance.now();
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
        routeFoundAfterMs = Math.round(performance.now() - t0);
        step(`  route found after ${routeFoundAfterMs} ms; warm-up: ${WARMUP.paid} paid requests`);
        await runConcurrently(WARMUP.paid, 1, (i) => weatherOnce(merchant, payer!, token, chainId, i));
        for (const c of options.concurrency) {
          const p = await paidPhase("routed", c);
          phases.push(p);
          report(p);
        }
      }

      if (options.modes.includes("direct")) {
        step("opening the direct channel payer <-> merchant-node");
        channelIds["payer-merchant"] = await open(payer!, merchantNode!);
        // One probe purchase: does qrwpFetch pay the merchant by direct streaming over the new channel?
        const probe = await weatherOnce(merchant, payer!, token, chainId, 0);
        const receipt = (await newestReceipts(merchant, 10)).find((r) => r.paymentHash === probe.paymentHash);
        const probeMode = receipt?.mode ?? "routed";
        if (probeMode !== "direct") throw new Error(`the direct probe was paid "${probeMode}", not "direct"`);
        await runConcurrently(WARMUP.paid - 1, 1, (i) => weatherOnce(merchant, payer!, token, chainId, i));
        for (const c of options.concurrency) {
          const p = await paidPhase("direct", c);
          phases.push(p);
          report(p);
        }
      }

      const table = markdown(phases);
      console.log(
        `\nx402 paywall: examples/weather-merchant.ts (fastify, a child process) backed by merchant-node; ` +
          `client loop in the bench process; price ${PRICE} base units, mediator fee ${ROUTED_FEE}`,
      );
      console.log(
        `machine: ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, ${machine.platform}; load ` +
          `average ${machine.loadAverage1mAtStart} at the start (other work on the machine skews every figure)\n`,
      );
      console.log(table);
      const allOk = phases.every((p) => p.check === null || p.check.ok);
      console.log(
        allOk
          ? "\nverified per paid phase: every response 200 with PAYMENT-RESPONSE, the merchant's newest N receipts " +
              "are the phase's payments at the price, the merchant node received N * price and the payer spent " +
              "N * (price + fee), to the wei"
          : "\nCHECK FAILED (see above)",
      );

      writeResults(RESULTS_FILE, {
        benchmark: "paywall",
        date: new Date().toISOString(),
        machine,
        parameters: {
          topology: "payer -> mediator -> merchant-node (+ payer <-> merchant-node for direct)",
          merchantApp: "examples/weather-merchant.ts, log level warn",
          channelIds,
          requestsPerPhase: options.n,
          concurrency: options.concurrency,
          modes: options.modes,
          warmup: WARMUP,
          priceBaseUnits: PRICE.toString(),
          mediatorFee: { feeFlat: MEDIATOR_FEE.feeFlat.toString(), feePpm: MEDIATOR_FEE.feePpm },
          routedFeeBaseUnits: ROUTED_FEE.toString(),
          depositPerSideBaseUnits: DEPOSIT.toString(),
          chainPollMs: 250,
        },
        routeFoundAfterMs,
        phases,
        markdown: table,
      });
      return allOk;
    },
  );
}

const program = new Command("bench:paywall")
  .description("paid HTTP requests per second through the x402 paywall: unpaid baseline, routed, direct")
  .addOption(
    new Option("--n <count>", "requests per phase (1-1000)")
      .argParser((v) => {
        const n = positiveInt(v);
        if (n > 1000) throw new InvalidArgumentError("must be at most 1000 (one receipts page)");
        return n;
      })
      .default(100),
  )
  .option("--concurrency <list>", "comma-separated requests in flight per phase", concurrencyList, [1, 4])
  .addOption(
    new Option("--modes <list>", "comma-separated modes: baseline, routed, direct")
      .env("QRWP_BENCH_MODES")
      .argParser(modeList)
      .default([...MODES], MODES.join(",")),
  )
  .option("--dir <path>", "directory for data and logs, kept after the run (default: a temp directory)")
  .action(async (opts: { n: number; concurrency: number[]; modes: Mode[]; dir?: string }) => {
    process.exitCode = await run(opts);
  });
await program.parseAsync(process.argv);
