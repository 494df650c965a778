/**
 * x402/: the `qrwp-channel` x402 v2 scheme (HTTP 402 payments): the server side for merchants (one shared
 * paywall with a fastify plugin and a `node:http` / express middleware over it, paid events, the unpaid
 * cap, the scheme server, an in-process facilitator backed by the merchant's node, SQLite receipts) and the
 * client side for payers (the scheme client and `qrwpFetch`). Talks to QRWP nodes only through their HTTP
 * API; imports protocol/ and the @x402 packages, never node/.
 */
export * from "./node-api.js";
export * from "./receipts.js";
export * from "./server.js";
export * from "./paywall.js";
export * from "./events.js";
export * from "./rate-limit.js";
export * from "./fastify.js";
export * from "./http.js";
export * from "./client.js";
