/**
 * `qrwpPaywall`: a fastify 5 plugin that sells HTTP resources for QRWP payments with x402 v2 (HTTP 402;
 * spec: coinbase/x402 `specs/x402-specification-v2.md`); a thin adapter over the shared paywall of
 * x402/paywall.ts (there is no `@x402/fastify`). Answers, refusal codes, the unpaid cap and the paid events
 * are described there and in x402/events.ts.
 *
 * Flow per priced route (`authorization` flow):
 * - `preHandler`: unpaid → 402 with `PAYMENT-REQUIRED` (or 429 beyond the unpaid cap); a payment → verify
 *   (the merchant node holds it durably); refused → coded 402.
 * - handler runs; `onSend`: status < 400 → settle (the receipt is recorded exactly once, then the paid
 *   event is emitted) and add `PAYMENT-RESPONSE`; a replay that lost the race gets 402 and the handler's
 *   output is discarded. Status ≥ 400 → no settlement.
 * - `GET /v1/receipts` and `GET /v1/receipts/events` (SSE), bearer `adminToken` when set.
 *
 * State: an unpaid request adds nothing to this server beyond its rate-limit bucket; its cost is the invoice
 * row the merchant's node stores (expiring after `maxTimeoutSeconds`). The node API token is never logged.
 */
import type { FastifyInstance, FastifyPluginAsync, FastifyReply } from "fastify";
import {
  PaywallCore,
  RECEIPTS_PATH,
  RECEIPT_EVENTS_PATH,
  type Gate,
  type PaywallAnswer,
  type QrwpPaywallHandle,
  type QrwpPaywallOptions,
} from "./paywall.js";

export { price, type PricedRoute, type QrwpPaywallHandle, type QrwpPaywallOptions } from "./paywall.js";

declare module "fastify" {
  interface FastifyInstance {
    qrwpPaywall: QrwpPaywallHandle;
  }
  interface FastifyRequest {
    x402Verified?: Extract<Gate, { kind: "verified" }>;
  }
}

function send(reply: FastifyReply, a: PaywallAnswer) {
  return reply.code(a.status).headers(a.headers).send(a.body);
}

/**
 * The plugin. Asks the merchant node's `/v1/info` once at registration (address, chain, hub); registration
 * fails if the node is unreachable. Decorates the instance with `qrwpPaywall` ({@link QrwpPaywallHandle});
 * SSE streams end before the server closes and the receipts store closes with the instance.
 */
const paywall: FastifyPluginAsync<QrwpPaywallOptions> = async (app: FastifyInstance, opts) => {
  const core = await PaywallCore.create(opts, app.log.child({ component: "x402" }));
  app.addHook("preClose", async () => core.handle.events.close());
  app.addHook("onClose", async () => core.close());
  app.decorate("qrwpPaywall", core.handle);
  app.decorateRequest("x402Verified", undefined);

  app.addHook("preHandler", async (req, reply) => {
    const gate = await core.gate({
      method: req.method,
      url: req.url,
      headers: req.headers,
      protocol: req.protocol,
      ip: req.ip,
    });
    if (gate.kind === "answer") return send(reply, gate.answer);
    if (gate.kind === "verified") req.x402Verified = gate;
  });

  app.addHook("onSend", async (req, reply, payload) => {
    const verified = req.x402Verified;
    if (!verified) return payload;
    req.x402Verified = undefined;
    if (reply.statusCode >= 400) {
      await core.cancel(verified, reply.statusCode);
      return payload;
    }
    const cc = reply.getHeader("cache-control");
    const settled = await core.settle(verified, cc != null ? String(cc) : null);
    if (!settled.ok) {
      reply.code(settled.answer.status).headers(settled.answer.headers);
      return JSON.stringify(settled.answer.body);
    }
    reply.headers(settled.headers);
    return payload;
  });

  if (core.receiptsEnabled) {
    app.get(RECEIPTS_PATH, async (req, reply) =>
      send(reply, core.listReceipts(req.headers.authorization, (req.query as Record<string, unknown>).limit)),
    );
    app.get(RECEIPT_EVENTS_PATH, async (req, reply) => {
      reply.hijack();
      await core.subscribe(req.raw, reply.raw);
    });
  }
};

/** The fastify plugin (hooks apply to the whole instance it is registered on, like `fastify-plugin`). */
export const qrwpPaywall = Object.assign(paywall, {
  [Symbol.for("skip-override")]: true,
  [Symbol.for("fastify.display-name")]: "qrwpPaywall",
}) as FastifyPluginAsync<QrwpPaywallOptions>;
