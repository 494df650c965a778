/**
 * 3-hop HTLC payments between four `qrwp node start` PROCESSES over libp2p (`npm run bench:multihop`).
 *
 * Starts a Hardhat chain and four nodes with `devnet/harness.ts` in a line
 *
 *   alice --- bob --- carol --- dave        (bob: 1000 + 100 ppm, carol: 2000 + 250 ppm)
 *
 * with every channel funded on both sides (enough for the whole run), waits until alice's router returns the
 * 3-hop route (on-chain channel events plus gossiped channel updates), warms up (default 2,000 payments, 16 in
 * flight, unmeasured: freshly started nodes run their first thousands of payments markedly slower while V8
 * compiles the hot paths, as bench:payments shows in 1,000-payment steps), then runs
 * one phase of N routed payments alice -> dave per concurrency level (`--concurrency`, default "1,4") through
 * `POST /v1/payments` on alice's HTTP API. Each request returns when the payment completed (alice learned the
 * secret), so a payment's latency, from the request being sent to its 201, covers three LockedTransfers
 * forward, the target's SecretRequest to alice and the secret travelling back hop by hop with an Unlock
 * (balance proof) on each channel.
 *
 * After each phase it waits until no channel holds a pending lock, then checks to the wei, from
 * `GET /v1/channels` on every node, that alice spent N * amount + the fees the payments reported, that dave
 * received N * amount, that each mediator earned exactly its fee schedule, and that every reported fee equals
 * the schedule's. Prints one table per phase and the machine, writes bench/results/multihop.json, and exits 1 on
 * a failed payment or a failed check.
 *
 *   --n <count>           payments per phase (>= 1, default 200)
 *   --concurrency <list>  comma-separated phases (default "1,4")
 *   --warmup <count>      payments before the first phase, 16 in flight, not measured (default 2000)
 *   QRWP_CPU_PROF_DIR=<dir>  CPU-profiles the four nodes into <dir>/<name> and writes the phases' time
 *                         windows to <dir>/phases.json (for bench/profile-summary.ts --phases)
 *   --dir <path>          data directories and logs, kept after the run (default: a new temp directory,
 *                         removed after a successful run and kept after a failure)
 */
import "core-js/actual/promise/with-resolvers.js";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { concurrencyList, latencySummary, positiveInt, round2, runConcurrently } from "./common.js";
import { parseUnits } from "ethers";
import { ROOT, type NodeProcess } from "../devnet/harness.js";
import { cpuSample, runDevnetBench, sleep, step, writeResults } from "./devnet-bench.js";

const DEFAULT_WARMUP_PAYMENTS = 2000;
/** Requests in flight during the warm-up. */
const WARMUP_CONCURRENCY = 16;
/** Now on process.hrtime's clock, in microseconds (the clock of V8's profile timestamps on Linux). */
const nowUs = () => Number(process.hrtime.bigint() / 1000n);
const RESULTS_FILE = join(ROOT, "bench", "results", "multihop.json");
const UNIT = parseUnits("1", 18);
/** Per-payment amount: 1 QTT plus a few wei, so the ppm fees exercise integer rounding. */
const AMOUNT = UNIT + 12_345n;
/** Fee cap per payment (1 % of the amount; the route's fee is about 0.035 %). */
const MAX_FEE = AMOUNT / 100n;
const LOCK_WAIT_MS = 60_000;
const ROUTE_WAIT_MS = 90_000;

const NODES = ["alice", "bob", "carol", "dave"] as const;
type Name = (typeof NODES)[number];
const FEES: Record<Name, { feeFlat: bigint; feePpm: number }> = {
  alice: { feeFlat: 0n, feePpm: 0 },
  bob: { feeFlat: 1000n, feePpm: 100 },
  carol: { feeFlat: 2000n, feePpm: 250 },
  dave: { feeFlat: 0n, feePpm: 0 },
};
/** Channels of the line, opener first. */
const LINE: [Name, Name][] = [
  ["alice", "bob"],
  ["bob", "carol"],
  ["carol", "dave"],
];

interface ChannelJson {
  channelId: string;
  partner: string;
  state: string;
  ourBalance: string;
  partnerBalance: string;
  ourLocked: string;
  partnerLocked: string;
}
interface RoutedPaymentJson {
  paymentId: string;
  status: string;
  fee: string;
  route: { address: string; amount: string; fee: string }[];
  attempts: unknown[];
  error?: { code: string; message: string } | null;
}

interface PhaseResult {
  concurrency: number;
  payments: number;
  totalSeconds: number;
  paymentsPerSecond: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
  /** Payments that needed more than one attempt (a retry on the same or another route). */
  retriedPayments: number;
  /** 1-minute load average when the phase ended (other work on the machine skews every figure). */
  loadAverage1m: number;
  /**
   * CPU during the phase (Linux): user + system ms of the four node processes per payment, and how busy the
   * machine was (all cores, in %), so other load on the machine shows. Null where /proc is missing.
   */
  cpu: { nodesMsPerPayment: number; machineBusyPercent: number } | null;
  /** From the last 201 to no pending lock on any channel of the line. */
  locksClearedAfterMs: number;
  feesPaid: string;
  check: BalanceCheck;
}

interface BalanceCheck {
  ok: boolean;
  aliceSpent: string;
  aliceExpected: string;
  daveReceived: string;
  daveExpected: string;
  bobEarned: string;
  bobExpected: string;
  carolEarned: string;
  carolExpected: string;
  feesReportedMatchSchedule: boolean;
}

/** The fee a mediator charges for forwarding `amount` (what the router and the mediator compute). */
function feeOf(name: Name, amount: bigint): bigint {
  const f = FEES[name];
  return f.feeFlat + (amount * BigInt(f.feePpm)) / 1_000_000n;
}
/** Fees of one payment of AMOUNT, per mediator: carol forwards AMOUNT to dave, bob forwards AMOUNT + carol's fee. */
const CAROL_FEE = feeOf("carol", AMOUNT);
const BOB_FEE = feeOf("bob", AMOUNT + CAROL_FEE);
const FEE_PER_PAYMENT = BOB_FEE + CAROL_FEE;

/** Every channel of `node`, keyed by the partner's lower-case address. */
async function channelsOf(node: NodeProcess): Promise<Map<string, ChannelJson>> {
  const { channels } = await node.api.call<{ channels: ChannelJson[] }>("GET", "/v1/channels");
  return new Map(channels.map((c) => [c.partner.toLowerCase(), c]));
}

/** ourBalance of every directed channel end of the line, e.g. "bob>carol" = bob's balance with carol. */
type Snapshot = Map<string, bigint>;

/**
 * Waits until no channel end of any node holds a lock (ourLocked and partnerLocked "0"), then returns every
 * end's ourBalance and how long the wait took.
 */
async function settledSnapshot(
  n: Record<Name, NodeProcess>,
): Promise<{ snapshot: Snapshot; waitedMs: number }> {
  const t0 = performance.now();
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    const snapshot: Snapshot = new Map();
    const pending: string[] = [];
    for (const name of NODES) {
      const channels = await channelsOf(n[name]);
      for (const other of NODES) {
        const c = channels.get(n[other].address.toLowerCase());
        if (!c) continue;
        snapshot.set(`${name}>${other}`, BigInt(c.ourBalance));
        if (c.ourLocked !== "0" || c.partnerLocked !== "0")
          pending.push(`${name}>${other} ours ${c.ourLocked} partner's ${c.partnerLocked}`);
      }
    }
    if (pending.length === 0) return { snapshot, waitedMs: performance.now() - t0 };
    if (Date.now() > deadline)
      throw new Error(`locks still pending after ${LOCK_WAIT_MS} ms: ${pending.join("; ")}`);
    await sleep(50);
  }
}

/** One routed `POST /v1/payments` alice -> dave; resolves with its latency (ms) and the payment. */
async function payOnce(
  alice: NodeProcess,
  dave: NodeProcess,
  token: string,
  paymentId: string,
): Promise<{ ms: number; payment: RoutedPaymentJson }> {
  const body = JSON.stringify({
    target: dave.address,
    token,
    amount: AMOUNT.toString(),
    maxFee: MAX_FEE.toString(),
    paymentId,
    mode: "routed",
  });
  const t0 = performance.now();
  const res = await fetch(`${alice.api.baseUrl}/v1/payments`, {
    method: "POST",
    headers: { authorization: `Bearer ${alice.api.token}`, "content-type": "application/json" },
    body,
  });
  const json = (await res.json().catch(() => ({}))) as Partial<RoutedPaymentJson> & {
    error?: { code: string; message: string } | null;
  };
  const ms = performance.now() - t0;
  if (res.status !== 201 || json.status !== "completed") {
    const why = json.error ? `${json.error.code}: ${json.error.message}` : (json.status ?? "");
    throw new Error(`payment ${paymentId} failed: HTTP ${res.status} ${why}`);
  }
  return { ms, payment: json as RoutedPaymentJson };
}

/**
 * `count` payments with `concurrency` requests in flight. Stops starting new ones after the first failure
 * and rethrows it once the requests in flight have returned.
 */
async function runPayments(
  alice: NodeProcess,
  dave: NodeProcess,
  token: string,
  count: number,
  concurrency: number,
  label: string,
): Promise<{ latencies: number[]; payments: RoutedPaymentJson[]; seconds: number }> {
  const { results, seconds } = await runConcurrently(count, concurrency, (i) =>
    payOnce(alice, dave, token, `${label}-${i}`),
  );
  return { latencies: results.map((r) => r.ms), payments: results.map((r) => r.payment), seconds };
}

/** Balance changes of a phase against what N payments of AMOUNT with the fee schedule must produce. */
function checkBalances(
  before: Snapshot,
  after: Snapshot,
  count: number,
  feesPaid: bigint,
  payments: RoutedPaymentJson[],
): BalanceCheck {
  const delta = (end: string) => (after.get(end) ?? 0n) - (before.get(end) ?? 0n);
  const n = BigInt(count);
  const aliceSpent = -delta("alice>bob");
  const daveReceived = delta("dave>carol");
  const bobEarned = delta("bob>alice") + delta("bob>carol");
  const carolEarned = delta("carol>bob") + delta("carol>dave");
  const feesReportedMatchSchedule =
    feesPaid === n * FEE_PER_PAYMENT && payments.every((p) => BigInt(p.fee) === FEE_PER_PAYMENT);
  const aliceExpected = n * AMOUNT + feesPaid;
  const daveExpected = n * AMOUNT;
  const bobExpected = n * BOB_FEE;
  const carolExpected = n * CAROL_FEE;
  return {
    ok:
      aliceSpent === aliceExpected &&
      daveReceived === daveExpected &&
      bobEarned === bobExpected &&
      carolEarned === carolExpected &&
      feesReportedMatchSchedule,
    aliceSpent: aliceSpent.toString(),
    aliceExpected: aliceExpected.toString(),
    daveReceived: daveReceived.toString(),
    daveExpected: daveExpected.toString(),
    bobEarned: bobEarned.toString(),
    bobExpected: bobExpected.toString(),
    carolEarned: carolEarned.toString(),
    carolExpected: carolExpected.toString(),
    feesReportedMatchSchedule,
  };
}

function printPhase(r: PhaseResult): void {
  const busy = r.cpu ? `, machine CPU ${r.cpu.machineBusyPercent} % busy` : "";
  console.log(`\nconcurrency ${r.concurrency} (load average ${r.loadAverage1m} at the end${busy})`);
  console.table([
    {
      N: r.payments,
      "total s": r.totalSeconds,
      "payments/s": r.paymentsPerSecond,
      "p50 ms": r.latencyMs.p50,
      "p90 ms": r.latencyMs.p90,
      "p99 ms": r.latencyMs.p99,
      "max ms": r.latencyMs.max,
      "fees paid (wei)": r.feesPaid,
      "node CPU ms/payment": r.cpu?.nodesMsPerPayment ?? "n/a",
      "balances ok": r.check.ok ? "yes" : "NO",
    },
  ]);
  if (!r.check.ok) console.log(r.check);
}

/** Warning and error lines (pino level >= 40) per node log, by message. */
function logWarnings(dir: string): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const name of NODES) {
    const counts: Record<string, number> = {};
    let text = "";
    try {
      text = readFileSync(join(dir, `${name}.log`), "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n")) {
      if (!line.startsWith("{")) continue;
      try {
        const rec = JSON.parse(line) as { level?: number; msg?: string };
        if ((rec.level ?? 0) >= 40) counts[rec.msg ?? "?"] = (counts[rec.msg ?? "?"] ?? 0) + 1;
      } catch {
        // not a log record
      }
    }
    out[name] = counts;
  }
  return out;
}

async function run(options: {
  n: number;
  concurrency: number[];
  warmup: number;
  dir?: string;
}): Promise<number> {
  // Each side of each channel holds twice what the whole run can move through it, in whole QTT.
  const paymentsTotal = BigInt(options.warmup + options.n * options.concurrency.length);
  const deposit = ((paymentsTotal * (AMOUNT + MAX_FEE) * 2n) / UNIT + 1n) * UNIT;
  const summary =
    `${options.n} payments per phase, concurrency ${options.concurrency.join(", ")}; ` +
    `deposits ${deposit / UNIT} QTT per side`;
  const children = "nodes and chain";
  return runDevnetBench(
    { name: "multihop", dir: options.dir, summary, children },
    async (devnet, dir, machine) => {
      const token = devnet.token;
      for (const name of NODES) await devnet.initNode(name, deposit * 3n);
      step("starting alice, bob (1000 + 100 ppm), carol (2000 + 250 ppm), dave (qrwp node start)");
      const started = await Promise.all(
        NODES.map((name) =>
          devnet!.startNode(name, {
            feeFlat: FEES[name].feeFlat,
            feePpm: FEES[name].feePpm,
            chainPollMs: 250,
          }),
        ),
      );
      const n = Object.fromEntries(NODES.map((name, i) => [name, started[i]!])) as Record<Name, NodeProcess>;

      const channelIds: Record<string, string> = {};
      for (const [a, b] of LINE) {
        step(`${a} opens a channel with ${b}; both deposit ${deposit / UNIT} QTT`);
        const view = await n[a].api.call<{ channelId: string }>("POST", "/v1/channels", {
          partner: n[b].address,
          partnerMultiaddr: n[b].multiaddr,
          token,
          deposit: deposit.toString(),
          settleTimeoutSeconds: 600,
        });
        await n[b].api.call("POST", `/v1/channels/${view.channelId}/deposit`, {
          totalDeposit: deposit.toString(),
        });
        channelIds[`${a}-${b}`] = view.channelId;
      }

      step("waiting for alice's router to find the 3-hop route to dave");
      const tRoute = performance.now();
      const q = new URLSearchParams({ target: n.dave.address, token, amount: AMOUNT.toString() });
      const routeDeadline = Date.now() + ROUTE_WAIT_MS;
      let routeFee: string | undefined;
      for (;;) {
        const { routes } = await n.alice.api.call<{ routes: { fee: string; hops: { address: string }[] }[] }>(
          "GET",
          `/v1/routes?${q}`,
        );
        const r = routes.find((x) => x.hops.length === 3);
        if (r) {
          routeFee = r.fee;
          break;
        }
        if (Date.now() > routeDeadline) throw new Error(`no 3-hop route after ${ROUTE_WAIT_MS} ms`);
        await sleep(250);
      }
      const routeFoundAfterMs = Math.round(performance.now() - tRoute);
      step(`  route found after ${routeFoundAfterMs} ms, fee ${routeFee} wei (schedule: ${FEE_PER_PAYMENT})`);
      if (BigInt(routeFee) !== FEE_PER_PAYMENT)
        throw new Error(`the route's fee ${routeFee} differs from the fee schedule's ${FEE_PER_PAYMENT}`);

      step(`warm-up: ${options.warmup} payments, ${WARMUP_CONCURRENCY} in flight`);
      await runPayments(n.alice, n.dave, token, options.warmup, WARMUP_CONCURRENCY, "warmup");

      const phases: PhaseResult[] = [];
      const windows: { name: string; payments: number; startUs: number; endUs: number }[] = [];
      for (const [phase, c] of options.concurrency.entries()) {
        const { snapshot: before } = await settledSnapshot(n);
        step(`phase: ${options.n} payments alice -> dave, concurrency ${c}`);
        const pids = NODES.map((name) => n[name].child.pid ?? 0);
        const cpu0 = cpuSample(pids);
        const startUs = nowUs();
        const { latencies, payments, seconds } = await runPayments(
          n.alice,
          n.dave,
          token,
          options.n,
          c,
          `p${phase}-c${c}`,
        );
        const cpu1 = cpuSample(pids);
        windows.push({ name: `concurrency ${c}`, payments: latencies.length, startUs, endUs: nowUs() });
        const { snapshot: after, waitedMs } = await settledSnapshot(n);
        const feesPaid = payments.reduce((s, p) => s + BigInt(p.fee), 0n);
        const r: PhaseResult = {
          concurrency: c,
          payments: latencies.length,
          totalSeconds: round2(seconds),
          paymentsPerSecond: round2(latencies.length / seconds),
          latencyMs: latencySummary(latencies),
          retriedPayments: payments.filter((p) => p.attempts.length > 1).length,
          loadAverage1m: round2(loadavg()[0] ?? NaN),
          cpu:
            cpu0 && cpu1
              ? {
                  nodesMsPerPayment: round2(((cpu1.nodes - cpu0.nodes) * 1000) / latencies.length),
                  machineBusyPercent: round2(
                    ((cpu1.machineBusy - cpu0.machineBusy) * 100) / (seconds * cpus().length),
                  ),
                }
              : null,
          locksClearedAfterMs: Math.round(waitedMs),
          feesPaid: feesPaid.toString(),
          check: checkBalances(before, after, latencies.length, feesPaid, payments),
        };
        phases.push(r);
        step(
          `  ${r.paymentsPerSecond} payments/s, p50 ${r.latencyMs.p50} ms, balances ${r.check.ok ? "ok" : "WRONG"}`,
        );
      }
      const warnings = logWarnings(dir);
      const profDir = process.env.QRWP_CPU_PROF_DIR;
      if (profDir) {
        const file = join(profDir, "phases.json");
        mkdirSync(profDir, { recursive: true }); // the nodes write their profiles only when they exit
        writeFileSync(file, JSON.stringify({ phases: windows }, null, 2) + "\n");
        step(`profiles in ${profDir}: npx tsx bench/profile-summary.ts ${profDir}/<node> --phases ${file}`);
      }

      console.log(
        `\nQRWP 3-hop payments alice -> bob -> carol -> dave, four node processes over libp2p ` +
          `(amount ${AMOUNT} wei, fee ${FEE_PER_PAYMENT} wei per payment: bob ${BOB_FEE}, carol ${CAROL_FEE})`,
      );
      console.log(
        `machine: ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, ${machine.platform}`,
      );
      for (const r of phases) printPhase(r);
      const allOk = phases.every((r) => r.check.ok);
      console.log(
        allOk
          ? "\nverified per phase: alice spent N * amount + fees, dave received N * amount, bob and carol " +
              "earned N * their fee, to the wei (after every lock was unlocked)"
          : "\nBALANCE CHECK FAILED (see above)",
      );
      for (const [name, counts] of Object.entries(warnings))
        if (Object.keys(counts).length > 0) console.log(`log warnings ${name}: ${JSON.stringify(counts)}`);

      writeResults(RESULTS_FILE, {
        benchmark: "multihop",
        date: new Date().toISOString(),
        machine,
        parameters: {
          topology: "alice -> bob -> carol -> dave",
          channelIds,
          paymentsPerPhase: options.n,
          concurrency: options.concurrency,
          warmupPayments: options.warmup,
          amountPerPaymentBaseUnits: AMOUNT.toString(),
          maxFeeBaseUnits: MAX_FEE.toString(),
          depositPerSideBaseUnits: deposit.toString(),
          fees: {
            bob: { feeFlat: FEES.bob.feeFlat.toString(), feePpm: FEES.bob.feePpm },
            carol: { feeFlat: FEES.carol.feeFlat.toString(), feePpm: FEES.carol.feePpm },
          },
          feePerPaymentBaseUnits: { bob: BOB_FEE.toString(), carol: CAROL_FEE.toString() },
          chainPollMs: 250,
        },
        routeFoundAfterMs,
        phases,
        logWarnings: warnings,
      });
      return allOk;
    },
  );
}

const program = new Command("bench:multihop")
  .description("3-hop routed payments per second across four QRWP node processes over libp2p")
  .option("--n <count>", "payments per phase (>= 1)", positiveInt, 200)
  .option("--concurrency <list>", "comma-separated requests in flight per phase", concurrencyList, [1, 4])
  .option(
    "--warmup <count>",
    "payments before the first phase, not measured",
    positiveInt,
    DEFAULT_WARMUP_PAYMENTS,
  )
  .option("--dir <path>", "directory for data and logs, kept after the run (default: a temp directory)")
  .action(async (opts: { n: number; concurrency: number[]; warmup: number; dir?: string }) => {
    process.exitCode = await run(opts);
  });
await program.parseAsync(process.argv);
