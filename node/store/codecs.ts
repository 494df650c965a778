/**
 * Row codecs of the node store: every row `NodeStore` reads is decoded here (zod over the columns, then the
 * record built), never cast. A corrupt row is `QrwpError("INTERNAL")` naming its table and column
 * (host/sqlite.ts `decodeRow`). The write side's parameter lists live next to their statements.
 *
 * Columns hold amounts as decimal strings of uint256 (`uintText`), nonces and times as SQLite integers.
 */
import { z } from "zod";
import { column, corruptRow, decodeRow } from "../../host/sqlite.js";
import { unpackLocks, type Lock, type SignedBalanceProof } from "../../protocol/index.js";
import type {
  ChannelBase,
  ChannelRecord,
  InvoiceRecord,
  MediatedPaymentRecord,
  PaymentRecord,
  PeerRecord,
  PendingWithdraw,
  ProofStatus,
  StoredProof,
  TransferRecord,
} from "./types.js";

const { uintText, addressText, bytes32Text, signatureText, int, uint } = column;

// ---- channels, withdraws, balance proofs, peers ----

const channelRow = z.object({
  channel_id: uintText,
  partner: addressText,
  token: addressText,
  state: z.enum(["opened", "closed", "settled"]),
  settle_timeout_seconds: uint,
  our_deposit: uintText,
  partner_deposit: uintText,
  closed_at_seconds: uint.nullable(),
  closing_participant: addressText.nullable(),
  opened_at: int,
  updated_at: int,
  our_withdraw: uintText,
  partner_withdraw: uintText,
});

/**
 * A `channels` row decoded: columns checked, then the lifecycle union built from the state and its close
 * columns. A closed row without a close time (written before close times were kept) decodes with 0; the
 * channel monitor replaces it with the chain's at its next pass.
 * @throws QrwpError INTERNAL naming the column of a corrupt row (a closed row without its closer)
 */
export function toChannel(row: unknown): ChannelRecord {
  const r = decodeRow(channelRow, "channels", row);
  const base: ChannelBase = {
    channelId: BigInt(r.channel_id),
    partner: r.partner,
    token: r.token,
    settleTimeoutSeconds: r.settle_timeout_seconds,
    ourDeposit: BigInt(r.our_deposit),
    partnerDeposit: BigInt(r.partner_deposit),
    ourWithdraw: BigInt(r.our_withdraw),
    partnerWithdraw: BigInt(r.partner_withdraw),
    openedAtMs: r.opened_at,
    updatedAtMs: r.updated_at,
  };
  if (r.state === "opened") return { ...base, state: "opened" };
  if (r.state === "settled")
    return {
      ...base,
      state: "settled",
      closingParticipant: r.closing_participant,
      closedAtSeconds: r.closed_at_seconds,
    };
  if (r.closing_participant === null)
    return corruptRow("channels", "closing_participant", "closed without its closer");
  return {
    ...base,
    state: "closed",
    closingParticipant: r.closing_participant,
    closedAtSeconds: r.closed_at_seconds ?? 0,
  };
}

const withdrawRow = z.object({
  channel_id: uintText,
  participant: addressText,
  total_withdraw: uintText,
  expiry_timestamp: uintText,
  participant_signature: signatureText,
  partner_signature: signatureText.nullable(),
  created_at: int,
});

/** A `withdraws` row decoded. @throws QrwpError INTERNAL naming the column of a corrupt row */
export function toWithdraw(row: unknown): PendingWithdraw {
  const r = decodeRow(withdrawRow, "withdraws", row);
  return {
    channelId: BigInt(r.channel_id),
    participant: r.participant,
    totalWithdraw: BigInt(r.total_withdraw),
    expiryTimestamp: BigInt(r.expiry_timestamp),
    participantSignature: r.participant_signature,
    partnerSignature: r.partner_signature,
    createdAtMs: r.created_at,
  };
}

const UINT_TEXT = /^[0-9]{1,78}$/;
const ADDRESS_TEXT = /^0x[0-9a-fA-F]{40}$/;
const BYTES32_TEXT = /^0x[0-9a-fA-F]{64}$/;
const SIGNATURE_TEXT = /^0x[0-9a-fA-F]{130}$/;
const isProofStatus = (v: unknown): v is ProofStatus => v === "pending" || v === "acked" || v === "refused";

/** Column readers of the `balance_proofs` codec: each checks one column's type and format, or names it. */
const proofColumn = {
  text(r: Record<string, unknown>, column: string, format: RegExp): string {
    const v = r[column];
    if (typeof v !== "string" || !format.test(v))
      corruptRow("balance_proofs", column, `expected ${format.source}`);
    return v;
  },
  uint(r: Record<string, unknown>, column: string): bigint {
    return BigInt(proofColumn.text(r, column, UINT_TEXT));
  },
  int(r: Record<string, unknown>, column: string, min: number): number {
    const v = r[column];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min)
      corruptRow("balance_proofs", column, `expected an integer >= ${min}`);
    return v;
  },
  blob(r: Record<string, unknown>, column: string, nullable: boolean): Uint8Array | null {
    const v = r[column];
    if (v instanceof Uint8Array) return new Uint8Array(v);
    if (v === null && nullable) return null;
    return corruptRow("balance_proofs", column, nullable ? "expected a blob or null" : "expected a blob");
  },
};

/**
 * A `balance_proofs` row decoded into the signed proof, its pending locks (in order) and delivery status.
 * Read on every payment (the proof the next one builds on), so this codec is written by hand (type and
 * format checks, no zod object): a zod object measured 2.4x the cost of the whole read (bench/store-reads.ts,
 * docs/DECISIONS.md). The signatures are verified where a proof is accepted, not here.
 * @throws QrwpError INTERNAL naming the column of a corrupt row (`locks` when the packed locks do not unpack)
 */
export function toStoredProof(row: unknown): StoredProof {
  if (typeof row !== "object" || row === null) return corruptRow("balance_proofs", "row", "not a row");
  const r = row as Record<string, unknown>;
  const nonce = proofColumn.int(r, "nonce", 0);
  const signed: SignedBalanceProof = {
    proof: {
      chainId: proofColumn.uint(r, "chain_id"),
      hub: proofColumn.text(r, "hub", ADDRESS_TEXT),
      channelId: proofColumn.uint(r, "channel_id"),
      nonce: BigInt(nonce),
      transferredAmount: proofColumn.uint(r, "transferred_amount"),
      lockedAmount: proofColumn.uint(r, "locked_amount"),
      locksRoot: proofColumn.text(r, "locks_root", BYTES32_TEXT),
    },
    signature: proofColumn.text(r, "signature", SIGNATURE_TEXT),
    pqSignature: proofColumn.blob(r, "pq_signature", false) ?? new Uint8Array(0),
  };
  proofColumn.text(r, "signer", ADDRESS_TEXT);
  const status = r.status;
  if (!isProofStatus(status))
    return corruptRow("balance_proofs", "status", "expected pending, acked or refused");
  const packed = proofColumn.blob(r, "locks", true);
  let locks: Lock[] = [];
  if (packed) {
    try {
      locks = unpackLocks(packed);
    } catch {
      corruptRow("balance_proofs", "locks", `${packed.length} bytes are not packed locks`);
    }
  }
  return {
    signed,
    locks,
    status,
    message: proofColumn.blob(r, "message", true),
    createdAtMs: proofColumn.int(r, "created_at", Number.MIN_SAFE_INTEGER),
  };
}

const peerRow = z.object({
  address: z.string(),
  peer_id: z.string().min(1),
  multiaddrs: column.json(z.array(z.string())),
});

/** A `peers` row decoded. @throws QrwpError INTERNAL naming the column of a corrupt row */
export function toPeer(row: unknown): PeerRecord {
  const r = decodeRow(peerRow, "peers", row);
  return { address: r.address, peerId: r.peer_id, multiaddrs: r.multiaddrs };
}

/** `SELECT peer_id` rows (partner peer ids). */
export const peerIdRow = z.object({ peer_id: z.string().min(1) });
/** `SELECT value FROM meta`. */
export const metaValueRow = z.object({ value: z.string() });

// ---- payments ----

const paymentStatus = z.enum(["pending", "completed", "failed"]);
const paymentDirection = z.enum(["outgoing", "incoming"]);

const paymentRow = z.object({
  payment_id: z.string(),
  direction: paymentDirection,
  channel_id: uintText,
  partner: addressText,
  token: addressText,
  amount: uintText,
  nonce: uint,
  status: paymentStatus,
  error_code: z.string().nullable(),
  error_message: z.string().nullable(),
  created_at: int,
  completed_at: int.nullable(),
});

/** A `payments` row decoded. @throws QrwpError INTERNAL naming the column of a corrupt row */
export function toPayment(row: unknown): PaymentRecord {
  const r = decodeRow(paymentRow, "payments", row);
  return {
    paymentId: r.payment_id,
    direction: r.direction,
    channelId: BigInt(r.channel_id),
    partner: r.partner,
    token: r.token,
    amount: BigInt(r.amount),
    nonce: BigInt(r.nonce),
    status: r.status,
    errorCode: r.error_code,
    errorMessage: r.error_message,
    createdAtMs: r.created_at,
    completedAtMs: r.completed_at,
  };
}

/** `paymentTotals` rows: a completed payment's direction and amount. */
export const paymentAmountRow = z.object({ direction: paymentDirection, amount: uintText });
/** The `rowid AS seq` column `listPayments` pages by. */
export const seqRow = z.object({ seq: uint, created_at: int });

const attemptSchema = z.object({
  route: z.array(
    z.object({
      address: z.string(),
      channelId: z.string(),
      amount: z.string(),
      expiration: z.string(),
      fee: z.string(),
    }),
  ),
  fee: z.string(),
  status: z.enum(["pending", "succeeded", "failed"]),
  errorCode: z.string().optional(),
  errorMessage: z.string().optional(),
  failedAt: z.string().optional(),
});

const mediatedRow = z.object({
  payment_id: z.string(),
  target: addressText,
  token: addressText,
  amount: uintText,
  max_fee: uintText.nullable(),
  secret_hash: bytes32Text,
  secret: bytes32Text.nullable(),
  status: paymentStatus,
  fee: uintText,
  attempts: column.json(z.array(attemptSchema)),
  error_code: z.string().nullable(),
  error_message: z.string().nullable(),
  created_at: int,
  completed_at: int.nullable(),
  deadline_at: int,
});

/** A `mediated_payments` row decoded. @throws QrwpError INTERNAL naming the column of a corrupt row */
export function toMediated(row: unknown): MediatedPaymentRecord {
  const r = decodeRow(mediatedRow, "mediated_payments", row);
  return {
    paymentId: r.payment_id,
    target: r.target,
    token: r.token,
    amount: BigInt(r.amount),
    maxFee: r.max_fee === null ? null : BigInt(r.max_fee),
    secretHash: r.secret_hash,
    secret: r.secret,
    status: r.status,
    fee: BigInt(r.fee),
    attempts: r.attempts,
    errorCode: r.error_code,
    errorMessage: r.error_message,
    createdAtMs: r.created_at,
    completedAtMs: r.completed_at,
    deadlineMs: r.deadline_at,
  };
}

// ---- transfers, secrets, invoices ----

/** JSON with bigints as `{"$n":"123"}` so they round-trip exactly. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? { $n: v.toString() } : v));
}

/** Parses {@link toJson}'s text; `undefined` for text that is not JSON (the codec then names the column). */
function fromJson(text: string): unknown {
  try {
    return JSON.parse(text, (_k, v: unknown) => {
      if (v === null || typeof v !== "object" || !("$n" in v) || Object.keys(v).length !== 1) return v;
      const n: unknown = v.$n;
      if (typeof n !== "string" || !/^-?[0-9]+$/.test(n)) throw new SyntaxError("bad $n");
      return BigInt(n);
    });
  } catch {
    return undefined;
  }
}

const transferRow = z.object({
  id: z.string(),
  role: z.enum(["initiator", "mediator", "target"]),
  secret_hash: bytes32Text,
  payment_id: z.string(),
  state: z.string().transform((text, ctx): unknown => {
    const value = fromJson(text);
    if (value !== undefined) return value;
    ctx.addIssue({ code: "custom", message: "not JSON" });
    return z.NEVER;
  }),
  done: z.union([z.literal(0), z.literal(1)]),
});

/**
 * A `transfers` row decoded; `state` is the role machine's JSON (protocol/transfers.ts), checked by the
 * payments layer that owns its shape. @throws QrwpError INTERNAL naming the column of a corrupt row
 */
export function toTransfer(row: unknown): TransferRecord {
  const r = decodeRow(transferRow, "transfers", row);
  return {
    id: r.id,
    role: r.role,
    secretHash: r.secret_hash,
    paymentId: r.payment_id,
    state: r.state,
    done: r.done === 1,
  };
}

/** `SELECT secret FROM secrets`. */
export const secretRow = z.object({ secret: bytes32Text });

const invoiceRow = z.object({
  payment_hash: bytes32Text,
  secret: bytes32Text,
  token: addressText,
  amount: uintText,
  description: z.string(),
  status: z.enum(["open", "paid", "expired"]),
  paid_amount: uintText,
  created_at: int,
  expires_at: int,
  paid_at: int.nullable(),
});

/** An `invoices` row decoded. @throws QrwpError INTERNAL naming the column of a corrupt row */
export function toInvoice(row: unknown): InvoiceRecord {
  const r = decodeRow(invoiceRow, "invoices", row);
  return {
    paymentHash: r.payment_hash,
    secret: r.secret,
    token: r.token,
    amount: BigInt(r.amount),
    description: r.description,
    status: r.status,
    paidAmount: BigInt(r.paid_amount),
    createdAtMs: r.created_at,
    expiresAtMs: r.expires_at,
    paidAtMs: r.paid_at,
  };
}
