/**
 * What the process tests share to check a node API's coded errors (`{"error":{"code","message","details"}}`,
 * thrown by devnet/harness.ts `ApiClient.call` with the HTTP status).
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
