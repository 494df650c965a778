/**
 * What the node's and the watchtower's HTTP APIs (fastify 5) share: the HTTP status of each error code,
 * the OpenAPI schema of an error body, and the error handler that turns every failure into
 * `{ "error": { "code", "message", "details" } }` (request validation failures are 400 INVALID_ARGUMENT
 * naming the field; anything unexpected is logged and answered 500 INTERNAL without its message).
 */
import type { FastifyError, FastifyInstance } from "fastify";
import { QrwpError, isQrwpError, toSafeValue, type ErrorCode } from "../protocol/index.js";

/** Querystring schema of a route that takes no query parameters: any is 400 naming it. */
export const noQuery = { type: "object", additionalProperties: false, properties: {} } as const;

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
  UNAVAILABLE: 503,
  INSUFFICIENT_FUNDS: 422,
  EVIDENCE_REQUIRED: 409,
  INVALID_EVIDENCE: 400,
  INTERNAL: 500,
};

/**
 * The fastify `ajv` option both APIs are built with: request schemas are checked as written. fastify's
 * default ajv coerces types (`coerceTypes: "array"`: `12345678901234567890` becomes a rounded string,
 * `["5"]` becomes `"5"`) and strips unknown properties (`removeAdditional: true`, so
 * `additionalProperties: false` would drop a field instead of refusing it); both are off here, so a wrong
 * type or an unknown field is 400 INVALID_ARGUMENT naming it. Querystring and path values are strings then:
 * their schemas use string patterns and the handlers parse them.
 */
export const STRICT_AJV = {
  customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false },
} as const;

/** Largest Solidity `uint256`, 2^256 - 1. */
const UINT256_MAX = (1n << 256n) - 1n;
const DECIMAL_RE = /^(0|[1-9][0-9]*)$/;

/**
 * Parses a request's decimal amount (token base units) and bounds it to Solidity `uint256`.
 * @param value - decimal string without sign, leading zeros or exponent (the route's schema has checked the
 *   pattern; this re-checks it).
 * @param field - the request field, named in the error (e.g. "amount", "deposit", "maxFee").
 * @param min - smallest accepted value (0n by default; 1n for amounts that must be positive).
 * @returns the amount in base units, `min <= amount <= 2^256 - 1`.
 * @throws QrwpError INVALID_ARGUMENT `{ field, value }` when not a decimal, below `min` or above 2^256 - 1.
 */
export function parseAmount(value: string, field: string, min = 0n): bigint {
  if (!DECIMAL_RE.test(value))
    throw new QrwpError("INVALID_ARGUMENT", `${field} must be a decimal string of base units`, {
      field,
      value: toSafeValue(value),
    });
  const amount = BigInt(value);
  if (amount < min || amount > UINT256_MAX)
    throw new QrwpError(
      "INVALID_ARGUMENT",
      amount > UINT256_MAX ? `${field} must be at most 2^256 - 1` : `${field} must be at least ${min}`,
      { field, value: toSafeValue(value) },
    );
  return amount;
}

/**
 * Parses a querystring or path integer (a string once types are not coerced) in `[min, max]`.
 * @throws QrwpError INVALID_ARGUMENT `{ field, value }`.
 */
export function parseIntegerParam(value: string, field: string, min: number, max: number): number {
  const n = /^(0|[1-9][0-9]{0,15})$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new QrwpError("INVALID_ARGUMENT", `${field} must be an integer in ${min}..${max}`, {
      field,
      value: toSafeValue(value),
    });
  return n;
}

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
      e = new QrwpError("INVALID_ARGUMENT", `${err.validationContext ?? "request"} ${err.message}`, {
        field: validationField(err.validation[0], err.validationContext),
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
    // toJSON: details made JSON-safe (bigints as decimal strings, bytes as hex).
    void reply.status(status).send({ error: QrwpError.prototype.toJSON.call(e) });
  });
}

/**
 * The field a schema failure names, as a dotted path: a missing property or an unknown one
 * (`additionalProperty`) under the failing object (e.g. `processed.nonce`, `extra`), else the failing
 * value's path (`"/amount"` -> `amount`), else the part of the request (`body`, `querystring`, `params`).
 */
function validationField(
  v: { instancePath?: string; params?: Record<string, unknown> } | undefined,
  context: string | undefined,
): string {
  const path = (v?.instancePath ?? "").replace(/^\//, "").replace(/\//g, ".");
  const params = v?.params ?? {};
  const child =
    "missingProperty" in params
      ? String(params.missingProperty)
      : "additionalProperty" in params
        ? String(params.additionalProperty)
        : undefined;
  if (child !== undefined) return path ? `${path}.${child}` : child;
  return path || context || "body";
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
