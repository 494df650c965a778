/**
 * RpcPool: one chain over several JSON-RPC HTTP(S) URLs, for every reader and sender of `chain/`.
 *
 * Each call runs on the current URL with a timeout (a stall counts as a failure); a failed call moves on to
 * the next URLs in order (round robin from the current one), one try per URL, and the URL that answered
 * becomes the current one. Before its first use, and again after any failure, a URL's `eth_chainId` is
 * compared with the expected chain id: a URL that serves another chain is refused with a coded error
 * (`QrwpError` CHAIN_ERROR, `details.reason` "WRONG_CHAIN_ID") and is never used again by this pool.
 * When every URL failed the call throws `QrwpError` CHAIN_ERROR naming the field `rpcUrls`.
 *
 * Logs name a URL by its label (`scheme://host:port`, no credentials, path or query: RPC URLs often embed
 * API keys there), and error texts are scrubbed of the URLs before they are logged or thrown.
 * Credentials written as `https://user:pass@host/...` are sent as HTTP basic authentication.
 *
 * A call's function decides what is not an endpoint failure: errors for which `isFinal(error)` holds (a
 * decoded contract revert, a used nonce) are thrown at once, without trying other URLs.
 */
import { FetchRequest, JsonRpcProvider } from "ethers";
import { QrwpError } from "../protocol/index.js";

/** The subset of a pino logger `chain/` uses (a pino `Logger` fits). */
export interface ChainLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** A JSON-RPC error answer (`code`, `message`, optional `data`, e.g. revert data). */
export class JsonRpcError extends Error {
  override readonly name = "JsonRpcError";
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(`JSON-RPC error ${code}: ${message}`);
  }
}

/** One URL of the pool, as a call's function sees it. */
export interface RpcEndpoint {
  /** Position of the URL in `rpcUrls` (stable: use it to cache per-URL objects). */
  readonly index: number;
  /** `scheme://host:port` of the URL: safe to log. */
  readonly label: string;
  /** An ethers provider on this URL only (static network = the pool's chain id; created on first use). */
  readonly provider: JsonRpcProvider;
  /**
   * One raw JSON-RPC call on this URL (no failover, no timeout of its own: the pool's call signal aborts it).
   * @throws JsonRpcError for an error answer; Error for HTTP errors, malformed answers, network errors.
   */
  send(method: string, params: readonly unknown[], signal?: AbortSignal): Promise<unknown>;
}

/** Options of one {@link RpcPool.run}. */
export interface RpcRunOptions {
  /** Errors of `fn` that are answers, not endpoint failures: thrown at once, no failover. */
  isFinal?: (error: unknown) => boolean;
  /** Aborts the call (and its failover) from outside. */
  signal?: AbortSignal;
}

/** Options of {@link RpcPool}. */
export interface RpcPoolInit {
  /** JSON-RPC HTTP(S) URLs, tried in this order; at least one. */
  rpcUrls: readonly string[];
  /** The chain id every URL must serve (EIP-155). */
  chainId: bigint | number | string;
  /** Timeout of one call on one URL, ms; a stalled URL counts as failed. Default 10000. */
  requestTimeoutMs?: number;
  /** Aborts every call in progress and every later one (e.g. the owner's stop()). */
  signal?: AbortSignal;
  /** Logger (pino-compatible). Default: none. */
  log?: ChainLogger;
  /** Who owns the pool, for log messages (e.g. "chain event follower"). Default "rpc pool". */
  name?: string;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const NOOP_LOGGER: ChainLogger = { debug() {}, info() {}, warn() {}, error() {} };

type Send = (method: string, params: readonly unknown[], signal?: AbortSignal) => Promise<unknown>;

class PoolEndpoint implements RpcEndpoint {
  /** Chain id checked since the last failure. */
  chainIdChecked = false;
  /** Refused for good (it served another chain). */
  refused: QrwpError | null = null;
  #provider: JsonRpcProvider | null = null;

  constructor(
    readonly index: number,
    readonly label: string,
    readonly request: FetchRequest,
    readonly chainId: bigint,
    readonly send: Send,
  ) {}

  get provider(): JsonRpcProvider {
    this.#provider ??= new JsonRpcProvider(this.request, Number(this.chainId), {
      staticNetwork: true,
      pollingInterval: 250,
    });
    return this.#provider;
  }

  destroy(): void {
    this.#provider?.destroy();
  }
}

/** See the module docs. */
export class RpcPool {
  readonly #endpoints: PoolEndpoint[];
  readonly #chainId: bigint;
  readonly #timeoutMs: number;
  readonly #signal: AbortSignal | undefined;
  readonly #log: ChainLogger;
  readonly #name: string;
  /** Every secret-bearing form of the URLs, longest first, with its label. */
  readonly #scrub: [string, string][];
  #current = 0;
  #rpcId = 0;

  /** @throws QrwpError INVALID_ARGUMENT (field "rpcUrls": none, or not an http(s) URL; "requestTimeoutMs") */
  constructor(init: RpcPoolInit) {
    if (init.rpcUrls.length === 0) {
      throw new QrwpError("INVALID_ARGUMENT", "at least one RPC URL is required", { field: "rpcUrls" });
    }
    this.#timeoutMs = init.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isSafeInteger(this.#timeoutMs) || this.#timeoutMs < 1) {
      throw new QrwpError("INVALID_ARGUMENT", "requestTimeoutMs must be a positive integer", {
        field: "requestTimeoutMs",
      });
    }
    this.#chainId = BigInt(init.chainId);
    this.#signal = init.signal;
    this.#log = init.log ?? NOOP_LOGGER;
    this.#name = init.name ?? "rpc pool";
    this.#scrub = [];
    this.#endpoints = init.rpcUrls.map((url, index) => this.#endpoint(url, index));
    this.#scrub.sort((a, b) => b[0].length - a[0].length);
  }

  /** The chain id every URL must serve. */
  get chainId(): bigint {
    return this.#chainId;
  }

  /** Labels of the URLs (`scheme://host:port`), in order. */
  get labels(): string[] {
    return this.#endpoints.map((e) => e.label);
  }

  /** Label of the URL the next call starts on. */
  get currentLabel(): string {
    return (this.#endpoints[this.#current] as PoolEndpoint).label;
  }

  /** Labels of the URLs refused for serving another chain. */
  get refusedLabels(): string[] {
    return this.#endpoints.filter((e) => e.refused !== null).map((e) => e.label);
  }

  /**
   * Runs `fn` on the current URL (after its chain-id check), failing over to the next ones, one try each.
   * @param what Name of the call, for logs and errors (e.g. "eth_getLogs", "getChannel").
   * @returns what `fn` returned on the first URL that succeeded.
   * @throws what `fn` threw when `options.isFinal` holds for it; the abort reason when aborted;
   *   QrwpError CHAIN_ERROR (field "rpcUrls") when every URL failed or was refused.
   */
  async run<T>(
    what: string,
    fn: (endpoint: RpcEndpoint, signal: AbortSignal) => Promise<T>,
    options: RpcRunOptions = {},
  ): Promise<T> {
    const errors: string[] = [];
    let lastError: unknown;
    const start = this.#current;
    for (let attempt = 0; attempt < this.#endpoints.length; attempt++) {
      const index = (start + attempt) % this.#endpoints.length;
      const endpoint = this.#endpoints[index] as PoolEndpoint;
      if (endpoint.refused !== null) {
        errors.push(`${endpoint.label}: refused (${endpoint.refused.message})`);
        lastError = endpoint.refused;
        continue;
      }
      try {
        if (!endpoint.chainIdChecked) await this.#checkChainId(endpoint, options.signal);
        const result = await this.#timed(what, (signal) => fn(endpoint, signal), options.signal);
        if (index !== this.#current) {
          this.#log.info({ rpc: endpoint.label }, `${this.#name} switched RPC URL`);
          this.#current = index;
        }
        return result;
      } catch (error) {
        if (this.#aborted(options.signal)) throw error;
        if (options.isFinal?.(error) === true) throw error;
        endpoint.chainIdChecked = false;
        lastError = error;
        const text = this.scrub(errorMessage(error));
        errors.push(`${endpoint.label}: ${text}`);
        this.#log.warn({ rpc: endpoint.label, method: what, err: text }, "RPC call failed");
      }
    }
    throw new QrwpError(
      "CHAIN_ERROR",
      `${what} failed on every RPC URL (${errors.join("; ")})`,
      { field: "rpcUrls", method: what },
      { cause: lastError },
    );
  }

  /**
   * One raw JSON-RPC call with failover ({@link run} of {@link RpcEndpoint.send}); a JSON-RPC error answer
   * is an endpoint failure here.
   * @throws QrwpError CHAIN_ERROR when every URL failed.
   */
  request(method: string, params: readonly unknown[], options: RpcRunOptions = {}): Promise<unknown> {
    return this.run(method, (e, signal) => e.send(method, params, signal), options);
  }

  /** `text` with every configured URL (and its secret parts) replaced by its label. */
  scrub(text: string): string {
    let out = text;
    for (const [secret, label] of this.#scrub) out = out.split(secret).join(label);
    return out;
  }

  /** Closes the ethers providers (their polling timers). */
  destroy(): void {
    for (const e of this.#endpoints) e.destroy();
  }

  #endpoint(url: string, index: number): PoolEndpoint {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new QrwpError("INVALID_ARGUMENT", `RPC URL #${index + 1} is not a URL`, { field: "rpcUrls" });
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      throw new QrwpError("INVALID_ARGUMENT", `RPC URL #${index + 1} must be http(s)`, { field: "rpcUrls" });
    }
    const label = urlLabel(url);
    const username = decodeURIComponent(parsed.username);
    const password = decodeURIComponent(parsed.password);
    parsed.username = "";
    parsed.password = "";
    const target = parsed.toString();
    for (const secret of [url, target, url.replace(/\/$/, ""), target.replace(/\/$/, "")]) {
      if (secret.length > label.length) this.#scrub.push([secret, label]);
    }
    const pathAndQuery = `${parsed.pathname}${parsed.search}`;
    if (pathAndQuery.length > 1) this.#scrub.push([pathAndQuery, "/…"]);
    if (password.length > 0) this.#scrub.push([password, "…"]);
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (username.length > 0 || password.length > 0) {
      const basic = Buffer.from(`${username}:${password}`).toString("base64");
      headers.authorization = `Basic ${basic}`;
      this.#scrub.push([basic, "…"]);
    }
    const request = new FetchRequest(target);
    request.timeout = this.#timeoutMs;
    for (const [k, v] of Object.entries(headers)) request.setHeader(k, v);
    return new PoolEndpoint(index, label, request, this.#chainId, (method, params, signal) =>
      this.#send(target, headers, method, params, signal),
    );
  }

  async #checkChainId(endpoint: PoolEndpoint, outer: AbortSignal | undefined): Promise<void> {
    const answer = await this.#timed(
      "eth_chainId",
      (signal) => endpoint.send("eth_chainId", [], signal),
      outer,
    );
    const chainId = parseChainId(answer);
    if (chainId !== this.#chainId) {
      endpoint.refused = new QrwpError(
        "CHAIN_ERROR",
        `${endpoint.label} serves chain id ${chainId}, expected ${this.#chainId}`,
        {
          field: "rpcUrls",
          reason: "WRONG_CHAIN_ID",
          rpc: endpoint.label,
          chainId,
          expectedChainId: this.#chainId,
        },
      );
      this.#log.error(
        { rpc: endpoint.label, chainId: chainId.toString(), expectedChainId: this.#chainId.toString() },
        "RPC URL serves another chain; it will not be used",
      );
      throw endpoint.refused;
    }
    endpoint.chainIdChecked = true;
  }

  /** Runs `fn` with a signal that aborts after the timeout or from outside; rejects at once when it does. */
  async #timed<T>(
    what: string,
    fn: (signal: AbortSignal) => Promise<T>,
    outer: AbortSignal | undefined,
  ): Promise<T> {
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const signals = [timeout];
    if (this.#signal) signals.push(this.#signal);
    if (outer) signals.push(outer);
    const signal = AbortSignal.any(signals);
    if (signal.aborted) throw this.#abortError(what, timeout, signal);
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(this.#abortError(what, timeout, signal));
      signal.addEventListener("abort", onAbort, { once: true });
    });
    aborted.catch(() => undefined);
    try {
      return await Promise.race([fn(signal), aborted]);
    } catch (error) {
      // A fetch aborted by the timeout rejects with an AbortError: say what happened instead.
      if (signal.aborted) throw this.#abortError(what, timeout, signal);
      throw error;
    } finally {
      if (onAbort) signal.removeEventListener("abort", onAbort);
    }
  }

  #abortError(what: string, timeout: AbortSignal, signal: AbortSignal): Error {
    if (timeout.aborted && !this.#aborted(undefined)) {
      return new Error(`${what} timed out after ${this.#timeoutMs} ms`);
    }
    return signal.reason instanceof Error ? signal.reason : new Error(`${what} aborted`);
  }

  #aborted(outer: AbortSignal | undefined): boolean {
    return this.#signal?.aborted === true || outer?.aborted === true;
  }

  async #send(
    target: string,
    headers: Record<string, string>,
    method: string,
    params: readonly unknown[],
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    const id = ++this.#rpcId;
    const response = await fetch(target, {
      method: "POST",
      headers,
      body: JSON.stringify({ jsonrpc: "2.0", id, method, params }),
      ...(signal ? { signal } : {}),
    });
    if (!response.ok) throw new Error(`${method}: HTTP ${response.status}`);
    const body: unknown = await response.json();
    if (body === null || typeof body !== "object") throw new Error(`${method}: malformed JSON-RPC answer`);
    const answer = body as {
      id?: unknown;
      result?: unknown;
      error?: { code?: unknown; message?: unknown; data?: unknown };
    };
    if (answer.error !== undefined && answer.error !== null) {
      throw new JsonRpcError(Number(answer.error.code), String(answer.error.message), answer.error.data);
    }
    if (answer.id !== id || !("result" in answer)) throw new Error(`${method}: malformed JSON-RPC answer`);
    return answer.result;
  }
}

function parseChainId(value: unknown): bigint {
  if (typeof value !== "string" || !/^0x[0-9a-fA-F]{1,64}$/.test(value)) {
    throw new Error(`eth_chainId: expected a hex quantity, got ${String(value).slice(0, 80)}`);
  }
  return BigInt(value);
}

/** First line of an error's message, with its cause's (fetch puts the network error there). */
export function errorMessage(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const first = (error.message.split("\n")[0] ?? error.name).slice(0, 500);
  const cause = error.cause instanceof Error ? ` (${error.cause.message.split("\n")[0]})` : "";
  return `${first}${cause}`;
}

/** How logs and errors name an RPC URL: `scheme://host:port`, without credentials, path or query. */
export function urlLabel(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}`;
  } catch {
    return "(invalid URL)";
  }
}
