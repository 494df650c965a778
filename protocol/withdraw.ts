/**
 * Withdraw from an open channel: the ChannelHub's EIP-712 `Withdraw` typed data (Raiden spec,
 * `setTotalWithdraw` / `WithdrawInput`, with seconds instead of blocks for the expiry).
 *
 * `Withdraw(uint256 channelId,address participant,uint256 totalWithdraw,uint256 expiryTimestamp)` under the
 * hub's domain (name "QRWP ChannelHub", version "1", chainId, verifyingContract = the hub). BOTH participants
 * sign the same digest with their secp256k1 key (r || s || v, low-s); the hub then raises `participant`'s
 * total withdraw to `totalWithdraw` (monotonic, so a message is used at most once) and pays the increase to
 * `participant`, if `block.timestamp <= expiryTimestamp` and the channel is still open (docs/PROTOCOL.md).
 * Amounts are token base units; `expiryTimestamp` is seconds of `block.timestamp`.
 *
 * Only secp256k1: the withdraw is authorised on-chain, where ML-DSA evidence adds nothing the contract
 * can check. The digest is computed here with keccak-256 and cross-checked against ethers'
 * `TypedDataEncoder` in test/unit/withdraw.test.ts.
 */
import { keccak_256 } from "@noble/hashes/sha3.js";
import { concatBytes } from "@noble/hashes/utils.js";
import { channelHubTypedDataDigest } from "./balance-proof.js";
import { abiAddressWord, abiWord, keccakText } from "./eip712.js";
import { QrwpError, assertArgument, isQrwpError } from "./errors.js";
import type { NodeKeys } from "./keys.js";
import { recoverDigestSigner, signDigest } from "./keys.js";
import { assertUint256, normalizeAddress } from "./validation.js";

/** keccak256 of the `Withdraw` type string (the contract's `WITHDRAW_TYPEHASH`). */
export const WITHDRAW_TYPEHASH = keccakText(
  "Withdraw(uint256 channelId,address participant,uint256 totalWithdraw,uint256 expiryTimestamp)",
);

/** A withdraw both participants sign: raise `participant`'s total withdraw in one channel of one hub. */
export interface WithdrawArgs {
  /** EIP-155 chain id. */
  chainId: bigint;
  /** ChannelHub address (EIP-712 `verifyingContract`). */
  hub: string;
  /** Channel id as assigned by the ChannelHub, uint256. */
  channelId: bigint;
  /** The participant who withdraws (and is paid), 0x address. */
  participant: string;
  /** The participant's new total withdraw (monotonic, not the increase), token base units, uint256. */
  totalWithdraw: bigint;
  /** Last `block.timestamp` (seconds) at which the hub accepts the message, uint256. */
  expiryTimestamp: bigint;
}

/**
 * EIP-712 digest of `Withdraw(uint256 channelId,address participant,uint256 totalWithdraw,uint256 expiryTimestamp)`
 * under the hub's domain: `keccak256(0x1901 || domainSeparator || hashStruct)`.
 * @returns 32 bytes.
 * @throws QrwpError INVALID_ARGUMENT naming the malformed field (chainId, hub, channelId, participant,
 *   totalWithdraw, expiryTimestamp).
 */
export function withdrawDigest(args: WithdrawArgs): Uint8Array {
  assertArgument(typeof args === "object" && args !== null, "withdraw must be an object", "withdraw");
  assertUint256(args.chainId, "chainId");
  assertUint256(args.channelId, "channelId");
  assertUint256(args.totalWithdraw, "totalWithdraw");
  assertUint256(args.expiryTimestamp, "expiryTimestamp");
  const participant = normalizeAddress(args.participant, "participant");
  const struct = concatBytes(
    WITHDRAW_TYPEHASH,
    abiWord(args.channelId),
    abiAddressWord(participant),
    abiWord(args.totalWithdraw),
    abiWord(args.expiryTimestamp),
  );
  return channelHubTypedDataDigest(args.chainId, normalizeAddress(args.hub, "hub"), keccak_256(struct));
}

/**
 * Signs a withdraw with the signer's secp256k1 key (the participant's or the partner's: both sign the same
 * digest). A zero `totalWithdraw` is refused: the hub never accepts it (it must exceed the stored total).
 * @returns 0x-hex, 65 bytes `r || s || v`, low-s.
 * @throws QrwpError INVALID_ARGUMENT on malformed fields or `totalWithdraw` 0.
 */
export function signWithdraw(args: WithdrawArgs, keys: NodeKeys): string {
  const digest = withdrawDigest(args);
  assertArgument(args.totalWithdraw > 0n, "totalWithdraw must be >= 1", "totalWithdraw", args.totalWithdraw);
  return signDigest(digest, keys.secp256k1PrivateKey);
}

/**
 * Recovers the signer of a withdraw signature (OpenZeppelin `ECDSA.recover` rules: v 27/28, low s).
 * @returns the EIP-55 checksummed signer address.
 * @throws QrwpError INVALID_SIGNATURE on a malformed, high-s or unrecoverable signature;
 *   QrwpError INVALID_ARGUMENT on malformed fields.
 */
export function recoverWithdrawSigner(args: WithdrawArgs, signature: string): string {
  return recoverDigestSigner(withdrawDigest(args), signature);
}

/**
 * Verifies that `signature` is `expectedSigner`'s signature of the withdraw (what the hub checks for each of
 * the two signatures). `field` names the signature in the error (e.g. "participantSignature").
 * @throws QrwpError INVALID_SIGNATURE with `details.field` = `field` when it is malformed or signed by
 *   someone else; QrwpError INVALID_ARGUMENT on malformed fields or `expectedSigner`.
 */
export function verifyWithdrawSignature(
  args: WithdrawArgs,
  signature: string,
  expectedSigner: string,
  field = "signature",
): void {
  const expected = normalizeAddress(expectedSigner, "expectedSigner");
  const digest = withdrawDigest(args);
  let recovered: string;
  try {
    recovered = recoverDigestSigner(digest, signature);
  } catch (error) {
    if (isQrwpError(error) && error.code === "INVALID_SIGNATURE") {
      throw new QrwpError("INVALID_SIGNATURE", `${field}: ${error.message}`, { field });
    }
    throw error;
  }
  if (recovered !== expected) {
    throw new QrwpError("INVALID_SIGNATURE", `${field} is not signed by the expected signer`, {
      field,
      expected,
      recovered,
    });
  }
}
