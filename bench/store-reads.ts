/**
 * Row decoding cost of the node store's hot reads (`npm run bench:store-reads`, never part of `npm test`).
 *
 * Opens a NodeStore on a temp file, stores one channel and `--proofs` balance proofs with 3 locks each, then
 * times `--n` calls (after a warm-up) of the reads a payment makes: `latestStoredProof` (the proof the next
 * one builds on), `getChannel`, and `pendingProofs` with 8 pending proofs. Prints microseconds per call and
 * writes bench/results/store-reads.json.
 *
 *   --n <count>   calls per read (default 50000)
 */
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { NodeStore } from "../node/store/store.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const n = Number(process.argv[process.argv.indexOf("--n") + 1] || 50_000);
const US = "0x1111111111111111111111111111111111111111";
const PARTNER = "0x2222222222222222222222222222222222222222";
const TOKEN = "0x3333333333333333333333333333333333333333";
const HUB = "0x4444444444444444444444444444444444444444";

const store = new NodeStore(join(mkdtempSync(join(tmpdir(), "qrwp-bench-store-")), "node.sqlite"));
store.insertChannel({
  channelId: 7n,
  partner: PARTNER,
  token: TOKEN,
  settleTimeoutSeconds: 600,
  ourDeposit: 10n ** 21n,
  partnerDeposit: 0n,
  ourWithdraw: 0n,
  partnerWithdraw: 0n,
  openedAtMs: 1,
  updatedAtMs: 1,
  state: "opened",
});
const locks = [1, 2, 3].map((i) => ({
  amount: BigInt(i),
  expiration: 1_900_000_000n,
  secretHash: `0x${i.toString(16).padStart(64, "0")}`,
}));
for (let nonce = 1; nonce <= 1000; nonce++) {
  store.insertBalanceProof(
    US,
    {
      proof: {
        chainId: 31337n,
        hub: HUB,
        channelId: 7n,
        nonce: BigInt(nonce),
        transferredAmount: BigInt(nonce),
        lockedAmount: 6n,
        locksRoot: `0x${"ab".repeat(32)}`,
      },
      signature: `0x${"cd".repeat(65)}`,
      pqSignature: new Uint8Array(3309),
    },
    { locks, status: nonce > 992 ? "pending" : "acked", message: new Uint8Array(600) },
  );
}

function time(name: string, fn: () => unknown): { read: string; microsPerCall: number } {
  for (let i = 0; i < 2000; i++) fn();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) fn();
  const micros = ((performance.now() - t0) * 1000) / n;
  return { read: name, microsPerCall: Number(micros.toFixed(2)) };
}
const rows = [
  time("latestStoredProof", () => store.latestStoredProof(7n, US)),
  time("getChannel", () => store.getChannel(7n)),
  time("pendingProofs (8)", () => store.pendingProofs(7n, US)),
];
store.close();
console.table(rows);
const out = join(ROOT, "bench", "results", "store-reads.json");
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify({ n, rows, node: process.version }, null, 2) + "\n");
