/**
 * Payer side of the `qrwp-channel` x402 v2 scheme (spec: coinbase/x402 `specs/x402-specification-v2.md`;
 * wire shapes in protocol/x402.ts).
 *
 * - {@link QrwpChannelClientScheme} (`SchemeNetworkClient` of `@x402/core`): **direct streaming** when the
 *   merchant takes it (`extra.direct`) and the payer's node has an open channel with `payTo` in the asset
 *   with enough balance: the node signs (and persists, but does not send) the next balance proof for the
 *   price (`POST /v1/payments/direct-transfers`) and the payload is `{ paymentHash, transfer }`. Otherwise
 *   **routed**: the node pays the 402's invoice through the network (`POST /v1/payments` with the invoice's
 *   `paymentHash`, HTLCs) and the payload is `{ paymentHash, preimage }`. Under the requirement's stateless
 *   ticket the direct payment's hash is a fresh random one; otherwise it is the invoice's. One payment hash is
 *   paid at most once either way: the node payment id is `x402:<paymentHash>`; the node never pays one id
 *   twice (a direct signature under a used id is CONFLICT; a routed payment under it returns the existing
 *   payment).
 * - {@link qrwpFetchClient}: a `fetch` that pays 402s with that scheme through `wrapFetchWithPayment` of
 *   `@x402/fetch`, with a per-payment cap, caching the requirement of a route it paid directly (the next
 *   requests skip the 402) and relaying each proof's acknowledgement once; {@link qrwpFetch}: the same for
 *   one request. A request that already carries `PAYMENT-SIGNATURE` is sent as is and never paid.
 */
import { wrapFetchWithPayment, x402Client } from "@x402/fetch";
import type {
  PaymentPayload,
  PaymentPayloadContext,
  PaymentPayloadResult,
  PaymentRequirements,
  SchemeNetworkClient,
} from "@x402/core/types";
import { randomBytes } from "node:crypto";
import { decodePaymentResponseHeader, decodePaymentSignatureHeader } from "@x402/core/http";
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
  type QrwpProcessed,
  type QrwpRoutedPayload,
} from "../protocol/index.js";
import { QrwpNodeApi, type NodeApiConfig, type NodeInfo, type NodeSignedTransfer } from "./node-api.js";

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
  /**
   * The caller reports each request that carried a direct payment when it finished
   * ({@link QrwpChannelClientScheme.finished}); the next node call then gathers the payments of one round
   * (`qrwpFetchClient` does). Default false.
   */
  reportsFinishedRequests?: boolean;
}

/** How long the payer's node may take to sign a direct transfer (ms); its API call waits longer (10 s). */
const SIGN_DEADLINE_MS = 8_000;

/** Node refusals of a direct transfer that leave nothing signed: fall back to routed. */
const NO_DIRECT_CHANNEL = new Set(["CHANNEL_NOT_FOUND", "CHANNEL_STATE", "INSUFFICIENT_CAPACITY"]);

/** Most payments one `POST /v1/payments/direct-transfers/batch` carries (the node's bound). */
const SIGN_BATCH_MAX = 16;

/** A direct payment waiting to be signed by the payer's node. */
interface SignRequest {
  amount: bigint;
  paymentId: string;
  notAfterMs: number;
  resolve: (signed: NodeSignedTransfer) => void;
  reject: (err: unknown) => void;
}

/**
 * How long a payment waits at most for the other payers to come back (ms) before its node call goes (see
 * {@link SignBatcher}).
 */
const SIGN_GATHER_MS = 25;
/** ... and at most this long once the latest call's requests all finished (the last ones' next payments follow). */
const SIGN_GATHER_AFTER_FINISHED_MS = 2;
/** A signed payment whose request was not reported finished after this long (ms) no longer counts as out. */
const OUTSTANDING_FORGET_MS = 10_000;

/** Per merchant (`payTo asset`): the payments waiting, the call in flight, the requests out. */
interface SignQueue {
  waiting: SignRequest[];
  busy: boolean;
  /** Payments of the latest call whose requests have not finished (id → when signed, ms). */
  outstanding: Map<string, number>;
  /** Requests finished since the last call went: how many payers may come back with a next payment. */
  returned: number;
  /** When the waiting payments go at the latest (ms), and its timer. */
  deadline: number;
  timer: NodeJS.Timeout | null;
}

/**
 * The payer's node signs the direct payments of concurrent requests to one merchant in one call: while a
 * call is in flight, the next ones wait and go together (up to {@link SIGN_BATCH_MAX}) when it returns.
 * When the caller reports finished requests ({@link finished}; `qrwpFetchClient` does), a call also waits
 * until the requests of the latest call have finished and every payer that came back has queued its next
 * payment, at most {@link SIGN_GATHER_MS} (and {@link SIGN_GATHER_AFTER_FINISHED_MS} once they all
 * finished). The node builds a proof only on an acknowledged one, so sending the first payers back at once
 * splits the concurrent requests into two groups whose proofs alternate, each request waiting for both.
 */
class SignBatcher {
  readonly #node: QrwpNodeApi;
  readonly #gather: boolean;
  readonly #queues = new Map<string, SignQueue>();

  constructor(node: QrwpNodeApi, gather: boolean) {
    this.#node = node;
    this.#gather = gather;
  }

  sign(
    target: string,
    token: string,
    request: Omit<SignRequest, "resolve" | "reject">,
  ): Promise<NodeSignedTransfer> {
    const key = `${target.toLowerCase()} ${token.toLowerCase()}`;
    let queue = this.#queues.get(key);
    if (!queue) {
      queue = { waiting: [], busy: false, outstanding: new Map(), returned: 0, deadline: 0, timer: null };
      this.#queues.set(key, queue);
    }
    const q = queue;
    return new Promise((resolve, reject) => {
      // While a call is in flight the wait starts when it returns (its payers are the ones to wait for).
      if (q.waiting.length === 0 && !q.busy) q.deadline = Date.now() + SIGN_GATHER_MS;
      q.waiting.push({ ...request, resolve, reject });
      this.#schedule(target, token, q);
    });
  }

  /** The request that carried payment `paymentId` finished (answered or failed). */
  finished(paymentId: string): void {
    for (const [key, q] of this.#queues) {
      if (!q.outstanding.delete(paymentId)) continue;
      q.returned++;
      if (this.#out(q) === 0) q.deadline = Math.min(q.deadline, Date.now() + SIGN_GATHER_AFTER_FINISHED_MS);
      const [target, token] = key.split(" ") as [string, string];
      this.#schedule(target, token, q);
    }
  }

  /** Requests out (signed within {@link OUTSTANDING_FORGET_MS}, not finished). */
  #out(q: SignQueue): number {
    const oldest = Date.now() - OUTSTANDING_FORGET_MS;
    for (const [id, at] of q.outstanding) if (at < oldest) q.outstanding.delete(id);
    return q.outstanding.size;
  }

  /** Sends the waiting payments now, or once the round's payers are back (bounded wait). */
  #schedule(target: string, token: string, q: SignQueue): void {
    if (q.busy || q.waiting.length === 0) return;
    if (q.timer) clearTimeout(q.timer);
    q.timer = null;
    const wait = q.deadline - Date.now();
    const roundBack = this.#out(q) === 0 && q.waiting.length >= q.returned;
    if (this.#gather && !roundBack && q.waiting.length < SIGN_BATCH_MAX && wait > 0) {
      q.timer = setTimeout(() => {
        q.timer = null;
        this.#schedule(target, token, q);
      }, wait);
      return;
    }
    void this.#run(target, token, q);
  }

  async #run(target: string, token: string, q: SignQueue): Promise<void> {
    q.busy = true;
    const batch = q.waiting.splice(0, SIGN_BATCH_MAX);
    q.returned = 0;
    try {
      const outcomes = await this.#node.signDirectTransfers({ target, token, payments: batch });
      batch.forEach((r, i) => {
        const o = outcomes[i];
        if (o instanceof QrwpError) r.reject(o);
        else r.resolve(o as NodeSignedTransfer);
      });
      // The payers of this call are the ones to wait for next (the node signs on its proof once acknowledged).
      if (this.#gather) q.outstanding = new Map(batch.map((r) => [r.paymentId, Date.now()]));
    } catch (err) {
      for (const r of batch) r.reject(err);
    } finally {
      q.busy = false;
      q.deadline = Date.now() + SIGN_GATHER_MS;
      this.#schedule(target, token, q);
    }
  }
}

/** `SchemeNetworkClient` that pays `qrwp-channel` invoices through the payer's node. */
export class QrwpChannelClientScheme implements SchemeNetworkClient {
  readonly scheme = QRWP_X402_SCHEME;
  readonly #node: QrwpNodeApi;
  readonly #options: QrwpClientOptions;
  readonly #signer: SignBatcher;
  #info: Promise<NodeInfo> | null = null;

  constructor(node: QrwpNodeApi | NodeApiConfig, options: QrwpClientOptions) {
    this.#node = node instanceof QrwpNodeApi ? node : new QrwpNodeApi(node);
    this.#options = options;
    this.#signer = new SignBatcher(this.#node, options.reportsFinishedRequests === true);
  }

  /**
   * The HTTP request that carried the direct payment `paymentId` finished (see
   * {@link QrwpClientOptions.reportsFinishedRequests}).
   */
  finished(paymentId: string): void {
    this.#signer.finished(paymentId);
  }

  /**
   * Pays `requirements` and returns the payload. Direct streaming when the merchant takes it, `prefer`
   * allows it and the payer's node has a channel with `payTo` that can afford it: under the requirement's
   * ticket (a fresh random payment hash) or else its invoice. Otherwise routed: the node pays the invoice.
   * @throws QrwpError INVALID_ARGUMENT (not a qrwp-channel requirement, another chain or hub than the payer
   *   node's, amount above `maxAmount` or the SDK's cap, ticket and invoice expired, routed without an
   *   invoice), or the node's coded error (NO_ROUTE, INSUFFICIENT_CAPACITY, CONFLICT for an invoice already
   *   paid directly from here, ...; an invoice already paid routed from here gives back that payment, whose
   *   receipt the merchant then refuses as `replayed`).
   */
  async createPaymentPayload(
    x402Version: number,
    requirements: PaymentRequirements,
    context?: PaymentPayloadContext,
  ): Promise<PaymentPayloadResult> {
    const extra = parseQrwpRoutedExtra(requirements.extra);
    if (requirements.scheme !== QRWP_X402_SCHEME || !extra || !isAtomicAmount(requirements.amount))
      throw new QrwpError("INVALID_ARGUMENT", "not a qrwp-channel payment requirement", {
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
    const now = Date.now();
    const invoice = extra.invoice && extra.invoice.expiresAtSeconds * 1000 > now ? extra.invoice : null;
    const ticket = extra.ticket && extra.ticket.expiresAtSeconds * 1000 > now ? extra.ticket : null;
    if (!invoice && !ticket)
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
    if (extra.direct === true && (this.#options.prefer ?? "direct") === "direct") {
      // Under the ticket the payment hash is ours to pick: fresh for every payment, so a cached requirement pays again.
      const paymentHash = ticket
        ? "0x" + randomBytes(32).toString("hex")
        : invoice!.paymentHash.toLowerCase();
      const expiresAtMs = (ticket ?? invoice)!.expiresAtSeconds * 1000;
      try {
        // Concurrent payments to this merchant go to the node together (one proof for all, normally).
        const signed = await this.#signer.sign(requirements.payTo, requirements.asset, {
          amount,
          paymentId: x402PaymentId(paymentHash),
          // Sign only while we still wait for the answer, and before the ticket or invoice expires.
          notAfterMs: Math.min(expiresAtMs, Date.now() + SIGN_DEADLINE_MS),
        });
        const payload: QrwpDirectPayload = { paymentHash, transfer: signed.transfer };
        return { x402Version, payload };
      } catch (err) {
        if (!(isQrwpError(err) && NO_DIRECT_CHANNEL.has(err.code))) throw err;
      }
    }
    if (!invoice)
      throw new QrwpError(
        "INVALID_ARGUMENT",
        extra.invoice ? "the invoice has expired" : "the merchant takes direct payments only (no invoice)",
        { field: "invoice" },
      );
    const paymentHash = invoice.paymentHash.toLowerCase();
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

/** A `fetch` that pays `qrwp-channel` 402s ({@link qrwpFetchClient}). */
export type QrwpFetchClient = (url: string | URL, init?: RequestInit) => Promise<Response>;

/** How long before its ticket expires a cached requirement is no longer used (ms): clock skew, the trip. */
const CACHE_EXPIRY_MARGIN_MS = 10_000;

/** A route's requirement this client paid directly under a reusable ticket, and how to pay it again. */
interface CachedRequirement {
  /** The payload the first payment sent, whose `payload` each new payment replaces. */
  template: PaymentPayload;
  expiresAtMs: number;
}

/**
 * A `fetch` that answers `qrwp-channel` 402s by paying through the payer's node (`@x402/fetch`'s
 * `wrapFetchWithPayment` with {@link QrwpChannelClientScheme}), for many requests:
 *
 * - **Cached requirements.** Once a request to a route (method, origin and path; not the query) was paid
 *   directly under a `reusable` ticket, the next requests to it go straight with a payment for that
 *   requirement (a fresh payment hash each), no 402 round trip, until 10 s before the ticket expires. A
 *   cached payment the merchant refuses is answered with its 402 (as a refused payment always is; its
 *   transfer was signed, see docs/DECISIONS.md) and the route is dropped from the cache.
 * - **Acknowledgements.** A direct payment's `PAYMENT-RESPONSE` carries the merchant node's signed
 *   acknowledgement, handed to the payer's node in the background while the response is returned (best
 *   effort; without it the node re-sends the transfer over libp2p before its next one: nothing is lost),
 *   once per proof: payments the node signed together share it. The payer's payment may therefore still
 *   read `pending` for a moment after the response.
 *
 * Returns the final `Response` (a refused payment is the server's 402 response); rejects when the payment
 * cannot be made (e.g. the price is above `maxAmount`: nothing is paid). A request that already carries
 * `PAYMENT-SIGNATURE` / `X-PAYMENT` is sent unchanged and never paid.
 */
export function qrwpFetchClient(options: QrwpFetchOptions): QrwpFetchClient {
  return fetchClient(options, false);
}

/** {@link qrwpFetchClient}; `awaitRelay`: the acknowledgement reaches the payer's node before the call returns. */
function fetchClient(options: QrwpFetchOptions, awaitRelay: boolean): QrwpFetchClient {
  const baseFetch = options.fetch ?? globalThis.fetch;
  const node = new QrwpNodeApi(options.node);
  const scheme = new QrwpChannelClientScheme(node, {
    maxAmount: options.maxAmount,
    ...(options.maxFee !== undefined ? { maxFee: options.maxFee } : {}),
    ...(options.timeoutSeconds !== undefined ? { timeoutSeconds: options.timeoutSeconds } : {}),
    ...(options.prefer !== undefined ? { prefer: options.prefer } : {}),
    reportsFinishedRequests: true,
  });
  const cache = new Map<string, CachedRequirement>();
  /** Per channel, the highest nonce an acknowledgement of ours completed; in flight by `channel:nonce`. */
  const relayed = new Map<string, bigint>();
  const relaying = new Map<string, Promise<void>>();
  let paying: Promise<(input: RequestInfo | URL, init?: RequestInit) => Promise<Response>> | null = null;

  const routeKey = (method: string, url: string | URL): string => {
    const u = new URL(url);
    return `${method.toUpperCase()} ${u.origin}${u.pathname}`;
  };

  /** The fetch `wrapFetchWithPayment` calls: remembers a reusable requirement once it paid directly. */
  const capturing = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const header = input instanceof Request ? input.headers.get("payment-signature") : null;
    if (!header) return baseFetch(input, init);
    let template: PaymentPayload | null = null;
    try {
      template = decodePaymentSignatureHeader(header);
    } catch {
      template = null;
    }
    const paymentHash = (template?.payload as { paymentHash?: unknown } | undefined)?.paymentHash;
    const res = await baseFetch(input, init).finally(() => {
      if (typeof paymentHash === "string") scheme.finished(x402PaymentId(paymentHash));
    });
    const settledHeader = res.headers.get("payment-response");
    if (!(input instanceof Request) || !template || !settledHeader || res.status >= 400) return res;
    if ((options.prefer ?? "direct") !== "direct") return res;
    try {
      const settled = decodePaymentResponseHeader(settledHeader);
      const ticket = parseQrwpRoutedExtra(template.accepted?.extra)?.ticket;
      if (settled.success && settled.extra?.mode === "direct" && ticket?.reusable)
        cache.set(routeKey(input.method, input.url), {
          template,
          expiresAtMs: ticket.expiresAtSeconds * 1000,
        });
    } catch {
      // not ours to cache
    }
    return res;
  };

  const wrapped = () =>
    (paying ??= (async () => {
      const chainId = options.chainId ?? (await node.info()).chainId;
      const client = qrwpX402Client(scheme, chainId, options.maxAmount, options.asset);
      return wrapFetchWithPayment(capturing, client);
    })().catch((err: unknown) => {
      paying = null;
      throw err;
    }));

  /** Hands a direct payment's acknowledgement to the payer's node once per proof (best effort). */
  const relay = async (response: Response): Promise<void> => {
    const ack = processedOf(response);
    if (!ack) return;
    const { paymentHash, processed } = ack;
    const channel = processed.channelId;
    const nonce = BigInt(processed.nonce);
    if ((relayed.get(channel) ?? -1n) >= nonce) return;
    const key = `${channel}:${processed.nonce}`;
    let inFlight = relaying.get(key);
    if (!inFlight) {
      inFlight = node
        .relayProcessed(x402PaymentId(paymentHash), processed)
        .then(() => {
          if ((relayed.get(channel) ?? -1n) < nonce) relayed.set(channel, nonce);
        })
        .catch(() => undefined) // without it the node re-sends the transfer over libp2p before its next one
        .finally(() => relaying.delete(key));
      relaying.set(key, inFlight);
    }
    await inFlight;
  };

  return async (url, init) => {
    const headers = new Headers(init?.headers);
    if (headers.has("payment-signature") || headers.has("x-payment")) return baseFetch(url, init);
    const key = routeKey(init?.method ?? "GET", url);
    const cached = cache.get(key);
    if (cached && cached.expiresAtMs - CACHE_EXPIRY_MARGIN_MS > Date.now()) {
      let result: PaymentPayloadResult | null = null;
      try {
        result = await scheme.createPaymentPayload(cached.template.x402Version, cached.template.accepted);
      } catch (err) {
        // Nothing signed for a capacity or channel refusal: pay the 402 way (routed, say).
        if (!(isQrwpError(err) && NO_DIRECT_CHANNEL.has(err.code))) throw err;
        cache.delete(key);
      }
      if (result) {
        // encodePaymentSignatureHeader's bytes (base64 of the UTF-8 JSON) on Node's codec.
        const payment = { ...cached.template, payload: result.payload };
        headers.set("payment-signature", Buffer.from(JSON.stringify(payment), "utf8").toString("base64"));
        const paymentId = x402PaymentId((result.payload as { paymentHash: string }).paymentHash);
        const res = await baseFetch(url, { ...init, headers }).finally(() => scheme.finished(paymentId));
        if (res.status === 402) cache.delete(key);
        else await relayInBackgroundOrNot(res);
        return res;
      }
    } else if (cached) cache.delete(key);
    const res = await (await wrapped())(url, init);
    await relayInBackgroundOrNot(res);
    return res;
  };

  /** The relay, awaited or in the background (its outcome is the same: best effort, never thrown). */
  async function relayInBackgroundOrNot(res: Response): Promise<void> {
    const done = relay(res);
    if (awaitRelay) await done;
  }
}

/**
 * `fetch(url, init)` that answers a `qrwp-channel` 402 by paying through the payer's node and retrying once
 * with `PAYMENT-SIGNATURE`: a one-request {@link qrwpFetchClient} (no requirements cached across calls; hold
 * a `qrwpFetchClient` for many requests). Returns the final `Response` (a refused payment is the server's
 * 402 response); rejects when the payment cannot be made (e.g. the price is above `maxAmount`: nothing is
 * paid). A request that already carries `PAYMENT-SIGNATURE` / `X-PAYMENT` is sent unchanged and never paid.
 * After a direct payment, the merchant node's signed acknowledgement (`PAYMENT-RESPONSE` `extra.processed`)
 * is handed to the payer's node, which then builds the next proof on it without a network round trip (if
 * that fails, the node re-sends the transfer over libp2p before its next one: nothing is lost).
 */
export async function qrwpFetch(
  url: string | URL,
  init: RequestInit | undefined,
  options: QrwpFetchOptions,
): Promise<Response> {
  return fetchClient(options, true)(url, init);
}

/** A direct payment's acknowledgement in `PAYMENT-RESPONSE`, or null. */
function processedOf(response: Response): { paymentHash: string; processed: QrwpProcessed } | null {
  const header = response.headers.get("payment-response");
  if (!header) return null;
  try {
    const settled = decodePaymentResponseHeader(header);
    const processed = qrwpProcessedSchema.safeParse(settled.extra?.processed);
    if (!settled.success || !processed.success || !/^0x[0-9a-fA-F]{64}$/.test(settled.transaction))
      return null;
    return { paymentHash: settled.transaction, processed: processed.data };
  } catch {
    return null;
  }
}
