/**
 * Paying anyone: the choice between a direct payment on our channel with the target and a routed one
 * through mediators (HTLCs), made in the payments layer (it used to be made by the HTTP route).
 *
 * `mode: "auto"` pays directly when we have an open channel (not closing) with the target for the token
 * and no `paymentHash` is given, else routed; `"direct"` and `"routed"` force one. A retry under a payment
 * id goes the way the first call went, whatever the channels look like now (never paid twice).
 */
import { QrwpError, type ErrorCode } from "../../protocol/index.js";
import type { PaymentRecord, MediatedPaymentRecord } from "../store/store.js";
import type { PayParams } from "../channels/types.js";
import type { MediatedPayParams } from "./service.js";

/** A payment request as the API or a client gives it. Amounts are token base units. */
export interface PaymentRequest {
  target: string;
  token: string;
  amount: bigint;
  paymentId?: string;
  /** Routed only: the most we pay in fees (base units). */
  maxFee?: bigint;
  /** Routed only: how long the payment may take, seconds. */
  timeoutSeconds?: number;
  /** Routed only: pay an invoice's payment hash (the target holds the secret). */
  paymentHash?: string;
  mode?: "auto" | "direct" | "routed";
}

/** The payment as it stands, `pending` or `completed` (a failure is thrown). */
export type PaymentOutcome =
  { kind: "direct"; payment: PaymentRecord } | { kind: "routed"; payment: MediatedPaymentRecord };

/** What {@link payAny} needs of the channel layer (direct payments). */
export interface DirectPayer {
  pay(params: PayParams, options?: { newId?: boolean }): Promise<PaymentRecord>;
  /** What an outgoing payment id is used by (one store statement). */
  outgoingIdUse(paymentId: string): "direct" | "routed" | null;
  openChannelWith(partner: string, token: string): unknown;
}

/** What {@link payAny} needs of the routed-payments layer. */
export interface RoutedPayer {
  pay(params: MediatedPayParams): Promise<MediatedPaymentRecord>;
  getPayment(paymentId: string): MediatedPaymentRecord | null;
}

/**
 * Pays `req`, directly or routed (see the module docs).
 * @throws QrwpError INVALID_ARGUMENT (field "paymentHash" on a direct payment) | NOT_FOUND (routed payments
 *   disabled) | PEER_REJECTED (a direct payment the partner refused: status failed) | the routed payment's
 *   error code (NO_ROUTE, …) when it failed | whatever `pay` of either layer throws
 */
export async function payAny(
  direct: DirectPayer,
  routed: RoutedPayer | undefined,
  req: PaymentRequest,
): Promise<PaymentOutcome> {
  const mode = req.mode ?? "auto";
  const use = req.paymentId !== undefined ? direct.outgoingIdUse(req.paymentId) : null;
  const earlierRouted = use === "routed" && routed !== undefined;
  const earlierDirect = use === "direct";
  const goDirect =
    mode === "direct" ||
    (mode === "auto" &&
      !req.paymentHash &&
      !earlierRouted &&
      (earlierDirect || direct.openChannelWith(req.target, req.token) !== null));
  if (goDirect) {
    if (req.paymentHash)
      throw new QrwpError("INVALID_ARGUMENT", "a paymentHash needs a routed payment", {
        field: "paymentHash",
      });
    const payment = await direct.pay(
      {
        target: req.target,
        token: req.token,
        amount: req.amount,
        ...(req.paymentId !== undefined ? { paymentId: req.paymentId } : {}),
      },
      // The id was just looked up (or will be generated): the direct layer skips its own lookups.
      { newId: use === null },
    );
    if (payment.status === "failed")
      throw new QrwpError(
        "PEER_REJECTED",
        `partner refused the transfer: ${payment.errorCode ?? ""}: ${payment.errorMessage ?? ""}`,
        { paymentId: payment.paymentId, peerCode: payment.errorCode },
      );
    return { kind: "direct", payment };
  }
  if (!routed) throw new QrwpError("NOT_FOUND", "multi-hop payments are not enabled on this node");
  const payment = await routed.pay({
    target: req.target,
    token: req.token,
    amount: req.amount,
    ...(req.paymentId !== undefined ? { paymentId: req.paymentId } : {}),
    ...(req.maxFee !== undefined ? { maxFee: req.maxFee } : {}),
    ...(req.timeoutSeconds ? { timeoutSeconds: req.timeoutSeconds } : {}),
    ...(req.paymentHash ? { paymentHash: req.paymentHash } : {}),
  });
  if (payment.status === "failed")
    throw new QrwpError(
      (payment.errorCode ?? "NO_ROUTE") as ErrorCode,
      payment.errorMessage ?? "payment failed",
      {
        paymentId: payment.paymentId,
        attempts: payment.attempts.length,
      },
    );
  return { kind: "routed", payment };
}
