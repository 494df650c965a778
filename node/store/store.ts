/**
 * The node's durable state in one SQLite file (better-sqlite3, WAL, `synchronous=FULL`): channels, every
 * balance proof we signed or accepted, payments and known peers.
 *
 * Durability rule (LDK): every write here is committed (fsync'd) when the call returns, and callers write
 * before they send the message that depends on it. Amounts are decimal strings of token base units; nonces
 * are SQLite integers (< 2^53 in practice; a channel would need 9e15 payments to overflow).
 */
import Database from "better-sqlite3";
import { z } from "zod";
import {
  QrwpError,
  packLocks,
  unpackLocks,
  type BalanceProof,
  type ChannelLifecycle,
  type ChannelLifecycleState,
  type Lock,
  type SignedBalanceProof,
} from "../../protocol/index.js";

export type ChannelState = ChannelLifecycleState;

/** What a channel record holds whatever its state. Deposits are on-chain total deposits (base units). */
export interface ChannelBase {
  channelId: bigint;
  partner: string;
  token: string;
  settleTimeoutSeconds: number;
  ourDeposit: bigint;
  partnerDeposit: bigint;
  /** Total withdraws the hub stored for us / the partner (`setTotalWithdraw` mined), base units. */
  ourWithdraw: bigint;
  partnerWithdraw: bigint;
  openedAtMs: number;
  updatedAtMs: number;
}

/**
 * A withdraw co-signed or being co-signed (Raiden's WithdrawRequest/Confirmation) and not yet mined: both
 * sides count `totalWithdraw` as withdrawn until it is mined (then the channel's total takes over) or the
 * chain's time passes `expiryTimestamp`. One per channel and participant.
 */
export interface PendingWithdraw {
  channelId: bigint;
  participant: string;
  /** The participant's new total withdraw, base units. */
  totalWithdraw: bigint;
  /** Unix seconds of block.timestamp. */
  expiryTimestamp: bigint;
  participantSignature: string;
  /** The partner's signature; null until its confirmation arrived. */
  partnerSignature: string | null;
  createdAtMs: number;
}

/**
 * A channel as the node sees it: its fixed data and deposits, and its lifecycle (protocol/channel-lifecycle.ts:
 * an open channel has no close data, a closed one has its closer and close time).
 */
export type ChannelRecord = ChannelBase & ChannelLifecycle;

export type PaymentDirection = "outgoing" | "incoming";
export type PaymentStatus = "pending" | "completed" | "failed";

/** One direct payment, sent or received; `nonce` is the balance proof that carried it. */
export interface PaymentRecord {
  paymentId: string;
  direction: PaymentDirection;
  channelId: bigint;
  partner: string;
  token: string;
  amount: bigint;
  nonce: bigint;
  status: PaymentStatus;
  errorCode: string | null;
  errorMessage: string | null;
  createdAtMs: number;
  completedAtMs: number | null;
}

/**
 * Where a page of {@link NodeStore.listPayments} ends: payments sort newest first by `(createdAtMs, source,
 * seq)`, with `source` 0 for the `payments` table (direct payments and routed payments received) and 1 for
 * `mediated_payments` (routed payments sent), and `seq` the row's SQLite rowid (unique within its source).
 */
export interface PaymentCursor {
  createdAtMs: number;
  source: 0 | 1;
  seq: number;
}

/** One row of {@link NodeStore.listPayments}: a channel payment (direct, or routed received) or a routed one sent. */
export type ListedPayment =
  | { source: 0; payment: PaymentRecord; cursor: PaymentCursor }
  | { source: 1; payment: MediatedPaymentRecord; cursor: PaymentCursor };

/** A known peer: its Ethereum address, libp2p peer id and dialable addresses. */
export interface PeerRecord {
  address: string;
  peerId: string;
  multiaddrs: string[];
}

const SCHEMA_VERSION = 3;

/** Delivery status of a balance proof: ours are `pending` until the partner's Processed (or refusal). */
export type ProofStatus = "pending" | "acked" | "refused";

/** A stored balance proof with its pending locks and, for ours, the message that carried it. */
export interface StoredProof {
  signed: SignedBalanceProof;
  /** The pending locks the proof commits to (in order). */
  locks: Lock[];
  status: ProofStatus;
  /** The encoded message body (CBOR envelope body) that carried the proof, for re-delivery. */
  message: Uint8Array | null;
  /** When the proof was stored (unix ms). */
  createdAtMs: number;
}

/** Role state of one mediated transfer (protocol/transfers.ts), stored as JSON with bigints as strings. */
export interface TransferRecord {
  id: string;
  role: "initiator" | "mediator" | "target";
  secretHash: string;
  paymentId: string;
  state: unknown;
  done: boolean;
}

/** An outgoing multi-hop payment as the payer sees it (all attempts). */
export interface MediatedPaymentRecord {
  paymentId: string;
  target: string;
  token: string;
  amount: bigint;
  maxFee: bigint | null;
  secretHash: string;
  /** Known for spontaneous payments from the start; learnt at the end for invoice payments. */
  secret: string | null;
  status: "pending" | "completed" | "failed";
  /** Fee of the successful (or last) attempt, token base units. */
  fee: bigint;
  attempts: PaymentAttempt[];
  errorCode: string | null;
  errorMessage: string | null;
  createdAtMs: number;
  completedAtMs: number | null;
  deadlineMs: number;
}

/** One route tried for a payment. */
export interface PaymentAttempt {
  route: { address: string; channelId: string; amount: string; expiration: string; fee: string }[];
  fee: string;
  status: "pending" | "succeeded" | "failed";
  errorCode?: string;
  errorMessage?: string;
  failedAt?: string;
}

/** An invoice: a payment hash whose secret we chose, and what it must pay. */
export interface InvoiceRecord {
  paymentHash: string;
  secret: string;
  token: string;
  amount: bigint;
  description: string;
  status: "open" | "paid" | "expired";
  paidAmount: bigint;
  createdAtMs: number;
  expiresAtMs: number;
  paidAtMs: number | null;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS peers (
  address TEXT PRIMARY KEY,
  peer_id TEXT NOT NULL,
  multiaddrs TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS channels (
  channel_id TEXT PRIMARY KEY,
  partner TEXT NOT NULL,
  token TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('opened','closed','settled')),
  settle_timeout_seconds INTEGER NOT NULL,
  our_deposit TEXT NOT NULL,
  partner_deposit TEXT NOT NULL,
  closed_at_seconds INTEGER,
  closing_participant TEXT,
  opened_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  our_withdraw TEXT NOT NULL DEFAULT '0',
  partner_withdraw TEXT NOT NULL DEFAULT '0'
);
CREATE TABLE IF NOT EXISTS withdraws (
  channel_id TEXT NOT NULL,
  participant TEXT NOT NULL,
  total_withdraw TEXT NOT NULL,
  expiry_timestamp TEXT NOT NULL,
  participant_signature TEXT NOT NULL,
  partner_signature TEXT,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (channel_id, participant)
);
CREATE TABLE IF NOT EXISTS balance_proofs (
  channel_id TEXT NOT NULL,
  signer TEXT NOT NULL,
  nonce INTEGER NOT NULL,
  chain_id TEXT NOT NULL,
  hub TEXT NOT NULL,
  transferred_amount TEXT NOT NULL,
  locked_amount TEXT NOT NULL,
  locks_root TEXT NOT NULL,
  signature TEXT NOT NULL,
  pq_signature BLOB NOT NULL,
  created_at INTEGER NOT NULL,
  locks BLOB,
  status TEXT NOT NULL DEFAULT 'acked' CHECK (status IN ('pending','acked','refused')),
  message BLOB,
  PRIMARY KEY (channel_id, signer, nonce)
);
CREATE TABLE IF NOT EXISTS payments (
  payment_id TEXT NOT NULL,
  direction TEXT NOT NULL CHECK (direction IN ('outgoing','incoming')),
  channel_id TEXT NOT NULL,
  partner TEXT NOT NULL,
  token TEXT NOT NULL,
  amount TEXT NOT NULL,
  nonce INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending','completed','failed')),
  error_code TEXT,
  error_message TEXT,
  created_at INTEGER NOT NULL,
  completed_at INTEGER,
  PRIMARY KEY (direction, channel_id, payment_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS payments_outgoing_id ON payments(payment_id) WHERE direction = 'outgoing';
CREATE INDEX IF NOT EXISTS payments_status ON payments(status, direction);
CREATE INDEX IF NOT EXISTS payments_created ON payments(created_at);
CREATE TABLE IF NOT EXISTS transfers (
  id TEXT PRIMARY KEY,
  role TEXT NOT NULL CHECK (role IN ('initiator','mediator','target')),
  secret_hash TEXT NOT NULL,
  payment_id TEXT NOT NULL,
  state TEXT NOT NULL,
  done INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_by_hash ON transfers(secret_hash);
CREATE INDEX IF NOT EXISTS transfers_open ON transfers(done);
CREATE TABLE IF NOT EXISTS secrets (
  secret_hash TEXT PRIMARY KEY,
  secret TEXT NOT NULL,
  learned_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mediated_payments (
  payment_id TEXT PRIMARY KEY,
  target TEXT NOT NULL,
  token TEXT NOT NULL,
  amount TEXT NOT NULL,
  max_fee TEXT,
  secret_hash TEXT NOT NULL,
  secret TEXT,
  status TEXT NOT NULL CHECK (status IN ('pending','completed','failed')),
  fee TEXT NOT NULL,
  attempts TEXT NOT NULL,
  error_code TEXT,
  error_message TEXT,
  created_at INTEGER NOT NULL,
  completed_at INTEGER,
  deadline_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS mediated_payments_created ON mediated_payments(created_at);
CREATE TABLE IF NOT EXISTS invoices (
  payment_hash TEXT PRIMARY KEY,
  secret TEXT NOT NULL,
  token TEXT NOT NULL,
  amount TEXT NOT NULL,
  description TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('open','paid','expired')),
  paid_amount TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  paid_at INTEGER
);
CREATE INDEX IF NOT EXISTS invoices_unpaid_expiry ON invoices(expires_at) WHERE status <> 'paid';
`;

interface ProofRow {
  channel_id: string;
  signer: string;
  nonce: number;
  chain_id: string;
  hub: string;
  transferred_amount: string;
  locked_amount: string;
  locks_root: string;
  signature: string;
  pq_signature: Buffer;
  locks: Buffer | null;
  status: ProofStatus;
  message: Buffer | null;
  created_at: number;
}
interface TransferRow {
  id: string;
  role: TransferRecord["role"];
  secret_hash: string;
  payment_id: string;
  state: string;
  done: number;
}
interface MediatedRow {
  payment_id: string;
  target: string;
  token: string;
  amount: string;
  max_fee: string | null;
  secret_hash: string;
  secret: string | null;
  status: MediatedPaymentRecord["status"];
  fee: string;
  attempts: string;
  error_code: string | null;
  error_message: string | null;
  created_at: number;
  completed_at: number | null;
  deadline_at: number;
}
interface InvoiceRow {
  payment_hash: string;
  secret: string;
  token: string;
  amount: string;
  description: string;
  status: InvoiceRecord["status"];
  paid_amount: string;
  created_at: number;
  expires_at: number;
  paid_at: number | null;
}
interface PaymentRow {
  payment_id: string;
  direction: PaymentDirection;
  channel_id: string;
  partner: string;
  token: string;
  amount: string;
  nonce: number;
  status: PaymentStatus;
  error_code: string | null;
  error_message: string | null;
  created_at: number;
  completed_at: number | null;
}

const uintText = z.string().regex(/^[0-9]{1,78}$/);
const addressText = z.string().regex(/^0x[0-9a-fA-F]{40}$/);
const channelRowSchema = z.object({
  channel_id: uintText,
  partner: addressText,
  token: addressText,
  state: z.enum(["opened", "closed", "settled"]),
  settle_timeout_seconds: z.number().int().nonnegative(),
  our_deposit: uintText,
  partner_deposit: uintText,
  closed_at_seconds: z.number().int().nonnegative().nullable(),
  closing_participant: addressText.nullable(),
  opened_at: z.number().int(),
  updated_at: z.number().int(),
  our_withdraw: uintText,
  partner_withdraw: uintText,
});
const withdrawRowSchema = z.object({
  channel_id: uintText,
  participant: addressText,
  total_withdraw: uintText,
  expiry_timestamp: uintText,
  participant_signature: z.string().regex(/^0x[0-9a-fA-F]{130}$/),
  partner_signature: z
    .string()
    .regex(/^0x[0-9a-fA-F]{130}$/)
    .nullable(),
  created_at: z.number().int(),
});

/** A `withdraws` row decoded. @throws QrwpError INTERNAL naming the column of a corrupt row */
function toWithdraw(row: unknown): PendingWithdraw {
  const parsed = withdrawRowSchema.safeParse(row);
  if (!parsed.success) {
    throw new QrwpError(
      "INTERNAL",
      `corrupt withdraws row: ${parsed.error.issues[0]?.message ?? "invalid"}`,
      {
        field: String(parsed.error.issues[0]?.path[0] ?? "row"),
      },
    );
  }
  const r = parsed.data;
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

/**
 * A `channels` row decoded (never cast): columns checked, then the lifecycle union built from the state
 * and its close columns. A closed row without a close time (written before close times were kept) decodes
 * with 0; the channel monitor replaces it with the chain's at its next pass.
 * @throws QrwpError INTERNAL naming the column of a corrupt row (a closed row without its closer)
 */
function toChannel(row: unknown): ChannelRecord {
  const parsed = channelRowSchema.safeParse(row);
  if (!parsed.success) {
    throw new QrwpError("INTERNAL", `corrupt channels row: ${parsed.error.issues[0]?.message ?? "invalid"}`, {
      field: String(parsed.error.issues[0]?.path[0] ?? "row"),
    });
  }
  const r = parsed.data;
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
    throw new QrwpError("INTERNAL", "corrupt channels row: closed without its closer", {
      field: "closing_participant",
    });
  return {
    ...base,
    state: "closed",
    closingParticipant: r.closing_participant,
    closedAtSeconds: r.closed_at_seconds ?? 0,
  };
}

/** The close columns of a record (null while open). */
function closeColumns(c: ChannelRecord): [number | null, string | null] {
  return c.state === "opened" ? [null, null] : [c.closedAtSeconds, c.closingParticipant];
}
const toProof = (r: ProofRow): SignedBalanceProof => ({
  proof: {
    chainId: BigInt(r.chain_id),
    hub: r.hub,
    channelId: BigInt(r.channel_id),
    nonce: BigInt(r.nonce),
    transferredAmount: BigInt(r.transferred_amount),
    lockedAmount: BigInt(r.locked_amount),
    locksRoot: r.locks_root,
  },
  signature: r.signature,
  pqSignature: new Uint8Array(r.pq_signature),
});
const toStoredProof = (r: ProofRow): StoredProof => ({
  signed: toProof(r),
  locks: r.locks ? unpackLocks(new Uint8Array(r.locks)) : [],
  status: r.status,
  message: r.message ? new Uint8Array(r.message) : null,
  createdAtMs: r.created_at,
});

/** JSON with bigints as `{"$n":"123"}` so they round-trip exactly. */
function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? { $n: v.toString() } : v));
}
function fromJson(text: string): unknown {
  return JSON.parse(text, (_k, v: unknown) =>
    v !== null && typeof v === "object" && "$n" in v && Object.keys(v).length === 1
      ? BigInt((v as { $n: string }).$n)
      : v,
  );
}

const toTransfer = (r: TransferRow): TransferRecord => ({
  id: r.id,
  role: r.role,
  secretHash: r.secret_hash,
  paymentId: r.payment_id,
  state: fromJson(r.state),
  done: r.done === 1,
});

const mediatedParams = (p: MediatedPaymentRecord) =>
  [
    p.paymentId,
    p.target,
    p.token,
    p.amount.toString(),
    p.maxFee === null ? null : p.maxFee.toString(),
    p.secretHash.toLowerCase(),
    p.secret,
    p.status,
    p.fee.toString(),
    JSON.stringify(p.attempts),
    p.errorCode,
    p.errorMessage,
    p.createdAtMs,
    p.completedAtMs,
    p.deadlineMs,
  ] as const;

const toMediated = (r: MediatedRow): MediatedPaymentRecord => ({
  paymentId: r.payment_id,
  target: r.target,
  token: r.token,
  amount: BigInt(r.amount),
  maxFee: r.max_fee === null ? null : BigInt(r.max_fee),
  secretHash: r.secret_hash,
  secret: r.secret,
  status: r.status,
  fee: BigInt(r.fee),
  attempts: JSON.parse(r.attempts) as PaymentAttempt[],
  errorCode: r.error_code,
  errorMessage: r.error_message,
  createdAtMs: r.created_at,
  completedAtMs: r.completed_at,
  deadlineMs: r.deadline_at,
});

const toPayment = (r: PaymentRow): PaymentRecord => ({
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
});

/** SQLite-backed store. Every method is synchronous and durable on return. */
export class NodeStore {
  readonly #db: Database.Database;
  /** Prepared statements by SQL text: each is compiled once, on first use. */
  readonly #statements = new Map<string, Database.Statement>();

  /** Opens (creating if needed) the database at `path`; `":memory:"` is accepted for throwaway use. */
  constructor(path: string) {
    this.#db = new Database(path);
    this.#db.pragma("journal_mode = WAL");
    this.#db.pragma("synchronous = FULL");
    this.#db.pragma("foreign_keys = ON");
    const hasProofs = this.#sql(
      "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'balance_proofs'",
    ).get();
    if (hasProofs) this.#migrateV1();
    this.#migrateV2();
    this.#db.exec(SCHEMA);
    const version = this.getMeta("schema_version");
    if (version === null || Number(version) === 1 || Number(version) === 2)
      this.setMeta("schema_version", String(SCHEMA_VERSION));
    else if (Number(version) !== SCHEMA_VERSION) {
      throw new Error(`store schema version ${version} is not supported (expected ${SCHEMA_VERSION})`);
    }
  }

  /**
   * v1 -> v2: balance proofs gain `locks`, `status` and `message`. Our v1 proofs (signer is not the channel's
   * partner) take their status from the direct payment they carried; re-delivery rebuilds the message.
   */
  #migrateV1(): void {
    const cols = this.#sql("PRAGMA table_info(balance_proofs)").all() as { name: string }[];
    if (cols.some((c) => c.name === "status")) return;
    this.#db.transaction(() => {
      this.#db.exec(`ALTER TABLE balance_proofs ADD COLUMN locks BLOB;
        ALTER TABLE balance_proofs ADD COLUMN status TEXT NOT NULL DEFAULT 'acked' CHECK (status IN ('pending','acked','refused'));
        ALTER TABLE balance_proofs ADD COLUMN message BLOB;
        UPDATE balance_proofs SET status = CASE (
            SELECT p.status FROM payments p WHERE p.direction = 'outgoing' AND p.channel_id = balance_proofs.channel_id
              AND p.nonce = balance_proofs.nonce)
          WHEN 'pending' THEN 'pending' WHEN 'failed' THEN 'refused' ELSE 'acked' END
        WHERE signer <> (SELECT c.partner FROM channels c WHERE c.channel_id = balance_proofs.channel_id);`);
    })();
  }

  /** v2 -> v3: channels gain the totals withdrawn on chain (0 for channels from before withdraws). */
  #migrateV2(): void {
    const cols = this.#sql("PRAGMA table_info(channels)").all() as { name: string }[];
    if (cols.length === 0 || cols.some((c) => c.name === "our_withdraw")) return;
    this.#db.exec(`ALTER TABLE channels ADD COLUMN our_withdraw TEXT NOT NULL DEFAULT '0';
      ALTER TABLE channels ADD COLUMN partner_withdraw TEXT NOT NULL DEFAULT '0';`);
  }

  /** Records (or replaces) the pending withdraw of `w.participant` on `w.channelId`. */
  putWithdraw(w: PendingWithdraw): void {
    this.#sql(
      `INSERT INTO withdraws(channel_id, participant, total_withdraw, expiry_timestamp, participant_signature,
           partner_signature, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(channel_id, participant) DO UPDATE SET total_withdraw = excluded.total_withdraw,
           expiry_timestamp = excluded.expiry_timestamp, participant_signature = excluded.participant_signature,
           partner_signature = excluded.partner_signature, created_at = excluded.created_at`,
    ).run(
      w.channelId.toString(),
      w.participant,
      w.totalWithdraw.toString(),
      w.expiryTimestamp.toString(),
      w.participantSignature,
      w.partnerSignature,
      w.createdAtMs,
    );
  }

  /** The pending withdraw of `participant` on a channel, or null. */
  getWithdraw(channelId: bigint, participant: string): PendingWithdraw | null {
    const row: unknown = this.#sql(
      "SELECT * FROM withdraws WHERE channel_id = ? AND lower(participant) = lower(?)",
    ).get(channelId.toString(), participant);
    return row === undefined ? null : toWithdraw(row);
  }

  /** Forgets the pending withdraw of `participant` on a channel (mined, expired or refused). */
  deleteWithdraw(channelId: bigint, participant: string): void {
    this.#sql("DELETE FROM withdraws WHERE channel_id = ? AND lower(participant) = lower(?)").run(
      channelId.toString(),
      participant,
    );
  }

  /** Closes the database (checkpointing the WAL). */
  close(): void {
    this.#db.close();
  }

  /** The prepared statement for `sql`, compiled on first use and cached (SQLite parses each text once). */
  #sql(sql: string): Database.Statement {
    let stmt = this.#statements.get(sql);
    if (!stmt) {
      stmt = this.#db.prepare(sql);
      this.#statements.set(sql, stmt);
    }
    return stmt;
  }

  /** Runs `fn` in one transaction: all of its writes land together or none do. */
  transaction<T>(fn: () => T): T {
    return this.#db.transaction(fn)();
  }

  getMeta(key: string): string | null {
    const row = this.#sql("SELECT value FROM meta WHERE key = ?").get(key) as { value: string } | undefined;
    return row?.value ?? null;
  }

  setMeta(key: string, value: string): void {
    this.#sql(
      "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    ).run(key, value);
  }

  deleteMeta(key: string): void {
    this.#sql("DELETE FROM meta WHERE key = ?").run(key);
  }

  upsertPeer(peer: PeerRecord): void {
    this.#sql(
      `INSERT INTO peers(address, peer_id, multiaddrs, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT(address) DO UPDATE SET peer_id = excluded.peer_id, multiaddrs = excluded.multiaddrs, updated_at = excluded.updated_at`,
    ).run(peer.address, peer.peerId, JSON.stringify(peer.multiaddrs), Date.now());
  }

  getPeer(address: string): PeerRecord | null {
    const row = this.#sql("SELECT * FROM peers WHERE address = ?").get(address) as
      { address: string; peer_id: string; multiaddrs: string } | undefined;
    return row
      ? { address: row.address, peerId: row.peer_id, multiaddrs: JSON.parse(row.multiaddrs) as string[] }
      : null;
  }

  /** libp2p peer ids of the partners of channels not settled yet (the peers the node keeps, PROTOCOL §3.1). */
  partnerPeerIds(): string[] {
    const rows = this.#sql(
      `SELECT DISTINCT p.peer_id FROM peers p JOIN channels c ON lower(c.partner) = lower(p.address)
        WHERE c.state != 'settled'`,
    ).all() as Array<{ peer_id: string }>;
    return rows.map((r) => r.peer_id);
  }

  /** Inserts a new channel; throws if the channel id exists. */
  insertChannel(c: ChannelRecord): void {
    this.#sql(
      `INSERT INTO channels(channel_id, partner, token, state, settle_timeout_seconds, our_deposit, partner_deposit,
           closed_at_seconds, closing_participant, opened_at, updated_at, our_withdraw, partner_withdraw)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      c.channelId.toString(),
      c.partner,
      c.token,
      c.state,
      c.settleTimeoutSeconds,
      c.ourDeposit.toString(),
      c.partnerDeposit.toString(),
      ...closeColumns(c),
      c.openedAtMs,
      c.updatedAtMs,
      c.ourWithdraw.toString(),
      c.partnerWithdraw.toString(),
    );
  }

  /** Updates the mutable fields of a channel (state, deposits, close data). */
  updateChannel(c: ChannelRecord): void {
    this.#sql(
      `UPDATE channels SET state = ?, our_deposit = ?, partner_deposit = ?, closed_at_seconds = ?,
           closing_participant = ?, updated_at = ?, our_withdraw = ?, partner_withdraw = ? WHERE channel_id = ?`,
    ).run(
      c.state,
      c.ourDeposit.toString(),
      c.partnerDeposit.toString(),
      ...closeColumns(c),
      Date.now(),
      c.ourWithdraw.toString(),
      c.partnerWithdraw.toString(),
      c.channelId.toString(),
    );
  }

  getChannel(channelId: bigint): ChannelRecord | null {
    const row: unknown = this.#sql("SELECT * FROM channels WHERE channel_id = ?").get(channelId.toString());
    return row === undefined ? null : toChannel(row);
  }

  /** All channels, by channel id. */
  listChannels(): ChannelRecord[] {
    return (this.#sql("SELECT * FROM channels ORDER BY CAST(channel_id AS INTEGER)").all() as unknown[]).map(
      toChannel,
    );
  }

  /**
   * Stores a signed balance proof (ours or the partner's) with its pending locks. Ours start `pending` with
   * the message that carries it; a partner's proof is stored `acked`. The identical proof twice is a no-op.
   */
  insertBalanceProof(
    signer: string,
    signed: SignedBalanceProof,
    extra: {
      locks?: readonly Lock[];
      status?: ProofStatus;
      message?: Uint8Array | null;
      /** Unix ms; default now. */
      createdAtMs?: number;
    } = {},
  ): void {
    const p: BalanceProof = signed.proof;
    const locks = extra.locks && extra.locks.length > 0 ? Buffer.from(packLocks(extra.locks)) : null;
    this.#sql(
      `INSERT OR IGNORE INTO balance_proofs(channel_id, signer, nonce, chain_id, hub, transferred_amount, locked_amount,
           locks_root, signature, pq_signature, created_at, locks, status, message)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      p.channelId.toString(),
      signer,
      Number(p.nonce),
      p.chainId.toString(),
      p.hub,
      p.transferredAmount.toString(),
      p.lockedAmount.toString(),
      p.locksRoot,
      signed.signature,
      Buffer.from(signed.pqSignature),
      extra.createdAtMs ?? Date.now(),
      locks,
      extra.status ?? "acked",
      extra.message ? Buffer.from(extra.message) : null,
    );
  }

  /** Sets the delivery status of our proof with this nonce. */
  setProofStatus(channelId: bigint, signer: string, nonce: bigint, status: ProofStatus): void {
    this.#sql("UPDATE balance_proofs SET status = ? WHERE channel_id = ? AND signer = ? AND nonce = ?").run(
      status,
      channelId.toString(),
      signer,
      Number(nonce),
    );
  }

  /** The highest-nonce balance proof signed by `signer` on the channel, or null if none. */
  latestBalanceProof(channelId: bigint, signer: string): SignedBalanceProof | null {
    return this.latestStoredProof(channelId, signer)?.signed ?? null;
  }

  /** The highest-nonce stored proof of `signer` (optionally only with `status`), with locks and message. */
  latestStoredProof(channelId: bigint, signer: string, status?: ProofStatus): StoredProof | null {
    const row = (
      status
        ? this.#sql(
            "SELECT * FROM balance_proofs WHERE channel_id = ? AND signer = ? AND status = ? ORDER BY nonce DESC LIMIT 1",
          ).get(channelId.toString(), signer, status)
        : this.#sql(
            "SELECT * FROM balance_proofs WHERE channel_id = ? AND signer = ? ORDER BY nonce DESC LIMIT 1",
          ).get(channelId.toString(), signer)
    ) as ProofRow | undefined;
    return row ? toStoredProof(row) : null;
  }

  /** Our proofs still waiting for the partner's Processed, in nonce order. */
  pendingProofs(channelId: bigint, signer: string): StoredProof[] {
    return (
      this.#sql(
        "SELECT * FROM balance_proofs WHERE channel_id = ? AND signer = ? AND status = 'pending' ORDER BY nonce",
      ).all(channelId.toString(), signer) as ProofRow[]
    ).map(toStoredProof);
  }

  /** The balance proof with exactly this nonce, or null. */
  balanceProofAt(channelId: bigint, signer: string, nonce: bigint): SignedBalanceProof | null {
    return this.storedProofAt(channelId, signer, nonce)?.signed ?? null;
  }

  /** The stored proof with exactly this nonce (with locks), or null. */
  storedProofAt(channelId: bigint, signer: string, nonce: bigint): StoredProof | null {
    const row = this.#sql(
      "SELECT * FROM balance_proofs WHERE channel_id = ? AND signer = ? AND nonce = ?",
    ).get(channelId.toString(), signer, Number(nonce)) as ProofRow | undefined;
    return row ? toStoredProof(row) : null;
  }

  /** Our/the partner's stored proof committing to `locksRoot` (the latest such), or null. */
  storedProofByLocksRoot(channelId: bigint, signer: string, locksRoot: string): StoredProof | null {
    const row = this.#sql(
      "SELECT * FROM balance_proofs WHERE channel_id = ? AND signer = ? AND lower(locks_root) = lower(?) ORDER BY nonce DESC LIMIT 1",
    ).get(channelId.toString(), signer, locksRoot) as ProofRow | undefined;
    return row ? toStoredProof(row) : null;
  }

  // ---- mediated transfers ----

  /** Inserts or replaces a transfer's role state. */
  putTransfer(t: TransferRecord): void {
    const now = Date.now();
    this.#sql(
      `INSERT INTO transfers(id, role, secret_hash, payment_id, state, done, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(id) DO UPDATE SET state = excluded.state, done = excluded.done, updated_at = excluded.updated_at`,
    ).run(t.id, t.role, t.secretHash, t.paymentId, toJson(t.state), t.done ? 1 : 0, now, now);
  }

  getTransfer(id: string): TransferRecord | null {
    const row = this.#sql("SELECT * FROM transfers WHERE id = ?").get(id) as TransferRow | undefined;
    return row ? toTransfer(row) : null;
  }

  /** Transfers with this secret hash (any role), oldest first. */
  transfersByHash(secretHash: string): TransferRecord[] {
    return (
      this.#sql("SELECT * FROM transfers WHERE secret_hash = ? ORDER BY created_at").all(
        secretHash.toLowerCase(),
      ) as TransferRow[]
    ).map(toTransfer);
  }

  /** Transfers not done yet (resumed after a restart, ticked by the clock). */
  openTransfers(): TransferRecord[] {
    return (
      this.#sql("SELECT * FROM transfers WHERE done = 0 ORDER BY created_at").all() as TransferRow[]
    ).map(toTransfer);
  }

  /** Remembers a secret (idempotent). */
  putSecret(secretHash: string, secret: string): void {
    this.#sql("INSERT OR IGNORE INTO secrets(secret_hash, secret, learned_at) VALUES (?, ?, ?)").run(
      secretHash.toLowerCase(),
      secret.toLowerCase(),
      Date.now(),
    );
  }

  getSecret(secretHash: string): string | null {
    const row = this.#sql("SELECT secret FROM secrets WHERE secret_hash = ?").get(
      secretHash.toLowerCase(),
    ) as { secret: string } | undefined;
    return row?.secret ?? null;
  }

  insertMediatedPayment(p: MediatedPaymentRecord): void {
    this.#sql(
      `INSERT INTO mediated_payments(payment_id, target, token, amount, max_fee, secret_hash, secret, status, fee,
           attempts, error_code, error_message, created_at, completed_at, deadline_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(...mediatedParams(p));
  }

  /** Writes a payment's mutable fields (secret, status, fee, attempts, error, completion). */
  updateMediatedPayment(p: MediatedPaymentRecord): void {
    this.#sql(
      `INSERT INTO mediated_payments(payment_id, target, token, amount, max_fee, secret_hash, secret, status, fee,
           attempts, error_code, error_message, created_at, completed_at, deadline_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(payment_id) DO UPDATE SET secret = excluded.secret, status = excluded.status, fee = excluded.fee,
           attempts = excluded.attempts, error_code = excluded.error_code, error_message = excluded.error_message,
           completed_at = excluded.completed_at`,
    ).run(...mediatedParams(p));
  }

  getMediatedPayment(paymentId: string): MediatedPaymentRecord | null {
    const row = this.#sql("SELECT * FROM mediated_payments WHERE payment_id = ?").get(paymentId) as
      MediatedRow | undefined;
    return row ? toMediated(row) : null;
  }

  mediatedPaymentByHash(secretHash: string): MediatedPaymentRecord | null {
    const row = this.#sql(
      "SELECT * FROM mediated_payments WHERE secret_hash = ? ORDER BY created_at DESC LIMIT 1",
    ).get(secretHash.toLowerCase()) as MediatedRow | undefined;
    return row ? toMediated(row) : null;
  }

  pendingMediatedPayments(): MediatedPaymentRecord[] {
    return (this.#sql("SELECT * FROM mediated_payments WHERE status = 'pending'").all() as MediatedRow[]).map(
      toMediated,
    );
  }

  insertInvoice(i: InvoiceRecord): void {
    this.#sql(
      `INSERT INTO invoices(payment_hash, secret, token, amount, description, status, paid_amount, created_at,
           expires_at, paid_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      i.paymentHash.toLowerCase(),
      i.secret,
      i.token,
      i.amount.toString(),
      i.description,
      i.status,
      i.paidAmount.toString(),
      i.createdAtMs,
      i.expiresAtMs,
      i.paidAtMs,
    );
  }

  getInvoice(paymentHash: string): InvoiceRecord | null {
    const row = this.#sql("SELECT * FROM invoices WHERE payment_hash = ?").get(paymentHash.toLowerCase()) as
      InvoiceRow | undefined;
    return row
      ? {
          paymentHash: row.payment_hash,
          secret: row.secret,
          token: row.token,
          amount: BigInt(row.amount),
          description: row.description,
          status: row.status,
          paidAmount: BigInt(row.paid_amount),
          createdAtMs: row.created_at,
          expiresAtMs: row.expires_at,
          paidAtMs: row.paid_at,
        }
      : null;
  }

  /**
   * Deletes, in one statement, every invoice that was never paid and expired before `expiredBeforeMs` (unix
   * ms): a flood of unpaid x402 402s must not grow the store forever. A deleted invoice is unknown from then
   * on (`getInvoice` null): a lock for its hash is treated like one for an unknown or expired invoice.
   * @returns how many invoices were deleted.
   */
  deleteExpiredInvoices(expiredBeforeMs: number): number {
    return this.#sql("DELETE FROM invoices WHERE status <> 'paid' AND expires_at < ?").run(expiredBeforeMs)
      .changes;
  }

  markInvoicePaid(paymentHash: string, paidAmount: bigint): void {
    this.#sql(
      "UPDATE invoices SET status = 'paid', paid_amount = ?, paid_at = ? WHERE payment_hash = ? AND status <> 'paid'",
    ).run(paidAmount.toString(), Date.now(), paymentHash.toLowerCase());
  }

  /** Inserts a payment; throws on a duplicate (direction, channel, paymentId) or outgoing paymentId. */
  insertPayment(p: PaymentRecord): void {
    this.#sql(
      `INSERT INTO payments(payment_id, direction, channel_id, partner, token, amount, nonce, status, error_code,
           error_message, created_at, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      p.paymentId,
      p.direction,
      p.channelId.toString(),
      p.partner,
      p.token,
      p.amount.toString(),
      Number(p.nonce),
      p.status,
      p.errorCode,
      p.errorMessage,
      p.createdAtMs,
      p.completedAtMs,
    );
  }

  /** Marks an outgoing payment completed or failed. */
  finishOutgoingPayment(
    paymentId: string,
    status: "completed" | "failed",
    error?: { code: string; message: string },
  ): void {
    this.#sql(
      `UPDATE payments SET status = ?, error_code = ?, error_message = ?, completed_at = ?
         WHERE direction = 'outgoing' AND payment_id = ? AND status = 'pending'`,
    ).run(status, error?.code ?? null, error?.message ?? null, Date.now(), paymentId);
  }

  /** An outgoing payment by id, else an incoming one with that id (the most recent). */
  getPayment(paymentId: string): PaymentRecord | null {
    const row = this.#sql(
      "SELECT * FROM payments WHERE payment_id = ? ORDER BY direction = 'outgoing' DESC, created_at DESC LIMIT 1",
    ).get(paymentId) as PaymentRow | undefined;
    return row ? toPayment(row) : null;
  }

  getIncomingPayment(channelId: bigint, paymentId: string): PaymentRecord | null {
    const row = this.#sql(
      "SELECT * FROM payments WHERE direction = 'incoming' AND channel_id = ? AND payment_id = ?",
    ).get(channelId.toString(), paymentId) as PaymentRow | undefined;
    return row ? toPayment(row) : null;
  }

  /** Outgoing payments still waiting for the partner's acknowledgement, in nonce order. */
  pendingOutgoingPayments(channelId: bigint): PaymentRecord[] {
    return (
      this.#sql(
        "SELECT * FROM payments WHERE direction = 'outgoing' AND status = 'pending' AND channel_id = ? ORDER BY nonce",
      ).all(channelId.toString()) as PaymentRow[]
    ).map(toPayment);
  }

  /**
   * Payments sent and received, newest first (keyset pagination): direct payments both ways, routed payments
   * received (the `payments` table) and routed payments sent (`mediated_payments`, direction outgoing).
   * @param query.limit - page size (the API bounds it to 1..1000).
   * @param query.status / query.direction - only payments with this status / direction.
   * @param query.before - only payments after this cursor in the order (the previous page's `nextCursor`).
   * @returns at most `limit` payments, and `nextCursor` (the last one's cursor) when more follow, else null.
   */
  listPayments(query: {
    limit: number;
    status?: PaymentStatus;
    direction?: PaymentDirection;
    before?: PaymentCursor;
  }): { payments: ListedPayment[]; nextCursor: PaymentCursor | null } {
    // One statement per table; each reads its created_at index backwards from the cursor, `limit + 1` rows.
    const params = {
      status: query.status ?? null,
      direction: query.direction ?? null,
      at: query.before?.createdAtMs ?? Number.MAX_SAFE_INTEGER,
      src: query.before?.source ?? 0,
      seq: query.before?.seq ?? 0,
      limit: query.limit + 1,
    };
    const { direction: _direction, ...rest } = params;
    const after = (source: number) =>
      `created_at <= @at AND (created_at < @at OR ${source} < @src OR (${source} = @src AND rowid < @seq))
         AND (@status IS NULL OR status = @status)`;
    const channel = (
      this.#sql(
        `SELECT rowid AS seq, * FROM payments WHERE ${after(0)} AND (@direction IS NULL OR direction = @direction)
           ORDER BY created_at DESC, rowid DESC LIMIT @limit`,
      ).all(params) as (PaymentRow & { seq: number })[]
    ).map((r): ListedPayment => ({
      source: 0,
      payment: toPayment(r),
      cursor: { createdAtMs: r.created_at, source: 0, seq: r.seq },
    }));
    const routed =
      query.direction === "incoming"
        ? []
        : (
            this.#sql(
              `SELECT rowid AS seq, * FROM mediated_payments WHERE ${after(1)}
                 ORDER BY created_at DESC, rowid DESC LIMIT @limit`,
            ).all(rest) as (MediatedRow & { seq: number })[]
          ).map((r): ListedPayment => ({
            source: 1,
            payment: toMediated(r),
            cursor: { createdAtMs: r.created_at, source: 1, seq: r.seq },
          }));
    const newerFirst = (a: PaymentCursor, b: PaymentCursor) =>
      b.createdAtMs - a.createdAtMs || b.source - a.source || b.seq - a.seq;
    const merged = [...channel, ...routed].sort((a, b) => newerFirst(a.cursor, b.cursor));
    const page = merged.slice(0, query.limit);
    return {
      payments: page,
      nextCursor: merged.length > query.limit ? (page.at(-1)?.cursor ?? null) : null,
    };
  }

  /** Sums of completed payment amounts per direction on a channel (base units). */
  paymentTotals(channelId: bigint): {
    sent: bigint;
    received: bigint;
    sentCount: number;
    receivedCount: number;
  } {
    const rows = this.#sql(
      "SELECT direction, amount FROM payments WHERE channel_id = ? AND status = 'completed'",
    ).all(channelId.toString()) as { direction: PaymentDirection; amount: string }[];
    const totals = { sent: 0n, received: 0n, sentCount: 0, receivedCount: 0 };
    for (const r of rows) {
      if (r.direction === "outgoing") {
        totals.sent += BigInt(r.amount);
        totals.sentCount++;
      } else {
        totals.received += BigInt(r.amount);
        totals.receivedCount++;
      }
    }
    return totals;
  }
}
