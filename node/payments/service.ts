/**
 * Multi-hop payments: the `PaymentService` pays through the network (finds routes through a
 * {@link RouteProvider}, starts attempts, retries on other routes), keeps invoices and reports routed
 * payments as events. It is built from:
 *
 * - transfer-book.ts: each transfer's state machine (protocol/transfers.ts) and outbox, stored together;
 * - outbox.ts: runs the outboxes (one action at a time per transfer, re-run after a crash; actions are
 *   idempotent at the channel layer);
 * - transfer-events.ts: what the channel layer, the chain and peers report, applied to the transfers;
 * - message-batcher.ts: SecretRequest, RevealSecret and TransferFailed leave in per-peer batches.
 *
 * A role's new state and the actions it produced are stored together before any action runs; every
 * balance-proof change goes through the channel's serialized queue (ChannelService).
 */
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { getAddress } from "ethers";
import type { Logger } from "pino";
import {
  QrwpError,
  assertArgument,
  initiatorStart,
  initiatorStep,
  mediatorStep,
  normalizeAddress,
  randomSecret,
  secretHashOf,
  targetStep,
  type FeeSchedule,
  type InitiatorState,
  type LockTiming,
  type TargetState,
  type TransferDescription,
} from "../../protocol/index.js";
import { eqAddr, type ChannelService, type TransferHooks } from "../channels/service.js";
import { errorFields } from "../../host/session-transport.js";
import type {
  InvoiceRecord,
  MediatedPaymentRecord,
  NodeStore,
  PaymentAttempt,
  PaymentRecord,
} from "../store/store.js";
import { assertSamePayment } from "../payment-retry.js";
import { MessageBatcher } from "./message-batcher.js";
import { TransferOutbox } from "./outbox.js";
import { TransferBook, type TransferDoc } from "./transfer-book.js";
import { TransferEvents } from "./transfer-events.js";
import type {
  MediatedPayParams,
  PaymentEventMap,
  PaymentServiceInit,
  RouteCandidate,
  RouteProvider,
  RoutedPaymentEvent,
} from "./types.js";

export type {
  MediatedPayParams,
  PaymentEventMap,
  PaymentServiceInit,
  RouteCandidate,
  RouteProvider,
  RouteQuery,
  RoutedPaymentEvent,
} from "./types.js";

const MAX_ATTEMPTS = 8;

/** How an attempt ended, for the `pay` call waiting on it: the payment record as stored then. */
interface AttemptEnd {
  ok: boolean;
  record: MediatedPaymentRecord | null;
}
/** Unpaid invoices are deleted this long after their expiry (ms). */
export const INVOICE_RETENTION_AFTER_EXPIRY_MS = 60_000;
/** How often expired unpaid invoices are swept (ms, on the service's clock). */
export const INVOICE_SWEEP_INTERVAL_MS = 60_000;
/**
 * Finished transfers (a role's final state, nothing left to run) are deleted this long after their last
 * write (ms): by then every late re-delivery about them is long over (locks expire within the settle
 * timeout, 1 h by default). The payment records, secrets (proofs of payment) and invoices stay. Without it
 * each routed payment left ~1.4 kB per hop in the `transfers` table for good.
 */
export const DONE_TRANSFER_RETENTION_MS = 24 * 3600_000;

export class PaymentService {
  readonly #store: NodeStore;
  readonly #channels: ChannelService;
  /** SecretRequest, RevealSecret and TransferFailed leave through it, batched per peer. */
  readonly #batcher: MessageBatcher;
  readonly #self: string;
  readonly #log: Logger;
  readonly #timing: LockTiming;
  readonly #fees: FeeSchedule;
  readonly #routes: RouteProvider;
  readonly #listenAddrs: () => string[];
  readonly #tickMs: number;
  readonly #waiters = new Map<string, (end: AttemptEnd) => void>();
  /** Transfers (state + outbox), in memory while open. */
  readonly #book: TransferBook;
  /** Runs the transfers' outboxes. */
  readonly #outbox: TransferOutbox;
  /** Applies what the channel layer, the chain and peers report to the transfers. */
  readonly #events: TransferEvents;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #lastInvoiceSweepMs = 0;
  /** Routed payments created, completed, failed or received (see {@link PaymentEventMap}). */
  readonly events = new EventEmitter<PaymentEventMap>();

  constructor(init: PaymentServiceInit) {
    this.#store = init.store;
    this.#channels = init.channels;
    this.#batcher = new MessageBatcher(init.transport);
    this.#self = getAddress(init.address);
    this.#log = init.log;
    this.#timing = init.timing;
    this.#fees = init.fees;
    this.#routes = init.routes;
    this.#listenAddrs = init.listenAddrs;
    this.#tickMs = init.tickMs ?? 1000;
    this.#book = new TransferBook(init.store);
    this.#outbox = new TransferOutbox({
      book: this.#book,
      store: init.store,
      channels: init.channels,
      batcher: this.#batcher,
      hub: init.hub,
      self: this.#self,
      timing: init.timing,
      log: init.log,
      listener: {
        attemptFinished: (id, machine, ok, secret, failure) =>
          this.#finishAttempt(id, machine, ok, secret, failure),
        received: (machine, amount) => this.#received(machine, amount),
      },
    });
    this.#events = new TransferEvents({
      book: this.#book,
      store: init.store,
      channels: init.channels,
      self: this.#self,
      timing: init.timing,
      fees: init.fees,
      drain: (id) => this.#drain(id),
    });
  }

  /**
   * A secret was registered in the SecretRegistry: every initiator and mediator waiting for it uses it
   * (see {@link TransferEvents.secretRevealedOnChain}).
   */
  secretRevealedOnChain(secret: string): void {
    this.#events.secretRevealedOnChain(secret);
  }

  /** The node's fee schedule and lock timing (published in channel updates). */
  get policy(): { fees: FeeSchedule; timing: LockTiming } {
    return { fees: this.#fees, timing: this.#timing };
  }

  /** Hooks the channel layer calls; install with `channels.setTransferHooks(payments.hooks())`. */
  hooks(): TransferHooks {
    return {
      lockReceived: (msg, channel) => this.#events.lockReceived(msg, channel),
      unlockReceived: (channelId, _partner, secretHash, secret) =>
        this.#events.unlocked(channelId, secretHash, secret),
      lockExpiredReceived: (channelId, _partner, secretHash) =>
        this.#events.lockExpired(channelId, secretHash),
      mayRemoveLock: (channelId, _partner, lock, now) => this.#events.mayRemoveLock(channelId, lock, now),
      request: (from, body) => this.#events.request(from, body),
      requestBatch: (from, messages) => Promise.resolve(this.#events.requestBatch(from, messages)),
    };
  }

  /** Resumes stored transfers and starts the clock. */
  start(): void {
    for (const id of this.#book.load()) this.#drain(id);
    this.#schedule();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#outbox.stop();
  }

  /** Runs a transfer's outbox (see {@link TransferOutbox.drain}). */
  #drain(id: string): void {
    this.#outbox.drain(id);
  }

  #now(): bigint {
    return this.#channels.nowSeconds();
  }

  // ---- API ----

  /**
   * Pays `amount` to `target` through the network (spontaneous, or an invoice with `paymentHash`): finds
   * routes, sends the LockedTransfer, retries on other routes after a definitive failure, until success,
   * no route is left or `timeoutSeconds` passed (then the record is returned as it stands: `pending` while a
   * lock is outstanding, it completes or fails on its own; poll it by id).
   * A retry with the same `paymentId` and the same target, token and amount (and `paymentHash`, when given)
   * returns the existing payment as it stands and sends nothing new.
   * @throws QrwpError INVALID_ARGUMENT | CONFLICT (paymentId used by a direct payment, or by a routed one with
   *   another target, token, amount or paymentHash: `details.field` names it)
   */
  async pay(params: MediatedPayParams): Promise<MediatedPaymentRecord> {
    const target = normalizeAddress(params.target, "target");
    const token = normalizeAddress(params.token, "token");
    assertArgument(params.amount > 0n, "amount must be > 0", "amount", params.amount);
    assertArgument(!eqAddr(target, this.#self), "cannot pay ourselves", "target", target);
    if (params.maxFee !== undefined) assertArgument(params.maxFee >= 0n, "maxFee must be >= 0", "maxFee");
    const timeoutSeconds = params.timeoutSeconds ?? 60;
    assertArgument(
      Number.isInteger(timeoutSeconds) && timeoutSeconds > 0 && timeoutSeconds <= 86_400,
      "timeoutSeconds must be 1..86400",
      "timeoutSeconds",
      timeoutSeconds,
    );
    // A generated id (random UUID) is new; a given one may be a retry.
    const paymentId = params.paymentId ?? randomUUID();
    const use = params.paymentId === undefined ? null : this.#store.outgoingIdUse(paymentId);
    if (use === "routed") {
      const existing = this.#store.getMediatedPayment(paymentId) as MediatedPaymentRecord;
      return this.#payAgain(existing, target, token, params);
    }
    if (use === "direct") {
      throw new QrwpError("CONFLICT", `payment ${paymentId} already exists`, { field: "paymentId" });
    }
    const secret = params.paymentHash ? null : randomSecret();
    const secretHash = params.paymentHash ? params.paymentHash.toLowerCase() : secretHashOf(secret as string);
    const now = Date.now();
    const record: MediatedPaymentRecord = {
      paymentId,
      target,
      token,
      amount: params.amount,
      maxFee: params.maxFee ?? null,
      secretHash,
      secret,
      status: "pending",
      fee: 0n,
      attempts: [],
      errorCode: null,
      errorMessage: null,
      createdAtMs: now,
      completedAtMs: null,
      deadlineMs: now + timeoutSeconds * 1000,
    };
    // Stored with its first attempt (one transaction), or alone if no route is found.
    let stored = false;
    const excluded = new Set<string>();
    let lastFailure: { code: string; message: string } = {
      code: "NO_ROUTE",
      message: "no route to the target",
    };
    while (Date.now() < record.deadlineMs && record.attempts.length < MAX_ATTEMPTS && !this.#stopped) {
      const routes = this.#routes.findRoutes({
        source: this.#self,
        target,
        token,
        amount: params.amount,
        maxFee: params.maxFee ?? null,
        nowSeconds: this.#now(),
        finalExpiryDeltaSeconds: this.#timing.minFinalExpirySeconds + this.#timing.expiryDeltaSeconds,
        excludeChannels: excluded,
        k: 1,
      });
      const route = routes[0];
      if (!route) break;
      const { outcome, updated } = await this.#attempt(record, route, secret, !stored);
      stored = true;
      // The record as the attempt's end stored it (read again only when it ended otherwise, e.g. a timeout).
      const now = updated ?? (this.#store.getMediatedPayment(paymentId) as MediatedPaymentRecord);
      if (outcome === "succeeded" || outcome === "pending") return now;
      const failed = now.attempts.at(-1);
      lastFailure = {
        code: failed?.errorCode ?? "PEER_REJECTED",
        message: failed?.errorMessage ?? "attempt failed",
      };
      record.attempts = now.attempts;
      const hopIndex = route.hops.findIndex((h) => eqAddr(h.address, failed?.failedAt ?? ""));
      if (failed?.failedAt && eqAddr(failed.failedAt, target) && hopIndex === route.hops.length - 1) break; // target refused
      // The failing channel is the one the failing node should have forwarded over (or our first hop).
      const bad = hopIndex >= 0 ? route.hops[hopIndex + 1] : route.hops[0];
      const from = hopIndex >= 0 ? (route.hops[hopIndex]?.address ?? this.#self) : this.#self;
      if (bad) {
        excluded.add(bad.channelId.toString());
        // Only a liquidity failure teaches the scorer something about the channel (offline is not liquidity).
        if (failed?.errorCode === "INSUFFICIENT_CAPACITY")
          this.#routes.reportFailure?.(bad.channelId, from, bad.amount);
      } else {
        break;
      }
    }
    if (!stored) {
      this.#store.insertMediatedPayment(record);
      this.#emit({ direction: "outgoing", payment: { ...record } });
    }
    const final = this.#store.getMediatedPayment(paymentId) as MediatedPaymentRecord;
    if (final.status === "pending" && !final.attempts.some((a) => a.status === "pending")) {
      final.status = "failed";
      final.errorCode = lastFailure.code;
      final.errorMessage = lastFailure.message;
      final.completedAtMs = Date.now();
      this.#store.updateMediatedPayment(final);
      this.#emit({ direction: "outgoing", payment: { ...final, attempts: [...final.attempts] } });
    }
    return final;
  }

  /** A retry of the routed payment `existing`: CONFLICT naming the first differing field, else it as it stands. */
  #payAgain(
    existing: MediatedPaymentRecord,
    target: string,
    token: string,
    params: MediatedPayParams,
  ): MediatedPaymentRecord {
    assertSamePayment(existing.paymentId, [
      ["target", eqAddr(existing.target, target)],
      ["token", eqAddr(existing.token, token)],
      ["amount", existing.amount === params.amount],
      [
        "paymentHash",
        params.paymentHash === undefined || params.paymentHash.toLowerCase() === existing.secretHash,
      ],
    ]);
    return existing;
  }

  /** A multi-hop payment by id, or null. */
  getPayment(paymentId: string): MediatedPaymentRecord | null {
    return this.#store.getMediatedPayment(paymentId);
  }

  /** Routes to `target` for `amount` (nothing is sent). */
  findRoutes(target: string, token: string, amount: bigint, maxFee: bigint | null, k = 3): RouteCandidate[] {
    return this.#routes.findRoutes({
      source: this.#self,
      target: normalizeAddress(target, "target"),
      token: normalizeAddress(token, "token"),
      amount,
      maxFee,
      nowSeconds: this.#now(),
      finalExpiryDeltaSeconds: this.#timing.minFinalExpirySeconds + this.#timing.expiryDeltaSeconds,
      excludeChannels: new Set(),
      k,
    });
  }

  /**
   * Creates an invoice: a fresh secret whose hash the payer locks to; we reveal it when a lock of at least
   * `amount` arrives before `expirySeconds`. The insert is not fsync'd (x402 mints one per unpaid 402): an
   * unpaid invoice lost in a machine crash only makes a payment to it fail cleanly (we cannot reveal a secret
   * we do not have, so the payer's lock expires back to it); it becomes durable with the node's next durable
   * commit (WAL order), at the latest the one that accepts the lock paying it.
   */
  createInvoice(params: {
    token: string;
    amount: bigint;
    description?: string;
    expirySeconds?: number;
  }): InvoiceRecord {
    assertArgument(params.amount > 0n, "amount must be > 0", "amount", params.amount);
    const expirySeconds = params.expirySeconds ?? 3600;
    assertArgument(
      Number.isInteger(expirySeconds) && expirySeconds > 0 && expirySeconds <= 30 * 86_400,
      "expirySeconds must be 1..2592000",
      "expirySeconds",
      expirySeconds,
    );
    const secret = randomSecret();
    const now = Date.now();
    const invoice: InvoiceRecord = {
      paymentHash: secretHashOf(secret),
      secret,
      token: normalizeAddress(params.token, "token"),
      amount: params.amount,
      description: params.description ?? "",
      status: "open",
      paidAmount: 0n,
      createdAtMs: now,
      expiresAtMs: now + expirySeconds * 1000,
      paidAtMs: null,
    };
    this.#store.transaction(() => this.#store.insertInvoice(invoice), { durable: false });
    return invoice;
  }

  /**
   * One invoice; an open invoice past its expiry shows `expired`, and an unpaid one is deleted a minute after
   * its expiry ({@link sweepExpiredInvoices}), after which it is NOT_FOUND.
   * @throws QrwpError NOT_FOUND (field "paymentHash")
   */
  getInvoice(paymentHash: string): InvoiceRecord {
    const invoice = this.#store.getInvoice(paymentHash);
    if (!invoice)
      throw new QrwpError("NOT_FOUND", "no invoice with this payment hash", { field: "paymentHash" });
    if (invoice.status === "open" && Date.now() > invoice.expiresAtMs)
      return { ...invoice, status: "expired" };
    return invoice;
  }

  // ---- attempts ----

  /**
   * Starts an attempt over `route` and waits for its end (or the payment's deadline: "pending"). `isNew`: the
   * record is not stored yet and is inserted with the attempt. `updated`: the record as the attempt's end
   * stored it (null on "pending").
   */
  async #attempt(
    record: MediatedPaymentRecord,
    route: RouteCandidate,
    secret: string | null,
    isNew: boolean,
  ): Promise<{ outcome: "succeeded" | "failed" | "pending"; updated: MediatedPaymentRecord | null }> {
    const attemptIndex = record.attempts.length;
    const transfer: TransferDescription = {
      paymentId: record.paymentId,
      initiator: this.#self,
      target: record.target,
      secretHash: record.secretHash,
      route: route.hops.map((h) => ({ address: h.address, amount: h.amount, expiration: h.expiration })),
      initiatorMultiaddrs: this.#listenAddrs(),
    };
    const first = route.hops[0];
    if (!first) throw new QrwpError("INTERNAL", "empty route");
    const attempt: PaymentAttempt = {
      route: route.hops.map((h) => ({
        address: h.address,
        channelId: h.channelId.toString(),
        amount: h.amount.toString(),
        expiration: h.expiration.toString(),
        fee: h.fee.toString(),
      })),
      fee: route.fee.toString(),
      status: "pending",
    };
    record.attempts = [...record.attempts, attempt];
    record.fee = route.fee;
    const id = `i:${record.paymentId}:${attemptIndex}`;
    const { state, actions } = initiatorStart(transfer, secret, first.channelId);
    const done = new Promise<AttemptEnd>((resolve) => this.#waiters.set(id, resolve));
    this.#store.transaction(() => {
      if (isNew) this.#store.insertMediatedPayment(record);
      else this.#store.updateMediatedPayment(record);
      this.#book.put(id, state, actions);
    });
    if (isNew) this.#emit({ direction: "outgoing", payment: { ...record, attempts: [...record.attempts] } });
    this.#log.info(
      {
        paymentId: record.paymentId,
        attempt: attemptIndex,
        hops: route.hops.length,
        fee: route.fee.toString(),
      },
      "payment attempt",
    );
    this.#drain(id);
    const remaining = Math.max(1, record.deadlineMs - Date.now()) + 2000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), remaining);
    });
    const outcome = await Promise.race([done, timeout]);
    clearTimeout(timer);
    this.#waiters.delete(id);
    if (outcome === null) return { outcome: "pending", updated: null };
    return { outcome: outcome.ok ? "succeeded" : "failed", updated: outcome.record };
  }

  #finishAttempt(
    id: string,
    machine: InitiatorState,
    ok: boolean,
    secret: string | null,
    failure?: { code: string; message: string; failedAt: string },
  ): void {
    const record = this.#store.getMediatedPayment(machine.transfer.paymentId);
    if (record) {
      const index = Number(id.split(":").at(-1));
      const attempt = record.attempts[index];
      if (attempt && attempt.status === "pending") {
        attempt.status = ok ? "succeeded" : "failed";
        if (failure) {
          attempt.errorCode = failure.code;
          attempt.errorMessage = failure.message;
          attempt.failedAt = failure.failedAt;
        }
      }
      if (ok) {
        record.status = "completed";
        record.secret = secret;
        record.fee = BigInt(attempt?.fee ?? "0");
        record.completedAtMs = Date.now();
        record.errorCode = null;
        record.errorMessage = null;
        // Each hop's channel was forwarded over by the previous hop (by us for the first).
        (attempt?.route ?? []).forEach((hop, i, route) => {
          const from = i === 0 ? this.#self : (route[i - 1]?.address ?? this.#self);
          this.#routes.reportSuccess?.(BigInt(hop.channelId), from, BigInt(hop.amount));
        });
      }
      this.#store.updateMediatedPayment(record);
      if (ok) this.#emit({ direction: "outgoing", payment: record });
    }
    // A copy: the record emitted above belongs to the listeners.
    this.#waiters.get(id)?.({ ok, record: record ? { ...record, attempts: [...record.attempts] } : null });
  }

  #received(machine: TargetState, amount: bigint): void {
    const invoice = this.#store.getInvoice(machine.transfer.secretHash);
    if (invoice) this.#store.markInvoicePaid(invoice.paymentHash, amount);
    const now = Date.now();
    const payment: PaymentRecord = {
      paymentId: machine.transfer.paymentId,
      direction: "incoming",
      channelId: machine.payer.channelId,
      partner: machine.payer.partner,
      token: this.#channels.channelSummary(machine.payer.channelId).token,
      amount,
      nonce: 0n,
      status: "completed",
      errorCode: null,
      errorMessage: null,
      createdAtMs: now,
      completedAtMs: now,
    };
    try {
      this.#store.insertPayment(payment);
      this.#emit({ direction: "incoming", payment, paymentHash: machine.transfer.secretHash });
    } catch {
      // already recorded
    }
    this.#log.info({ paymentId: machine.transfer.paymentId, amount: amount.toString() }, "payment received");
  }

  /** Emits a payment event; a listener that throws is logged, never propagated. */
  #emit(event: RoutedPaymentEvent): void {
    try {
      this.events.emit("payment", event);
    } catch (err) {
      this.#log.warn({ err: errorFields(err) }, "payment event listener failed");
    }
  }

  // ---- clock ----

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      try {
        this.#tick();
      } finally {
        this.#schedule();
      }
    }, this.#tickMs);
    this.#timer.unref();
  }

  /**
   * Deletes every unpaid invoice whose expiry passed more than {@link INVOICE_RETENTION_AFTER_EXPIRY_MS} before
   * `nowMs` (one statement). From then on its hash is unknown: `getInvoice` is NOT_FOUND and a lock for it is
   * handled like one for an unknown or expired invoice. Runs once per {@link INVOICE_SWEEP_INTERVAL_MS} on the
   * clock; callable directly.
   * @returns how many invoices were deleted.
   */
  sweepExpiredInvoices(nowMs: number = Date.now()): number {
    const deleted = this.#store.deleteExpiredInvoices(nowMs - INVOICE_RETENTION_AFTER_EXPIRY_MS);
    if (deleted > 0) this.#log.info({ deleted }, "deleted expired unpaid invoices");
    return deleted;
  }

  /**
   * Deletes the finished transfers last written more than {@link DONE_TRANSFER_RETENTION_MS} before `nowMs`
   * (one statement; open transfers are never touched). Runs with the invoice sweep; callable directly.
   * @returns how many transfers were deleted.
   */
  sweepDoneTransfers(nowMs: number = Date.now()): number {
    const deleted = this.#store.deleteDoneTransfers(nowMs - DONE_TRANSFER_RETENTION_MS);
    if (deleted > 0) this.#log.debug({ deleted }, "deleted finished transfers");
    return deleted;
  }

  #tick(): void {
    if (Date.now() - this.#lastInvoiceSweepMs >= INVOICE_SWEEP_INTERVAL_MS) {
      this.#lastInvoiceSweepMs = Date.now();
      try {
        this.sweepExpiredInvoices();
      } catch (err) {
        this.#log.warn({ err: errorFields(err) }, "invoice sweep failed; will retry");
      }
      try {
        this.sweepDoneTransfers();
      } catch (err) {
        this.#log.warn({ err: errorFields(err) }, "transfer sweep failed; will retry");
      }
    }
    const now = this.#now();
    for (const t of this.#book.openTransfers()) {
      const doc = t.state as TransferDoc;
      const m = doc.machine;
      const stepped =
        m.role === "initiator"
          ? initiatorStep(m, { type: "Tick", nowSeconds: now })
          : m.role === "mediator"
            ? mediatorStep(m, { type: "Tick", nowSeconds: now }, this.#self, this.#timing)
            : targetStep(m, { type: "Tick", nowSeconds: now }, this.#self, this.#timing);
      if (stepped.actions.length > 0 || stepped.state !== m)
        this.#book.put(t.id, stepped.state, [...doc.outbox, ...stepped.actions]);
      if (stepped.actions.length > 0 || doc.outbox.length > 0) this.#drain(t.id);
    }
  }
}
