/**
 * JSON schemas of the node's HTTP API routes (node/api/server.ts): request bodies, querystrings, params and
 * the `GET /v1/info` answer. Amounts are decimal strings of token base units (the handlers bound them to
 * uint256 with `parseAmount`). The API's ajv neither coerces types nor strips unknown properties
 * (host/http.ts `STRICT_AJV`): every object is `additionalProperties: false`, and querystring/params values
 * are strings (integer query fields are string patterns, parsed by the handler).
 */

/** An Ethereum address, 0x + 40 hex (any case). */
const address = { type: "string", pattern: "^0x[0-9a-fA-F]{40}$" } as const;
const amount = {
  type: "string",
  pattern: "^(0|[1-9][0-9]{0,77})$",
  description: "token base units, decimal",
} as const;
const positiveAmount = {
  type: "string",
  pattern: "^[1-9][0-9]{0,77}$",
  description: "token base units, amount, > 0",
} as const;
/** `:id` of the channel routes: a channel id, decimal. */
export const channelIdParam = {
  type: "object",
  required: ["id"],
  additionalProperties: false,
  properties: { id: { type: "string", pattern: "^[1-9][0-9]{0,77}$" } },
} as const;
/** A POST without a body (an empty JSON object is accepted too; any property is 400 naming it). */
export const noBody = { type: ["object", "null"], additionalProperties: false, properties: {} } as const;
/** `GET /v1/info` (further properties pass through unchanged). */
export const infoBody = {
  type: "object",
  additionalProperties: true,
  properties: {
    address,
    peerId: { type: "string" },
    multiaddrs: { type: "array", items: { type: "string" } },
    chainId: { type: "string" },
    hub: address,
    bridge: address,
    connectedPeers: { type: "array", items: address },
    channels: { type: "integer", description: "number of channels (any state)" },
    watchtowers: {
      type: "array",
      description: "the watchtowers given with --watchtower, in order",
      items: {
        type: "object",
        required: [
          "multiaddr",
          "address",
          "connected",
          "lastAcceptedAtMs",
          "lastError",
          "pendingChannels",
          "acceptedAppointments",
        ],
        properties: {
          multiaddr: { type: "string", description: "the tower's multiaddr, ending in /p2p/<peerId>" },
          address: {
            type: ["string", "null"],
            description: "the tower's Ethereum address, proven in the session handshake (null until then)",
          },
          connected: { type: "boolean", description: "an authenticated session with the tower is open" },
          lastAcceptedAtMs: {
            type: ["integer", "null"],
            description: "when the tower last accepted an appointment (unix ms; null: not since start)",
          },
          lastError: {
            type: ["object", "null"],
            description: "the last failure (unreachable, timeout, coded refusal); null after a success",
            properties: { code: { type: "string" }, message: { type: "string" } },
          },
          pendingChannels: {
            type: "integer",
            description: "channels whose latest partner balance proof the tower has not acknowledged yet",
          },
          acceptedAppointments: {
            type: "integer",
            description: "appointments the tower acknowledged since the node started",
          },
        },
      },
    },
  },
} as const;

const paymentIdSchema = { type: "string", pattern: "^[A-Za-z0-9._:-]{1,128}$" } as const;
const bytes32 = { type: "string", pattern: "^0x[0-9a-fA-F]{64}$" } as const;
/** What every way of paying takes: whom, in which token, how much (base units), under which id. */
const paymentProperties = {
  target: address,
  token: address,
  amount: positiveAmount,
  paymentId: paymentIdSchema,
} as const;

/** `POST /v1/payments/direct-transfers`: whom, which token, how much, and the signing deadline. */
export const directPaymentBody = {
  type: "object",
  required: ["target", "token", "amount"],
  additionalProperties: false,
  properties: {
    ...paymentProperties,
    notAfterMs: {
      type: "integer",
      minimum: 0,
      maximum: Number.MAX_SAFE_INTEGER,
      description:
        "unix ms after which nothing may be signed (the caller has given up): already past is 400 " +
        "INVALID_ARGUMENT, passed while waiting for the channel is 504 TIMEOUT; nothing is signed either way",
    },
  },
} as const;

/** `POST /v1/payments/direct-transfers/batch`: several payments to one partner, signed together. */
export const directPaymentsBatchBody = {
  type: "object",
  required: ["target", "token", "payments"],
  additionalProperties: false,
  properties: {
    target: address,
    token: address,
    payments: {
      type: "array",
      minItems: 1,
      maxItems: 16,
      items: {
        type: "object",
        required: ["amount", "paymentId"],
        additionalProperties: false,
        properties: {
          amount: positiveAmount,
          paymentId: paymentIdSchema,
          notAfterMs: directPaymentBody.properties.notAfterMs,
        },
      },
    },
  },
} as const;

/** `POST /v1/channels`. */
export const openChannelBody = {
  type: "object",
  required: ["partner", "token", "deposit"],
  additionalProperties: false,
  properties: {
    partner: address,
    partnerMultiaddr: {
      type: "string",
      minLength: 1,
      maxLength: 512,
      description: "multiaddr ending in /p2p/<peerId>; required unless this node already knows the partner",
    },
    token: address,
    deposit: amount,
    settleTimeoutSeconds: { type: "integer", minimum: 10, maximum: 31536000 },
  },
} as const;

/** `POST /v1/channels/:id/deposit`. */
export const depositBody = {
  type: "object",
  required: ["totalDeposit"],
  additionalProperties: false,
  properties: { totalDeposit: positiveAmount },
} as const;

/** `POST /v1/channels/:id/withdraw`: how much of our balance to take out (base units). */
export const withdrawBody = {
  type: "object",
  required: ["amount"],
  additionalProperties: false,
  properties: { amount: positiveAmount },
} as const;

/** `POST /v1/channels/:id/close` (no body: cooperative). */
export const closeBody = {
  type: ["object", "null"],
  additionalProperties: false,
  properties: { cooperative: { type: "boolean" } },
} as const;

/** `POST /v1/payments`. */
export const payBody = {
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
} as const;

/** `:paymentId` / `:id` of the payment routes. */
export const paymentIdParam = (name: "id" | "paymentId") =>
  ({
    type: "object",
    required: [name],
    additionalProperties: false,
    properties: { [name]: paymentIdSchema },
  }) as const;

/** `POST /v1/payments/:paymentId/processed`. */
export const processedBody = {
  type: "object",
  required: ["processed"],
  additionalProperties: false,
  properties: {
    processed: {
      type: "object",
      required: ["channelId", "nonce", "signature"],
      additionalProperties: false,
      properties: {
        channelId: amount,
        nonce: amount,
        signature: { type: "string", pattern: "^0x[0-9a-fA-F]{130}$" },
      },
    },
  },
} as const;

/** Longest `transfer` accepted by `POST /v1/transfers/direct` (base64url characters; a DirectTransfer is ~4.8k). */
export const MAX_DIRECT_TRANSFER_CHARS = 16 * 1024;

/** `POST /v1/transfers/direct`. */
export const acceptDirectTransferBody = {
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
} as const;

/** `GET /v1/routes` (query values are strings: `k` is a decimal 1..10). */
export const routesQuery = {
  type: "object",
  required: ["target", "token", "amount"],
  additionalProperties: false,
  properties: {
    target: address,
    token: address,
    amount: positiveAmount,
    maxFee: amount,
    k: { type: "string", pattern: "^([1-9]|10)$", description: "how many routes, 1..10 (default 3)" },
  },
} as const;

/** `GET /v1/payments` (query values are strings: `limit` is a decimal 1..1000). */
export const listPaymentsQuery = {
  type: "object",
  additionalProperties: false,
  properties: {
    limit: {
      type: "string",
      pattern: "^[1-9][0-9]{0,3}$",
      description: "most payments in the answer, 1..1000 (default 100)",
    },
    status: { type: "string", enum: ["pending", "completed", "failed"] },
    direction: { type: "string", enum: ["incoming", "outgoing"] },
    before: {
      type: "string",
      pattern: "^(0|[1-9][0-9]{0,15})-[01]-[1-9][0-9]{0,15}$",
      description: "the previous answer's `nextCursor`: only payments older than its last one",
    },
  },
} as const;

/** `POST /v1/invoices`. */
export const invoiceBody = {
  type: "object",
  required: ["token", "amount"],
  additionalProperties: false,
  properties: {
    token: address,
    amount: positiveAmount,
    description: { type: "string", maxLength: 512 },
    expirySeconds: { type: "integer", minimum: 1, maximum: 2592000 },
  },
} as const;

/** `GET /v1/invoices/:paymentHash`. */
export const paymentHashParam = {
  type: "object",
  required: ["paymentHash"],
  additionalProperties: false,
  properties: { paymentHash: bytes32 },
} as const;
