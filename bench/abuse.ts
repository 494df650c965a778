/**
 * What a stranger can do to an honest node (`npm run bench:abuse`), measured against the same run without
 * the attack. Starts a Hardhat chain and two `qrwp node start` processes with default limits: alice (the
 * victim) and bob, her channel partner, who pays her directly one payment at a time through his HTTP API
 * during every phase. The attacker is a separate process (bench/abuse-attacker.ts) over real libp2p:
 *
 *   baseline  no attack
 *   hello     forged hellos at a fixed --rate per second (default 200) over 10 connections
 *   solve     a stranger completing handshakes back to back, solving each puzzle honestly
 *   hold      a host dialing 4 new connections per second and holding every one it gets; at the end a new
 *             honest peer (carol) opens a channel with alice and pays her
 *
 * For each phase: bob's payment latency (p50/p99) and count, the CPU seconds of alice and of the attacker
 * (from /proc), and per attacker hello or handshake the CPU each side spent (alice's share of the honest
 * payments, at the baseline's CPU per payment, taken out). Prints a table and writes
 * bench/results/abuse.json. Exits 1 when a payment fails or carol cannot pay.
 *
 *   --seconds <n>  length of each phase (default 20)
 *   --rate <n>     forged hellos per second in the hello phase (default 200)
 *   --dir <path>   data directories and logs, kept after the run
 */
import "core-js/actual/promise/with-resolvers.js";
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { Command } from "commander";
import { parseUnits } from "ethers";
import { ROOT, type NodeProcess } from "../devnet/harness.js";
import { latencySummary, positiveInt, round2 } from "./common.js";
import { cpuSample, runDevnetBench, step, writeResults } from "./devnet-bench.js";

const RESULTS_FILE = join(ROOT, "bench", "results", "abuse.json");
const UNIT = parseUnits("1", 18);

interface AttackerCounts {
  sent: number;
  challenges: number;
  refused: number;
  handshakes: number;
  failures: number;
  held: number;
  dialFailures: number;
}

interface PhaseResult {
  phase: string;
  seconds: number;
  payments: number;
  failedPayments: number;
  latencyMs: ReturnType<typeof latencySummary>;
  p50VsBaseline: number | null;
  aliceCpuSeconds: number | null;
  attackerCpuSeconds: number | null;
  attacker: AttackerCounts | null;
  /** Alice's CPU for the attack alone: her phase CPU minus the honest payments' share (baseline ms/payment). */
  aliceAttackCpuSeconds: number | null;
  /** Per forged hello (hello) or completed handshake (solve), ms of CPU: alice's attack share and the attacker's. */
  perAttackMs: { alice: number; attacker: number } | null;
  /** hold phase: a new peer opened a channel with alice and paid while the attacker held its connections. */
  newPeer?: { paid: boolean; openAndPayMs: number };
}

/** Starts the attacker child and resolves once it is set up. */
async function startAttacker(
  args: string[],
): Promise<{ child: ChildProcess; done: Promise<AttackerCounts>; finish: () => void }> {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", join(ROOT, "bench", "abuse-attacker.ts"), ...args],
    {
      cwd: ROOT,
      stdio: ["pipe", "pipe", "inherit"],
    },
  );
  const lines = createInterface({ input: child.stdout! });
  const exited = new Promise<never>((_, reject) =>
    child.once("exit", (code) => reject(new Error(`attacker exited with code ${code}`))),
  );
  exited.catch(() => undefined);
  const event = (name: string) =>
    Promise.race([
      new Promise<AttackerCounts>((resolve) =>
        lines.on("line", (line) => {
          const msg = JSON.parse(line) as { event: string } & AttackerCounts;
          if (msg.event === name) resolve(msg);
        }),
      ),
      exited,
    ]);
  const ready = event("ready");
  const done = event("done");
  done.catch(() => undefined);
  await ready;
  return { child, done, finish: () => child.stdin?.end() };
}

async function main(opts: { seconds: number; rate: number; dir?: string }): Promise<number> {
  return runDevnetBench(
    {
      name: "abuse",
      dir: opts.dir,
      summary: `${opts.seconds} s per phase, ${opts.rate} forged hellos/s`,
      children: "the attacker, nodes and chain",
    },
    async (devnet, _dir, machine) => {
      await devnet.initNode("alice", 1000n * UNIT);
      await devnet.initNode("bob", 100_000n * UNIT);
      await devnet.initNode("carol", 1000n * UNIT);
      const [alice, bob] = await Promise.all([devnet.startNode("alice"), devnet.startNode("bob")]);
      await bob.api.call("POST", "/v1/channels", {
        partner: alice.address,
        partnerMultiaddr: alice.multiaddr,
        token: devnet.token,
        deposit: (10_000n * UNIT).toString(),
      });
      const alicePid = alice.child.pid!;
      const pay = async (): Promise<number> => {
        const t0 = performance.now();
        const p = await bob.api.call<{ status: string }>("POST", "/v1/payments", {
          target: alice.address,
          token: devnet.token,
          amount: "1000",
        });
        if (p.status !== "completed") throw new Error(`payment ${p.status}`);
        return performance.now() - t0;
      };
      for (let i = 0; i < 20; i++) await pay(); // warm-up

      /** Bob pays alice one at a time until `until` resolves; returns the latencies and failures. */
      const payWhile = async (until: Promise<unknown>) => {
        let running = true;
        void until.finally(() => (running = false));
        const latencies: number[] = [];
        let failed = 0;
        while (running) {
          try {
            latencies.push(await pay());
          } catch {
            failed++;
          }
        }
        return { latencies, failed };
      };

      const results: PhaseResult[] = [];
      let baselineMsPerPayment = 0;
      let baselineP50 = 0;
      for (const phase of ["baseline", "hello", "solve", "hold"] as const) {
        step(`phase ${phase}: ${opts.seconds} s`);
        let attacker: Awaited<ReturnType<typeof startAttacker>> | null = null;
        if (phase !== "baseline") {
          attacker = await startAttacker([
            "--target",
            alice.multiaddr,
            "--mode",
            phase,
            "--seconds",
            String(opts.seconds),
            "--rate",
            String(phase === "hold" ? 4 : opts.rate),
          ]);
        }
        const a0 = cpuSample([alicePid]);
        const x0 = attacker ? cpuSample([attacker.child.pid!]) : null;
        const t0 = performance.now();
        const until = attacker ? attacker.done : new Promise((r) => setTimeout(r, opts.seconds * 1000));
        const { latencies, failed } = await payWhile(until);
        const counts = attacker ? await attacker.done : null;
        const a1 = cpuSample([alicePid]);
        const x1 = attacker ? cpuSample([attacker.child.pid!]) : null;
        const seconds = (performance.now() - t0) / 1000;
        let newPeer: PhaseResult["newPeer"];
        if (phase === "hold") newPeer = await newPeerPays(devnet, alice);
        attacker?.finish();
        const aliceCpu = a0 && a1 ? a1.nodes - a0.nodes : null;
        const attackerCpu = x0 && x1 ? x1.nodes - x0.nodes : null;
        const summary = latencySummary(latencies);
        if (phase === "baseline") {
          baselineMsPerPayment = aliceCpu !== null ? (aliceCpu * 1000) / latencies.length : 0;
          baselineP50 = summary.p50;
        }
        const aliceAttackCpu =
          aliceCpu === null ? null : Math.max(0, aliceCpu - (latencies.length * baselineMsPerPayment) / 1000);
        const attacks = counts
          ? phase === "hello"
            ? counts.sent
            : phase === "solve"
              ? counts.handshakes
              : 0
          : 0;
        results.push({
          phase,
          seconds: round2(seconds),
          payments: latencies.length,
          failedPayments: failed,
          latencyMs: summary,
          p50VsBaseline: phase === "baseline" ? null : round2(summary.p50 / baselineP50),
          aliceCpuSeconds: aliceCpu === null ? null : round2(aliceCpu),
          attackerCpuSeconds: attackerCpu === null ? null : round2(attackerCpu),
          attacker: counts,
          aliceAttackCpuSeconds: aliceAttackCpu === null ? null : round2(aliceAttackCpu),
          perAttackMs:
            attacks > 0 && aliceAttackCpu !== null && attackerCpu !== null
              ? {
                  alice: round2((aliceAttackCpu * 1000) / attacks),
                  attacker: round2((attackerCpu * 1000) / attacks),
                }
              : null,
          ...(newPeer ? { newPeer } : {}),
        });
      }
      console.table(
        results.map((r) => ({
          phase: r.phase,
          payments: r.payments,
          failed: r.failedPayments,
          "p50 ms": r.latencyMs.p50,
          "p99 ms": r.latencyMs.p99,
          "p50 x": r.p50VsBaseline ?? "-",
          "alice cpu s": r.aliceCpuSeconds,
          "attacker cpu s": r.attackerCpuSeconds ?? "-",
          attacks: r.attacker
            ? r.phase === "hello"
              ? r.attacker.sent
              : r.phase === "solve"
                ? r.attacker.handshakes
                : r.attacker.held
            : "-",
          "alice ms/attack": r.perAttackMs?.alice ?? "-",
          "attacker ms/attack": r.perAttackMs?.attacker ?? "-",
        })),
      );
      const hold = results.find((r) => r.phase === "hold");
      if (hold?.newPeer)
        step(
          `hold: carol opened a channel and paid in ${hold.newPeer.openAndPayMs} ms (held ${hold.attacker?.held} connections)`,
        );
      writeResults(RESULTS_FILE, { machine, seconds: opts.seconds, rate: opts.rate, phases: results });
      return results.every((r) => r.failedPayments === 0) && hold?.newPeer?.paid === true;
    },
  );
}

/** Carol, a new peer, opens a channel with alice and pays her (while the attacker still holds connections). */
async function newPeerPays(
  devnet: Parameters<Parameters<typeof runDevnetBench>[1]>[0],
  alice: NodeProcess,
): Promise<{ paid: boolean; openAndPayMs: number }> {
  const t0 = performance.now();
  try {
    const carol = await devnet.startNode("carol");
    await carol.api.call("POST", "/v1/channels", {
      partner: alice.address,
      partnerMultiaddr: alice.multiaddr,
      token: devnet.token,
      deposit: UNIT.toString(),
    });
    const p = await carol.api.call<{ status: string }>("POST", "/v1/payments", {
      target: alice.address,
      token: devnet.token,
      amount: "7",
    });
    return { paid: p.status === "completed", openAndPayMs: round2(performance.now() - t0) };
  } catch (err) {
    step(`carol could not pay: ${err instanceof Error ? err.message : String(err)}`);
    return { paid: false, openAndPayMs: round2(performance.now() - t0) };
  }
}

const program = new Command()
  .name("bench:abuse")
  .option("--seconds <n>", "length of each phase", positiveInt, 20)
  .option("--rate <n>", "forged hellos per second in the hello phase", positiveInt, 200)
  .option("--dir <path>", "keep data directories and logs here")
  .action(async (opts: { seconds: number; rate: number; dir?: string }) => {
    process.exitCode = await main(opts);
  });
await program.parseAsync();
