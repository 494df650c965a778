/**
 * JSON schemas of the node's HTTP API routes (node/api/server.ts): request bodies, params and the
 * `GET /v1/info` answer. Amounts are decimal strings of token base units.
 */

export const address = { type: "string", pattern: "^0x[0-9a-fA-F]{40}$" } as const;
export const amount = {
  type: "string",
  pattern: "^(0|[1-9][0-9]{0,77})$",
  description: "token base units, decimal",
} as const;
export const positiveAmount = {
  type: "string",
  pattern: "^[1-9][0-9]{0,77}$",
  description: "token base units, decimal, > 0",
} as const;
export const channelIdParam = {
  type: "object",
  required: ["id"],
  properties: { id: { type: "string", pattern: "^[1-9][0-9]{0,77}$" } },
} as const;
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

export const paymentIdSchema = { type: "string", pattern: "^[A-Za-z0-9._:-]{1,128}$" } as const;
export const bytes32 = { type: "string", pattern: "^0x[0-9a-fA-F]{64}$" } as const;
/** What every way of paying takes: whom, in which token, how much (base units), under which id. */
export const paymentProperties = {
  target: address,
  token: address,
  amount: positiveAmount,
  paymentId: paymentIdSchema,
} as const;

export const decimal = { type: "string", pattern: "^(0|[1-9][0-9]{0,77})$" } as const;
export const directPaymentBody = {
  type: "object",
  required: ["target", "token", "amount"],
  additionalProperties: false,
  properties: {
    ...paymentProperties,
    // Unix ms after which nothing may be signed any more (the caller has given up): TIMEOUT instead.
    notAfterMs: { type: "integer", minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
  },
} as const;
