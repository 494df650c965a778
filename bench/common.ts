/** Helpers shared by the benchmarks: argument parsers, latency statistics, a bounded-concurrency runner. */
import { readFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { InvalidArgumentError } from "commander";

/** An integer >= 1. */
export function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(n) || n < 1)
    throw new InvalidArgumentError("must be an integer >= 1");
  return n;
}

/** A comma-separated list of integers >= 1 (e.g. concurrency levels "1,4"). */
export function concurrencyList(value: string): number[] {
  return value.split(",").map((v) => positiveInt(v.trim()));
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: readonly number[], p: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? NaN;
}

/** `v` rounded to two decimals (for printed figures). */
export const round2 = (v: number): number => Math.round(v * 100) / 100;

/** p50/p90/p99/max/mean of latencies in ms, rounded to 0.01 ms. */
export function latencySummary(latencies: readonly number[]): {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
} {
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    p50: round2(percentile(sorted, 50)),
    p90: round2(percentile(sorted, 90)),
    p99: round2(percentile(sorted, 99)),
    max: round2(sorted[sorted.length - 1] ?? NaN),
    mean: round2(sorted.reduce((a, b) => a + b, 0) / sorted.length),
  };
}

/**
 * Runs `task(0..count-1)` with `concurrency` in flight. Stops starting new tasks after the first failure and
 * rethrows it once the tasks in flight returned. Returns the results in completion order and the wall time (s).
 */
export async function runConcurrently<T>(
  count: number,
  concurrency: number,
  task: (i: number) => Promise<T>,
): Promise<{ results: T[]; seconds: number }> {
  const results: T[] = [];
  let next = 0;
  let failure: unknown;
  const worker = async () => {
    while (next < count && failure === undefined) {
      const i = next++;
      try {
        results.push(await task(i));
      } catch (err) {
        failure ??= err;
      }
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  const seconds = (performance.now() - t0) / 1000;
  if (failure !== undefined) throw failure;
  return { results, seconds };
}

/**
 * CPU time (user + system, ms) a process has used, all threads and its main thread, from /proc (Linux, 100
 * ticks/s); NaN elsewhere. Benches report node CPU per payment with it.
 */
export function processCpuMs(pid: number | undefined): { all: number; main: number } {
  const read = (file: string) => {
    try {
      const fields = readFileSync(file, "utf8").split(") ")[1]!.split(" ");
      return (Number(fields[11]) + Number(fields[12])) * 10; // utime, stime (fields 14, 15 of stat(5))
    } catch {
      return NaN;
    }
  };
  return { all: read(`/proc/${pid}/stat`), main: read(`/proc/${pid}/task/${pid}/stat`) };
}

/** The 1-minute load average and the core count: what the machine was doing during a phase. */
export function machineLoad(): { loadAvg1m: number; cores: number } {
  return { loadAvg1m: round2(loadavg()[0] ?? Number.NaN), cores: cpus().length };
}

/** A comma-separated list of counts per phase; the last one repeats for later phases. */
export function countList(value: string): number[] {
  return value.split(",").map((v) => positiveInt(v.trim()));
}

/** The count of phase `i` from a {@link countList}. */
export const countAt = (counts: readonly number[], i: number): number =>
  counts[Math.min(i, counts.length - 1)] as number;
