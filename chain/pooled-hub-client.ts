/**
 * PooledHubClient: {@link HubClient}'s methods for one account, over an {@link RpcPool} (every URL of the
 * chain: per-call timeout, failover, chain id checked per URL) and ONE {@link TxSender} (simulated, explicit
 * account nonce, signed once, the same bytes broadcast on failover, fee-bumped replacement, confirmation
 * depth). The node sends every transaction through it, so a stalled or failing URL delays a contest by at
 * most one request timeout instead of stopping it, and no second nonce manager on the same key exists.
 *
 * Same names, arguments, units, results and pre-checks as {@link HubClient} (amounts in token base units,
 * times in seconds of `block.timestamp`): `setTotalDeposit` simulates before it approves exactly the
 * increase, checks the wallet's balance and refuses a malformed total with a coded error; `setTotalWithdraw`
 * checks its arguments naming the field. Differences: a transaction returns once it is `confirmations`
 * blocks deep (the sender's default, or the client's per call); a reverted simulation is a
 * {@link HubCallError} (nothing sent), a transaction mined and reverted a `TxRevertedError`, no URL
 * answering a `QrwpError` CHAIN_ERROR (field "rpcUrls"). A read the hub answers with a decoded revert is
 * not retried on another URL.
 */
import { ethers } from "ethers";
import { IERC20__factory, ChannelHub__factory } from "../typechain-types/index.js";
import { QrwpError, assertUint256, normalizeAddress } from "../protocol/index.js";
import type { Deployment } from "./deployment.js";
import {
  approveCall,
  claimDeferredPayoutCall,
  closeChannelCall,
  contestCall,
  cooperativeSettleCall,
  openChannelCall,
  registerSecretBatchCall,
  registerSecretCall,
  setTotalDepositCall,
  setTotalWithdrawCall,
  settleChannelCall,
  unlockCall,
  type TxCall,
} from "./hub-calls.js";
import {
  HubClient,
  type ChannelView,
  type DepositResult,
  type LockedBalanceView,
  type OpenChannelResult,
  type ParticipantView,
  type RegisterSecretBatchResult,
  type RegisterSecretResult,
  type SettleBalanceData,
  type SignedBalanceProof,
  type TxResult,
  type UnlockResult,
  type WithdrawResult,
} from "./hub-client.js";
import {
  HubCallError,
  assertSignature,
  classifyDepositSimulation,
  decodeHubError,
  type DepositSimulation,
  type PendingLock,
} from "./hub-errors.js";
import type { RpcEndpoint, RpcPool } from "./rpc-pool.js";
import type { ConfirmedTx, TxSender } from "./tx-sender.js";

/** What {@link PooledHubClient} is built on. */
export interface PooledHubClientInit {
  /** The chain's URLs (shared with `sender`). */
  pool: RpcPool;
  /** The account's only sender (its queue owns the account nonce). */
  sender: TxSender;
  deployment: Deployment;
}

/** A revert the hub explained is an answer, not an endpoint failure. */
const decodedRevert = (error: unknown) => error instanceof HubCallError && error.errorName !== null;
/** A token that is no ERC-20 contract answers with empty or reverting data on every URL. */
const notAToken = (error: unknown) => {
  const code = (error as { code?: unknown }).code;
  return code === "BAD_DATA" || code === "CALL_EXCEPTION";
};
const HUB_INTERFACE = ChannelHub__factory.createInterface();

/** See the module docs. */
export class PooledHubClient {
  readonly deployment: Deployment;
  readonly #pool: RpcPool;
  readonly #sender: TxSender;
  /** One read-only HubClient per URL (by endpoint index), for the typed reads. */
  readonly #readers = new Map<number, HubClient>();
  /** Deposits are read-simulate-approve-send sequences: one at a time, so two never share an allowance. */
  #depositQueue: Promise<unknown> = Promise.resolve();

  constructor(init: PooledHubClientInit) {
    this.deployment = init.deployment;
    this.#pool = init.pool;
    this.#sender = init.sender;
  }

  /** The sending account's address (checksummed). */
  async address(): Promise<string> {
    return this.#sender.address;
  }

  #reader(e: RpcEndpoint): HubClient {
    let hub = this.#readers.get(e.index);
    if (hub === undefined) {
      hub = new HubClient(new ethers.VoidSigner(this.#sender.address, e.provider), this.deployment);
      this.#readers.set(e.index, hub);
    }
    return hub;
  }

  #read<T>(action: string, fn: (hub: HubClient, e: RpcEndpoint) => Promise<T>): Promise<T> {
    return this.#pool.run(action, (e) => fn(this.#reader(e), e), { isFinal: decodedRevert });
  }

  async #send(call: TxCall): Promise<ConfirmedTx> {
    return this.#sender.send(call);
  }

  #result(tx: ConfirmedTx): TxResult {
    return { txHash: tx.txHash, gasUsed: tx.gasUsed };
  }

  /** Opens a channel between us (participant1) and `partner`; see {@link HubClient.openChannel}. */
  async openChannel(
    partner: string,
    token: string,
    settleTimeoutSeconds: number,
  ): Promise<OpenChannelResult> {
    const tx = await this.#send(
      openChannelCall(this.deployment, this.#sender.address, partner, token, settleTimeoutSeconds),
    );
    const opened = tx.events.find((e) => e.type === "ChannelOpened");
    if (opened?.type !== "ChannelOpened") throw new Error("ChannelOpened event not found in the receipt");
    return { channelId: opened.channelId, ...this.#result(tx) };
  }

  /**
   * Raises our total deposit in `channelId` to `totalDeposit`; see {@link HubClient.setTotalDeposit}: the
   * deposit is simulated first (a hub refusal is thrown before anything is sent), the wallet must hold the
   * increase, an ERC-20 channel's Bridge is approved for exactly the increase when the allowance is short,
   * and ETH is sent as value.
   * @throws QrwpError INVALID_ARGUMENT (field "totalDeposit": not a uint256) | INSUFFICIENT_FUNDS (field
   *   "totalDeposit"; nothing sent) | CHAIN_ERROR
   * @throws HubCallError e.g. `ChannelHubDepositNotIncreasing`, `ChannelHubInvalidChannelState`
   */
  setTotalDeposit(channelId: bigint, totalDeposit: bigint): Promise<DepositResult> {
    const run = this.#depositQueue.then(() => this.#deposit(channelId, totalDeposit));
    this.#depositQueue = run.catch(() => undefined);
    return run;
  }

  async #deposit(channelId: bigint, totalDeposit: bigint): Promise<DepositResult> {
    if (totalDeposit < 0n || totalDeposit > ethers.MaxUint256)
      throw new QrwpError("INVALID_ARGUMENT", "totalDeposit must be a uint256", {
        field: "totalDeposit",
        totalDeposit,
      });
    const me = this.#sender.address;
    const channel = await this.getChannel(channelId);
    const current = (await this.getParticipant(channelId, me)).totalDeposit;
    const increase = totalDeposit > current ? totalDeposit - current : 0n;
    const isEth = channel.token === ethers.ZeroAddress;
    const value = isEth ? increase : 0n;
    const simulated = await this.#pool.run<DepositSimulation>("setTotalDeposit", async (e) => {
      try {
        await this.#reader(e).hub.setTotalDeposit.staticCall(channelId, me, totalDeposit, {
          value,
          from: me,
        });
        return { outcome: "ok" };
      } catch (error) {
        const answer = classifyDepositSimulation(error);
        if (answer === null) throw error; // no answer from this URL: ask the next one
        return answer;
      }
    });
    if (simulated.outcome === "reverted") {
      const decoded = decodeHubError(simulated.error);
      throw new HubCallError(
        "ChannelHub.setTotalDeposit",
        decoded?.name ?? null,
        decoded ? [...decoded.args] : [],
        simulated.error,
      );
    }
    if (increase > 0n) {
      const balanceWei = await this.tokenBalance(channel.token, me);
      if (balanceWei < increase || simulated.outcome === "insufficientBalance")
        throw new QrwpError(
          "INSUFFICIENT_FUNDS",
          `the wallet holds ${balanceWei} base units of the token; the deposit needs ${increase} more`,
          { field: "totalDeposit", token: channel.token, balance: balanceWei, needed: increase },
        );
    }
    let approve: TxResult | null = null;
    if (!isEth && increase > 0n && simulated.outcome === "insufficientAllowance") {
      const allowance = await this.#pool.run("allowance", (e) =>
        IERC20__factory.connect(channel.token, e.provider).allowance(me, this.deployment.bridge),
      );
      if (allowance < increase)
        approve = this.#result(
          await this.#send(approveCall(channel.token, this.deployment.bridge, increase)),
        );
    }
    const tx = await this.#send(setTotalDepositCall(this.deployment, channelId, me, totalDeposit, value));
    return { ...this.#result(tx), approve };
  }

  /**
   * Withdraws from an opened channel without closing it; see {@link HubClient.setTotalWithdraw}.
   * @throws QrwpError INVALID_ARGUMENT naming the field ("channelId", "participant", "totalWithdraw",
   *   "expiryTimestamp", "participantSignature", "partnerSignature"); nothing sent
   * @throws HubCallError e.g. `ChannelHubWithdrawExpired`, `ChannelHubWithdrawNotIncreasing`
   */
  async setTotalWithdraw(
    channelId: bigint,
    participant: string,
    totalWithdraw: bigint,
    expiryTimestamp: bigint,
    participantSignature: string,
    partnerSignature: string,
  ): Promise<WithdrawResult> {
    assertUint256(channelId, "channelId");
    const who = normalizeAddress(participant, "participant");
    assertUint256(totalWithdraw, "totalWithdraw");
    assertUint256(expiryTimestamp, "expiryTimestamp");
    assertSignature(participantSignature, "participantSignature");
    assertSignature(partnerSignature, "partnerSignature");
    const tx = await this.#send(
      setTotalWithdrawCall(this.deployment, {
        channelId,
        participant: who,
        totalWithdraw,
        expiryTimestamp,
        participantSignature,
        partnerSignature,
      }),
    );
    const withdrawn = tx.events.find((e) => e.type === "ChannelWithdraw");
    if (withdrawn?.type !== "ChannelWithdraw")
      throw new Error("ChannelWithdraw event not found in the receipt");
    return {
      totalWithdraw: withdrawn.totalWithdraw,
      deferredAmount: deferredOf(tx, this.deployment.hub),
      ...this.#result(tx),
    };
  }

  /** Settles an opened channel at once with amounts both signed; see {@link HubClient.cooperativeSettle}. */
  async cooperativeSettle(
    channelId: bigint,
    participant1: string,
    participant1Amount: bigint,
    participant2: string,
    participant2Amount: bigint,
    participant1Signature: string,
    participant2Signature: string,
  ): Promise<TxResult> {
    return this.#result(
      await this.#send(
        cooperativeSettleCall(this.deployment, {
          channelId,
          participant1,
          participant1Amount,
          participant2,
          participant2Amount,
          participant1Signature,
          participant2Signature,
        }),
      ),
    );
  }

  /** Closes `channelId` with the partner's latest proof (or none); see {@link HubClient.closeChannel}. */
  async closeChannel(
    channelId: bigint,
    nonClosingParticipant: string,
    proof: SignedBalanceProof | null,
  ): Promise<TxResult> {
    return this.#result(
      await this.#send(closeChannelCall(this.deployment, channelId, nonClosingParticipant, proof)),
    );
  }

  /**
   * The contest, built by the same `contestCall` the watchtower sends; see
   * {@link HubClient.updateNonClosingBalanceProof}.
   */
  async updateNonClosingBalanceProof(
    channelId: bigint,
    closingParticipant: string,
    nonClosingParticipant: string,
    proof: SignedBalanceProof,
    nonClosingSignature: string,
  ): Promise<TxResult> {
    return this.#result(
      await this.#send(
        contestCall(this.deployment, {
          channelId,
          closingParticipant,
          nonClosingParticipant,
          nonce: proof.nonce,
          balanceHash: proof.balanceHash,
          closingSignature: proof.signature,
          nonClosingSignature,
        }),
      ),
    );
  }

  /** Settles a closed channel after its settle timeout; see {@link HubClient.settleChannel}. */
  async settleChannel(channelId: bigint, p1: SettleBalanceData, p2: SettleBalanceData): Promise<TxResult> {
    return this.#result(await this.#send(settleChannelCall(this.deployment, channelId, p1, p2)));
  }

  /** Sends our deferred payout of `token` to `to`; see {@link HubClient.claimDeferredPayout}. */
  async claimDeferredPayout(token: string, to: string): Promise<TxResult> {
    return this.#result(await this.#send(claimDeferredPayoutCall(this.deployment, token, to)));
  }

  /** Pays out `sender`'s pending locks kept at settlement; see {@link HubClient.unlock}. */
  async unlock(
    channelId: bigint,
    sender: string,
    receiver: string,
    locks: readonly PendingLock[],
  ): Promise<UnlockResult> {
    const tx = await this.#send(unlockCall(this.deployment, channelId, sender, receiver, locks));
    const unlocked = tx.events.find((e) => e.type === "ChannelUnlocked");
    if (unlocked?.type !== "ChannelUnlocked")
      throw new Error("ChannelUnlocked event not found in the receipt");
    return {
      unlockedAmount: unlocked.unlockedAmount,
      returnedAmount: unlocked.returnedAmount,
      ...this.#result(tx),
    };
  }

  /** Registers an HTLC secret (32 bytes, 0x-hex); see {@link HubClient.registerSecret}. */
  async registerSecret(secret: string): Promise<RegisterSecretResult> {
    const secretHash = ethers.sha256(secret);
    const tx = await this.#send(registerSecretCall(this.deployment, secret));
    const registered = tx.events.some((e) => e.type === "SecretRevealed" && e.secretHash === secretHash);
    return { secretHash, registered, ...this.#result(tx) };
  }

  /** Registers several HTLC secrets in one transaction; see {@link HubClient.registerSecretBatch}. */
  async registerSecretBatch(secrets: readonly string[]): Promise<RegisterSecretBatchResult> {
    const tx = await this.#send(registerSecretBatchCall(this.deployment, secrets));
    const registeredSecretHashes = tx.events.flatMap((e) =>
      e.type === "SecretRevealed" ? [e.secretHash] : [],
    );
    return {
      allRegistered: registeredSecretHashes.length === secrets.length,
      registeredSecretHashes,
      ...this.#result(tx),
    };
  }

  /** block.timestamp (seconds) of the secret's registration, 0n if never. @throws QrwpError CHAIN_ERROR */
  secretRevealedAt(secretHash: string): Promise<bigint> {
    return this.#read("SecretRegistry.getSecretRevealTimestamp", (hub) => hub.secretRevealedAt(secretHash));
  }

  /** `participant`'s locks kept by the hub at settlement. @throws QrwpError CHAIN_ERROR */
  getLockedBalance(channelId: bigint, participant: string): Promise<LockedBalanceView> {
    return this.#read("getLockedBalance", (hub) => hub.getLockedBalance(channelId, participant));
  }

  /** Channel `channelId` at the head (state "none" if it does not exist). @throws QrwpError CHAIN_ERROR */
  getChannel(channelId: bigint): Promise<ChannelView> {
    return this.#read("getChannel", (hub) => hub.getChannel(channelId));
  }

  /** `participant`'s deposit, withdraw and stored balance proof. @throws QrwpError CHAIN_ERROR */
  getParticipant(channelId: bigint, participant: string): Promise<ParticipantView> {
    return this.#read("getParticipant", (hub) => hub.getParticipant(channelId, participant));
  }

  /** The unsettled channel id of the pair (either order) for `token`, or 0n. @throws QrwpError CHAIN_ERROR */
  openChannelIdOf(a: string, b: string, token: string): Promise<bigint> {
    return this.#read("openChannelIdOf", (hub) => hub.openChannelIdOf(a, b, token));
  }

  /**
   * Balance of `owner` in `token` base units (wei for ethers.ZeroAddress).
   * @throws the provider's BAD_DATA / CALL_EXCEPTION error when `token` is no ERC-20 (not retried);
   *   QrwpError CHAIN_ERROR
   */
  tokenBalance(token: string, owner: string): Promise<bigint> {
    return this.#pool.run("tokenBalance", (e) => this.#reader(e).tokenBalance(token, owner), {
      isFinal: notAToken,
    });
  }

  /** Timestamp of block `blockNumber`, unix seconds. @throws QrwpError CHAIN_ERROR (also: no URL has it) */
  blockTimestamp(blockNumber: number): Promise<number> {
    return this.#read("blockTimestamp", (hub) => hub.blockTimestamp(blockNumber));
  }

  /** Timestamp of the latest block, unix seconds. @throws QrwpError CHAIN_ERROR */
  latestTimestamp(): Promise<number> {
    return this.#read("latestTimestamp", (hub) => hub.latestTimestamp());
  }

  /** Decodes a revert from `error` with the hub, bridge and ERC-20 errors. */
  decodeError(error: unknown): ethers.ErrorDescription | null {
    return decodeHubError(error);
  }
}

/** The hub's `PayoutDeferred` amounts in a receipt (a payout it could not transfer), summed, base units. */
function deferredOf(tx: ConfirmedTx, hub: string): bigint {
  let sum = 0n;
  for (const log of tx.logs) {
    const l = log as { address?: unknown; topics?: unknown; data?: unknown };
    if (typeof l.address !== "string" || l.address.toLowerCase() !== hub.toLowerCase()) continue;
    if (!Array.isArray(l.topics) || typeof l.data !== "string") continue;
    const parsed = HUB_INTERFACE.parseLog({ topics: l.topics as string[], data: l.data });
    if (parsed?.name === "PayoutDeferred") sum += parsed.args[2] as bigint;
  }
  return sum;
}
