/**
 * A channel's on-chain lifecycle as one node records it (Raiden's channel states, ChannelHub's
 * `Opened → Closed → Settled`, plus the cooperative settle that skips `Closed`), as a union keyed on its
 * state: an open channel has no close data; a closed one always has its closer and close time (block
 * timestamp, unix seconds); a settled one keeps the close data it had (none after a cooperative settle).
 *
 * {@link nextLifecycle} is the one transition function: the channel manager (our own close and settle) and
 * the channel monitor (the chain's events, a reorganisation that removed a close) both go through it. Pure.
 */
import { QrwpError } from "./errors.js";

export type ChannelLifecycle =
  | { state: "opened" }
  | { state: "closed"; closingParticipant: string; closedAtSeconds: number }
  | {
      state: "settled";
      /** The closer and close time when it was closed first; null after a cooperative settle. */
      closingParticipant: string | null;
      closedAtSeconds: number | null;
    };

export type ChannelLifecycleState = ChannelLifecycle["state"];

/** What moves a channel's lifecycle. */
export type LifecycleEvent =
  /** A close (ours mined, or ChannelClosed seen on chain); `closedAtSeconds` is its block's timestamp. */
  | { type: "closed"; closingParticipant: string; closedAtSeconds: number }
  /** Settled on chain (settleChannel after the timeout, or cooperativeSettle). */
  | { type: "settled" }
  /** A reorganisation removed the close we had recorded: the chain says the channel is open. */
  | { type: "closeRemoved" };

/**
 * The lifecycle after `event`; the same object when nothing changes (an event seen twice is a no-op, and a
 * late `closed` after settlement changes nothing). A `closed` event always carries what the chain says: on a
 * closed channel it replaces the closer and close time (a reorganisation may have replaced the close).
 * @throws QrwpError CHANNEL_STATE for `closeRemoved` of a channel that is not closed.
 */
export function nextLifecycle(current: ChannelLifecycle, event: LifecycleEvent): ChannelLifecycle {
  switch (event.type) {
    case "closed":
      if (current.state === "opened")
        return {
          state: "closed",
          closingParticipant: event.closingParticipant,
          closedAtSeconds: event.closedAtSeconds,
        };
      if (current.state === "settled") return current;
      // The chain is the authority: the same close re-mined in another block moves its time, and a close by
      // the other participant (a reorganisation replaced ours, or theirs) replaces the recorded one.
      if (
        current.closingParticipant.toLowerCase() === event.closingParticipant.toLowerCase() &&
        current.closedAtSeconds === event.closedAtSeconds
      )
        return current;
      return {
        state: "closed",
        closingParticipant: event.closingParticipant,
        closedAtSeconds: event.closedAtSeconds,
      };
    case "settled":
      if (current.state === "settled") return current;
      if (current.state === "opened")
        return { state: "settled", closingParticipant: null, closedAtSeconds: null };
      return {
        state: "settled",
        closingParticipant: current.closingParticipant,
        closedAtSeconds: current.closedAtSeconds,
      };
    case "closeRemoved":
      if (current.state !== "closed")
        throw new QrwpError(
          "CHANNEL_STATE",
          `only a closed channel can lose its close, not a ${current.state} one`,
          {
            state: current.state,
          },
        );
      return { state: "opened" };
  }
}

/**
 * The first block timestamp (unix seconds) at which `settleChannel` may be called: strictly after
 * `closedAt + settleTimeout` (ChannelHub), or null when the channel is not closed.
 */
export function settleableAtSeconds(
  lifecycle: ChannelLifecycle,
  settleTimeoutSeconds: number,
): number | null {
  return lifecycle.state === "closed" ? lifecycle.closedAtSeconds + settleTimeoutSeconds + 1 : null;
}

/** True while a partner's close may still be contested at block time `nowSeconds` (ChannelHub's window). */
export function contestWindowOpen(
  lifecycle: ChannelLifecycle,
  settleTimeoutSeconds: number,
  nowSeconds: number,
): boolean {
  return lifecycle.state === "closed" && nowSeconds <= lifecycle.closedAtSeconds + settleTimeoutSeconds;
}
