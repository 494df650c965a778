/**
 * `GET /v1/events`: the node's Server-Sent Events stream (WHATWG HTML §9.2 "Server-sent events", served with
 * `better-sse`), behind the API's bearer token like every other route. Three event types, each `data` one
 * JSON object with bigints as decimal strings, each with an `id` (a per-process counter, increasing; not
 * replayable: a subscriber that reconnects catches up with `GET /v1/channels` and `GET /v1/payments`):
 *
 * - `channel`: a channel's state, deposits or withdraws changed (the registry's `channel` event):
 *   `{ channelId, state, reason, channel }`, `reason` one of opened, closed, settled, deposit, withdraw,
 *   contested, cooperative (and the lifecycle's event names), `channel` as `GET /v1/channels/:id` shows it
 *   (null once the node no longer knows it);
 * - `payment`: a payment of ours or to us was created or reached its final status: direct ones (the
 *   registry's `payment` event) as `GET /v1/payments/:id` shows them (`kind: "direct"`), routed ones of ours
 *   (created, completed, failed) as `GET /v1/payments/:id` shows them, and routed ones paid to us
 *   (`kind: "routed"`, `direction: "incoming"`) with the lock's `paymentHash` (the invoice's, which is
 *   `paid` by then);
 * - `close`: the channel monitor saw a close (`type: "closed"`: closingParticipant, byPartner, nonce), sent
 *   a contest (`"contested"`: nonce), saw the settlement (`"settled"`: cooperative) or a reorganisation that
 *   removed a close (`"closeReorged"`: resubmitted); always with `channelId`.
 *
 * At most `maxSubscribers` streams at once (beyond: 503 UNAVAILABLE naming `subscribers`, `retry-after`);
 * a keep-alive comment every `keepAliveMs`; a stream is dropped when its connection closes, and one whose
 * reader lags more than `maxBufferedBytes` behind is ended (it reconnects and catches up).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { createSession, type Session } from "better-sse";
import type { Logger } from "pino";
import { QrwpError } from "../../protocol/index.js";
import { errorFields } from "../../host/session-transport.js";
import type { ChannelEventMap, ChannelStateEvent, ChannelView } from "../channels/service.js";
import type { MonitorEventMap } from "../monitor/monitor.js";
import type { PaymentEventMap, RoutedPaymentEvent } from "../payments/service.js";
import type { PaymentRecord } from "../store/store.js";
import { channelJson, channelPaymentJson, mediatedPaymentJson } from "./json.js";

/** SSE event names of `GET /v1/events`. */
export const NODE_EVENT_TYPES = ["channel", "payment", "close"] as const;
export type NodeEventType = (typeof NODE_EVENT_TYPES)[number];

/** Something that emits typed events (a Node `EventEmitter<T>` is one); only `on` and `off` are used. */
export interface EventSource<T extends { [K in keyof T]: unknown[] }> {
  on<K extends keyof T & string>(type: K, listener: (...args: T[K]) => void): unknown;
  off<K extends keyof T & string>(type: K, listener: (...args: T[K]) => void): unknown;
}

/** The monitor's events `GET /v1/events` relays as `close`. */
type CloseEventMap = Pick<MonitorEventMap, "closed" | "contested" | "settled" | "closeReorged">;

/** Where the stream's events come from: narrow views of the registry, the payments layer and the monitor. */
export interface NodeEventSources {
  /** The channel registry's events; `channel` and (direct) `payment` are relayed. */
  channels: EventSource<ChannelEventMap>;
  /** The payments layer's routed payments; absent on a node without multi-hop payments. */
  payments?: EventSource<PaymentEventMap>;
  /** The channel monitor's events; closed, contested, settled and closeReorged are relayed. */
  monitor?: EventSource<MonitorEventMap>;
}

/** Options of {@link NodeEventStream}. */
export interface NodeEventStreamInit {
  sources: NodeEventSources;
  /** A channel as the API shows it, or null when unknown (read for each `channel` event). */
  channelView: (channelId: bigint) => ChannelView | null;
  /** Most streams at once. Default 32. */
  maxSubscribers?: number;
  /** Keep-alive comment interval, ms. Default 15,000. */
  keepAliveMs?: number;
  /** A stream whose unsent output exceeds this many bytes is ended. Default 1 MiB. */
  maxBufferedBytes?: number;
  log: Logger;
}

/** Bigints as decimal strings, recursively (plain objects and arrays only). */
function jsonSafe(value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (Array.isArray(value)) return value.map(jsonSafe);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, jsonSafe(v)]));
  }
  return value;
}

/** A routed payment event as `GET /v1/events` shows it. */
function routedPaymentJson(e: RoutedPaymentEvent) {
  return e.direction === "outgoing"
    ? mediatedPaymentJson(e.payment)
    : { ...channelPaymentJson(e.payment), paymentHash: e.paymentHash };
}

interface Subscriber {
  session: Session;
  res: ServerResponse;
}

/** The fan-out of node events to SSE subscribers. */
export class NodeEventStream {
  readonly #init: NodeEventStreamInit;
  readonly #log: Logger;
  readonly #subscribers = new Set<Subscriber>();
  /** Responses being set up (counted against the cap before their session exists). */
  #opening = 0;
  readonly #maxSubscribers: number;
  readonly #maxBufferedBytes: number;
  #seq = 0;
  #started = false;
  #closed = false;

  readonly #onChannel = (e: ChannelStateEvent) => {
    let view: ChannelView | null = null;
    try {
      view = this.#init.channelView(e.channelId);
    } catch {
      view = null;
    }
    this.#publish("channel", {
      channelId: e.channelId.toString(),
      state: e.state,
      reason: e.reason,
      channel: view ? channelJson(view) : null,
    });
  };
  readonly #onDirectPayment = (p: PaymentRecord) => this.#publish("payment", channelPaymentJson(p));
  readonly #onRoutedPayment = (e: RoutedPaymentEvent) => this.#publish("payment", routedPaymentJson(e));
  readonly #onClosed = (e: MonitorEventMap["closed"][0]) => this.#close("closed", e);
  readonly #onContested = (e: MonitorEventMap["contested"][0]) => this.#close("contested", e);
  readonly #onSettled = (e: MonitorEventMap["settled"][0]) => this.#close("settled", e);
  readonly #onCloseReorged = (e: MonitorEventMap["closeReorged"][0]) => this.#close("closeReorged", e);

  constructor(init: NodeEventStreamInit) {
    this.#init = init;
    this.#log = init.log;
    this.#maxSubscribers = init.maxSubscribers ?? 32;
    this.#maxBufferedBytes = init.maxBufferedBytes ?? 1024 * 1024;
  }

  /** Streams open now. */
  get subscribers(): number {
    return this.#subscribers.size;
  }

  /** Starts listening to the sources (idempotent). */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    const { channels, payments, monitor } = this.#init.sources;
    channels.on("channel", this.#onChannel);
    channels.on("payment", this.#onDirectPayment);
    payments?.on("payment", this.#onRoutedPayment);
    monitor?.on("closed", this.#onClosed);
    monitor?.on("contested", this.#onContested);
    monitor?.on("settled", this.#onSettled);
    monitor?.on("closeReorged", this.#onCloseReorged);
  }

  /**
   * Throws unless one more stream may open now (call it before taking over the response).
   * @throws QrwpError UNAVAILABLE (field `subscribers`) when {@link NodeEventStreamInit.maxSubscribers} are
   *   open, or after {@link close}
   */
  assertRoom(): void {
    if (this.#closed || this.#subscribers.size + this.#opening >= this.#maxSubscribers) {
      throw new QrwpError("UNAVAILABLE", "too many event subscribers; retry later", {
        field: "subscribers",
        maxSubscribers: this.#maxSubscribers,
      });
    }
  }

  /**
   * Serves one SSE stream on a raw request/response (the caller checked the bearer token). Resolves once
   * the stream is open.
   * @throws QrwpError UNAVAILABLE as {@link assertRoom}, synchronously checked before `res` is written.
   */
  async subscribe(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.assertRoom();
    this.#opening++;
    let session: Session;
    try {
      session = await createSession(req, res, {
        keepAlive: this.#init.keepAliveMs ?? 15_000,
        headers: { "cache-control": "no-store" },
      });
      if (!session.isConnected) await new Promise((r) => session.once("connected", () => r(undefined)));
    } finally {
      this.#opening--;
    }
    if (res.destroyed || res.writableEnded) return;
    const sub: Subscriber = { session, res };
    this.#subscribers.add(sub);
    res.once("close", () => this.#subscribers.delete(sub));
    if (this.#closed) res.end();
  }

  /** Ends every stream and stops listening to the sources. */
  close(): void {
    this.#closed = true;
    const { channels, payments, monitor } = this.#init.sources;
    if (this.#started) {
      channels.off("channel", this.#onChannel);
      channels.off("payment", this.#onDirectPayment);
      payments?.off("payment", this.#onRoutedPayment);
      monitor?.off("closed", this.#onClosed);
      monitor?.off("contested", this.#onContested);
      monitor?.off("settled", this.#onSettled);
      monitor?.off("closeReorged", this.#onCloseReorged);
    }
    for (const { res } of this.#subscribers) res.end();
    this.#subscribers.clear();
  }

  #close(type: keyof CloseEventMap, event: object): void {
    this.#publish("close", { type, ...(jsonSafe(event) as Record<string, unknown>) });
  }

  #publish(type: NodeEventType, data: object): void {
    if (this.#subscribers.size === 0) return;
    const id = String(++this.#seq);
    for (const sub of this.#subscribers) {
      if (sub.res.writableLength > this.#maxBufferedBytes) {
        this.#log.warn({ buffered: sub.res.writableLength }, "event subscriber too slow: stream ended");
        this.#subscribers.delete(sub);
        sub.res.end();
        continue;
      }
      try {
        sub.session.push(data, type, id);
      } catch (err) {
        this.#log.warn({ event: type, err: errorFields(err) }, "event not pushed to a subscriber");
      }
    }
  }
}
