/**
 * Wake-ups for the facilitator's routed `verify`: instead of asking the merchant's node for an open invoice
 * every 100 ms, `verify` waits on the node's `GET /v1/events` stream for a `payment` event of a routed
 * payment received (`direction: "incoming"`, `kind: "routed"`) whose `paymentHash` is the invoice's, then
 * asks for the invoice once more (the invoice, not the event, is what `verify` trusts).
 *
 * One stream per facilitator, shared by every waiting `verify`: opened when the first one waits, kept while
 * any waits and `lingerMs` after the last one left, reopened after a drop (1 s between tries) while any
 * waits. Each (re)opening wakes every waiter, so an event sent while no stream was open is never waited
 * for in vain. A waiter also wakes after its `next(timeoutMs)` bound: the caller re-checks the invoice then,
 * so a missed event (a dropped stream, a node without `/v1/events`) costs one re-check period, never a hang.
 */
import { isQrwpError } from "../protocol/index.js";
import type { NodeEvent, QrwpNodeApi } from "./node-api.js";
import type { X402Logger } from "./server.js";

/** Default time the stream stays open after the last waiter left, ms. */
export const PAID_STREAM_LINGER_MS = 10_000;
/** Wait between attempts to (re)open the stream while someone waits, ms. */
const REOPEN_DELAY_MS = 1000;

/** One `verify`'s interest in one payment hash. */
export interface PaidWatch {
  /**
   * Resolves `true` when a matching event arrived (or the stream was (re)opened) since the last call, else
   * `false` after `timeoutMs`.
   */
  next(timeoutMs: number): Promise<boolean>;
  /** Stops watching (always call it, e.g. in `finally`). */
  cancel(): void;
}

interface Watcher {
  woken: boolean;
  wake: (() => void) | null;
}

/** The shared `GET /v1/events` subscription of one facilitator. */
export class PaidSignals {
  readonly #node: QrwpNodeApi;
  readonly #log: X402Logger;
  readonly #lingerMs: number;
  readonly #watchers = new Map<string, Set<Watcher>>();
  #count = 0;
  /** Aborts the running stream loop; null while none runs. */
  #running: AbortController | null = null;
  #linger: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(node: QrwpNodeApi, options: { log: X402Logger; lingerMs?: number }) {
    this.#node = node;
    this.#log = options.log;
    this.#lingerMs = options.lingerMs ?? PAID_STREAM_LINGER_MS;
  }

  /** Watches `paymentHash` (0x-hex, any case); opens the stream if it is not open. */
  watch(paymentHash: string): PaidWatch {
    const hash = paymentHash.toLowerCase();
    const w: Watcher = { woken: false, wake: null };
    let set = this.#watchers.get(hash);
    if (!set) this.#watchers.set(hash, (set = new Set()));
    set.add(w);
    this.#count++;
    clearTimeout(this.#linger);
    this.#ensureRunning();
    let cancelled = false;
    return {
      next: (timeoutMs) =>
        new Promise<boolean>((resolve) => {
          if (w.woken && !cancelled && !this.#closed) {
            w.woken = false;
            resolve(true);
            return;
          }
          const timer = setTimeout(() => {
            w.wake = null;
            resolve(false);
          }, timeoutMs);
          w.wake = () => {
            clearTimeout(timer);
            w.wake = null;
            w.woken = false;
            resolve(true);
          };
        }),
      cancel: () => {
        if (cancelled) return;
        cancelled = true;
        w.wake?.();
        set.delete(w);
        if (set.size === 0) this.#watchers.delete(hash);
        if (--this.#count === 0 && !this.#closed) {
          this.#linger = setTimeout(() => this.#stopRunning(), this.#lingerMs);
          this.#linger.unref();
        }
      },
    };
  }

  /** Closes the stream for good; waiters go on re-checking at their `next` bound until their deadline. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#linger);
    this.#stopRunning();
  }

  #wake(w: Watcher): void {
    if (w.wake) w.wake();
    else w.woken = true;
  }

  #wakeAll(): void {
    for (const set of this.#watchers.values()) for (const w of set) this.#wake(w);
  }

  #onEvent(e: NodeEvent): void {
    if (e.type !== "payment" || e.data.direction !== "incoming" || e.data.kind !== "routed") return;
    const hash = typeof e.data.paymentHash === "string" ? e.data.paymentHash.toLowerCase() : "";
    for (const w of this.#watchers.get(hash) ?? []) this.#wake(w);
  }

  #stopRunning(): void {
    this.#running?.abort();
    this.#running = null;
  }

  #ensureRunning(): void {
    if (this.#running || this.#closed) return;
    const ctl = new AbortController();
    this.#running = ctl;
    void this.#run(ctl);
  }

  async #run(ctl: AbortController): Promise<void> {
    const signal = ctl.signal;
    try {
      while (!signal.aborted && this.#count > 0) {
        try {
          const sub = await this.#node.subscribeEvents({ signal, onEvent: (e) => this.#onEvent(e) });
          this.#wakeAll(); // whatever happened while no stream was open: everyone re-checks
          await sub.closed;
        } catch (err) {
          if (signal.aborted) return;
          this.#log.warn(
            { err: isQrwpError(err) ? err.toJSON() : String(err) },
            "merchant node event stream unavailable; verify re-checks invoices on its own",
          );
        }
        if (signal.aborted || this.#count === 0) return;
        await new Promise<void>((r) => {
          const t = setTimeout(r, REOPEN_DELAY_MS);
          signal.addEventListener("abort", () => (clearTimeout(t), r()), { once: true });
        });
      }
    } finally {
      // In the same turn as the last check of the loop: a watch() from now on starts a new loop.
      if (this.#running === ctl) this.#running = null;
    }
  }
}
