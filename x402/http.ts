/**
 * `qrwpMiddleware`: the x402 paywall as a plain `(req, res, next)` middleware for `node:http` servers and
 * express (`app.use(mw)`), over the same shared paywall as the fastify plugin (x402/paywall.ts): the same
 * options, 402 / `PAYMENT-REQUIRED` / `PAYMENT-SIGNATURE` / `PAYMENT-RESPONSE` answers, coded refusals,
 * unpaid cap, paid events, `GET /v1/receipts` and `GET /v1/receipts/events`.
 *
 * One difference from the fastify plugin: a plain handler writes straight to the socket, so its output
 * cannot be held back and discarded. This middleware therefore **settles before calling `next()`**: once
 * the payment is verified (the merchant node holds it durably), the receipt's insert-once decides (a reuse
 * is 402 `replayed` and `next()` is not called), the paid event is emitted and `PAYMENT-RESPONSE` is set on
 * `res`; only then does the handler run. A handler that fails after that has still consumed the payment
 * (its receipt exists); the fastify plugin instead settles only responses with status < 400.
 *
 * @example
 * ```ts
 * const mw = await qrwpMiddleware({ node, routes: [price("GET /weather", 100n, token)], receiptsPath });
 * createServer((req, res) => mw(req, res, () => handler(req, res))).listen(8080);
 * // express: app.use(mw)
 * ```
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import {
  PaywallCore,
  RECEIPTS_PATH,
  RECEIPT_EVENTS_PATH,
  type PaywallAnswer,
  type QrwpPaywallHandle,
  type QrwpPaywallOptions,
} from "./paywall.js";
import type { X402Logger } from "./server.js";

/** Options of {@link qrwpMiddleware}: those of the fastify plugin, plus a logger and the client IP. */
export interface QrwpMiddlewareOptions extends QrwpPaywallOptions {
  /** Structured logger (pino compatible); default silent. */
  log?: X402Logger;
  /**
   * The client IP used by the per-IP unpaid cap; default the socket's remote address. Behind a trusted
   * reverse proxy, return the address it reports (e.g. from `x-forwarded-for`).
   */
  clientIp?: (req: IncomingMessage) => string;
}

/** The middleware, with its paywall handle and a `close()` for shutdown. */
export interface QrwpMiddleware {
  (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void;
  /** Receipts store, network, merchant identity, paid events. */
  readonly paywall: QrwpPaywallHandle;
  /** Ends SSE streams, stops webhook retries, closes the receipts store. Call before `server.close()`. */
  close(): Promise<void>;
}

function send(res: ServerResponse, a: PaywallAnswer): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(a.status, a.headers);
  res.end(JSON.stringify(a.body));
}

/**
 * Builds the middleware: asks the merchant node's `/v1/info` once (address, chain, hub) and opens the
 * receipts store. Requests that are not for a priced route or a receipts path go straight to `next()`.
 * `next` is never called with an error: failures are answered (503 `merchant_unavailable`).
 * @throws QrwpError INVALID_ARGUMENT for bad options; the node API's error when the node cannot be asked.
 */
export async function qrwpMiddleware(options: QrwpMiddlewareOptions): Promise<QrwpMiddleware> {
  const log: X402Logger = options.log ?? { info: () => undefined, warn: () => undefined };
  const core = await PaywallCore.create(options, log);
  const clientIp = options.clientIp ?? ((req: IncomingMessage) => req.socket.remoteAddress ?? "unknown");

  /** Answers the request itself (false) or lets it through to `next()` (true). */
  async function run(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    const url = req.url ?? "/";
    const method = req.method ?? "GET";
    const path = url.split("?")[0] ?? "/";
    if (core.receiptsEnabled && method === "GET" && path === RECEIPTS_PATH) {
      const limit = new URLSearchParams(url.slice(path.length + 1)).getAll("limit");
      send(res, core.listReceipts(req.headers.authorization, limit.length > 1 ? limit : limit[0]));
      return false;
    }
    if (core.receiptsEnabled && method === "GET" && path === RECEIPT_EVENTS_PATH) {
      await core.subscribe(req, res);
      return false;
    }
    const encrypted = (req.socket as { encrypted?: boolean }).encrypted === true;
    const gate = await core.gate({
      method,
      url,
      headers: req.headers,
      protocol: encrypted ? "https" : "http",
      ip: clientIp(req),
    });
    if (gate.kind === "answer") {
      send(res, gate.answer);
      return false;
    }
    if (gate.kind === "verified") {
      const cc = res.getHeader("cache-control");
      const settled = await core.settle(gate, cc != null ? String(cc) : null);
      if (!settled.ok) {
        send(res, settled.answer);
        return false;
      }
      for (const [k, v] of Object.entries(settled.headers)) res.setHeader(k, v);
    }
    return true;
  }

  const mw = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void => {
    run(req, res).then(
      (proceed) => {
        if (proceed) next();
      },
      (err: unknown) => {
        log.warn({ err: err instanceof Error ? err.message : String(err) }, "x402 middleware failed");
        const body = { error: "merchant_unavailable" };
        send(res, { status: 503, headers: { "content-type": "application/json" }, body });
      },
    );
  };
  return Object.assign(mw, { paywall: core.handle, close: () => core.close() });
}
