/**
 * ML-DSA-65 (FIPS 204) as the project uses it (`npm run bench:mldsa`, never part of `npm test`).
 *
 * Over a pool of 32 key pairs and 32-byte digests signed with the balance-proof context ("qrwp-bp-v1", as
 * protocol/keys.ts `mldsaSign` does), times `--n` calls of:
 * - verify: `mldsaVerify(signature, digest, publicKey, context)`, the whole of protocol/keys.ts's check (what
 *   a watchtower runs per slot's evidence and per batch co-signature);
 * - verify (bare): `ml_dsa65.verify` of @noble/post-quantum alone, to show what the wrapper costs;
 * - verify, tampered: a signature with one flipped byte (refused; an attacker's junk costs the same or less);
 * - sign: `mldsaSign` (hedged), for scale.
 * Each figure is the median of `--rounds` rounds, in µs of CPU time per call (user + system of this process:
 * steady when other work shares the 2 cores, which wall time is not), calls per CPU second and wall µs per call.
 * With `--pool <sizes>`, it also times `MldsaVerifyPool` (host/mldsa-verify-pool.ts): `--n` verifications in
 * flight at once over that many worker threads, in verifications per wall second (the load is printed with it).
 * Writes bench/results/mldsa.json.
 *
 *   --n <count>        calls per operation and round (default 300)
 *   --rounds <count>   rounds (default 3)
 *   --pool <sizes>     worker-pool sizes to time, comma-separated (default "1,2"; "0" for none)
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { cpus, loadavg } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ml_dsa65 } from "@noble/post-quantum/ml-dsa.js";
import { Command } from "commander";
import { MLDSA_CONTEXT_BALANCE_PROOF, mldsaSign, mldsaVerify } from "../protocol/index.js";
import { MldsaVerifyPool } from "../host/mldsa-verify-pool.js";
import { countList, positiveInt } from "./common.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const RESULTS_FILE = join(ROOT, "bench", "results", "mldsa.json");
const POOL = 32;

const opts = new Command("bench:mldsa")
  .option("--n <count>", "calls per operation and round", positiveInt, 300)
  .option("--rounds <count>", "rounds", positiveInt, 3)
  .option("--pool <sizes>", "worker-pool sizes to time (0: none)", countList, [1, 2])
  .parse()
  .opts<{ n: number; rounds: number; pool: number[] }>();

const context = new TextEncoder().encode(MLDSA_CONTEXT_BALANCE_PROOF);
const pool = Array.from({ length: POOL }, () => {
  const { publicKey, secretKey } = ml_dsa65.keygen(new Uint8Array(randomBytes(32)));
  const digest = new Uint8Array(randomBytes(32));
  const signature = mldsaSign(digest, secretKey, MLDSA_CONTEXT_BALANCE_PROOF);
  const tampered = Uint8Array.from(signature);
  tampered[100]! ^= 0x01;
  return { publicKey, secretKey, digest, signature, tampered };
});
for (const p of pool) {
  if (!mldsaVerify(p.signature, p.digest, p.publicKey, MLDSA_CONTEXT_BALANCE_PROOF))
    throw new Error("bad pool");
  if (mldsaVerify(p.tampered, p.digest, p.publicKey, MLDSA_CONTEXT_BALANCE_PROOF))
    throw new Error("bad pool");
}

type Op = { op: string; fn: (i: number) => unknown };
const ops: Op[] = [
  {
    op: "verify",
    fn: (i) =>
      mldsaVerify(pool[i]!.signature, pool[i]!.digest, pool[i]!.publicKey, MLDSA_CONTEXT_BALANCE_PROOF),
  },
  {
    op: "verify (bare)",
    fn: (i) => ml_dsa65.verify(pool[i]!.signature, pool[i]!.digest, pool[i]!.publicKey, { context }),
  },
  {
    op: "verify, tampered",
    fn: (i) =>
      mldsaVerify(pool[i]!.tampered, pool[i]!.digest, pool[i]!.publicKey, MLDSA_CONTEXT_BALANCE_PROOF),
  },
  { op: "sign", fn: (i) => mldsaSign(pool[i]!.digest, pool[i]!.secretKey, MLDSA_CONTEXT_BALANCE_PROOF) },
];

let cursor = 0;
function time(fn: (i: number) => unknown, count: number): { cpu: number; wall: number } {
  for (let i = 0; i < Math.min(20, count); i++) fn(cursor++ % POOL);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < count; i++) fn(cursor++ % POOL);
  const wall = ((performance.now() - t0) * 1000) / count;
  const { user, system } = process.cpuUsage(cpu0);
  return { cpu: (user + system) / count, wall };
}

const samples = new Map<Op, Array<{ cpu: number; wall: number }>>(ops.map((o) => [o, []]));
for (let round = 0; round < opts.rounds; round++) {
  for (const o of round % 2 === 0 ? ops : [...ops].reverse()) {
    // Signing is ~3-5x a verification: fewer calls keep a round short.
    samples.get(o)!.push(time(o.fn, o.op === "sign" ? Math.max(20, Math.ceil(opts.n / 4)) : opts.n));
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rows = ops.map((o) => {
  const cpu = median(samples.get(o)!.map((r) => r.cpu));
  const wall = median(samples.get(o)!.map((r) => r.wall));
  return {
    op: o.op,
    cpuMicrosPerCall: Math.round(cpu),
    callsPerCpuSecond: Math.round(1e6 / cpu),
    wallMicrosPerCall: Math.round(wall),
    rounds: samples.get(o)!.map((r) => ({ cpu: Math.round(r.cpu), wall: Math.round(r.wall) })),
  };
});

/** Verifications per wall second with `n` in flight over a pool of `size` threads (median of the rounds). */
async function timePool(
  size: number,
): Promise<{ poolSize: number; verifiesPerSecond: number; rounds: number[] }> {
  const verifier = new MldsaVerifyPool({ size });
  try {
    const one = (i: number) =>
      verifier.verify(
        pool[i % POOL]!.signature,
        pool[i % POOL]!.digest,
        pool[i % POOL]!.publicKey,
        MLDSA_CONTEXT_BALANCE_PROOF,
      );
    await Promise.all(Array.from({ length: 4 * size }, (_, i) => one(i))); // threads started and warm
    const perSecond: number[] = [];
    for (let round = 0; round < opts.rounds; round++) {
      const t0 = performance.now();
      const ok = await Promise.all(Array.from({ length: opts.n }, (_, i) => one(i)));
      perSecond.push(Math.round((opts.n * 1000) / (performance.now() - t0)));
      if (!ok.every(Boolean)) throw new Error("the pool refused a valid signature");
    }
    return { poolSize: size, verifiesPerSecond: median(perSecond), rounds: perSecond };
  } finally {
    await verifier.stop();
  }
}
const pools = [];
for (const size of opts.pool.filter((s) => s > 0)) pools.push(await timePool(size));

console.table(rows.map(({ rounds: _rounds, ...r }) => r));
if (pools.length > 0) console.table(pools.map(({ rounds: _rounds, ...p }) => p));
console.log(
  `load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")} on ${cpus().length} cores`,
);
mkdirSync(dirname(RESULTS_FILE), { recursive: true });
writeFileSync(
  RESULTS_FILE,
  JSON.stringify(
    {
      options: opts,
      library: "@noble/post-quantum ml_dsa65 (pure JS)",
      rows,
      pools,
      machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version, loadavg: loadavg() },
    },
    null,
    2,
  ) + "\n",
);
