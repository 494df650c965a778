/**
 * Direct-payment throughput between two `qrwp node start` PROCESSES over libp2p (`npm run bench:payments`).
 *
 * Starts a Hardhat chain and two nodes (alice, bob) with `devnet/harness.ts`, opens a channel alice -> bob,
 * warms up with 20 payments, then runs one phase per concurrency level (default 1, 8 and 64) through
 * `POST /v1/payments` on alice's HTTP API:
 *
 * - concurrency 1: one request at a time, so a payment's latency is the full path (HTTP, the channel's
 *   outbox, EIP-712 signing (+ ML-DSA-65 evidence every K updates), SQLite commit, encrypted frame, bob's
 *   verification and durable commit, Processed back, alice's commit, 201);
 * - concurrency 8 and 64: requests in flight; payments that arrive while an update is in flight are folded
 *   into the next one (docs/PROTOCOL.md §7.3), so this measures batching throughput.
 *
 * A payment's latency is measured from the request being sent to its 201 response. Each phase also reports
 * the CPU time alice's and bob's node processes used per payment and the machine's load. Prints one table
 * per phase and the machine, writes bench/results/payments.json, and checks that bob's channel view counts
 * every payment made (warm-up included).
 *
 *   --n <list>            payments per phase, comma-separated by phase, the last repeats (default "2000,5000,20000")
 *   --concurrency <list>  comma-separated phases (default "1,8,64")
 *   --dir <path>          data directories and logs (default: a new temp directory)
 */
import "core-js/actual/promise/with-resolvers.js";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { Command } from "commander";
import {
  concurrencyList,
  countAt,
  countList,
  latencySummary,
  machineLoad,
  processCpuMs,
  round2,
  runConcurrently,
} from "./common.js";
import { parseUnits } from "ethers";
import { Devnet, ROOT, type NodeProcess } from "../devnet/harness.js";

const WARMUP_PAYMENTS = 20;
const RESULTS_FILE = join(ROOT, "bench", "results", "payments.json");

interface ChannelJson {
  channelId: string;
  state: string;
  totals: { sent: string; received: string; sentCount: number; receivedCount: number };
}

interface PhaseResult {
  concurrency: number;
  payments: number;
  totalSeconds: number;
  paymentsPerSecond: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
  /** CPU ms per payment used by the payer's and the payee's node process during the phase. */
  cpuMsPerPayment: { alice: number; bob: number };
  load: { loadAvg1m: number; cores: number };
}

const step = (msg: string) => process.stderr.write(`» ${msg}\n`);

/** One `POST /v1/payments`; resolves with its latency in ms, throws unless 201 + "completed". */
async function payOnce(
  from: NodeProcess,
  to: NodeProcess,
  token: string,
  paymentId: string,
): Promise<number> {
  const body = JSON.stringify({ target: to.address, token, amount: "1", paymentId });
  const t0 = performance.now();
  const res = await fetch(`${from.api.baseUrl}/v1/payments`, {
    method: "POST",
    headers: { authorization: `Bearer ${from.api.token}`, "content-type": "application/json" },
    body,
  });
  const json = (await res.json().catch(() => ({}))) as { status?: string; error?: { code: string } };
  const ms = performance.now() - t0;
  if (res.status !== 201 || json.status !== "completed")
    throw new Error(`payment ${paymentId}: HTTP ${res.status} ${json.error?.code ?? json.status ?? ""}`);
  return ms;
}

/** `count` payments with `concurrency` requests in flight; returns each payment's latency (ms) and the wall time. */
async function runPayments(
  from: NodeProcess,
  to: NodeProcess,
  token: string,
  count: number,
  concurrency: number,
  label: string,
): Promise<{ latencies: number[]; seconds: number }> {
  const { results, seconds } = await runConcurrently(count, concurrency, (i) =>
    payOnce(from, to, token, `${label}-${i}`),
  );
  return { latencies: results, seconds };
}

function summarize(
  concurrency: number,
  latencies: number[],
  seconds: number,
  cpuMs: { alice: number; bob: number },
): PhaseResult {
  return {
    concurrency,
    payments: latencies.length,
    totalSeconds: round2(seconds),
    paymentsPerSecond: round2(latencies.length / seconds),
    latencyMs: latencySummary(latencies),
    cpuMsPerPayment: {
      alice: round2(cpuMs.alice / latencies.length),
      bob: round2(cpuMs.bob / latencies.length),
    },
    load: machineLoad(),
  };
}

function printPhase(r: PhaseResult): void {
  console.log(`\nconcurrency ${r.concurrency}`);
  console.table([
    {
      N: r.payments,
      "total s": r.totalSeconds,
      "payments/s": r.paymentsPerSecond,
      "p50 ms": r.latencyMs.p50,
      "p90 ms": r.latencyMs.p90,
      "p99 ms": r.latencyMs.p99,
      "max ms": r.latencyMs.max,
      "alice CPU ms/payment": r.cpuMsPerPayment.alice,
      "bob CPU ms/payment": r.cpuMsPerPayment.bob,
      "load 1m": r.load.loadAvg1m,
    },
  ]);
}

async function run(options: { n: number[]; concurrency: number[]; dir?: string }): Promise<number> {
  const dir = options.dir ? resolve(options.dir) : mkdtempSync(join(tmpdir(), "qrwp-bench-payments-"));
  const machine = {
    cpu: cpus()[0]?.model ?? "unknown",
    cores: cpus().length,
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
  };
  step(
    `bench directory ${dir}; concurrency ${options.concurrency.join(", ")}, payments ${options.concurrency.map((_, i) => countAt(options.n, i)).join(", ")}`,
  );
  step("starting hardhat node and deploying Bridge, ChannelHub, TestToken");
  const devnet = await Devnet.start(dir);
  let stopped: Promise<void> | undefined;
  const cleanup = () => (stopped ??= devnet.stop());
  const onSignal = () => {
    step("interrupted: stopping nodes and chain");
    void cleanup().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const funding = parseUnits("1000", 18);
    await devnet.initNode("alice", funding);
    await devnet.initNode("bob", funding);
    step("starting alice and bob (qrwp node start)");
    const [alice, bob] = await Promise.all([devnet.startNode("alice"), devnet.startNode("bob")]);
    const token = devnet.token;

    step("alice opens a channel with bob (deposit 100 QTT; payments are 1 base unit each)");
    const opened = await alice.api.call<ChannelJson>("POST", "/v1/channels", {
      partner: bob.address,
      partnerMultiaddr: bob.multiaddr,
      token,
      deposit: parseUnits("100", 18).toString(),
      settleTimeoutSeconds: 600,
    });
    const channelId = opened.channelId;
    const bobBefore = await bob.api.call<ChannelJson>("GET", `/v1/channels/${channelId}`);

    step(`warm-up: ${WARMUP_PAYMENTS} payments`);
    await runPayments(alice, bob, token, WARMUP_PAYMENTS, 1, "warmup");
    let made = WARMUP_PAYMENTS;

    const phases: PhaseResult[] = [];
    for (const [i, c] of options.concurrency.entries()) {
      const n = countAt(options.n, i);
      step(`phase: ${n} payments, concurrency ${c}`);
      const cpu0 = { alice: processCpuMs(alice.child.pid), bob: processCpuMs(bob.child.pid) };
      const { latencies, seconds } = await runPayments(alice, bob, token, n, c, `c${c}`);
      const cpu = {
        alice: processCpuMs(alice.child.pid) - cpu0.alice,
        bob: processCpuMs(bob.child.pid) - cpu0.bob,
      };
      made += latencies.length;
      const r = summarize(c, latencies, seconds, cpu);
      phases.push(r);
      step(`  ${r.paymentsPerSecond} payments/s, p50 ${r.latencyMs.p50} ms`);
    }

    const bobView = await bob.api.call<ChannelJson>("GET", `/v1/channels/${channelId}`);
    const received = bobView.totals.receivedCount - bobBefore.totals.receivedCount;
    const receivedAmount = BigInt(bobView.totals.received) - BigInt(bobBefore.totals.received);
    if (received !== made || receivedAmount !== BigInt(made))
      throw new Error(
        `bob's channel view counts ${received} payments (${receivedAmount} base units) but alice made ${made}`,
      );

    console.log(`\nQRWP direct payments alice -> bob, two node processes over libp2p (channel ${channelId})`);
    console.log(`machine: ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, ${machine.platform}`);
    for (const r of phases) printPhase(r);
    console.log(`\nverified: bob's channel view shows receivedCount +${received} = every payment made`);

    mkdirSync(dirname(RESULTS_FILE), { recursive: true });
    writeFileSync(
      RESULTS_FILE,
      JSON.stringify(
        {
          benchmark: "payments",
          date: new Date().toISOString(),
          machine,
          warmupPayments: WARMUP_PAYMENTS,
          amountPerPaymentBaseUnits: "1",
          phases,
          verified: { receivedCount: received, paymentsMade: made },
        },
        null,
        2,
      ) + "\n",
    );
    step(`wrote ${RESULTS_FILE}`);
    return 0;
  } catch (err) {
    console.error(`bench failed: ${err instanceof Error ? err.message : String(err)} (logs in ${dir})`);
    return 1;
  } finally {
    step("stopping nodes and chain");
    await cleanup();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

const program = new Command("bench:payments")
  .description("direct payments per second between two QRWP node processes over libp2p")
  .option(
    "--n <list>",
    "payments per phase, comma-separated by phase (the last repeats)",
    countList,
    [2000, 5000, 20000],
  )
  .option("--concurrency <list>", "comma-separated requests in flight per phase", concurrencyList, [1, 8, 64])
  .option("--dir <path>", "directory for data and logs (default: a new temp directory)")
  .action(async (opts: { n: number[]; concurrency: number[]; dir?: string }) => {
    process.exitCode = await run(opts);
  });
await program.parseAsync(process.argv);
