/**
 * Merchant side of the `qrwp-channel` x402 v2 scheme, routed and direct streaming modes (spec: coinbase/x402
 * `specs/x402-specification-v2.md`; wire shapes in protocol/x402.ts):
 *
 * - {@link QrwpChannelServerScheme} (`SchemeNetworkServer` of `@x402/core/server`): a route's price is
 *   `{ amount, asset }` in token base units. Every **unpaid** 402 gets a stateless direct-mode ticket
 *   (`extra.ticket`, HMAC of the terms, the route and the expiry: no write) and, unless routed mode is off, a
 *   fresh invoice minted on the merchant's node (`extra.invoice`; not fsync'd by the node); both are dynamic
 *   extra fields. The paid retry mints nothing. A ticket of a fixed-price route is `reusable`: the client
 *   may pay that route again with it, without a 402, until it expires.
 * - {@link QrwpNodeFacilitator} (`FacilitatorClient`): an in-process facilitator backed by the merchant's
 *   node. `verify` accepts a payload only if it is well formed, names the route's terms (amount, asset,
 *   payee, hub), and: routed, an x402 invoice of the merchant's node with those terms,
 *   `sha256(preimage) == paymentHash`, the node reports the invoice **paid** (durable in the merchant's
 *   node); direct, a balance proof whose payment `x402:<paymentHash>` is for exactly the price, under an
 *   unexpired invoice of the node or a ticket of ours, then the merchant's node verifies and stores the proof
 *   (`POST /v1/transfers/direct`, once per proof however many requests carry it; durable when it answers;
 *   `no_channel` / `invalid_transfer` / `replayed` otherwise). And no receipt exists yet.
 *   `settle` records the receipt exactly once (x402/receipts.ts): a concurrent or later reuse gets
 *   `{ success: false, errorReason: "replayed" }`; a direct settlement's `extra.processed` is the merchant
 *   node's signed acknowledgement, which the payer relays to its own node.
 *
 * Refusals use the reasons of `X402_REFUSAL_REASONS` (a forged ticket is `unknown_invoice`, an expired one
 * `invoice_expired`). Never throws for bad client input; an unreachable merchant node is
 * `merchant_unavailable`.
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
import { createHmac, timingSafeEqual } from "node:crypto";
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
  x402TicketMessage,
  type QrwpTicket,
  type QrwpTicketTerms,
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

/** The x402 header encoding: base64 (standard alphabet, padded). */
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;
/** Header values {@link decodesAsPayment} answered lately (a request's header is asked about twice). */
const decodedHeaders = new Map<string, boolean>();

/**
 * True if a `PAYMENT-SIGNATURE` header value decodes to an x402 payload (shape not checked further): the
 * check of `@x402/core`'s `decodePaymentSignatureHeader` (base64 of JSON), on Node's codec, the last 64
 * answers remembered.
 */
export function decodesAsPayment(header: string | undefined): boolean {
  if (!header) return false;
  const known = decodedHeaders.get(header);
  if (known !== undefined) return known;
  let ok = false;
  if (BASE64_RE.test(header)) {
    try {
      JSON.parse(Buffer.from(header, "base64").toString("utf8"));
      ok = true;
    } catch {
      ok = false;
    }
  }
  decodedHeaders.set(header, ok);
  if (decodedHeaders.size > 64) decodedHeaders.delete(decodedHeaders.keys().next().value as string);
  return ok;
}

/** How a merchant's tickets are minted and checked (shared by its scheme server and facilitator). */
export class QrwpTickets {
  readonly #key: Buffer;
  /** mac → the message it was verified over. */
  readonly #verified = new Map<string, string>();

  /** @param key - the HMAC-SHA256 key (at least 16 bytes; the merchant's secret). */
  constructor(key: Uint8Array) {
    if (key.length < 16) throw new Error("the ticket key must have at least 16 bytes");
    this.#key = Buffer.from(key);
  }

  /** A ticket for `terms` (route and expiry included). */
  mint(terms: QrwpTicketTerms): QrwpTicket {
    return {
      route: terms.route,
      reusable: terms.reusable,
      expiresAtSeconds: terms.expiresAtSeconds,
      mac: this.#macOf(x402TicketMessage(terms)),
    };
  }

  /** True if `mac` is ours over `terms` (timing-safe; the last 1,024 verified tickets remembered). */
  verify(terms: QrwpTicketTerms, mac: string): boolean {
    const message = x402TicketMessage(terms);
    if (this.#verified.get(mac) === message) return true;
    const expected = Buffer.from(this.#macOf(message).slice(2), "hex");
    const given = Buffer.from(mac.slice(2), "hex");
    const ok = given.length === expected.length && timingSafeEqual(given, expected);
    if (ok) {
      this.#verified.set(mac, message);
      if (this.#verified.size > 1024) this.#verified.delete(this.#verified.keys().next().value as string);
    }
    return ok;
  }

  #macOf(message: string): string {
    return "0x" + createHmac("sha256", this.#key).update(message).digest("hex");
  }
}

/** Options of {@link QrwpChannelServerScheme}. */
export interface QrwpSchemeOptions {
  /** Mint an invoice on the merchant node per unpaid 402 for routed payers (default true). */
  routed?: boolean;
  /**
   * `"<METHOD> <route pattern>"` of the routes whose price does not depend on the request: their tickets
   * are `reusable` (a client pays the route again with them, without a 402). Default: none.
   */
  fixedPriceRoutes?: ReadonlySet<string>;
  log?: X402Logger;
}

/**
 * `SchemeNetworkServer` of `qrwp-channel` for one merchant node.
 * `parsePrice` takes `{ amount, asset }` only (atomic base units; no money strings: the token has no USD
 * price). `enrichPaymentRequiredResponse` adds to every unpaid 402 a ticket (stateless) and, unless routed
 * mode is off, one invoice minted on the merchant node with `expirySeconds = maxTimeoutSeconds` and
 * description `x402 <METHOD> <route>`.
 */
export class QrwpChannelServerScheme implements SchemeNetworkServer {
  readonly scheme = QRWP_X402_SCHEME;
  readonly defaultAssetTransferMethod = QRWP_ROUTED_TRANSFER_METHOD;
  readonly paymentFlows = {
    [QRWP_ROUTED_TRANSFER_METHOD]: { supported: ["authorization"], default: "authorization" },
  } as const;
  readonly dynamicExtraFields = ["invoice", "ticket"];
  readonly #node: QrwpNodeApi;
  readonly #merchant: NodeInfo;
  readonly #tickets: QrwpTickets;
  readonly #routed: boolean;
  readonly #fixedPriceRoutes: ReadonlySet<string>;
  readonly #log: X402Logger;

  constructor(node: QrwpNodeApi, merchant: NodeInfo, tickets: QrwpTickets, options: QrwpSchemeOptions = {}) {
    this.#node = node;
    this.#merchant = merchant;
    this.#tickets = tickets;
    this.#routed = options.routed ?? true;
    this.#fixedPriceRoutes = options.fixedPriceRoutes ?? new Set();
    this.#log = options.log ?? silentLog;
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

  /** Adds a ticket and (routed mode) an invoice per requirement of this scheme, unless the request pays. */
  enrichPaymentRequiredResponse = async (
    ctx: SchemePaymentRequiredContext,
  ): Promise<PaymentRequirements[] | void> => {
    const request = (ctx.transportContext as RequestTransport | undefined)?.request;
    if (ctx.paymentPayload || decodesAsPayment(request?.paymentHeader)) return;
    const out: PaymentRequirements[] = [];
    for (const req of ctx.requirements) {
      if (req.scheme !== this.scheme || req.extra.invoice !== undefined || req.extra.ticket !== undefined) {
        out.push(req);
        continue;
      }
      const route = `${request?.method ?? "GET"} ${request?.routePattern ?? request?.path ?? "/"}`;
      const extra: Record<string, unknown> = { ...req.extra };
      if (this.#routed) {
        const invoice = await this.#node.createInvoice({
          token: req.asset,
          amount: req.amount,
          description: `${X402_INVOICE_PREFIX}${route}`.slice(0, 512),
          expirySeconds: req.maxTimeoutSeconds,
        });
        this.#log.info(
          { paymentHash: invoice.paymentHash, route, amount: req.amount },
          "x402 invoice minted",
        );
        extra.invoice = {
          paymentHash: invoice.paymentHash,
          expiresAtSeconds: Math.floor(invoice.expiresAtMs / 1000),
        };
      }
      const terms = ticketTerms(req, this.#merchant.hub, {
        route: route.slice(0, 512),
        reusable: this.#fixedPriceRoutes.has(route),
        expiresAtSeconds: Math.floor(Date.now() / 1000) + req.maxTimeoutSeconds,
      });
      extra.ticket = this.#tickets.mint(terms);
      out.push({ ...req, extra });
    }
    return out;
  };
}

/** The MAC'd terms of a ticket for requirement `req` (its `route`, `reusable` and expiry given). */
function ticketTerms(
  req: Pick<PaymentRequirements, "network" | "payTo" | "asset" | "amount" | "maxTimeoutSeconds">,
  hub: string,
  ticket: Pick<QrwpTicket, "route" | "reusable" | "expiresAtSeconds">,
): QrwpTicketTerms {
  return {
    network: req.network,
    payTo: req.payTo,
    hub,
    asset: req.asset,
    amount: req.amount,
    maxTimeoutSeconds: req.maxTimeoutSeconds,
    route: ticket.route,
    reusable: ticket.reusable,
    expiresAtSeconds: ticket.expiresAtSeconds,
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
  /** Direct mode: how long after its invoice or ticket expired a transfer is still taken (default
   * {@link DIRECT_EXPIRY_GRACE_MS}). */
  directExpiryGraceMs?: number;
  log?: X402Logger;
}

type Checked =
  | {
      ok: true;
      paymentHash: string;
      /** `<METHOD> <route>` the payment bought (the invoice's description, or the ticket's route). */
      route: string;
      mode: ReceiptMode;
      payer: string | null;
      processed?: NodeAcceptedTransfer["processed"];
    }
  | { ok: false; reason: X402RefusalReason; message: string };

/** How many proofs the merchant node accepted `verify` remembers by their exact bytes (oldest out). */
const ACCEPTED_CACHE_MAX = 4096;
/**
 * How long after its invoice or ticket expired a direct transfer is still taken (ms). The payer is committed
 * once its node signed (before the expiry: the client's deadline), and its node re-sends the transfer anyway:
 * refusing it would leave the payer charged and unserved. Matches the merchant node's retention of expired
 * unpaid invoices (60 s), after which the invoice is unknown.
 */
export const DIRECT_EXPIRY_GRACE_MS = 60_000;

/** The node's refusal of a direct transfer as an x402 reason. */
function directRefusal(code: string): X402RefusalReason {
  if (code === "CHANNEL_NOT_FOUND" || code === "CHANNEL_STATE") return "no_channel";
  if (code === "CONFLICT") return "replayed";
  if (code === "PEER_OFFLINE" || code === "TIMEOUT" || code === "UNAUTHORIZED" || code === "INTERNAL")
    return "merchant_unavailable";
  return "invalid_transfer";
}

/** The merchant node's answer to one transfer: accepted, or its error code. */
type NodeAnswer = { ok: true; answer: NodeAcceptedTransfer } | { ok: false; code: string };

/** In-process x402 facilitator backed by the merchant's node and a {@link ReceiptStore}. */
export class QrwpNodeFacilitator implements FacilitatorClient {
  readonly network: Network;
  readonly #node: QrwpNodeApi;
  readonly #merchant: NodeInfo;
  readonly #receipts: ReceiptStore;
  readonly #tickets: QrwpTickets;
  readonly #paidWaitMs: number;
  readonly #paidRecheckMs: number;
  readonly #paidSignals: PaidSignals;
  readonly #directGraceMs: number;
  readonly #log: X402Logger;
  /** What `verify` concluded for a payload object; `settle` gets the same object and reuses it. */
  readonly #verified = new WeakMap<PaymentPayload, Checked>();
  /**
   * Transfer (base64url) → the merchant node's answer: in flight (one node call per proof, however many
   * requests carry it: the payer's node signs the payments of concurrent requests into one proof), then
   * accepted (bounded, oldest out). Refusals are not kept.
   */
  readonly #transfers = new Map<string, Promise<NodeAnswer>>();

  constructor(
    node: QrwpNodeApi,
    merchant: NodeInfo,
    network: Network,
    receipts: ReceiptStore,
    tickets: QrwpTickets,
    options: QrwpFacilitatorOptions = {},
  ) {
    this.#node = node;
    this.#merchant = merchant;
    this.network = network;
    this.#receipts = receipts;
    this.#tickets = tickets;
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
   * invoice paid; direct: the proof accepted), else `{ isValid: false, invalidReason }` with a reason of
   * `X402_REFUSAL_REASONS`. Never throws for client input.
   */
  async verify(payload: PaymentPayload, requirements: PaymentRequirements): Promise<VerifyResponse> {
    const r = await this.#check(payload, requirements, true);
    if (!r.ok) {
      this.#log.info({ reason: r.reason }, "x402 payment refused");
      return { isValid: false, invalidReason: r.reason, invalidMessage: r.message };
    }
    this.#verified.set(payload, r);
    return { isValid: true, ...(r.payer ? { payer: r.payer } : {}) };
  }

  /**
   * x402 settle: records the receipt once (the replay arbiter). `{ success: true, transaction: paymentHash,
   * amount, payer?, extra: { mode, processed? } }`, or `{ success: false, errorReason }` (`replayed`, or the
   * reason `verify` would give now). The payload `verify` accepted is not checked again.
   */
  async settle(payload: PaymentPayload, requirements: PaymentRequirements): Promise<SettleResponse> {
    const base = { transaction: "", network: requirements.network };
    const verified = this.#verified.get(payload);
    this.#verified.delete(payload);
    const r = verified ?? (await this.#check(payload, requirements, false));
    if (!r.ok) return { ...base, success: false, errorReason: r.reason, errorMessage: r.message };
    const inserted = this.#receipts.insertOnce({
      paymentHash: r.paymentHash,
      route: r.route,
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
    const invoiceHash = extra.invoice?.paymentHash.toLowerCase();
    // A direct payment under the ticket rather than the invoice: the payer picked its own payment hash.
    const ticket = paid.mode === "direct" && invoiceHash !== paymentHash ? extra.ticket : undefined;
    if (!ticket && invoiceHash !== paymentHash)
      return refuse("unknown_invoice", "payload and accepted invoice differ");
    if (paid.mode === "routed" && !preimageMatches(paid))
      return refuse("invalid_preimage", "sha256(preimage) != paymentHash");
    if (paid.mode === "direct") {
      const t = decodeDirectPayments(paid.transfer);
      if (!t)
        return refuse("malformed_payment", "transfer is not a DirectTransfer or BalanceUpdate envelope");
      if (t.chainId !== this.#merchant.chainId || !eqAddr(t.hub, this.#merchant.hub))
        return refuse("wrong_payee", "balance proof for another chain or ChannelHub");
      const own = t.payments.find((p) => p.paymentId === x402PaymentId(paymentHash));
      if (!own) return refuse("unknown_invoice", "the transfer carries no payment naming this invoice");
      if (own.amount.toString() !== requirements.amount)
        return refuse("wrong_amount", "the transfer's amount is not the price");
    }
    if (ticket) {
      const terms = ticketTerms(payload.accepted, this.#merchant.hub, ticket);
      if (!this.#tickets.verify(terms, ticket.mac))
        return refuse("unknown_invoice", "the ticket was not minted by this merchant for these terms");
      if (ticket.expiresAtSeconds * 1000 + this.#directGraceMs <= Date.now())
        return refuse("invoice_expired", "the ticket expired before the transfer arrived");
    }
    if (this.#receipts.get(paymentHash)) return refuse("replayed", "payment already used");
    if (ticket && paid.mode === "direct")
      return this.#acceptDirect(paymentHash, ticket.route, paid.transfer, requirements);

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
      const route = invoice.description.slice(X402_INVOICE_PREFIX.length);
      if (paid.mode === "direct") {
        if (invoice.expiresAtMs + this.#directGraceMs <= Date.now())
          return refuse("invoice_expired", "invoice expired before the transfer arrived");
        return this.#acceptDirect(paymentHash, route, paid.transfer, requirements);
      }
      if (invoice.status === "paid" && BigInt(invoice.paidAmount) >= BigInt(invoice.amount))
        return { ok: true, paymentHash, route, mode: "routed", payer: null };
      if (invoice.status === "expired") return refuse("invoice_expired", "invoice expired unpaid");
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0 || !watch)
        return refuse("not_paid", "the merchant's node does not hold the payment");
      await watch.next(Math.min(remainingMs, this.#paidRecheckMs));
    }
  }

  /**
   * Direct mode, after the checks of {@link #check}: the merchant's node verifies and stores the balance
   * proof (durable before it answers; the identical transfer again is idempotent), and it must carry this
   * payment at the price.
   */
  async #acceptDirect(
    paymentHash: string,
    route: string,
    transfer: string,
    requirements: PaymentRequirements,
  ): Promise<Checked> {
    const refuse = (reason: X402RefusalReason, message: string): Checked => ({ ok: false, reason, message });
    const result = await this.#acceptOnce(transfer, requirements.asset);
    if (!result.ok) {
      const reason = directRefusal(result.code);
      this.#log[reason === "merchant_unavailable" ? "warn" : "info"](
        { paymentHash, nodeCode: result.code, reason },
        "x402 direct transfer refused",
      );
      return refuse(reason, `the merchant's node refused the transfer (${result.code})`);
    }
    const accepted = result.answer;
    const own = accepted.payments.find((p) => p.paymentId === x402PaymentId(paymentHash));
    if (!own || own.amount !== requirements.amount)
      return refuse("invalid_transfer", "the node stored another payment than the one named");
    return {
      ok: true,
      paymentHash,
      route,
      mode: "direct",
      payer: accepted.partner,
      processed: accepted.processed,
    };
  }

  /** The node's answer to `transfer`: one call per distinct transfer in flight, accepted ones remembered. */
  #acceptOnce(transfer: string, asset: string): Promise<NodeAnswer> {
    const known = this.#transfers.get(transfer);
    if (known) return known;
    const answer: Promise<NodeAnswer> = this.#node.acceptDirectTransfer(transfer, asset).then(
      (accepted) => ({ ok: true as const, answer: accepted }),
      (err: unknown) => {
        this.#transfers.delete(transfer); // a refusal is asked again (the next call may find it fixed)
        return { ok: false as const, code: isQrwpError(err) ? err.code : "INTERNAL" };
      },
    );
    this.#transfers.set(transfer, answer);
    if (this.#transfers.size > ACCEPTED_CACHE_MAX) {
      const oldest = this.#transfers.keys().next().value;
      if (oldest !== undefined) this.#transfers.delete(oldest);
    }
    return answer;
  }
}

/** What a direct transfer carries (see {@link decodeDirectPayments}). */
type DirectPayments = { chainId: string; hub: string; payments: { paymentId: string; amount: bigint }[] };
/** Transfers decoded lately: the requests whose payments were signed together carry the same one. */
const decodedTransfers = new Map<string, DirectPayments | null>();

/**
 * The payments a direct transfer carries and the chain/hub of its proof, or null if it is anything else
 * (the last 256 answers remembered).
 */
function decodeDirectPayments(transfer: string): DirectPayments | null {
  const known = decodedTransfers.get(transfer);
  if (known !== undefined) return known;
  const decoded = decodeDirectPaymentsOnce(transfer);
  decodedTransfers.set(transfer, decoded);
  if (decodedTransfers.size > 256) decodedTransfers.delete(decodedTransfers.keys().next().value as string);
  return decoded;
}

function decodeDirectPaymentsOnce(transfer: string): DirectPayments | null {
  try {
    const body = decodeEnvelope(Buffer.from(transfer, "base64url")).body;
    let payments: { paymentId: string; amount: bigint }[];
    if (body.type === "DirectTransfer") payments = [{ paymentId: body.paymentId, amount: body.amount }];
    else if (body.type === "BalanceUpdate") {
      payments = [];
      for (const c of body.changes) {
        if (c.kind !== "direct") return null;
        payments.push({ paymentId: c.paymentId, amount: c.amount });
      }
    } else return null;
    const proof = body.balanceProof.proof;
    return { chainId: proof.chainId.toString(), hub: proof.hub, payments };
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
  tickets: QrwpTickets;
}

/** Options of {@link createQrwpMerchant}. */
export interface QrwpMerchantOptions extends QrwpFacilitatorOptions, Omit<QrwpSchemeOptions, "log"> {
  /**
   * HMAC key of the tickets (≥ 16 bytes; instances selling behind one load balancer share it). Default: a
   * random key kept in the receipts file (tickets survive a restart).
   */
  ticketKey?: Uint8Array;
}

/**
 * Asks the merchant node's `/v1/info` once and builds the scheme server and the facilitator over
 * `receipts`. Register them with `new x402ResourceServer(m.facilitator).register(m.network, m.scheme)`
 * (also usable with `@x402/express`'s `paymentMiddleware`; pass `syncFacilitatorOnStart: false` and call
 * `initialize()` yourself to avoid its `process.exit` on a configuration error), and add
 * {@link qrwpTicketRouteHook} with `onBeforeVerify` so a ticket pays only the route it was minted for.
 * @throws QrwpError from the node API (PEER_OFFLINE, TIMEOUT, UNAUTHORIZED, ...).
 */
export async function createQrwpMerchant(
  node: QrwpNodeApi,
  receipts: ReceiptStore,
  options: QrwpMerchantOptions = {},
): Promise<QrwpMerchant> {
  const info = await node.info();
  const network = x402Network(info.chainId);
  const tickets = new QrwpTickets(options.ticketKey ?? receipts.secret("x402-ticket-key"));
  return {
    info,
    network,
    node,
    scheme: new QrwpChannelServerScheme(node, info, tickets, {
      ...(options.routed !== undefined ? { routed: options.routed } : {}),
      ...(options.fixedPriceRoutes ? { fixedPriceRoutes: options.fixedPriceRoutes } : {}),
      ...(options.log ? { log: options.log } : {}),
    }),
    facilitator: new QrwpNodeFacilitator(node, info, network, receipts, tickets, options),
    receipts,
    tickets,
  };
}

/**
 * An `onBeforeVerify` hook of `x402ResourceServer`: a payment under a ticket minted for another route than
 * the request's (`"<METHOD> <route pattern>"`) is refused `unknown_invoice` (the facilitator sees no request).
 */
export function qrwpTicketRouteHook(): (context: {
  paymentPayload: { accepted?: { extra?: Record<string, unknown> } };
  transportContext?: unknown;
}) => Promise<void | { abort: true; reason: string; message?: string }> {
  return async (context) => {
    const ticket = context.paymentPayload.accepted?.extra?.ticket as { route?: unknown } | undefined;
    const request = (context.transportContext as RequestTransport | undefined)?.request;
    if (!ticket || typeof ticket !== "object" || !request) return;
    const route = `${request.method ?? "GET"} ${request.routePattern ?? request.path ?? "/"}`;
    if (ticket.route !== route)
      return { abort: true, reason: "unknown_invoice", message: "the ticket was minted for another route" };
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
