/**
 * Balance proofs (Raiden spec, per-direction) and the ChannelHub's EIP-712 typed data.
 *
 * Domain: `EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)` with
 * name "QRWP ChannelHub", version "1", verifyingContract = the ChannelHub address. Types (exactly as the
 * contract declares them):
 * - `BalanceProof(uint256 channelId,uint256 nonce,bytes32 balanceHash)`
 * - `BalanceProofUpdate(uint256 channelId,uint256 nonce,bytes32 balanceHash,bytes closingSignature)`
 * - `CooperativeSettle(uint256 channelId,address participant1,uint256 participant1Amount,address participant2,uint256 participant2Amount)`
 * - `Withdraw(uint256 channelId,address participant,uint256 totalWithdraw,uint256 expiryTimestamp)`: digest,
 *   signing and recovery in withdraw.ts
 * - `Processed(uint256 channelId,uint256 nonce,bytes32 balanceHash)`: off-chain only (the contract never sees
 *   it), the receiver's secp256k1 acknowledgement of one balance proof, relayed over HTTP (x402 direct streaming)
 * with `balanceHash = keccak256(abi.encode(uint256 transferredAmount, uint256 lockedAmount, bytes32 locksRoot))`.
 *
 * Every off-chain balance proof carries the EIP-712 secp256k1 signature (what the chain verifies); the
 * sender adds its ML-DSA-65 signature (FIPS 204, context "qrwp-bp-v1") over the same 32-byte digest, the
 * proof's post-quantum *evidence*, at least every few updates (docs/PROTOCOL.md §7.4: the amortized
 * evidence rule and its bounds). A proof without evidence has an empty `pqSignature`. Receivers verify what
 * is there; watchtowers take only evidenced proofs. A nonce-0 proof means "nothing transferred" and is never
 * signed.
 *
 * Digests are computed here directly with keccak-256 (hot path); tests cross-check them against ethers'
 * `TypedDataEncoder` and @metamask/eth-sig-util.
 */
import { keccak_256 } from "@noble/hashes/sha3.js";
import { bytesToHex, concatBytes, hexToBytes } from "@noble/hashes/utils.js";
import {
  EIP712_DOMAIN_NAME,
  EIP712_DOMAIN_VERSION,
  MLDSA_CONTEXT_BALANCE_PROOF,
  UINT256_MAX,
} from "./constants.js";
import { abiAddressWord, abiWord, eip712DomainSeparator, keccakText } from "./eip712.js";
import { QrwpError, assertArgument } from "./errors.js";
import type { NodeKeys } from "./keys.js";
import { mldsaSign, mldsaVerify, recoverDigestSigner, signDigest } from "./keys.js";
import { assertBytes32Hex, assertUint256, normalizeAddress } from "./validation.js";

/** The amounts a balance proof commits to (all token base units, e.g. wei). */
export interface BalanceData {
  /** Total amount ever transferred in this direction (monotonic), uint256. */
  transferredAmount: bigint;
  /** Sum of the pending locks' amounts, uint256. */
  lockedAmount: bigint;
  /** Root of the pending locks, 0x 32 bytes (`EMPTY_LOCKS_ROOT` when none). */
  locksRoot: string;
}

/** A per-direction balance proof, bound to one chain, hub and channel. */
export interface BalanceProof extends BalanceData {
  /** EIP-155 chain id. */
  chainId: bigint;
  /** ChannelHub contract address (EIP-712 `verifyingContract`). */
  hub: string;
  /** Channel id as assigned by the ChannelHub, uint256. */
  channelId: bigint;
  /** Strictly increasing per direction, uint256; 0 = empty (never signed). */
  nonce: bigint;
}

/** A balance proof with its sender's two signatures over `balanceProofDigest(proof)`. */
export interface SignedBalanceProof {
  proof: BalanceProof;
  /** EIP-712 secp256k1 signature, 0x-hex 65 bytes `r || s || v`. */
  signature: string;
  /**
   * ML-DSA-65 signature (3309 bytes) over the same 32-byte digest, context "qrwp-bp-v1": the proof's evidence;
   * empty (0 bytes) on a proof sent without evidence (docs/PROTOCOL.md §7.4).
   */
  pqSignature: Uint8Array;
}

/** Arguments of the `CooperativeSettle` typed data (amounts in token base units). */
export interface CooperativeSettleArgs {
  chainId: bigint;
  hub: string;
  channelId: bigint;
  participant1: string;
  participant1Amount: bigint;
  participant2: string;
  participant2Amount: bigint;
}

/** keccak256 of the EIP-712 type strings (the contract's `*_TYPEHASH` constants). */
export const BALANCE_PROOF_TYPEHASH = keccakText(
  "BalanceProof(uint256 channelId,uint256 nonce,bytes32 balanceHash)",
);
export const BALANCE_PROOF_UPDATE_TYPEHASH = keccakText(
  "BalanceProofUpdate(uint256 channelId,uint256 nonce,bytes32 balanceHash,bytes closingSignature)",
);
export const COOPERATIVE_SETTLE_TYPEHASH = keccakText(
  "CooperativeSettle(uint256 channelId,address participant1,uint256 participant1Amount,address participant2,uint256 participant2Amount)",
);

/** `Processed(uint256 channelId,uint256 nonce,bytes32 balanceHash)`: off-chain acknowledgement of one proof. */
export const PROCESSED_TYPEHASH = keccakText(
  "Processed(uint256 channelId,uint256 nonce,bytes32 balanceHash)",
);

/**
 * EIP-712 typed-data `types` for the ChannelHub (plus the off-chain `Processed`), in the shape ethers' `TypedDataEncoder` and
 * eth_signTypedData_v4 take (without `EIP712Domain`).
 */
export const CHANNEL_HUB_EIP712_TYPES = {
  BalanceProof: [
    { name: "channelId", type: "uint256" },
    { name: "nonce", type: "uint256" },
    { name: "balanceHash", type: "bytes32" },
  ],
  BalanceProofUpdate: [
    { name: "channelId", type: "uint256" },
    { name: "nonce", type: "uint256" },
    { name: "balanceHash", type: "bytes32" },
    { name: "closingSignature", type: "bytes" },
  ],
  CooperativeSettle: [
    { name: "channelId", type: "uint256" },
    { name: "participant1", type: "address" },
    { name: "participant1Amount", type: "uint256" },
    { name: "participant2", type: "address" },
    { name: "participant2Amount", type: "uint256" },
  ],
  Withdraw: [
    { name: "channelId", type: "uint256" },
    { name: "participant", type: "address" },
    { name: "totalWithdraw", type: "uint256" },
    { name: "expiryTimestamp", type: "uint256" },
  ],
  Processed: [
    { name: "channelId", type: "uint256" },
    { name: "nonce", type: "uint256" },
    { name: "balanceHash", type: "bytes32" },
  ],
} as const;

/** The EIP-712 domain object of a ChannelHub (for ethers / wallets). @throws QrwpError INVALID_ARGUMENT */
export function channelHubDomain(
  chainId: bigint,
  hub: string,
): {
  name: string;
  version: string;
  chainId: bigint;
  verifyingContract: string;
} {
  assertUint256(chainId, "chainId");
  return {
    name: EIP712_DOMAIN_NAME,
    version: EIP712_DOMAIN_VERSION,
    chainId,
    verifyingContract: normalizeAddress(hub, "hub"),
  };
}

/** EIP-712 `domainSeparator` of a ChannelHub (32 bytes). @throws QrwpError INVALID_ARGUMENT */
export function channelHubDomainSeparator(chainId: bigint, hub: string): Uint8Array {
  assertUint256(chainId, "chainId");
  return eip712DomainSeparator(
    EIP712_DOMAIN_NAME,
    EIP712_DOMAIN_VERSION,
    chainId,
    normalizeAddress(hub, "hub"),
  );
}

/**
 * `keccak256(0x1901 || domainSeparator(chainId, hub) || structHash)`: the EIP-712 digest of a struct under
 * the hub's domain (shared with withdraw.ts).
 * @throws QrwpError INVALID_ARGUMENT on a malformed chainId or hub.
 */
export function channelHubTypedDataDigest(chainId: bigint, hub: string, structHash: Uint8Array): Uint8Array {
  return keccak_256(
    concatBytes(new Uint8Array([0x19, 0x01]), channelHubDomainSeparator(chainId, hub), structHash),
  );
}

function assertBalanceData(data: BalanceData): void {
  assertArgument(typeof data === "object" && data !== null, "balance data must be an object", "balanceData");
  assertUint256(data.transferredAmount, "transferredAmount");
  assertUint256(data.lockedAmount, "lockedAmount");
  assertBytes32Hex(data.locksRoot, "locksRoot");
  // The contract adds the two on settle; a sum beyond uint256 would revert there.
  assertArgument(
    data.transferredAmount + data.lockedAmount <= UINT256_MAX,
    "transferredAmount + lockedAmount must fit in a uint256",
    "lockedAmount",
    data.lockedAmount,
  );
}

function assertBalanceProof(proof: BalanceProof): void {
  assertArgument(typeof proof === "object" && proof !== null, "balance proof must be an object", "proof");
  assertBalanceData(proof);
  assertUint256(proof.chainId, "chainId");
  assertUint256(proof.channelId, "channelId");
  assertUint256(proof.nonce, "nonce");
  normalizeAddress(proof.hub, "hub");
}

/**
 * `balanceHash = keccak256(abi.encode(uint256 transferredAmount, uint256 lockedAmount, bytes32 locksRoot))`.
 * Always the plain hash (also for all-zero data); the empty nonce-0 proof uses `ZERO_HASH` instead.
 * @returns 0x-hex, 32 bytes.
 * @throws QrwpError INVALID_ARGUMENT on out-of-range amounts or a malformed locksRoot.
 */
export function balanceHash(data: BalanceData): string {
  assertBalanceData(data);
  return `0x${bytesToHex(balanceHashBytes(data))}`;
}

function balanceHashBytes(data: BalanceData): Uint8Array {
  return keccak_256(
    concatBytes(
      abiWord(data.transferredAmount),
      abiWord(data.lockedAmount),
      hexToBytes(data.locksRoot.slice(2)),
    ),
  );
}

/**
 * EIP-712 digest of `BalanceProof(uint256 channelId,uint256 nonce,bytes32 balanceHash)` under the hub's
 * domain: `keccak256(0x1901 || domainSeparator || hashStruct)`. Both signatures of a balance proof are over it.
 * @returns 32 bytes.
 * @throws QrwpError INVALID_ARGUMENT on malformed fields.
 */
export function balanceProofDigest(proof: BalanceProof): Uint8Array {
  assertBalanceProof(proof);
  return blindedBalanceProofDigest(proof, balanceHashBytes(proof));
}

/** The blinded fields of a balance proof: what a watchtower sees (no amounts, no locks). */
export interface BlindedBalanceProof {
  chainId: bigint;
  hub: string;
  channelId: bigint;
  nonce: bigint;
}

/**
 * {@link balanceProofDigest} from the balance hash instead of the amounts (what a watchtower can compute).
 * @param balanceHash - 32 bytes, or 0x-hex.
 * @throws QrwpError INVALID_ARGUMENT on malformed fields.
 */
export function blindedBalanceProofDigest(
  proof: BlindedBalanceProof,
  balanceHash: Uint8Array | string,
): Uint8Array {
  return channelHubTypedDataDigest(
    proof.chainId,
    proof.hub,
    keccak_256(concatBytes(BALANCE_PROOF_TYPEHASH, blindedStruct(proof, balanceHash))),
  );
}

function blindedStruct(proof: BlindedBalanceProof, balanceHash: Uint8Array | string): Uint8Array {
  assertUint256(proof.channelId, "channelId");
  assertUint256(proof.nonce, "nonce");
  let hash: Uint8Array;
  if (typeof balanceHash === "string") {
    assertBytes32Hex(balanceHash, "balanceHash");
    hash = hexToBytes(balanceHash.slice(2));
  } else {
    hash = balanceHash;
  }
  return concatBytes(abiWord(proof.channelId), abiWord(proof.nonce), hash);
}

function signatureBytes(signature: string, field: string): Uint8Array {
  assertArgument(
    typeof signature === "string" && /^0x[0-9a-fA-F]{130}$/.test(signature),
    `${field} must be 0x-hex of 65 bytes`,
    field,
    signature,
  );
  return hexToBytes(signature.slice(2));
}

/**
 * EIP-712 digest of `BalanceProofUpdate(uint256 channelId,uint256 nonce,bytes32 balanceHash,bytes closingSignature)`:
 * the non-closer's counter-signature over the closer's balance proof, authorising a contest (by itself or
 * a watchtower). `closingSignature` is the closer's 65-byte EIP-712 signature of that proof (hashed as
 * `keccak256(bytes)` per EIP-712).
 * @returns 32 bytes.
 * @throws QrwpError INVALID_ARGUMENT on malformed fields.
 */
export function balanceProofUpdateDigest(proof: BalanceProof, closingSignature: string): Uint8Array {
  assertBalanceProof(proof);
  return blindedBalanceProofUpdateDigest(proof, balanceHashBytes(proof), closingSignature);
}

/**
 * {@link balanceProofUpdateDigest} from the balance hash instead of the amounts (what a watchtower can compute).
 * @throws QrwpError INVALID_ARGUMENT on malformed fields.
 */
export function blindedBalanceProofUpdateDigest(
  proof: BlindedBalanceProof,
  balanceHash: Uint8Array | string,
  closingSignature: string,
): Uint8Array {
  const sig = signatureBytes(closingSignature, "closingSignature");
  const struct = concatBytes(
    BALANCE_PROOF_UPDATE_TYPEHASH,
    blindedStruct(proof, balanceHash),
    keccak_256(sig),
  );
  return channelHubTypedDataDigest(proof.chainId, proof.hub, keccak_256(struct));
}

/**
 * EIP-712 digest of `CooperativeSettle(uint256 channelId,address participant1,uint256 participant1Amount,address participant2,uint256 participant2Amount)`,
 * signed by both participants to settle without a contest window.
 * @returns 32 bytes.
 * @throws QrwpError INVALID_ARGUMENT on malformed fields.
 */
export function cooperativeSettleDigest(args: CooperativeSettleArgs): Uint8Array {
  assertArgument(typeof args === "object" && args !== null, "arguments must be an object", "args");
  assertUint256(args.chainId, "chainId");
  assertUint256(args.channelId, "channelId");
  assertUint256(args.participant1Amount, "participant1Amount");
  assertUint256(args.participant2Amount, "participant2Amount");
  const p1 = normalizeAddress(args.participant1, "participant1");
  const p2 = normalizeAddress(args.participant2, "participant2");
  const struct = concatBytes(
    COOPERATIVE_SETTLE_TYPEHASH,
    abiWord(args.channelId),
    abiAddressWord(p1),
    abiWord(args.participant1Amount),
    abiAddressWord(p2),
    abiWord(args.participant2Amount),
  );
  return channelHubTypedDataDigest(args.chainId, args.hub, keccak_256(struct));
}

/**
 * EIP-712 digest of `Processed(uint256 channelId,uint256 nonce,bytes32 balanceHash)` under the hub's domain
 * (the balance proofs' domain: "QRWP ChannelHub", "1", chainId, hub), where the three fields are those of the
 * acknowledged balance proof. The receiver of a proof signs it with its secp256k1 key ({@link signDigest}) once
 * the proof is durable; the sender checks it with {@link recoverDigestSigner} against the channel partner. The
 * chain id, hub, channel, nonce and balance data together name exactly one proof of one direction (the
 * sender never signs two different balance data at one nonce), so an acknowledgement cannot be moved to
 * another proof. It moves no funds and the contract never sees it (see docs/DECISIONS.md).
 * @returns 32 bytes.
 * @throws QrwpError INVALID_ARGUMENT on malformed fields.
 */
export function processedDigest(proof: BalanceProof): Uint8Array {
  assertBalanceProof(proof);
  const struct = concatBytes(
    PROCESSED_TYPEHASH,
    abiWord(proof.channelId),
    abiWord(proof.nonce),
    balanceHashBytes(proof),
  );
  return channelHubTypedDataDigest(proof.chainId, proof.hub, keccak_256(struct));
}

/** True when the proof carries its sender's ML-DSA-65 signature (its post-quantum evidence). */
export function hasEvidence(signed: SignedBalanceProof): boolean {
  return signed.pqSignature.length > 0;
}

/**
 * The sender's ML-DSA-65 evidence for a balance proof: its signature (context "qrwp-bp-v1") over
 * {@link balanceProofDigest}, exactly the `pqSignature` a proof signed with evidence carries.
 * @returns 3309 bytes.
 * @throws QrwpError INVALID_ARGUMENT on malformed fields.
 */
export function signEvidence(proof: BalanceProof, keys: NodeKeys): Uint8Array {
  return mldsaSign(balanceProofDigest(proof), keys.mldsaSecretKey, MLDSA_CONTEXT_BALANCE_PROOF);
}

/**
 * Checks evidence (an ML-DSA-65 signature) for a balance proof under the sender's key.
 * @throws QrwpError INVALID_EVIDENCE with `details.field` "pqSignature" when it does not verify.
 */
export function verifyEvidence(
  proof: BalanceProof,
  pqSignature: Uint8Array,
  mldsaPublicKey: Uint8Array,
): void {
  if (!mldsaVerify(pqSignature, balanceProofDigest(proof), mldsaPublicKey, MLDSA_CONTEXT_BALANCE_PROOF)) {
    throw new QrwpError("INVALID_EVIDENCE", "the ML-DSA-65 evidence does not cover this balance proof", {
      field: "pqSignature",
      nonce: proof.nonce.toString(),
    });
  }
}

/**
 * Signs a balance proof with the sender's secp256k1 key over the EIP-712 digest (r||s||v) and, unless
 * `options.evidence` is false, with its ML-DSA-65 key (context "qrwp-bp-v1") over the same 32-byte digest.
 * @param proof - nonce must be >= 1 (nonce 0 is the unsigned empty proof).
 * @param options - `evidence` (default true): add the ML-DSA-65 signature; without it `pqSignature` is empty.
 * @returns {@link SignedBalanceProof} (the proof is copied).
 * @throws QrwpError INVALID_ARGUMENT on malformed fields or nonce 0.
 */
export function signBalanceProof(
  proof: BalanceProof,
  keys: NodeKeys,
  options: { evidence?: boolean } = {},
): SignedBalanceProof {
  const digest = balanceProofDigest(proof);
  assertArgument(
    proof.nonce > 0n,
    "nonce must be >= 1 (a nonce-0 balance proof is never signed)",
    "nonce",
    proof.nonce,
  );
  return {
    proof: { ...proof, hub: normalizeAddress(proof.hub, "hub") },
    signature: signDigest(digest, keys.secp256k1PrivateKey),
    pqSignature:
      options.evidence === false
        ? new Uint8Array(0)
        : mldsaSign(digest, keys.mldsaSecretKey, MLDSA_CONTEXT_BALANCE_PROOF),
  };
}

/**
 * Verifies the signatures of a balance proof; returns normally only if the secp256k1 signature recovers
 * `expectedSigner` AND the ML-DSA-65 signature verifies under `signerMldsaPublicKey`. A proof without
 * evidence (empty `pqSignature`) passes only with `options.requireEvidence === false` (the channel receiver,
 * which enforces the evidence bound itself). The chain id, hub and channel id are inside the digest, so a
 * proof replayed elsewhere fails here.
 * @throws QrwpError INVALID_SIGNATURE with `details.field` = "signature" or "pqSignature";
 *   QrwpError INVALID_ARGUMENT on malformed proof fields, nonce 0 or a malformed `expectedSigner`.
 */
export function verifyBalanceProof(
  signed: SignedBalanceProof,
  expectedSigner: string,
  signerMldsaPublicKey: Uint8Array,
  options: { requireEvidence?: boolean } = {},
): void {
  assertArgument(
    typeof signed === "object" && signed !== null,
    "signed balance proof must be an object",
    "signed",
  );
  const expected = normalizeAddress(expectedSigner, "expectedSigner");
  const digest = balanceProofDigest(signed.proof);
  assertArgument(
    signed.proof.nonce > 0n,
    "a signed balance proof must have nonce >= 1",
    "nonce",
    signed.proof.nonce,
  );
  const recovered = recoverDigestSigner(digest, signed.signature);
  if (recovered !== expected) {
    throw new QrwpError("INVALID_SIGNATURE", "balance proof is not signed by the expected signer", {
      field: "signature",
      expected,
      recovered,
    });
  }
  if (signed.pqSignature.length === 0 && options.requireEvidence === false) return;
  if (!mldsaVerify(signed.pqSignature, digest, signerMldsaPublicKey, MLDSA_CONTEXT_BALANCE_PROOF)) {
    throw new QrwpError("INVALID_SIGNATURE", "balance proof ML-DSA-65 signature is invalid", {
      field: "pqSignature",
    });
  }
}

/**
 * The non-closer's EIP-712 `BalanceProofUpdate` secp256k1 signature over the closer's balance proof and
 * its closing signature (handed to a watchtower so it can contest on the non-closer's behalf).
 * @returns 0x-hex, 65 bytes `r || s || v`.
 * @throws QrwpError INVALID_ARGUMENT on malformed fields.
 */
export function signBalanceProofUpdate(
  proof: BalanceProof,
  closingSignature: string,
  keys: NodeKeys,
): string {
  return signDigest(balanceProofUpdateDigest(proof, closingSignature), keys.secp256k1PrivateKey);
}
