/**
 * Lock timing (seconds of `block.timestamp`), after BOLT 2's `cltv_expiry_delta >= 3R + 2G + 2S`:
 * - R (`reorgSeconds`): the deepest reorganisation we guard against, in seconds;
 * - G (`graceSeconds`): how long we wait for an unresponsive peer before going on-chain;
 * - S (`confirmationSeconds`): time between broadcasting a transaction and its inclusion.
 *
 * Derived values:
 * - `expiryDeltaSeconds = 3R + 2G + 2S`: what a mediator requires between the expiration of the lock it
 *   receives and the one it forwards (Lightning's cltv_expiry_delta);
 * - `revealTimeoutSeconds = R + G + S`: when a node that knows a secret has not been paid off-chain by
 *   `expiration - revealTimeoutSeconds`, it registers the secret on-chain (Raiden's reveal timeout). A
 *   target refuses a lock that expires sooner than `now + revealTimeoutSeconds + S`;
 * - a settle timeout must be at least `2 * revealTimeoutSeconds` (DESIGN.md).
 */
import { QrwpError } from "./errors.js";

/** The three safety margins, seconds. */
export interface SafetyMargins {
  reorgSeconds: number;
  graceSeconds: number;
  confirmationSeconds: number;
}

/**
 * Defaults for an Ethereum-like chain with 12 s blocks: R = 3 blocks (36 s), G = 120 s, S = 60 s (5 blocks)
 * → expiry delta 468 s per hop, reveal timeout 216 s.
 */
export const DEFAULT_SAFETY_MARGINS: SafetyMargins = Object.freeze({
  reorgSeconds: 36,
  graceSeconds: 120,
  confirmationSeconds: 60,
});

/** Margins for the local devnet (`hardhat node`, instant blocks, no reorgs): delta 10 s, reveal 5 s. */
export const DEVNET_SAFETY_MARGINS: SafetyMargins = Object.freeze({
  reorgSeconds: 0,
  graceSeconds: 3,
  confirmationSeconds: 2,
});

/** Timing a node applies to the locks it receives, forwards and sends. */
export interface LockTiming {
  expiryDeltaSeconds: number;
  revealTimeoutSeconds: number;
  /** Minimum seconds between now and the expiration of a lock the target accepts. */
  minFinalExpirySeconds: number;
}

/** {@link LockTiming} from margins. @throws QrwpError INVALID_ARGUMENT on negative or non-integer margins */
export function lockTiming(m: SafetyMargins): LockTiming {
  for (const [k, v] of Object.entries(m)) {
    if (!Number.isSafeInteger(v) || v < 0)
      throw new QrwpError("INVALID_ARGUMENT", `${k} must be a non-negative integer`, { field: k });
  }
  const R = m.reorgSeconds;
  const G = m.graceSeconds;
  const S = m.confirmationSeconds;
  const revealTimeoutSeconds = Math.max(1, R + G + S);
  return {
    expiryDeltaSeconds: Math.max(2, 3 * R + 2 * G + 2 * S),
    revealTimeoutSeconds,
    minFinalExpirySeconds: revealTimeoutSeconds + S,
  };
}
