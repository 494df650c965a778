/**
 * The node's HTTP API (fastify 5, JSON, OpenAPI at `/docs`). Every route but `/docs` needs
 * `Authorization: Bearer <token>` (the data directory's `api-token`). Amounts are decimal strings of token
 * base units. Errors are `{ "error": { "code", "message", "details" } }` with the matching HTTP status;
 * request validation failures are 400 INVALID_ARGUMENT naming the field.
 */
import { timingSafeEqual } from "node:crypto";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyError } from "fastify";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import type { Logger } from "pino";
import { QrwpError, isQrwpError, type ErrorCode } from "../../protocol/index.js";
import type { ChannelService, ChannelView } from "../channels/service.js";
import type { PaymentRecord } from "../store/store.js";

/** HTTP status for each error code. */
const STATUS: Record<ErrorCode, number> = {
  INVALID_ARGUMENT: 400,
  INVALID_MESSAGE: 400,
  INVALID_SIGNATURE: 400,
  STALE_NONCE: 409,
  INVALID_TRANSFER: 400,
  INSUFFICIENT_CAPACITY: 409,
  CHANNEL_NOT_FOUND: 404,
  CHANNEL_STATE: 409,
  PAYMENT_NOT_FOUND: 404,
  HANDSHAKE_FAILED: 502,
  FRAME_REJECTED: 502,
  PEER_OFFLINE: 503,
  PEER_REJECTED: 502,
  TIMEOUT: 504,
  CHAIN_ERROR: 502,
  UNAUTHORIZED: 401,
  NOT_FOUND: 404,
  CONFLICT: 409,
  NO_ROUTE: 422,
  UNKNOWN_TARGET: 422,
  FEE_TOO_LOW: 422,
  EXPIRY_TOO_SOON: 422,
  TOO_MANY_LOCKS: 409,
  LOCK_EXPIRED: 409,
  INTERNAL: 500,
};

export interface ApiInfo {
  address: string;
  peerId: string;
  multiaddrs: () => string[];
  chainId: string;
  hub: string;
  bridge: string;
  connectedPeers: () => string[];
}

export interface ApiServerInit {
  service: ChannelService;
  info: ApiInfo;
  token: string;
  log: Logger;
}

const address = { type: "string", pattern: "^0x[0-9a-fA-F]{40}$" } as const;
const amount = {
  type: "string",
  pattern: "^(0|[1-9][0-9]{0,77})$",
  description: "token base units, decimal",
} as const;
const positiveAmount = {
  type: "string",
  pattern: "^[1-9][0-9]{0,77}$",
  description: "token base units, decimal, > 0",
} as const;
const channelIdParam = {
  type: "object",
  required: ["id"],
  properties: { id: { type: "string", pattern: "^[1-9][0-9]{0,77}$" } },
} as const;
const errorBody = {
  type: "object",
  properties: {
    error: {
      type: "object",
      properties: {
        code: { type: "string" },
        message: { type: "string" },
        details: { type: "object", additionalProperties: true },
      },
    },
  },
} as const;

export function channelJson(c: ChannelView) {
  return {
    channelId: c.channelId.toString(),
    partner: c.partner,
    token: c.token,
    state: c.state,
    settleTimeoutSeconds: c.settleTimeoutSeconds,
    ourDeposit: c.ourDeposit.toString(),
    partnerDeposit: c.partnerDeposit.toString(),
    ourBalance: c.ourBalance.toString(),
    partnerBalance: c.partnerBalance.toString(),
    ourNonce: c.ourNonce.toString(),
    partnerNonce: c.partnerNonce.toString(),
    closedAtSeconds: c.closedAtSeconds,
    closingParticipant: c.closingParticipant,
    totals: {
      sent: c.totals.sent.toString(),
      received: c.totals.received.toString(),
      sentCount: c.totals.sentCount,
      receivedCount: c.totals.receivedCount,
    },
  };
}

export function paymentJson(p: PaymentRecord) {
  return {
    paymentId: p.paymentId,
    direction: p.direction,
    channelId: p.channelId.toString(),
    partner: p.partner,
    token: p.token,
    amount: p.amount.toString(),
    nonce: p.nonce.toString(),
    status: p.status,
    error: p.errorCode ? { code: p.errorCode, message: p.errorMessage } : null,
    createdAtMs: p.createdAtMs,
    completedAtMs: p.completedAtMs,
  };
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

  app.setErrorHandler((err: FastifyError | QrwpError | Error, req, reply) => {
    let e: QrwpError;
    if (isQrwpError(err)) e = err;
    else if ("validation" in err && err.validation) {
      const v = err.validation[0];
      // A missing property names itself; otherwise the failing path (e.g. "/amount" -> "amount").
      const missing =
        v?.params && "missingProperty" in v.params ? String(v.params.missingProperty) : undefined;
      const path = v?.instancePath ? v.instancePath.replace(/^\//, "").replace(/\//g, ".") : undefined;
      const field = missing ?? path ?? err.validationContext ?? "body";
      e = new QrwpError("INVALID_ARGUMENT", `${err.validationContext ?? "request"} ${err.message}`, {
        field: missing ?? field,
      });
    } else if ("statusCode" in err && typeof err.statusCode === "number" && err.statusCode < 500) {
      e = new QrwpError("INVALID_ARGUMENT", err.message, { field: "body" });
    } else {
      req.log.error({ err }, "unhandled API error");
      e = new QrwpError("INTERNAL", "internal error");
    }
    const status = STATUS[e.code] ?? 500;
    if (status >= 500) req.log.warn({ code: e.code, msg: e.message }, "request failed");
    else req.log.info({ code: e.code, msg: e.message, details: e.details }, "request refused");
    void reply.status(status).send({ error: { code: e.code, message: e.message, details: e.details } });
  });

  app.get(
    "/v1/info",
    { schema: { summary: "Node identity, chain and deployment", response: { 401: errorBody } } },
    async () => ({
      address: info.address,
      peerId: info.peerId,
      multiaddrs: info.multiaddrs(),
      chainId: info.chainId,
      hub: info.hub,
      bridge: info.bridge,
      connectedPeers: info.connectedPeers(),
      channels: service.listChannels().length,
    }),
  );

  app.get("/v1/channels", { schema: { summary: "All channels with balances" } }, async () => ({
    channels: service.listChannels().map(channelJson),
  }));

  app.get<{ Params: { id: string } }>(
    "/v1/channels/:id",
    { schema: { summary: "One channel", params: channelIdParam, response: { 404: errorBody } } },
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
        body: {
          type: "object",
          required: ["partner", "token", "deposit"],
          additionalProperties: false,
          properties: {
            partner: address,
            partnerMultiaddr: {
              type: "string",
              minLength: 1,
              maxLength: 512,
              description: "multiaddr ending in /p2p/<peerId>",
            },
            token: address,
            deposit: amount,
            settleTimeoutSeconds: { type: "integer", minimum: 10, maximum: 31536000 },
          },
        },
      },
    },
    async (req, reply) => {
      const b = req.body;
      const view = await service.openChannel({
        partner: b.partner,
        token: b.token,
        depositAmount: BigInt(b.deposit),
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
        params: channelIdParam,
        body: {
          type: "object",
          required: ["totalDeposit"],
          additionalProperties: false,
          properties: { totalDeposit: positiveAmount },
        },
      },
    },
    async (req) => channelJson(await service.deposit(BigInt(req.params.id), BigInt(req.body.totalDeposit))),
  );

  app.post<{ Params: { id: string }; Body: { cooperative?: boolean } | undefined }>(
    "/v1/channels/:id/close",
    {
      schema: {
        summary: "Close cooperatively (default) or unilaterally",
        params: channelIdParam,
        body: {
          type: "object",
          additionalProperties: false,
          properties: { cooperative: { type: "boolean" } },
        },
      },
    },
    async (req) =>
      channelJson(await service.close(BigInt(req.params.id), { cooperative: req.body?.cooperative ?? true })),
  );

  app.post<{ Params: { id: string } }>(
    "/v1/channels/:id/settle",
    { schema: { summary: "Settle a closed channel after its settle timeout", params: channelIdParam } },
    async (req) => channelJson(await service.settle(BigInt(req.params.id))),
  );

  app.post<{ Body: { target: string; token: string; amount: string; paymentId?: string } }>(
    "/v1/payments",
    {
      schema: {
        summary: "Pay a direct channel partner; returns when the partner acknowledged",
        body: {
          type: "object",
          required: ["target", "token", "amount"],
          additionalProperties: false,
          properties: {
            target: address,
            token: address,
            amount: positiveAmount,
            paymentId: { type: "string", pattern: "^[A-Za-z0-9._:-]{1,128}$" },
          },
        },
      },
    },
    async (req, reply) => {
      const b = req.body;
      const payment = await service.pay({
        target: b.target,
        token: b.token,
        amount: BigInt(b.amount),
        ...(b.paymentId ? { paymentId: b.paymentId } : {}),
      });
      return reply.status(201).send(paymentJson(payment));
    },
  );

  app.get<{ Params: { id: string } }>(
    "/v1/payments/:id",
    {
      schema: {
        summary: "One payment (outgoing first, else incoming) by id",
        params: {
          type: "object",
          required: ["id"],
          properties: { id: { type: "string", pattern: "^[A-Za-z0-9._:-]{1,128}$" } },
        },
      },
    },
    async (req) => paymentJson(service.getPayment(req.params.id)),
  );

  return app;
}
