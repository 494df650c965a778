/**
 * Channel-protocol messages (`/qrwp/channel/1.0.0`) and watchtower-protocol messages
 * (`/qrwp/watchtower/1.0.0`: `Appointment` → `AppointmentAccepted` | `Error`, `AppointmentBatch` →
 * `AppointmentBatchAccepted` | `Error`), carried inside the encrypted session frames of
 * `session.ts`. Each frame holds one {@link Envelope}: a request (`id`) or the reply to one (`replyTo`).
 *
 * Wire form: CBOR (RFC 8949, via cbor-x) of a plain object whose integers are decimal strings and whose
 * binary fields are byte strings. Decoding is strict: every field is validated with zod and anything
 * malformed is refused with `QrwpError("INVALID_MESSAGE")` naming the field; the decoder never throws
 * anything else. Message names follow the Raiden spec where one exists (DirectTransfer, Processed).
 */
import { Encoder } from "cbor-x";
import { z } from "zod";
import { QrwpError, type ErrorCode } from "./errors.js";
import type { SignedBalanceProof } from "./balance-proof.js";
import type { Lock } from "./locks.js";
import { appointmentJsonSchema, appointmentToJson, type Appointment } from "./appointment.js";
import {
  appointmentBatchToWire,
  appointmentBatchWireSchema,
  appointmentSlotResultWireSchema,
  type AppointmentBatch,
  type AppointmentSlotResult,
} from "./appointment-batch.js";
import { MAX_APPOINTMENT_BATCH_SLOTS, MAX_BATCH_CHANGES, MAX_FRAME_BYTES } from "./constants.js";
import { MLDSA65_SIGNATURE_BYTES } from "./keys.js";

const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

const UINT256_MAX = 2n ** 256n - 1n;
const uint256 = z
  .string()
  .regex(/^(0|[1-9][0-9]{0,77})$/, "must be a decimal unsigned integer")
  .transform((s) => BigInt(s))
  .refine((v) => v <= UINT256_MAX, "must fit in uint256");
const address = z.string().regex(/^0x[0-9a-fA-F]{40}$/, "must be a 20-byte hex address");
const bytes32 = z.string().regex(/^0x[0-9a-fA-F]{64}$/, "must be 32-byte hex");
const signature65 = z.string().regex(/^0x[0-9a-fA-F]{130}$/, "must be a 65-byte hex signature");
const paymentId = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9._:-]+$/, "must be 1-128 characters of [A-Za-z0-9._:-]");
const multiaddrs = z.array(z.string().min(1).max(512)).max(16);
const secret32 = bytes32;
/** A secret hash, lower-cased on decode (as `secretHashOf` and the channel state produce it). */
const secretHash32 = bytes32.transform((s) => s.toLowerCase());
const lockSchema = z.object({
  amount: uint256.refine((v) => v > 0n, "must be > 0"),
  expiration: uint256,
  secretHash: secretHash32,
});
/** Longest route a LockedTransfer may carry (hops after the initiator). */
export const MAX_ROUTE_HOPS = 20;
const routeSchema = z
  .array(z.object({ address, amount: uint256, expiration: uint256 }))
  .min(1)
  .max(MAX_ROUTE_HOPS);

const signedBalanceProofSchema = z.object({
  chainId: uint256,
  hub: address,
  channelId: uint256,
  nonce: uint256,
  transferredAmount: uint256,
  lockedAmount: uint256,
  locksRoot: bytes32,
  signature: signature65,
  // Empty: the proof carries no evidence (docs/PROTOCOL.md §7.4); else one ML-DSA-65 signature.
  pqSignature: z
    .instanceof(Uint8Array)
    .refine(
      (b) => b.length === 0 || b.length === MLDSA65_SIGNATURE_BYTES,
      `must be empty or ${MLDSA65_SIGNATURE_BYTES} bytes`,
    ),
});

const amountPositive = uint256.refine((v) => v > 0n, "must be > 0");
/** What a new lock carries besides the proof (a LockedTransfer, or a `lock` change of a BalanceUpdate). */
const lockFields = {
  paymentId,
  initiator: address,
  target: address,
  lock: lockSchema,
  route: routeSchema,
  initiatorMultiaddrs: multiaddrs,
};
const balanceChangeSchema = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("direct"), paymentId, amount: amountPositive }),
  z.object({ kind: z.literal("lock"), ...lockFields }),
  z.object({ kind: z.literal("unlock"), paymentId, secret: secret32 }),
  z.object({ kind: z.literal("expire"), secretHash: secretHash32 }),
]);

/** One change a {@link BalanceUpdate} applies, in order, to its sender's channel end. */
export type BalanceChange =
  /** A direct payment of `amount` base units (as {@link DirectTransfer}). */
  | { kind: "direct"; paymentId: string; amount: bigint }
  /** A new lock of a mediated payment (as {@link LockedTransfer} without its proof). */
  | {
      kind: "lock";
      paymentId: string;
      initiator: string;
      target: string;
      lock: Lock;
      route: RouteHopInfo[];
      initiatorMultiaddrs: string[];
    }
  /** Pays the lock of `sha256(secret)` (as {@link Unlock}). */
  | { kind: "unlock"; paymentId: string; secret: string }
  /** Removes the lock of `secretHash` (as {@link LockExpired}). */
  | { kind: "expire"; secretHash: string };

/** The `lock` change adding `lock` for the mediated payment `transfer` (what a LockedTransfer carries). */
export function lockChangeOf(
  transfer: Pick<LockedTransfer, "paymentId" | "initiator" | "target" | "route" | "initiatorMultiaddrs">,
  lock: Lock,
): BalanceChange {
  const { paymentId, initiator, target, route, initiatorMultiaddrs } = transfer;
  return { kind: "lock", paymentId, initiator, target, lock, route, initiatorMultiaddrs };
}

/**
 * A batch of changes carried by ONE new balance proof (a Lightning `commitment_signed` covering many HTLC
 * updates): the receiver applies `changes` in order to the sender's last accepted end and accepts the update
 * only if the result is exactly what `balanceProof` commits to; it stores everything in one transaction and
 * answers one Processed, or refuses the whole update (docs/PROTOCOL.md §7.3). 1..{@link MAX_BATCH_CHANGES}
 * changes; a payment id or secret hash appears at most once.
 */
export interface BalanceUpdate {
  type: "BalanceUpdate";
  changes: BalanceChange[];
  balanceProof: SignedBalanceProof;
}
/**
 * Post-quantum evidence for a proof already accepted: the sender's ML-DSA-65 signature over the digest of its
 * balance proof `nonce` on `channelId` (docs/PROTOCOL.md §7.4). Reply: Ok, or Error INVALID_EVIDENCE.
 */
export interface Evidence {
  type: "Evidence";
  channelId: bigint;
  nonce: bigint;
  pqSignature: Uint8Array;
}
/** Announces a channel the sender opened on-chain with the receiver; the receiver checks it on-chain. */
export interface ChannelAnnounce {
  type: "ChannelAnnounce";
  channelId: bigint;
  multiaddrs: string[];
}
/** A direct (single-hop) transfer of `amount` token base units, carried by a new balance proof. */
export interface DirectTransfer {
  type: "DirectTransfer";
  paymentId: string;
  amount: bigint;
  balanceProof: SignedBalanceProof;
}
/** The receiver's acknowledgement that it durably stored the balance proof with `nonce` (Raiden: Processed). */
export interface Processed {
  type: "Processed";
  channelId: bigint;
  nonce: bigint;
}
/** Asks the partner to co-sign a cooperative settle with these final amounts (token base units). */
export interface CooperativeSettleRequest {
  type: "CooperativeSettleRequest";
  channelId: bigint;
  participant1: string;
  participant1Amount: bigint;
  participant2: string;
  participant2Amount: bigint;
  signature: string;
}
/** The partner's EIP-712 signature over the same cooperative settle. */
export interface CooperativeSettleResponse {
  type: "CooperativeSettleResponse";
  channelId: bigint;
  signature: string;
}
/**
 * Asks the partner to co-sign raising the sender's total withdraw on a channel to `totalWithdraw` (token base
 * units, monotonic) until `expiryTimestamp` (unix seconds of block.timestamp): the EIP-712 `Withdraw` of
 * protocol/withdraw.ts, signed by the sender (Raiden's WithdrawRequest).
 */
export interface WithdrawRequest {
  type: "WithdrawRequest";
  channelId: bigint;
  participant: string;
  totalWithdraw: bigint;
  expiryTimestamp: bigint;
  signature: string;
}
/** The partner's signature over the same `Withdraw` (Raiden's WithdrawConfirmation). */
export interface WithdrawConfirmation {
  type: "WithdrawConfirmation";
  channelId: bigint;
  totalWithdraw: bigint;
  signature: string;
}
/** The sender's listen addresses, sent right after the session handshake. */
export interface PeerInfo {
  type: "PeerInfo";
  multiaddrs: string[];
}
/**
 * One hop of a mediated payment's route as the initiator computed it: the node `address` is to receive a
 * lock of `amount` (token base units) expiring at `expiration` (unix seconds). The last hop is the target.
 */
export interface RouteHopInfo {
  address: string;
  amount: bigint;
  expiration: bigint;
}
/**
 * A mediated transfer (Raiden LockedTransfer / BOLT 2 update_add_htlc): a new balance proof adding `lock`.
 * The route is carried in clear (no onion yet); each mediator finds itself in `route` and forwards to the
 * next entry. `initiatorMultiaddrs` lets the target reach the initiator for a SecretRequest.
 */
export interface LockedTransfer {
  type: "LockedTransfer";
  paymentId: string;
  initiator: string;
  target: string;
  lock: Lock;
  route: RouteHopInfo[];
  initiatorMultiaddrs: string[];
  balanceProof: SignedBalanceProof;
}
/** Target -> initiator: asks for the secret of `secretHash`, stating the lock it holds. Reply: RevealSecret. */
export interface SecretRequest {
  type: "SecretRequest";
  paymentId: string;
  secretHash: string;
  amount: bigint;
  expiration: bigint;
}
/** The 32-byte secret (preimage) of a payment hash; sent back along the route (BOLT 2 update_fulfill_htlc). */
export interface RevealSecret {
  type: "RevealSecret";
  secret: string;
}
/** Pays a lock off-chain: a new balance proof moving the lock's amount to transferredAmount. */
export interface Unlock {
  type: "Unlock";
  paymentId: string;
  secret: string;
  balanceProof: SignedBalanceProof;
}
/** Removes an expired (or declined) lock: a new balance proof without it. */
export interface LockExpired {
  type: "LockExpired";
  secretHash: string;
  balanceProof: SignedBalanceProof;
}
/**
 * Downstream -> upstream: the lock for `secretHash` will not complete; `code` says why (NO_ROUTE,
 * UNKNOWN_TARGET, INSUFFICIENT_CAPACITY, FEE_TOO_LOW, EXPIRY_TOO_SOON, PEER_OFFLINE, ...) and `failedAt` who
 * gave up. The sender of this message will accept a LockExpired for the lock at once.
 */
export interface TransferFailed {
  type: "TransferFailed";
  paymentId: string;
  secretHash: string;
  code: ErrorCode;
  message: string;
  failedAt: string;
}
/** Requests that may travel in a {@link MessageBatch}: the per-payment messages between nodes on a route. */
export type BatchableRequest = SecretRequest | RevealSecret | TransferFailed;
/** Replies inside a {@link MessageBatchReply}. */
export type BatchedReply = RevealSecret | Ok | ErrorReply;
/** Most messages in one {@link MessageBatch}. */
export const MAX_MESSAGE_BATCH = 128;

/**
 * Several {@link BatchableRequest}s to one peer in one request (1..{@link MAX_MESSAGE_BATCH}): the receiver
 * handles them in order exactly as if they came one by one, and answers one {@link MessageBatchReply}
 * (docs/PROTOCOL.md §9, "Batches"). A node under load sends the SecretRequests, RevealSecrets and TransferFailed of
 * many payments to the same peer this way: one frame, one reply, instead of one round trip per payment.
 */
export interface MessageBatch {
  type: "MessageBatch";
  messages: BatchableRequest[];
}
/** The reply to a {@link MessageBatch}: one reply per message, in the batch's order. */
export interface MessageBatchReply {
  type: "MessageBatchReply";
  replies: BatchedReply[];
}

/** Generic success reply. */
export interface Ok {
  type: "Ok";
}
/** A refusal with a coded reason; the request changed no state on the sender of this message. */
export interface ErrorReply {
  type: "Error";
  code: ErrorCode;
  message: string;
}

/** A node hands a watchtower an appointment (watchtower protocol). */
export interface AppointmentRequest {
  type: "Appointment";
  appointment: Appointment;
}
/** The tower stored the appointment (`stored` false: it already held exactly this one). */
export interface AppointmentAccepted {
  type: "AppointmentAccepted";
  /** The slot id (`appointmentId`), 0x 32 bytes. */
  id: string;
  nonce: bigint;
  stored: boolean;
}

/** A node hands a watchtower a batch of appointment slots under one client signature (watchtower protocol). */
export interface AppointmentBatchRequest {
  type: "AppointmentBatch";
  batch: AppointmentBatch;
}
/** The tower processed a batch: one result per slot, in the batch's order (nothing stored on a refusal). */
export interface AppointmentBatchAccepted {
  type: "AppointmentBatchAccepted";
  results: AppointmentSlotResult[];
}

export type ChannelMessage =
  | ChannelAnnounce
  | BalanceUpdate
  | Evidence
  | DirectTransfer
  | LockedTransfer
  | SecretRequest
  | RevealSecret
  | Unlock
  | LockExpired
  | TransferFailed
  | Processed
  | CooperativeSettleRequest
  | CooperativeSettleResponse
  | WithdrawRequest
  | WithdrawConfirmation
  | PeerInfo
  | AppointmentRequest
  | AppointmentAccepted
  | AppointmentBatchRequest
  | AppointmentBatchAccepted
  | MessageBatch
  | MessageBatchReply
  | Ok
  | ErrorReply;

/** One frame's content: `id` numbers requests per direction; a reply carries the request's id in `replyTo`. */
export interface Envelope {
  id: number;
  replyTo?: number;
  body: ChannelMessage;
}

const errorCode = z.string().regex(/^[A-Z_]{2,40}$/) as unknown as z.ZodType<ErrorCode>;

const secretRequestSchema = z.object({
  type: z.literal("SecretRequest"),
  paymentId,
  secretHash: secretHash32,
  amount: uint256,
  expiration: uint256,
});
const revealSecretSchema = z.object({ type: z.literal("RevealSecret"), secret: secret32 });
const transferFailedSchema = z.object({
  type: z.literal("TransferFailed"),
  paymentId,
  secretHash: secretHash32,
  code: errorCode,
  message: z.string().max(1024),
  failedAt: address,
});
const okSchema = z.object({ type: z.literal("Ok") });
const errorSchema = z.object({ type: z.literal("Error"), code: errorCode, message: z.string().max(1024) });

const bodySchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("ChannelAnnounce"), channelId: uint256, multiaddrs }),
  z.object({
    type: z.literal("BalanceUpdate"),
    changes: z.array(balanceChangeSchema).min(1).max(MAX_BATCH_CHANGES),
    balanceProof: signedBalanceProofSchema,
  }),
  z.object({
    type: z.literal("Evidence"),
    channelId: uint256,
    nonce: uint256,
    pqSignature: z
      .instanceof(Uint8Array)
      .refine((b) => b.length === MLDSA65_SIGNATURE_BYTES, `must be ${MLDSA65_SIGNATURE_BYTES} bytes`),
  }),
  z.object({
    type: z.literal("DirectTransfer"),
    paymentId,
    amount: uint256,
    balanceProof: signedBalanceProofSchema,
  }),
  z.object({ type: z.literal("LockedTransfer"), ...lockFields, balanceProof: signedBalanceProofSchema }),
  secretRequestSchema,
  revealSecretSchema,
  z.object({
    type: z.literal("Unlock"),
    paymentId,
    secret: secret32,
    balanceProof: signedBalanceProofSchema,
  }),
  z.object({
    type: z.literal("LockExpired"),
    secretHash: secretHash32,
    balanceProof: signedBalanceProofSchema,
  }),
  transferFailedSchema,
  z.object({ type: z.literal("Processed"), channelId: uint256, nonce: uint256 }),
  z.object({
    type: z.literal("CooperativeSettleRequest"),
    channelId: uint256,
    participant1: address,
    participant1Amount: uint256,
    participant2: address,
    participant2Amount: uint256,
    signature: signature65,
  }),
  z.object({ type: z.literal("CooperativeSettleResponse"), channelId: uint256, signature: signature65 }),
  z.object({
    type: z.literal("WithdrawRequest"),
    channelId: uint256,
    participant: address,
    totalWithdraw: uint256,
    expiryTimestamp: uint256,
    signature: signature65,
  }),
  z.object({
    type: z.literal("WithdrawConfirmation"),
    channelId: uint256,
    totalWithdraw: uint256,
    signature: signature65,
  }),
  z.object({ type: z.literal("PeerInfo"), multiaddrs }),
  // The appointment travels in its JSON form (strings) inside CBOR; it is ~11 kB either way.
  z.object({ type: z.literal("Appointment"), appointment: appointmentJsonSchema }),
  z.object({ type: z.literal("AppointmentAccepted"), id: bytes32, nonce: uint256, stored: z.boolean() }),
  // Slots carry their keys and ML-DSA signatures as byte strings: ~6 kB a slot, at most 64 slots.
  z.object({ type: z.literal("AppointmentBatch"), batch: appointmentBatchWireSchema }),
  z.object({
    type: z.literal("AppointmentBatchAccepted"),
    results: z.array(appointmentSlotResultWireSchema).max(MAX_APPOINTMENT_BATCH_SLOTS),
  }),
  z.object({
    type: z.literal("MessageBatch"),
    messages: z
      .array(z.discriminatedUnion("type", [secretRequestSchema, revealSecretSchema, transferFailedSchema]))
      .min(1)
      .max(MAX_MESSAGE_BATCH),
  }),
  z.object({
    type: z.literal("MessageBatchReply"),
    replies: z
      .array(z.discriminatedUnion("type", [revealSecretSchema, okSchema, errorSchema]))
      .min(1)
      .max(MAX_MESSAGE_BATCH),
  }),
  okSchema,
  errorSchema,
]);

const envelopeSchema = z.object({
  id: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  replyTo: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  body: bodySchema,
});

function toWire(value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Uint8Array) return value;
  if (Array.isArray(value)) return value.map(toWire);
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = toWire(v);
    return out;
  }
  return value;
}

/** Encodes an envelope to CBOR bytes. Integers (bigint) travel as decimal strings. */
export function encodeEnvelope(envelope: Envelope): Uint8Array {
  const body = envelope.body;
  if (body.type === "Appointment") {
    return cbor.encode(
      toWire({ ...envelope, body: { type: body.type, appointment: appointmentToJson(body.appointment) } }),
    ) as Uint8Array;
  }
  if (body.type === "AppointmentBatch") {
    return cbor.encode(
      toWire({ ...envelope, body: { type: body.type, batch: appointmentBatchToWire(body.batch) } }),
    ) as Uint8Array;
  }
  const wireBody =
    "balanceProof" in body
      ? {
          ...body,
          balanceProof: {
            ...body.balanceProof.proof,
            signature: body.balanceProof.signature,
            pqSignature: body.balanceProof.pqSignature,
          },
        }
      : body;
  return cbor.encode(toWire({ ...envelope, body: wireBody })) as Uint8Array;
}

/**
 * Decodes and validates an envelope.
 * @throws QrwpError("INVALID_MESSAGE") with `details.field` naming the first bad field; never anything else.
 */
export function decodeEnvelope(data: Uint8Array): Envelope {
  if (data.length > MAX_FRAME_BYTES) {
    throw new QrwpError("INVALID_MESSAGE", "message too large", { field: "frame", size: data.length });
  }
  let raw: unknown;
  try {
    raw = cbor.decode(data);
  } catch (cause) {
    throw new QrwpError("INVALID_MESSAGE", "message is not valid CBOR", { field: "frame" }, { cause });
  }
  const parsed = envelopeSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue ? issue.path.join(".") || "body" : "body";
    throw new QrwpError("INVALID_MESSAGE", `invalid ${field}: ${issue?.message ?? "malformed"}`, { field });
  }
  const { id, replyTo, body } = parsed.data;
  const envelope: Envelope = { id, body: body as ChannelMessage };
  if (replyTo !== undefined) envelope.replyTo = replyTo;
  if (body.type === "Evidence") {
    envelope.body = { ...body, pqSignature: Uint8Array.from(body.pqSignature) };
  }
  if ("balanceProof" in body) {
    const { signature, pqSignature, ...proof } = body.balanceProof;
    // A copy: cbor-x returns a Buffer view into `data`, which the caller may reuse.
    envelope.body = {
      ...body,
      balanceProof: { proof, signature, pqSignature: Uint8Array.from(pqSignature) },
    } as ChannelMessage;
  }
  return envelope;
}
