/**
 * The node's durable state in one SQLite file (host/sqlite.ts: WAL, `synchronous=FULL`): channels, every
 * balance proof we signed or accepted, payments and known peers. `NodeStore` is the one facade; the tables
 * live by what they own in node/store/: schema.ts (DDL and migrations v1 -> v3), channels.ts (channels,
 * withdraws, balance proofs), payments.ts (direct and routed payments, the list), transfers.ts (mediated
 * transfers, secrets, invoices), codecs.ts (every row decoded, never cast) and types.ts (the records).
 *
 * Durability rule (LDK): every write here is committed (fsync'd) when the call returns, and callers write
 * before they send the message that depends on it. Amounts are decimal strings of token base units; nonces
 * are SQLite integers (< 2^53 in practice; a channel would need 9e15 payments to overflow).
 * A corrupt row read is `QrwpError("INTERNAL")` naming its table and column.
 */
import { decodeRow, openSqlite, type SqliteDatabase } from "../../host/sqlite.js";
import type { Lock, SignedBalanceProof } from "../../protocol/index.js";
import { ChannelTables } from "./channels.js";
import { metaValueRow, peerIdRow, toPeer } from "./codecs.js";
import { PaymentTables } from "./payments.js";
import { NODE_STORE_SCHEMA } from "./schema.js";
import { TransferTables } from "./transfers.js";
import type {
  ChannelRecord,
  InvoiceRecord,
  ListedPayment,
  MediatedPaymentRecord,
  PaymentCursor,
  PaymentDirection,
  PaymentRecord,
  PaymentStatus,
  PeerRecord,
  PendingWithdraw,
  ProofStatus,
  StoredProof,
  TransferRecord,
} from "./types.js";

export type * from "./types.js";

/** SQLite-backed store. Every method is synchronous and durable on return. */
export class NodeStore {
  readonly #s: SqliteDatabase;
  readonly #channels: ChannelTables;
  readonly #payments: PaymentTables;
  readonly #transfers: TransferTables;

  /**
   * Opens (creating or migrating if needed) the database at `path`; `":memory:"` is accepted for throwaway use.
   * @throws QrwpError INTERNAL `{ field: "schema_version" }` for a file of another schema version.
   */
  constructor(path: string) {
    this.#s = openSqlite(path, NODE_STORE_SCHEMA);
    this.#channels = new ChannelTables(this.#s);
    this.#payments = new PaymentTables(this.#s);
    this.#transfers = new TransferTables(this.#s);
  }

  /** Closes the database (checkpointing the WAL). */
  close(): void {
    this.#s.close();
  }

  /**
   * Commits are no longer fsync'd one by one; {@link syncBarrier} makes them durable and must run before
   * anything that depends on them leaves the process (see `SqliteStore.deferSyncToBarrier`). The node
   * runtime calls it once it has hooked the barrier into its transport, HTTP API and transaction sender.
   */
  deferSyncToBarrier(): void {
    this.#s.deferSyncToBarrier();
  }

  /** {@link syncBarrier} on the next event-loop turn, one fsync for every caller until then. */
  syncBarrierSoon(): Promise<void> {
    return this.#s.syncBarrierSoon();
  }

  /** Makes every commit so far durable if anything changed since the last sync (see `SqliteStore.syncBarrier`). */
  syncBarrier(): boolean {
    return this.#s.syncBarrier();
  }

  /**
   * Runs `fn` in one transaction: all of its writes land together or none do; durable (fsync'd) on return
   * unless `durable: false` (see `SqliteStore.transaction`: only for writes a restart can redo) or syncs are
   * deferred to the barrier ({@link deferSyncToBarrier}).
   */
  transaction<T>(fn: () => T, options: { durable?: boolean } = {}): T {
    return this.#s.transaction(fn, options);
  }

  /** Runs `fn` if the open transaction rolls back, after its writes are undone (see `SqliteDb.onRollback`). */
  onRollback(fn: () => void): void {
    this.#s.onRollback(fn);
  }

  // ---- meta and peers ----

  getMeta(key: string): string | null {
    const row: unknown = this.#s.sql("SELECT value FROM meta WHERE key = ?").get(key);
    return row === undefined ? null : decodeRow(metaValueRow, "meta", row).value;
  }

  setMeta(key: string, value: string): void {
    this.#s
      .sql("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
      .run(key, value);
  }

  deleteMeta(key: string): void {
    this.#s.sql("DELETE FROM meta WHERE key = ?").run(key);
  }

  upsertPeer(peer: PeerRecord): void {
    this.#s
      .sql(
        `INSERT INTO peers(address, peer_id, multiaddrs, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT(address) DO UPDATE SET peer_id = excluded.peer_id, multiaddrs = excluded.multiaddrs, updated_at = excluded.updated_at`,
      )
      .run(peer.address, peer.peerId, JSON.stringify(peer.multiaddrs), Date.now());
  }

  getPeer(address: string): PeerRecord | null {
    const row: unknown = this.#s.sql("SELECT * FROM peers WHERE address = ?").get(address);
    return row === undefined ? null : toPeer(row);
  }

  /** libp2p peer ids of the partners of channels not settled yet (the peers the node keeps, PROTOCOL §3.1). */
  partnerPeerIds(): string[] {
    return this.#s
      .sql(
        `SELECT DISTINCT p.peer_id FROM peers p JOIN channels c ON lower(c.partner) = lower(p.address)
        WHERE c.state != 'settled'`,
      )
      .all()
      .map((row) => decodeRow(peerIdRow, "peers", row).peer_id);
  }

  // ---- channels and withdraws ----

  /** Inserts a new channel; throws if the channel id exists. */
  insertChannel(c: ChannelRecord): void {
    this.#channels.insertChannel(c);
  }

  /** Updates the mutable fields of a channel (state, deposits, withdraw totals, close data). */
  updateChannel(c: ChannelRecord): void {
    this.#channels.updateChannel(c);
  }

  getChannel(channelId: bigint): ChannelRecord | null {
    return this.#channels.getChannel(channelId);
  }

  /** All channels, by channel id. */
  listChannels(): ChannelRecord[] {
    return this.#channels.listChannels();
  }

  /** Records (or replaces) the pending withdraw of `w.participant` on `w.channelId`. */
  putWithdraw(w: PendingWithdraw): void {
    this.#channels.putWithdraw(w);
  }

  /** The pending withdraw of `participant` on a channel, or null. */
  getWithdraw(channelId: bigint, participant: string): PendingWithdraw | null {
    return this.#channels.getWithdraw(channelId, participant);
  }

  /** Forgets the pending withdraw of `participant` on a channel (mined, expired or refused). */
  deleteWithdraw(channelId: bigint, participant: string): void {
    this.#channels.deleteWithdraw(channelId, participant);
  }

  // ---- balance proofs ----

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
    this.#channels.insertBalanceProof(signer, signed, extra);
  }

  /** Sets the delivery status of our proof with this nonce. */
  setProofStatus(channelId: bigint, signer: string, nonce: bigint, status: ProofStatus): void {
    this.#channels.setProofStatus(channelId, signer, nonce, status);
  }

  /** The highest-nonce balance proof signed by `signer` on the channel, or null if none. */
  latestBalanceProof(channelId: bigint, signer: string): SignedBalanceProof | null {
    return this.#channels.latestStoredProof(channelId, signer)?.signed ?? null;
  }

  /** Stores the evidence (ML-DSA-65 signature) that arrived for an already stored proof. */
  setProofPqSignature(channelId: bigint, signer: string, nonce: bigint, pqSignature: Uint8Array): void {
    this.#channels.setProofPqSignature(channelId, signer, nonce, pqSignature);
  }

  /** The highest-nonce proof of `signer` on the channel that carries evidence (optionally with `status`). */
  latestEvidencedProof(channelId: bigint, signer: string, status?: ProofStatus): StoredProof | null {
    return this.#channels.latestEvidencedProof(channelId, signer, status);
  }

  /** The highest-nonce stored proof of `signer` (optionally only with `status`), with locks and message. */
  latestStoredProof(channelId: bigint, signer: string, status?: ProofStatus): StoredProof | null {
    return this.#channels.latestStoredProof(channelId, signer, status);
  }

  /** Our proofs still waiting for the partner's Processed, in nonce order. */
  pendingProofs(channelId: bigint, signer: string): StoredProof[] {
    return this.#channels.pendingProofs(channelId, signer);
  }

  /** The balance proof with exactly this nonce, or null. */
  balanceProofAt(channelId: bigint, signer: string, nonce: bigint): SignedBalanceProof | null {
    return this.#channels.storedProofAt(channelId, signer, nonce)?.signed ?? null;
  }

  /** The stored proof with exactly this nonce (with locks), or null. */
  storedProofAt(channelId: bigint, signer: string, nonce: bigint): StoredProof | null {
    return this.#channels.storedProofAt(channelId, signer, nonce);
  }

  /** Our/the partner's stored proof committing to `locksRoot` (the latest such), or null. */
  storedProofByLocksRoot(channelId: bigint, signer: string, locksRoot: string): StoredProof | null {
    return this.#channels.storedProofByLocksRoot(channelId, signer, locksRoot);
  }

  // ---- mediated transfers, secrets, invoices ----

  /** Inserts or replaces a transfer's role state. */
  putTransfer(t: TransferRecord): void {
    this.#transfers.putTransfer(t);
  }

  getTransfer(id: string): TransferRecord | null {
    return this.#transfers.getTransfer(id);
  }

  /** Transfers with this secret hash (any role), oldest first. */
  transfersByHash(secretHash: string): TransferRecord[] {
    return this.#transfers.transfersByHash(secretHash);
  }

  /** Ids of the transfers with this secret hash (any role), oldest first. */
  transferIdsByHash(secretHash: string): string[] {
    return this.#transfers.transferIdsByHash(secretHash);
  }

  /**
   * Deletes the finished transfers (state machine and empty outbox) last written before `updatedBeforeMs`;
   * the payment records, secrets and invoices stay. @returns how many were deleted.
   */
  deleteDoneTransfers(updatedBeforeMs: number): number {
    return this.#transfers.deleteDoneTransfers(updatedBeforeMs);
  }

  /** Transfers not done yet (resumed after a restart, ticked by the clock). */
  openTransfers(): TransferRecord[] {
    return this.#transfers.openTransfers();
  }

  /** Remembers a secret (idempotent). */
  putSecret(secretHash: string, secret: string): void {
    this.#transfers.putSecret(secretHash, secret);
  }

  getSecret(secretHash: string): string | null {
    return this.#transfers.getSecret(secretHash);
  }

  insertInvoice(i: InvoiceRecord): void {
    this.#transfers.insertInvoice(i);
  }

  getInvoice(paymentHash: string): InvoiceRecord | null {
    return this.#transfers.getInvoice(paymentHash);
  }

  /**
   * Deletes, in one statement, every invoice that was never paid and expired before `expiredBeforeMs` (unix
   * ms): a flood of unpaid x402 402s must not grow the store forever. A deleted invoice is unknown from then
   * on (`getInvoice` null): a lock for its hash is treated like one for an unknown or expired invoice.
   * @returns how many invoices were deleted.
   */
  deleteExpiredInvoices(expiredBeforeMs: number): number {
    return this.#transfers.deleteExpiredInvoices(expiredBeforeMs);
  }

  markInvoicePaid(paymentHash: string, paidAmount: bigint): void {
    this.#transfers.markInvoicePaid(paymentHash, paidAmount);
  }

  // ---- payments ----

  insertMediatedPayment(p: MediatedPaymentRecord): void {
    this.#payments.insertMediatedPayment(p);
  }

  /** Writes a payment's mutable fields (secret, status, fee, attempts, error, completion). */
  updateMediatedPayment(p: MediatedPaymentRecord): void {
    this.#payments.updateMediatedPayment(p);
  }

  getMediatedPayment(paymentId: string): MediatedPaymentRecord | null {
    return this.#payments.getMediatedPayment(paymentId);
  }

  mediatedPaymentByHash(secretHash: string): MediatedPaymentRecord | null {
    return this.#payments.mediatedPaymentByHash(secretHash);
  }

  pendingMediatedPayments(): MediatedPaymentRecord[] {
    return this.#payments.pendingMediatedPayments();
  }

  /** Inserts a payment; throws on a duplicate (direction, channel, paymentId) or outgoing paymentId. */
  insertPayment(p: PaymentRecord): void {
    this.#payments.insertPayment(p);
  }

  /**
   * Marks a pending outgoing payment completed or failed.
   * @returns whether it was pending (false: no such payment, or already completed or failed).
   */
  finishOutgoingPayment(
    paymentId: string,
    status: "completed" | "failed",
    error?: { code: string; message: string },
  ): boolean {
    return this.#payments.finishOutgoingPayment(paymentId, status, error);
  }

  /** An outgoing payment by id, else an incoming one with that id (the most recent). */
  getPayment(paymentId: string): PaymentRecord | null {
    return this.#payments.getPayment(paymentId);
  }

  /** Our outgoing direct payment with this id, or null. */
  getOutgoingPayment(paymentId: string): PaymentRecord | null {
    return this.#payments.getOutgoingPayment(paymentId);
  }

  /** Whether an outgoing payment id is taken, and by what: a direct payment, a routed one, or nothing. */
  outgoingIdUse(paymentId: string): "direct" | "routed" | null {
    return this.#payments.outgoingIdUse(paymentId);
  }

  getIncomingPayment(channelId: bigint, paymentId: string): PaymentRecord | null {
    return this.#payments.getIncomingPayment(channelId, paymentId);
  }

  /** Outgoing payments still waiting for the partner's acknowledgement, in nonce order. */
  pendingOutgoingPayments(channelId: bigint): PaymentRecord[] {
    return this.#payments.pendingOutgoingPayments(channelId);
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
    return this.#payments.listPayments(query);
  }

  /** Sums of completed payment amounts per direction on a channel (base units). */
  paymentTotals(channelId: bigint): {
    sent: bigint;
    received: bigint;
    sentCount: number;
    receivedCount: number;
  } {
    return this.#payments.paymentTotals(channelId);
  }
}
