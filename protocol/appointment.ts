/**
 * Watchtower appointments: what a channel node hands a watchtower so the tower can contest a stale close
 * on the node's behalf (Raiden's monitoring-service "RequestMonitoring", made post-quantum hybrid).
 *
 * An appointment concerns one (chain, hub, channel, non-closing participant) — its **slot**, named by
 * {@link appointmentId} — and carries, for the partner's (the potential closer's) latest balance proof:
 * - the blinded proof: `nonce` and `balanceHash` only (the tower never sees amounts or locks);
 * - the closer's two signatures of it: EIP-712 `BalanceProof` secp256k1 (`closingSignature`, what the hub
 *   verifies) and ML-DSA-65 (`closingPqSignature`, context "qrwp-bp-v1", FIPS 204) under
 *   `closingMldsaPublicKey` — the key the closer proved to the node in their session handshake;
 * - the node's EIP-712 `BalanceProofUpdate` counter-signature (`nonClosingSignature`), which authorises
 *   anyone to submit the proof to `ChannelHub.updateNonClosingBalanceProof`;
 * - the node's hybrid signature of the whole appointment: secp256k1 (`appointmentSignature`) and ML-DSA-65
 *   (`coSignature`, context "qrwp-wt-v1") over {@link appointmentDigest}, which binds both ML-DSA keys to the
 *   node's address.
 *
 * A tower verifies all five signatures ({@link verifyAppointment}) before storing anything. Wire forms: CBOR
 * inside the `/qrwp/watchtower/1.0.0` session (messages.ts) and JSON over HTTP ({@link appointmentFromJson}).
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, concatBytes, hexToBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import { z } from "zod";
import {
  balanceHash as computeBalanceHash,
  balanceProofUpdateDigest,
  blindedBalanceProofDigest,
  blindedBalanceProofUpdateDigest,
  type SignedBalanceProof,
} from "./balance-proof.js";
import { MLDSA_CONTEXT_APPOINTMENT, MLDSA_CONTEXT_BALANCE_PROOF } from "./constants.js";
import { abiAddressWord, abiWord } from "./eip712.js";
import { QrwpError, assertArgument } from "./errors.js";
import {
  ECDSA_SIGNATURE_BYTES,
  MLDSA65_PUBLIC_KEY_BYTES,
  MLDSA65_SIGNATURE_BYTES,
  mldsaSign,
  mldsaVerify,
  recoverDigestSigner,
  signDigest,
  type MldsaVerifier,
  type NodeKeys,
} from "./keys.js";
import { assertBytes, assertBytes32Hex, assertUint256, normalizeAddress } from "./validation.js";
import { keccak_256 } from "@noble/hashes/sha3.js";

/** A signed appointment (see the module doc for each field's role). */
export interface Appointment {
  /** EIP-155 chain id. */
  chainId: bigint;
  /** ChannelHub address (EIP-55). */
  hub: string;
  /** Channel id on the hub, uint256. */
  channelId: bigint;
  /** The partner, who may close with a stale proof: signer of the balance proof. */
  closingParticipant: string;
  /** The tower's client: signer of the counter-signature and of the appointment. */
  nonClosingParticipant: string;
  /** The closer's balance proof nonce, >= 1. */
  nonce: bigint;
  /** `keccak256(abi.encode(transferredAmount, lockedAmount, locksRoot))` of the closer's proof, 0x 32 bytes. */
  balanceHash: string;
  /** The closer's EIP-712 `BalanceProof` secp256k1 signature, 0x 65 bytes. */
  closingSignature: string;
  /** The closer's ML-DSA-65 signature of the same digest (context "qrwp-bp-v1"), 3309 bytes. */
  closingPqSignature: Uint8Array;
  /** The closer's ML-DSA-65 public key, 1952 bytes. */
  closingMldsaPublicKey: Uint8Array;
  /** The client's EIP-712 `BalanceProofUpdate` secp256k1 signature, 0x 65 bytes. */
  nonClosingSignature: string;
  /** The client's ML-DSA-65 public key, 1952 bytes. */
  nonClosingMldsaPublicKey: Uint8Array;
  /** The client's secp256k1 signature of {@link appointmentDigest}, 0x 65 bytes. */
  appointmentSignature: string;
  /** The client's ML-DSA-65 signature of {@link appointmentDigest} (context "qrwp-wt-v1"), 3309 bytes. */
  coSignature: Uint8Array;
}

const APPOINTMENT_ID_TAG = utf8ToBytes("qrwp-appointment-id-v1");
const APPOINTMENT_DIGEST_TAG = utf8ToBytes("qrwp-appointment-v1");

/**
 * The id of an appointment slot: `0x || sha256("qrwp-appointment-id-v1" || chainId || hub || channelId ||
 * nonClosingParticipant)` (uint256 words and 32-byte address words as in ABI encoding). Stable across the
 * slot's nonces, so a node can ask a tower about its channel without remembering anything.
 * @returns 0x-hex, 32 bytes (lower case).
 * @throws QrwpError INVALID_ARGUMENT on malformed fields.
 */
export function appointmentId(
  chainId: bigint,
  hub: string,
  channelId: bigint,
  nonClosingParticipant: string,
): string {
  assertUint256(chainId, "chainId");
  assertUint256(channelId, "channelId");
  return `0x${bytesToHex(
    sha256(
      concatBytes(
        APPOINTMENT_ID_TAG,
        abiWord(chainId),
        abiAddressWord(normalizeAddress(hub, "hub")),
        abiWord(channelId),
        abiAddressWord(normalizeAddress(nonClosingParticipant, "nonClosingParticipant")),
      ),
    ),
  )}`;
}

/**
 * The digest the client signs with both keys: `sha256("qrwp-appointment-v1" || id || closingParticipant ||
 * nonce || balanceHash || keccak256(closingSignature) || sha256(closingPqSignature) ||
 * sha256(closingMldsaPublicKey) || keccak256(nonClosingSignature) || sha256(nonClosingMldsaPublicKey))`.
 * @returns 32 bytes.
 * @throws QrwpError INVALID_ARGUMENT on malformed fields.
 */
export function appointmentDigest(a: Appointment): Uint8Array {
  assertAppointmentShape(a);
  return sha256(
    concatBytes(
      APPOINTMENT_DIGEST_TAG,
      hexToBytes(appointmentId(a.chainId, a.hub, a.channelId, a.nonClosingParticipant).slice(2)),
      abiAddressWord(normalizeAddress(a.closingParticipant, "closingParticipant")),
      abiWord(a.nonce),
      hexToBytes(a.balanceHash.slice(2)),
      keccak_256(hexToBytes(a.closingSignature.slice(2))),
      sha256(a.closingPqSignature),
      sha256(a.closingMldsaPublicKey),
      keccak_256(hexToBytes(a.nonClosingSignature.slice(2))),
      sha256(a.nonClosingMldsaPublicKey),
    ),
  );
}

const SIG_RE = /^0x[0-9a-fA-F]{130}$/;

function assertAppointmentShape(a: Appointment): void {
  assertArgument(typeof a === "object" && a !== null, "appointment must be an object", "appointment");
  assertUint256(a.chainId, "chainId");
  normalizeAddress(a.hub, "hub");
  assertUint256(a.channelId, "channelId");
  const closer = normalizeAddress(a.closingParticipant, "closingParticipant");
  const client = normalizeAddress(a.nonClosingParticipant, "nonClosingParticipant");
  assertArgument(closer !== client, "the two participants must differ", "closingParticipant", closer);
  assertUint256(a.nonce, "nonce");
  assertArgument(a.nonce > 0n, "nonce must be >= 1", "nonce", a.nonce);
  assertBytes32Hex(a.balanceHash, "balanceHash");
  assertArgument(!/^0x0{64}$/.test(a.balanceHash), "balanceHash must not be zero", "balanceHash");
  for (const f of ["closingSignature", "nonClosingSignature", "appointmentSignature"] as const) {
    assertArgument(typeof a[f] === "string" && SIG_RE.test(a[f]), `${f} must be 0x-hex of 65 bytes`, f);
  }
  assertBytes(a.closingPqSignature, "closingPqSignature", MLDSA65_SIGNATURE_BYTES);
  assertBytes(a.coSignature, "coSignature", MLDSA65_SIGNATURE_BYTES);
  assertBytes(a.closingMldsaPublicKey, "closingMldsaPublicKey", MLDSA65_PUBLIC_KEY_BYTES);
  assertBytes(a.nonClosingMldsaPublicKey, "nonClosingMldsaPublicKey", MLDSA65_PUBLIC_KEY_BYTES);
}

/** What an appointment and a batch slot (appointment-batch.ts) both take from the partner's proof. */
export type CounterSignedProofFields = Pick<
  Appointment,
  | "channelId"
  | "closingParticipant"
  | "nonce"
  | "balanceHash"
  | "closingSignature"
  | "closingPqSignature"
  | "closingMldsaPublicKey"
  | "nonClosingSignature"
>;

/**
 * The partner's proof as a tower holds it (balance hash, the partner's two signatures and ML-DSA-65 key),
 * with the client's counter-signature over it (`BalanceProofUpdate`, secp256k1): the fields an appointment
 * and a batch slot share (node side).
 * @param partnerProof - the partner's signed balance proof as the node accepted it (nonce >= 1).
 * @param partner - the partner's address and the ML-DSA-65 key it proved in the session handshake.
 * @param keys - the node's keys (the non-closing participant).
 * @throws QrwpError INVALID_ARGUMENT on a malformed partner address.
 */
export function counterSignedProofFields(
  partnerProof: SignedBalanceProof,
  partner: { address: string; mldsaPublicKey: Uint8Array },
  keys: NodeKeys,
): CounterSignedProofFields {
  const p = partnerProof.proof;
  return {
    channelId: p.channelId,
    closingParticipant: normalizeAddress(partner.address, "partner"),
    nonce: p.nonce,
    balanceHash: computeBalanceHash(p),
    closingSignature: partnerProof.signature,
    closingPqSignature: partnerProof.pqSignature,
    closingMldsaPublicKey: partner.mldsaPublicKey,
    nonClosingSignature: signDigest(
      balanceProofUpdateDigest(p, partnerProof.signature),
      keys.secp256k1PrivateKey,
    ),
  };
}

/**
 * Builds and signs the appointment for the partner's latest balance proof (node side).
 * @param partnerProof - the partner's signed balance proof as the node accepted it (nonce >= 1).
 * @param partner - the partner's address and the ML-DSA-65 key it proved in the session handshake.
 * @param keys - the node's keys (the non-closing participant).
 * @throws QrwpError INVALID_ARGUMENT on malformed input.
 */
export function createAppointment(
  partnerProof: SignedBalanceProof,
  partner: { address: string; mldsaPublicKey: Uint8Array },
  keys: NodeKeys,
): Appointment {
  const p = partnerProof.proof;
  const unsigned: Appointment = {
    chainId: p.chainId,
    hub: normalizeAddress(p.hub, "hub"),
    nonClosingParticipant: keys.address,
    nonClosingMldsaPublicKey: keys.mldsaPublicKey,
    ...counterSignedProofFields(partnerProof, partner, keys),
    appointmentSignature: `0x${"00".repeat(ECDSA_SIGNATURE_BYTES)}`,
    coSignature: new Uint8Array(MLDSA65_SIGNATURE_BYTES),
  };
  const digest = appointmentDigest(unsigned);
  return {
    ...unsigned,
    appointmentSignature: signDigest(digest, keys.secp256k1PrivateKey),
    coSignature: mldsaSign(digest, keys.mldsaSecretKey, MLDSA_CONTEXT_APPOINTMENT),
  };
}

/**
 * The appointment's digest, the client's address and the blinded proof digest, after checking the proof's
 * two secp256k1 signatures (the closer's, then the client's counter-signature), as the hub will.
 * @throws QrwpError INVALID_ARGUMENT | INVALID_SIGNATURE (field "closingSignature" / "nonClosingSignature")
 */
function checkProofSignatures(a: Appointment): { digest: Uint8Array; client: string; bpDigest: Uint8Array } {
  const digest = appointmentDigest(a);
  const closer = normalizeAddress(a.closingParticipant, "closingParticipant");
  const client = normalizeAddress(a.nonClosingParticipant, "nonClosingParticipant");
  const bpDigest = blindedBalanceProofDigest(a, a.balanceHash);
  expectSigner(bpDigest, a.closingSignature, closer, "closingSignature");
  expectSigner(
    blindedBalanceProofUpdateDigest(a, a.balanceHash, a.closingSignature),
    a.nonClosingSignature,
    client,
    "nonClosingSignature",
  );
  return { digest, client, bpDigest };
}

/**
 * Verifies every signature of an appointment (tower side): the closer's secp256k1 balance proof signature
 * and the client's secp256k1 counter-signature (exactly what the hub will check), the closer's ML-DSA-65
 * signature, then the client's secp256k1 and ML-DSA-65 signatures of the appointment digest (which covers
 * every field but the co-signature, so a tampered field fails at its own check first).
 * @throws QrwpError INVALID_ARGUMENT on malformed fields; INVALID_SIGNATURE with `details.field` naming the
 *   first signature that fails.
 */
export function verifyAppointment(a: Appointment): void {
  const { digest, client, bpDigest } = checkProofSignatures(a);
  if (!mldsaVerify(a.closingPqSignature, bpDigest, a.closingMldsaPublicKey, MLDSA_CONTEXT_BALANCE_PROOF)) {
    throw new QrwpError("INVALID_SIGNATURE", "the closer's ML-DSA-65 signature is invalid", {
      field: "closingPqSignature",
    });
  }
  expectSigner(digest, a.appointmentSignature, client, "appointmentSignature");
  if (!mldsaVerify(a.coSignature, digest, a.nonClosingMldsaPublicKey, MLDSA_CONTEXT_APPOINTMENT)) {
    throw new QrwpError("INVALID_SIGNATURE", "the ML-DSA-65 co-signature is invalid", {
      field: "coSignature",
    });
  }
}

/**
 * {@link verifyAppointment} with its two ML-DSA-65 verifications handed to `verifyMldsa` (a pool of worker
 * threads: host/mldsa-verify-pool.ts), both at once, after the two secp256k1 signatures of the proof (a forged
 * proof costs no ML-DSA-65) and while this thread checks the client's secp256k1 signature. The error is the one
 * {@link verifyAppointment}'s order meets first, whichever check finishes first.
 * @throws QrwpError as {@link verifyAppointment}.
 */
export async function verifyAppointmentWith(a: Appointment, verifyMldsa: MldsaVerifier): Promise<void> {
  const { digest, client, bpDigest } = checkProofSignatures(a);
  const evidence = verifyMldsa(
    a.closingPqSignature,
    bpDigest,
    a.closingMldsaPublicKey,
    MLDSA_CONTEXT_BALANCE_PROOF,
  );
  const coSignature = verifyMldsa(
    a.coSignature,
    digest,
    a.nonClosingMldsaPublicKey,
    MLDSA_CONTEXT_APPOINTMENT,
  );
  let clientError: unknown = null;
  try {
    expectSigner(digest, a.appointmentSignature, client, "appointmentSignature");
  } catch (err) {
    clientError = err;
  }
  if (!(await evidence)) {
    throw new QrwpError("INVALID_SIGNATURE", "the closer's ML-DSA-65 signature is invalid", {
      field: "closingPqSignature",
    });
  }
  if (clientError !== null) throw clientError;
  if (!(await coSignature)) {
    throw new QrwpError("INVALID_SIGNATURE", "the ML-DSA-65 co-signature is invalid", {
      field: "coSignature",
    });
  }
}

/**
 * Refuses unless the 65-byte secp256k1 `signature` over `digest` recovers `expected` (EIP-55).
 * @throws QrwpError INVALID_SIGNATURE naming `field` (malformed, or another signer: `details.recovered`)
 */
export function expectSigner(digest: Uint8Array, signature: string, expected: string, field: string): void {
  let recovered: string;
  try {
    recovered = recoverDigestSigner(digest, signature);
  } catch (cause) {
    throw new QrwpError("INVALID_SIGNATURE", `${field} is not a valid signature`, { field }, { cause });
  }
  if (recovered !== expected) {
    throw new QrwpError("INVALID_SIGNATURE", `${field} is not signed by ${expected}`, {
      field,
      expected,
      recovered,
    });
  }
}

// ------------------------------------------------------------------------------------------------
// JSON form (HTTP): integers as decimal strings, bytes as 0x-hex.
// ------------------------------------------------------------------------------------------------

/** The JSON form of an {@link Appointment} (`POST /v1/appointments` body). */
export type AppointmentJson = { [K in keyof Appointment]: string };

const hexBytes = (n: number) =>
  z
    .string()
    .regex(new RegExp(`^0x[0-9a-fA-F]{${2 * n}}$`), `must be 0x-hex of ${n} bytes`)
    .transform((s) => hexToBytes(s.slice(2)));
const uint = z
  .string()
  .regex(/^(0|[1-9][0-9]{0,77})$/, "must be a decimal unsigned integer")
  .transform((s) => BigInt(s))
  .refine((v) => v < 1n << 256n, "must fit in uint256");
const addr = z.string().regex(/^0x[0-9a-fA-F]{40}$/, "must be a 20-byte hex address");
const sig65 = z.string().regex(SIG_RE, "must be a 65-byte hex signature");

/** zod schema of the JSON form; parses to an {@link Appointment}. */
export const appointmentJsonSchema = z.object({
  chainId: uint,
  hub: addr,
  channelId: uint,
  closingParticipant: addr,
  nonClosingParticipant: addr,
  nonce: uint,
  balanceHash: z.string().regex(/^0x[0-9a-fA-F]{64}$/, "must be 32-byte hex"),
  closingSignature: sig65,
  closingPqSignature: hexBytes(MLDSA65_SIGNATURE_BYTES),
  closingMldsaPublicKey: hexBytes(MLDSA65_PUBLIC_KEY_BYTES),
  nonClosingSignature: sig65,
  nonClosingMldsaPublicKey: hexBytes(MLDSA65_PUBLIC_KEY_BYTES),
  appointmentSignature: sig65,
  coSignature: hexBytes(MLDSA65_SIGNATURE_BYTES),
});

/** Serialises an appointment to its JSON form. */
export function appointmentToJson(a: Appointment): AppointmentJson {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(a)) {
    out[k] =
      typeof v === "bigint" ? v.toString() : v instanceof Uint8Array ? `0x${bytesToHex(v)}` : String(v);
  }
  return out as AppointmentJson;
}

/**
 * Parses the JSON form.
 * @throws QrwpError INVALID_ARGUMENT with `details.field` naming the first bad field.
 */
export function appointmentFromJson(json: unknown): Appointment {
  const parsed = appointmentJsonSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue ? issue.path.join(".") || "appointment" : "appointment";
    throw new QrwpError("INVALID_ARGUMENT", `invalid ${field}: ${issue?.message ?? "malformed"}`, { field });
  }
  return parsed.data;
}
