/** Shared assertions and fixtures for the unit tests. */
import { expect } from "chai";
import { isQrwpError, type QrwpError } from "../../protocol/index.js";
import type { MediatedPaymentRecord } from "../../node/store/store.js";

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

/** A pending routed payment record with no attempts (10 base units to a fixed target), `overrides` applied. */
export function mediatedPayment(overrides: Partial<MediatedPaymentRecord> = {}): MediatedPaymentRecord {
  return {
    paymentId: "routed-1",
    target: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    token: "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    amount: 10n,
    maxFee: null,
    secretHash: `0x${"ef".repeat(32)}`,
    secret: null,
    status: "pending",
    fee: 0n,
    attempts: [],
    errorCode: null,
    errorMessage: null,
    createdAtMs: 1,
    completedAtMs: null,
    deadlineMs: 2,
    ...overrides,
  };
}
