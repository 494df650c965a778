/**
 * What the process tests share: checking a node API's coded errors (`{"error":{"code","message","details"}}`,
 * thrown by devnet/harness.ts `ApiClient.call` with the HTTP status), and waiting for a condition.
 */
import { expect } from "chai";

/** An error answer of a node's API as `ApiClient.call` throws it. */
export interface ApiError extends Error {
  status: number;
  body: { error: { code: string; message: string; details: Record<string, unknown> } };
}

/** Awaits `p`, which must fail with HTTP `status` and error `code`; returns the error to check more. */
export async function expectApiError(p: Promise<unknown>, status: number, code: string): Promise<ApiError> {
  try {
    await p;
  } catch (err) {
    const e = err as ApiError;
    expect(e.status, e.message).to.equal(status);
    expect(e.body.error.code).to.equal(code);
    return e;
  }
  return expect.fail(`expected HTTP ${status} ${code}`);
}

/**
 * Polls `fn` every 250 ms until it answers something other than `undefined` or `false` (a throw counts as not
 * yet), and returns that; throws after `timeoutMs` naming `what`.
 */
export async function waitUntil<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
