/**
 * Multi-hop payments: drives the pure initiator / mediator / target state machines of
 * protocol/transfers.ts on top of the channel layer (node/channels), finds routes through a
 * {@link RouteProvider}, retries on other routes, and keeps invoices.
 *
 * Rules this file keeps:
 * - A role's new state and the actions it produced are stored together (the transfer's "outbox") before any
 *   action runs; after a crash the outbox is run again. Actions are idempotent at the channel layer.
 * - One transfer's outbox runs one action at a time, in order. An action whose outcome is unknown (peer
 *   offline mid-request, chain error) stays in the outbox and is retried on the next tick; behind it, only
 *   SendUnlock, RegisterSecret and CloseChannel run meanwhile (they do not depend on that message).
 * - Every balance-proof change goes through the channel's serialized queue (ChannelService).
 */
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { getAddress } from "ethers";
import type { Logger } from "pino";
import {
  QrwpError,
  assertArgument,
  initiatorSecretFor,
  initiatorStart,
  initiatorStep,
  isQrwpError,
  isTransferDone,
  mediatorStart,
  mediatorStep,
  normalizeAddress,
  randomSecret,
  secretHashOf,
  targetStart,
  targetStep,
  type BatchableRequest,
  type ChannelMessage,
  type ErrorCode,
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
import type { PooledHubClient } from "../../chain/index.js";
import type { BatchOutcome, ChannelService, TransferHooks } from "../channels/service.js";
import type { SessionTransport, RemotePeer } from "../../host/session-transport.js";
import { errorFields } from "../../host/session-transport.js";
import type {
  InvoiceRecord,
  MediatedPaymentRecord,
  NodeStore,
  PaymentAttempt,
  PaymentRecord,
  TransferRecord,
} from "../store/store.js";
import { assertSamePayment } from "../payment-retry.js";
import { MessageBatcher } from "./message-batcher.js";

/** A route as the router proposes it: the lock each hop receives (the last hop is the target). */
export interface RouteCandidate {
  hops: { address: string; channelId: bigint; amount: bigint; expiration: bigint; fee: bigint }[];
  /** Total fees: first hop's amount minus the amount the target receives (token base units). */
  fee: bigint;
}

/** Query for {@link RouteProvider.findRoutes}. Amounts in token base units, times in unix seconds. */
export interface RouteQuery {
  source: string;
  target: string;
  token: string;
  amount: bigint;
  maxFee: bigint | null;
  nowSeconds: bigint;
  finalExpiryDeltaSeconds: number;
  excludeChannels: Set<string>;
  k: number;
}

/** Where routes come from (router/ behind it); results sorted best first. */
export interface RouteProvider {
  findRoutes(query: RouteQuery): RouteCandidate[];
  /** Tells the scorer a channel failed to forward `amount` (or succeeded). */
  reportFailure?(channelId: bigint, from: string, amount: bigint): void;
  reportSuccess?(channelId: bigint, from: string, amount: bigint): void;
}

export interface PaymentServiceInit {
  store: NodeStore;
  channels: ChannelService;
  transport: SessionTransport;
  hub: PooledHubClient;
  address: string;
  log: Logger;
  timing: LockTiming;
  fees: FeeSchedule;
  routes: RouteProvider;
  listenAddrs: () => string[];
  /** How often lock expiries and retries are checked (ms). Default 1000. */
  tickMs?: number;
}

/** What {@link PaymentService.pay} takes. */
export interface MediatedPayParams {
  target: string;
  token: string;
  /** What the target receives, token base units. */
  amount: bigint;
  /** Most the payer accepts to pay in fees (base units); default: no limit. */
  maxFee?: bigint;
  /** Give up starting new attempts after this many seconds (default 60). */
  timeoutSeconds?: number;
  paymentId?: string;
  /** Pay an invoice: the target holds the secret of this hash. Otherwise a spontaneous payment. */
  paymentHash?: string;
}

/**
 * A routed payment as {@link PaymentEventMap} reports it, after the write committed:
 * - `outgoing`: one of ours, when created (`pending`) and when it reached `completed` or `failed`;
 * - `incoming`: one paid to us (we were the target), once, when stored (`completed`); `paymentHash` is the
 *   lock's secret hash (an invoice's payment hash when it paid one; the invoice is `paid` by then).
 */
export type RoutedPaymentEvent =
  | { direction: "outgoing"; payment: MediatedPaymentRecord }
  | { direction: "incoming"; payment: PaymentRecord; paymentHash: string };

/** The payments layer's events (Node's typed EventEmitter); listeners must not throw (throws are logged). */
export interface PaymentEventMap {
  payment: [event: RoutedPaymentEvent];
}

/** Stored form of a transfer: the role's state and the actions still to run. */
interface TransferDoc {
  machine: TransferState;
  outbox: TransferAction[];
}

const eq = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();
const RETRYABLE: ReadonlySet<string> = new Set([
  "PEER_OFFLINE",
  "HANDSHAKE_FAILED",
  "TIMEOUT",
  "CHAIN_ERROR",
]);
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

export class PaymentService {
  readonly #store: NodeStore;
  readonly #channels: ChannelService;
  /** SecretRequest, RevealSecret and TransferFailed leave through it, batched per peer. */
  readonly #batcher: MessageBatcher;
  readonly #hub: PooledHubClient;
  readonly #self: string;
  readonly #log: Logger;
  readonly #timing: LockTiming;
  readonly #fees: FeeSchedule;
  readonly #routes: RouteProvider;
  readonly #listenAddrs: () => string[];
  readonly #tickMs: number;
  readonly #running = new Map<string, Promise<void>>();
  readonly #rerun = new Set<string>();
  readonly #failures = new Map<string, number>();
  readonly #waiters = new Map<string, (end: AttemptEnd) => void>();
  /**
   * Every transfer that is not done, as stored (loaded in {@link start}, kept by {@link #put}): the outbox
   * reads its state here instead of parsing the stored JSON at every step. The store stays the truth.
   */
  readonly #open = new Map<string, TransferRecord>();
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #lastInvoiceSweepMs = 0;
  /** Routed payments created, completed, failed or received (see {@link PaymentEventMap}). */
  readonly events = new EventEmitter<PaymentEventMap>();

  constructor(init: PaymentServiceInit) {
    this.#store = init.store;
    this.#channels = init.channels;
    this.#batcher = new MessageBatcher(init.transport);
    this.#hub = init.hub;
    this.#self = getAddress(init.address);
    this.#log = init.log;
    this.#timing = init.timing;
    this.#fees = init.fees;
    this.#routes = init.routes;
    this.#listenAddrs = init.listenAddrs;
    this.#tickMs = init.tickMs ?? 1000;
  }

  /** The node's fee schedule and lock timing (published in channel updates). */
  get policy(): { fees: FeeSchedule; timing: LockTiming } {
    return { fees: this.#fees, timing: this.#timing };
  }

  /** Hooks the channel layer calls; install with `channels.setTransferHooks(payments.hooks())`. */
  hooks(): TransferHooks {
    return {
      lockReceived: (msg, channel) => this.#onLockReceived(msg, channel),
      unlockReceived: (channelId, _partner, secretHash, secret) =>
        this.#onUnlocked(channelId, secretHash, secret),
      lockExpiredReceived: (channelId, _partner, secretHash) => this.#onLockExpired(channelId, secretHash),
      mayRemoveLock: (channelId, _partner, lock, now) => this.#mayRemoveLock(channelId, lock, now),
      request: (from, body) => this.#onRequest(from, body),
      requestBatch: (from, messages) => Promise.resolve(this.#onRequestBatch(from, messages)),
    };
  }

  /** Resumes stored transfers and starts the clock. */
  start(): void {
    for (const t of this.#store.openTransfers()) this.#open.set(t.id, t);
    for (const id of [...this.#open.keys()]) this.#drain(id);
    this.#schedule();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    await Promise.allSettled([...this.#running.values()]);
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
    assertArgument(!eq(target, this.#self), "cannot pay ourselves", "target", target);
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
      const hopIndex = route.hops.findIndex((h) => eq(h.address, failed?.failedAt ?? ""));
      if (failed?.failedAt && eq(failed.failedAt, target) && hopIndex === route.hops.length - 1) break; // target refused
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
      this.#emit({ direction: "outgoing", payment: final });
    }
    return this.#store.getMediatedPayment(paymentId) as MediatedPaymentRecord;
  }

  /** A retry of the routed payment `existing`: CONFLICT naming the first differing field, else it as it stands. */
  #payAgain(
    existing: MediatedPaymentRecord,
    target: string,
    token: string,
    params: MediatedPayParams,
  ): MediatedPaymentRecord {
    assertSamePayment(existing.paymentId, [
      ["target", eq(existing.target, target)],
      ["token", eq(existing.token, token)],
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
      this.#put(id, state, actions);
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

  // ---- transfer persistence and the outbox ----

  /**
   * Stores a transfer's state and outbox, and keeps them in {@link #open} while not done. Inside a
   * transaction that later rolls back, the copy is reloaded from the store after the rollback.
   */
  #put(id: string, machine: TransferState, outbox: TransferAction[]): void {
    const doc: TransferDoc = { machine, outbox };
    const t: TransferRecord = {
      id,
      role: machine.role,
      secretHash: machine.transfer.secretHash,
      paymentId: machine.transfer.paymentId,
      state: doc,
      done: isTransferDone(machine) && outbox.length === 0,
    };
    this.#store.putTransfer(t);
    this.#remember(t);
    this.#store.onRollback(() => {
      try {
        this.#remember(this.#store.getTransfer(id), id);
      } catch {
        this.#open.delete(id); // unreadable now: reads go to the store (and fail there, coded)
      }
    });
  }

  /** Keeps `t` in memory if it is open, else forgets `id`. */
  #remember(t: TransferRecord | null, id = t?.id): void {
    if (t && !t.done) this.#open.set(t.id, t);
    else if (id !== undefined) this.#open.delete(id);
  }

  /** A transfer by id: the in-memory copy of an open one, else the store (a done one). */
  #record(id: string): TransferRecord | null {
    return this.#open.get(id) ?? this.#store.getTransfer(id);
  }

  #doc(id: string): TransferDoc | null {
    const t = this.#record(id);
    return t ? (t.state as TransferDoc) : null;
  }

  /** Transfers with this secret hash, oldest first (ids from the store, open ones from memory). */
  #byHash(secretHash: string): TransferRecord[] {
    return this.#store
      .transferIdsByHash(secretHash)
      .map((id) => this.#record(id))
      .filter((t): t is TransferRecord => t !== null);
  }

  /** Applies an event to a stored transfer: new state + appended actions, stored atomically. */
  #step(
    id: string,
    fn: (machine: TransferState) => { state: TransferState; actions: TransferAction[] },
  ): void {
    const doc = this.#doc(id);
    if (!doc) return;
    const { state, actions } = fn(doc.machine);
    this.#put(id, state, [...doc.outbox, ...actions]);
  }

  /** Runs a transfer's outbox (one runner per transfer; a request during a run triggers another pass). */
  #drain(id: string): void {
    if (this.#running.has(id)) {
      this.#rerun.add(id);
      return;
    }
    const run = (async () => {
      do {
        this.#rerun.delete(id);
        await this.#runOutbox(id);
      } while (this.#rerun.has(id) && !this.#stopped);
    })()
      .catch((err: unknown) =>
        this.#log.warn({ transfer: id, err: errorFields(err) }, "transfer outbox failed"),
      )
      .finally(() => this.#running.delete(id));
    this.#running.set(id, run);
  }

  async #runOutbox(id: string): Promise<void> {
    for (;;) {
      if (this.#stopped) return;
      const doc = this.#doc(id);
      const action = doc?.outbox[0];
      if (!doc || !action) return;
      const result = await this.#execute(id, doc.machine, action);
      if (result === "retry") {
        // Left in the outbox for the next tick; it must not hold back paying our payee or going on-chain
        // before a lock expires (e.g. a RevealSecret to an upstream that went offline and will never send
        // its Unlock: the payee is still unlocked, and the secret registered in time).
        await this.#runUnblockedActions(id);
        return;
      }
      const fresh = this.#doc(id) as TransferDoc;
      // Remove the action we ran (it is still first: events append at the end).
      const rest = fresh.outbox.slice(1);
      this.#put(id, fresh.machine, rest);
      if (rest.length === 0) return; // a later event starts another pass (#drain)
    }
  }

  /**
   * Runs the SendUnlock / RegisterSecret / CloseChannel actions queued behind an action that waits for a
   * retry (none of them depends on a message to another peer getting through first).
   */
  async #runUnblockedActions(id: string): Promise<void> {
    for (let i = 1; !this.#stopped;) {
      const doc = this.#doc(id);
      const action = doc?.outbox[i];
      if (!doc || !action) return;
      if (
        action.type !== "SendUnlock" &&
        action.type !== "RegisterSecret" &&
        action.type !== "CloseChannel"
      ) {
        i++;
        continue;
      }
      if ((await this.#execute(id, doc.machine, action)) === "retry") return;
      const fresh = this.#doc(id) as TransferDoc;
      // Only this runner removes actions and events append at the end, so the action is still at `i`.
      this.#put(
        id,
        fresh.machine,
        fresh.outbox.filter((_, j) => j !== i),
      );
    }
  }

  async #execute(id: string, machine: TransferState, action: TransferAction): Promise<"done" | "retry"> {
    try {
      switch (action.type) {
        case "SendLockedTransfer": {
          let delivery: { ok: boolean; code?: string; message?: string };
          try {
            delivery = await this.#channels.sendLockedTransfer(
              action.channelId,
              action.lock,
              action.transfer,
            );
          } catch (err) {
            if (isQrwpError(err) && err.details.pending === true) {
              // Outcome unknown: the channel layer re-sends it; expiry handles a partner that never answers.
              this.#log.warn({ transfer: id, err: errorFields(err) }, "LockedTransfer not acknowledged yet");
              return "done";
            }
            if (!isQrwpError(err)) throw err;
            delivery = { ok: false, code: err.code, message: err.message };
          }
          if (!delivery.ok) {
            const code = (delivery.code ?? "PEER_REJECTED") as ErrorCode;
            const message = delivery.message ?? "refused";
            if (machine.role === "initiator") {
              this.#step(id, (m) =>
                initiatorStep(m as InitiatorState, {
                  type: "TransferFailed",
                  from: action.partner,
                  reason: { code, message, failedAt: RETRYABLE.has(code) ? this.#self : action.partner },
                }),
              );
            } else {
              this.#step(id, (m) =>
                mediatorStep(
                  m as MediatorState,
                  { type: "ForwardFailed", code, message },
                  this.#self,
                  this.#timing,
                ),
              );
            }
          }
          return "done";
        }
        case "SendUnlock": {
          const r = await this.#channels.sendUnlock(
            action.channelId,
            action.secret,
            machine.transfer.paymentId,
          );
          if (!r.ok) this.#log.error({ transfer: id, peerCode: r.code }, "partner refused our Unlock");
          return "done";
        }
        case "SendLockExpired": {
          const r = await this.#channels.sendLockExpired(action.channelId, action.secretHash);
          if (!r.ok) {
            this.#log.warn({ transfer: id, peerCode: r.code }, "partner refused LockExpired; will retry");
            return "retry";
          }
          return "done";
        }
        case "SendRevealSecret": {
          await this.#requestOk(action.to, { type: "RevealSecret", secret: action.secret });
          return "done";
        }
        case "SendTransferFailed": {
          await this.#requestOk(action.to, {
            type: "TransferFailed",
            paymentId: action.paymentId,
            secretHash: action.secretHash,
            code: action.code,
            message: action.message.slice(0, 1000),
            failedAt: action.failedAt,
          });
          return "done";
        }
        case "SendSecretRequest": {
          const target = parseTarget(action.multiaddrs);
          const reply = await this.#batcher.request(
            action.to,
            {
              type: "SecretRequest",
              paymentId: action.paymentId,
              secretHash: action.secretHash,
              amount: action.amount,
              expiration: action.expiration,
            },
            target,
          );
          if (reply.type === "RevealSecret" && secretHashOf(reply.secret) === action.secretHash) {
            this.#store.transaction(() => {
              this.#store.putSecret(action.secretHash, reply.secret);
              this.#step(id, (m) =>
                targetStep(
                  m as TargetState,
                  { type: "SecretRevealed", secret: reply.secret, secretHash: action.secretHash },
                  this.#self,
                  this.#timing,
                ),
              );
            });
          } else {
            const code = (reply.type === "Error" ? reply.code : "INVALID_MESSAGE") as ErrorCode;
            this.#step(id, (m) =>
              targetStep(
                m as TargetState,
                { type: "SecretRequestFailed", code, message: "initiator did not reveal the secret" },
                this.#self,
                this.#timing,
              ),
            );
          }
          return "done";
        }
        case "RegisterSecret": {
          await this.#hub.registerSecret(action.secret);
          this.#log.warn(
            { transfer: id, secretHash: machine.transfer.secretHash },
            "registered secret on-chain",
          );
          return "done";
        }
        case "CloseChannel": {
          const view = this.#channels.channelSummary(action.channelId);
          if (view.state === "opened") await this.#channels.close(action.channelId, { cooperative: false });
          return "done";
        }
        case "PaymentSucceeded":
          this.#finishAttempt(id, machine as InitiatorState, true, action.secret);
          return "done";
        case "AttemptFailed":
          this.#finishAttempt(id, machine as InitiatorState, false, null, action);
          return "done";
        case "PaymentReceived":
          this.#received(machine as TargetState, action.amount);
          return "done";
      }
    } catch (err) {
      const code = isQrwpError(err) ? err.code : "INTERNAL";
      const failures = (this.#failures.get(id) ?? 0) + 1;
      this.#failures.set(id, failures);
      // Log the first failure and then every 60th, not every tick.
      if (failures === 1 || failures % 60 === 0) {
        this.#log.warn(
          { transfer: id, action: action.type, failures, err: errorFields(err) },
          "transfer action failed",
        );
      }
      // On-chain actions protect funds: retry them whatever the error (HubCallError, RPC down, ...).
      if (action.type === "RegisterSecret" || action.type === "CloseChannel") return "retry";
      // Messages about a lock stop being useful once it expired: give up instead of retrying forever.
      const lock = machine.role === "initiator" ? machine.out.lock : machine.payer.lock;
      const message =
        action.type === "SendRevealSecret" ||
        action.type === "SendSecretRequest" ||
        action.type === "SendTransferFailed";
      if (message && this.#now() > lock.expiration) return "done";
      if (RETRYABLE.has(code) || code === "PEER_REJECTED") return "retry";
      return "done";
    }
  }

  async #requestOk(to: string, body: BatchableRequest): Promise<void> {
    const reply = await this.#batcher.request(to, body, () => {
      const peer = this.#store.getPeer(to);
      return peer ? { peerId: peer.peerId, multiaddrs: peer.multiaddrs } : null;
    });
    if (reply.type === "Error") {
      throw new QrwpError("PEER_REJECTED", `${body.type} refused: ${reply.code}: ${reply.message}`, {
        peerCode: reply.code,
      });
    }
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
    this.#waiters.get(id)?.({ ok, record });
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

  /**
   * A secret was registered in the SecretRegistry: every initiator and mediator waiting for it uses it
   * (Raiden's ContractReceiveSecretReveal), so a downstream that went on-chain is still paid through.
   */
  secretRevealedOnChain(secret: string): void {
    const secretHash = secretHashOf(secret);
    const matched: string[] = [];
    this.#store.transaction(() => {
      for (const t of this.#byHash(secretHash)) {
        if (t.done) continue;
        const m = (t.state as TransferDoc).machine;
        if (m.role === "initiator") {
          this.#step(t.id, (s) =>
            initiatorStep(s as InitiatorState, { type: "RevealSecret", from: "chain", secret, secretHash }),
          );
        } else if (m.role === "mediator") {
          this.#step(t.id, (s) =>
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

  // ---- events from the channel layer ----

  #onLockReceived(
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
    if (eq(msg.target, this.#self)) {
      id = `t:${transfer.secretHash}:${channel.channelId}`;
      const invoice = this.#store.getInvoice(transfer.secretHash);
      const usable =
        invoice &&
        invoice.status === "open" &&
        Date.now() <= invoice.expiresAtMs &&
        eq(invoice.token, channel.token)
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
      const index = msg.route.findIndex((h) => eq(h.address, this.#self));
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
    if (this.#record(id)) return () => this.#drain(id);
    this.#put(id, result.state, result.actions);
    return () => this.#drain(id);
  }

  #onUnlocked(channelId: bigint, secretHash: string, secret: string): () => void {
    const ids = [`m:${secretHash}:${channelId}`, `t:${secretHash}:${channelId}`];
    for (const id of ids) {
      const doc = this.#doc(id);
      if (!doc) continue;
      if (doc.machine.role === "target") {
        this.#step(id, (m) =>
          targetStep({ ...(m as TargetState), secret }, { type: "Unlocked" }, this.#self, this.#timing),
        );
      } else {
        this.#step(id, (m) =>
          mediatorStep(m as MediatorState, { type: "Unlocked" }, this.#self, this.#timing),
        );
      }
      return () => this.#drain(id);
    }
    return () => undefined;
  }

  #onLockExpired(channelId: bigint, secretHash: string): () => void {
    for (const id of [`m:${secretHash}:${channelId}`, `t:${secretHash}:${channelId}`]) {
      const doc = this.#doc(id);
      if (!doc) continue;
      this.#step(id, (m) =>
        m.role === "target"
          ? targetStep(m, { type: "LockExpiredReceived" }, this.#self, this.#timing)
          : mediatorStep(m as MediatorState, { type: "LockExpiredReceived" }, this.#self, this.#timing),
      );
      return () => this.#drain(id);
    }
    return () => undefined;
  }

  #mayRemoveLock(channelId: bigint, lock: Lock, now: bigint): boolean {
    if (now >= lock.expiration) return true;
    const m = this.#doc(`m:${lock.secretHash}:${channelId}`)?.machine as MediatorState | undefined;
    // Early removal only once our own outgoing lock is gone: else a colluding payee could still claim it.
    if (m && m.payerStatus === "declined") {
      return !m.payee || this.#channels.ourLock(m.payee.channelId, lock.secretHash) === undefined;
    }
    const t = this.#doc(`t:${lock.secretHash}:${channelId}`)?.machine as TargetState | undefined;
    return t?.status === "declined";
  }

  /** A RevealSecret / SecretRequest / TransferFailed from a peer (see {@link #handleMessage}). */
  #onRequest(from: RemotePeer, body: ChannelMessage): Promise<ChannelMessage> {
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
  #onRequestBatch(from: RemotePeer, messages: BatchableRequest[]): BatchOutcome[] {
    const outcomes: BatchOutcome[] = [];
    const drain: string[] = [];
    this.#store.transaction(() => {
      for (const message of messages) {
        try {
          const r = this.#store.transaction(() => this.#handleMessage(from, message));
          outcomes.push({ reply: r.reply });
          drain.push(...r.drain);
        } catch (error) {
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
          for (const t of this.#byHash(secretHash)) {
            const m = (t.state as TransferDoc).machine;
            if (m.role === "initiator" && eq(m.out.partner, from.address)) {
              this.#step(t.id, (s) =>
                initiatorStep(s as InitiatorState, {
                  type: "RevealSecret",
                  from: from.address,
                  secret: body.secret,
                  secretHash,
                }),
              );
              matched.push(t.id);
            } else if (m.role === "mediator" && m.payee && eq(m.payee.partner, from.address)) {
              this.#step(t.id, (s) =>
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
        for (const t of this.#byHash(body.secretHash.toLowerCase())) {
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
        for (const t of this.#byHash(body.secretHash.toLowerCase())) {
          const m = (t.state as TransferDoc).machine;
          if (m.role === "initiator" && eq(m.out.partner, from.address) && !t.done) {
            this.#step(t.id, (s) =>
              initiatorStep(s as InitiatorState, { type: "TransferFailed", from: from.address, reason }),
            );
            return { reply: { type: "Ok" }, drain: [t.id] };
          }
          if (m.role === "mediator" && m.payee && eq(m.payee.partner, from.address) && !t.done) {
            this.#step(t.id, (s) =>
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

  #tick(): void {
    if (Date.now() - this.#lastInvoiceSweepMs >= INVOICE_SWEEP_INTERVAL_MS) {
      this.#lastInvoiceSweepMs = Date.now();
      try {
        this.sweepExpiredInvoices();
      } catch (err) {
        this.#log.warn({ err: errorFields(err) }, "invoice sweep failed; will retry");
      }
    }
    const now = this.#now();
    for (const t of [...this.#open.values()]) {
      const doc = t.state as TransferDoc;
      const m = doc.machine;
      const stepped =
        m.role === "initiator"
          ? initiatorStep(m, { type: "Tick", nowSeconds: now })
          : m.role === "mediator"
            ? mediatorStep(m, { type: "Tick", nowSeconds: now }, this.#self, this.#timing)
            : targetStep(m, { type: "Tick", nowSeconds: now }, this.#self, this.#timing);
      if (stepped.actions.length > 0 || stepped.state !== m)
        this.#put(t.id, stepped.state, [...doc.outbox, ...stepped.actions]);
      if (stepped.actions.length > 0 || doc.outbox.length > 0) this.#drain(t.id);
    }
  }
}

/** `{peerId, multiaddrs}` for the transport from multiaddrs ending in /p2p/<peerId>. */
function parseTarget(multiaddrs: string[]): { peerId?: string; multiaddrs: string[] } | null {
  const withPeer = multiaddrs.find((m) => m.includes("/p2p/"));
  if (!withPeer) return null;
  return {
    peerId: withPeer.split("/p2p/")[1] as string,
    multiaddrs: multiaddrs.map((m) => m.split("/p2p/")[0] as string),
  };
}
