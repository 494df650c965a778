/**
 * The cap on how fast unpaid requests to priced routes mint invoices on the merchant's node: two token
 * buckets, one global and one per client IP (the IP table is an LRU of bounded size, `lru-cache`). Each
 * bucket holds at most one second's worth of tokens and refills continuously. A request that is refused
 * takes no token from either bucket, and a paid request gives its 402's token back ({@link refund}), so the
 * cap limits unpaid invoices, not a paying client's rate. A refused payment costs a token too (the paywall
 * takes one after the refusal and answers 429 before verifying once the bucket is empty), so a flood of
 * bad payments cannot make the merchant node verify signatures without bound. Pure in-memory state of fixed maximum size; no timers.
 */
import { LRUCache } from "lru-cache";
import { assertArgument, type X402RefusalReason } from "../protocol/index.js";

/**
 * Body `{ error }` of the 429 answered to an unpaid request beyond the cap (to join `X402_REFUSAL_REASONS`
 * of protocol/x402.ts later).
 */
export const X402_RATE_LIMITED: X402RefusalReason = "rate_limited";

/** Options of {@link UnpaidRateLimiter}. */
export interface UnpaidRateLimitOptions {
  /** Unpaid requests per second over all clients (burst: max(1, rate)); `false` disables. Default 50. */
  perSecond?: number | false;
  /** Unpaid requests per second per client IP (burst: max(1, rate)); `false` disables. Default 10. */
  perIpPerSecond?: number | false;
  /** Most client IPs remembered (least recently seen forgotten first). Default 10,000. */
  maxTrackedIps?: number;
}

interface Bucket {
  tokens: number;
  atMs: number;
}

function refill(bucket: Bucket, rate: number, nowMs: number): void {
  bucket.tokens = Math.min(Math.max(1, rate), bucket.tokens + ((nowMs - bucket.atMs) * rate) / 1000);
  bucket.atMs = nowMs;
}

/** Seconds until `bucket` holds one token again (≥ 1, for `Retry-After`). */
function waitSeconds(bucket: Bucket, rate: number): number {
  return Math.max(1, Math.ceil((1 - bucket.tokens) / rate));
}

/** Global + per-IP token buckets for unpaid requests. */
export class UnpaidRateLimiter {
  readonly #rate: number | false;
  readonly #ipRate: number | false;
  readonly #global: Bucket;
  readonly #ips: LRUCache<string, Bucket>;

  /** @throws QrwpError INVALID_ARGUMENT naming `perSecond`, `perIpPerSecond` or `maxTrackedIps`. */
  constructor(options: UnpaidRateLimitOptions = {}, nowMs = Date.now()) {
    const rate = (v: number | false | undefined, dflt: number, field: string): number | false => {
      if (v === false) return false;
      const r = v ?? dflt;
      assertArgument(Number.isFinite(r) && r > 0, "must be a positive number or false", field, r);
      return r;
    };
    this.#rate = rate(options.perSecond, 50, "perSecond");
    this.#ipRate = rate(options.perIpPerSecond, 10, "perIpPerSecond");
    const max = options.maxTrackedIps ?? 10_000;
    assertArgument(Number.isSafeInteger(max) && max > 0, "must be a positive integer", "maxTrackedIps", max);
    this.#global = { tokens: this.#rate === false ? 0 : Math.max(1, this.#rate), atMs: nowMs };
    this.#ips = new LRUCache({ max });
  }

  /** Number of client IPs currently remembered (≤ `maxTrackedIps`). */
  get trackedIps(): number {
    return this.#ips.size;
  }

  /**
   * Takes one token from the global bucket and from `ip`'s bucket if both have one.
   * @returns `{ ok: true }`, or `{ ok: false, retryAfterSeconds }` (integer ≥ 1) with nothing taken.
   */
  take(ip: string, nowMs = Date.now()): { ok: true } | { ok: false; retryAfterSeconds: number } {
    let ipBucket: Bucket | undefined;
    if (this.#ipRate !== false) {
      ipBucket = this.#ips.get(ip);
      if (!ipBucket) {
        ipBucket = { tokens: Math.max(1, this.#ipRate), atMs: nowMs };
        this.#ips.set(ip, ipBucket);
      }
      refill(ipBucket, this.#ipRate, nowMs);
      if (ipBucket.tokens < 1) return { ok: false, retryAfterSeconds: waitSeconds(ipBucket, this.#ipRate) };
    }
    if (this.#rate !== false) {
      refill(this.#global, this.#rate, nowMs);
      if (this.#global.tokens < 1)
        return { ok: false, retryAfterSeconds: waitSeconds(this.#global, this.#rate) };
      this.#global.tokens -= 1;
    }
    if (ipBucket) ipBucket.tokens -= 1;
    return { ok: true };
  }

  /** True if {@link take} would succeed now for `ip` (nothing taken). */
  allows(ip: string, nowMs = Date.now()): boolean {
    if (this.#ipRate !== false) {
      const ipBucket = this.#ips.peek(ip);
      if (ipBucket) {
        refill(ipBucket, this.#ipRate, nowMs);
        if (ipBucket.tokens < 1) return false;
      }
    }
    if (this.#rate !== false) {
      refill(this.#global, this.#rate, nowMs);
      if (this.#global.tokens < 1) return false;
    }
    return true;
  }

  /** A request from `ip` paid: one token back to the global bucket and to `ip`'s (never above the burst). */
  refund(ip: string, nowMs = Date.now()): void {
    if (this.#rate !== false) {
      refill(this.#global, this.#rate, nowMs);
      this.#global.tokens = Math.min(Math.max(1, this.#rate), this.#global.tokens + 1);
    }
    const ipBucket = this.#ipRate === false ? undefined : this.#ips.get(ip);
    if (ipBucket && this.#ipRate !== false) {
      refill(ipBucket, this.#ipRate, nowMs);
      ipBucket.tokens = Math.min(Math.max(1, this.#ipRate), ipBucket.tokens + 1);
    }
  }
}
