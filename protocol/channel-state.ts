/**
 * The pure state of one direction of a channel ("channel end", Raiden's `NettingChannelEndState`) and the
 * transitions a balance proof may make. Both sides use the same functions: the sender to build its next
 * balance proof, the receiver to check the one it got (the receiver recomputes the locksroot from its own
 * copy of the sender's pending locks, so a wrong locksroot, amount or lock list is refused).
 *
 * Transitions (each increments the nonce by one; the caller may raise it further after a refused proof):
 * - {@link withDirect}: `transferredAmount += amount` (DirectTransfer);
 * - {@link withLock}: a new pending lock (LockedTransfer);
 * - {@link withUnlock}: the lock's amount moves from locked to transferred (Unlock, the secret is known);
 * - {@link withoutLock}: the lock is dropped (LockExpired, or a lock the receiver declined).
 */
import type { BalanceData, BalanceProof } from "./balance-proof.js";
import { MAX_PENDING_LOCKS } from "./constants.js";
import { QrwpError } from "./errors.js";
import { computeLocksRoot, lockedAmountOf, type Lock } from "./locks.js";

/** One direction's state: what its sender has committed to in its latest balance proof. */
export interface ChannelEnd {
  /** Nonce of the latest balance proof (0 = none). */
  nonce: bigint;
  /** Total transferred to the partner so far, token base units. */
  transferredAmount: bigint;
  /** Pending locks in insertion order (at most 160). */
  locks: Lock[];
}

/** The state before any balance proof. */
export const EMPTY_CHANNEL_END: ChannelEnd = Object.freeze({
  nonce: 0n,
  transferredAmount: 0n,
  locks: [],
}) as ChannelEnd;

/** `lockedAmount` / `locksRoot` / `transferredAmount` of an end, as a balance proof commits to them. */
export function balanceDataOf(end: ChannelEnd): BalanceData {
  return {
    transferredAmount: end.transferredAmount,
    lockedAmount: lockedAmountOf(end.locks),
    locksRoot: computeLocksRoot(end.locks),
  };
}

/** The pending lock with this secret hash, or undefined. */
export function findLock(end: ChannelEnd, secretHash: string): Lock | undefined {
  const h = secretHash.toLowerCase();
  return end.locks.find((l) => l.secretHash.toLowerCase() === h);
}

/** Next end after a direct transfer of `amount` (> 0). */
export function withDirect(end: ChannelEnd, amount: bigint): ChannelEnd {
  if (amount <= 0n) throw new QrwpError("INVALID_TRANSFER", "amount must be > 0", { field: "amount" });
  return { nonce: end.nonce + 1n, transferredAmount: end.transferredAmount + amount, locks: end.locks };
}

/**
 * Next end with `lock` added.
 * @throws QrwpError TOO_MANY_LOCKS at the 161st lock; INVALID_TRANSFER if a lock with this secret hash is
 *   already pending (one lock per payment hash and direction) or the amount is 0.
 */
export function withLock(end: ChannelEnd, lock: Lock): ChannelEnd {
  if (end.locks.length >= MAX_PENDING_LOCKS) {
    throw new QrwpError("TOO_MANY_LOCKS", `at most ${MAX_PENDING_LOCKS} pending locks per direction`, {
      field: "lock",
      pending: end.locks.length,
    });
  }
  if (lock.amount <= 0n)
    throw new QrwpError("INVALID_TRANSFER", "lock amount must be > 0", { field: "lock.amount" });
  if (findLock(end, lock.secretHash)) {
    throw new QrwpError("INVALID_TRANSFER", "a lock with this secret hash is already pending", {
      field: "lock.secretHash",
    });
  }
  const copy: Lock = {
    amount: lock.amount,
    expiration: lock.expiration,
    secretHash: lock.secretHash.toLowerCase(),
  };
  return { nonce: end.nonce + 1n, transferredAmount: end.transferredAmount, locks: [...end.locks, copy] };
}

/** Next end with the lock for `secretHash` paid out (moved from locked to transferred). @throws QrwpError PAYMENT_NOT_FOUND */
export function withUnlock(end: ChannelEnd, secretHash: string): ChannelEnd {
  const lock = requireLock(end, secretHash);
  return {
    nonce: end.nonce + 1n,
    transferredAmount: end.transferredAmount + lock.amount,
    locks: end.locks.filter((l) => l !== lock),
  };
}

/** Next end with the lock for `secretHash` removed (expired or declined). @throws QrwpError PAYMENT_NOT_FOUND */
export function withoutLock(end: ChannelEnd, secretHash: string): ChannelEnd {
  const lock = requireLock(end, secretHash);
  return {
    nonce: end.nonce + 1n,
    transferredAmount: end.transferredAmount,
    locks: end.locks.filter((l) => l !== lock),
  };
}

function requireLock(end: ChannelEnd, secretHash: string): Lock {
  const lock = findLock(end, secretHash);
  if (!lock) {
    throw new QrwpError("PAYMENT_NOT_FOUND", "no pending lock with this secret hash", {
      field: "secretHash",
      secretHash,
    });
  }
  return lock;
}

/**
 * Checks that a received balance proof commits to exactly `expected` (the receiver's own computation of
 * the sender's next state) with a nonce above `previousNonce` (gaps are allowed: a refused proof burns one).
 * @returns `expected` with the proof's nonce.
 * @throws QrwpError STALE_NONCE | INVALID_TRANSFER naming the first wrong field (`balanceProof.transferredAmount`,
 *   `balanceProof.lockedAmount`, `balanceProof.locksRoot`).
 */
export function checkProofMatches(
  proof: BalanceProof,
  previousNonce: bigint,
  expected: ChannelEnd,
): ChannelEnd {
  if (proof.nonce <= previousNonce) {
    throw new QrwpError("STALE_NONCE", `nonce ${proof.nonce} is not above ${previousNonce}`, {
      field: "balanceProof.nonce",
    });
  }
  const data = balanceDataOf(expected);
  if (proof.transferredAmount !== data.transferredAmount) {
    throw new QrwpError("INVALID_TRANSFER", "transferredAmount is not the expected one", {
      field: "balanceProof.transferredAmount",
      expected: data.transferredAmount.toString(),
    });
  }
  if (proof.lockedAmount !== data.lockedAmount) {
    throw new QrwpError("INVALID_TRANSFER", "lockedAmount is not the sum of the pending locks", {
      field: "balanceProof.lockedAmount",
      expected: data.lockedAmount.toString(),
    });
  }
  if (proof.locksRoot.toLowerCase() !== data.locksRoot) {
    throw new QrwpError("INVALID_TRANSFER", "locksRoot does not match the pending locks", {
      field: "balanceProof.locksRoot",
      expected: data.locksRoot,
    });
  }
  return { ...expected, nonce: proof.nonce };
}

/**
 * What `ourEnd`'s owner can still send: `ourDeposit - sent - locked(ours) + received` (Raiden's
 * distributable balance), where `received` is the partner's transferredAmount. May be negative only if the
 * inputs are inconsistent; callers treat <= 0 as no capacity.
 */
export function distributableAmount(ourDeposit: bigint, ourEnd: ChannelEnd, partnerEnd: ChannelEnd): bigint {
  return ourDeposit - ourEnd.transferredAmount - lockedAmountOf(ourEnd.locks) + partnerEnd.transferredAmount;
}
