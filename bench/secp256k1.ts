/**
 * secp256k1 on the hot path, native libsecp256k1 against noble (`npm run bench:secp256k1`, never part of
 * `npm test`).
 *
 * Over a pool of 256 random keys and digests (half of them EIP-712 balance-proof digests), times `--n` calls of:
 * - sign: `signDigestWith(backend, digest, key)`, the whole of `signDigest` (RFC 6979, low s, 0x-hex `r||s||v`);
 * - recover: `recoverDigestSignerWith(backend, digest, signature)`, the whole of `recoverDigestSigner` (hex
 *   parse, v/r/s checks, recovery, keccak, EIP-55);
 * and the backend's primitive alone (`backend.sign`, `backend.recover`) to show what the wrapper costs, plus the
 * recovery as it was before the native backend (noble, compressed key decompressed again, ethers' getAddress).
 * The pool's 256 signers fit keys.ts's cache of checksummed addresses (1,024), as a node's partners do; "recover,
 * 4096 signers" cycles through more signers than it holds (a watchtower's many clients), so every call computes
 * the EIP-55 checksum.
 * Backends alternate for `--rounds` rounds; each figure is the median round. Prints µs of CPU time per call
 * (user + system of this process: steady when other work shares the 2 cores, which wall time is not), calls
 * per CPU second and wall µs per call, and writes bench/results/secp256k1.json.
 *
 *   --n <count>       calls per operation and round (default 5000)
 *   --rounds <count>  rounds, backends alternating (default 3)
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { cpus, loadavg } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { keccak_256 } from "@noble/hashes/sha3.js";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { Command } from "commander";
import { getAddress, hexlify } from "ethers";
import {
  balanceProofDigest,
  nativeSecp256k1,
  nobleSecp256k1,
  recoverDigestSignerWith,
  secp256k1Backend,
  secp256k1FallbackReason,
  signDigestWith,
  type Secp256k1Primitives,
} from "../protocol/index.js";
import { positiveInt } from "./common.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const RESULTS_FILE = join(ROOT, "bench", "results", "secp256k1.json");
const POOL = 256;

const opts = new Command("bench:secp256k1")
  .option("--n <count>", "calls per operation and round", positiveInt, 5000)
  .option("--rounds <count>", "rounds, backends alternating", positiveInt, 3)
  .parse()
  .opts<{ n: number; rounds: number }>();

if (nativeSecp256k1 === undefined) {
  console.error(`the native secp256k1 binding did not load: ${secp256k1FallbackReason()}`);
  process.exit(1);
}
const native = nativeSecp256k1;

const pool = Array.from({ length: POOL }, (_, i) => {
  const sk = secp256k1.utils.randomSecretKey();
  const digest =
    i % 2 === 0
      ? balanceProofDigest({
          chainId: 31337n,
          hub: getAddress(hexlify(randomBytes(20))),
          channelId: BigInt(i + 1),
          nonce: BigInt(i + 1),
          transferredAmount: 10n ** 18n * BigInt(i),
          lockedAmount: 0n,
          locksRoot: `0x${"00".repeat(32)}`,
        })
      : new Uint8Array(randomBytes(32));
  const signature = signDigestWith(nobleSecp256k1, digest, sk);
  const raw = hexToBytes(signature.slice(2));
  return { sk, digest, signature, rs: raw.subarray(0, 64), recovery: raw[64]! - 27 };
});

/** More signers than keys.ts caches checksummed addresses for. */
const coldPool = Array.from({ length: 4096 }, () => {
  const digest = new Uint8Array(randomBytes(32));
  return { digest, signature: signDigestWith(native, digest, secp256k1.utils.randomSecretKey()) };
});

/** `recoverDigestSigner` as it was before the native backend (main at e83e002), without its checks. */
function recoverBefore(digest: Uint8Array, signature: string): string {
  const raw = hexToBytes(signature.slice(2));
  const recovered = new Uint8Array(65);
  recovered[0] = raw[64]! - 27;
  recovered.set(raw.subarray(0, 64), 1);
  const compressed = secp256k1.recoverPublicKey(recovered, digest, { prehash: false });
  const uncompressed = secp256k1.Point.fromBytes(compressed).toBytes(false);
  return getAddress(`0x${bytesToHex(keccak_256(uncompressed.subarray(1)).subarray(12))}`);
}

type Op = { backend: string; op: string; fn: (i: number) => unknown };
const ops = (b: Secp256k1Primitives): Op[] => [
  { backend: b.name, op: "sign", fn: (i) => signDigestWith(b, pool[i]!.digest, pool[i]!.sk) },
  {
    backend: b.name,
    op: "recover",
    fn: (i) => recoverDigestSignerWith(b, pool[i]!.digest, pool[i]!.signature),
  },
  { backend: b.name, op: "sign (primitive)", fn: (i) => b.sign(pool[i]!.digest, pool[i]!.sk) },
  {
    backend: b.name,
    op: "recover (primitive)",
    fn: (i) => b.recover(pool[i]!.digest, pool[i]!.rs, pool[i]!.recovery),
  },
  {
    backend: b.name,
    op: "recover, 4096 signers",
    fn: (i) => recoverDigestSignerWith(b, coldPool[i]!.digest, coldPool[i]!.signature),
  },
];
const before: Op = {
  backend: "noble, before",
  op: "recover",
  fn: (i) => recoverBefore(pool[i]!.digest, pool[i]!.signature),
};

// Every path gives the same answers before anything is timed.
for (const { sk, digest, signature } of pool) {
  const address = recoverBefore(digest, signature);
  if (
    signDigestWith(native, digest, sk) !== signature ||
    recoverDigestSignerWith(native, digest, signature) !== address ||
    recoverDigestSignerWith(nobleSecp256k1, digest, signature) !== address
  ) {
    throw new Error("native and noble disagree");
  }
}

/**
 * Microseconds per call of `fn` over `count` calls, after a warm-up: CPU time of this process (user + system,
 * steady when other processes share the cores) and wall time. `fn` gets the index into its pool.
 */
let cursor = 0;
function time(fn: (i: number) => unknown, count: number, poolSize: number): { cpu: number; wall: number } {
  for (let i = 0; i < Math.min(500, count); i++) fn(cursor++ % poolSize);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < count; i++) fn(cursor++ % poolSize);
  const wall = ((performance.now() - t0) * 1000) / count;
  const { user, system } = process.cpuUsage(cpu0);
  return { cpu: (user + system) / count, wall };
}

const all = [...ops(native), ...ops(nobleSecp256k1), before];
const samples = new Map<Op, Array<{ cpu: number; wall: number }>>(all.map((o) => [o, []]));
for (let round = 0; round < opts.rounds; round++) {
  // Alternate the order so neither backend always runs on a warmer (or busier) machine.
  const order = round % 2 === 0 ? all : [...all].reverse();
  for (const o of order) {
    // noble is ~10-40x slower: fewer calls keep a round short, the figure per call is what counts.
    const count = o.backend === "native" ? opts.n : Math.max(200, Math.ceil(opts.n / 10));
    samples.get(o)!.push(time(o.fn, count, o.op === "recover, 4096 signers" ? coldPool.length : POOL));
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rows = all.map((o) => {
  const cpu = median(samples.get(o)!.map((r) => r.cpu));
  const wall = median(samples.get(o)!.map((r) => r.wall));
  return {
    backend: o.backend,
    op: o.op,
    cpuMicrosPerCall: Number(cpu.toFixed(1)),
    callsPerCpuSecond: Math.round(1e6 / cpu),
    wallMicrosPerCall: Number(wall.toFixed(1)),
    rounds: samples.get(o)!.map((r) => ({ cpu: Number(r.cpu.toFixed(1)), wall: Number(r.wall.toFixed(1)) })),
  };
});
const us = (backend: string, op: string): number =>
  rows.find((r) => r.backend === backend && r.op === op)!.cpuMicrosPerCall;
const speedup = {
  sign: Number((us("noble", "sign") / us("native", "sign")).toFixed(1)),
  recover: Number((us("noble", "recover") / us("native", "recover")).toFixed(1)),
  recoverVsBefore: Number((us("noble, before", "recover") / us("native", "recover")).toFixed(1)),
};

console.log(`selected backend in this process: ${secp256k1Backend()}`);
console.table(rows.map(({ rounds: _rounds, ...r }) => r));
console.log(
  `native is ${speedup.sign}x noble at signing, ${speedup.recover}x at recovering ` +
    `(${speedup.recoverVsBefore}x the recovery before the native backend)`,
);
mkdirSync(dirname(RESULTS_FILE), { recursive: true });
writeFileSync(
  RESULTS_FILE,
  JSON.stringify(
    {
      options: opts,
      selected: secp256k1Backend(),
      rows,
      speedup,
      machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version, loadavg: loadavg() },
    },
    null,
    2,
  ) + "\n",
);
