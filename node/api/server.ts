/**
 * The node's HTTP API (fastify 5, JSON, OpenAPI at `/docs`). Every route but `/docs` needs
 * `Authorization: Bearer <token>` (the data directory's `api-token`). Amounts are decimal strings of token
 * base units. Errors are `{ "error": { "code", "message", "details" } }` with the matching HTTP status;
 * request validation failures are 400 INVALID_ARGUMENT naming the field.
 */
import { timingSafeEqual } from "node:crypto";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import type { Logger } from "pino";
import { QrwpError, type ErrorCode } from "../../protocol/index.js";
import { errorBody, installErrorHandler } from "../../host/http.js";
import type { AcceptedDirectTransfer, ChannelService, ChannelView } from "../channels/service.js";
import type { PaymentService, RouteCandidate } from "../payments/service.js";
import type { WatchtowerStatus } from "../watchtowers.js";
import type { InvoiceRecord, MediatedPaymentRecord, PaymentRecord } from "../store/store.js";
import {
  address,
  amount,
  bytes32,
  channelIdParam,
  decimal,
  directPaymentBody,
  infoBody,
  paymentIdSchema,
  paymentProperties,
  positiveAmount,
} from "./schemas.js";

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
  token: string;
  log: Logger;
}

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
    ourLocked: c.ourLocked.toString(),
    partnerLocked: c.partnerLocked.toString(),
    pendingLocks: c.pendingLocks,
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

/** A multi-hop payment as the API shows it (never the secret while pending). */
export function mediatedPaymentJson(p: MediatedPaymentRecord) {
  return {
    paymentId: p.paymentId,
    kind: "routed",
    direction: "outgoing",
    target: p.target,
    token: p.token,
    amount: p.amount.toString(),
    fee: p.fee.toString(),
    maxFee: p.maxFee === null ? null : p.maxFee.toString(),
    paymentHash: p.secretHash,
    preimage: p.status === "completed" ? p.secret : null,
    status: p.status,
    route: p.attempts.at(-1)?.route ?? [],
    attempts: p.attempts,
    error: p.errorCode ? { code: p.errorCode, message: p.errorMessage } : null,
    createdAtMs: p.createdAtMs,
    completedAtMs: p.completedAtMs,
  };
}

/** An invoice as the API shows it (the secret stays inside the node). */
export function invoiceJson(i: InvoiceRecord, payee: string) {
  return {
    paymentHash: i.paymentHash,
    payee,
    token: i.token,
    amount: i.amount.toString(),
    description: i.description,
    status: i.status,
    paidAmount: i.paidAmount.toString(),
    createdAtMs: i.createdAtMs,
    expiresAtMs: i.expiresAtMs,
    paidAtMs: i.paidAtMs,
  };
}

/** `POST /v1/transfers/direct`'s answer: bigints as decimal strings. */
export function acceptedDirectTransferJson(a: AcceptedDirectTransfer) {
  return {
    paymentId: a.paymentId,
    channelId: a.channelId.toString(),
    nonce: a.nonce.toString(),
    amount: a.amount.toString(),
    token: a.token,
    partner: a.partner,
    processed: {
      channelId: a.processed.channelId.toString(),
      nonce: a.processed.nonce.toString(),
      signature: a.processed.signature,
    },
  };
}

/** Longest `transfer` accepted by `POST /v1/transfers/direct` (base64url characters; a DirectTransfer is ~4.8k). */
export const MAX_DIRECT_TRANSFER_CHARS = 16 * 1024;

/**
 * Decodes unpadded base64url strictly (the canonical encoding of the bytes only).
 * @throws QrwpError INVALID_ARGUMENT naming `field`
 */
function fromBase64Url(text: string, field: string): Uint8Array {
  const bytes = Buffer.from(text, "base64url");
  if (bytes.toString("base64url") !== text) {
    throw new QrwpError("INVALID_ARGUMENT", `${field} must be unpadded base64url`, { field });
  }
  return new Uint8Array(bytes);
}

function routeJson(r: RouteCandidate) {
  return {
    fee: r.fee.toString(),
    totalAmount: (r.hops[0]?.amount ?? 0n).toString(),
    hops: r.hops.map((h) => ({
      address: h.address,
      channelId: h.channelId.toString(),
      amount: h.amount.toString(),
      expiration: h.expiration.toString(),
      fee: h.fee.toString(),
    })),
  };
}

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

  app.get(
    "/v1/info",
    {
      schema: {
        summary: "Node identity, chain and deployment, watchtowers",
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
        body: {
          type: "object",
          required: ["target", "token", "amount"],
          additionalProperties: false,
          properties: {
            ...paymentProperties,
            maxFee: amount,
            timeoutSeconds: { type: "integer", minimum: 1, maximum: 86400 },
            paymentHash: { ...bytes32, description: "pay an invoice (sha256 of the payee's secret)" },
            mode: { type: "string", enum: ["auto", "direct", "routed"] },
          },
        },
      },
    },
    async (req, reply) => {
      const b = req.body;
      const mode = b.mode ?? "auto";
      const direct =
        mode === "direct" ||
        (mode === "auto" && !b.paymentHash && service.openChannelWith(b.target, b.token) !== null);
      if (direct) {
        if (b.paymentHash) {
          throw new QrwpError("INVALID_ARGUMENT", "a paymentHash needs a routed payment", {
            field: "paymentHash",
          });
        }
        const payment = await service.pay({
          target: b.target,
          token: b.token,
          amount: BigInt(b.amount),
          ...(b.paymentId ? { paymentId: b.paymentId } : {}),
        });
        return reply.status(201).send({ kind: "direct", fee: "0", ...paymentJson(payment) });
      }
      const p = await requirePayments(init.payments).pay({
        target: b.target,
        token: b.token,
        amount: BigInt(b.amount),
        ...(b.paymentId ? { paymentId: b.paymentId } : {}),
        ...(b.maxFee !== undefined ? { maxFee: BigInt(b.maxFee) } : {}),
        ...(b.timeoutSeconds ? { timeoutSeconds: b.timeoutSeconds } : {}),
        ...(b.paymentHash ? { paymentHash: b.paymentHash } : {}),
      });
      if (p.status === "failed") {
        throw new QrwpError((p.errorCode ?? "NO_ROUTE") as ErrorCode, p.errorMessage ?? "payment failed", {
          paymentId: p.paymentId,
          attempts: p.attempts.length,
        });
      }
      return reply.status(p.status === "completed" ? 201 : 202).send(mediatedPaymentJson(p));
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
          "stored DirectTransfer envelope; the partner's node accepts it at POST /v1/transfers/direct and the " +
          "payment completes at POST /v1/payments/:paymentId/processed (or when the libp2p re-send is acknowledged).",
        body: directPaymentBody,
      },
    },
    async (req, reply) => {
      const b = req.body;
      const signed = await service.signDirectTransfer(
        {
          target: b.target,
          token: b.token,
          amount: BigInt(b.amount),
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
    Params: { paymentId: string };
    Body: { processed: { channelId: string; nonce: string; signature: string } };
  }>(
    "/v1/payments/:paymentId/processed",
    {
      schema: {
        summary:
          "Complete a direct payment with the partner's signed Processed acknowledgement (relayed over HTTP)",
        params: { type: "object", required: ["paymentId"], properties: { paymentId: paymentIdSchema } },
        body: {
          type: "object",
          required: ["processed"],
          additionalProperties: false,
          properties: {
            processed: {
              type: "object",
              required: ["channelId", "nonce", "signature"],
              additionalProperties: false,
              properties: {
                channelId: decimal,
                nonce: decimal,
                signature: { type: "string", pattern: "^0x[0-9a-fA-F]{130}$" },
              },
            },
          },
        },
      },
    },
    async (req) => {
      const p = req.body.processed;
      const payment = await service.confirmProcessed(req.params.paymentId, {
        channelId: BigInt(p.channelId),
        nonce: BigInt(p.nonce),
        signature: p.signature,
      });
      return { kind: "direct", fee: "0", ...paymentJson(payment) };
    },
  );

  app.post<{ Body: { transfer: string; token?: string } }>(
    "/v1/transfers/direct",
    {
      schema: {
        summary: "Accept a partner's DirectTransfer relayed over HTTP (x402 direct streaming)",
        description:
          "200 {paymentId, channelId, nonce, amount, token, partner, processed: {channelId, nonce, signature}}; " +
          "the identical transfer again gives the same answer and changes nothing.",
        body: {
          type: "object",
          required: ["transfer"],
          additionalProperties: false,
          properties: {
            transfer: {
              type: "string",
              pattern: "^[A-Za-z0-9_-]+$",
              minLength: 1,
              maxLength: MAX_DIRECT_TRANSFER_CHARS,
              description: "unpadded base64url of the DirectTransfer envelope",
            },
            token: { ...address, description: "refuse unless the transfer's channel is for this token" },
          },
        },
      },
    },
    async (req) => {
      const b = req.body;
      const accepted = await service.acceptDirectTransfer(fromBase64Url(b.transfer, "transfer"), {
        ...(b.token ? { token: b.token } : {}),
      });
      return acceptedDirectTransferJson(accepted);
    },
  );

  app.get<{ Params: { id: string } }>(
    "/v1/payments/:id",
    {
      schema: {
        summary: "One payment by id: a routed payment (route, fees, attempts, failure) or a direct one",
        params: { type: "object", required: ["id"], properties: { id: paymentIdSchema } },
      },
    },
    async (req) => {
      const routed = init.payments?.getPayment(req.params.id);
      if (routed) return mediatedPaymentJson(routed);
      return { kind: "direct", ...paymentJson(service.getPayment(req.params.id)) };
    },
  );

  app.get<{ Querystring: { target: string; token: string; amount: string; maxFee?: string; k?: number } }>(
    "/v1/routes",
    {
      schema: {
        summary: "Routes to a target for an amount, best first, with per-hop amounts, expirations and fees",
        querystring: {
          type: "object",
          required: ["target", "token", "amount"],
          additionalProperties: false,
          properties: {
            target: address,
            token: address,
            amount: positiveAmount,
            maxFee: amount,
            k: { type: "integer", minimum: 1, maximum: 10 },
          },
        },
      },
    },
    async (req) => {
      const q = req.query;
      const routes = requirePayments(init.payments).findRoutes(
        q.target,
        q.token,
        BigInt(q.amount),
        q.maxFee !== undefined ? BigInt(q.maxFee) : null,
        q.k ?? 3,
      );
      return { routes: routes.map(routeJson) };
    },
  );

  app.post<{ Body: { token: string; amount: string; description?: string; expirySeconds?: number } }>(
    "/v1/invoices",
    {
      schema: {
        summary: "Create an invoice: a payment hash whose secret this node reveals when paid",
        body: {
          type: "object",
          required: ["token", "amount"],
          additionalProperties: false,
          properties: {
            token: address,
            amount: positiveAmount,
            description: { type: "string", maxLength: 512 },
            expirySeconds: { type: "integer", minimum: 1, maximum: 2592000 },
          },
        },
      },
    },
    async (req, reply) => {
      const b = req.body;
      const invoice = requirePayments(init.payments).createInvoice({
        token: b.token,
        amount: BigInt(b.amount),
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
        params: { type: "object", required: ["paymentHash"], properties: { paymentHash: bytes32 } },
      },
    },
    async (req) =>
      invoiceJson(requirePayments(init.payments).getInvoice(req.params.paymentHash), info.address),
  );

  return app;
}
