/**
 * Watchtower appointment **batches**: many slots (protocol/appointment.ts) handed to one tower under ONE client
 * signature (secp256k1 + ML-DSA-65), instead of one hybrid signature per appointment.
 *
 * A slot is what an {@link Appointment} carries for one (channel, nonce), minus what the batch states once:
 * chain, hub and client (the non-closing participant of every slot) and the client's ML-DSA-65 key, and minus
 * the per-appointment client signatures. Each slot keeps the partner's (closer's) two signatures of its balance
 * proof (`closingSignature` secp256k1, `closingPqSignature` ML-DSA-65 context "qrwp-bp-v1": the evidence) and
 * the client's `BalanceProofUpdate` counter-signature (`nonClosingSignature`), which is what the hub checks.
 *
 * - {@link appointmentSlotDigest}: `sha256("qrwp-appointment-slot-v1" ‖ id ‖ closer ‖ nonce ‖ balanceHash ‖
 *   keccak256(closingSignature) ‖ sha256(closingPqSignature) ‖ sha256(closingMldsaPublicKey) ‖
 *   keccak256(nonClosingSignature))` with `id` = {@link appointmentId}; it names the slot's content (a tower
 *   recognises a replay by it, whichever form carried it).
 * - {@link appointmentBatchDigest}: `sha256("qrwp-appointment-batch-v1" ‖ chainId ‖ hub ‖ tower ‖ client ‖
 *   sha256(clientMldsaPublicKey) ‖ u32(slot count) ‖ slotDigest_0 ‖ … ‖ slotDigest_{n-1})`: the ordered slots,
 *   bound to one tower and one client. The client signs it with secp256k1 (`batchSignature`) and ML-DSA-65
 *   (`coSignature`, context "qrwp-wt-v1"; the digest's own tag separates it from a single appointment's).
 *
 * A tower checks the two batch signatures once, each slot's two secp256k1 signatures, and the evidence
 * (`closingPqSignature`) once per channel: on the highest-nonce slot of that channel in the batch, the one it
 * stores (lower ones are superseded). Wire forms: CBOR with byte strings in `/qrwp/watchtower/1.0.0`
 * (messages.ts, {@link appointmentBatchWireSchema}) and JSON with 0x-hex over HTTP ({@link appointmentBatchFromJson}).
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { keccak_256 } from "@noble/hashes/sha3.js";
import { bytesToHex, concatBytes, hexToBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import { z } from "zod";
import {
  blindedBalanceProofDigest,
  blindedBalanceProofUpdateDigest,
  type SignedBalanceProof,
} from "./balance-proof.js";
import {
  appointmentId,
  counterSignedProofFields,
  expectSigner,
  type Appointment,
  type CounterSignedProofFields,
} from "./appointment.js";
import {
  MAX_APPOINTMENT_BATCH_SLOTS,
  MLDSA_CONTEXT_APPOINTMENT,
  MLDSA_CONTEXT_BALANCE_PROOF,
} from "./constants.js";
import { abiAddressWord, abiWord } from "./eip712.js";
import { QrwpError, assertArgument, type ErrorCode } from "./errors.js";
import {
  MLDSA65_PUBLIC_KEY_BYTES,
  MLDSA65_SIGNATURE_BYTES,
  mldsaSign,
  mldsaVerify,
  signDigest,
  type MldsaVerifier,
  type NodeKeys,
} from "./keys.js";
import { assertBytes, assertBytes32Hex, assertUint256, normalizeAddress } from "./validation.js";

/**
 * One appointment slot inside a batch (see the module doc): an {@link Appointment}'s fields about the closer's
 * proof and the client's counter-signature; the chain, hub, client and its signatures are the batch's.
 * `closingPqSignature` is the closer's evidence (ML-DSA-65, context "qrwp-bp-v1", 3309 bytes).
 */
export type AppointmentSlot = CounterSignedProofFields;

/** A signed batch of slots for one tower (see the module doc). */
export interface AppointmentBatch {
  /** EIP-155 chain id. */
  chainId: bigint;
  /** ChannelHub address (EIP-55). */
  hub: string;
  /** The tower's address: the batch is signed for this tower only. */
  tower: string;
  /** The client: non-closing participant of every slot, signer of the batch. */
  client: string;
  /** The client's ML-DSA-65 public key, 1952 bytes. */
  clientMldsaPublicKey: Uint8Array;
  /** 1..{@link MAX_APPOINTMENT_BATCH_SLOTS} slots; a channel may appear several times with distinct nonces. */
  slots: AppointmentSlot[];
  /** The client's secp256k1 signature of {@link appointmentBatchDigest}, 0x 65 bytes. */
  batchSignature: string;
  /** The client's ML-DSA-65 signature of {@link appointmentBatchDigest} (context "qrwp-wt-v1"), 3309 bytes. */
  coSignature: Uint8Array;
}

/**
 * What a tower did with one slot of a batch:
 * - `stored`: the slot is now the tower's appointment for its channel;
 * - `replayed`: the tower already held exactly this slot (nothing changed);
 * - `superseded`: a slot of the same batch has a higher nonce for the same channel (this one is not stored);
 * - `refused`: `code` says why — `STALE_NONCE` (the tower holds a higher nonce, or the same nonce with other
 *   content), `CHANNEL_NOT_FOUND` (the tower's chain follower has not seen the channel yet: retry later) or
 *   `CHANNEL_STATE` (settled, or closed by the client itself).
 */
export type AppointmentSlotOutcome = "stored" | "replayed" | "superseded" | "refused";

/** One slot's result, in the order of the batch's slots. */
export interface AppointmentSlotResult {
  /** The slot id ({@link appointmentId}), 0x 32 bytes. */
  id: string;
  /** The slot's nonce. */
  nonce: bigint;
  outcome: AppointmentSlotOutcome;
  /** Set when `outcome` is `refused`. */
  code?: ErrorCode;
  /** Set when `outcome` is `refused`: short reason. */
  message?: string;
}

const SLOT_DIGEST_TAG = utf8ToBytes("qrwp-appointment-slot-v1");
const BATCH_DIGEST_TAG = utf8ToBytes("qrwp-appointment-batch-v1");
const SIG_RE = /^0x[0-9a-fA-F]{130}$/;

/** Where a slot lives: what the batch states once for all its slots. */
export interface SlotContext {
  chainId: bigint;
  hub: string;
  client: string;
}

/**
 * Asserts one slot's shape; fields are named `<prefix><field>` (e.g. `slots.3.nonce`).
 * @throws QrwpError INVALID_ARGUMENT naming the first bad field.
 */
export function assertAppointmentSlotShape(s: AppointmentSlot, client: string, prefix = ""): void {
  assertArgument(
    typeof s === "object" && s !== null,
    "slot must be an object",
    prefix.slice(0, -1) || "slot",
  );
  assertUint256(s.channelId, `${prefix}channelId`);
  const closer = normalizeAddress(s.closingParticipant, `${prefix}closingParticipant`);
  assertArgument(
    closer.toLowerCase() !== client.toLowerCase(),
    "the closing participant must not be the client",
    `${prefix}closingParticipant`,
    closer,
  );
  assertUint256(s.nonce, `${prefix}nonce`);
  assertArgument(s.nonce > 0n, "nonce must be >= 1", `${prefix}nonce`, s.nonce);
  assertBytes32Hex(s.balanceHash, `${prefix}balanceHash`);
  assertArgument(!/^0x0{64}$/.test(s.balanceHash), "balanceHash must not be zero", `${prefix}balanceHash`);
  for (const f of ["closingSignature", "nonClosingSignature"] as const) {
    assertArgument(
      typeof s[f] === "string" && SIG_RE.test(s[f]),
      `${f} must be 0x-hex of 65 bytes`,
      `${prefix}${f}`,
    );
  }
  assertBytes(s.closingPqSignature, `${prefix}closingPqSignature`, MLDSA65_SIGNATURE_BYTES);
  assertBytes(s.closingMldsaPublicKey, `${prefix}closingMldsaPublicKey`, MLDSA65_PUBLIC_KEY_BYTES);
}

/**
 * Asserts a batch's shape: every field, 1..{@link MAX_APPOINTMENT_BATCH_SLOTS} slots, and no two slots of the
 * same channel with the same nonce. Does not check signatures.
 * @throws QrwpError INVALID_ARGUMENT naming the first bad field (`slots.<index>.<field>` for a slot).
 */
export function assertAppointmentBatchShape(b: AppointmentBatch): void {
  assertArgument(typeof b === "object" && b !== null, "batch must be an object", "batch");
  assertUint256(b.chainId, "chainId");
  normalizeAddress(b.hub, "hub");
  normalizeAddress(b.tower, "tower");
  const client = normalizeAddress(b.client, "client");
  assertBytes(b.clientMldsaPublicKey, "clientMldsaPublicKey", MLDSA65_PUBLIC_KEY_BYTES);
  assertArgument(
    Array.isArray(b.slots) && b.slots.length >= 1 && b.slots.length <= MAX_APPOINTMENT_BATCH_SLOTS,
    `a batch holds 1..${MAX_APPOINTMENT_BATCH_SLOTS} slots`,
    "slots",
    Array.isArray(b.slots) ? b.slots.length : undefined,
  );
  const seen = new Set<string>();
  b.slots.forEach((s, i) => {
    assertAppointmentSlotShape(s, client, `slots.${i}.`);
    const key = `${s.channelId}:${s.nonce}`;
    assertArgument(
      !seen.has(key),
      "two slots of one channel with the same nonce",
      `slots.${i}.nonce`,
      s.nonce,
    );
    seen.add(key);
  });
  assertArgument(
    typeof b.batchSignature === "string" && SIG_RE.test(b.batchSignature),
    "batchSignature must be 0x-hex of 65 bytes",
    "batchSignature",
  );
  assertBytes(b.coSignature, "coSignature", MLDSA65_SIGNATURE_BYTES);
}

/**
 * The digest naming one slot's content (see the module doc). The slot's shape is assumed checked
 * ({@link assertAppointmentSlotShape}); malformed addresses still throw.
 * @param id - the slot's {@link appointmentId}, if already computed.
 * @returns 32 bytes.
 * @throws QrwpError INVALID_ARGUMENT on malformed fields.
 */
export function appointmentSlotDigest(ctx: SlotContext, s: AppointmentSlot, id?: string): Uint8Array {
  return sha256(
    concatBytes(
      SLOT_DIGEST_TAG,
      hexToBytes((id ?? appointmentId(ctx.chainId, ctx.hub, s.channelId, ctx.client)).slice(2)),
      abiAddressWord(s.closingParticipant),
      abiWord(s.nonce),
      hexToBytes(s.balanceHash.slice(2)),
      keccak_256(hexToBytes(s.closingSignature.slice(2))),
      sha256(s.closingPqSignature),
      sha256(s.closingMldsaPublicKey),
      keccak_256(hexToBytes(s.nonClosingSignature.slice(2))),
    ),
  );
}

/**
 * The digest the client signs for a batch (see the module doc).
 * @param slotDigests - the slots' {@link appointmentSlotDigest}s in order, if already computed.
 * @returns 32 bytes.
 * @throws QrwpError INVALID_ARGUMENT on malformed fields.
 */
export function appointmentBatchDigest(
  b: Pick<AppointmentBatch, "chainId" | "hub" | "tower" | "client" | "clientMldsaPublicKey" | "slots">,
  slotDigests?: readonly Uint8Array[],
): Uint8Array {
  const digests = slotDigests ?? b.slots.map((s) => appointmentSlotDigest(b, s));
  assertArgument(digests.length === b.slots.length, "one digest per slot", "slots");
  const count = new Uint8Array(4);
  new DataView(count.buffer).setUint32(0, digests.length);
  return sha256(
    concatBytes(
      BATCH_DIGEST_TAG,
      abiWord(b.chainId),
      abiAddressWord(b.hub),
      abiAddressWord(b.tower),
      abiAddressWord(b.client),
      sha256(b.clientMldsaPublicKey),
      count,
      ...digests,
    ),
  );
}

/** The slot an {@link Appointment} carries (its client signatures aside). */
export function slotOfAppointment(a: Appointment): AppointmentSlot {
  return {
    channelId: a.channelId,
    closingParticipant: a.closingParticipant,
    nonce: a.nonce,
    balanceHash: a.balanceHash,
    closingSignature: a.closingSignature,
    closingPqSignature: a.closingPqSignature,
    closingMldsaPublicKey: a.closingMldsaPublicKey,
    nonClosingSignature: a.nonClosingSignature,
  };
}

/**
 * Builds the slot for the partner's latest balance proof (node side): counter-signs it (`BalanceProofUpdate`,
 * secp256k1). The slot is the same for every tower; only the batch signature is per tower.
 * @param partnerProof - the partner's signed proof as the node accepted it (nonce >= 1, with its ML-DSA-65
 *   signature).
 * @param partner - the partner's address and the ML-DSA-65 key it proved in the session handshake.
 * @param keys - the node's keys (the client).
 * @throws QrwpError INVALID_ARGUMENT on malformed input.
 */
export function createAppointmentSlot(
  partnerProof: SignedBalanceProof,
  partner: { address: string; mldsaPublicKey: Uint8Array },
  keys: NodeKeys,
): AppointmentSlot {
  const slot: AppointmentSlot = counterSignedProofFields(partnerProof, partner, keys);
  assertAppointmentSlotShape(slot, keys.address);
  return slot;
}

/**
 * Signs a batch of slots for one tower (node side): one secp256k1 and one ML-DSA-65 signature (~9 ms) whatever
 * the number of slots.
 * @param tower - the tower's address (proven in the session handshake).
 * @throws QrwpError INVALID_ARGUMENT on a malformed slot, an empty or oversized batch.
 */
export function signAppointmentBatch(
  target: { chainId: bigint; hub: string; tower: string },
  slots: AppointmentSlot[],
  keys: NodeKeys,
): AppointmentBatch {
  const unsigned = {
    chainId: target.chainId,
    hub: normalizeAddress(target.hub, "hub"),
    tower: normalizeAddress(target.tower, "tower"),
    client: keys.address,
    clientMldsaPublicKey: keys.mldsaPublicKey,
    slots,
  };
  const digest = appointmentBatchDigest(unsigned);
  const batch: AppointmentBatch = {
    ...unsigned,
    batchSignature: signDigest(digest, keys.secp256k1PrivateKey),
    coSignature: mldsaSign(digest, keys.mldsaSecretKey, MLDSA_CONTEXT_APPOINTMENT),
  };
  assertAppointmentBatchShape(batch);
  return batch;
}

/**
 * Verifies the client's two batch signatures over `digest` (= {@link appointmentBatchDigest}): secp256k1 first,
 * then ML-DSA-65 under `clientMldsaPublicKey`.
 * @throws QrwpError INVALID_SIGNATURE with `details.field` `batchSignature` or `coSignature`.
 */
export function verifyAppointmentBatchSignatures(b: AppointmentBatch, digest: Uint8Array): void {
  expectSigner(digest, b.batchSignature, normalizeAddress(b.client, "client"), "batchSignature");
  if (!mldsaVerify(b.coSignature, digest, b.clientMldsaPublicKey, MLDSA_CONTEXT_APPOINTMENT)) {
    throw new QrwpError("INVALID_SIGNATURE", "the batch's ML-DSA-65 co-signature is invalid", {
      field: "coSignature",
    });
  }
}

/**
 * Verifies one slot's two secp256k1 signatures: the closer's `BalanceProof` signature and the client's
 * `BalanceProofUpdate` counter-signature — exactly what the hub checks on a contest.
 * @param prefix - prefix of the field names in errors (e.g. `slots.3.`).
 * @param bpDigest - the slot's blinded `BalanceProof` digest, if at hand (computed otherwise).
 * @returns the slot's EIP-712 `BalanceProof` digest (what {@link verifyAppointmentSlotEvidence} checks).
 * @throws QrwpError INVALID_SIGNATURE with `details.field` naming the first signature that fails.
 */
export function verifyAppointmentSlot(
  ctx: SlotContext,
  s: AppointmentSlot,
  prefix = "",
  bpDigest: Uint8Array = slotBalanceProofDigest(ctx, s),
): Uint8Array {
  const blinded = { chainId: ctx.chainId, hub: ctx.hub, channelId: s.channelId, nonce: s.nonce };
  expectSigner(
    bpDigest,
    s.closingSignature,
    normalizeAddress(s.closingParticipant, "closingParticipant"),
    `${prefix}closingSignature`,
  );
  expectSigner(
    blindedBalanceProofUpdateDigest(blinded, s.balanceHash, s.closingSignature),
    s.nonClosingSignature,
    normalizeAddress(ctx.client, "client"),
    `${prefix}nonClosingSignature`,
  );
  return bpDigest;
}

/**
 * Verifies a slot's evidence: the closer's ML-DSA-65 signature (context "qrwp-bp-v1") of its `BalanceProof`
 * digest under `closingMldsaPublicKey`.
 * @param bpDigest - the digest {@link verifyAppointmentSlot} returned for this slot, if at hand.
 * @throws QrwpError INVALID_SIGNATURE with `details.field` `<prefix>closingPqSignature`.
 */
export function verifyAppointmentSlotEvidence(
  ctx: SlotContext,
  s: AppointmentSlot,
  prefix = "",
  bpDigest?: Uint8Array,
): void {
  const digest = bpDigest ?? slotBalanceProofDigest(ctx, s);
  if (!mldsaVerify(s.closingPqSignature, digest, s.closingMldsaPublicKey, MLDSA_CONTEXT_BALANCE_PROOF)) {
    throw badEvidence(prefix);
  }
}

/** The slot's blinded EIP-712 `BalanceProof` digest: what the closer signed, twice. */
function slotBalanceProofDigest(ctx: SlotContext, s: AppointmentSlot): Uint8Array {
  return blindedBalanceProofDigest(
    { chainId: ctx.chainId, hub: ctx.hub, channelId: s.channelId, nonce: s.nonce },
    s.balanceHash,
  );
}

function badEvidence(prefix: string): QrwpError {
  return new QrwpError("INVALID_SIGNATURE", "the closer's ML-DSA-65 signature is invalid", {
    field: `${prefix}closingPqSignature`,
  });
}

/**
 * Every signature check of a batch that stores slots, as {@link verifyAppointmentBatchSignatures},
 * {@link verifyAppointmentSlot} and {@link verifyAppointmentSlotEvidence} run them one after the other, with the
 * ML-DSA-65 verifications handed to `verifyMldsa` (a pool of worker threads: host/mldsa-verify-pool.ts). The
 * client's secp256k1 batch signature is checked first (a forged batch costs no ML-DSA-65); then the co-signature
 * and every evidence are handed out at once, and this thread recovers the slots' secp256k1 signers meanwhile.
 * Whichever check finishes first, the error is the one the sequential order meets first: batchSignature,
 * coSignature, each slot's closingSignature and nonClosingSignature, each stored slot's closingPqSignature.
 * @param digest - {@link appointmentBatchDigest} of `b`.
 * @param checked - the slots to check, in order: index into `b.slots`, and whether its evidence is checked
 *   (the slot is the one stored for its channel).
 * @throws QrwpError INVALID_SIGNATURE with `details.field` `batchSignature`, `coSignature` or
 *   `slots.<i>.closingSignature | nonClosingSignature | closingPqSignature`.
 */
export async function verifyAppointmentBatchChecks(
  ctx: SlotContext,
  b: AppointmentBatch,
  digest: Uint8Array,
  checked: ReadonlyArray<{ i: number; evidence: boolean }>,
  verifyMldsa: MldsaVerifier,
): Promise<void> {
  expectSigner(digest, b.batchSignature, normalizeAddress(b.client, "client"), "batchSignature");
  const coSignature = verifyMldsa(b.coSignature, digest, b.clientMldsaPublicKey, MLDSA_CONTEXT_APPOINTMENT);
  const bpDigests = checked.map(({ i }) => slotBalanceProofDigest(ctx, b.slots[i]!));
  const evidence = checked.map(({ i, evidence }, k) => {
    const s = b.slots[i]!;
    return evidence
      ? verifyMldsa(s.closingPqSignature, bpDigests[k]!, s.closingMldsaPublicKey, MLDSA_CONTEXT_BALANCE_PROOF)
      : null;
  });
  let slotError: unknown = null;
  try {
    checked.forEach(({ i }, k) => verifyAppointmentSlot(ctx, b.slots[i]!, `slots.${i}.`, bpDigests[k]));
  } catch (err) {
    slotError = err;
  }
  if (!(await coSignature)) {
    throw new QrwpError("INVALID_SIGNATURE", "the batch's ML-DSA-65 co-signature is invalid", {
      field: "coSignature",
    });
  }
  if (slotError !== null) throw slotError;
  for (const [k, { i }] of checked.entries()) {
    if (evidence[k] !== null && !(await evidence[k])) throw badEvidence(`slots.${i}.`);
  }
}

// ------------------------------------------------------------------------------------------------
// Wire forms. CBOR (libp2p): integers as decimal strings, keys and ML-DSA signatures as byte strings,
// addresses and secp256k1 signatures as 0x-hex strings. JSON (HTTP): the same with bytes as 0x-hex.
// ------------------------------------------------------------------------------------------------

const uint = z
  .string()
  .regex(/^(0|[1-9][0-9]{0,77})$/, "must be a decimal unsigned integer")
  .transform((s) => BigInt(s))
  .refine((v) => v < 1n << 256n, "must fit in uint256");
const addr = z.string().regex(/^0x[0-9a-fA-F]{40}$/, "must be a 20-byte hex address");
const bytes32 = z.string().regex(/^0x[0-9a-fA-F]{64}$/, "must be 32-byte hex");
const sig65 = z.string().regex(SIG_RE, "must be a 65-byte hex signature");
/** A byte string of exactly `n` bytes, copied (cbor-x hands out views into the frame). */
const rawBytes = (n: number) =>
  z
    .instanceof(Uint8Array)
    .refine((b) => b.length === n, `must be ${n} bytes`)
    .transform((b) => Uint8Array.from(b));
const hexBytes = (n: number) =>
  z
    .string()
    .regex(new RegExp(`^0x[0-9a-fA-F]{${2 * n}}$`), `must be 0x-hex of ${n} bytes`)
    .transform((s) => hexToBytes(s.slice(2)));

function batchSchema(bytes: (n: number) => z.ZodType<Uint8Array, unknown>) {
  const slot = z.object({
    channelId: uint,
    closingParticipant: addr,
    nonce: uint,
    balanceHash: bytes32,
    closingSignature: sig65,
    closingPqSignature: bytes(MLDSA65_SIGNATURE_BYTES),
    closingMldsaPublicKey: bytes(MLDSA65_PUBLIC_KEY_BYTES),
    nonClosingSignature: sig65,
  });
  return z.object({
    chainId: uint,
    hub: addr,
    tower: addr,
    client: addr,
    clientMldsaPublicKey: bytes(MLDSA65_PUBLIC_KEY_BYTES),
    slots: z.array(slot).min(1).max(MAX_APPOINTMENT_BATCH_SLOTS),
    batchSignature: sig65,
    coSignature: bytes(MLDSA65_SIGNATURE_BYTES),
  });
}

/** zod schema of the CBOR wire form (messages.ts); parses to an {@link AppointmentBatch}. */
export const appointmentBatchWireSchema = batchSchema(rawBytes);
/** zod schema of the JSON form (`POST /v1/appointment-batches`); parses to an {@link AppointmentBatch}. */
export const appointmentBatchJsonSchema = batchSchema(hexBytes);

/** The CBOR wire form of a batch (bigints as decimal strings, bytes kept). */
export function appointmentBatchToWire(b: AppointmentBatch): Record<string, unknown> {
  return {
    chainId: b.chainId.toString(),
    hub: b.hub,
    tower: b.tower,
    client: b.client,
    clientMldsaPublicKey: b.clientMldsaPublicKey,
    slots: b.slots.map((s) => ({
      channelId: s.channelId.toString(),
      closingParticipant: s.closingParticipant,
      nonce: s.nonce.toString(),
      balanceHash: s.balanceHash,
      closingSignature: s.closingSignature,
      closingPqSignature: s.closingPqSignature,
      closingMldsaPublicKey: s.closingMldsaPublicKey,
      nonClosingSignature: s.nonClosingSignature,
    })),
    batchSignature: b.batchSignature,
    coSignature: b.coSignature,
  };
}

const hex = (b: Uint8Array) => `0x${bytesToHex(b)}`;

/** The JSON form of a batch (`POST /v1/appointment-batches` body): integers decimal, bytes 0x-hex. */
export function appointmentBatchToJson(b: AppointmentBatch): Record<string, unknown> {
  const wire = appointmentBatchToWire(b);
  return {
    ...wire,
    clientMldsaPublicKey: hex(b.clientMldsaPublicKey),
    slots: b.slots.map((s, i) => ({
      ...(wire.slots as Record<string, unknown>[])[i],
      closingPqSignature: hex(s.closingPqSignature),
      closingMldsaPublicKey: hex(s.closingMldsaPublicKey),
    })),
    coSignature: hex(b.coSignature),
  };
}

/**
 * Parses the JSON form, including the batch's shape rules ({@link assertAppointmentBatchShape}).
 * @throws QrwpError INVALID_ARGUMENT with `details.field` naming the first bad field (`slots.<index>.<field>`).
 */
export function appointmentBatchFromJson(json: unknown): AppointmentBatch {
  const parsed = appointmentBatchJsonSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue ? issue.path.join(".") || "batch" : "batch";
    throw new QrwpError("INVALID_ARGUMENT", `invalid ${field}: ${issue?.message ?? "malformed"}`, { field });
  }
  assertAppointmentBatchShape(parsed.data);
  return parsed.data;
}

/** zod schema of one slot result on the wire (CBOR). */
export const appointmentSlotResultWireSchema = z.object({
  id: bytes32,
  nonce: uint,
  outcome: z.enum(["stored", "replayed", "superseded", "refused"]),
  code: (z.string().regex(/^[A-Z_]{2,40}$/) as unknown as z.ZodType<ErrorCode>).optional(),
  message: z.string().max(256).optional(),
});
