/**
 * What the channel layer and the chain tell the payments layer about transfers, applied to the stored
 * transfers (node/payments/transfer-book.ts) through the pure state machines of protocol/transfers.ts: a
 * lock received (a new mediator or target), a lock unlocked or expired by the payer, a secret revealed on
 * chain, and the per-payment requests of peers (RevealSecret, SecretRequest, TransferFailed, alone or in a
 * MessageBatch). Each handler writes synchronously (in the caller's transaction when there is one) and
 * starts the outboxes it changed once that is committed.
 */
import {
  QrwpError,
  initiatorSecretFor,
  isQrwpError,
  initiatorStep,
  mediatorStart,
  mediatorStep,
  secretHashOf,
  targetStart,
  targetStep,
  type BatchableRequest,
  type ChannelMessage,
  type FeeSchedule,
  type InitiatorState,
  type Lock,
  type LockTiming,
  type LockedTransfer,
  type MediatorState,
  type TargetState,
  type TransferAction,
  type TransferDescription,
  type TransferState,
} from "../../protocol/index.js";
import { eqAddr, type BatchOutcome, type ChannelService } from "../channels/service.js";
import type { RemotePeer } from "../../host/session-transport.js";
import type { NodeStore } from "../store/store.js";
import type { TransferBook, TransferDoc } from "./transfer-book.js";

export interface TransferEventsInit {
  book: TransferBook;
  store: NodeStore;
  channels: ChannelService;
  /** Our address (EIP-55). */
  self: string;
  timing: LockTiming;
  fees: FeeSchedule;
  /** Runs a transfer's outbox (after the write that changed it is committed). */
  drain: (id: string) => void;
}

/** See the module doc. */
export class TransferEvents {
  readonly #book: TransferBook;
  readonly #store: NodeStore;
  readonly #channels: ChannelService;
  readonly #self: string;
  readonly #timing: LockTiming;
  readonly #fees: FeeSchedule;
  readonly #drain: (id: string) => void;

  constructor(init: TransferEventsInit) {
    this.#book = init.book;
    this.#store = init.store;
    this.#channels = init.channels;
    this.#self = init.self;
    this.#timing = init.timing;
    this.#fees = init.fees;
    this.#drain = init.drain;
  }

  #now(): bigint {
    return this.#channels.nowSeconds();
  }

  /**
   * A secret was registered in the SecretRegistry: every initiator and mediator waiting for it uses it
   * (Raiden's ContractReceiveSecretReveal), so a downstream that went on-chain is still paid through.
   */
  secretRevealedOnChain(secret: string): void {
    const secretHash = secretHashOf(secret);
    const matched: string[] = [];
    this.#store.transaction(() => {
      for (const t of this.#book.byHash(secretHash)) {
        if (t.done) continue;
        const m = (t.state as TransferDoc).machine;
        if (m.role === "initiator") {
          this.#book.step(t.id, (s) =>
            initiatorStep(s as InitiatorState, { type: "RevealSecret", from: "chain", secret, secretHash }),
          );
        } else if (m.role === "mediator") {
          this.#book.step(t.id, (s) =>
            mediatorStep(
              s as MediatorState,
              { type: "RevealSecret", from: "chain", secret, secretHash },
              this.#self,
              this.#timing,
            ),
          );
        } else continue;
        matched.push(t.id);
      }
      if (matched.length > 0) this.#store.putSecret(secretHash, secret);
    });
    for (const id of matched) this.#drain(id);
  }

  /**
   * The payer's LockedTransfer `msg` was accepted on `channel` (inside the update's transaction): starts a
   * target (we are `msg.target`; id `t:<secretHash>:<channelId>`) or a mediator (`m:…`) transfer, once.
   * @returns what to run after the commit (the transfer's outbox).
   */
  lockReceived(
    msg: LockedTransfer,
    channel: { channelId: bigint; partner: string; token: string },
  ): () => void {
    const payer = { channelId: channel.channelId, partner: channel.partner, lock: msg.lock };
    const transfer: TransferDescription = {
      paymentId: msg.paymentId,
      initiator: msg.initiator,
      target: msg.target,
      secretHash: msg.lock.secretHash.toLowerCase(),
      route: msg.route,
      initiatorMultiaddrs: msg.initiatorMultiaddrs,
    };
    const now = this.#now();
    let id: string;
    let result: { state: TransferState; actions: TransferAction[] };
    if (eqAddr(msg.target, this.#self)) {
      id = `t:${transfer.secretHash}:${channel.channelId}`;
      const invoice = this.#store.getInvoice(transfer.secretHash);
      const usable =
        invoice &&
        invoice.status === "open" &&
        Date.now() <= invoice.expiresAtMs &&
        eqAddr(invoice.token, channel.token)
          ? { secret: invoice.secret, amount: invoice.amount }
          : null;
      result = targetStart({
        self: this.#self,
        transfer,
        payer,
        invoice: usable,
        timing: this.#timing,
        nowSeconds: now,
      });
      if (usable) this.#store.putSecret(transfer.secretHash, usable.secret);
    } else {
      id = `m:${transfer.secretHash}:${channel.channelId}`;
      const index = msg.route.findIndex((h) => eqAddr(h.address, this.#self));
      const nextAddress = index >= 0 ? msg.route[index + 1]?.address : undefined;
      const next = nextAddress ? this.#channels.openChannelWith(nextAddress, channel.token) : null;
      result = mediatorStart({
        self: this.#self,
        transfer,
        payer,
        next: { channelId: next?.channelId ?? null, distributable: next?.ourBalance ?? 0n, online: true },
        fees: this.#fees,
        timing: this.#timing,
        nowSeconds: now,
      });
    }
    if (this.#book.record(id)) return () => this.#drain(id);
    this.#book.put(id, result.state, result.actions);
    return () => this.#drain(id);
  }

  /**
   * The payer unlocked its lock for `secretHash` on `channelId` with `secret` (inside the update's
   * transaction): the mediator or target transfer learns it is paid. @returns what to run after the commit.
   */
  unlocked(channelId: bigint, secretHash: string, secret: string): () => void {
    const ids = [`m:${secretHash}:${channelId}`, `t:${secretHash}:${channelId}`];
    for (const id of ids) {
      const doc = this.#book.doc(id);
      if (!doc) continue;
      if (doc.machine.role === "target") {
        this.#book.step(id, (m) =>
          targetStep({ ...(m as TargetState), secret }, { type: "Unlocked" }, this.#self, this.#timing),
        );
      } else {
        this.#book.step(id, (m) =>
          mediatorStep(m as MediatorState, { type: "Unlocked" }, this.#self, this.#timing),
        );
      }
      return () => this.#drain(id);
    }
    return () => undefined;
  }

  /**
   * The payer removed its lock for `secretHash` on `channelId` (LockExpired, inside the update's transaction).
   * @returns what to run after the commit.
   */
  lockExpired(channelId: bigint, secretHash: string): () => void {
    for (const id of [`m:${secretHash}:${channelId}`, `t:${secretHash}:${channelId}`]) {
      const doc = this.#book.doc(id);
      if (!doc) continue;
      this.#book.step(id, (m) =>
        m.role === "target"
          ? targetStep(m, { type: "LockExpiredReceived" }, this.#self, this.#timing)
          : mediatorStep(m as MediatorState, { type: "LockExpiredReceived" }, this.#self, this.#timing),
      );
      return () => this.#drain(id);
    }
    return () => undefined;
  }

  /**
   * May the payer remove its `lock` on `channelId` before we know the secret: once expired (`now`, unix
   * seconds, at or past `lock.expiration`), or early when we declined it and our own outgoing lock for the
   * same hash is gone (else a colluding payee could still claim it).
   */
  mayRemoveLock(channelId: bigint, lock: Lock, now: bigint): boolean {
    if (now >= lock.expiration) return true;
    const m = this.#book.doc(`m:${lock.secretHash}:${channelId}`)?.machine as MediatorState | undefined;
    // Early removal only once our own outgoing lock is gone: else a colluding payee could still claim it.
    if (m && m.payerStatus === "declined") {
      return !m.payee || this.#channels.ourLock(m.payee.channelId, lock.secretHash) === undefined;
    }
    const t = this.#book.doc(`t:${lock.secretHash}:${channelId}`)?.machine as TargetState | undefined;
    return t?.status === "declined";
  }

  /** A RevealSecret / SecretRequest / TransferFailed from a peer (see {@link #handleMessage}). */
  request(from: RemotePeer, body: ChannelMessage): Promise<ChannelMessage> {
    try {
      const { reply, drain } = this.#handleMessage(from, body);
      for (const id of drain) this.#drain(id);
      return Promise.resolve(reply);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /**
   * The messages of a MessageBatch in order, in one store transaction with a savepoint each: a refused
   * message's writes are undone alone, and the pages the others touch are written once per batch.
   */
  requestBatch(from: RemotePeer, messages: BatchableRequest[]): BatchOutcome[] {
    const outcomes: BatchOutcome[] = [];
    const drain: string[] = [];
    this.#store.transaction(() => {
      for (const message of messages) {
        try {
          const r = this.#store.transaction(() => this.#handleMessage(from, message));
          outcomes.push({ reply: r.reply });
          drain.push(...r.drain);
        } catch (error) {
          // A refusal (coded) is this message's answer; anything else (a store failure, after which SQLite
          // may have rolled back the whole transaction) fails the whole batch, undone in memory too.
          if (!isQrwpError(error) || error.code === "INTERNAL") throw error;
          outcomes.push({ error });
        }
      }
    });
    for (const id of drain) this.#drain(id);
    return outcomes;
  }

  /**
   * Applies one request to the transfers it concerns (synchronously: its writes land in the caller's
   * transaction when there is one) and says which transfers' outboxes to run once they are committed.
   * @throws QrwpError PAYMENT_NOT_FOUND | INVALID_MESSAGE (nothing changed)
   */
  #handleMessage(from: RemotePeer, body: ChannelMessage): { reply: ChannelMessage; drain: string[] } {
    switch (body.type) {
      case "RevealSecret": {
        const secretHash = secretHashOf(body.secret);
        const matched: string[] = [];
        this.#store.transaction(() => {
          for (const t of this.#book.byHash(secretHash)) {
            const m = (t.state as TransferDoc).machine;
            if (m.role === "initiator" && eqAddr(m.out.partner, from.address)) {
              this.#book.step(t.id, (s) =>
                initiatorStep(s as InitiatorState, {
                  type: "RevealSecret",
                  from: from.address,
                  secret: body.secret,
                  secretHash,
                }),
              );
              matched.push(t.id);
            } else if (m.role === "mediator" && m.payee && eqAddr(m.payee.partner, from.address)) {
              this.#book.step(t.id, (s) =>
                mediatorStep(
                  s as MediatorState,
                  { type: "RevealSecret", from: from.address, secret: body.secret, secretHash },
                  this.#self,
                  this.#timing,
                ),
              );
              matched.push(t.id);
            }
          }
          if (matched.length > 0) this.#store.putSecret(secretHash, body.secret);
        });
        if (matched.length === 0) {
          throw new QrwpError("PAYMENT_NOT_FOUND", "no transfer of ours waits for this secret", {
            field: "secret",
          });
        }
        return { reply: { type: "Ok" }, drain: matched };
      }
      case "SecretRequest": {
        for (const t of this.#book.byHash(body.secretHash.toLowerCase())) {
          const m = (t.state as TransferDoc).machine;
          if (m.role !== "initiator") continue;
          const secret = initiatorSecretFor(m, {
            type: "SecretRequest",
            from: from.address,
            amount: body.amount,
            expiration: body.expiration,
          });
          if (secret) return { reply: { type: "RevealSecret", secret }, drain: [] };
        }
        throw new QrwpError("PAYMENT_NOT_FOUND", "no pending payment of ours matches this request", {
          field: "secretHash",
        });
      }
      case "TransferFailed": {
        const reason = { code: body.code, message: body.message, failedAt: body.failedAt };
        for (const t of this.#book.byHash(body.secretHash.toLowerCase())) {
          const m = (t.state as TransferDoc).machine;
          if (m.role === "initiator" && eqAddr(m.out.partner, from.address) && !t.done) {
            this.#book.step(t.id, (s) =>
              initiatorStep(s as InitiatorState, { type: "TransferFailed", from: from.address, reason }),
            );
            return { reply: { type: "Ok" }, drain: [t.id] };
          }
          if (m.role === "mediator" && m.payee && eqAddr(m.payee.partner, from.address) && !t.done) {
            this.#book.step(t.id, (s) =>
              mediatorStep(
                s as MediatorState,
                { type: "TransferFailed", from: from.address, reason },
                this.#self,
                this.#timing,
              ),
            );
            return { reply: { type: "Ok" }, drain: [t.id] };
          }
        }
        throw new QrwpError("PAYMENT_NOT_FOUND", "no transfer to this peer with this secret hash", {
          field: "secretHash",
        });
      }
      default:
        throw new QrwpError("INVALID_MESSAGE", `unexpected request ${body.type}`, { field: "type" });
    }
  }
}
