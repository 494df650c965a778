/**
 * The frame every benchmark over a local devnet shares (`bench:multihop`, `bench:paywall`): the run
 * directory, the machine's figures, a Hardhat chain with the contracts deployed (`Devnet.start`), a graceful
 * stop on SIGINT/SIGTERM (exit 130), the JSON results file, and cleanup (data removed after a successful run
 * unless `--dir` was given).
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { Devnet } from "../devnet/harness.js";
import { round2 } from "./common.js";

/** A progress line on stderr. */
export const step = (msg: string): boolean => process.stderr.write(`» ${msg}\n`);
/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What the figures were measured on. */
export interface MachineInfo {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  platform: string;
  loadAverage1mAtStart: number;
}

/** CPU model, core count, memory (GiB), Node version, platform and the 1-minute load average now. */
export function machineInfo(): MachineInfo {
  return {
    cpu: cpus()[0]?.model ?? "unknown",
    cores: cpus().length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    loadAverage1mAtStart: round2(loadavg()[0] ?? NaN),
  };
}

/** Linux clock ticks per second (/proc times are in ticks). */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/**
 * CPU accounting from /proc (Linux; null elsewhere): seconds of CPU the whole machine was busy, and user +
 * system seconds of each of our node processes. Shows how much other work shared the cores with the bench.
 */
export function cpuSample(pids: number[]): { machineBusy: number; nodes: number } | null {
  try {
    const fields = readFileSync("/proc/stat", "utf8")
      .split("\n")[0]!
      .trim()
      .split(/\s+/)
      .slice(1)
      .map(Number);
    const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
    const total = fields.slice(0, 8).reduce((a, b) => a + b, 0);
    let nodes = 0;
    for (const pid of pids) {
      // Fields after the parenthesized command name: state is [0], utime [11], stime [12].
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      nodes += Number(rest[11]) + Number(rest[12]);
    }
    return { machineBusy: (total - idle) / CLK_TCK, nodes: nodes / CLK_TCK };
  } catch {
    return null;
  }
}

/** Writes `results` as pretty JSON to `file` (creating bench/results/) and says so. */
export function writeResults(file: string, results: unknown): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(results, null, 2) + "\n");
  step(`wrote ${file}`);
}

/**
 * Runs `body` against a fresh devnet in `options.dir` (kept) or a new temp directory (removed after
 * success). `body` returns whether every check passed.
 * @returns the process exit code: 0 (all checks passed), 1 (a check failed or the run threw), or the
 *   process exits 130 on SIGINT/SIGTERM after stopping every child process.
 */
export async function runDevnetBench(
  options: { name: string; dir?: string | undefined; summary: string; children: string },
  body: (devnet: Devnet, dir: string, machine: MachineInfo) => Promise<boolean>,
): Promise<number> {
  const dir = options.dir ? resolve(options.dir) : mkdtempSync(join(tmpdir(), `qrwp-bench-${options.name}-`));
  const machine = machineInfo();
  step(`bench directory ${dir}; ${options.summary}`);
  let devnet: Devnet | undefined;
  let stopped: Promise<void> | undefined;
  let interrupted = false;
  let succeeded = false;
  const cleanup = () => (stopped ??= devnet ? devnet.stop() : Promise.resolve());
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    step(`interrupted: stopping ${options.children}`);
    // A devnet still starting is stopped as soon as Devnet.start returns (below).
    if (devnet) void cleanup().finally(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    step("starting hardhat node and deploying Bridge, SecretRegistry, ChannelHub, TestToken");
    devnet = await Devnet.start(dir);
    if (interrupted) {
      await cleanup();
      process.exit(130);
    }
    succeeded = await body(devnet, dir, machine);
    return succeeded ? 0 : 1;
  } catch (err) {
    if (!interrupted)
      console.error(`bench failed: ${err instanceof Error ? err.message : String(err)} (logs in ${dir})`);
    return 1;
  } finally {
    step(`stopping ${options.children}`);
    await cleanup();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if (options.dir) step(`data and logs kept in ${dir}`);
    else if (succeeded) rmSync(dir, { recursive: true, force: true });
  }
}
