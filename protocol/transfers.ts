/**
 * Mediated transfers: the initiator, mediator and target of one payment as three separate, pure state
 * machines (Raiden's `transfer/mediated_transfer/{initiator,mediator,target}.py`, BOLT 2/4 HTLC rules).
 *
 * Each `*Step(state, event)` returns the next state and the actions the node must carry out; it does no I/O
 * and reads no clock (time comes in `Tick` events). The node persists the new state before it performs the
 * actions, so a crash replays them (actions are idempotent at the channel layer).
 *
 * Message flow (I initiator, M mediator, T target):
 *   I -LockedTransfer-> M -LockedTransfer-> T
 *   T -SecretRequest-> I (spontaneous payment; an invoice's target already knows the secret)
 *   I -RevealSecret(reply)-> T;  T -RevealSecret-> M -RevealSecret-> I
 *   M -Unlock-> T;  I -Unlock-> M           (each Unlock moves the lock's amount to transferredAmount)
 * Failure: a node that cannot forward sends TransferFailed upstream with a coded reason; the upstream then
 * removes its lock (LockExpired, accepted early because the receiver declined it) and fails further
 * upstream, or, at the initiator, retries on another route. A lock nobody unlocked is removed with
 * LockExpired once it has expired. A node that knows the secret but was not paid off-chain by
 * `expiration - revealTimeoutSeconds` registers the secret on-chain and closes the channel (unlock after settle).
 */
import type { ErrorCode } from "./errors.js";
import type { Lock } from "./locks.js";
import type { RouteHopInfo } from "./messages.js";
import type { LockTiming } from "./timing.js";

/** One lock on one channel, with the partner on the other end. */
export interface HopLock {
  channelId: bigint;
  partner: string;
  lock: Lock;
}

/** What every LockedTransfer of a payment carries besides its lock. */
export interface TransferDescription {
  paymentId: string;
  initiator: string;
  target: string;
  secretHash: string;
  route: RouteHopInfo[];
  initiatorMultiaddrs: string[];
}

/** Things the node must do; each is idempotent at the channel layer. */
export type TransferAction =
  | {
      type: "SendLockedTransfer";
      channelId: bigint;
      partner: string;
      lock: Lock;
      transfer: TransferDescription;
    }
  | { type: "SendUnlock"; channelId: bigint; partner: string; secretHash: string; secret: string }
  | { type: "SendLockExpired"; channelId: bigint; partner: string; secretHash: string }
  | { type: "SendRevealSecret"; to: string; secret: string }
  | {
      type: "SendSecretRequest";
      to: string;
      multiaddrs: string[];
      paymentId: string;
      secretHash: string;
      amount: bigint;
      expiration: bigint;
    }
  | {
      type: "SendTransferFailed";
      to: string;
      paymentId: string;
      secretHash: string;
      code: ErrorCode;
      message: string;
      failedAt: string;
    }
  | { type: "RegisterSecret"; secret: string }
  | { type: "CloseChannel"; channelId: bigint }
  | { type: "PaymentSucceeded"; secret: string }
  | { type: "AttemptFailed"; code: ErrorCode; message: string; failedAt: string }
  | { type: "PaymentReceived"; amount: bigint };

/** A failure reason as carried by TransferFailed. */
export interface FailureReason {
  code: ErrorCode;
  message: string;
  failedAt: string;
}

/** The TransferFailed a role sends its payer when it gives up the payer's lock. */
function failUpstreamTo(
  payer: HopLock,
  transfer: TransferDescription,
  failure: FailureReason,
): { failure: FailureReason; action: TransferAction } {
  return {
    failure,
    action: {
      type: "SendTransferFailed",
      to: payer.partner,
      paymentId: transfer.paymentId,
      secretHash: transfer.secretHash,
      ...failure,
    },
  };
}

const eq = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();

// ------------------------------------------------------------------------------------------------
// Initiator
// ------------------------------------------------------------------------------------------------

/** The payer's side of one attempt (a retry starts a new attempt with {@link initiatorStart}). */
export interface InitiatorState {
  role: "initiator";
  transfer: TransferDescription;
  /** Known for spontaneous payments; learnt from RevealSecret for invoice payments. */
  secret: string | null;
  /** The lock we sent on the first hop. */
  out: HopLock;
  /** Amount the target must receive (the last route hop's amount). */
  amount: bigint;
  status: "pending" | "succeeded" | "failed" | "expired";
  /** True once our Unlock to the first hop was issued. */
  unlockSent: boolean;
  /** True once the lock was removed (LockExpired issued). */
  lockRemoved: boolean;
  failure: FailureReason | null;
}

export type InitiatorEvent =
  | { type: "SecretRequest"; from: string; amount: bigint; expiration: bigint }
  | { type: "RevealSecret"; from: string; secret: string; secretHash: string }
  | { type: "TransferFailed"; from: string; reason: FailureReason }
  | { type: "Tick"; nowSeconds: bigint };

/** Starts an attempt: the first LockedTransfer of `route` over `channelId`. */
export function initiatorStart(
  transfer: TransferDescription,
  secret: string | null,
  channelId: bigint,
): { state: InitiatorState; actions: TransferAction[] } {
  const first = transfer.route[0] as RouteHopInfo;
  const last = transfer.route[transfer.route.length - 1] as RouteHopInfo;
  const lock: Lock = { amount: first.amount, expiration: first.expiration, secretHash: transfer.secretHash };
  const out: HopLock = { channelId, partner: first.address, lock };
  return {
    state: {
      role: "initiator",
      transfer,
      secret,
      out,
      amount: last.amount,
      status: "pending",
      unlockSent: false,
      lockRemoved: false,
      failure: null,
    },
    actions: [{ type: "SendLockedTransfer", channelId, partner: first.address, lock, transfer }],
  };
}

/**
 * The initiator's reply to a SecretRequest: the secret if the request comes from the target and states the
 * lock the route promised it, else null (the node answers with an error).
 */
export function initiatorSecretFor(
  state: InitiatorState,
  e: Extract<InitiatorEvent, { type: "SecretRequest" }>,
): string | null {
  const last = state.transfer.route[state.transfer.route.length - 1] as RouteHopInfo;
  if (state.status !== "pending" || state.secret === null) return null;
  if (!eq(e.from, state.transfer.target)) return null;
  if (e.amount !== last.amount || e.expiration !== last.expiration) return null;
  return state.secret;
}

/**
 * The initiator's transition: a RevealSecret from the first hop (or the chain) completes the payment
 * (Unlock + PaymentSucceeded); a TransferFailed from the first hop or the lock's expiry removes the lock
 * (LockExpired) and fails the attempt (AttemptFailed). Events that do not apply are no-ops.
 */
export function initiatorStep(
  state: InitiatorState,
  event: InitiatorEvent,
): { state: InitiatorState; actions: TransferAction[] } {
  switch (event.type) {
    case "SecretRequest":
      return { state, actions: [] };
    case "RevealSecret": {
      if (!eq(event.secretHash, state.transfer.secretHash) || state.unlockSent || state.lockRemoved) {
        return { state, actions: [] };
      }
      const next: InitiatorState = { ...state, secret: event.secret, status: "succeeded", unlockSent: true };
      return {
        state: next,
        // Succeeded first: the secret is the proof of payment, and the node runs a transfer's actions one at a
        // time, so the payer does not wait for the Unlock's round trip (stored with it, the Unlock follows).
        actions: [
          { type: "PaymentSucceeded", secret: event.secret },
          {
            type: "SendUnlock",
            channelId: state.out.channelId,
            partner: state.out.partner,
            secretHash: state.transfer.secretHash,
            secret: event.secret,
          },
        ],
      };
    }
    case "TransferFailed": {
      if (!eq(event.from, state.out.partner) || state.status !== "pending" || state.unlockSent)
        return { state, actions: [] };
      return {
        state: { ...state, status: "failed", lockRemoved: true, failure: event.reason },
        actions: [
          {
            type: "SendLockExpired",
            channelId: state.out.channelId,
            partner: state.out.partner,
            secretHash: state.transfer.secretHash,
          },
          { type: "AttemptFailed", ...event.reason },
        ],
      };
    }
    case "Tick": {
      if (state.status !== "pending" || state.unlockSent || state.lockRemoved) return { state, actions: [] };
      if (event.nowSeconds < state.out.lock.expiration) return { state, actions: [] };
      const reason: FailureReason = {
        code: "LOCK_EXPIRED",
        message: "the lock expired before the secret was revealed",
        failedAt: state.out.partner,
      };
      return {
        state: { ...state, status: "expired", lockRemoved: true, failure: reason },
        actions: [
          {
            type: "SendLockExpired",
            channelId: state.out.channelId,
            partner: state.out.partner,
            secretHash: state.transfer.secretHash,
          },
          { type: "AttemptFailed", ...reason },
        ],
      };
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Mediator
// ------------------------------------------------------------------------------------------------

/** Our fee schedule for forwarding: `feeFlat + amountToForward * feePpm / 1e6` (token base units). */
export interface FeeSchedule {
  feeFlat: bigint;
  feePpm: number;
}

/**
 * Fee a mediator charges for forwarding `amountToForward` (token base units):
 * `feeFlat + amountToForward * feePpm / 1_000_000`, integer floor division (BOLT 7 fee_base + fee_proportional).
 */
export function forwardingFee(schedule: FeeSchedule, amountToForward: bigint): bigint {
  return schedule.feeFlat + (amountToForward * BigInt(schedule.feePpm)) / 1_000_000n;
}

/** What the node knows about the channel to the next hop when a lock arrives. */
export interface NextHopInfo {
  /** An open channel with the next hop in the payment's token, or null if none. */
  channelId: bigint | null;
  /** What we can send on it now (token base units). */
  distributable: bigint;
  /** False if the next hop is known to be unreachable. */
  online: boolean;
}

export interface MediatorState {
  role: "mediator";
  transfer: TransferDescription;
  secret: string | null;
  payer: HopLock;
  payee: HopLock | null;
  payerStatus: "pending" | "unlocked" | "expired" | "declined" | "onchain";
  payeeStatus: "none" | "pending" | "unlocked" | "expired" | "failed";
  /** True once RevealSecret was sent upstream. */
  secretSentUpstream: boolean;
  failure: FailureReason | null;
}

export type MediatorEvent =
  | { type: "RevealSecret"; from: string; secret: string; secretHash: string }
  | { type: "TransferFailed"; from: string; reason: FailureReason }
  | { type: "ForwardFailed"; code: ErrorCode; message: string }
  | { type: "Unlocked" }
  | { type: "LockExpiredReceived" }
  | { type: "Tick"; nowSeconds: bigint };

/**
 * A mediator receives `payer.lock`: checks its place in the route, the fee it is owed and the expiry delta,
 * and forwards to the next hop or declines upstream with a coded reason.
 */
export function mediatorStart(params: {
  self: string;
  transfer: TransferDescription;
  payer: HopLock;
  next: NextHopInfo;
  fees: FeeSchedule;
  timing: LockTiming;
  nowSeconds: bigint;
}): { state: MediatorState; actions: TransferAction[] } {
  const { self, transfer, payer, next, fees, timing, nowSeconds } = params;
  const base: MediatorState = {
    role: "mediator",
    transfer,
    secret: null,
    payer,
    payee: null,
    payerStatus: "pending",
    payeeStatus: "none",
    secretSentUpstream: false,
    failure: null,
  };
  const decline = (code: ErrorCode, message: string) => {
    const { failure, action } = failUpstreamTo(payer, transfer, { code, message, failedAt: self });
    return { state: { ...base, payerStatus: "declined" as const, failure }, actions: [action] };
  };
  const index = transfer.route.findIndex((h) => eq(h.address, self));
  const mine = transfer.route[index];
  const hop = transfer.route[index + 1];
  if (index < 0 || !mine || !hop) return decline("UNKNOWN_TARGET", "we are not a mediator on this route");
  if (payer.lock.amount < mine.amount || payer.lock.expiration < mine.expiration)
    return decline("INVALID_TRANSFER", "the lock is below what the route states for us");
  if (next.channelId === null)
    return decline("UNKNOWN_TARGET", `no open channel to the next hop ${hop.address}`);
  if (!next.online) return decline("PEER_OFFLINE", `the next hop ${hop.address} is offline`);
  const fee = forwardingFee(fees, hop.amount);
  if (payer.lock.amount < hop.amount + fee)
    return decline("FEE_TOO_LOW", `forwarding ${hop.amount} costs a fee of ${fee}`);
  if (payer.lock.expiration < hop.expiration + BigInt(timing.expiryDeltaSeconds))
    return decline(
      "EXPIRY_TOO_SOON",
      `we need ${timing.expiryDeltaSeconds} s between the incoming and the outgoing expiration`,
    );
  if (hop.expiration < nowSeconds + BigInt(timing.revealTimeoutSeconds))
    return decline("EXPIRY_TOO_SOON", "the outgoing lock would expire too soon");
  if (next.distributable < hop.amount)
    return decline("INSUFFICIENT_CAPACITY", `not enough capacity towards ${hop.address}`);
  const lock: Lock = { amount: hop.amount, expiration: hop.expiration, secretHash: transfer.secretHash };
  const payee: HopLock = { channelId: next.channelId, partner: hop.address, lock };
  return {
    state: { ...base, payee, payeeStatus: "pending" },
    actions: [
      { type: "SendLockedTransfer", channelId: next.channelId, partner: hop.address, lock, transfer },
    ],
  };
}

/**
 * The mediator's transition: RevealSecret from the payee → Unlock downstream and RevealSecret upstream;
 * TransferFailed from the payee or a failed forward → remove the outgoing lock, then fail upstream;
 * Unlock / LockExpired from the payer close its side; Tick → go on-chain when the secret is known and the
 * payer has not unlocked by `expiration - revealTimeoutSeconds`, or expire an unclaimed outgoing lock.
 */
export function mediatorStep(
  state: MediatorState,
  event: MediatorEvent,
  self: string,
  timing: LockTiming,
): { state: MediatorState; actions: TransferAction[] } {
  const failUpstream = (s: MediatorState, reason: FailureReason): TransferAction[] =>
    s.payerStatus === "pending"
      ? [
          {
            type: "SendTransferFailed",
            to: s.payer.partner,
            paymentId: s.transfer.paymentId,
            secretHash: s.transfer.secretHash,
            ...reason,
          },
        ]
      : [];
  switch (event.type) {
    case "RevealSecret": {
      if (!eq(event.secretHash, state.transfer.secretHash) || state.secret !== null)
        return { state, actions: [] };
      const next: MediatorState = {
        ...state,
        secret: event.secret,
        secretSentUpstream: state.secretSentUpstream || state.payerStatus === "pending",
      };
      // The secret goes upstream first (it is on the payer's critical path: every hop back to the initiator
      // waits for it; the node runs a transfer's actions one at a time), then our Unlock pays the payee.
      const actions: TransferAction[] = [];
      if (state.payerStatus === "pending")
        actions.push({ type: "SendRevealSecret", to: state.payer.partner, secret: event.secret });
      if (state.payee && state.payeeStatus === "pending") {
        next.payeeStatus = "unlocked";
        actions.push({
          type: "SendUnlock",
          channelId: state.payee.channelId,
          partner: state.payee.partner,
          secretHash: state.transfer.secretHash,
          secret: event.secret,
        });
      }
      return { state: next, actions };
    }
    case "TransferFailed": {
      if (
        !state.payee ||
        !eq(event.from, state.payee.partner) ||
        state.payeeStatus !== "pending" ||
        state.secret !== null
      ) {
        return { state, actions: [] };
      }
      const next: MediatorState = { ...state, payeeStatus: "failed", failure: event.reason };
      const actions: TransferAction[] = [
        {
          type: "SendLockExpired",
          channelId: state.payee.channelId,
          partner: state.payee.partner,
          secretHash: state.transfer.secretHash,
        },
        ...failUpstream(state, event.reason),
      ];
      if (state.payerStatus === "pending") next.payerStatus = "declined";
      return { state: next, actions };
    }
    case "ForwardFailed": {
      if (state.payeeStatus !== "pending" || state.secret !== null) return { state, actions: [] };
      const reason: FailureReason = { code: event.code, message: event.message, failedAt: self };
      const next: MediatorState = { ...state, payeeStatus: "failed", failure: reason };
      if (state.payerStatus === "pending") next.payerStatus = "declined";
      return { state: next, actions: failUpstream(state, reason) };
    }
    case "Unlocked":
      return { state: { ...state, payerStatus: "unlocked" }, actions: [] };
    case "LockExpiredReceived":
      return {
        state: { ...state, payerStatus: state.payerStatus === "pending" ? "expired" : state.payerStatus },
        actions: [],
      };
    case "Tick": {
      const now = event.nowSeconds;
      const actions: TransferAction[] = [];
      let next = state;
      // Secret known but the payer has not unlocked: go on-chain before it is too late.
      if (
        state.secret !== null &&
        state.payerStatus === "pending" &&
        now >= state.payer.lock.expiration - BigInt(timing.revealTimeoutSeconds)
      ) {
        next = { ...next, payerStatus: "onchain" };
        actions.push(
          { type: "RegisterSecret", secret: state.secret },
          { type: "CloseChannel", channelId: state.payer.channelId },
        );
      }
      // Our outgoing lock expired unclaimed: remove it and tell the payer (whose lock expires later).
      if (
        state.secret === null &&
        state.payee &&
        state.payeeStatus === "pending" &&
        now >= state.payee.lock.expiration
      ) {
        const reason: FailureReason = {
          code: "LOCK_EXPIRED",
          message: "the downstream lock expired unclaimed",
          failedAt: self,
        };
        next = {
          ...next,
          payeeStatus: "expired",
          failure: reason,
          payerStatus: state.payerStatus === "pending" ? "declined" : state.payerStatus,
        };
        actions.push(
          {
            type: "SendLockExpired",
            channelId: state.payee.channelId,
            partner: state.payee.partner,
            secretHash: state.transfer.secretHash,
          },
          ...failUpstream(state, reason),
        );
      }
      return { state: next, actions };
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Target
// ------------------------------------------------------------------------------------------------

export interface TargetState {
  role: "target";
  transfer: TransferDescription;
  secret: string | null;
  payer: HopLock;
  status: "requested" | "revealed" | "unlocked" | "expired" | "onchain" | "declined";
  failure: FailureReason | null;
}

export type TargetEvent =
  | { type: "SecretRevealed"; secret: string; secretHash: string }
  | { type: "SecretRequestFailed"; code: ErrorCode; message: string }
  | { type: "Unlocked" }
  | { type: "LockExpiredReceived" }
  | { type: "Tick"; nowSeconds: bigint };

/**
 * A target receives `payer.lock`. With an `invoice` (we chose the secret) it reveals at once if the lock
 * pays at least the invoice amount; otherwise it asks the initiator for the secret.
 */
export function targetStart(params: {
  self: string;
  transfer: TransferDescription;
  payer: HopLock;
  invoice: { secret: string; amount: bigint } | null;
  timing: LockTiming;
  nowSeconds: bigint;
}): { state: TargetState; actions: TransferAction[] } {
  const { self, transfer, payer, invoice, timing, nowSeconds } = params;
  const last = transfer.route[transfer.route.length - 1] as RouteHopInfo;
  const base: TargetState = {
    role: "target",
    transfer,
    secret: null,
    payer,
    status: "requested",
    failure: null,
  };
  const decline = (code: ErrorCode, message: string) => {
    const { failure, action } = failUpstreamTo(payer, transfer, { code, message, failedAt: self });
    return { state: { ...base, status: "declined" as const, failure }, actions: [action] };
  };
  if (!eq(last.address, self) || !eq(transfer.target, self))
    return decline("UNKNOWN_TARGET", "we are not the target");
  if (payer.lock.amount < last.amount)
    return decline("INVALID_TRANSFER", "the lock pays less than the route states");
  if (payer.lock.expiration < nowSeconds + BigInt(timing.minFinalExpirySeconds))
    return decline(
      "EXPIRY_TOO_SOON",
      `the lock must expire at least ${timing.minFinalExpirySeconds} s from now`,
    );
  if (invoice) {
    if (payer.lock.amount < invoice.amount)
      return decline("INVALID_TRANSFER", "the lock pays less than the invoice");
    return {
      state: { ...base, secret: invoice.secret, status: "revealed" },
      actions: [{ type: "SendRevealSecret", to: payer.partner, secret: invoice.secret }],
    };
  }
  return {
    state: base,
    actions: [
      {
        type: "SendSecretRequest",
        to: transfer.initiator,
        multiaddrs: transfer.initiatorMultiaddrs,
        paymentId: transfer.paymentId,
        secretHash: transfer.secretHash,
        amount: last.amount,
        expiration: last.expiration,
      },
    ],
  };
}

/**
 * The target's transition: the initiator's secret → RevealSecret to the payer; a refused SecretRequest →
 * decline upstream; Unlock → PaymentReceived; Tick → go on-chain when revealed but not unlocked by
 * `expiration - revealTimeoutSeconds`.
 */
export function targetStep(
  state: TargetState,
  event: TargetEvent,
  self: string,
  timing: LockTiming,
): { state: TargetState; actions: TransferAction[] } {
  switch (event.type) {
    case "SecretRevealed":
      if (state.status !== "requested" || !eq(event.secretHash, state.transfer.secretHash))
        return { state, actions: [] };
      return {
        state: { ...state, secret: event.secret, status: "revealed" },
        actions: [{ type: "SendRevealSecret", to: state.payer.partner, secret: event.secret }],
      };
    case "SecretRequestFailed": {
      if (state.status !== "requested") return { state, actions: [] };
      const failure: FailureReason = { code: event.code, message: event.message, failedAt: self };
      return {
        state: { ...state, status: "declined", failure },
        actions: [
          {
            type: "SendTransferFailed",
            to: state.payer.partner,
            paymentId: state.transfer.paymentId,
            secretHash: state.transfer.secretHash,
            ...failure,
          },
        ],
      };
    }
    case "Unlocked":
      if (state.status === "unlocked") return { state, actions: [] };
      return {
        state: { ...state, status: "unlocked" },
        actions: [{ type: "PaymentReceived", amount: state.payer.lock.amount }],
      };
    case "LockExpiredReceived":
      return {
        state: { ...state, status: state.status === "unlocked" ? "unlocked" : "expired" },
        actions: [],
      };
    case "Tick":
      if (
        state.status === "revealed" &&
        state.secret !== null &&
        event.nowSeconds >= state.payer.lock.expiration - BigInt(timing.revealTimeoutSeconds)
      ) {
        return {
          state: { ...state, status: "onchain" },
          actions: [
            { type: "RegisterSecret", secret: state.secret },
            { type: "CloseChannel", channelId: state.payer.channelId },
          ],
        };
      }
      return { state, actions: [] };
  }
}

/** Any role's state. */
export type TransferState = InitiatorState | MediatorState | TargetState;

/** True when the role has nothing left to do (no lock of ours or to us can still change). */
export function isTransferDone(s: TransferState): boolean {
  switch (s.role) {
    case "initiator":
      return s.unlockSent || s.lockRemoved;
    case "mediator":
      // "onchain": the channel layer recovers the lock by close, settle and unlock.
      return s.payerStatus !== "pending" && s.payeeStatus !== "pending";
    case "target":
      return s.status === "unlocked" || s.status === "expired" || s.status === "declined";
  }
}
