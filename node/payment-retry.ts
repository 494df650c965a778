/**
 * Retries under a payment id (the id is an idempotency key, as Stripe's and LND's are): a retry must ask for
 * the same payment as the one stored under that id, or it is refused. Shared by direct payments
 * (`channels/service.ts`) and routed ones (`payments/service.ts`).
 */
import { QrwpError } from "../protocol/index.js";

/**
 * Refuses a retry that asks for another payment than the one stored under `paymentId`.
 * @param checks - `[field, same]` pairs (e.g. `["amount", stored.amount === asked.amount]`) in the order to
 *   report.
 * @throws QrwpError CONFLICT naming the first field that differs (`details.field`, `details.paymentId`).
 */
export function assertSamePayment(
  paymentId: string,
  checks: ReadonlyArray<readonly [string, boolean]>,
): void {
  const differing = checks.find(([, same]) => !same);
  if (differing) {
    throw new QrwpError("CONFLICT", `payment ${paymentId} already exists with another ${differing[0]}`, {
      field: differing[0],
      paymentId,
    });
  }
}
