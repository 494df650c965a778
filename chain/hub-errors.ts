/**
 * What every ChannelHub client of `chain/` shares: {@link HubCallError} (a reverted or failed call with its
 * decoded custom error), {@link decodeHubError} (the hub's, registry's, bridge's and ERC-20 EIP-6093 errors
 * from any ethers / Hardhat / JSON-RPC error shape), {@link packLocks} and the signature argument check.
 */
import { ethers } from "ethers";
import { Bridge__factory, ChannelHub__factory, TestToken__factory } from "../typechain-types/index.js";
import { assertArgument } from "../protocol/index.js";

/**
 * One pending hash-time lock (HTLC) as the ChannelHub packs it:
 * `abi.encodePacked(uint256 amount, uint256 expiration, bytes32 secretHash)`, 96 bytes.
 */
export interface PendingLock {
  /** Token base units. */
  amount: bigint;
  /** Unix seconds (block.timestamp); the secret must be registered strictly before it. */
  expiration: bigint;
  /** sha256(secret), bytes32 hex. */
  secretHash: string;
}

/** A reverted or failed HubClient call. `errorName` is the decoded custom error, when known. */
export class HubCallError extends Error {
  override readonly name = "HubCallError";
  /** Decoded custom error name (e.g. "ChannelHubStaleNonce"), or null if the revert could not be decoded. */
  readonly errorName: string | null;
  /** Decoded custom error arguments (empty if not decoded). */
  readonly errorArgs: readonly unknown[];

  constructor(action: string, errorName: string | null, errorArgs: readonly unknown[], cause: unknown) {
    const reason =
      errorName === null
        ? cause instanceof Error
          ? cause.message.split("\n")[0]
          : String(cause)
        : `${errorName}(${errorArgs.map((a) => String(a)).join(", ")})`;
    super(`${action} failed: ${reason}`, { cause });
    this.errorName = errorName;
    this.errorArgs = errorArgs;
  }
}

/** One interface that decodes the hub's, the bridge's and the ERC-20 (EIP-6093) custom errors. */
const HUB_ERRORS = new ethers.Interface([
  ...new Map(
    [
      ...ChannelHub__factory.createInterface().fragments,
      ...Bridge__factory.createInterface().fragments,
      ...TestToken__factory.createInterface().fragments,
    ]
      .filter((f): f is ethers.ErrorFragment => f.type === "error")
      .map((f) => [f.selector, f]),
  ).values(),
]);

/**
 * Decodes a revert found anywhere in `error` (ethers, Hardhat or raw JSON-RPC error shapes) as one of the
 * ChannelHub's, SecretRegistry's, Bridge's or ERC-20 (EIP-6093) custom errors; null when none matches.
 */
export function decodeHubError(error: unknown): ethers.ErrorDescription | null {
  for (const data of revertDataCandidates(error)) {
    try {
      const parsed = HUB_ERRORS.parseError(data);
      if (parsed !== null) return parsed;
    } catch {
      // not one of ours; try the next candidate
    }
  }
  return null;
}

/** Asserts a 65-byte `r || s || v` signature as 0x-hex. @throws QrwpError INVALID_ARGUMENT naming `field` */
export function assertSignature(value: unknown, field: string): asserts value is string {
  assertArgument(
    typeof value === "string" && /^0x[0-9a-fA-F]{130}$/.test(value),
    `${field} must be 0x-hex of 65 bytes`,
    field,
    value,
  );
}

/** The `locks` argument of `ChannelHub.unlock`: concatenated `abi.encodePacked(amount, expiration, secretHash)`. */
export function packLocks(locks: readonly PendingLock[]): string {
  return ethers.concat(
    locks.map((l) =>
      ethers.solidityPacked(["uint256", "uint256", "bytes32"], [l.amount, l.expiration, l.secretHash]),
    ),
  );
}

/** Every hex string that may be revert data, found in the nested shapes ethers and Hardhat use. */
function revertDataCandidates(error: unknown, depth = 0, out: string[] = []): string[] {
  if (depth > 6 || error === null || typeof error !== "object") return out;
  const record = error as Record<string, unknown>;
  for (const key of ["data", "error", "info", "cause", "originalError", "payload"]) {
    const value = record[key];
    if (typeof value === "string" && /^0x[0-9a-fA-F]{8}/.test(value)) out.push(value);
    else if (value !== null && typeof value === "object") revertDataCandidates(value, depth + 1, out);
  }
  return out;
}

/** What an `eth_call` of `setTotalDeposit` as the depositor says about the deposit. */
export type DepositSimulation =
  | { outcome: "ok" | "insufficientAllowance" | "insufficientBalance" }
  | { outcome: "reverted"; error: unknown };

/**
 * Classifies the error of a simulated `setTotalDeposit`: "insufficientAllowance" (the ERC-20's
 * `ERC20InsufficientAllowance`, or a legacy "allowance" reason string: the deposit is otherwise valid),
 * "insufficientBalance" (`ERC20InsufficientBalance` or the node's "insufficient funds"), "reverted" (any other
 * revert: a hub, bridge or token refusal), or null when the error is no answer of the chain (a network
 * failure, a timeout: ask another URL).
 */
export function classifyDepositSimulation(error: unknown): DepositSimulation | null {
  const name = decodeHubError(error)?.name;
  const reason = (error as { reason?: unknown }).reason;
  if (name === "ERC20InsufficientAllowance" || (name === undefined && /allowance/i.test(String(reason))))
    return { outcome: "insufficientAllowance" };
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown }).code;
  if (
    name === "ERC20InsufficientBalance" ||
    (name === undefined && (code === "INSUFFICIENT_FUNDS" || /insufficient funds/i.test(message)))
  )
    return { outcome: "insufficientBalance" };
  if (name !== undefined || code === "CALL_EXCEPTION") return { outcome: "reverted", error };
  return null;
}
