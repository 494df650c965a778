/**
 * The watchtower's durable state in one SQLite file (host/sqlite.ts: WAL, `synchronous=FULL`); every row
 * read is decoded by a codec (a corrupt row is `QrwpError("INTERNAL")` naming its table and column):
 * - `channels`: what the tower knows of each ChannelHub channel (participants, settle timeout, state, the
 *   close), from the chain events it followed (or one `getChannel` read when an appointment arrives first);
 * - `appointments`: one row per slot (channel, non-closing participant): the highest-nonce appointment the
 *   tower accepted, reduced to what the contest needs (blinded proof, the closer's and the client's
 *   secp256k1 signatures; the ML-DSA signatures are verified on receipt and not kept), and the contest's
 *   progress (about 470 bytes per slot with its channel row, see bench:watchtower);
 * - `clients`: each client's pinned ML-DSA-65 key hash (sha256), set by its first accepted appointment;
 * - `meta`: the chain cursor (`chain:last-processed-block`) and counters.
 * A batch of appointments is written in one transaction ({@link WatchtowerStore.acceptBatch}).
 * Storage is bounded by the number of channels on the hub (at most two slots per channel). Every call is
 * durable when it returns. Nonces and amounts are decimal strings (uint256).
 */
import { z } from "zod";
import { column, decodeRow, openSqlite, type SqliteDatabase } from "../host/sqlite.js";

export type TowerChannelState = "opened" | "closed" | "settled";

/** A channel as the tower knows it. */
export interface TowerChannel {
  channelId: bigint;
  participant1: string;
  participant2: string;
  settleTimeoutSeconds: number;
  state: TowerChannelState;
  closingParticipant: string | null;
  /** block.timestamp of the close (seconds), null while opened or not read yet. */
  closedAtSeconds: number | null;
  /** The closer's balance proof nonce stored on-chain: 0 at the close, then NonClosingBalanceProofUpdated's. */
  closerNonce: bigint | null;
}

/**
 * Progress of an appointment:
 * - `watching`: nothing to do (channel open, or closed with a nonce >= ours);
 * - `breach`: the channel was closed with a lower nonce; a contest is due from `contestNotBeforeSeconds`;
 * - `contest_sent`: our contest transaction was sent (`contestTxHash`, account nonce `contestTx.txNonce`),
 *   not yet seen mined (replaced with higher fees if it is not mined in time);
 * - `contested`: our contest was mined (`contestConfirmed` once the follower saw its event at the
 *   confirmation depth; until then a reorganisation that drops it sends the row back to `breach`);
 * - `not_needed`: someone else (the client itself or another tower) put a nonce >= ours on-chain first;
 * - `missed`: the contest window ended before a contest landed (logged as an error);
 * - `settled`: the channel settled while we were watching and nothing was due.
 */
export type AppointmentStatus =
  "watching" | "breach" | "contest_sent" | "contested" | "not_needed" | "missed" | "settled";

/** One slot's appointment as stored. */
export interface StoredAppointment {
  id: string;
  channelId: bigint;
  closingParticipant: string;
  nonClosingParticipant: string;
  nonce: bigint;
  balanceHash: string;
  closingSignature: string;
  nonClosingSignature: string;
  /**
   * The slot digest (`appointmentSlotDigest`, 0x-hex) of the stored appointment, whichever form carried it (rows
   * written before batches hold sha256 of the single appointment's digest): a replay is recognised by it.
   */
  digest: string;
  status: AppointmentStatus;
  /** Chain time (s) from which the contest may be sent (staggered point of the settle window). */
  contestNotBeforeSeconds: number | null;
  /** Chain time (s) after which the contest is refused by the hub (closedAt + settleTimeout). */
  contestDeadlineSeconds: number | null;
  /** The latest contest transaction sent. */
  contestTxHash: string | null;
  /** Every contest transaction hash sent for this appointment (replacements included). */
  contestTxHashes: string[];
  /** Account nonce and fees of the latest contest transaction (to replace it), or null. */
  contestTx: { txNonce: number; maxFeePerGas: bigint; maxPriorityFeePerGas: bigint } | null;
  /** Wall-clock ms when the latest contest transaction was sent. */
  contestSentAtMs: number | null;
  /** True once the follower saw our contest's event at the confirmation depth. */
  contestConfirmed: boolean;
  contestAttempts: number;
  lastError: string | null;
  receivedAtMs: number;
  updatedAtMs: number;
}

/** The blinded proof and signatures of an appointment: what a new slot row is made of. */
export type AppointmentFields = Pick<
  StoredAppointment,
  | "id"
  | "channelId"
  | "closingParticipant"
  | "nonClosingParticipant"
  | "nonce"
  | "balanceHash"
  | "closingSignature"
  | "nonClosingSignature"
  | "digest"
>;

/** A just-accepted appointment: status `watching`, no contest yet, received now (wall-clock ms). */
export function newStoredAppointment(fields: AppointmentFields, nowMs = Date.now()): StoredAppointment {
  return {
    ...fields,
    status: "watching",
    contestNotBeforeSeconds: null,
    contestDeadlineSeconds: null,
    contestTxHash: null,
    contestTxHashes: [],
    contestTx: null,
    contestSentAtMs: null,
    contestConfirmed: false,
    contestAttempts: 0,
    lastError: null,
    receivedAtMs: nowMs,
    updatedAtMs: nowMs,
  };
}

/** Counts for `GET /v1/stats`. */
export interface TowerStats {
  channels: number;
  appointments: number;
  clients: number;
  byStatus: Record<AppointmentStatus, number>;
  appointmentsAccepted: number;
  /** Slots accepted in a batch that also held a higher nonce of their channel (checked, not stored). */
  appointmentsSuperseded: number;
  appointmentsRefused: number;
  /** Batches that stored at least one slot. */
  batchesAccepted: number;
  contestsSent: number;
  dbBytes: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS channels (
  channel_id TEXT PRIMARY KEY,
  participant1 TEXT NOT NULL,
  participant2 TEXT NOT NULL,
  settle_timeout_seconds INTEGER NOT NULL,
  state TEXT NOT NULL,
  closing_participant TEXT,
  closed_at_seconds INTEGER,
  closer_nonce TEXT
);
CREATE TABLE IF NOT EXISTS appointments (
  id TEXT PRIMARY KEY,
  channel_id TEXT NOT NULL,
  closing_participant TEXT NOT NULL,
  non_closing_participant TEXT NOT NULL,
  nonce TEXT NOT NULL,
  balance_hash TEXT NOT NULL,
  closing_signature TEXT NOT NULL,
  non_closing_signature TEXT NOT NULL,
  digest TEXT NOT NULL,
  status TEXT NOT NULL,
  contest_not_before_seconds INTEGER,
  contest_deadline_seconds INTEGER,
  contest_tx_hash TEXT,
  contest_tx_hashes TEXT NOT NULL DEFAULT '[]',
  contest_tx_nonce INTEGER,
  contest_max_fee TEXT,
  contest_priority_fee TEXT,
  contest_sent_at_ms INTEGER,
  contest_confirmed INTEGER NOT NULL DEFAULT 0,
  contest_attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  received_at_ms INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS appointments_channel ON appointments (channel_id);
CREATE INDEX IF NOT EXISTS appointments_status ON appointments (status);
CREATE TABLE IF NOT EXISTS clients (
  address TEXT PRIMARY KEY,
  mldsa_key_hash TEXT NOT NULL,
  first_seen_ms INTEGER NOT NULL
);
`;

const { uintText, addressText, bytes32Text, signatureText, int, uint } = column;

const channelRow = z.object({
  channel_id: uintText,
  participant1: addressText,
  participant2: addressText,
  settle_timeout_seconds: uint,
  state: z.enum(["opened", "closed", "settled"]),
  closing_participant: addressText.nullable(),
  closed_at_seconds: uint.nullable(),
  closer_nonce: uintText.nullable(),
});

/** A `channels` row decoded. @throws QrwpError INTERNAL naming the column of a corrupt row */
function channelFromRow(row: unknown): TowerChannel {
  const r = decodeRow(channelRow, "channels", row);
  return {
    channelId: BigInt(r.channel_id),
    participant1: r.participant1,
    participant2: r.participant2,
    settleTimeoutSeconds: r.settle_timeout_seconds,
    state: r.state,
    closingParticipant: r.closing_participant,
    closedAtSeconds: r.closed_at_seconds,
    closerNonce: r.closer_nonce === null ? null : BigInt(r.closer_nonce),
  };
}

const appointmentStatus = z.enum([
  "watching",
  "breach",
  "contest_sent",
  "contested",
  "not_needed",
  "missed",
  "settled",
]);

const appointmentRow = z.object({
  id: z.string().min(1),
  channel_id: uintText,
  closing_participant: addressText,
  non_closing_participant: addressText,
  nonce: uintText,
  balance_hash: bytes32Text,
  closing_signature: signatureText,
  non_closing_signature: signatureText,
  digest: bytes32Text,
  status: appointmentStatus,
  contest_not_before_seconds: int.nullable(),
  contest_deadline_seconds: int.nullable(),
  contest_tx_hash: bytes32Text.nullable(),
  contest_tx_hashes: column.json(z.array(bytes32Text)),
  contest_tx_nonce: uint.nullable(),
  contest_max_fee: uintText.nullable(),
  contest_priority_fee: uintText.nullable(),
  contest_sent_at_ms: int.nullable(),
  contest_confirmed: z.union([z.literal(0), z.literal(1)]),
  contest_attempts: uint,
  last_error: z.string().nullable(),
  received_at_ms: int,
  updated_at_ms: int,
});

/** An `appointments` row decoded. @throws QrwpError INTERNAL naming the column of a corrupt row */
function appointmentFromRow(row: unknown): StoredAppointment {
  const r = decodeRow(appointmentRow, "appointments", row);
  return {
    id: r.id,
    channelId: BigInt(r.channel_id),
    closingParticipant: r.closing_participant,
    nonClosingParticipant: r.non_closing_participant,
    nonce: BigInt(r.nonce),
    balanceHash: r.balance_hash,
    closingSignature: r.closing_signature,
    nonClosingSignature: r.non_closing_signature,
    digest: r.digest,
    status: r.status,
    contestNotBeforeSeconds: r.contest_not_before_seconds,
    contestDeadlineSeconds: r.contest_deadline_seconds,
    contestTxHash: r.contest_tx_hash,
    contestTxHashes: r.contest_tx_hashes,
    contestTx:
      r.contest_tx_nonce === null
        ? null
        : {
            txNonce: r.contest_tx_nonce,
            maxFeePerGas: BigInt(r.contest_max_fee ?? "0"),
            maxPriorityFeePerGas: BigInt(r.contest_priority_fee ?? "0"),
          },
    contestSentAtMs: r.contest_sent_at_ms,
    contestConfirmed: r.contest_confirmed === 1,
    contestAttempts: r.contest_attempts,
    lastError: r.last_error,
    receivedAtMs: r.received_at_ms,
    updatedAtMs: r.updated_at_ms,
  };
}

/** `SELECT value FROM meta` (cursor and counters: decimal integers). */
const metaValueRow = z.object({ value: z.string().regex(/^[0-9]{1,16}$/) });
/** `SELECT mldsa_key_hash FROM clients`. */
const clientRow = z.object({ mldsa_key_hash: bytes32Text });
/** `SELECT COUNT(*) AS n`. */
const countRow = z.object({ n: uint });
/** `SELECT status, COUNT(*) AS n FROM appointments GROUP BY status`. */
const statusCountRow = z.object({ status: appointmentStatus, n: uint });

const CURSOR_KEY = "chain:last-processed-block";

/** The watchtower's SQLite store (see the module doc). Statements are prepared once. */
export class WatchtowerStore {
  readonly #s: SqliteDatabase;
  readonly #stmts;

  constructor(path: string) {
    this.#s = openSqlite(path, { label: "watchtower store", schema: SCHEMA });
    const db = this.#s.db;
    this.#stmts = {
      getMeta: db.prepare("SELECT value FROM meta WHERE key = ?"),
      setMeta: db.prepare(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
      ),
      bumpMeta: db.prepare(
        `INSERT INTO meta (key, value) VALUES (@key, CAST(CAST(@by AS INTEGER) AS TEXT))
         ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + CAST(@by AS INTEGER) AS TEXT)`,
      ),
      getChannel: db.prepare("SELECT * FROM channels WHERE channel_id = ?"),
      upsertChannel: db.prepare(
        `INSERT INTO channels (channel_id, participant1, participant2, settle_timeout_seconds, state,
           closing_participant, closed_at_seconds, closer_nonce)
         VALUES (@channel_id, @participant1, @participant2, @settle_timeout_seconds, @state,
           @closing_participant, @closed_at_seconds, @closer_nonce)
         ON CONFLICT(channel_id) DO UPDATE SET
           participant1 = excluded.participant1, participant2 = excluded.participant2,
           settle_timeout_seconds = excluded.settle_timeout_seconds, state = excluded.state,
           closing_participant = excluded.closing_participant, closed_at_seconds = excluded.closed_at_seconds,
           closer_nonce = excluded.closer_nonce`,
      ),
      getAppointment: db.prepare("SELECT * FROM appointments WHERE id = ?"),
      appointmentsOfChannel: db.prepare("SELECT * FROM appointments WHERE channel_id = ?"),
      appointmentsByStatus: db.prepare(
        "SELECT * FROM appointments WHERE status = ? ORDER BY contest_not_before_seconds",
      ),
      upsertAppointment: db.prepare(
        `INSERT INTO appointments (id, channel_id, closing_participant, non_closing_participant, nonce,
           balance_hash, closing_signature, non_closing_signature, digest, status, contest_not_before_seconds,
           contest_deadline_seconds, contest_tx_hash, contest_tx_hashes, contest_tx_nonce, contest_max_fee,
           contest_priority_fee, contest_sent_at_ms, contest_confirmed, contest_attempts, last_error,
           received_at_ms, updated_at_ms)
         VALUES (@id, @channel_id, @closing_participant, @non_closing_participant, @nonce, @balance_hash,
           @closing_signature, @non_closing_signature, @digest, @status, @contest_not_before_seconds,
           @contest_deadline_seconds, @contest_tx_hash, @contest_tx_hashes, @contest_tx_nonce, @contest_max_fee,
           @contest_priority_fee, @contest_sent_at_ms, @contest_confirmed, @contest_attempts, @last_error,
           @received_at_ms, @updated_at_ms)
         ON CONFLICT(id) DO UPDATE SET
           channel_id = excluded.channel_id, closing_participant = excluded.closing_participant,
           non_closing_participant = excluded.non_closing_participant, nonce = excluded.nonce,
           balance_hash = excluded.balance_hash, closing_signature = excluded.closing_signature,
           non_closing_signature = excluded.non_closing_signature, digest = excluded.digest,
           status = excluded.status, contest_not_before_seconds = excluded.contest_not_before_seconds,
           contest_deadline_seconds = excluded.contest_deadline_seconds,
           contest_tx_hash = excluded.contest_tx_hash, contest_tx_hashes = excluded.contest_tx_hashes,
           contest_tx_nonce = excluded.contest_tx_nonce, contest_max_fee = excluded.contest_max_fee,
           contest_priority_fee = excluded.contest_priority_fee,
           contest_sent_at_ms = excluded.contest_sent_at_ms, contest_confirmed = excluded.contest_confirmed,
           contest_attempts = excluded.contest_attempts, last_error = excluded.last_error,
           received_at_ms = excluded.received_at_ms, updated_at_ms = excluded.updated_at_ms`,
      ),
      updateProgress: db.prepare(
        `UPDATE appointments SET status = @status, contest_not_before_seconds = @contest_not_before_seconds,
           contest_deadline_seconds = @contest_deadline_seconds, contest_tx_hash = @contest_tx_hash,
           contest_tx_hashes = @contest_tx_hashes, contest_tx_nonce = @contest_tx_nonce,
           contest_max_fee = @contest_max_fee, contest_priority_fee = @contest_priority_fee,
           contest_sent_at_ms = @contest_sent_at_ms, contest_confirmed = @contest_confirmed,
           contest_attempts = @contest_attempts, last_error = @last_error, updated_at_ms = @updated_at_ms
         WHERE id = @id AND digest = @digest`,
      ),
      getClient: db.prepare("SELECT mldsa_key_hash FROM clients WHERE address = ?"),
      insertClient: db.prepare(
        "INSERT OR IGNORE INTO clients (address, mldsa_key_hash, first_seen_ms) VALUES (?, ?, ?)",
      ),
      countChannels: db.prepare("SELECT COUNT(*) AS n FROM channels"),
      countClients: db.prepare("SELECT COUNT(*) AS n FROM clients"),
      countByStatus: db.prepare("SELECT status, COUNT(*) AS n FROM appointments GROUP BY status"),
    };
  }

  /** Runs `fn` in one transaction (committed and fsync'd on return). */
  transaction<T>(fn: () => T): T {
    return this.#s.transaction(fn);
  }

  /** The last chain block whose events were fully processed, or null before the first batch. */
  lastProcessedBlock(): number | null {
    const row: unknown = this.#stmts.getMeta.get(CURSOR_KEY);
    return row === undefined ? null : Number(decodeRow(metaValueRow, "meta", row).value);
  }

  setLastProcessedBlock(block: number): void {
    this.#stmts.setMeta.run(CURSOR_KEY, String(block));
  }

  /** Adds `by` (default 1) to a counter in `meta` (e.g. "count:accepted"). */
  bump(counter: string, by = 1): void {
    this.#stmts.bumpMeta.run({ key: counter, by });
  }

  counter(counter: string): number {
    const row: unknown = this.#stmts.getMeta.get(counter);
    return row === undefined ? 0 : Number(decodeRow(metaValueRow, "meta", row).value);
  }

  channel(channelId: bigint): TowerChannel | null {
    const row: unknown = this.#stmts.getChannel.get(channelId.toString());
    return row === undefined ? null : channelFromRow(row);
  }

  putChannel(c: TowerChannel): void {
    this.#stmts.upsertChannel.run({
      channel_id: c.channelId.toString(),
      participant1: c.participant1,
      participant2: c.participant2,
      settle_timeout_seconds: c.settleTimeoutSeconds,
      state: c.state,
      closing_participant: c.closingParticipant,
      closed_at_seconds: c.closedAtSeconds,
      closer_nonce: c.closerNonce === null ? null : c.closerNonce.toString(),
    });
  }

  appointment(id: string): StoredAppointment | null {
    const row: unknown = this.#stmts.getAppointment.get(id.toLowerCase());
    return row === undefined ? null : appointmentFromRow(row);
  }

  appointmentsOfChannel(channelId: bigint): StoredAppointment[] {
    return this.#stmts.appointmentsOfChannel.all(channelId.toString()).map(appointmentFromRow);
  }

  appointmentsWithStatus(status: AppointmentStatus): StoredAppointment[] {
    return this.#stmts.appointmentsByStatus.all(status).map(appointmentFromRow);
  }

  /** Inserts or replaces a slot's appointment (a newly accepted one). */
  putAppointment(a: StoredAppointment): void {
    this.#stmts.upsertAppointment.run(this.#row(a));
  }

  /**
   * What one appointment batch (or a single appointment) changes, durable in ONE transaction (one fsync): the
   * slots' new rows, the client's pinned ML-DSA key on its first accepted appointment, and the counters
   * (`count:accepted`, `count:superseded`, `count:refused`, `count:batches` when `batch` is true).
   */
  acceptBatch(w: {
    appointments: readonly StoredAppointment[];
    pin: { client: string; keyHash: string } | null;
    superseded?: number;
    refused?: number;
    batch?: boolean;
  }): void {
    this.#s.transaction(() => {
      for (const a of w.appointments) this.putAppointment(a);
      if (w.pin) this.pinClientKey(w.pin.client, w.pin.keyHash);
      if (w.appointments.length > 0) this.bump("count:accepted", w.appointments.length);
      if (w.superseded) this.bump("count:superseded", w.superseded);
      if (w.refused) this.bump("count:refused", w.refused);
      if (w.batch) this.bump("count:batches");
    });
  }

  /**
   * Writes the progress columns of `a` (status, window, contest transaction, error) only if the slot still
   * holds the same appointment (same digest): a newer appointment accepted meanwhile is never overwritten.
   * @returns false when the slot holds another appointment now.
   */
  updateProgress(a: StoredAppointment): boolean {
    return this.#stmts.updateProgress.run(this.#row(a)).changes === 1;
  }

  #row(a: StoredAppointment) {
    return {
      id: a.id.toLowerCase(),
      channel_id: a.channelId.toString(),
      closing_participant: a.closingParticipant,
      non_closing_participant: a.nonClosingParticipant,
      nonce: a.nonce.toString(),
      balance_hash: a.balanceHash,
      closing_signature: a.closingSignature,
      non_closing_signature: a.nonClosingSignature,
      digest: a.digest,
      status: a.status,
      contest_not_before_seconds: a.contestNotBeforeSeconds,
      contest_deadline_seconds: a.contestDeadlineSeconds,
      contest_tx_hash: a.contestTxHash,
      contest_tx_hashes: JSON.stringify(a.contestTxHashes),
      contest_tx_nonce: a.contestTx?.txNonce ?? null,
      contest_max_fee: a.contestTx?.maxFeePerGas.toString() ?? null,
      contest_priority_fee: a.contestTx?.maxPriorityFeePerGas.toString() ?? null,
      contest_sent_at_ms: a.contestSentAtMs,
      contest_confirmed: a.contestConfirmed ? 1 : 0,
      contest_attempts: a.contestAttempts,
      last_error: a.lastError,
      received_at_ms: a.receivedAtMs,
      updated_at_ms: a.updatedAtMs,
    };
  }

  /** The pinned ML-DSA key hash of a client, or null if it never had an appointment accepted. */
  clientKeyHash(address: string): string | null {
    const row: unknown = this.#stmts.getClient.get(address);
    return row === undefined ? null : decodeRow(clientRow, "clients", row).mldsa_key_hash;
  }

  pinClientKey(address: string, keyHash: string): void {
    this.#stmts.insertClient.run(address, keyHash, Date.now());
  }

  stats(): TowerStats {
    const byStatus: Record<AppointmentStatus, number> = {
      watching: 0,
      breach: 0,
      contest_sent: 0,
      contested: 0,
      not_needed: 0,
      missed: 0,
      settled: 0,
    };
    let appointments = 0;
    for (const row of this.#stmts.countByStatus.all()) {
      const r = decodeRow(statusCountRow, "appointments", row);
      byStatus[r.status] = r.n;
      appointments += r.n;
    }
    return {
      channels: decodeRow(countRow, "channels", this.#stmts.countChannels.get()).n,
      appointments,
      clients: decodeRow(countRow, "clients", this.#stmts.countClients.get()).n,
      byStatus,
      appointmentsAccepted: this.counter("count:accepted"),
      appointmentsSuperseded: this.counter("count:superseded"),
      appointmentsRefused: this.counter("count:refused"),
      batchesAccepted: this.counter("count:batches"),
      contestsSent: this.counter("count:contests-sent"),
      dbBytes: this.#s.sizeBytes(),
    };
  }

  get path(): string {
    return this.#s.path;
  }

  /** False once {@link close} was called. */
  get isOpen(): boolean {
    return this.#s.isOpen;
  }

  close(): void {
    this.#s.close();
  }
}
