/**
 * Typed builders of the ChannelHub's and SecretRegistry's transactions as {@link TxCall}s (target address +
 * ABI-encoded calldata, from the TypeChain interfaces), for {@link TxSender}. Argument shapes and units are
 * those of {@link HubClient}'s methods of the same name; see contracts/channels/ChannelHub.sol.
 */
import { ethers } from "ethers";
import { ChannelHub__factory, SecretRegistry__factory } from "../typechain-types/index.js";
import type { Deployment } from "./deployment.js";
import {
  packLocks,
  type PendingLock,
  type SettleBalanceData,
  type SignedBalanceProof,
} from "./hub-client.js";

/** A contract call to send as a transaction. */
export interface TxCall {
  /** What it is, for logs and errors (e.g. "ChannelHub.settleChannel"). */
  action: string;
  /** Contract address. */
  to: string;
  /** ABI-encoded calldata, 0x-hex. */
  data: string;
  /** Wei sent with the call (default 0). */
  valueWei?: bigint;
}

/** The arguments of a contest (`updateNonClosingBalanceProof`), e.g. from a watchtower appointment. */
export interface ContestCallArgs {
  channelId: bigint;
  closingParticipant: string;
  nonClosingParticipant: string;
  /** Nonce of the closer's balance proof. */
  nonce: bigint;
  /** keccak256(abi.encode(transferredAmount, lockedAmount, locksRoot)), bytes32 hex. */
  balanceHash: string;
  /** The closer's EIP-712 `BalanceProof` signature, 65 bytes hex. */
  closingSignature: string;
  /** The non-closer's EIP-712 `BalanceProofUpdate` counter-signature, 65 bytes hex. */
  nonClosingSignature: string;
}

type Addresses = Pick<Deployment, "hub" | "secretRegistry">;

const HUB = ChannelHub__factory.createInterface();
const REGISTRY = SecretRegistry__factory.createInterface();

/** `ChannelHub.updateNonClosingBalanceProof`: the contest (anyone may send it). */
export function contestCall(deployment: Addresses, a: ContestCallArgs): TxCall {
  return {
    action: "ChannelHub.updateNonClosingBalanceProof",
    to: deployment.hub,
    data: HUB.encodeFunctionData("updateNonClosingBalanceProof", [
      a.channelId,
      a.closingParticipant,
      a.nonClosingParticipant,
      a.nonce,
      a.balanceHash,
      a.closingSignature,
      a.nonClosingSignature,
    ]),
  };
}

/**
 * `ChannelHub.closeChannel` as the sender, submitting the partner's latest balance proof (or `null` when
 * the partner transferred nothing).
 */
export function closeChannelCall(
  deployment: Addresses,
  channelId: bigint,
  nonClosingParticipant: string,
  proof: SignedBalanceProof | null,
): TxCall {
  return {
    action: "ChannelHub.closeChannel",
    to: deployment.hub,
    data: HUB.encodeFunctionData("closeChannel", [
      channelId,
      nonClosingParticipant,
      proof?.nonce ?? 0n,
      proof?.balanceHash ?? ethers.ZeroHash,
      proof?.signature ?? "0x",
    ]),
  };
}

/** `ChannelHub.settleChannel` after the settle timeout; each side's data is what it transferred. */
export function settleChannelCall(
  deployment: Addresses,
  channelId: bigint,
  p1: SettleBalanceData,
  p2: SettleBalanceData,
): TxCall {
  return {
    action: "ChannelHub.settleChannel",
    to: deployment.hub,
    data: HUB.encodeFunctionData("settleChannel", [
      channelId,
      p1.participant,
      p1.transferredAmount,
      p1.lockedAmount,
      p1.locksRoot,
      p2.participant,
      p2.transferredAmount,
      p2.lockedAmount,
      p2.locksRoot,
    ]),
  };
}

/** `ChannelHub.unlock` of `sender`'s pending locks kept at settlement (all of them, in locksroot order). */
export function unlockCall(
  deployment: Addresses,
  channelId: bigint,
  sender: string,
  receiver: string,
  locks: readonly PendingLock[],
): TxCall {
  return {
    action: "ChannelHub.unlock",
    to: deployment.hub,
    data: HUB.encodeFunctionData("unlock", [channelId, sender, receiver, packLocks(locks)]),
  };
}

/** `SecretRegistry.registerSecret` of one 32-byte secret (0x-hex). */
export function registerSecretCall(deployment: Addresses, secret: string): TxCall {
  return {
    action: "SecretRegistry.registerSecret",
    to: deployment.secretRegistry,
    data: REGISTRY.encodeFunctionData("registerSecret", [secret]),
  };
}

/** `SecretRegistry.registerSecretBatch` of several 32-byte secrets (0x-hex). */
export function registerSecretBatchCall(deployment: Addresses, secrets: readonly string[]): TxCall {
  return {
    action: "SecretRegistry.registerSecretBatch",
    to: deployment.secretRegistry,
    data: REGISTRY.encodeFunctionData("registerSecretBatch", [[...secrets]]),
  };
}
