/**
 * Payer side of the `qrwp-channel` x402 v2 scheme, routed mode (spec: coinbase/x402
 * `specs/x402-specification-v2.md`; wire shapes in protocol/x402.ts).
 *
 * - {@link QrwpChannelClientScheme} (`SchemeNetworkClient` of `@x402/core`): pays the 402's invoice through
 *   the payer's own QRWP node (`POST /v1/payments` with the invoice's `paymentHash`, routed over HTLCs) and
 *   returns `{ paymentHash, preimage }`. One invoice is paid at most once: the node payment id is
 *   `x402:<paymentHash>`, which the node refuses to reuse (CONFLICT).
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
import {
  QRWP_X402_SCHEME,
  QrwpError,
  isAtomicAmount,
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
}

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
   *   (NO_ROUTE, INSUFFICIENT_CAPACITY, CONFLICT for an invoice already paid from here, ...).
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
    const payment = await this.#node.pay({
      target: requirements.payTo,
      token: requirements.asset,
      amount,
      paymentHash,
      paymentId: `x402:${paymentHash}`,
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
  });
  const client = qrwpX402Client(scheme, chainId, options.maxAmount, options.asset);
  return wrapFetchWithPayment(baseFetch, client)(url, init);
}
