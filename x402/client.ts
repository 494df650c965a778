/**
 * Payer side of the `qrwp-channel` x402 v2 scheme (spec: coinbase/x402 `specs/x402-specification-v2.md`;
 * wire shapes in protocol/x402.ts).
 *
 * - {@link QrwpChannelClientScheme} (`SchemeNetworkClient` of `@x402/core`): **direct streaming** when the
 *   merchant takes it (`extra.direct`) and the payer's node has an open channel with `payTo` in the asset
 *   with enough balance: the node signs (and persists, but does not send) the next balance proof for the
 *   price (`POST /v1/payments/direct-transfers`) and the payload is `{ paymentHash, transfer }`. Otherwise
 *   **routed**: the node pays the 402's invoice through the network (`POST /v1/payments` with the invoice's
 *   `paymentHash`, HTLCs) and the payload is `{ paymentHash, preimage }`. One invoice is paid at most once
 *   either way: the node payment id is `x402:<paymentHash>`; the node never pays one id twice (a direct
 *   signature under a used id is CONFLICT; a routed payment under it returns the existing payment).
 * - {@link qrwpFetch}: `fetch` that pays 402s with that scheme through `wrapFetchWithPayment` of
 *   `@x402/fetch`, with a per-payment cap; a request that already carries `PAYMENT-SIGNATURE` is sent as is
 *   and never paid.
 */
import { wrapFetchWithPayment, x402Client } from "@x402/fetch";
import type {
  PaymentPayloadContext,
  PaymentPayloadResult,
  PaymentRequirements,
  SchemeNetworkClient,
} from "@x402/core/types";
import { decodePaymentResponseHeader } from "@x402/core/http";
import {
  QRWP_X402_SCHEME,
  QrwpError,
  isAtomicAmount,
  isQrwpError,
  qrwpProcessedSchema,
  x402PaymentId,
  type QrwpDirectPayload,
  parseQrwpRoutedExtra,
  parseX402Network,
  x402Network,
  type QrwpRoutedPayload,
} from "../protocol/index.js";
import { QrwpNodeApi, type NodeApiConfig, type NodeInfo } from "./node-api.js";

/** Options of {@link QrwpChannelClientScheme}. */
export interface QrwpClientOptions {
  /** Largest amount (token base units) paid for one request; larger requirements are refused. */
  maxAmount: bigint;
  /** Largest routing fee (token base units) per payment; default: the node's default (no cap). */
  maxFee?: bigint;
  /** How long the node may take to complete a payment (seconds, default 60). */
  timeoutSeconds?: number;
  /** `direct` (default): a direct channel payment when possible, else routed; `routed`: always routed. */
  prefer?: "direct" | "routed";
}

/** How long the payer's node may take to sign a direct transfer (ms); its API call waits longer (10 s). */
const SIGN_DEADLINE_MS = 8_000;

/** Node refusals of a direct transfer that leave nothing signed: fall back to routed. */
const NO_DIRECT_CHANNEL = new Set(["CHANNEL_NOT_FOUND", "CHANNEL_STATE", "INSUFFICIENT_CAPACITY"]);

/** `SchemeNetworkClient` that pays `qrwp-channel` invoices through the payer's node. */
export class QrwpChannelClientScheme implements SchemeNetworkClient {
  readonly scheme = QRWP_X402_SCHEME;
  readonly #node: QrwpNodeApi;
  readonly #options: QrwpClientOptions;
  #info: Promise<NodeInfo> | null = null;

  constructor(node: QrwpNodeApi | NodeApiConfig, options: QrwpClientOptions) {
    this.#node = node instanceof QrwpNodeApi ? node : new QrwpNodeApi(node);
    this.#options = options;
  }

  /**
   * Pays `requirements` (its invoice) and returns the routed payload.
   * @throws QrwpError INVALID_ARGUMENT (not a routed qrwp-channel requirement, another chain or hub than the
   *   payer node's, amount above `maxAmount` or the SDK's cap, invoice expired), or the node's coded error
   *   (NO_ROUTE, INSUFFICIENT_CAPACITY, CONFLICT for an invoice already paid directly from here, ...; an
   *   invoice already paid routed from here gives back that payment, whose receipt the merchant then
   *   refuses as `replayed`).
   */
  async createPaymentPayload(
    x402Version: number,
    requirements: PaymentRequirements,
    context?: PaymentPayloadContext,
  ): Promise<PaymentPayloadResult> {
    const extra = parseQrwpRoutedExtra(requirements.extra);
    if (requirements.scheme !== QRWP_X402_SCHEME || !extra || !isAtomicAmount(requirements.amount))
      throw new QrwpError("INVALID_ARGUMENT", "not a routed qrwp-channel payment requirement", {
        field: "requirements",
      });
    const amount = BigInt(requirements.amount);
    if (amount > this.#options.maxAmount)
      throw new QrwpError("INVALID_ARGUMENT", "amount above the payer's maximum", {
        field: "amount",
        amount: requirements.amount,
        maxAmount: this.#options.maxAmount,
      });
    if (context?.maxAmountPerPayment !== undefined && amount > BigInt(context.maxAmountPerPayment))
      throw new QrwpError("INVALID_ARGUMENT", "amount above the spend cap", { field: "amount" });
    if (extra.invoice.expiresAtSeconds * 1000 <= Date.now())
      throw new QrwpError("INVALID_ARGUMENT", "the invoice has expired", { field: "invoice" });
    this.#info ??= this.#node.info();
    const info = await this.#info.catch((err: unknown) => {
      this.#info = null;
      throw err;
    });
    if (
      parseX402Network(requirements.network) !== BigInt(info.chainId) ||
      extra.hub.toLowerCase() !== info.hub.toLowerCase()
    )
      throw new QrwpError(
        "INVALID_ARGUMENT",
        "the requirement is for another chain or ChannelHub than the payer's node",
        {
          field: "network",
          network: requirements.network,
        },
      );
    const paymentHash = extra.invoice.paymentHash.toLowerCase();
    if (extra.direct === true && (this.#options.prefer ?? "direct") === "direct") {
      try {
        const signed = await this.#node.signDirectTransfer({
          target: requirements.payTo,
          token: requirements.asset,
          amount,
          paymentId: x402PaymentId(paymentHash),
          // Sign only while we still wait for the answer, and before the invoice expires.
          notAfterMs: Math.min(extra.invoice.expiresAtSeconds * 1000, Date.now() + SIGN_DEADLINE_MS),
        });
        const payload: QrwpDirectPayload = { paymentHash, transfer: signed.transfer };
        return { x402Version, payload };
      } catch (err) {
        if (!(isQrwpError(err) && NO_DIRECT_CHANNEL.has(err.code))) throw err;
      }
    }
    const payment = await this.#node.pay({
      target: requirements.payTo,
      token: requirements.asset,
      amount,
      paymentHash,
      paymentId: x402PaymentId(paymentHash),
      timeoutSeconds:
        this.#options.timeoutSeconds ?? Math.min(60, Math.max(1, requirements.maxTimeoutSeconds)),
      ...(this.#options.maxFee !== undefined ? { maxFee: this.#options.maxFee } : {}),
    });
    if (payment.status !== "completed" || typeof payment.preimage !== "string")
      throw new QrwpError("TIMEOUT", "the payment did not complete in time", {
        paymentId: payment.paymentId,
        status: payment.status,
      });
    const payload: QrwpRoutedPayload = { paymentHash, preimage: payment.preimage };
    return { x402Version, payload };
  }
}

/** Options of {@link qrwpFetch}. */
export interface QrwpFetchOptions {
  /** The payer's node API (bearer token: a secret). */
  node: NodeApiConfig;
  /** Largest amount (token base units) paid for one request. */
  maxAmount: bigint;
  /** Largest routing fee per payment (token base units). */
  maxFee?: bigint;
  /** Payment completion timeout (seconds). */
  timeoutSeconds?: number;
  /** `direct` (default): pay on a direct channel with the merchant when there is one; `routed`: never. */
  prefer?: "direct" | "routed";
  /** The token to pay with: when given, the SDK's spend controls allow only it (capped at `maxAmount`). */
  asset?: string;
  /** The chain id of the payer's node; asked from the node when omitted. */
  chainId?: bigint | string;
  /** The fetch to wrap (default global fetch). */
  fetch?: typeof globalThis.fetch;
}

/**
 * An x402 client (`@x402/fetch`'s `x402Client`) with the `qrwp-channel` scheme registered on
 * `eip155:<chainId>` and spend controls allowing exactly `asset` up to `maxAmount` per payment (any asset
 * when `asset` is omitted, still capped by the scheme's `maxAmount`).
 */
export function qrwpX402Client(
  scheme: QrwpChannelClientScheme,
  chainId: bigint | string,
  maxAmount: bigint,
  asset?: string,
): x402Client {
  const network = x402Network(chainId);
  return new x402Client().register(network, scheme).setSpendControls({
    maxAmountPerPayment: false,
    allowedAssets: asset ? [{ network, asset, maxAmountPerPayment: maxAmount.toString() }] : true,
  });
}

/**
 * `fetch(url, init)` that answers a `qrwp-channel` 402 by paying through the payer's node and retrying once
 * with `PAYMENT-SIGNATURE`. Returns the final `Response` (a refused payment is the server's 402 response);
 * rejects when the payment cannot be made (e.g. the price is above `maxAmount`: nothing is paid).
 * A request that already carries `PAYMENT-SIGNATURE` / `X-PAYMENT` is sent unchanged and never paid.
 * After a direct payment, the merchant node's signed acknowledgement (`PAYMENT-RESPONSE` `extra.processed`)
 * is handed to the payer's node, which then builds the next proof on it without a network round trip (if
 * that fails, the node re-sends the transfer over libp2p before its next one: nothing is lost).
 */
export async function qrwpFetch(
  url: string | URL,
  init: RequestInit | undefined,
  options: QrwpFetchOptions,
): Promise<Response> {
  const baseFetch = options.fetch ?? globalThis.fetch;
  const headers = new Headers(init?.headers);
  if (headers.has("payment-signature") || headers.has("x-payment")) return baseFetch(url, init);
  const node = new QrwpNodeApi(options.node);
  const chainId = options.chainId ?? (await node.info()).chainId;
  const scheme = new QrwpChannelClientScheme(node, {
    maxAmount: options.maxAmount,
    ...(options.maxFee !== undefined ? { maxFee: options.maxFee } : {}),
    ...(options.timeoutSeconds !== undefined ? { timeoutSeconds: options.timeoutSeconds } : {}),
    ...(options.prefer !== undefined ? { prefer: options.prefer } : {}),
  });
  const client = qrwpX402Client(scheme, chainId, options.maxAmount, options.asset);
  const response = await wrapFetchWithPayment(baseFetch, client)(url, init);
  await relayProcessed(node, response);
  return response;
}

/** Hands a direct payment's acknowledgement in `PAYMENT-RESPONSE` to the payer's node (best effort). */
async function relayProcessed(node: QrwpNodeApi, response: Response): Promise<void> {
  const header = response.headers.get("payment-response");
  if (!header) return;
  let settled: ReturnType<typeof decodePaymentResponseHeader>;
  try {
    settled = decodePaymentResponseHeader(header);
  } catch {
    return;
  }
  const processed = qrwpProcessedSchema.safeParse(settled.extra?.processed);
  if (!settled.success || !processed.success || !/^0x[0-9a-fA-F]{64}$/.test(settled.transaction)) return;
  // Best effort: without it the node re-sends the transfer over libp2p before its next proof.
  await node.relayProcessed(x402PaymentId(settled.transaction), processed.data).catch(() => undefined);
}
