/**
 * The `qrwp-channel` scheme of x402 v2 (HTTP 402 payments; spec: github.com/coinbase/x402, `specs/x402-specification-v2.md`):
 * the pure parts shared by the merchant side and the payer side (`x402/`). No I/O.
 *
 * Routed mode (an invoice paid through the network with HTLCs):
 * - `PaymentRequirements` = `{ scheme: "qrwp-channel", network: "eip155:<chainId>", asset: <token address>,
 *   amount: <token base units, decimal string>, payTo: <merchant node's address>, maxTimeoutSeconds,
 *   extra: {@link QrwpRoutedExtra} }`; `extra.invoice` is minted per 402 by the merchant's node.
 * - `PaymentPayload.payload` = {@link QrwpRoutedPayload} `{ paymentHash, preimage }`: the invoice's secret,
 *   which the merchant's node reveals only once the payer's HTLC reached it, so holding it proves payment.
 *
 * Direct streaming mode (the payer has an open channel with the merchant's node): the same 402 and
 * requirements (`extra.direct: true` says the merchant takes it); the payer's node signs the next balance
 * proof of that channel for exactly `amount` (a `DirectTransfer` whose payment id is
 * {@link x402PaymentId}`(paymentHash)`, or a `BalanceUpdate` of direct changes that includes it when the
 * payer's node signed several payments together; not sent over libp2p) and the retry carries it:
 * `PaymentPayload.payload` = {@link QrwpDirectPayload} `{ paymentHash, transfer }` (`transfer`: base64url of
 * the CBOR envelope). `paymentHash` is the invoice's, or, when the requirement carries a stateless
 * {@link QrwpTicket} (`extra.ticket`), any fresh 32 bytes the payer picks: the ticket is the merchant's HMAC
 * over the terms, valid for any number of payments until it expires, so a client that paid a route reuses
 * the requirement without another 402 and the merchant stores nothing per 402. The merchant's node verifies
 * and stores the proof like any from that partner, each payment id once; `SettleResponse.extra.processed`
 * carries its signed acknowledgement for the payer's node.
 * - Refusals use the snake_case reasons of {@link X402_REFUSAL_REASONS} (x402's `invalidReason` /
 *   `errorReason`).
 */
import { z } from "zod";
import { assertArgument } from "./errors.js";
import { secretHashOf } from "./locks.js";

/** The x402 scheme name. */
export const QRWP_X402_SCHEME = "qrwp-channel";
/** `extra.assetTransferMethod` of routed mode (the payer pays a node invoice). */
export const QRWP_ROUTED_TRANSFER_METHOD = "invoice";

const CAIP2_EIP155_RE = /^eip155:([1-9][0-9]{0,19})$/;
const BYTES32_RE = /^0x[0-9a-fA-F]{64}$/;
const ADDRESS_RE = /^0x[0-9a-fA-F]{40}$/;

/** A CAIP-2 network id of an EVM chain, `eip155:<chainId>`. */
export type X402Network = `eip155:${string}`;

/**
 * `eip155:<chainId>` (CAIP-2) of a chain id given as a bigint or a decimal string.
 * @throws QrwpError INVALID_ARGUMENT (field `chainId`) unless a positive integer.
 */
export function x402Network(chainId: bigint | string): X402Network {
  const id = typeof chainId === "bigint" ? chainId : /^[0-9]+$/.test(chainId) ? BigInt(chainId) : -1n;
  assertArgument(id > 0n, "chain id must be a positive integer", "chainId", chainId);
  return `eip155:${id.toString()}`;
}

/** The chain id of an `eip155:<chainId>` network, or `null` if `network` is not that shape. */
export function parseX402Network(network: string): bigint | null {
  const m = CAIP2_EIP155_RE.exec(network);
  return m ? BigInt(m[1] as string) : null;
}

/** Stable reasons a merchant refuses a payment (x402 `invalidReason` / `errorReason`). Never rename one. */
export const X402_REFUSAL_REASONS = [
  /** No `PAYMENT-SIGNATURE` header on a priced route. */
  "missing_payment",
  /** The header or its payload is not the scheme's shape (base64, JSON, fields). */
  "malformed_payment",
  /** The merchant's node does not know the invoice (or the payload's hash differs from the invoice's). */
  "unknown_invoice",
  /** The invoice's or the accepted requirements' amount is not the route's price. */
  "wrong_amount",
  /** The invoice's or the accepted requirements' token is not the route's asset. */
  "wrong_asset",
  /** The accepted requirements name another payee, scheme or network. */
  "wrong_payee",
  /** The invoice expired before it was paid. */
  "invoice_expired",
  /** `sha256(preimage) != paymentHash`. */
  "invalid_preimage",
  /** The merchant's node does not (yet) hold the payment. */
  "not_paid",
  /** The payment was already used for a resource. */
  "replayed",
  /** The merchant's node could not be asked (network, auth, 5xx). */
  "merchant_unavailable",
  /** Too many unpaid requests from this client (or in total): HTTP 429, retry after `Retry-After`. */
  "rate_limited",
  /** The route's per-request price could not be computed from this request (HTTP 400; nothing minted). */
  "unpriceable_request",
  /** Direct mode: the merchant's node has no open channel with the payer for this token. */
  "no_channel",
  /** Direct mode: the merchant's node refused the balance proof (signature, nonce, amount, capacity). */
  "invalid_transfer",
] as const;
export type X402RefusalReason = (typeof X402_REFUSAL_REASONS)[number];

/** True if `value` is one of {@link X402_REFUSAL_REASONS}. */
export function isX402RefusalReason(value: unknown): value is X402RefusalReason {
  return typeof value === "string" && (X402_REFUSAL_REASONS as readonly string[]).includes(value);
}

const bytes32Hex = z.string().regex(BYTES32_RE, "must be 0x-prefixed 32-byte hex");
const addressHex = z.string().regex(ADDRESS_RE, "must be a 20-byte 0x address");

/**
 * A stateless direct-mode requirement (`extra.ticket`): `mac` = HMAC-SHA256 under the merchant's ticket key
 * of {@link x402TicketMessage} (the terms, the route and the expiry). It costs the merchant no write to mint
 * or to check; replays are refused by the payment id, which the merchant's node stores once.
 */
export const qrwpTicketSchema = z
  .object({
    /** `"<METHOD> <route pattern>"` the ticket was minted for. */
    route: z.string().min(1).max(512),
    /**
     * The route's price does not depend on the request: the client may pay the route again with this
     * requirement, without a 402, until it expires (each time under a fresh payment hash).
     */
    reusable: z.boolean(),
    /** Unix seconds after which the merchant refuses it (`invoice_expired`, after its grace). */
    expiresAtSeconds: z.number().int().positive(),
    mac: bytes32Hex,
  })
  .strict();
export type QrwpTicket = z.infer<typeof qrwpTicketSchema>;

/** The terms a {@link QrwpTicket}'s MAC covers (addresses any case; amounts decimal base units). */
export interface QrwpTicketTerms {
  network: string;
  payTo: string;
  hub: string;
  asset: string;
  amount: string;
  maxTimeoutSeconds: number;
  route: string;
  reusable: boolean;
  expiresAtSeconds: number;
}

/** The canonical bytes a ticket's HMAC covers: one line per field, addresses lower-case. */
export function x402TicketMessage(t: QrwpTicketTerms): string {
  return [
    "qrwp-x402-ticket-v1",
    t.network,
    t.payTo.toLowerCase(),
    t.hub.toLowerCase(),
    t.asset.toLowerCase(),
    t.amount,
    String(t.maxTimeoutSeconds),
    t.route.replace(/\n/g, " "),
    t.reusable ? "reusable" : "once",
    String(t.expiresAtSeconds),
  ].join("\n");
}

/** The invoice a 402 names: the merchant node's payment hash and when it expires (unix seconds). */
export const qrwpInvoiceRefSchema = z.object({
  paymentHash: bytes32Hex,
  expiresAtSeconds: z.number().int().positive(),
});
export type QrwpInvoiceRef = z.infer<typeof qrwpInvoiceRefSchema>;

/**
 * `PaymentRequirements.extra` of the scheme: `{ assetTransferMethod: "invoice", hub: <ChannelHub address>,
 * invoice?: { paymentHash, expiresAtSeconds }, direct?: true, ticket?: QrwpTicket }`: at least one of
 * `invoice` (routed mode, and direct mode naming it) and `ticket` (direct mode only). Unknown keys pass
 * through (x402 reserves some).
 */
export const qrwpRoutedExtraSchema = z
  .object({
    assetTransferMethod: z.literal(QRWP_ROUTED_TRANSFER_METHOD),
    hub: addressHex,
    invoice: qrwpInvoiceRefSchema.optional(),
    /** The merchant also takes direct streaming payments on a channel with `payTo`. */
    direct: z.boolean().optional(),
    /** Stateless direct-mode requirement (needs `direct: true`). */
    ticket: qrwpTicketSchema.optional(),
  })
  .loose()
  .refine((e) => e.invoice !== undefined || (e.ticket !== undefined && e.direct === true), {
    message: "needs an invoice, or a ticket with direct: true",
  });
export type QrwpRoutedExtra = z.infer<typeof qrwpRoutedExtraSchema>;

/** `PaymentPayload.payload` of routed mode: the invoice's hash and its secret (0x 32-byte hex each). */
export const qrwpRoutedPayloadSchema = z
  .object({
    paymentHash: bytes32Hex,
    preimage: bytes32Hex,
  })
  .strict();
export type QrwpRoutedPayload = z.infer<typeof qrwpRoutedPayloadSchema>;

/** Longest `transfer` (base64url characters) a direct payload may carry. */
export const QRWP_DIRECT_TRANSFER_MAX_CHARS = 16_384;

/**
 * `PaymentPayload.payload` of direct streaming mode: the invoice's hash and the payer's signed
 * `DirectTransfer` envelope (CBOR, base64url without padding) paying it on the payer ↔ merchant channel.
 */
export const qrwpDirectPayloadSchema = z
  .object({
    paymentHash: bytes32Hex,
    transfer: z
      .string()
      .min(1)
      .max(QRWP_DIRECT_TRANSFER_MAX_CHARS)
      .regex(/^[A-Za-z0-9_-]+$/, "must be base64url without padding"),
  })
  .strict();
export type QrwpDirectPayload = z.infer<typeof qrwpDirectPayloadSchema>;

/** Either payload of the scheme, tagged with its mode; `null` if `value` is neither shape. */
export function parseQrwpPayload(
  value: unknown,
): ({ mode: "routed" } & QrwpRoutedPayload) | ({ mode: "direct" } & QrwpDirectPayload) | null {
  const routed = qrwpRoutedPayloadSchema.safeParse(value);
  if (routed.success) return { mode: "routed", ...routed.data };
  const direct = qrwpDirectPayloadSchema.safeParse(value);
  return direct.success ? { mode: "direct", ...direct.data } : null;
}

/** The node payment id of an x402 payment of invoice `paymentHash` (either mode): `x402:<hash>`. */
export function x402PaymentId(paymentHash: string): string {
  return `x402:${paymentHash.toLowerCase()}`;
}

/** `SettleResponse.extra.processed` of a direct payment: the merchant node's signed acknowledgement. */
export const qrwpProcessedSchema = z
  .object({
    channelId: z.string().regex(/^[0-9]{1,78}$/),
    nonce: z.string().regex(/^[0-9]{1,78}$/),
    signature: z.string().regex(/^0x[0-9a-fA-F]{130}$/),
  })
  .strict();
export type QrwpProcessed = z.infer<typeof qrwpProcessedSchema>;

/** Parses a routed-mode `extra`; `null` if it is not that shape. */
export function parseQrwpRoutedExtra(value: unknown): QrwpRoutedExtra | null {
  const r = qrwpRoutedExtraSchema.safeParse(value);
  return r.success ? r.data : null;
}

/** Parses a routed-mode payload; `null` if it is not that shape. */
export function parseQrwpRoutedPayload(value: unknown): QrwpRoutedPayload | null {
  const r = qrwpRoutedPayloadSchema.safeParse(value);
  return r.success ? r.data : null;
}

/** True if `sha256(preimage) == paymentHash` (both 0x 32-byte hex, any case). */
export function preimageMatches(payload: QrwpRoutedPayload): boolean {
  return secretHashOf(payload.preimage).toLowerCase() === payload.paymentHash.toLowerCase();
}

/** True if `amount` is an atomic x402 amount: a decimal integer string > 0 with no leading zero. */
export function isAtomicAmount(amount: unknown): amount is string {
  return typeof amount === "string" && /^[1-9][0-9]{0,77}$/.test(amount);
}
