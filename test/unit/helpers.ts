/** Shared assertions for the protocol unit tests. */
import { expect } from "chai";
import { isQrwpError, type QrwpError } from "../../protocol/index.js";

/** Asserts that `fn` throws a QrwpError with `code` and returns it. */
export function expectCode(fn: () => unknown, code: string): QrwpError {
  try {
    fn();
  } catch (e) {
    expect(isQrwpError(e), `expected QrwpError, got ${String(e)}`).to.equal(true);
    expect((e as QrwpError).code).to.equal(code);
    return e as QrwpError;
  }
  return expect.fail(`expected ${code}`);
}

/** Asserts that `fn`'s promise rejects with a QrwpError with `code` and returns it. */
export async function expectRejectCode(fn: () => Promise<unknown>, code: string): Promise<QrwpError> {
  try {
    await fn();
  } catch (e) {
    expect(isQrwpError(e), `expected QrwpError, got ${String(e)}`).to.equal(true);
    expect((e as QrwpError).code).to.equal(code);
    return e as QrwpError;
  }
  return expect.fail(`expected ${code}`);
}
