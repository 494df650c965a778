/**
 * The node store's channel tables: `channels` (one row per channel, its lifecycle and on-chain totals),
 * `withdraws` (pending co-signed withdraws) and `balance_proofs` (every proof we signed or accepted, with its
 * pending locks and delivery status). `NodeStore` delegates to {@link ChannelTables}; rows are decoded by
 * node/store/codecs.ts.
 */
import type { SqliteDatabase } from "../../host/sqlite.js";
import { packLocks, type BalanceProof, type Lock, type SignedBalanceProof } from "../../protocol/index.js";
import { toChannel, toStoredProof, toWithdraw } from "./codecs.js";
import type { ChannelRecord, PendingWithdraw, ProofStatus, StoredProof } from "./types.js";

/** The close columns of a record (null while open). */
function closeColumns(c: ChannelRecord): [number | null, string | null] {
  return c.state === "opened" ? [null, null] : [c.closedAtSeconds, c.closingParticipant];
}

/** Channels, pending withdraws and balance proofs (see the module doc). Every call is durable on return. */
export class ChannelTables {
  readonly #s: SqliteDatabase;

  constructor(s: SqliteDatabase) {
    this.#s = s;
  }

  insertChannel(c: ChannelRecord): void {
    this.#s
      .sql(
        `INSERT INTO channels(channel_id, partner, token, state, settle_timeout_seconds, our_deposit, partner_deposit,
           closed_at_seconds, closing_participant, opened_at, updated_at, our_withdraw, partner_withdraw)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
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

  updateChannel(c: ChannelRecord): void {
    this.#s
      .sql(
        `UPDATE channels SET state = ?, our_deposit = ?, partner_deposit = ?, closed_at_seconds = ?,
           closing_participant = ?, updated_at = ?, our_withdraw = ?, partner_withdraw = ? WHERE channel_id = ?`,
      )
      .run(
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
    const row: unknown = this.#s.sql("SELECT * FROM channels WHERE channel_id = ?").get(channelId.toString());
    return row === undefined ? null : toChannel(row);
  }

  listChannels(): ChannelRecord[] {
    return this.#s.sql("SELECT * FROM channels ORDER BY CAST(channel_id AS INTEGER)").all().map(toChannel);
  }

  putWithdraw(w: PendingWithdraw): void {
    this.#s
      .sql(
        `INSERT INTO withdraws(channel_id, participant, total_withdraw, expiry_timestamp, participant_signature,
           partner_signature, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(channel_id, participant) DO UPDATE SET total_withdraw = excluded.total_withdraw,
           expiry_timestamp = excluded.expiry_timestamp, participant_signature = excluded.participant_signature,
           partner_signature = excluded.partner_signature, created_at = excluded.created_at`,
      )
      .run(
        w.channelId.toString(),
        w.participant,
        w.totalWithdraw.toString(),
        w.expiryTimestamp.toString(),
        w.participantSignature,
        w.partnerSignature,
        w.createdAtMs,
      );
  }

  getWithdraw(channelId: bigint, participant: string): PendingWithdraw | null {
    const row: unknown = this.#s
      .sql("SELECT * FROM withdraws WHERE channel_id = ? AND lower(participant) = lower(?)")
      .get(channelId.toString(), participant);
    return row === undefined ? null : toWithdraw(row);
  }

  deleteWithdraw(channelId: bigint, participant: string): void {
    this.#s
      .sql("DELETE FROM withdraws WHERE channel_id = ? AND lower(participant) = lower(?)")
      .run(channelId.toString(), participant);
  }

  insertBalanceProof(
    signer: string,
    signed: SignedBalanceProof,
    extra: {
      locks?: readonly Lock[];
      status?: ProofStatus;
      message?: Uint8Array | null;
      createdAtMs?: number;
    },
  ): void {
    const p: BalanceProof = signed.proof;
    const locks = extra.locks && extra.locks.length > 0 ? Buffer.from(packLocks(extra.locks)) : null;
    this.#s
      .sql(
        `INSERT OR IGNORE INTO balance_proofs(channel_id, signer, nonce, chain_id, hub, transferred_amount, locked_amount,
           locks_root, signature, pq_signature, created_at, locks, status, message)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
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
        extra.createdAtMs ?? Date.now(),
        locks,
        extra.status ?? "acked",
        extra.message ? Buffer.from(extra.message) : null,
      );
  }

  setProofStatus(channelId: bigint, signer: string, nonce: bigint, status: ProofStatus): void {
    this.#s
      .sql("UPDATE balance_proofs SET status = ? WHERE channel_id = ? AND signer = ? AND nonce = ?")
      .run(status, channelId.toString(), signer, Number(nonce));
  }

  setProofPqSignature(channelId: bigint, signer: string, nonce: bigint, pqSignature: Uint8Array): void {
    this.#s
      .sql("UPDATE balance_proofs SET pq_signature = ? WHERE channel_id = ? AND signer = ? AND nonce = ?")
      .run(Buffer.from(pqSignature), channelId.toString(), signer, Number(nonce));
  }

  latestEvidencedProof(channelId: bigint, signer: string, status?: ProofStatus): StoredProof | null {
    const row: unknown = this.#s
      .sql(
        `SELECT * FROM balance_proofs WHERE channel_id = ? AND signer = ? AND length(pq_signature) > 0
           AND (? IS NULL OR status = ?) ORDER BY nonce DESC LIMIT 1`,
      )
      .get(channelId.toString(), signer, status ?? null, status ?? null);
    return row === undefined ? null : toStoredProof(row);
  }

  latestStoredProof(channelId: bigint, signer: string, status?: ProofStatus): StoredProof | null {
    const row: unknown = status
      ? this.#s
          .sql(
            "SELECT * FROM balance_proofs WHERE channel_id = ? AND signer = ? AND status = ? ORDER BY nonce DESC LIMIT 1",
          )
          .get(channelId.toString(), signer, status)
      : this.#s
          .sql("SELECT * FROM balance_proofs WHERE channel_id = ? AND signer = ? ORDER BY nonce DESC LIMIT 1")
          .get(channelId.toString(), signer);
    return row === undefined ? null : toStoredProof(row);
  }

  pendingProofs(channelId: bigint, signer: string): StoredProof[] {
    return this.#s
      .sql(
        "SELECT * FROM balance_proofs WHERE channel_id = ? AND signer = ? AND status = 'pending' ORDER BY nonce",
      )
      .all(channelId.toString(), signer)
      .map(toStoredProof);
  }

  storedProofAt(channelId: bigint, signer: string, nonce: bigint): StoredProof | null {
    const row: unknown = this.#s
      .sql("SELECT * FROM balance_proofs WHERE channel_id = ? AND signer = ? AND nonce = ?")
      .get(channelId.toString(), signer, Number(nonce));
    return row === undefined ? null : toStoredProof(row);
  }

  storedProofByLocksRoot(channelId: bigint, signer: string, locksRoot: string): StoredProof | null {
    const row: unknown = this.#s
      .sql(
        "SELECT * FROM balance_proofs WHERE channel_id = ? AND signer = ? AND lower(locks_root) = lower(?) ORDER BY nonce DESC LIMIT 1",
      )
      .get(channelId.toString(), signer, locksRoot);
    return row === undefined ? null : toStoredProof(row);
  }
}
