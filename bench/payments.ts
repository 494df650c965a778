/**
 * Direct-payment throughput between two `qrwp node start` PROCESSES over libp2p (`npm run bench:payments`).
 *
 * Starts a Hardhat chain and two nodes (alice, bob) with `devnet/harness.ts`, opens a channel alice -> bob,
 * warms up (default 3,000 payments one at a time, unmeasured: a freshly started node runs its first ~2,000
 * payments at up to 1.7x the latency and CPU of its steady state, measured in 1,000-payment steps), then
 * runs one phase per concurrency level (default 1, 8 and 64) through
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
 *   --warmup <n>          payments before the first phase, one at a time, not measured (default 3000)
 *   --dir <path>          data directories and logs (default: a new temp directory)
 *   --cpu-prof [dir]      CPU-profile both nodes (`npm run bench:profile`; also when QRWP_CPU_PROF_DIR is
 *                         set, with that directory): profiles in <dir>/alice and
 *                         <dir>/bob (default <bench directory>/cpu-prof), the phases' time windows in
 *                         <dir>/phases.json, the results JSON in <dir> instead of bench/results (profiled
 *                         figures are slower), then each node's CPU per payment and phase by category
 *                         (bench/profile-summary.ts)
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
import { formatSummary, loadProfiles, summarize as summarizeProfile, type Phase } from "./profile-summary.js";

const DEFAULT_WARMUP_PAYMENTS = 3000;
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

/** Now on process.hrtime's clock, in microseconds (the clock of V8's profile timestamps on Linux). */
const nowUs = () => Number(process.hrtime.bigint() / 1000n);

/** A phase's time window, with each node's process CPU time (ms) during it. */
type ProfiledPhase = Phase & { cpuMs: Record<string, { all: number; main: number }> };

async function run(options: {
  n: number[];
  concurrency: number[];
  warmup: number;
  dir?: string;
  cpuProf?: string | true;
}): Promise<number> {
  const dir = options.dir ? resolve(options.dir) : mkdtempSync(join(tmpdir(), "qrwp-bench-payments-"));
  const envProfDir = process.env.QRWP_CPU_PROF_DIR || undefined; // the harness's own opt-in counts too
  const profDir =
    options.cpuProf === undefined
      ? envProfDir && resolve(envProfDir)
      : resolve(options.cpuProf === true ? join(dir, "cpu-prof") : options.cpuProf);
  if (profDir) process.env.QRWP_CPU_PROF_DIR = profDir; // read by the harness when it spawns the nodes
  const resultsFile = profDir ? join(profDir, "payments.json") : RESULTS_FILE;
  const windows: ProfiledPhase[] = [];
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

    step(`warm-up: ${options.warmup} payments`);
    await runPayments(alice, bob, token, options.warmup, 1, "warmup");
    let made = options.warmup;

    const phases: PhaseResult[] = [];
    for (const [i, c] of options.concurrency.entries()) {
      const n = countAt(options.n, i);
      step(`phase: ${n} payments, concurrency ${c}`);
      const startUs = nowUs();
      const cpu0 = [alice, bob].map((node) => processCpuMs(node.child.pid));
      const { latencies, seconds } = await runPayments(alice, bob, token, n, c, `p${i}-c${c}`);
      const [aliceCpu, bobCpu] = [alice, bob].map((node, i) => {
        const now = processCpuMs(node.child.pid);
        return { all: now.all - cpu0[i]!.all, main: now.main - cpu0[i]!.main };
      });
      windows.push({
        name: `concurrency ${c}`,
        payments: n,
        startUs,
        endUs: nowUs(),
        cpuMs: { alice: aliceCpu!, bob: bobCpu! },
      });
      const cpu = { alice: aliceCpu!.all, bob: bobCpu!.all };
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

    mkdirSync(dirname(resultsFile), { recursive: true });
    writeFileSync(
      resultsFile,
      JSON.stringify(
        {
          benchmark: "payments",
          date: new Date().toISOString(),
          machine,
          warmupPayments: options.warmup,
          amountPerPaymentBaseUnits: "1",
          phases,
          verified: { receivedCount: received, paymentsMade: made },
        },
        null,
        2,
      ) + "\n",
    );
    step(`wrote ${resultsFile}`);
  } catch (err) {
    console.error(`bench failed: ${err instanceof Error ? err.message : String(err)} (logs in ${dir})`);
    return 1;
  } finally {
    step("stopping nodes and chain");
    await cleanup();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  if (profDir) printProfiles(profDir, windows); // the nodes wrote their profiles as they stopped
  return 0;
}

/** Writes `<profDir>/phases.json` and prints alice's (sender) and bob's (receiver) profile per phase. */
function printProfiles(profDir: string, phases: ProfiledPhase[]): void {
  writeFileSync(join(profDir, "phases.json"), JSON.stringify({ phases }, null, 2) + "\n");
  for (const [name, role] of [
    ["alice", "sender"],
    ["bob", "receiver"],
  ] as const) {
    const profiles = loadProfiles([join(profDir, name)]);
    for (const phase of phases) {
      console.log(`\n## ${name} (${role}), ${phase.name}: CPU per payment by category\n`);
      const cpu = phase.cpuMs[name]!;
      const perPayment = (ms: number) => (ms / phase.payments!).toFixed(2);
      console.log(
        `process CPU (user + system): all threads ${cpu.all} ms = ${perPayment(cpu.all)} ms/payment, ` +
          `main thread ${cpu.main} ms = ${perPayment(cpu.main)} ms/payment\n`,
      );
      console.log(formatSummary(summarizeProfile(profiles, phase), { per: phase.payments }));
    }
  }
  step(
    `profiles in ${profDir}; again: npx tsx bench/profile-summary.ts ${profDir}/alice --phases ${profDir}/phases.json`,
  );
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
  .option(
    "--warmup <n>",
    "payments before the first phase, one at a time, not measured",
    (v: string) => countList(v)[0] as number,
    DEFAULT_WARMUP_PAYMENTS,
  )
  .option("--dir <path>", "directory for data and logs (default: a new temp directory)")
  .option("--cpu-prof [dir]", "CPU-profile both nodes and print CPU per payment by category")
  .action(
    async (opts: {
      n: number[];
      concurrency: number[];
      warmup: number;
      dir?: string;
      cpuProf?: string | true;
    }) => {
      process.exitCode = await run(opts);
    },
  );
await program.parseAsync(process.argv);
