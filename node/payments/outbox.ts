/**
 * Runs transfers' outboxes: the actions a role's state machine produced (protocol/transfers.ts `TransferAction`),
 * stored with the state that produced them (node/payments/transfer-book.ts) before any of them runs.
 *
 * - One transfer's outbox runs one action at a time, in order; an action is removed once it ran. After a
 *   crash the outbox runs again, so actions must be idempotent at the channel layer. SendLockedTransfer is
 *   not (a second lock with the same secret hash is refused), so it leaves the outbox in the transaction
 *   that stores the proof carrying its lock: a crash leaves either both or neither, and a stored lock's
 *   proof is re-delivered by the channel layer, never signed again.
 * - An action whose outcome is unknown (peer offline mid-request, chain error) stays in the outbox and is
 *   retried on the next tick; behind it, only SendUnlock, RegisterSecret and CloseChannel run meanwhile
 *   (none of them depends on that message getting through first).
 * - SecretRequest, RevealSecret and TransferFailed leave through a {@link MessageBatcher} (one request per
 *   peer and turn).
 */
import type { Logger } from "pino";
import {
  QrwpError,
  initiatorStep,
  isQrwpError,
  mediatorStep,
  secretHashOf,
  targetStep,
  type BatchableRequest,
  type ErrorCode,
  type InitiatorState,
  type LockTiming,
  type MediatorState,
  type TargetState,
  type TransferAction,
  type TransferState,
} from "../../protocol/index.js";
import type { PooledHubClient } from "../../chain/index.js";
import type { ChannelService } from "../channels/service.js";
import { errorFields } from "../../host/session-transport.js";
import type { NodeStore } from "../store/store.js";
import type { MessageBatcher } from "./message-batcher.js";
import type { TransferBook, TransferDoc } from "./transfer-book.js";

/** Error codes after which a message action is retried (the peer or the chain may come back). */
const RETRYABLE: ReadonlySet<string> = new Set([
  "PEER_OFFLINE",
  "HANDSHAKE_FAILED",
  "TIMEOUT",
  "CHAIN_ERROR",
]);

/** What the outbox reports to the payments service. */
export interface OutboxListener {
  /** An initiator's attempt ended (PaymentSucceeded / AttemptFailed). */
  attemptFinished(
    id: string,
    machine: InitiatorState,
    ok: boolean,
    secret: string | null,
    failure?: { code: string; message: string; failedAt: string },
  ): void;
  /** A target was paid (PaymentReceived). */
  received(machine: TargetState, amount: bigint): void;
}

export interface TransferOutboxInit {
  book: TransferBook;
  store: NodeStore;
  channels: ChannelService;
  batcher: MessageBatcher;
  hub: PooledHubClient;
  /** Our address (EIP-55). */
  self: string;
  timing: LockTiming;
  log: Logger;
  listener: OutboxListener;
}

/** See the module doc. */
export class TransferOutbox {
  readonly #book: TransferBook;
  readonly #store: NodeStore;
  readonly #channels: ChannelService;
  readonly #batcher: MessageBatcher;
  readonly #hub: PooledHubClient;
  readonly #self: string;
  readonly #timing: LockTiming;
  readonly #log: Logger;
  readonly #on: OutboxListener;
  readonly #running = new Map<string, Promise<void>>();
  readonly #rerun = new Set<string>();
  readonly #failures = new Map<string, number>();
  #stopped = false;

  constructor(init: TransferOutboxInit) {
    this.#book = init.book;
    this.#store = init.store;
    this.#channels = init.channels;
    this.#batcher = init.batcher;
    this.#hub = init.hub;
    this.#self = init.self;
    this.#timing = init.timing;
    this.#log = init.log;
    this.#on = init.listener;
  }

  /** Stops starting actions and waits for the running ones. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.allSettled([...this.#running.values()]);
  }

  #now(): bigint {
    return this.#channels.nowSeconds();
  }

  /** Runs a transfer's outbox (one runner per transfer; a request during a run triggers another pass). */
  drain(id: string): void {
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
      const doc = this.#book.doc(id);
      const action = doc?.outbox[0];
      if (!doc || !action) return;
      const result = await this.#execute(id, doc.machine, action);
      if (result === "removed") {
        // Already removed, with the proof it produced (SendLockedTransfer).
        if ((this.#book.doc(id)?.outbox.length ?? 0) === 0) return;
        continue;
      }
      if (result === "retry") {
        // Left in the outbox for the next tick; it must not hold back paying our payee or going on-chain
        // before a lock expires (e.g. a RevealSecret to an upstream that went offline and will never send
        // its Unlock: the payee is still unlocked, and the secret registered in time).
        await this.#runUnblockedActions(id);
        return;
      }
      const fresh = this.#book.doc(id) as TransferDoc;
      // Remove the action we ran (it is still first: events append at the end).
      const rest = fresh.outbox.slice(1);
      this.#book.put(id, fresh.machine, rest);
      if (rest.length === 0) return; // a later event starts another pass (#drain)
    }
  }

  /**
   * Runs the SendUnlock / RegisterSecret / CloseChannel actions queued behind an action that waits for a
   * retry (none of them depends on a message to another peer getting through first).
   */
  async #runUnblockedActions(id: string): Promise<void> {
    for (let i = 1; !this.#stopped;) {
      const doc = this.#book.doc(id);
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
      const fresh = this.#book.doc(id) as TransferDoc;
      // Only this runner removes actions and events append at the end, so the action is still at `i`.
      this.#book.put(
        id,
        fresh.machine,
        fresh.outbox.filter((_, j) => j !== i),
      );
    }
  }

  /**
   * Runs one action. @returns `done` (the caller removes it), `retry` (it stays for the next tick) or
   * `removed` (it left the outbox already, in the transaction that stored its proof).
   */
  async #execute(
    id: string,
    machine: TransferState,
    action: TransferAction,
  ): Promise<"done" | "retry" | "removed"> {
    // SendLockedTransfer only: whether it left the outbox with its proof (read from the outbox itself, so a
    // rolled-back transaction that reloaded the transfer counts right).
    const removedWithProof = () => action.type === "SendLockedTransfer" && this.#indexOfSend(id, action) < 0;
    try {
      switch (action.type) {
        case "SendLockedTransfer": {
          // Runs inside the transaction that stores the proof carrying the lock (see the module doc).
          const removeWithProof = () => {
            const fresh = this.#book.doc(id) as TransferDoc;
            const at = this.#indexOfSend(id, action);
            if (at >= 0) this.#book.put(id, fresh.machine, fresh.outbox.toSpliced(at, 1));
          };
          let delivery: { ok: boolean; code?: string; message?: string };
          try {
            delivery = await this.#channels.sendLockedTransfer(
              action.channelId,
              action.lock,
              action.transfer,
              removeWithProof,
            );
          } catch (err) {
            const removed = removedWithProof();
            if (removed || (isQrwpError(err) && err.details.pending === true)) {
              // Stored (and maybe sent): the channel layer (re-)delivers the proof; the lock's expiry handles a
              // partner that never answers. Never a failed forward: the lock may be live downstream.
              this.#log.warn({ transfer: id, err: errorFields(err) }, "LockedTransfer not acknowledged yet");
              return removed ? "removed" : "done";
            }
            if (!isQrwpError(err)) throw err;
            delivery = { ok: false, code: err.code, message: err.message };
          }
          if (!delivery.ok) {
            const code = (delivery.code ?? "PEER_REJECTED") as ErrorCode;
            const message = delivery.message ?? "refused";
            if (machine.role === "initiator") {
              this.#book.step(id, (m) =>
                initiatorStep(m as InitiatorState, {
                  type: "TransferFailed",
                  from: action.partner,
                  reason: { code, message, failedAt: RETRYABLE.has(code) ? this.#self : action.partner },
                }),
              );
            } else {
              this.#book.step(id, (m) =>
                mediatorStep(
                  m as MediatorState,
                  { type: "ForwardFailed", code, message },
                  this.#self,
                  this.#timing,
                ),
              );
            }
          }
          return removedWithProof() ? "removed" : "done";
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
              this.#book.step(id, (m) =>
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
            this.#book.step(id, (m) =>
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
          this.#on.attemptFinished(id, machine as InitiatorState, true, action.secret);
          return "done";
        case "AttemptFailed":
          this.#on.attemptFinished(id, machine as InitiatorState, false, null, action);
          return "done";
        case "PaymentReceived":
          this.#on.received(machine as TargetState, action.amount);
          return "done";
      }
    } catch (err) {
      const code = isQrwpError(err) ? err.code : "INTERNAL";
      if (removedWithProof()) {
        // The lock's proof is stored: the channel layer delivers it; nothing here may run again.
        this.#log.warn(
          { transfer: id, action: action.type, err: errorFields(err) },
          "transfer action failed",
        );
        return "removed";
      }
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

  /**
   * Where `action` (a SendLockedTransfer) stands in transfer `id`'s outbox, -1 if it left: by identity, or by
   * value (channel and secret hash) when a rolled-back write of the transfer reloaded it from the store.
   */
  #indexOfSend(id: string, action: Extract<TransferAction, { type: "SendLockedTransfer" }>): number {
    const outbox = this.#book.doc(id)?.outbox ?? [];
    return outbox.findIndex(
      (a) =>
        a === action ||
        (a.type === "SendLockedTransfer" &&
          a.channelId === action.channelId &&
          a.lock.secretHash === action.lock.secretHash),
    );
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
