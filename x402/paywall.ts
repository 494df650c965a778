/**
 * What every merchant adapter of x402 (the fastify plugin in x402/fastify.ts, the `node:http` / express
 * middleware in x402/http.ts) shares: the priced routes ({@link price}, fixed or per-request amounts), the
 * `x402HTTPResourceServer` over the `qrwp-channel` scheme and the merchant node's in-process facilitator
 * (x402/server.ts), the `HTTPAdapter` over a raw request, the cap on unpaid requests (x402/rate-limit.ts),
 * the mapping of refusals to coded bodies, settlement with its paid event (x402/events.ts), and the receipts
 * endpoints (`GET /v1/receipts`, `GET /v1/receipts/events`) with their bearer token.
 *
 * Answers (identical in both adapters):
 * - unpaid request to a priced route → 402, header `PAYMENT-REQUIRED` (base64 JSON `PaymentRequired` with a
 *   stateless direct-mode ticket and, unless `routed: false`, a fresh invoice of the merchant's node), body
 *   `{ error: "missing_payment" }`; beyond the unpaid cap → 429, `Retry-After: <s>`, body
 *   `{ error: "rate_limited" }`, no invoice minted;
 * - refused payment → 402 with the coded reason of `X402_REFUSAL_REASONS` in the body and in
 *   `PaymentRequired.error`; never the resource, and the merchant's state is unchanged (a direct transfer
 *   the node refused is not stored; one the payer's node later re-sends over libp2p pays the channel like
 *   any transfer: see DECISIONS); a refused payment takes a token of the cap, an empty bucket is 429;
 *   the merchant node unreachable while verifying → 402 `merchant_unavailable`;
 * - a per-request price that cannot be computed for this request (throws, ≤ 0, not an integer, ≥ 2^256) →
 *   400 `{ error: "unpriceable_request" }`, no invoice minted;
 * - merchant node unreachable while minting the invoice of an unpaid request → 503
 *   `{ error: "merchant_unavailable" }`.
 */
import { timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import {
  x402HTTPResourceServer,
  x402ResourceServer,
  withPrivateCacheControl,
  type HTTPAdapter,
  type HTTPProcessResult,
  type HTTPRequestContext,
  type HTTPResponseInstructions,
  type RouteConfig,
} from "@x402/core/server";
import {
  decodePaymentRequiredHeader,
  decodePaymentSignatureHeader,
  encodePaymentRequiredHeader,
} from "@x402/core/http";
import type { PaymentPayload, PaymentRequired } from "@x402/core/types";
import {
  assertArgument,
  isAtomicAmount,
  isX402RefusalReason,
  normalizeAddress,
  type X402RefusalReason,
} from "../protocol/index.js";
import { PaidEvents, type PaidEventsOptions } from "./events.js";
import { QrwpNodeApi, type NodeApiConfig } from "./node-api.js";
import { UnpaidRateLimiter, X402_RATE_LIMITED } from "./rate-limit.js";
import { ReceiptStore, type Receipt } from "./receipts.js";
import {
  createQrwpMerchant,
  decodesAsPayment,
  qrwpPaymentOption,
  qrwpTicketRouteHook,
  type QrwpMerchant,
  type X402Logger,
} from "./server.js";

/** Body `{ error }` of the 400 answered when a per-request price cannot be computed for the request. */
export const X402_UNPRICEABLE: X402RefusalReason = "unpriceable_request";
/** Path of the receipts list. */
export const RECEIPTS_PATH = "/v1/receipts";
/** Path of the paid-events SSE stream. */
export const RECEIPT_EVENTS_PATH = "/v1/receipts/events";

const MAX_UINT256 = (1n << 256n) - 1n;

/** What a per-request price function sees of the request (framework-neutral). */
export interface PriceRequest {
  /** Upper-case method. */
  method: string;
  /** Path without the query string, as received (not decoded). */
  path: string;
  /** Query parameters (first value of a repeated key; decoded). */
  query: Record<string, string | undefined>;
  /** Request headers (lower-case names). */
  headers: IncomingHttpHeaders;
}

/**
 * A per-request amount in token base units: a bigint, a decimal string or a safe integer, > 0 and < 2^256.
 * Evaluated for every request to the route, the paid retry included (so a payment buys what its own request
 * prices). Throwing refuses the request with 400 `unpriceable_request`.
 */
export type AmountFunction = (
  req: PriceRequest,
) => bigint | string | number | Promise<bigint | string | number>;

/** One priced route (see {@link price}). */
export interface PricedRoute {
  /** `"<METHOD> <path>"` as `x402HTTPResourceServer` matches it, e.g. `"GET /weather"`. */
  route: string;
  /** Token base units: a decimal string > 0, or a function of the request ({@link AmountFunction}). */
  amount: string | AmountFunction;
  /** Token address (the `asset`). */
  token: string;
  description?: string;
  mimeType?: string;
  /** Invoice lifetime and x402 `maxTimeoutSeconds` (default 300). */
  maxTimeoutSeconds?: number;
}

/**
 * Declares a priced route.
 * @param route - `"<METHOD> <path>"`, e.g. `"GET /weather"`.
 * @param amount - token base units (bigint or decimal string, > 0), or a function of the request returning
 *   them (metered pricing, e.g. `(req) => 10n * BigInt(req.query.units ?? "")`).
 * @param token - token address.
 * @throws QrwpError INVALID_ARGUMENT naming `route`, `amount` or `token`.
 */
export function price(
  route: string,
  amount: bigint | string | AmountFunction,
  token: string,
  options: Pick<PricedRoute, "description" | "mimeType" | "maxTimeoutSeconds"> = {},
): PricedRoute {
  assertArgument(/^[A-Z]+ \/\S*$/.test(route), "route must be '<METHOD> /path'", "route", route);
  if (typeof amount === "function")
    return { route, amount, token: normalizeAddress(token, "token"), ...options };
  const a = amount.toString();
  assertArgument(isAtomicAmount(a), "amount must be a positive integer of base units", "amount", a);
  return { route, amount: a, token: normalizeAddress(token, "token"), ...options };
}

/** Options shared by {@link qrwpPaywall} (x402/fastify.ts) and `qrwpMiddleware` (x402/http.ts). */
export interface QrwpPaywallOptions extends Pick<
  PaidEventsOptions,
  "onPaid" | "webhookUrl" | "webhookSecret" | "webhookTimeoutMs" | "webhookRetries"
> {
  /** The merchant's node API (its `api-token` is a secret). */
  node: NodeApiConfig;
  /** Priced routes, from {@link price}. */
  routes: PricedRoute[];
  /** SQLite file of the receipts (`":memory:"` for tests). */
  receiptsPath: string;
  /**
   * Bearer token for `GET /v1/receipts` and `GET /v1/receipts/events`; without it both are public. `false`
   * disables both routes.
   */
  adminToken?: string | false;
  /** See `QrwpFacilitatorOptions.paidWaitMs`. */
  paidWaitMs?: number;
  /** See `QrwpFacilitatorOptions.paidRecheckMs`. */
  paidRecheckMs?: number;
  /** See `QrwpFacilitatorOptions.directExpiryGraceMs`. */
  directExpiryGraceMs?: number;
  /**
   * Routed payments too (default true): every unpaid 402 then also names an invoice minted on the merchant
   * node (not fsync'd there). `false`: direct streaming only; an unpaid 402 writes nothing anywhere.
   */
  routed?: boolean;
  /** See `QrwpMerchantOptions.ticketKey` (default: a random key kept in the receipts file). */
  ticketKey?: Uint8Array;
  /**
   * Unpaid requests (no payment header, or one that does not decode) to priced routes per second over all
   * clients; each mints an invoice. `false`: no cap. Default 50.
   */
  maxUnpaidPerSecond?: number | false;
  /** The same per client IP. Default 10. */
  maxUnpaidPerIpPerSecond?: number | false;
  /** Client IPs the per-IP cap remembers (LRU). Default 10,000. */
  maxTrackedIps?: number;
  /** Most concurrent `GET /v1/receipts/events` subscribers. Default 100. */
  maxEventSubscribers?: number;
  /** SSE keep-alive comment interval in ms. Default 15,000. */
  eventsKeepAliveMs?: number;
}

/** What an adapter exposes about a running paywall. */
export interface QrwpPaywallHandle {
  receipts: ReceiptStore;
  network: string;
  merchant: { address: string; hub: string; chainId: string };
  /** Paid-event fan-out (SSE subscriber count, ...). */
  events: PaidEvents;
}

/** The request fields the core needs from an adapter. */
export interface PaywallRequest {
  method: string;
  /** Path and query as received (`req.url`). */
  url: string;
  headers: IncomingHttpHeaders;
  /** `"http"` or `"https"` (for the resource URL in `PaymentRequired`). */
  protocol: string;
  /** The client's IP (for the per-IP cap). */
  ip: string;
}

/** An answer the adapter sends as is (JSON body). */
export interface PaywallAnswer {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

type Verified = Extract<HTTPProcessResult, { type: "payment-verified" }>;

/** Result of {@link PaywallCore.gate}. */
export type Gate =
  | { kind: "pass" }
  | { kind: "answer"; answer: PaywallAnswer }
  | { kind: "verified"; verified: Verified; context: HTTPRequestContext; ip: string };

/** Result of {@link PaywallCore.settle}: headers to add to the paid response, or the refusal to send. */
export type Settled = { ok: true; headers: Record<string, string> } | { ok: false; answer: PaywallAnswer };

class UnpriceableRequest extends Error {}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** `HTTPAdapter` over a raw request; `hidePayment` hides an undecodable payment header from the SDK. */
class RequestAdapter implements HTTPAdapter {
  hidePayment = false;
  readonly path: string;
  readonly #search: URLSearchParams;
  constructor(readonly req: PaywallRequest) {
    const q = req.url.indexOf("?");
    this.path = (q < 0 ? req.url : req.url.slice(0, q)) || "/";
    this.#search = new URLSearchParams(q < 0 ? "" : req.url.slice(q + 1));
  }
  getHeader(name: string): string | undefined {
    const key = name.toLowerCase();
    if (this.hidePayment && (key === "payment-signature" || key === "x-payment")) return undefined;
    return first(this.req.headers[key]);
  }
  getMethod(): string {
    return this.req.method;
  }
  getPath(): string {
    return this.path;
  }
  getUrl(): string {
    return `${this.req.protocol}://${this.getHeader("host") ?? "localhost"}${this.req.url}`;
  }
  getAcceptHeader(): string {
    return this.getHeader("accept") ?? "";
  }
  getUserAgent(): string {
    return this.getHeader("user-agent") ?? "";
  }
  getQueryParams(): Record<string, string | string[]> {
    const out: Record<string, string | string[]> = {};
    for (const key of new Set(this.#search.keys())) {
      const all = this.#search.getAll(key);
      out[key] = all.length === 1 ? (all[0] as string) : all;
    }
    return out;
  }
  getQueryParam(name: string): string | string[] | undefined {
    return this.getQueryParams()[name];
  }
  priceRequest(): PriceRequest {
    const query: Record<string, string | undefined> = {};
    for (const [k, v] of this.#search) if (!(k in query)) query[k] = v;
    return { method: this.req.method.toUpperCase(), path: this.path, query, headers: this.req.headers };
  }
}

/** Evaluates a per-request amount and checks it (throws {@link UnpriceableRequest}). */
async function computeAmount(fn: AmountFunction, ctx: HTTPRequestContext): Promise<string> {
  let v: bigint | string | number;
  try {
    v = await fn((ctx.adapter as RequestAdapter).priceRequest());
  } catch (err) {
    throw new UnpriceableRequest(err instanceof Error ? err.message : String(err));
  }
  let n: bigint | null = null;
  if (typeof v === "bigint") n = v;
  else if (typeof v === "number" && Number.isSafeInteger(v)) n = BigInt(v);
  else if (isAtomicAmount(v)) n = BigInt(v);
  if (n === null || n <= 0n || n > MAX_UINT256)
    throw new UnpriceableRequest(`price is not a positive integer of base units: ${String(v)}`);
  return n.toString();
}

/** True if `header` is `Bearer <expected>` (timing-safe). */
export function bearerMatches(expected: string, header: string | string[] | undefined): boolean {
  const h = first(header);
  if (!h?.startsWith("Bearer ")) return false;
  const a = Buffer.from(h.slice(7));
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The coded reason of a refused request, from the SDK's `PaymentRequired.error` and the raw header. */
function refusalReason(
  paymentHeader: string | undefined,
  paymentRequired: PaymentRequired | null,
): X402RefusalReason {
  if (!paymentHeader) return "missing_payment";
  let payload: PaymentPayload;
  try {
    payload = decodePaymentSignatureHeader(paymentHeader);
  } catch {
    return "malformed_payment";
  }
  const error = paymentRequired?.error;
  if (isX402RefusalReason(error)) return error;
  // The SDK refuses before verify when the accepted requirements match none of the route's.
  const accepted = payload?.accepted as Partial<PaymentPayload["accepted"]> | undefined;
  if (!accepted || typeof accepted !== "object") return "malformed_payment";
  const same = paymentRequired?.accepts.find(
    (r) => r.scheme === accepted.scheme && r.network === accepted.network,
  );
  if (!same) return "wrong_payee";
  if (typeof accepted.payTo !== "string" || accepted.payTo.toLowerCase() !== same.payTo.toLowerCase())
    return "wrong_payee";
  if (typeof accepted.asset !== "string" || accepted.asset.toLowerCase() !== same.asset.toLowerCase())
    return "wrong_asset";
  if (accepted.amount !== same.amount) return "wrong_amount";
  return "malformed_payment";
}

/** A 402 (or other) instruction with the coded reason in the body and in `PAYMENT-REQUIRED.error`. */
function refusal(response: HTTPResponseInstructions, paymentHeader: string | undefined): PaywallAnswer {
  const headers = { ...response.headers };
  const key = Object.keys(headers).find((k) => k.toLowerCase() === "payment-required");
  let paymentRequired: PaymentRequired | null = null;
  if (key) {
    try {
      paymentRequired = decodePaymentRequiredHeader(headers[key] as string);
    } catch {
      paymentRequired = null;
    }
  }
  const reason = refusalReason(paymentHeader, paymentRequired);
  if (key && paymentRequired)
    headers[key] = encodePaymentRequiredHeader({ ...paymentRequired, error: reason });
  return answer(response.status, { error: reason }, headers);
}

/** A JSON answer (any `content-type` among `headers` is replaced). */
function answer(status: number, body: unknown, headers: Record<string, string> = {}): PaywallAnswer {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() !== "content-type") out[k] = v;
  return { status, headers: { ...out, "content-type": "application/json" }, body };
}

/**
 * The framework-neutral paywall. Build with {@link PaywallCore.create}; an adapter calls {@link gate} before
 * the handler, {@link settle} (or {@link cancel}) around it, {@link listReceipts} / {@link subscribe} for
 * the receipts routes, and {@link close} at shutdown.
 */
export class PaywallCore {
  readonly handle: QrwpPaywallHandle;
  readonly #http: x402HTTPResourceServer;
  readonly #limiter: UnpaidRateLimiter;
  readonly #adminToken: string | false | undefined;
  readonly #log: X402Logger;
  readonly #facilitator: { close(): void };

  private constructor(
    http: x402HTTPResourceServer,
    handle: QrwpPaywallHandle,
    limiter: UnpaidRateLimiter,
    opts: QrwpPaywallOptions,
    log: X402Logger,
    facilitator: { close(): void },
  ) {
    this.#facilitator = facilitator;
    this.#http = http;
    this.handle = handle;
    this.#limiter = limiter;
    this.#adminToken = opts.adminToken;
    this.#log = log;
  }

  /**
   * Opens the receipts store, asks the merchant node's `/v1/info` once (address, chain, hub) and builds the
   * x402 resource server over `opts.routes`.
   * @throws QrwpError INVALID_ARGUMENT for bad options; the node API's error (PEER_OFFLINE, UNAUTHORIZED, ...)
   *   when the node cannot be asked. Nothing stays open after a throw.
   */
  static async create(opts: QrwpPaywallOptions, log: X402Logger): Promise<PaywallCore> {
    const limiter = new UnpaidRateLimiter({
      ...(opts.maxUnpaidPerSecond !== undefined ? { perSecond: opts.maxUnpaidPerSecond } : {}),
      ...(opts.maxUnpaidPerIpPerSecond !== undefined ? { perIpPerSecond: opts.maxUnpaidPerIpPerSecond } : {}),
      ...(opts.maxTrackedIps !== undefined ? { maxTrackedIps: opts.maxTrackedIps } : {}),
    });
    const events = new PaidEvents({
      ...pick(opts, ["onPaid", "webhookUrl", "webhookSecret", "webhookTimeoutMs", "webhookRetries"]),
      ...(opts.maxEventSubscribers !== undefined ? { maxSubscribers: opts.maxEventSubscribers } : {}),
      ...(opts.eventsKeepAliveMs !== undefined ? { keepAliveMs: opts.eventsKeepAliveMs } : {}),
      log,
    });
    const receipts = new ReceiptStore(opts.receiptsPath);
    try {
      const merchant = await createQrwpMerchant(new QrwpNodeApi(opts.node), receipts, {
        log,
        ...(opts.paidWaitMs !== undefined ? { paidWaitMs: opts.paidWaitMs } : {}),
        ...(opts.paidRecheckMs !== undefined ? { paidRecheckMs: opts.paidRecheckMs } : {}),
        ...(opts.directExpiryGraceMs !== undefined ? { directExpiryGraceMs: opts.directExpiryGraceMs } : {}),
        ...(opts.routed !== undefined ? { routed: opts.routed } : {}),
        ...(opts.ticketKey !== undefined ? { ticketKey: opts.ticketKey } : {}),
        // A fixed price is the same for every request to the route: its tickets may be reused.
        fixedPriceRoutes: new Set(
          opts.routes.filter((r) => typeof r.amount === "string").map((r) => r.route),
        ),
      });
      const resourceServer = new x402ResourceServer(merchant.facilitator)
        .register(merchant.network, merchant.scheme)
        .onBeforeVerify(qrwpTicketRouteHook());
      const http = new x402HTTPResourceServer(resourceServer, routeTable(merchant, opts.routes));
      await http.initialize();
      const { info, network } = merchant;
      const handle = {
        receipts,
        network,
        merchant: { address: info.address, hub: info.hub, chainId: info.chainId },
        events,
      };
      return new PaywallCore(http, handle, limiter, opts, log, merchant.facilitator);
    } catch (err) {
      receipts.close();
      throw err;
    }
  }

  /** Whether `GET /v1/receipts` and `GET /v1/receipts/events` are served. */
  get receiptsEnabled(): boolean {
    return this.#adminToken !== false;
  }

  /**
   * Before the handler: `pass` (not a priced route), an `answer` to send instead of the resource (402, 429,
   * 400, 503), or `verified` (the payment is valid and held by the merchant's node; settle next).
   */
  async gate(req: PaywallRequest): Promise<Gate> {
    const adapter = new RequestAdapter(req);
    const path = adapter.path;
    let decodedPath = path;
    try {
      decodedPath = decodeURIComponent(path);
    } catch {
      // keep the raw path
    }
    const paymentHeader = adapter.getHeader("payment-signature") ?? adapter.getHeader("x-payment");
    const context: HTTPRequestContext = {
      adapter,
      path,
      decodedPath,
      method: req.method,
      ...(paymentHeader !== undefined ? { paymentHeader } : {}),
    };
    if (!this.#http.requiresPayment(context)) return { kind: "pass" };
    // Unpaid (no header, or one that does not decode): it would mint an invoice, so it meets the cap first.
    // A payment is verified unless its client's bucket is empty (refused payments drain it, below).
    const carriesPayment = decodesAsPayment(paymentHeader);
    if (carriesPayment && !this.#limiter.allows(req.ip))
      return {
        kind: "answer",
        answer: answer(429, { error: X402_RATE_LIMITED }, { "retry-after": "1" }),
      };
    if (!carriesPayment) {
      const taken = this.#limiter.take(req.ip);
      if (!taken.ok)
        return {
          kind: "answer",
          answer: answer(
            429,
            { error: X402_RATE_LIMITED },
            { "retry-after": String(taken.retryAfterSeconds) },
          ),
        };
    }
    // An undecodable header is answered like an unpaid request (fresh invoice), coded malformed_payment.
    if (paymentHeader !== undefined && !carriesPayment) {
      adapter.hidePayment = true;
      delete context.paymentHeader;
    }
    let result: HTTPProcessResult;
    try {
      result = await this.#http.processHTTPRequest(context);
    } catch (err) {
      const route = `${req.method} ${path}`;
      if (err instanceof UnpriceableRequest) {
        this.#log.info({ route, err: err.message }, "x402 request not priceable");
        return { kind: "answer", answer: answer(400, { error: X402_UNPRICEABLE }) };
      }
      this.#log.warn({ err: err instanceof Error ? err.message : String(err), route }, "x402 unavailable");
      return { kind: "answer", answer: answer(503, { error: "merchant_unavailable" }) };
    }
    if (result.type === "no-payment-required") return { kind: "pass" };
    if (result.type === "payment-error") {
      if (carriesPayment) this.#limiter.take(req.ip); // a refused payment counts like an unpaid request
      return { kind: "answer", answer: refusal(result.response, paymentHeader) };
    }
    return { kind: "verified", verified: result, context, ip: req.ip };
  }

  /**
   * Settles a verified payment: the receipt's insert-once decides (a concurrent or later reuse is 402
   * `replayed`). On success emits the paid event and returns the headers of the paid response:
   * `PAYMENT-RESPONSE` and `Cache-Control` (`cacheControl`, the response's current value, made private).
   */
  async settle(gate: Extract<Gate, { kind: "verified" }>, cacheControl: string | null): Promise<Settled> {
    const { verified, context } = gate;
    const settle = await this.#http.processSettlement(
      verified.paymentPayload,
      verified.paymentRequirements,
      verified.declaredExtensions,
      { request: context },
      undefined,
      verified.beforeHandlerSettlement,
    );
    if (!settle.success) {
      const reason = isX402RefusalReason(settle.errorReason) ? settle.errorReason : "not_paid";
      return {
        ok: false,
        answer: answer(settle.response.status, { error: reason }, settle.response.headers),
      };
    }
    this.#limiter.refund(gate.ip); // the 402 before this payment was not an unpaid request after all
    const receipt: Receipt | null = this.handle.receipts.get(settle.transaction);
    if (receipt) this.handle.events.emit(receipt);
    return {
      ok: true,
      headers: { ...settle.headers, "cache-control": withPrivateCacheControl(cacheControl) },
    };
  }

  /** The handler failed (status ≥ 400): nothing is settled; the payment stays usable. */
  async cancel(gate: Extract<Gate, { kind: "verified" }>, status: number): Promise<void> {
    await gate.verified.cancellationDispatcher.cancel({ reason: "handler_failed", responseStatus: status });
  }

  /** `GET /v1/receipts?limit=1..1000` (default 100): `{ receipts, count }`, 401 without the token, 400 bad limit. */
  listReceipts(authorization: string | string[] | undefined, limit: unknown): PaywallAnswer {
    if (!this.#authorized(authorization)) return answer(401, { error: "unauthorized" });
    let n = 100;
    if (limit !== undefined) {
      n = typeof limit === "string" && /^[0-9]{1,4}$/.test(limit) ? Number(limit) : 0;
      if (n < 1 || n > 1000) return answer(400, { error: "bad_request", message: "limit must be 1..1000" });
    }
    return answer(200, { receipts: this.handle.receipts.list(n), count: this.handle.receipts.count() });
  }

  /** `GET /v1/receipts/events` on a raw request/response: 401 without the token, else the SSE stream. */
  async subscribe(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!this.#authorized(req.headers.authorization)) {
      res.writeHead(401, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: "unauthorized" }));
      return;
    }
    await this.handle.events.subscribe(req, res);
  }

  /** Ends SSE streams (ours and the one to the merchant's node), stops webhook retries, closes the receipts store. */
  async close(): Promise<void> {
    this.#facilitator.close();
    await this.handle.events.close();
    this.handle.receipts.close();
  }

  #authorized(authorization: string | string[] | undefined): boolean {
    const token = this.#adminToken;
    return !token || bearerMatches(token, authorization);
  }
}

function pick<T extends object, K extends keyof T>(o: T, keys: K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}

/** The SDK's route table: fixed prices as `{ amount, asset }`, per-request ones as a `DynamicPrice`. */
function routeTable(merchant: QrwpMerchant, routes: PricedRoute[]): Record<string, RouteConfig> {
  const table: Record<string, RouteConfig> = {};
  for (const r of routes) {
    const fixed = typeof r.amount === "string" ? r.amount : "1";
    const option = qrwpPaymentOption(merchant, fixed, r.token, r.maxTimeoutSeconds);
    const fn = r.amount;
    table[r.route] = {
      accepts:
        typeof fn === "string"
          ? option
          : { ...option, price: async (ctx) => ({ amount: await computeAmount(fn, ctx), asset: r.token }) },
      ...(r.description !== undefined ? { description: r.description } : {}),
      ...(r.mimeType !== undefined ? { mimeType: r.mimeType } : {}),
    };
  }
  return table;
}
