/**
 * One event per paid request: after a settlement succeeded (the receipt is claimed; x402/receipts.ts writes
 * it right after), {@link PaidEvents.emit} hands the {@link Receipt} to
 * - the `onPaid(receipt)` callback (a throw or a rejection is logged, never propagated);
 * - every Server-Sent Events subscriber of `GET /v1/receipts/events` (`better-sse`): `event: paid`,
 *   `id: <paymentHash>`, `data: <receipt JSON>`; a keep-alive comment every `keepAliveMs`; a subscriber is
 *   dropped when its connection closes; at most `maxSubscribers` at once (more get 503
 *   `{ error: "too_many_subscribers" }`);
 * - the optional webhook: `POST webhookUrl` with the receipt as JSON body, headers `content-type:
 *   application/json`, `x-qrwp-event: paid`, `x-qrwp-delivery: <paymentHash>` (receivers dedupe on it: a
 *   retried delivery may arrive twice) and, with `webhookSecret`, `x-qrwp-signature: sha256=<hex of
 *   HMAC-SHA256(webhookSecret, raw body)>`. Each attempt times out after `webhookTimeoutMs`; a non-2xx
 *   answer or a network error is retried `webhookRetries` times with exponential backoff (0.5 s, 1 s, 2 s,
 *   ...); the final failure is logged. Deliveries run in the background: they never delay or fail the paid
 *   response. At most 1,000 deliveries are pending at once; beyond that a delivery is dropped and logged.
 *
 * Nothing is emitted for refused requests. Events are not persisted: a subscriber that was disconnected
 * catches up with `GET /v1/receipts`.
 */
import { createHmac } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createChannel, createSession, type Channel } from "better-sse";
import { assertArgument } from "../protocol/index.js";
import type { Receipt } from "./receipts.js";
import type { X402Logger } from "./server.js";

/** Header carrying `sha256=<hex HMAC-SHA256(webhookSecret, body)>` on webhook deliveries. */
export const WEBHOOK_SIGNATURE_HEADER = "x-qrwp-signature";
/** Header carrying the payment hash of a webhook delivery (stable across retries). */
export const WEBHOOK_DELIVERY_HEADER = "x-qrwp-delivery";
/** SSE event name of a paid request. */
export const PAID_EVENT = "paid";

const MAX_PENDING_DELIVERIES = 1000;

/** Options of {@link PaidEvents}. */
export interface PaidEventsOptions {
  /** Called once per paid request with its receipt, after the receipt was recorded. */
  onPaid?: (receipt: Receipt) => void | Promise<void>;
  /** `http(s)://` URL receiving a `POST` of each receipt. */
  webhookUrl?: string;
  /** HMAC-SHA256 key signing each webhook body (see {@link WEBHOOK_SIGNATURE_HEADER}). */
  webhookSecret?: string;
  /** Per-attempt timeout in ms (default 5,000). */
  webhookTimeoutMs?: number;
  /** Retries after the first attempt (default 3). */
  webhookRetries?: number;
  /** First retry delay in ms, doubled each retry (default 500). */
  webhookBackoffMs?: number;
  /** Most SSE subscribers at once (default 100). */
  maxSubscribers?: number;
  /** SSE keep-alive comment interval in ms (default 15,000). */
  keepAliveMs?: number;
  log?: X402Logger;
}

/** `HMAC-SHA256(secret, body)` as the {@link WEBHOOK_SIGNATURE_HEADER} value `sha256=<hex>`. */
export function webhookSignature(secret: string, body: string): string {
  return `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
}

/** Fan-out of paid-request events to a callback, SSE subscribers and a webhook. */
export class PaidEvents {
  readonly #opts: PaidEventsOptions;
  readonly #log: X402Logger;
  readonly #channel: Channel;
  readonly #open = new Set<ServerResponse>();
  readonly #pending = new Set<Promise<void>>();
  readonly #abort = new AbortController();
  readonly #maxSubscribers: number;

  /** @throws QrwpError INVALID_ARGUMENT naming `webhookUrl`, `webhookSecret` or a numeric option. */
  constructor(options: PaidEventsOptions = {}) {
    const url = options.webhookUrl;
    if (url !== undefined) {
      let ok = false;
      try {
        ok = ["http:", "https:"].includes(new URL(url).protocol);
      } catch {
        ok = false;
      }
      assertArgument(ok, "must be an http(s) URL", "webhookUrl", url);
    }
    assertArgument(
      options.webhookSecret === undefined || (url !== undefined && options.webhookSecret.length > 0),
      "needs a webhookUrl and must not be empty",
      "webhookSecret",
      undefined,
    );
    for (const k of [
      "webhookTimeoutMs",
      "webhookRetries",
      "webhookBackoffMs",
      "maxSubscribers",
      "keepAliveMs",
    ] as const) {
      const v = options[k];
      assertArgument(v === undefined || (Number.isSafeInteger(v) && v >= 0), "must be an integer ≥ 0", k, v);
    }
    this.#opts = options;
    this.#log = options.log ?? { info: () => undefined, warn: () => undefined };
    this.#channel = createChannel();
    this.#maxSubscribers = options.maxSubscribers ?? 100;
  }

  /** Number of connected SSE subscribers. */
  get subscribers(): number {
    return this.#open.size;
  }

  /** Publishes one paid request (never throws; the webhook runs in the background). */
  emit(receipt: Receipt): void {
    const { onPaid } = this.#opts;
    if (onPaid) {
      try {
        Promise.resolve(onPaid(receipt)).catch((err: unknown) => this.#callbackFailed(err));
      } catch (err) {
        this.#callbackFailed(err);
      }
    }
    try {
      this.#channel.broadcast(receipt, PAID_EVENT, { eventId: receipt.paymentHash });
    } catch (err) {
      this.#log.warn({ err: String(err) }, "x402 SSE broadcast failed");
    }
    if (this.#opts.webhookUrl !== undefined && !this.#abort.signal.aborted) {
      if (this.#pending.size >= MAX_PENDING_DELIVERIES) {
        this.#log.warn({ paymentHash: receipt.paymentHash }, "x402 webhook backlog full, delivery dropped");
        return;
      }
      const p = this.#deliver(receipt).finally(() => this.#pending.delete(p));
      this.#pending.add(p);
    }
  }

  /**
   * Serves an SSE subscription on a raw request/response (the caller checked authorization). Answers 503
   * `{ error: "too_many_subscribers" }` when full. Resolves once the stream is open (or refused).
   */
  async subscribe(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.#open.size >= this.#maxSubscribers || this.#abort.signal.aborted) {
      res.writeHead(503, { "content-type": "application/json", "retry-after": "5" });
      res.end(JSON.stringify({ error: "too_many_subscribers" }));
      return;
    }
    this.#open.add(res);
    res.once("close", () => this.#open.delete(res));
    const session = await createSession(req, res, {
      keepAlive: this.#opts.keepAliveMs ?? 15_000,
      headers: { "cache-control": "no-store" },
    });
    if (!session.isConnected) await new Promise((r) => session.once("connected", () => r(undefined)));
    if (res.destroyed || res.writableEnded) return;
    this.#channel.register(session);
  }

  /** Ends every SSE stream and cancels pending webhook retries (waits for them to stop). */
  async close(): Promise<void> {
    this.#abort.abort();
    for (const res of this.#open) res.end();
    this.#open.clear();
    await Promise.allSettled([...this.#pending]);
  }

  #callbackFailed(err: unknown): void {
    this.#log.warn({ err: err instanceof Error ? err.message : String(err) }, "x402 onPaid callback failed");
  }

  async #deliver(receipt: Receipt): Promise<void> {
    const url = this.#opts.webhookUrl as string;
    const body = JSON.stringify(receipt);
    const headers: Record<string, string> = {
      "content-type": "application/json",
      "x-qrwp-event": PAID_EVENT,
      [WEBHOOK_DELIVERY_HEADER]: receipt.paymentHash,
    };
    if (this.#opts.webhookSecret)
      headers[WEBHOOK_SIGNATURE_HEADER] = webhookSignature(this.#opts.webhookSecret, body);
    const retries = this.#opts.webhookRetries ?? 3;
    const timeoutMs = this.#opts.webhookTimeoutMs ?? 5000;
    const backoffMs = this.#opts.webhookBackoffMs ?? 500;
    const stop = this.#abort.signal;
    let last = "";
    for (let attempt = 0; attempt <= retries && !stop.aborted; attempt++) {
      if (attempt > 0) {
        await new Promise<void>((r) => {
          const t = setTimeout(r, backoffMs * 2 ** (attempt - 1));
          stop.addEventListener("abort", () => (clearTimeout(t), r()), { once: true });
        });
        if (stop.aborted) break;
      }
      try {
        const res = await fetch(url, {
          method: "POST",
          headers,
          body,
          signal: AbortSignal.any([stop, AbortSignal.timeout(timeoutMs)]),
        });
        await res.body?.cancel();
        if (res.ok) return;
        last = `HTTP ${res.status}`;
      } catch (err) {
        last = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      }
    }
    this.#log.warn(
      { paymentHash: receipt.paymentHash, attempts: retries + 1, err: last, aborted: stop.aborted },
      "x402 webhook delivery failed",
    );
  }
}
