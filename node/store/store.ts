/**
 * The node's durable state in one SQLite file (better-sqlite3, WAL, `synchronous=FULL`): channels, every
 * balance proof we signed or accepted, payments and known peers.
 *
 * Durability rule (LDK): every write here is committed (fsync'd) when the call returns, and callers write
 * before they send the message that depends on it. Amounts are decimal strings of token base units; nonces
 * are SQLite integers (< 2^53 in practice; a channel would need 9e15 payments to overflow).
 */
import Database from "better-sqlite3";
import type { BalanceProof, SignedBalanceProof } from "../../protocol/index.js";

export type ChannelState = "opened" | "closed" | "settled";

/** A channel as the node sees it. `ourDeposit`/`partnerDeposit` are on-chain total deposits (base units). */
export interface ChannelRecord {
  channelId: bigint;
  partner: string;
  token: string;
  state: ChannelState;
  settleTimeoutSeconds: number;
  ourDeposit: bigint;
  partnerDeposit: bigint;
  closedAtSeconds: number | null;
  closingParticipant: string | null;
  openedAtMs: number;
  updatedAtMs: number;
}

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

/** A known peer: its Ethereum address, libp2p peer id and dialable addresses. */
export interface PeerRecord {
  address: string;
  peerId: string;
  multiaddrs: string[];
}

const SCHEMA_VERSION = 1;

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
  updated_at INTEGER NOT NULL
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
`;

interface ChannelRow {
  channel_id: string;
  partner: string;
  token: string;
  state: ChannelState;
  settle_timeout_seconds: number;
  our_deposit: string;
  partner_deposit: string;
  closed_at_seconds: number | null;
  closing_participant: string | null;
  opened_at: number;
  updated_at: number;
}
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

const toChannel = (r: ChannelRow): ChannelRecord => ({
  channelId: BigInt(r.channel_id),
  partner: r.partner,
  token: r.token,
  state: r.state,
  settleTimeoutSeconds: r.settle_timeout_seconds,
  ourDeposit: BigInt(r.our_deposit),
  partnerDeposit: BigInt(r.partner_deposit),
  closedAtSeconds: r.closed_at_seconds,
  closingParticipant: r.closing_participant,
  openedAtMs: r.opened_at,
  updatedAtMs: r.updated_at,
});
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

  /** Opens (creating if needed) the database at `path`; `":memory:"` is accepted for throwaway use. */
  constructor(path: string) {
    this.#db = new Database(path);
    this.#db.pragma("journal_mode = WAL");
    this.#db.pragma("synchronous = FULL");
    this.#db.pragma("foreign_keys = ON");
    this.#db.exec(SCHEMA);
    const version = this.getMeta("schema_version");
    if (version === null) this.setMeta("schema_version", String(SCHEMA_VERSION));
    else if (Number(version) !== SCHEMA_VERSION) {
      throw new Error(`store schema version ${version} is not supported (expected ${SCHEMA_VERSION})`);
    }
  }

  /** Closes the database (checkpointing the WAL). */
  close(): void {
    this.#db.close();
  }

  /** Runs `fn` in one transaction: all of its writes land together or none do. */
  transaction<T>(fn: () => T): T {
    return this.#db.transaction(fn)();
  }

  getMeta(key: string): string | null {
    const row = this.#db.prepare("SELECT value FROM meta WHERE key = ?").get(key) as
      { value: string } | undefined;
    return row?.value ?? null;
  }

  setMeta(key: string, value: string): void {
    this.#db
      .prepare(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
      )
      .run(key, value);
  }

  upsertPeer(peer: PeerRecord): void {
    this.#db
      .prepare(
        `INSERT INTO peers(address, peer_id, multiaddrs, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT(address) DO UPDATE SET peer_id = excluded.peer_id, multiaddrs = excluded.multiaddrs, updated_at = excluded.updated_at`,
      )
      .run(peer.address, peer.peerId, JSON.stringify(peer.multiaddrs), Date.now());
  }

  getPeer(address: string): PeerRecord | null {
    const row = this.#db.prepare("SELECT * FROM peers WHERE address = ?").get(address) as
      { address: string; peer_id: string; multiaddrs: string } | undefined;
    return row
      ? { address: row.address, peerId: row.peer_id, multiaddrs: JSON.parse(row.multiaddrs) as string[] }
      : null;
  }

  /** Inserts a new channel; throws if the channel id exists. */
  insertChannel(c: ChannelRecord): void {
    this.#db
      .prepare(
        `INSERT INTO channels(channel_id, partner, token, state, settle_timeout_seconds, our_deposit, partner_deposit,
           closed_at_seconds, closing_participant, opened_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        c.channelId.toString(),
        c.partner,
        c.token,
        c.state,
        c.settleTimeoutSeconds,
        c.ourDeposit.toString(),
        c.partnerDeposit.toString(),
        c.closedAtSeconds,
        c.closingParticipant,
        c.openedAtMs,
        c.updatedAtMs,
      );
  }

  /** Updates the mutable fields of a channel (state, deposits, close data). */
  updateChannel(c: ChannelRecord): void {
    this.#db
      .prepare(
        `UPDATE channels SET state = ?, our_deposit = ?, partner_deposit = ?, closed_at_seconds = ?,
           closing_participant = ?, updated_at = ? WHERE channel_id = ?`,
      )
      .run(
        c.state,
        c.ourDeposit.toString(),
        c.partnerDeposit.toString(),
        c.closedAtSeconds,
        c.closingParticipant,
        Date.now(),
        c.channelId.toString(),
      );
  }

  getChannel(channelId: bigint): ChannelRecord | null {
    const row = this.#db.prepare("SELECT * FROM channels WHERE channel_id = ?").get(channelId.toString()) as
      ChannelRow | undefined;
    return row ? toChannel(row) : null;
  }

  /** All channels, by channel id. */
  listChannels(): ChannelRecord[] {
    return (
      this.#db.prepare("SELECT * FROM channels ORDER BY CAST(channel_id AS INTEGER)").all() as ChannelRow[]
    ).map(toChannel);
  }

  /** Stores a signed balance proof (ours or the partner's). Storing the identical proof twice is a no-op. */
  insertBalanceProof(signer: string, signed: SignedBalanceProof): void {
    const p: BalanceProof = signed.proof;
    this.#db
      .prepare(
        `INSERT OR IGNORE INTO balance_proofs(channel_id, signer, nonce, chain_id, hub, transferred_amount, locked_amount,
           locks_root, signature, pq_signature, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
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
        Date.now(),
      );
  }

  /** The highest-nonce balance proof signed by `signer` on the channel, or null if none. */
  latestBalanceProof(channelId: bigint, signer: string): SignedBalanceProof | null {
    const row = this.#db
      .prepare("SELECT * FROM balance_proofs WHERE channel_id = ? AND signer = ? ORDER BY nonce DESC LIMIT 1")
      .get(channelId.toString(), signer) as ProofRow | undefined;
    return row ? toProof(row) : null;
  }

  /**
   * transferredAmount of the highest-nonce proof by `signer` that the partner acknowledged (its outgoing
   * payment completed), or 0. This is what the next outgoing proof builds on.
   */
  latestAcknowledgedTransferred(channelId: bigint, signer: string): bigint {
    const row = this.#db
      .prepare(
        `SELECT bp.transferred_amount AS t FROM balance_proofs bp
         JOIN payments p ON p.direction = 'outgoing' AND p.channel_id = bp.channel_id AND p.nonce = bp.nonce
         WHERE bp.channel_id = ? AND bp.signer = ? AND p.status = 'completed'
         ORDER BY bp.nonce DESC LIMIT 1`,
      )
      .get(channelId.toString(), signer) as { t: string } | undefined;
    return row ? BigInt(row.t) : 0n;
  }

  /** The balance proof with exactly this nonce, or null. */
  balanceProofAt(channelId: bigint, signer: string, nonce: bigint): SignedBalanceProof | null {
    const row = this.#db
      .prepare("SELECT * FROM balance_proofs WHERE channel_id = ? AND signer = ? AND nonce = ?")
      .get(channelId.toString(), signer, Number(nonce)) as ProofRow | undefined;
    return row ? toProof(row) : null;
  }

  /** Inserts a payment; throws on a duplicate (direction, channel, paymentId) or outgoing paymentId. */
  insertPayment(p: PaymentRecord): void {
    this.#db
      .prepare(
        `INSERT INTO payments(payment_id, direction, channel_id, partner, token, amount, nonce, status, error_code,
           error_message, created_at, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
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
    this.#db
      .prepare(
        `UPDATE payments SET status = ?, error_code = ?, error_message = ?, completed_at = ?
         WHERE direction = 'outgoing' AND payment_id = ? AND status = 'pending'`,
      )
      .run(status, error?.code ?? null, error?.message ?? null, Date.now(), paymentId);
  }

  /** An outgoing payment by id, else an incoming one with that id (the most recent). */
  getPayment(paymentId: string): PaymentRecord | null {
    const row = this.#db
      .prepare(
        "SELECT * FROM payments WHERE payment_id = ? ORDER BY direction = 'outgoing' DESC, created_at DESC LIMIT 1",
      )
      .get(paymentId) as PaymentRow | undefined;
    return row ? toPayment(row) : null;
  }

  getIncomingPayment(channelId: bigint, paymentId: string): PaymentRecord | null {
    const row = this.#db
      .prepare("SELECT * FROM payments WHERE direction = 'incoming' AND channel_id = ? AND payment_id = ?")
      .get(channelId.toString(), paymentId) as PaymentRow | undefined;
    return row ? toPayment(row) : null;
  }

  /** Outgoing payments still waiting for the partner's acknowledgement, in nonce order. */
  pendingOutgoingPayments(channelId: bigint): PaymentRecord[] {
    return (
      this.#db
        .prepare(
          "SELECT * FROM payments WHERE direction = 'outgoing' AND status = 'pending' AND channel_id = ? ORDER BY nonce",
        )
        .all(channelId.toString()) as PaymentRow[]
    ).map(toPayment);
  }

  /** Sums of completed payment amounts per direction on a channel (base units). */
  paymentTotals(channelId: bigint): {
    sent: bigint;
    received: bigint;
    sentCount: number;
    receivedCount: number;
  } {
    const rows = this.#db
      .prepare("SELECT direction, amount FROM payments WHERE channel_id = ? AND status = 'completed'")
      .all(channelId.toString()) as { direction: PaymentDirection; amount: string }[];
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
