/**
 * Hash-time locks (HTLCs) and their on-chain commitment (Raiden spec "pending locks"; BOLT 2 HTLCs).
 *
 * A lock is `(uint256 amount, uint256 expiration, bytes32 secretHash)`:
 * - `amount` in token base units;
 * - `expiration` in unix seconds of `block.timestamp`: the lock pays the receiver only if its secret is
 *   registered in the SecretRegistry strictly before `expiration`;
 * - `secretHash = sha256(secret)` with a 32-byte `secret` (the payment hash / preimage of Lightning).
 *
 * Packed form `abi.encodePacked(amount, expiration, secretHash)` = 96 bytes; a direction's
 * `locksRoot = keccak256(concat(packed locks in insertion order))`, or `bytes32(0)` with no locks, exactly
 * as `ChannelHub.unlock` recomputes it. At most {@link MAX_PENDING_LOCKS} locks per direction.
 */
import { keccak_256 } from "@noble/hashes/sha3.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, hexToBytes, randomBytes } from "@noble/hashes/utils.js";
import { abiWord } from "./eip712.js";
import { EMPTY_LOCKS_ROOT, MAX_PENDING_LOCKS, UINT256_MAX } from "./constants.js";
import { QrwpError } from "./errors.js";
import { assertBytes32Hex, assertUint256 } from "./validation.js";

/** One pending hash-time lock. */
export interface Lock {
  /** Locked amount in token base units (uint256, > 0). */
  amount: bigint;
  /** Unix seconds; the secret must be registered on-chain strictly before this time. */
  expiration: bigint;
  /** sha256 of the 32-byte secret, 0x-hex lower case. */
  secretHash: string;
}

/** Size of one packed lock in bytes. */
export const PACKED_LOCK_BYTES = 96;

function readUint256(bytes: Uint8Array, offset: number): bigint {
  let v = 0n;
  for (let i = 0; i < 32; i++) v = (v << 8n) | BigInt(bytes[offset + i] as number);
  return v;
}

/**
 * Validates a lock's fields.
 * @throws QrwpError INVALID_ARGUMENT naming `${field}.amount` / `.expiration` / `.secretHash`.
 */
export function assertLock(lock: Lock, field = "lock"): void {
  assertUint256(lock.amount, `${field}.amount`);
  assertUint256(lock.expiration, `${field}.expiration`);
  assertBytes32Hex(lock.secretHash, `${field}.secretHash`);
  if (lock.amount === 0n)
    throw new QrwpError("INVALID_ARGUMENT", "lock amount must be > 0", { field: `${field}.amount` });
}

/** `abi.encodePacked(amount, expiration, secretHash)`, 96 bytes. @throws QrwpError INVALID_ARGUMENT */
export function packLock(lock: Lock): Uint8Array {
  assertLock(lock);
  const out = new Uint8Array(PACKED_LOCK_BYTES);
  out.set(abiWord(lock.amount), 0);
  out.set(abiWord(lock.expiration), 32);
  out.set(hexToBytes(lock.secretHash.slice(2)), 64);
  return out;
}

/** Concatenation of the packed locks, in order (what `ChannelHub.unlock` takes as `locks`). */
export function packLocks(locks: readonly Lock[]): Uint8Array {
  const out = new Uint8Array(locks.length * PACKED_LOCK_BYTES);
  locks.forEach((lock, i) => out.set(packLock(lock), i * PACKED_LOCK_BYTES));
  return out;
}

/**
 * Inverse of {@link packLocks}.
 * @throws QrwpError INVALID_ARGUMENT if the length is not a multiple of 96 or exceeds 160 locks.
 */
export function unpackLocks(bytes: Uint8Array): Lock[] {
  if (bytes.length % PACKED_LOCK_BYTES !== 0 || bytes.length / PACKED_LOCK_BYTES > MAX_PENDING_LOCKS) {
    throw new QrwpError("INVALID_ARGUMENT", "packed locks have a bad length", {
      field: "locks",
      length: bytes.length,
    });
  }
  const locks: Lock[] = [];
  for (let o = 0; o < bytes.length; o += PACKED_LOCK_BYTES) {
    locks.push({
      amount: readUint256(bytes, o),
      expiration: readUint256(bytes, o + 32),
      secretHash: `0x${bytesToHex(bytes.subarray(o + 64, o + 96))}`,
    });
  }
  return locks;
}

/** `keccak256(concat(packed locks))`, or `bytes32(0)` for no locks. 0x-hex. */
export function computeLocksRoot(locks: readonly Lock[]): string {
  if (locks.length === 0) return EMPTY_LOCKS_ROOT;
  return `0x${bytesToHex(keccak_256(packLocks(locks)))}`;
}

/** Sum of the locks' amounts (the balance proof's `lockedAmount`). @throws QrwpError INVALID_ARGUMENT on overflow */
export function lockedAmountOf(locks: readonly Lock[]): bigint {
  let total = 0n;
  for (const l of locks) total += l.amount;
  if (total > UINT256_MAX)
    throw new QrwpError("INVALID_ARGUMENT", "locked amount overflows uint256", { field: "lockedAmount" });
  return total;
}

/** `sha256(secret)` as 0x-hex (the SecretRegistry's key). @throws QrwpError INVALID_ARGUMENT unless 32 bytes */
export function secretHashOf(secret: string): string {
  assertBytes32Hex(secret, "secret");
  return `0x${bytesToHex(sha256(hexToBytes(secret.slice(2))))}`;
}

/** A fresh random 32-byte secret (CSPRNG), 0x-hex. Never log it. */
export function randomSecret(): string {
  return `0x${bytesToHex(randomBytes(32))}`;
}
