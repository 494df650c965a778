/**
 * QRWP's one error type. Every error crossing a module boundary is a {@link QrwpError} with a stable
 * {@link ErrorCode}, a short message and JSON-safe details; HTTP error bodies
 * (`{ "error": { code, message, details } }`) are built from {@link QrwpError.toJSON}.
 * Modelled on ethers v6 / viem coded errors.
 */

/** Stable, machine-matchable error codes. Never rename one: callers and HTTP clients match on them. */
export type ErrorCode =
  | "INVALID_ARGUMENT"
  | "INVALID_MESSAGE"
  | "INVALID_SIGNATURE"
  | "STALE_NONCE"
  | "INVALID_TRANSFER"
  | "INSUFFICIENT_CAPACITY"
  | "CHANNEL_NOT_FOUND"
  | "CHANNEL_STATE"
  | "PAYMENT_NOT_FOUND"
  | "HANDSHAKE_FAILED"
  | "FRAME_REJECTED"
  | "PEER_OFFLINE"
  | "PEER_REJECTED"
  | "TIMEOUT"
  | "CHAIN_ERROR"
  | "UNAUTHORIZED"
  | "NOT_FOUND"
  | "CONFLICT"
  | "NO_ROUTE"
  | "UNKNOWN_TARGET"
  | "FEE_TOO_LOW"
  | "EXPIRY_TOO_SOON"
  | "TOO_MANY_LOCKS"
  | "LOCK_EXPIRED"
  | "UNKNOWN_HUB"
  | "NOT_PARTICIPANT"
  /** A proof relayed over HTTP names a partner whose ML-DSA-65 key this node has not learned over libp2p yet. */
  | "UNKNOWN_PARTNER_KEY"
  /** A peer (or client) asked for more than its budget allows right now; retry later. */
  | "RATE_LIMITED"
  /** A service of the node is at its capacity limit right now (e.g. too many event subscribers); retry later. */
  | "UNAVAILABLE"
  /** The node's wallet holds less of the token (or ETH) than a deposit needs; nothing was sent on-chain. */
  | "INSUFFICIENT_FUNDS"
  /**
   * A balance update without an ML-DSA-65 signature beyond the evidence bound (docs/PROTOCOL.md §7.4): the
   * receiver accepts nothing more from the partner until evidence arrives.
   */
  | "EVIDENCE_REQUIRED"
  /** An `Evidence` message whose ML-DSA-65 signature does not cover the proof it names. */
  | "INVALID_EVIDENCE"
  | "INTERNAL";

/**
 * Base error of the project.
 *
 * @param code - stable {@link ErrorCode}.
 * @param message - short human-readable message; must never contain secrets.
 * @param details - JSON-safe context (field names, ids, expected/actual values); bigints are turned into
 *   decimal strings and byte arrays into 0x-hex by {@link toSafeValue} when serialised.
 * @param options - `cause`: the underlying error (kept on `error.cause`, not serialised).
 */
export class QrwpError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;

  constructor(
    code: ErrorCode,
    message: string,
    details: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "QrwpError";
    this.code = code;
    this.details = details;
  }

  /** JSON shape used in HTTP error bodies and logs: `{ code, message, details }` (details made JSON-safe). */
  toJSON(): { code: ErrorCode; message: string; details: Record<string, unknown> } {
    const details: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(this.details)) details[k] = toSafeValue(v);
    return { code: this.code, message: this.message, details };
  }
}

/** True if `e` is a {@link QrwpError} (also across duplicated module instances, by name and code). */
export function isQrwpError(e: unknown): e is QrwpError {
  if (e instanceof QrwpError) return true;
  return (
    e instanceof Error &&
    e.name === "QrwpError" &&
    typeof (e as { code?: unknown }).code === "string" &&
    typeof (e as { details?: unknown }).details === "object"
  );
}

const MAX_DETAIL_CHARS = 256;

/**
 * Turns a value into a short JSON-safe form for error details: bigint -> decimal string, bytes -> 0x-hex,
 * long strings truncated to 256 chars, objects -> their type name. Never throws.
 */
export function toSafeValue(value: unknown): unknown {
  try {
    switch (typeof value) {
      case "bigint":
        return value.toString();
      case "string":
        return value.length > MAX_DETAIL_CHARS ? `${value.slice(0, MAX_DETAIL_CHARS)}...` : value;
      case "number":
      case "boolean":
      case "undefined":
        return value;
      case "symbol":
      case "function":
        return `[${typeof value}]`;
      default:
        break;
    }
    if (value === null) return null;
    if (value instanceof Uint8Array) {
      const hex = Array.from(value.subarray(0, MAX_DETAIL_CHARS / 2), (b) => b.toString(16).padStart(2, "0"));
      return `0x${hex.join("")}${value.length > MAX_DETAIL_CHARS / 2 ? "..." : ""} (${value.length} bytes)`;
    }
    if (Array.isArray(value)) return `[array(${value.length})]`;
    return `[${Object.prototype.toString.call(value).slice(8, -1)}]`;
  } catch {
    return "[unprintable]";
  }
}

/**
 * Boundary check (ethers' `assertArgument`): throws `QrwpError("INVALID_ARGUMENT", message, { field, value })`
 * when `check` is falsy. `value` is stored in a JSON-safe form ({@link toSafeValue}); never pass secret
 * material as `value`.
 *
 * @param check - condition that must hold.
 * @param message - what is wrong, e.g. "nonce must be a uint256".
 * @param field - name of the offending field or parameter.
 * @param value - the offending (public) value, optional.
 * @throws QrwpError INVALID_ARGUMENT
 */
export function assertArgument(
  check: unknown,
  message: string,
  field: string,
  value?: unknown,
): asserts check {
  if (!check) {
    const details: Record<string, unknown> = { field };
    if (value !== undefined) details.value = toSafeValue(value);
    throw new QrwpError("INVALID_ARGUMENT", message, details);
  }
}
