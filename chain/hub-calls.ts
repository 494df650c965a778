/**
 * Typed builders of the ChannelHub's and SecretRegistry's transactions as {@link TxCall}s (target address +
 * ABI-encoded calldata, from the TypeChain interfaces), for {@link TxSender}. Argument shapes and units are
 * those of {@link HubClient}'s methods of the same name; see contracts/channels/ChannelHub.sol.
 */
import { ethers } from "ethers";
import { ChannelHub__factory, IERC20__factory, SecretRegistry__factory } from "../typechain-types/index.js";
import type { Deployment } from "./deployment.js";
import type { SettleBalanceData, SignedBalanceProof } from "./hub-client.js";
import { packLocks, type PendingLock } from "./hub-errors.js";

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

/** A withdraw both participants signed (EIP-712 `Withdraw`, protocol/withdraw.ts), as `setTotalWithdraw` takes it. */
export interface WithdrawCallArgs {
  channelId: bigint;
  /** The participant who withdraws and is paid. */
  participant: string;
  /** New total withdraw (not the increase), token base units. */
  totalWithdraw: bigint;
  /** Last block.timestamp (seconds) at which the hub accepts it. */
  expiryTimestamp: bigint;
  /** `participant`'s 65-byte signature, 0x-hex. */
  participantSignature: string;
  /** The partner's 65-byte signature of the same message, 0x-hex. */
  partnerSignature: string;
}

/** Final amounts both participants signed (EIP-712 `CooperativeSettle`), as `cooperativeSettle` takes them. */
export interface CooperativeSettleCallArgs {
  channelId: bigint;
  participant1: string;
  /** Token base units. */
  participant1Amount: bigint;
  participant2: string;
  /** Token base units. */
  participant2Amount: bigint;
  /** 65-byte signatures, 0x-hex. */
  participant1Signature: string;
  participant2Signature: string;
}

const HUB = ChannelHub__factory.createInterface();
const REGISTRY = SecretRegistry__factory.createInterface();
const ERC20 = IERC20__factory.createInterface();

/**
 * `ChannelHub.openChannel(participant1, participant2, token, settleTimeout)`.
 * @param token ERC-20 address, or ethers.ZeroAddress for ETH.
 * @param settleTimeoutSeconds Contest window after a close, seconds.
 */
export function openChannelCall(
  deployment: Addresses,
  participant1: string,
  participant2: string,
  token: string,
  settleTimeoutSeconds: number,
): TxCall {
  return {
    action: "ChannelHub.openChannel",
    to: deployment.hub,
    data: HUB.encodeFunctionData("openChannel", [participant1, participant2, token, settleTimeoutSeconds]),
  };
}

/**
 * `ChannelHub.setTotalDeposit`: raises `participant`'s total deposit to `totalDeposit` (base units). For an
 * ETH channel `valueWei` is the increase sent with it; for an ERC-20 channel 0 (the Bridge pulls the
 * increase, which must be approved first: {@link approveCall}).
 */
export function setTotalDepositCall(
  deployment: Addresses,
  channelId: bigint,
  participant: string,
  totalDeposit: bigint,
  valueWei: bigint,
): TxCall {
  return {
    action: "ChannelHub.setTotalDeposit",
    to: deployment.hub,
    data: HUB.encodeFunctionData("setTotalDeposit", [channelId, participant, totalDeposit]),
    valueWei,
  };
}

/** ERC-20 `approve(spender, amount)` of `token` (amount in token base units). */
export function approveCall(token: string, spender: string, amount: bigint): TxCall {
  return {
    action: "ERC20.approve",
    to: token,
    data: ERC20.encodeFunctionData("approve", [spender, amount]),
  };
}

/** `ChannelHub.setTotalWithdraw`: a withdraw from an open channel signed by both participants. */
export function setTotalWithdrawCall(deployment: Addresses, a: WithdrawCallArgs): TxCall {
  return {
    action: "ChannelHub.setTotalWithdraw",
    to: deployment.hub,
    data: HUB.encodeFunctionData("setTotalWithdraw", [
      a.channelId,
      a.participant,
      a.totalWithdraw,
      a.expiryTimestamp,
      a.participantSignature,
      a.partnerSignature,
    ]),
  };
}

/** `ChannelHub.cooperativeSettle`: settles an open channel at once with the amounts both signed. */
export function cooperativeSettleCall(deployment: Addresses, a: CooperativeSettleCallArgs): TxCall {
  return {
    action: "ChannelHub.cooperativeSettle",
    to: deployment.hub,
    data: HUB.encodeFunctionData("cooperativeSettle", [
      a.channelId,
      a.participant1,
      a.participant1Amount,
      a.participant2,
      a.participant2Amount,
      a.participant1Signature,
      a.participant2Signature,
    ]),
  };
}

/** `ChannelHub.claimDeferredPayout(token, to)`: the sender's payout the hub kept after a failed transfer. */
export function claimDeferredPayoutCall(deployment: Addresses, token: string, to: string): TxCall {
  return {
    action: "ChannelHub.claimDeferredPayout",
    to: deployment.hub,
    data: HUB.encodeFunctionData("claimDeferredPayout", [token, to]),
  };
}

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
