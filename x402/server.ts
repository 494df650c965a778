/**
 * Merchant side of the `qrwp-channel` x402 v2 scheme, routed and direct streaming modes (spec: coinbase/x402
 * `specs/x402-specification-v2.md`; wire shapes in protocol/x402.ts):
 *
 * - {@link QrwpChannelServerScheme} (`SchemeNetworkServer` of `@x402/core/server`): a route's price is
 *   `{ amount, asset }` in token base units; every **unpaid** 402 gets a fresh invoice minted on the
 *   merchant's node (`extra.invoice`, a dynamic extra field); the paid retry mints nothing.
 * - {@link QrwpNodeFacilitator} (`FacilitatorClient`): an in-process facilitator backed by the merchant's
 *   node. `verify` accepts a payload only if it is well formed, names an x402 invoice of the merchant's
 *   node with the route's terms (amount, asset, payee, hub), `sha256(preimage) == paymentHash`, the node
 *   reports the invoice **paid** (the payment is durable in the merchant's node) and no receipt exists yet.
 *   Direct mode: the same terms, the transfer's payment id is `x402:<paymentHash>` and its amount the price,
 *   the invoice has not expired, then the merchant's node verifies and stores the payer's balance proof
 *   (`POST /v1/transfers/direct`; durable when it answers; `no_channel` / `invalid_transfer` otherwise).
 *   `settle` records the receipt exactly once: a concurrent or later reuse gets
 *   `{ success: false, errorReason: "replayed" }`; a direct settlement's `extra.processed` is the merchant
 *   node's signed acknowledgement, which the payer relays to its own node.
 *
 * Refusals use the reasons of `X402_REFUSAL_REASONS`. Never throws for bad client input; an unreachable
 * merchant node is `merchant_unavailable`.
 */
import type {
  AssetAmount,
  Network,
  PaymentPayload,
  PaymentRequirements,
  Price,
  SchemeNetworkServer,
  SettleResponse,
  SupportedKind,
  SupportedResponse,
  VerifyResponse,
} from "@x402/core/types";
import type { FacilitatorClient, SchemePaymentRequiredContext } from "@x402/core/server";
import { decodePaymentSignatureHeader } from "@x402/core/http";
import {
  QRWP_ROUTED_TRANSFER_METHOD,
  QRWP_X402_SCHEME,
  isAtomicAmount,
  isQrwpError,
  decodeEnvelope,
  parseQrwpPayload,
  parseQrwpRoutedExtra,
  preimageMatches,
  x402Network,
  x402PaymentId,
  type DirectTransfer,
  type X402RefusalReason,
} from "../protocol/index.js";
import type { NodeAcceptedTransfer, NodeInfo, NodeInvoice, QrwpNodeApi } from "./node-api.js";
import { PaidSignals, type PaidWatch } from "./paid-signals.js";
import type { ReceiptMode, ReceiptStore } from "./receipts.js";

/** Invoices minted by the scheme carry this description prefix (then `<METHOD> <route>`). */
export const X402_INVOICE_PREFIX = "x402 ";

/** Minimal structured logger (pino / fastify compatible). Never pass the node API token. */
export interface X402Logger {
  info(obj: Record<string, unknown>, msg?: string): void;
  warn(obj: Record<string, unknown>, msg?: string): void;
}

const silentLog: X402Logger = { info: () => undefined, warn: () => undefined };

function eqAddr(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase();
}

/** The HTTP request fields the SDK puts in `transportContext.request` (what the scheme reads). */
interface RequestTransport {
  request?: { paymentHeader?: string; method?: string; routePattern?: string; path?: string };
}

/** True if a `PAYMENT-SIGNATURE` header value decodes to an x402 payload (shape not checked further). */
export function decodesAsPayment(header: string | undefined): boolean {
  if (!header) return false;
  try {
    decodePaymentSignatureHeader(header);
    return true;
  } catch {
    return false;
  }
}

/**
 * `SchemeNetworkServer` of `qrwp-channel` (routed mode) for one merchant node.
 * `parsePrice` takes `{ amount, asset }` only (atomic base units; no money strings: the token has no USD
 * price). `enrichPaymentRequiredResponse` mints one invoice on the merchant node per unpaid 402, with
 * `expirySeconds = maxTimeoutSeconds` and description `x402 <METHOD> <route>`.
 */
export class QrwpChannelServerScheme implements SchemeNetworkServer {
  readonly scheme = QRWP_X402_SCHEME;
  readonly defaultAssetTransferMethod = QRWP_ROUTED_TRANSFER_METHOD;
  readonly paymentFlows = {
    [QRWP_ROUTED_TRANSFER_METHOD]: { supported: ["authorization"], default: "authorization" },
  } as const;
  readonly dynamicExtraFields = ["invoice"];
  readonly #node: QrwpNodeApi;
  readonly #merchant: NodeInfo;
  readonly #log: X402Logger;

  constructor(node: QrwpNodeApi, merchant: NodeInfo, log: X402Logger = silentLog) {
    this.#node = node;
    this.#merchant = merchant;
    this.#log = log;
  }

  /**
   * `{ amount, asset }` as is (atomic base units, decimal string > 0).
   * @throws Error for any other price shape (money strings have no meaning for an arbitrary token).
   */
  async parsePrice(price: Price, network: Network): Promise<AssetAmount> {
    if (typeof price === "object" && price !== null && isAtomicAmount(price.amount)) {
      return { amount: price.amount, asset: price.asset };
    }
    throw new Error(
      `${QRWP_X402_SCHEME} on ${network} takes a price { amount: <base units>, asset: <token> }`,
    );
  }

  /** Adds `extra.hub` (the merchant node's ChannelHub) and `extra.direct: true`. */
  async enhancePaymentRequirements(
    requirements: PaymentRequirements,
    _supportedKind: SupportedKind,
    _extensions: string[],
  ): Promise<PaymentRequirements> {
    return {
      ...requirements,
      extra: { ...requirements.extra, hub: this.#merchant.hub, direct: true },
    };
  }

  /** Mints an invoice per requirement of this scheme, unless the request carries a payment. */
  enrichPaymentRequiredResponse = async (
    ctx: SchemePaymentRequiredContext,
  ): Promise<PaymentRequirements[] | void> => {
    const request = (ctx.transportContext as RequestTransport | undefined)?.request;
    if (ctx.paymentPayload || decodesAsPayment(request?.paymentHeader)) return;
    const out: PaymentRequirements[] = [];
    for (const req of ctx.requirements) {
      if (req.scheme !== this.scheme || req.extra.invoice !== undefined) {
        out.push(req);
        continue;
      }
      const route = `${request?.method ?? "GET"} ${request?.routePattern ?? request?.path ?? "/"}`;
      const invoice = await this.#node.createInvoice({
        token: req.asset,
        amount: req.amount,
        description: `${X402_INVOICE_PREFIX}${route}`.slice(0, 512),
        expirySeconds: req.maxTimeoutSeconds,
      });
      this.#log.info({ paymentHash: invoice.paymentHash, route, amount: req.amount }, "x402 invoice minted");
      out.push({
        ...req,
        extra: {
          ...req.extra,
          invoice: {
            paymentHash: invoice.paymentHash,
            expiresAtSeconds: Math.floor(invoice.expiresAtMs / 1000),
          },
        },
      });
    }
    return out;
  };
}

/** Options of {@link QrwpNodeFacilitator}. */
export interface QrwpFacilitatorOptions {
  /** How long `verify` waits for an open invoice to turn paid (the unlock reaches the merchant shortly
   * after the payer learns the preimage). Default 10,000 ms. */
  paidWaitMs?: number;
  /** While waiting, the invoice is asked for again on the node's `payment` event for it (its
   * `GET /v1/events`), and at the latest every `paidRecheckMs` (a missed event). Default 1,000 ms. */
  paidRecheckMs?: number;
  /** Direct mode: how long after its invoice expired a transfer is still taken (default
   * {@link DIRECT_EXPIRY_GRACE_MS}). */
  directExpiryGraceMs?: number;
  log?: X402Logger;
}

type Checked =
  | {
      ok: true;
      paymentHash: string;
      invoice: NodeInvoice;
      mode: ReceiptMode;
      payer: string | null;
      processed?: NodeAcceptedTransfer["processed"];
    }
  | { ok: false; reason: X402RefusalReason; message: string };

/** How many accepted direct transfers `verify` remembers for `settle` (each re-asked from the node if gone). */
const ACCEPTED_CACHE_MAX = 10_000;
/**
 * How long after its invoice expired a direct transfer is still taken (ms). The payer is committed once
 * its node signed (before the expiry: the client's deadline), and its node re-sends the transfer anyway:
 * refusing it would leave the payer charged and unserved. Matches the merchant node's retention of expired
 * unpaid invoices (60 s), after which the invoice is unknown.
 */
export const DIRECT_EXPIRY_GRACE_MS = 60_000;

/** A direct transfer the merchant node accepted in `verify`, kept for `settle`. */
interface AcceptedEntry {
  transfer: string;
  answer: NodeAcceptedTransfer;
  invoice: NodeInvoice;
}

/** The node's refusal of a direct transfer as an x402 reason. */
function directRefusal(code: string): X402RefusalReason {
  if (code === "CHANNEL_NOT_FOUND" || code === "CHANNEL_STATE") return "no_channel";
  if (code === "CONFLICT") return "replayed";
  if (code === "PEER_OFFLINE" || code === "TIMEOUT" || code === "UNAUTHORIZED" || code === "INTERNAL")
    return "merchant_unavailable";
  return "invalid_transfer";
}

/** In-process x402 facilitator backed by the merchant's node and a {@link ReceiptStore}. */
export class QrwpNodeFacilitator implements FacilitatorClient {
  readonly network: Network;
  readonly #node: QrwpNodeApi;
  readonly #merchant: NodeInfo;
  readonly #receipts: ReceiptStore;
  readonly #paidWaitMs: number;
  readonly #paidRecheckMs: number;
  readonly #paidSignals: PaidSignals;
  readonly #directGraceMs: number;
  readonly #log: X402Logger;
  /** paymentHash → the transfer, the node's answer and the invoice, from `verify` (bounded; oldest first). */
  readonly #accepted = new Map<string, AcceptedEntry>();

  constructor(
    node: QrwpNodeApi,
    merchant: NodeInfo,
    network: Network,
    receipts: ReceiptStore,
    options: QrwpFacilitatorOptions = {},
  ) {
    this.#node = node;
    this.#merchant = merchant;
    this.network = network;
    this.#receipts = receipts;
    this.#paidWaitMs = options.paidWaitMs ?? 10_000;
    this.#paidRecheckMs = options.paidRecheckMs ?? 1000;
    this.#directGraceMs = options.directExpiryGraceMs ?? DIRECT_EXPIRY_GRACE_MS;
    this.#log = options.log ?? silentLog;
    this.#paidSignals = new PaidSignals(node, { log: this.#log });
  }

  /** Closes the merchant node's event stream (`verify` still works, re-checking every `paidRecheckMs`). */
  close(): void {
    this.#paidSignals.close();
  }

  /** The one kind this facilitator handles: x402 v2, `qrwp-channel`, this merchant's network. */
  async getSupported(): Promise<SupportedResponse> {
    return {
      kinds: [{ x402Version: 2, scheme: QRWP_X402_SCHEME, network: this.network }],
      extensions: [],
      signers: {},
    };
  }

  /**
   * x402 verify: `{ isValid: true, payer? }` once the payment is held by the merchant's node (routed: the
   * invoice paid; direct: the transfer accepted), else `{ isValid: false, invalidReason }` with a reason of
   * `X402_REFUSAL_REASONS`. Never throws for client input.
   */
  async verify(payload: PaymentPayload, requirements: PaymentRequirements): Promise<VerifyResponse> {
    const r = await this.#check(payload, requirements, true);
    if (!r.ok) {
      this.#log.info({ reason: r.reason }, "x402 payment refused");
      return { isValid: false, invalidReason: r.reason, invalidMessage: r.message };
    }
    return { isValid: true, ...(r.payer ? { payer: r.payer } : {}) };
  }

  /**
   * x402 settle: records the receipt once (the replay arbiter). `{ success: true, transaction: paymentHash,
   * amount, payer?, extra: { mode, processed? } }`, or `{ success: false, errorReason }` (`replayed`, or the
   * reason `verify` would give now).
   */
  async settle(payload: PaymentPayload, requirements: PaymentRequirements): Promise<SettleResponse> {
    const base = { transaction: "", network: requirements.network };
    const r = await this.#check(payload, requirements, false);
    if (!r.ok) return { ...base, success: false, errorReason: r.reason, errorMessage: r.message };
    this.#accepted.delete(r.paymentHash);
    const inserted = this.#receipts.insertOnce({
      paymentHash: r.paymentHash,
      route: r.invoice.description.slice(X402_INVOICE_PREFIX.length),
      amount: requirements.amount,
      asset: requirements.asset,
      payer: r.payer,
      mode: r.mode,
      createdAtMs: Date.now(),
    });
    if (!inserted) {
      this.#log.info({ paymentHash: r.paymentHash, reason: "replayed" }, "x402 settlement refused");
      return { ...base, success: false, errorReason: "replayed", errorMessage: "payment already used" };
    }
    this.#log.info(
      { paymentHash: r.paymentHash, amount: requirements.amount, mode: r.mode },
      "x402 payment settled",
    );
    return {
      ...base,
      success: true,
      transaction: r.paymentHash,
      amount: requirements.amount,
      ...(r.payer ? { payer: r.payer } : {}),
      ...(r.processed ? { extra: { mode: r.mode, processed: r.processed } } : { extra: { mode: r.mode } }),
    };
  }

  async #check(payload: PaymentPayload, requirements: PaymentRequirements, wait: boolean): Promise<Checked> {
    const refuse = (reason: X402RefusalReason, message: string): Checked => ({ ok: false, reason, message });
    const paid = parseQrwpPayload(payload?.payload);
    const extra = parseQrwpRoutedExtra(payload?.accepted?.extra);
    if (!paid || !extra) return refuse("malformed_payment", "payload is not a qrwp-channel payment");
    if (
      requirements.scheme !== QRWP_X402_SCHEME ||
      requirements.network !== this.network ||
      payload.accepted.scheme !== QRWP_X402_SCHEME ||
      payload.accepted.network !== this.network
    )
      return refuse("wrong_payee", "another scheme or network");
    if (
      !eqAddr(requirements.payTo, this.#merchant.address) ||
      !eqAddr(payload.accepted.payTo, this.#merchant.address)
    )
      return refuse("wrong_payee", "payTo is not this merchant");
    if (!eqAddr(extra.hub, this.#merchant.hub)) return refuse("wrong_payee", "another ChannelHub");
    if (payload.accepted.amount !== requirements.amount)
      return refuse("wrong_amount", "accepted amount differs");
    if (!eqAddr(payload.accepted.asset, requirements.asset))
      return refuse("wrong_asset", "accepted asset differs");
    const paymentHash = paid.paymentHash.toLowerCase();
    if (extra.invoice.paymentHash.toLowerCase() !== paymentHash)
      return refuse("unknown_invoice", "payload and accepted invoice differ");
    if (paid.mode === "routed" && !preimageMatches(paid))
      return refuse("invalid_preimage", "sha256(preimage) != paymentHash");
    if (paid.mode === "direct") {
      const t = decodeDirectTransfer(paid.transfer);
      if (!t) return refuse("malformed_payment", "transfer is not a DirectTransfer envelope");
      const proof = t.balanceProof.proof;
      if (proof.chainId.toString() !== this.#merchant.chainId || !eqAddr(proof.hub, this.#merchant.hub))
        return refuse("wrong_payee", "balance proof for another chain or ChannelHub");
      if (t.paymentId !== x402PaymentId(paymentHash))
        return refuse("unknown_invoice", "the transfer's payment id does not name this invoice");
      if (t.amount.toString() !== requirements.amount)
        return refuse("wrong_amount", "the transfer's amount is not the price");
    }
    if (this.#receipts.get(paymentHash)) return refuse("replayed", "payment already used");
    // Direct mode, the very bytes `verify` had the node accept: settle needs no node call.
    const cached = paid.mode === "direct" ? this.#accepted.get(paymentHash) : undefined;
    if (cached && paid.mode === "direct" && cached.transfer === paid.transfer)
      return directOk(paymentHash, cached);

    const deadline = Date.now() + (wait ? this.#paidWaitMs : 0);
    // Watched before the first look, so a payment event between that look and the wait is not missed.
    const watch = wait && paid.mode === "routed" ? this.#paidSignals.watch(paymentHash) : null;
    try {
      return await this.#awaitInvoice(paid, paymentHash, requirements, deadline, watch);
    } finally {
      watch?.cancel();
    }
  }

  /** The invoice checks of {@link #check}; a routed payment's open invoice is waited for until `deadline`. */
  async #awaitInvoice(
    paid: NonNullable<ReturnType<typeof parseQrwpPayload>>,
    paymentHash: string,
    requirements: PaymentRequirements,
    deadline: number,
    watch: PaidWatch | null,
  ): Promise<Checked> {
    const refuse = (reason: X402RefusalReason, message: string): Checked => ({ ok: false, reason, message });
    for (;;) {
      let invoice: NodeInvoice;
      try {
        invoice = await this.#node.getInvoice(paymentHash);
      } catch (err) {
        if (isQrwpError(err) && err.code === "NOT_FOUND") return refuse("unknown_invoice", "no such invoice");
        this.#log.warn({ err: isQrwpError(err) ? err.toJSON() : String(err) }, "merchant node unavailable");
        return refuse("merchant_unavailable", "the merchant's node did not answer");
      }
      if (!invoice.description.startsWith(X402_INVOICE_PREFIX))
        return refuse("unknown_invoice", "not an x402 invoice");
      if (!eqAddr(invoice.token, requirements.asset)) return refuse("wrong_asset", "invoice token differs");
      if (invoice.amount !== requirements.amount) return refuse("wrong_amount", "invoice amount differs");
      if (paid.mode === "direct") return this.#checkDirect(paymentHash, invoice, paid.transfer, requirements);
      if (invoice.status === "paid" && BigInt(invoice.paidAmount) >= BigInt(invoice.amount))
        return { ok: true, paymentHash, invoice, mode: "routed", payer: null };
      if (invoice.status === "expired") return refuse("invoice_expired", "invoice expired unpaid");
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0 || !watch)
        return refuse("not_paid", "the merchant's node does not hold the payment");
      await watch.next(Math.min(remainingMs, this.#paidRecheckMs));
    }
  }

  /**
   * Direct mode, after the shared checks: the invoice must still be open (not expired); then the merchant's
   * node verifies and stores the balance proof (durable before this returns; the identical transfer again
   * is idempotent). `settle` reuses `verify`'s answer.
   */
  async #checkDirect(
    paymentHash: string,
    invoice: NodeInvoice,
    transfer: string,
    requirements: PaymentRequirements,
  ): Promise<Checked> {
    const refuse = (reason: X402RefusalReason, message: string): Checked => ({ ok: false, reason, message });
    if (invoice.expiresAtMs + this.#directGraceMs <= Date.now())
      return refuse("invoice_expired", "invoice expired before the transfer arrived");
    let accepted: NodeAcceptedTransfer;
    try {
      accepted = await this.#node.acceptDirectTransfer(transfer, requirements.asset);
    } catch (err) {
      const code = isQrwpError(err) ? err.code : "INTERNAL";
      const reason = directRefusal(code);
      this.#log[reason === "merchant_unavailable" ? "warn" : "info"](
        { paymentHash, nodeCode: code, reason },
        "x402 direct transfer refused",
      );
      return refuse(reason, `the merchant's node refused the transfer (${code})`);
    }
    if (accepted.paymentId !== x402PaymentId(paymentHash) || accepted.amount !== requirements.amount)
      return refuse("invalid_transfer", "the node stored another payment than the one named");
    const entry = { transfer, answer: accepted, invoice };
    this.#accepted.set(paymentHash, entry);
    if (this.#accepted.size > ACCEPTED_CACHE_MAX) {
      const oldest = this.#accepted.keys().next().value;
      if (oldest !== undefined) this.#accepted.delete(oldest);
    }
    return directOk(paymentHash, entry);
  }
}

/** The accepted outcome of a direct payment from the node's answer (and the invoice it paid). */
function directOk(paymentHash: string, entry: AcceptedEntry): Checked {
  return {
    ok: true,
    paymentHash,
    invoice: entry.invoice,
    mode: "direct",
    payer: entry.answer.partner,
    processed: entry.answer.processed,
  };
}

/** The `DirectTransfer` in a base64url envelope, or null if it is anything else. */
function decodeDirectTransfer(transfer: string): DirectTransfer | null {
  try {
    const body = decodeEnvelope(Buffer.from(transfer, "base64url")).body;
    return body.type === "DirectTransfer" ? body : null;
  } catch {
    return null;
  }
}

/** What a merchant app needs to sell routes with x402 on any framework (see {@link createQrwpMerchant}). */
export interface QrwpMerchant {
  /** The merchant node's identity (address = `payTo`, chain, hub). */
  info: NodeInfo;
  /** `eip155:<chainId>`. */
  network: Network;
  node: QrwpNodeApi;
  scheme: QrwpChannelServerScheme;
  facilitator: QrwpNodeFacilitator;
  receipts: ReceiptStore;
}

/**
 * Asks the merchant node's `/v1/info` once and builds the scheme server and the facilitator over
 * `receipts`. Register them with `new x402ResourceServer(m.facilitator).register(m.network, m.scheme)`
 * (also usable with `@x402/express`'s `paymentMiddleware`; pass `syncFacilitatorOnStart: false` and call
 * `initialize()` yourself to avoid its `process.exit` on a configuration error).
 * @throws QrwpError from the node API (PEER_OFFLINE, TIMEOUT, UNAUTHORIZED, ...).
 */
export async function createQrwpMerchant(
  node: QrwpNodeApi,
  receipts: ReceiptStore,
  options: QrwpFacilitatorOptions = {},
): Promise<QrwpMerchant> {
  const info = await node.info();
  const network = x402Network(info.chainId);
  return {
    info,
    network,
    node,
    scheme: new QrwpChannelServerScheme(node, info, options.log),
    facilitator: new QrwpNodeFacilitator(node, info, network, receipts, options),
    receipts,
  };
}

/** The `RouteConfig.accepts` entry of a route priced `amount` base units of `token` for this merchant. */
export function qrwpPaymentOption(
  merchant: Pick<QrwpMerchant, "info" | "network">,
  amount: string,
  token: string,
  maxTimeoutSeconds = 300,
) {
  return {
    scheme: QRWP_X402_SCHEME,
    network: merchant.network,
    payTo: merchant.info.address,
    price: { amount, asset: token },
    maxTimeoutSeconds,
    extra: { assetTransferMethod: QRWP_ROUTED_TRANSFER_METHOD },
  };
}
