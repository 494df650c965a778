/**
 * What the node's and the watchtower's HTTP APIs (fastify 5) share: the HTTP status of each error code,
 * the OpenAPI schema of an error body, and the error handler that turns every failure into
 * `{ "error": { "code", "message", "details" } }` (request validation failures are 400 INVALID_ARGUMENT
 * naming the field; anything unexpected is logged and answered 500 INTERNAL without its message).
 */
import type { FastifyError, FastifyInstance } from "fastify";
import { QrwpError, isQrwpError, type ErrorCode } from "../protocol/index.js";

/** HTTP status for each error code. */
export const HTTP_STATUS: Record<ErrorCode, number> = {
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
  UNKNOWN_HUB: 422,
  NOT_PARTICIPANT: 422,
  UNKNOWN_PARTNER_KEY: 422,
  RATE_LIMITED: 429,
  INTERNAL: 500,
};

/** OpenAPI schema of an error body `{ error: { code, message, details } }` (for route `response` maps). */
export const errorBody = {
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

/** Installs the coded error handler on `app` (see the module doc). */
export function installErrorHandler(app: FastifyInstance): void {
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
    const status = HTTP_STATUS[e.code] ?? 500;
    if (status >= 500) req.log.warn({ code: e.code, msg: e.message }, "request failed");
    else req.log.info({ code: e.code, msg: e.message, details: e.details }, "request refused");
    void reply.status(status).send({ error: { code: e.code, message: e.message, details: e.details } });
  });
}

/**
 * Listens on `host:port` (port 0: any free port) and returns the API's base URL.
 * @throws the listen error (e.g. EADDRINUSE).
 */
export async function listenApi(app: FastifyInstance, host: string, port: number): Promise<string> {
  await app.listen({ host, port });
  const bound = app.server.address();
  return `http://${host}:${typeof bound === "object" && bound ? bound.port : port}`;
}
