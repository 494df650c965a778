/**
 * A tiny typed client of a QRWP node's HTTP API (node/api/server.ts) for what the `qrwp-channel` x402
 * scheme needs: invoices (merchant side), payments (payer side) and the node's identity. Bearer token auth;
 * the token is a secret and never appears in errors or logs. Amounts are decimal strings of token base
 * units. Every failure is a `QrwpError`: the node's own coded error (`{ error: { code, message } }`) when it
 * answered one, `PEER_OFFLINE` when it could not be reached, `TIMEOUT` after `timeoutMs`, `INTERNAL` for an
 * answer that is not the documented shape. Calls go over `node:http(s)` with one keep-alive agent per
 * process (a connection per call in flight, reused; about a third of `fetch`'s CPU per call), the event
 * stream over `fetch`.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { QrwpError, type ErrorCode } from "../protocol/index.js";
import { readEventStream } from "./sse.js";

/**
 * Keep-alive agents shared by every client in the process. Idle connections close after 30 s, before the
 * node API's own keep-alive timeout (fastify's 72 s), so a reused connection is not one the server is closing.
 */
const AGENTS = {
  http: new HttpAgent({ keepAlive: true, timeout: 30_000 }),
  https: new HttpsAgent({ keepAlive: true, timeout: 30_000 }),
};

/** Where a node's API is and its bearer token (the data directory's `api-token`). */
export interface NodeApiConfig {
  /** Base URL, e.g. `http://127.0.0.1:8080` (no trailing slash needed). */
  apiUrl: string;
  /** Bearer token (secret). */
  token: string;
  /** Per-call timeout in ms for calls other than payments (default 10,000). */
  timeoutMs?: number;
}

/** `GET /v1/info` (the fields the scheme uses). */
export interface NodeInfo {
  /** The node's Ethereum address (EIP-55). */
  address: string;
  /** Decimal chain id. */
  chainId: string;
  /** ChannelHub address. */
  hub: string;
  peerId: string;
}

/** `POST /v1/invoices` / `GET /v1/invoices/:paymentHash`. */
export interface NodeInvoice {
  paymentHash: string;
  /** The node that reveals the secret (its address). */
  payee: string;
  token: string;
  /** Token base units, decimal. */
  amount: string;
  description: string;
  status: "open" | "paid" | "expired";
  /** What the node received for it, base units, decimal ("0" while open). */
  paidAmount: string;
  createdAtMs: number;
  expiresAtMs: number;
  paidAtMs: number | null;
}

/** `POST /v1/payments` (routed answer; the fields the scheme uses). */
export interface NodePayment {
  paymentId: string;
  kind?: string;
  status: string;
  amount: string;
  fee: string;
  paymentHash?: string;
  /** The revealed secret once `status` is `completed` (routed payments), else null. */
  preimage?: string | null;
}

/** `POST /v1/payments/direct-transfers`: a signed, persisted, not yet delivered direct transfer. */
export interface NodeSignedTransfer {
  /** The payer's payment (status `pending` until the partner's acknowledgement is relayed). */
  payment: NodePayment;
  /** Decimal channel id. */
  channelId: string;
  /** Decimal nonce of the signed balance proof. */
  nonce: string;
  /** base64url (no padding) of the CBOR `DirectTransfer` envelope. */
  transfer: string;
}

/** `POST /v1/transfers/direct`: what the merchant's node stored (or had already stored). */
export interface NodeAcceptedTransfer {
  /** The payment the proof carries, or null when it carries several (see `payments`). */
  paymentId: string | null;
  /** Every payment the proof carries (amounts: token base units, decimal). */
  payments: { paymentId: string; amount: string }[];
  /** Decimal channel id. */
  channelId: string;
  /** Decimal nonce. */
  nonce: string;
  /** The proof's increment (the sum of `payments`), token base units, decimal. */
  amount: string;
  token: string;
  /** The payer (channel partner) address. */
  partner: string;
  /** The merchant node's signed acknowledgement (EIP-712 `Processed`, secp256k1). */
  processed: { channelId: string; nonce: string; signature: string };
}

/** One event of the node's `GET /v1/events` stream (`channel`, `payment` or `close`) with its JSON data. */
export interface NodeEvent {
  type: string;
  id: string | undefined;
  data: Record<string, unknown>;
}

/** An open `GET /v1/events` stream. */
export interface NodeEventSubscription {
  /** Settles when the stream ended (the node closed it, the connection dropped, or `signal` aborted). */
  closed: Promise<void>;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Client of one node's API. */
export class QrwpNodeApi {
  readonly #baseUrl: string;
  readonly #token: string;
  readonly #timeoutMs: number;

  constructor(config: NodeApiConfig) {
    this.#baseUrl = config.apiUrl.replace(/\/+$/, "");
    this.#token = config.token;
    this.#timeoutMs = config.timeoutMs ?? 10_000;
  }

  /** The API's base URL (public). */
  get apiUrl(): string {
    return this.#baseUrl;
  }

  /** `GET /v1/info`. */
  async info(): Promise<NodeInfo> {
    const body = await this.#call("GET", "/v1/info");
    for (const k of ["address", "chainId", "hub", "peerId"]) {
      if (typeof body[k] !== "string")
        throw new QrwpError("INTERNAL", "node info lacks a field", { field: k });
    }
    return body as unknown as NodeInfo;
  }

  /** `POST /v1/invoices`: a new invoice (the node keeps its secret). */
  async createInvoice(params: {
    token: string;
    amount: bigint | string;
    description?: string;
    expirySeconds?: number;
  }): Promise<NodeInvoice> {
    const body = await this.#call("POST", "/v1/invoices", {
      token: params.token,
      amount: params.amount.toString(),
      ...(params.description !== undefined ? { description: params.description } : {}),
      ...(params.expirySeconds !== undefined ? { expirySeconds: params.expirySeconds } : {}),
    });
    return checkInvoice(body);
  }

  /** `GET /v1/invoices/:paymentHash`. @throws QrwpError NOT_FOUND for an unknown invoice */
  async getInvoice(paymentHash: string): Promise<NodeInvoice> {
    return checkInvoice(await this.#call("GET", `/v1/invoices/${encodeURIComponent(paymentHash)}`));
  }

  /**
   * `POST /v1/payments` with a `paymentHash` (routed mode: pays the target's invoice through the network).
   * Waits for the node's answer (up to `timeoutSeconds` + 15 s).
   */
  async pay(params: {
    target: string;
    token: string;
    amount: bigint | string;
    paymentHash: string;
    maxFee?: bigint | string;
    timeoutSeconds?: number;
    paymentId?: string;
  }): Promise<NodePayment> {
    const timeoutSeconds = params.timeoutSeconds ?? 60;
    const body = await this.#call(
      "POST",
      "/v1/payments",
      {
        target: params.target,
        token: params.token,
        amount: params.amount.toString(),
        paymentHash: params.paymentHash,
        mode: "routed",
        timeoutSeconds,
        ...(params.maxFee !== undefined ? { maxFee: params.maxFee.toString() } : {}),
        ...(params.paymentId !== undefined ? { paymentId: params.paymentId } : {}),
      },
      (timeoutSeconds + 15) * 1000,
    );
    if (typeof body.status !== "string" || typeof body.paymentId !== "string")
      throw new QrwpError("INTERNAL", "node payment answer lacks status/paymentId", {});
    return body as unknown as NodePayment;
  }

  /**
   * Payer: `POST /v1/payments/direct-transfers`: signs and persists the next balance proof to `target` (a
   * channel partner) for `amount` without sending it.
   * @throws QrwpError CHANNEL_NOT_FOUND | CHANNEL_STATE | INSUFFICIENT_CAPACITY | CONFLICT | ...
   */
  async signDirectTransfer(params: {
    target: string;
    token: string;
    amount: bigint | string;
    paymentId: string;
    /** Unix ms after which the node must not sign any more (the caller gave up); keep it below the call's
     * timeout so that a call that timed out never leaves a signed transfer behind. */
    notAfterMs?: number;
  }): Promise<NodeSignedTransfer> {
    const body = await this.#call("POST", "/v1/payments/direct-transfers", {
      target: params.target,
      token: params.token,
      amount: params.amount.toString(),
      paymentId: params.paymentId,
      ...(params.notAfterMs !== undefined ? { notAfterMs: Math.floor(params.notAfterMs) } : {}),
    });
    if (typeof body.transfer !== "string" || !isRecord(body.payment))
      throw new QrwpError("INTERNAL", "node answer lacks transfer/payment", {});
    return body as unknown as NodeSignedTransfer;
  }

  /**
   * Payer: `POST /v1/payments/direct-transfers/batch`: signs several payments to `target` (a channel partner)
   * together, normally under one proof (1..16 payments). Each payment's outcome in order: the signed transfer,
   * or the node's coded refusal of it as a `QrwpError`.
   * @throws QrwpError when the node refused every payment (the first one's refusal), PEER_OFFLINE, TIMEOUT
   */
  async signDirectTransfers(params: {
    target: string;
    token: string;
    payments: { amount: bigint | string; paymentId: string; notAfterMs?: number }[];
  }): Promise<(NodeSignedTransfer | QrwpError)[]> {
    const body = await this.#call("POST", "/v1/payments/direct-transfers/batch", {
      target: params.target,
      token: params.token,
      payments: params.payments.map((p) => ({
        amount: p.amount.toString(),
        paymentId: p.paymentId,
        ...(p.notAfterMs !== undefined ? { notAfterMs: Math.floor(p.notAfterMs) } : {}),
      })),
    });
    const transfers = body.transfers;
    const results = body.results;
    if (!Array.isArray(transfers) || !Array.isArray(results) || results.length !== params.payments.length)
      throw new QrwpError("INTERNAL", "node answer lacks transfers/results", {});
    return results.map((r: unknown) => {
      if (!isRecord(r)) throw new QrwpError("INTERNAL", "node answer has a malformed result", {});
      if (isRecord(r.error)) return refusalOf(422, { error: r.error }, "POST");
      const transfer: unknown = typeof r.transfer === "number" ? transfers[r.transfer] : undefined;
      if (typeof transfer !== "string" || !isRecord(r.payment))
        throw new QrwpError("INTERNAL", "node answer has a malformed result", {});
      return {
        payment: r.payment as unknown as NodePayment,
        channelId: String(r.channelId),
        nonce: String(r.nonce),
        transfer,
      };
    });
  }

  /**
   * Merchant: `POST /v1/transfers/direct`: the node verifies and stores a partner's `DirectTransfer` or
   * `BalanceUpdate` of direct payments (idempotent for the identical transfer). `token`: refuse unless the
   * channel is in this token.
   * @throws QrwpError the node's refusal (INVALID_MESSAGE, INVALID_SIGNATURE, INVALID_TRANSFER,
   *   CHANNEL_NOT_FOUND, CHANNEL_STATE, INSUFFICIENT_CAPACITY, CONFLICT, ...)
   */
  async acceptDirectTransfer(transfer: string, token?: string): Promise<NodeAcceptedTransfer> {
    const body = await this.#call("POST", "/v1/transfers/direct", {
      transfer,
      ...(token !== undefined ? { token } : {}),
    });
    if (!Array.isArray(body.payments) || !isRecord(body.processed) || typeof body.amount !== "string")
      throw new QrwpError("INTERNAL", "node answer lacks payments/amount/processed", {});
    return body as unknown as NodeAcceptedTransfer;
  }

  /**
   * Payer: `POST /v1/payments/:paymentId/processed`: hands the node the partner's signed acknowledgement of
   * a direct transfer (the node checks the signature; the payment becomes `completed`).
   */
  async relayProcessed(
    paymentId: string,
    processed: { channelId: string; nonce: string; signature: string },
  ): Promise<NodePayment> {
    const body = await this.#call("POST", `/v1/payments/${encodeURIComponent(paymentId)}/processed`, {
      processed,
    });
    return body as unknown as NodePayment;
  }

  /**
   * `GET /v1/events`: opens the node's Server-Sent Events stream (bearer token in the header) and hands each
   * event whose data is a JSON object to `onEvent` (others are skipped). Resolves once the node answered 200
   * (within `timeoutMs`); the stream then runs until it ends or `signal` aborts (see `closed`).
   * @throws QrwpError the node's coded refusal (UNAUTHORIZED, UNAVAILABLE when its subscriber cap is
   *   reached, ...), PEER_OFFLINE, TIMEOUT
   */
  async subscribeEvents(options: {
    onEvent: (event: NodeEvent) => void;
    signal: AbortSignal;
  }): Promise<NodeEventSubscription> {
    const path = "/v1/events";
    const connect = new AbortController();
    const timer = setTimeout(
      () => connect.abort(new DOMException("timed out", "TimeoutError")),
      this.#timeoutMs,
    );
    let res: Response;
    try {
      res = await fetch(this.#baseUrl + path, {
        headers: { authorization: `Bearer ${this.#token}`, accept: "text/event-stream" },
        signal: AbortSignal.any([options.signal, connect.signal]),
      });
    } catch (err) {
      throw this.#unreachable(err, "GET", path);
    } finally {
      clearTimeout(timer);
    }
    if (!res.ok || !res.body) throw await this.#refusal(res, "GET");
    const closed = readEventStream(
      res.body,
      (e) => {
        let data: unknown;
        try {
          data = JSON.parse(e.data);
        } catch {
          return;
        }
        if (isRecord(data)) options.onEvent({ type: e.type, id: e.id, data });
      },
      options.signal,
    ).catch(() => undefined);
    return { closed };
  }

  #unreachable(err: unknown, method: string, path: string, timeoutMs = this.#timeoutMs): QrwpError {
    const timedOut = err instanceof Error && (err.name === "TimeoutError" || err.name === "AbortError");
    return new QrwpError(
      timedOut ? "TIMEOUT" : "PEER_OFFLINE",
      timedOut ? "node API did not answer in time" : "node API unreachable",
      { method, path: path.split("/").slice(0, 3).join("/"), timeoutMs },
      { cause: err },
    );
  }

  /** The node's coded error answer to a `fetch` as a QrwpError. */
  async #refusal(res: Response, method: string): Promise<QrwpError> {
    return refusalOf(res.status, await res.json().catch(() => undefined), method);
  }

  async #call(
    method: string,
    path: string,
    body?: unknown,
    timeoutMs = this.#timeoutMs,
  ): Promise<Record<string, unknown>> {
    let status: number;
    let text: string;
    try {
      ({ status, text } = await this.#send(method, path, body, timeoutMs));
    } catch (err) {
      throw this.#unreachable(err, method, path, timeoutMs);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (status < 200 || status > 299) throw refusalOf(status, json, method);
    if (!isRecord(json)) throw new QrwpError("INTERNAL", "node API answered a non-object", { method });
    return json;
  }

  /** One request on the keep-alive agent: the status and the body text; rejects on a network error or timeout. */
  #send(
    method: string,
    path: string,
    body: unknown,
    timeoutMs: number,
  ): Promise<{ status: number; text: string }> {
    const url = new URL(this.#baseUrl + path);
    const https = url.protocol === "https:";
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = (https ? httpsRequest : httpRequest)(
        url,
        {
          method,
          agent: https ? AGENTS.https : AGENTS.http,
          headers: {
            authorization: `Bearer ${this.#token}`,
            ...(payload ? { "content-type": "application/json", "content-length": payload.length } : {}),
          },
        },
        (res: IncomingMessage) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            clearTimeout(timer);
            resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") });
          });
          res.on("error", fail);
        },
      );
      const timer = setTimeout(
        () => req.destroy(new DOMException("node API did not answer in time", "TimeoutError")),
        timeoutMs,
      );
      function fail(err: unknown): void {
        clearTimeout(timer);
        reject(err);
      }
      req.on("error", fail);
      req.end(payload);
    });
  }
}

/** The node's coded error answer as a QrwpError (INTERNAL when the body is not the documented shape). */
function refusalOf(status: number, json: unknown, method: string): QrwpError {
  const e = isRecord(json) && isRecord(json.error) ? json.error : {};
  const code = typeof e.code === "string" ? (e.code as ErrorCode) : "INTERNAL";
  const message = typeof e.message === "string" ? e.message : `node API answered ${status}`;
  return new QrwpError(code, message, {
    status,
    method,
    ...(isRecord(e.details) ? e.details : {}),
  });
}

function checkInvoice(body: Record<string, unknown>): NodeInvoice {
  const ok =
    typeof body.paymentHash === "string" &&
    typeof body.token === "string" &&
    typeof body.amount === "string" &&
    typeof body.paidAmount === "string" &&
    typeof body.expiresAtMs === "number" &&
    (body.status === "open" || body.status === "paid" || body.status === "expired");
  if (!ok) throw new QrwpError("INTERNAL", "node invoice answer is not the documented shape", {});
  return body as unknown as NodeInvoice;
}
