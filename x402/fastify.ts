/**
 * `qrwpPaywall`: a fastify 5 plugin that sells HTTP resources for QRWP payments with x402 v2 (HTTP 402;
 * spec: coinbase/x402 `specs/x402-specification-v2.md`), built on `x402HTTPResourceServer` of
 * `@x402/core/server` (there is no `@x402/fastify`), the `qrwp-channel` scheme and an in-process
 * facilitator backed by the merchant's own QRWP node (x402/server.ts).
 *
 * Flow per priced route (`authorization` flow):
 * - `preHandler`: no `PAYMENT-SIGNATURE` → **402** with `PAYMENT-REQUIRED` (base64 JSON `PaymentRequired`,
 *   one `accepts` entry naming a fresh invoice of the merchant's node) and body `{ error: <reason> }`;
 *   a payment → verify (see `QrwpNodeFacilitator`); refused → 402 with the coded reason in the body and in
 *   `PaymentRequired.error`.
 * - handler runs; `onSend`: status < 400 → settle (the receipt is recorded exactly once) and add
 *   `PAYMENT-RESPONSE` (base64 JSON `SettleResponse`, `transaction` = payment hash); a replay that lost the
 *   race gets 402 and the handler's output is discarded. Status ≥ 400 → no settlement.
 * - `GET /v1/receipts` (optional bearer `adminToken`): the newest receipts.
 *
 * State: an unpaid request adds nothing to this server (no session, no cache, no receipt); its only cost is
 * the invoice row the merchant's node stores (expiring after `maxTimeoutSeconds`). Put a rate limit in front
 * of priced routes if unpaid floods matter. The merchant node's API token is a secret: never logged.
 * Bad client input is always a 402 with a reason of `X402_REFUSAL_REASONS`, never a 500; an unreachable
 * merchant node is 503 `merchant_unavailable`.
 */
import { timingSafeEqual } from "node:crypto";
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from "fastify";
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
  isAtomicAmount,
  isX402RefusalReason,
  normalizeAddress,
  assertArgument,
  type X402RefusalReason,
} from "../protocol/index.js";
import { QrwpNodeApi, type NodeApiConfig } from "./node-api.js";
import { ReceiptStore } from "./receipts.js";
import {
  createQrwpMerchant,
  decodesAsPayment,
  qrwpPaymentOption,
  type QrwpMerchant,
  type X402Logger,
} from "./server.js";

/** One priced route (see {@link price}). */
export interface PricedRoute {
  /** `"<METHOD> <path>"` as `x402HTTPResourceServer` matches it, e.g. `"GET /weather"`. */
  route: string;
  /** Token base units, decimal string > 0. */
  amount: string;
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
 * @param amount - token base units (bigint or decimal string, > 0).
 * @param token - token address.
 * @throws QrwpError INVALID_ARGUMENT naming `route`, `amount` or `token`.
 */
export function price(
  route: string,
  amount: bigint | string,
  token: string,
  options: Pick<PricedRoute, "description" | "mimeType" | "maxTimeoutSeconds"> = {},
): PricedRoute {
  assertArgument(/^[A-Z]+ \/\S*$/.test(route), "route must be '<METHOD> /path'", "route", route);
  const a = amount.toString();
  assertArgument(isAtomicAmount(a), "amount must be a positive integer of base units", "amount", a);
  return { route, amount: a, token: normalizeAddress(token, "token"), ...options };
}

/** Options of {@link qrwpPaywall}. */
export interface QrwpPaywallOptions {
  /** The merchant's node API (its `api-token` is a secret). */
  node: NodeApiConfig;
  /** Priced routes, from {@link price}. */
  routes: PricedRoute[];
  /** SQLite file of the receipts (`":memory:"` for tests). */
  receiptsPath: string;
  /** Bearer token for `GET /v1/receipts`; without it the list is public. `false` disables the route. */
  adminToken?: string | false;
  /** See `QrwpFacilitatorOptions.paidWaitMs`. */
  paidWaitMs?: number;
}

/** What the plugin decorates the fastify instance with (`app.qrwpPaywall`). */
export interface QrwpPaywallHandle {
  receipts: ReceiptStore;
  network: string;
  merchant: { address: string; hub: string; chainId: string };
}

declare module "fastify" {
  interface FastifyInstance {
    qrwpPaywall: QrwpPaywallHandle;
  }
  interface FastifyRequest {
    x402Verified?: Extract<HTTPProcessResult, { type: "payment-verified" }>;
    x402Context?: HTTPRequestContext;
  }
}

/** `HTTPAdapter` over a fastify request; `hidePayment` hides an undecodable payment header from the SDK. */
class FastifyAdapter implements HTTPAdapter {
  hidePayment = false;
  constructor(readonly req: FastifyRequest) {}
  getHeader(name: string): string | undefined {
    const key = name.toLowerCase();
    if (this.hidePayment && (key === "payment-signature" || key === "x-payment")) return undefined;
    const v = this.req.headers[key];
    return Array.isArray(v) ? v[0] : v;
  }
  getMethod(): string {
    return this.req.method;
  }
  getPath(): string {
    return this.req.url.split("?")[0] ?? "/";
  }
  getUrl(): string {
    return `${this.req.protocol}://${this.req.headers.host ?? "localhost"}${this.req.url}`;
  }
  getAcceptHeader(): string {
    return this.getHeader("accept") ?? "";
  }
  getUserAgent(): string {
    return this.getHeader("user-agent") ?? "";
  }
  getQueryParams(): Record<string, string | string[]> {
    return (this.req.query ?? {}) as Record<string, string | string[]>;
  }
  getQueryParam(name: string): string | string[] | undefined {
    return this.getQueryParams()[name];
  }
}

function tokenMatches(expected: string, header: string | undefined): boolean {
  if (!header?.startsWith("Bearer ")) return false;
  const a = Buffer.from(header.slice(7));
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

/** Sends a 402 (or other) instruction with the coded reason in the body and in `PAYMENT-REQUIRED.error`. */
function sendRefusal(
  reply: FastifyReply,
  response: HTTPResponseInstructions,
  paymentHeader: string | undefined,
) {
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
  return reply
    .code(response.status)
    .headers(headers)
    .header("content-type", "application/json")
    .send({ error: reason });
}

/**
 * The plugin. Asks the merchant node's `/v1/info` once at registration (address, chain, hub); registration
 * fails if the node is unreachable. Decorates the instance with `qrwpPaywall` ({@link QrwpPaywallHandle});
 * the receipts store closes with the instance.
 */
const paywall: FastifyPluginAsync<QrwpPaywallOptions> = async (app: FastifyInstance, opts) => {
  const log: X402Logger = app.log.child({ component: "x402" });
  const receipts = new ReceiptStore(opts.receiptsPath);
  app.addHook("onClose", async () => receipts.close());
  let merchant: QrwpMerchant;
  try {
    merchant = await createQrwpMerchant(new QrwpNodeApi(opts.node), receipts, {
      log,
      ...(opts.paidWaitMs !== undefined ? { paidWaitMs: opts.paidWaitMs } : {}),
    });
  } catch (err) {
    receipts.close();
    throw err;
  }
  const { info, network } = merchant;
  const resourceServer = new x402ResourceServer(merchant.facilitator).register(network, merchant.scheme);
  const routes: Record<string, RouteConfig> = {};
  for (const r of opts.routes) {
    routes[r.route] = {
      accepts: qrwpPaymentOption(merchant, r.amount, r.token, r.maxTimeoutSeconds),
      ...(r.description !== undefined ? { description: r.description } : {}),
      ...(r.mimeType !== undefined ? { mimeType: r.mimeType } : {}),
    };
  }
  const http = new x402HTTPResourceServer(resourceServer, routes);
  await http.initialize();

  app.decorate("qrwpPaywall", {
    receipts,
    network,
    merchant: { address: info.address, hub: info.hub, chainId: info.chainId },
  });
  app.decorateRequest("x402Verified", undefined);
  app.decorateRequest("x402Context", undefined);

  app.addHook("preHandler", async (req, reply) => {
    const adapter = new FastifyAdapter(req);
    const path = adapter.getPath();
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
    if (!http.requiresPayment(context)) return;
    // An undecodable header is answered like an unpaid request (fresh invoice), coded malformed_payment.
    if (paymentHeader !== undefined && !decodesAsPayment(paymentHeader)) {
      adapter.hidePayment = true;
      delete context.paymentHeader;
    }
    let result: HTTPProcessResult;
    try {
      result = await http.processHTTPRequest(context);
    } catch (err) {
      log.warn(
        { err: err instanceof Error ? err.message : String(err), route: `${req.method} ${path}` },
        "x402 unavailable",
      );
      return reply
        .code(503)
        .header("content-type", "application/json")
        .send({ error: "merchant_unavailable" });
    }
    if (result.type === "no-payment-required") return;
    if (result.type === "payment-error") return sendRefusal(reply, result.response, paymentHeader);
    req.x402Verified = result;
    req.x402Context = context;
  });

  app.addHook("onSend", async (req, reply, payload) => {
    const verified = req.x402Verified;
    if (!verified) return payload;
    req.x402Verified = undefined;
    if (reply.statusCode >= 400) {
      await verified.cancellationDispatcher.cancel({
        reason: "handler_failed",
        responseStatus: reply.statusCode,
      });
      return payload;
    }
    const settle = await http.processSettlement(
      verified.paymentPayload,
      verified.paymentRequirements,
      verified.declaredExtensions,
      { request: req.x402Context as HTTPRequestContext },
      undefined,
      verified.beforeHandlerSettlement,
    );
    if (!settle.success) {
      const reason = isX402RefusalReason(settle.errorReason) ? settle.errorReason : "not_paid";
      reply.code(settle.response.status);
      for (const [k, v] of Object.entries(settle.response.headers)) reply.header(k, v);
      reply.header("content-type", "application/json");
      return JSON.stringify({ error: reason });
    }
    for (const [k, v] of Object.entries(settle.headers)) reply.header(k, v);
    const cc = reply.getHeader("cache-control");
    reply.header("cache-control", withPrivateCacheControl(cc != null ? String(cc) : null));
    return payload;
  });

  if (opts.adminToken !== false) {
    const adminToken = opts.adminToken;
    app.get<{ Querystring: { limit?: number } }>(
      "/v1/receipts",
      {
        schema: {
          querystring: {
            type: "object",
            additionalProperties: false,
            properties: { limit: { type: "integer", minimum: 1, maximum: 1000 } },
          },
        },
      },
      async (req, reply) => {
        if (adminToken && !tokenMatches(adminToken, req.headers.authorization)) {
          return reply.code(401).send({ error: "unauthorized" });
        }
        return { receipts: receipts.list(req.query.limit ?? 100), count: receipts.count() };
      },
    );
  }
};

/** The fastify plugin (hooks apply to the whole instance it is registered on, like `fastify-plugin`). */
export const qrwpPaywall = Object.assign(paywall, {
  [Symbol.for("skip-override")]: true,
  [Symbol.for("fastify.display-name")]: "qrwpPaywall",
}) as FastifyPluginAsync<QrwpPaywallOptions>;
