/**
 * The node's HTTP API (fastify 5, JSON, OpenAPI at `/docs`). Every route but `/docs` needs
 * `Authorization: Bearer <token>` (the data directory's `api-token`). Amounts are decimal strings of token
 * base units, at most 2^256 - 1. Errors are `{ "error": { "code", "message", "details" } }` with the
 * matching HTTP status; request validation failures (a wrong type, an unknown field: nothing is coerced or
 * dropped) are 400 INVALID_ARGUMENT naming the field in `details.field`. 4xx answers are the client's
 * mistakes (nothing happened); 5xx are ours or the network's.
 *
 * Payments (`POST /v1/payments`): 201 `completed`; 202 `pending` when the outcome is not known yet (a direct
 * payment signed but not acknowledged because the partner is offline or slow, or a routed payment whose lock
 * is outstanding): it may still complete, so poll `GET /v1/payments/:id` and never pay again under a new id.
 * Retry with the SAME `paymentId`: the same target, token and amount return the existing payment as it
 * stands (a pending direct payment is re-delivered, never signed twice); another target, token or amount is
 * 409 CONFLICT. A payment has failed only when its status is `failed`, or when the call was refused with a
 * 4xx (or a 5xx without a payment record: then nothing was signed and `GET /v1/payments/:id` is 404).
 */
import { timingSafeEqual } from "node:crypto";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import type { Logger } from "pino";
import { QrwpError, isQrwpError } from "../../protocol/index.js";
import {
  STRICT_AJV,
  errorBody,
  installErrorHandler,
  parseAmount,
  noQuery,
  parseIntegerParam,
} from "../../host/http.js";
import type { ChannelService } from "../channels/service.js";
import type { PaymentService } from "../payments/service.js";
import { payAny } from "../payments/dispatch.js";
import {
  acceptedDirectTransferJson,
  channelJson,
  channelPaymentJson,
  cursorText,
  fromBase64Url,
  invoiceJson,
  listedPaymentJson,
  mediatedPaymentJson,
  parseCursor,
  paymentJson,
  routeJson,
} from "./json.js";
import type { WatchtowerStatus } from "../watchtowers.js";
import type { NodeStore, PaymentDirection, PaymentStatus } from "../store/store.js";
import {
  acceptDirectTransferBody,
  channelIdParam,
  closeBody,
  depositBody,
  withdrawBody,
  directPaymentBody,
  directPaymentsBatchBody,
  infoBody,
  invoiceBody,
  listPaymentsQuery,
  noBody,
  openChannelBody,
  payBody,
  paymentHashParam,
  paymentIdParam,
  processedBody,
  routesQuery,
} from "./schemas.js";
import { NodeEventStream, type NodeEventSources } from "./events.js";

export { MAX_DIRECT_TRANSFER_CHARS } from "./schemas.js";
export * from "./json.js";

export interface ApiInfo {
  address: string;
  peerId: string;
  multiaddrs: () => string[];
  chainId: string;
  hub: string;
  bridge: string;
  connectedPeers: () => string[];
  /** Each configured watchtower's status (empty without watchtowers). */
  watchtowers?: () => WatchtowerStatus[];
}

export interface ApiServerInit {
  service: ChannelService;
  /** Multi-hop payments, routes and invoices; without it only direct payments are served. */
  payments?: PaymentService;
  info: ApiInfo;
  /** Read by `GET /v1/payments` only (the list of payments); every write goes through the services. */
  store: NodeStore;
  token: string;
  log: Logger;
  /** What `GET /v1/events` relays; without it the route answers only an empty stream of keep-alives. */
  events?: NodeEventSources;
  /** Most concurrent `GET /v1/events` streams (default 32). */
  maxEventSubscribers?: number;
  /** `GET /v1/events` keep-alive comment interval, ms (default 15,000). */
  eventsKeepAliveMs?: number;
  /**
   * Called before each response is sent: what the response reports must be durable by then (the node makes
   * its store durable here).
   */
  beforeReply?: () => void | Promise<void>;
}

/**
 * Log level of the x402 direct-streaming routes (sign, accept, acknowledge): their per-request lines are
 * dropped below `warn` (at a thousand paid requests a second the two info lines per request were about a
 * tenth of the node's CPU); failures (5xx) are still logged.
 */
const HOT_ROUTE_LOG_LEVEL = "warn";

function requirePayments(payments: PaymentService | undefined): PaymentService {
  if (!payments) throw new QrwpError("NOT_FOUND", "multi-hop payments are not enabled on this node");
  return payments;
}

function tokenMatches(expected: string, header: string | undefined): boolean {
  if (!header?.startsWith("Bearer ")) return false;
  const a = Buffer.from(header.slice(7));
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Builds (does not listen) the API server. */
export async function buildApiServer(init: ApiServerInit): Promise<FastifyInstance> {
  const { service, info, token } = init;
  const app = Fastify({
    loggerInstance: init.log.child({ component: "api" }) as FastifyBaseLogger,
    bodyLimit: 64 * 1024,
    ajv: STRICT_AJV,
    // Two info lines per request cost more than a payment's signature at a thousand requests a second:
    // requests are logged at debug (below), errors by the error handler as before.
    disableRequestLogging: true,
  });
  app.addHook("onResponse", async (req, reply) => {
    req.log.debug(
      { method: req.method, url: req.url, statusCode: reply.statusCode, ms: reply.elapsedTime },
      "request completed",
    );
  });

  await app.register(swagger, {
    openapi: {
      info: { title: "QRWP node API", version: "1" },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: "/docs" });

  app.addHook("onRequest", async (req) => {
    if (req.url.startsWith("/docs")) return;
    if (!tokenMatches(token, req.headers.authorization)) {
      throw new QrwpError("UNAUTHORIZED", "missing or wrong bearer token", { field: "authorization" });
    }
  });

  installErrorHandler(app);

  const eventStream = new NodeEventStream({
    sources: init.events ?? { channels: { on: () => undefined, off: () => undefined } },
    channelView: (channelId) => (service.registry.has(channelId) ? service.getChannel(channelId) : null),
    log: init.log.child({ component: "api-events" }),
    ...(init.maxEventSubscribers !== undefined ? { maxSubscribers: init.maxEventSubscribers } : {}),
    ...(init.eventsKeepAliveMs !== undefined ? { keepAliveMs: init.eventsKeepAliveMs } : {}),
  });
  eventStream.start();
  // Open streams would hold fastify's close: end them first.
  app.addHook("preClose", async () => eventStream.close());
  const beforeReply = init.beforeReply;
  if (beforeReply) {
    app.addHook("onSend", async (_req, _reply, payload) => {
      await beforeReply();
      return payload;
    });
  }

  app.get(
    "/v1/events",
    {
      schema: {
        summary: "Server-Sent Events: channel, payment and close events (see node/api/events.ts)",
        description:
          "text/event-stream; `event: channel|payment|close`, `id: <n>`, `data: <JSON>` with bigints as decimal " +
          "strings; keep-alive comments. 503 UNAVAILABLE (field `subscribers`) when the subscriber cap is reached.",
        querystring: noQuery,
      },
    },
    async (req, reply) => {
      try {
        eventStream.assertRoom();
      } catch (err) {
        void reply.header("retry-after", "5");
        throw err;
      }
      reply.hijack();
      await eventStream.subscribe(req.raw, reply.raw);
    },
  );

  app.get(
    "/v1/info",
    {
      schema: {
        summary: "Node identity, chain and deployment, watchtowers",
        querystring: noQuery,
        response: { 200: infoBody, 401: errorBody },
      },
    },
    async () => ({
      address: info.address,
      peerId: info.peerId,
      multiaddrs: info.multiaddrs(),
      chainId: info.chainId,
      hub: info.hub,
      bridge: info.bridge,
      connectedPeers: info.connectedPeers(),
      channels: service.listChannels().length,
      watchtowers: info.watchtowers?.() ?? [],
    }),
  );

  app.get(
    "/v1/channels",
    { schema: { summary: "All channels with balances", querystring: noQuery } },
    async () => ({ channels: service.listChannels().map(channelJson) }),
  );

  app.get<{ Params: { id: string } }>(
    "/v1/channels/:id",
    {
      schema: {
        summary: "One channel",
        params: channelIdParam,
        querystring: noQuery,
        response: { 404: errorBody },
      },
    },
    async (req) => channelJson(service.getChannel(BigInt(req.params.id))),
  );

  app.post<{
    Body: {
      partner: string;
      partnerMultiaddr?: string;
      token: string;
      deposit: string;
      settleTimeoutSeconds?: number;
    };
  }>(
    "/v1/channels",
    {
      schema: {
        summary: "Open a channel on-chain and deposit",
        description:
          "400 INVALID_ARGUMENT naming `partnerMultiaddr` for a partner this node does not know without one; " +
          "422 INSUFFICIENT_FUNDS (field `deposit`) when the wallet holds less than the deposit (nothing is sent).",
        body: openChannelBody,
        querystring: noQuery,
      },
    },
    async (req, reply) => {
      const b = req.body;
      const view = await service.openChannel({
        partner: b.partner,
        token: b.token,
        depositAmount: parseAmount(b.deposit, "deposit"),
        ...(b.partnerMultiaddr ? { partnerMultiaddr: b.partnerMultiaddr } : {}),
        ...(b.settleTimeoutSeconds ? { settleTimeoutSeconds: b.settleTimeoutSeconds } : {}),
      });
      return reply.status(201).send(channelJson(view));
    },
  );

  app.post<{ Params: { id: string }; Body: { totalDeposit: string } }>(
    "/v1/channels/:id/deposit",
    {
      schema: {
        summary: "Raise our total deposit (monotonic)",
        description:
          "Simulated before anything is approved or sent: 400 for a deposit the hub refuses, 422 " +
          "INSUFFICIENT_FUNDS when the wallet holds less than the increase, 409 CHANNEL_STATE when not open.",
        params: channelIdParam,
        querystring: noQuery,
        body: depositBody,
      },
    },
    async (req) =>
      channelJson(
        await service.deposit(BigInt(req.params.id), parseAmount(req.body.totalDeposit, "totalDeposit", 1n)),
      ),
  );

  app.post<{ Params: { id: string }; Body: { amount: string } }>(
    "/v1/channels/:id/withdraw",
    {
      schema: {
        summary: "Withdraw part of our balance from an open channel to our wallet",
        description:
          "The partner co-signs the EIP-712 Withdraw, then ChannelHub.setTotalWithdraw pays it out through the " +
          "Bridge. 409 INSUFFICIENT_CAPACITY above our balance, 409 CHANNEL_STATE when the channel is not open, " +
          "closing, or a withdraw of ours is in flight, 502 PEER_REJECTED when the partner refuses.",
        params: channelIdParam,
        querystring: noQuery,
        body: withdrawBody,
      },
    },
    async (req) =>
      channelJson(await service.withdraw(BigInt(req.params.id), parseAmount(req.body.amount, "amount", 1n))),
  );

  app.post<{ Params: { id: string }; Body: { cooperative?: boolean } | null | undefined }>(
    "/v1/channels/:id/close",
    {
      schema: {
        summary: "Close cooperatively (default) or unilaterally",
        params: channelIdParam,
        querystring: noQuery,
        body: closeBody,
      },
    },
    async (req) =>
      channelJson(await service.close(BigInt(req.params.id), { cooperative: req.body?.cooperative ?? true })),
  );

  app.post<{ Params: { id: string } }>(
    "/v1/channels/:id/settle",
    {
      schema: {
        summary: "Settle a closed channel after its settle timeout",
        params: channelIdParam,
        querystring: noQuery,
        body: noBody,
      },
    },
    async (req) => channelJson(await service.settle(BigInt(req.params.id))),
  );

  app.post<{
    Body: {
      target: string;
      token: string;
      amount: string;
      paymentId?: string;
      maxFee?: string;
      timeoutSeconds?: number;
      paymentHash?: string;
      mode?: "auto" | "direct" | "routed";
    };
  }>(
    "/v1/payments",
    {
      schema: {
        summary:
          "Pay any node: directly over our channel with the target (mode auto/direct), else through mediators with HTLCs",
        description:
          "201: completed. 202: pending, the outcome is not known yet (may still complete; poll " +
          "GET /v1/payments/:id). Retry only with the same paymentId: the same target/token/amount return the " +
          "existing payment (never paid twice), another is 409 CONFLICT. Failed: status `failed`, or a coded " +
          "error answer (4xx, or 5xx when nothing was signed).",
        body: payBody,
        querystring: noQuery,
      },
    },
    async (req, reply) => {
      const b = req.body;
      // The payments layer chooses direct or routed (node/payments/dispatch.ts).
      const out = await payAny(service, init.payments, {
        target: b.target,
        token: b.token,
        amount: parseAmount(b.amount, "amount", 1n),
        mode: b.mode ?? "auto",
        ...(b.paymentId ? { paymentId: b.paymentId } : {}),
        ...(b.maxFee !== undefined ? { maxFee: parseAmount(b.maxFee, "maxFee") } : {}),
        ...(b.timeoutSeconds ? { timeoutSeconds: b.timeoutSeconds } : {}),
        ...(b.paymentHash ? { paymentHash: b.paymentHash } : {}),
      });
      const status = out.payment.status === "completed" ? 201 : 202;
      return out.kind === "direct"
        ? reply.status(status).send({ kind: "direct", fee: "0", ...paymentJson(out.payment) })
        : reply.status(status).send(mediatedPaymentJson(out.payment));
    },
  );

  app.post<{
    Body: { target: string; token: string; amount: string; paymentId?: string; notAfterMs?: number };
  }>(
    "/v1/payments/direct-transfers",
    {
      schema: {
        summary:
          "Sign (do not send) a direct payment to a channel partner for delivery over HTTP (x402 direct streaming)",
        description:
          "201 {payment (status pending), channelId, nonce, transfer}: `transfer` is the unpadded base64url of the " +
          "stored envelope (a DirectTransfer, or a BalanceUpdate of direct changes shared by the calls signed " +
          "together); the partner's node accepts it at POST /v1/transfers/direct and the payment completes at " +
          "POST /v1/payments/:paymentId/processed (or when the libp2p re-send is acknowledged).",
        body: directPaymentBody,
        querystring: noQuery,
      },
      logLevel: HOT_ROUTE_LOG_LEVEL,
    },
    async (req, reply) => {
      const b = req.body;
      const signed = await service.signDirectTransfer(
        {
          target: b.target,
          token: b.token,
          amount: parseAmount(b.amount, "amount", 1n),
          ...(b.paymentId ? { paymentId: b.paymentId } : {}),
        },
        b.notAfterMs !== undefined ? { notAfterMs: b.notAfterMs } : {},
      );
      return reply.status(201).send({
        payment: { kind: "direct", fee: "0", ...paymentJson(signed.payment) },
        channelId: signed.payment.channelId.toString(),
        nonce: signed.payment.nonce.toString(),
        transfer: Buffer.from(signed.transfer).toString("base64url"),
      });
    },
  );

  app.post<{
    Body: {
      target: string;
      token: string;
      payments: { amount: string; paymentId: string; notAfterMs?: number }[];
    };
  }>(
    "/v1/payments/direct-transfers/batch",
    {
      schema: {
        summary:
          "Sign (do not send) several direct payments to one channel partner, normally under one proof (x402 direct streaming)",
        description:
          "201 {transfers: [base64url envelope], results: [{paymentId, transfer: <index in transfers>, channelId, " +
          "nonce, payment} or {paymentId, error: {code, message, details}}]} in the order asked, as " +
          "POST /v1/payments/direct-transfers answers each one; when every payment is refused, that refusal of " +
          "the first is the answer (its HTTP status and coded body).",
        body: directPaymentsBatchBody,
        querystring: noQuery,
      },
      logLevel: HOT_ROUTE_LOG_LEVEL,
    },
    async (req, reply) => {
      const b = req.body;
      const outcomes = await service.signDirectTransfers(
        b.target,
        b.token,
        b.payments.map((p, i) => ({
          amount: parseAmount(p.amount, `payments.${i}.amount`, 1n),
          paymentId: p.paymentId,
          ...(p.notAfterMs !== undefined ? { notAfterMs: p.notAfterMs } : {}),
        })),
      );
      if (outcomes.every((o) => o.status === "rejected")) throw (outcomes[0] as PromiseRejectedResult).reason;
      const transfers: string[] = [];
      const index = new Map<Uint8Array, number>();
      const results = outcomes.map((o, i) => {
        const paymentId = b.payments[i]!.paymentId;
        if (o.status === "rejected") {
          const err = o.reason;
          return {
            paymentId,
            error: isQrwpError(err)
              ? err.toJSON()
              : { code: "INTERNAL", message: "signing failed", details: {} },
          };
        }
        let at = index.get(o.value.transfer);
        if (at === undefined) {
          at = transfers.push(Buffer.from(o.value.transfer).toString("base64url")) - 1;
          index.set(o.value.transfer, at);
        }
        return {
          paymentId,
          transfer: at,
          channelId: o.value.payment.channelId.toString(),
          nonce: o.value.payment.nonce.toString(),
          payment: { kind: "direct", fee: "0", ...paymentJson(o.value.payment) },
        };
      });
      return reply.status(201).send({ transfers, results });
    },
  );

  app.post<{
    Params: { paymentId: string };
    Body: { processed: { channelId: string; nonce: string; signature: string } };
  }>(
    "/v1/payments/:paymentId/processed",
    {
      schema: {
        summary:
          "Complete a direct payment with the partner's signed Processed acknowledgement (relayed over HTTP)",
        params: paymentIdParam("paymentId"),
        querystring: noQuery,
        body: processedBody,
      },
      logLevel: HOT_ROUTE_LOG_LEVEL,
    },
    async (req) => {
      const p = req.body.processed;
      const payment = await service.confirmProcessed(req.params.paymentId, {
        channelId: parseAmount(p.channelId, "processed.channelId"),
        nonce: parseAmount(p.nonce, "processed.nonce"),
        signature: p.signature,
      });
      return { kind: "direct", fee: "0", ...paymentJson(payment) };
    },
  );

  app.post<{ Body: { transfer: string; token?: string } }>(
    "/v1/transfers/direct",
    {
      schema: {
        summary:
          "Accept a partner's DirectTransfer (or BalanceUpdate of direct payments) relayed over HTTP (x402 direct streaming)",
        description:
          "200 {paymentId (null for several), payments: [{paymentId, amount}], channelId, nonce, amount (the sum), " +
          "token, partner, processed: {channelId, nonce, signature}}; the identical transfer again gives the same " +
          "answer and changes nothing.",
        body: acceptDirectTransferBody,
        querystring: noQuery,
      },
      logLevel: HOT_ROUTE_LOG_LEVEL,
    },
    async (req) => {
      const b = req.body;
      const accepted = await service.acceptDirectTransfer(fromBase64Url(b.transfer, "transfer"), {
        ...(b.token ? { token: b.token } : {}),
      });
      return acceptedDirectTransferJson(accepted);
    },
  );

  app.get<{
    Querystring: { limit?: string; status?: PaymentStatus; direction?: PaymentDirection; before?: string };
  }>(
    "/v1/payments",
    {
      schema: {
        summary: "Payments sent and received (direct and routed), newest first, a page at a time",
        description:
          "200 {payments, nextCursor}: each payment as GET /v1/payments/:id shows it; `nextCursor` (null on " +
          "the last page) is the `before` of the next page. Filters: `status`, `direction`.",
        querystring: listPaymentsQuery,
      },
    },
    async (req) => {
      const q = req.query;
      const page = init.store.listPayments({
        limit: q.limit !== undefined ? parseIntegerParam(q.limit, "limit", 1, 1000) : 100,
        ...(q.status ? { status: q.status } : {}),
        ...(q.direction ? { direction: q.direction } : {}),
        ...(q.before !== undefined ? { before: parseCursor(q.before) } : {}),
      });
      return {
        payments: page.payments.map(listedPaymentJson),
        nextCursor: page.nextCursor ? cursorText(page.nextCursor) : null,
      };
    },
  );

  app.get<{ Params: { id: string } }>(
    "/v1/payments/:id",
    {
      schema: {
        summary: "One payment by id: a routed payment (route, fees, attempts, failure) or a direct one",
        params: paymentIdParam("id"),
        querystring: noQuery,
      },
    },
    async (req) => {
      const routed = init.payments?.getPayment(req.params.id);
      if (routed) return mediatedPaymentJson(routed);
      return channelPaymentJson(service.getPayment(req.params.id));
    },
  );

  app.get<{ Querystring: { target: string; token: string; amount: string; maxFee?: string; k?: string } }>(
    "/v1/routes",
    {
      schema: {
        summary: "Routes to a target for an amount, best first, with per-hop amounts, expirations and fees",
        querystring: routesQuery,
      },
    },
    async (req) => {
      const q = req.query;
      const routes = requirePayments(init.payments).findRoutes(
        q.target,
        q.token,
        parseAmount(q.amount, "amount", 1n),
        q.maxFee !== undefined ? parseAmount(q.maxFee, "maxFee") : null,
        q.k !== undefined ? parseIntegerParam(q.k, "k", 1, 10) : 3,
      );
      return { routes: routes.map(routeJson) };
    },
  );

  app.post<{ Body: { token: string; amount: string; description?: string; expirySeconds?: number } }>(
    "/v1/invoices",
    {
      schema: {
        summary: "Create an invoice: a payment hash whose secret this node reveals when paid",
        body: invoiceBody,
        querystring: noQuery,
      },
    },
    async (req, reply) => {
      const b = req.body;
      const invoice = requirePayments(init.payments).createInvoice({
        token: b.token,
        amount: parseAmount(b.amount, "amount", 1n),
        ...(b.description !== undefined ? { description: b.description } : {}),
        ...(b.expirySeconds ? { expirySeconds: b.expirySeconds } : {}),
      });
      return reply.status(201).send(invoiceJson(invoice, info.address));
    },
  );

  app.get<{ Params: { paymentHash: string } }>(
    "/v1/invoices/:paymentHash",
    {
      schema: {
        summary: "One invoice and whether it was paid",
        params: paymentHashParam,
        querystring: noQuery,
      },
    },
    async (req) =>
      invoiceJson(requirePayments(init.payments).getInvoice(req.params.paymentHash), info.address),
  );

  return app;
}
