/**
 * HubClient: typed access to one deployment's ChannelHub and SecretRegistry for one signer.
 *
 * Units: amounts are token base units (wei for ETH, token == ethers.ZeroAddress); times are seconds of
 * `block.timestamp`. Every transaction method returns after one confirmation with `{ txHash, gasUsed }`.
 * Transactions of one client are serialised through a promise queue and sent through an ethers
 * `NonceManager`, so concurrent callers never clash on nonces. Contract reverts are thrown as
 * {@link HubCallError} whose message names the decoded custom error (e.g. `ChannelHubStaleNonce(...)`).
 */
import { ethers } from "ethers";
import type { Bridge, ChannelHub, SecretRegistry } from "../typechain-types/index.js";
import {
  Bridge__factory,
  ChannelHub__factory,
  IERC20__factory,
  SecretRegistry__factory,
} from "../typechain-types/index.js";
import { QrwpError, assertUint256, isQrwpError, normalizeAddress } from "../protocol/index.js";
import type { Deployment } from "./deployment.js";
import {
  HubCallError,
  assertSignature,
  classifyDepositSimulation,
  decodeHubError,
  type DepositSimulation,
  packLocks,
  type PendingLock,
} from "./hub-errors.js";

export { HubCallError, decodeHubError, packLocks, type PendingLock };

/** Channel state as the ChannelHub reports it. */
export type ChannelState = "none" | "opened" | "closed" | "settled";

const CHANNEL_STATES: readonly ChannelState[] = ["none", "opened", "closed", "settled"];

/** What every transaction method returns. */
export interface TxResult {
  /** Hash of the mined transaction. */
  txHash: string;
  /** Gas used by the transaction (receipt.gasUsed). */
  gasUsed: bigint;
}

/** Result of {@link HubClient.openChannel}. */
export interface OpenChannelResult extends TxResult {
  /** The new channel's id (from the ChannelOpened event). */
  channelId: bigint;
}

/** Result of {@link HubClient.setTotalDeposit}. */
export interface DepositResult extends TxResult {
  /** The ERC-20 approve transaction sent first, or null when none was needed (ETH or enough allowance). */
  approve: TxResult | null;
}

/** Result of {@link HubClient.setTotalWithdraw} (from the receipt's `ChannelWithdraw` and `PayoutDeferred`). */
export interface WithdrawResult extends TxResult {
  /** The participant's total withdraw now stored by the hub, token base units. */
  totalWithdraw: bigint;
  /**
   * Part of the increase the hub could not pay (the transfer failed) and kept as a deferred payout for
   * `claimDeferredPayout`, token base units; 0n when the increase was paid out.
   */
  deferredAmount: bigint;
}

/** A channel as {@link HubClient.getChannel} returns it. */
export interface ChannelView {
  state: ChannelState;
  participant1: string;
  participant2: string;
  /** ERC-20 address, or ethers.ZeroAddress for ETH. */
  token: string;
  settleTimeoutSeconds: number;
  /** block.timestamp of the close, 0 while not closed. */
  closedAtSeconds: number;
  /** ethers.ZeroAddress while not closed. */
  closingParticipant: string;
}

/** A participant as {@link HubClient.getParticipant} returns it. */
export interface ParticipantView {
  /** Total deposit, token base units. */
  totalDeposit: bigint;
  /** Total withdraw (monotonic; already paid out of the channel), token base units. */
  totalWithdraw: bigint;
  /** Nonce of the balance proof stored for this participant (0 = none). */
  nonce: bigint;
  /** Balance hash stored for this participant (bytes32 hex, zero hash = none). */
  balanceHash: string;
}

/** A signed balance proof (EIP-712 `BalanceProof(uint256 channelId,uint256 nonce,bytes32 balanceHash)`). */
export interface SignedBalanceProof {
  nonce: bigint;
  /** keccak256(abi.encode(uint256 transferredAmount, uint256 lockedAmount, bytes32 locksRoot)). */
  balanceHash: string;
  /** 65-byte r || s || v signature by the sender, hex. */
  signature: string;
}

/** Balance data revealed at settlement: what `participant` transferred to the partner. */
export interface SettleBalanceData {
  participant: string;
  /** Token base units. */
  transferredAmount: bigint;
  /** Token base units. */
  lockedAmount: bigint;
  /** bytes32 hex; ethers.ZeroHash when there are no pending locks. */
  locksRoot: string;
}

/** Pending locks of a participant kept by the hub at settlement ({@link HubClient.getLockedBalance}). */
export interface LockedBalanceView {
  /** Token base units still held for an unlock; 0n when nothing is kept (or already unlocked). */
  lockedAmount: bigint;
  /** keccak256 of the packed locks (bytes32 hex); ethers.ZeroHash for none. */
  locksRoot: string;
}

/** Result of {@link HubClient.registerSecret}. */
export interface RegisterSecretResult extends TxResult {
  /** sha256(secret), bytes32 hex. */
  secretHash: string;
  /** True if this transaction registered it (false: zero secret, or registered before). */
  registered: boolean;
}

/** Result of {@link HubClient.registerSecretBatch}. */
export interface RegisterSecretBatchResult extends TxResult {
  /** True if every secret was newly registered by this transaction. */
  allRegistered: boolean;
  /** Hashes (sha256, bytes32 hex) of the secrets this transaction registered, in order. */
  registeredSecretHashes: string[];
}

/** Result of {@link HubClient.unlock} (from the ChannelUnlocked event). */
export interface UnlockResult extends TxResult {
  /** Paid to the receiver (locks whose secret was registered before expiration), token base units. */
  unlockedAmount: bigint;
  /** Paid back to the sender, token base units. */
  returnedAmount: bigint;
}

/** Typed client of one deployment's ChannelHub, sending as one signer. */
export class HubClient {
  /** The deployment this client talks to. */
  readonly deployment: Deployment;
  /** The ChannelHub contract bound to the nonce-managed signer. */
  readonly hub: ChannelHub;
  /** The Bridge contract bound to the nonce-managed signer. */
  readonly bridge: Bridge;
  /** The SecretRegistry contract bound to the nonce-managed signer. */
  readonly secretRegistry: SecretRegistry;
  readonly #signer: ethers.NonceManager;
  readonly #provider: ethers.Provider;
  #queue: Promise<unknown> = Promise.resolve();

  /**
   * @param signer A signer connected to a provider (a Wallet, a JsonRpcSigner, a Hardhat signer, or a
   *   NonceManager, which is then used as is).
   * @param deployment The deployment's addresses.
   */
  constructor(signer: ethers.Signer, deployment: Deployment) {
    if (signer.provider === null) throw new Error("HubClient: the signer must be connected to a provider");
    this.deployment = deployment;
    this.#provider = signer.provider;
    this.#signer = signer instanceof ethers.NonceManager ? signer : new ethers.NonceManager(signer);
    this.hub = ChannelHub__factory.connect(deployment.hub, this.#signer);
    this.bridge = Bridge__factory.connect(deployment.bridge, this.#signer);
    this.secretRegistry = SecretRegistry__factory.connect(deployment.secretRegistry, this.#signer);
  }

  /** The signer's address (participant in the calls that act "as the signer"). */
  async address(): Promise<string> {
    return this.#signer.getAddress();
  }

  /**
   * Opens a channel between the signer (participant1) and `partner`.
   * @param partner The other participant's address.
   * @param token ERC-20 address, or ethers.ZeroAddress for ETH.
   * @param settleTimeoutSeconds Contest window after a close, seconds (10 s to 365 days).
   * @throws HubCallError e.g. `ChannelHubChannelAlreadyOpen`, `ChannelHubInvalidSettleTimeout`.
   */
  async openChannel(
    partner: string,
    token: string,
    settleTimeoutSeconds: number,
  ): Promise<OpenChannelResult> {
    return this.#enqueue("openChannel", async () => {
      const me = await this.address();
      const receipt = await this.#send(() => this.hub.openChannel(me, partner, token, settleTimeoutSeconds));
      const event = this.#events(receipt, this.hub, "ChannelOpened")[0];
      if (event === undefined) throw new Error("ChannelOpened event not found in the receipt");
      return { channelId: event.args[0] as bigint, ...this.#result(receipt) };
    });
  }

  /**
   * Raises the signer's total deposit in `channelId` to `totalDeposit` (monotonic; a retry with the same
   * total reverts with `ChannelHubDepositNotIncreasing` and moves nothing). Nothing is approved for a deposit
   * that would fail: the call is first simulated (`eth_call` of `setTotalDeposit`); a revert other than the
   * ERC-20's missing allowance is thrown before any transaction. Then the wallet's balance must cover the
   * increase. For an ERC-20 channel whose simulation only lacked the allowance, the Bridge is approved for
   * exactly the increase (never more); for ETH, the increase is sent as value. See docs/DECISIONS.md.
   * @param totalDeposit New total deposit, token base units (uint256).
   * @returns the deposit transaction, and the approve sent first (null when none was needed).
   * @throws QrwpError INVALID_ARGUMENT (field "totalDeposit": not a uint256) | INSUFFICIENT_FUNDS (field
   *   "totalDeposit": the wallet holds less than the increase; nothing sent)
   * @throws HubCallError e.g. `ChannelHubDepositNotIncreasing`, `ChannelHubInvalidChannelState`,
   *   `ChannelHubDepositOverflow` (from the simulation: nothing sent)
   */
  async setTotalDeposit(channelId: bigint, totalDeposit: bigint): Promise<DepositResult> {
    return this.#enqueue("setTotalDeposit", async () => {
      if (totalDeposit < 0n || totalDeposit > ethers.MaxUint256)
        throw new QrwpError("INVALID_ARGUMENT", "totalDeposit must be a uint256", {
          field: "totalDeposit",
          totalDeposit,
        });
      const me = await this.address();
      const channel = await this.hub.getChannel(channelId);
      const current = (await this.hub.getParticipant(channelId, me)).totalDeposit;
      const increase = totalDeposit > current ? totalDeposit - current : 0n;
      const isEth = channel.token === ethers.ZeroAddress;
      const value = isEth ? increase : 0n;
      const simulated = await this.#simulateDeposit(channelId, me, totalDeposit, value);
      if (simulated.outcome === "reverted") throw this.#wrap("setTotalDeposit", simulated.error);
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
        const token = IERC20__factory.connect(channel.token, this.#signer);
        const allowance = await token.allowance(me, this.deployment.bridge);
        if (allowance < increase) {
          approve = this.#result(await this.#send(() => token.approve(this.deployment.bridge, increase)));
        }
      }
      const receipt = await this.#send(() =>
        this.hub.setTotalDeposit(channelId, me, totalDeposit, { value }),
      );
      return { ...this.#result(receipt), approve };
    });
  }

  /**
   * `eth_call` of `setTotalDeposit` as the signer: "ok", "insufficientAllowance" (the ERC-20's
   * `ERC20InsufficientAllowance`, or a legacy "allowance" reason string: the deposit is otherwise valid),
   * "insufficientBalance" (`ERC20InsufficientBalance` or the node's "insufficient funds"), or "reverted"
   * with the error (anything else: a hub, bridge or token refusal).
   */
  async #simulateDeposit(
    channelId: bigint,
    me: string,
    totalDeposit: bigint,
    value: bigint,
  ): Promise<DepositSimulation> {
    try {
      await this.hub.setTotalDeposit.staticCall(channelId, me, totalDeposit, { value, from: me });
      return { outcome: "ok" };
    } catch (error) {
      return classifyDepositSimulation(error) ?? { outcome: "reverted", error };
    }
  }

  /**
   * Withdraws from an opened channel without closing it: raises `participant`'s total withdraw to
   * `totalWithdraw` and the hub pays the increase to `participant` (anyone may send it; a failed transfer is
   * kept as a deferred payout). Both participants signed the same EIP-712
   * `Withdraw(uint256 channelId,address participant,uint256 totalWithdraw,uint256 expiryTimestamp)`
   * (protocol/withdraw.ts `signWithdraw`). The total is monotonic: a retry of a mined withdraw reverts with
   * `ChannelHubWithdrawNotIncreasing` and moves nothing. A refused withdraw fails at gas estimation, so
   * nothing is sent.
   * @param participant The participant who withdraws and is paid (0x address).
   * @param totalWithdraw New total withdraw, token base units (uint256, not the increase).
   * @param expiryTimestamp Last block.timestamp (seconds) at which the hub accepts it (uint256).
   * @param participantSignature `participant`'s 65-byte signature, 0x-hex `r || s || v`.
   * @param partnerSignature The partner's 65-byte signature of the same message, 0x-hex `r || s || v`.
   * @throws QrwpError INVALID_ARGUMENT naming the field ("participant", "totalWithdraw", "expiryTimestamp",
   *   "participantSignature", "partnerSignature") on a malformed argument; nothing sent
   * @throws HubCallError e.g. `ChannelHubWithdrawExpired`, `ChannelHubWithdrawNotIncreasing`,
   *   `ChannelHubWithdrawExceedsDeposits`, `ChannelHubInvalidSignature`, `ChannelHubInvalidChannelState`
   *   (closed: a withdraw racing a close is refused), `ChannelHubNotParticipant`.
   */
  async setTotalWithdraw(
    channelId: bigint,
    participant: string,
    totalWithdraw: bigint,
    expiryTimestamp: bigint,
    participantSignature: string,
    partnerSignature: string,
  ): Promise<WithdrawResult> {
    return this.#enqueue("setTotalWithdraw", async () => {
      assertUint256(channelId, "channelId");
      const who = normalizeAddress(participant, "participant");
      assertUint256(totalWithdraw, "totalWithdraw");
      assertUint256(expiryTimestamp, "expiryTimestamp");
      assertSignature(participantSignature, "participantSignature");
      assertSignature(partnerSignature, "partnerSignature");
      const receipt = await this.#send(() =>
        this.hub.setTotalWithdraw(
          channelId,
          who,
          totalWithdraw,
          expiryTimestamp,
          participantSignature,
          partnerSignature,
        ),
      );
      const event = this.#events(receipt, this.hub, "ChannelWithdraw")[0];
      if (event === undefined) throw new Error("ChannelWithdraw event not found in the receipt");
      const deferredAmount = this.#events(receipt, this.hub, "PayoutDeferred").reduce(
        (sum, e) => sum + (e.args[2] as bigint),
        0n,
      );
      return { totalWithdraw: event.args[2] as bigint, deferredAmount, ...this.#result(receipt) };
    });
  }

  /**
   * Settles an opened channel at once with amounts both participants signed (EIP-712
   * `CooperativeSettle(uint256 channelId,address participant1,uint256 participant1Amount,address participant2,uint256 participant2Amount)`).
   * Amounts in token base units must sum to what the channel holds: both total deposits minus both total
   * withdraws.
   * @throws HubCallError e.g. `ChannelHubInvalidSettleAmounts`, `ChannelHubInvalidSignature`.
   */
  async cooperativeSettle(
    channelId: bigint,
    participant1: string,
    participant1Amount: bigint,
    participant2: string,
    participant2Amount: bigint,
    participant1Signature: string,
    participant2Signature: string,
  ): Promise<TxResult> {
    return this.#enqueue("cooperativeSettle", async () =>
      this.#result(
        await this.#send(() =>
          this.hub.cooperativeSettle(
            channelId,
            participant1,
            participant1Amount,
            participant2,
            participant2Amount,
            participant1Signature,
            participant2Signature,
          ),
        ),
      ),
    );
  }

  /**
   * Closes `channelId` as the signer, submitting the partner's latest balance proof (signed by the
   * partner), or `null` when the partner transferred nothing. Starts the contest window.
   * @throws HubCallError e.g. `ChannelHubInvalidChannelState` (double close), `ChannelHubInvalidSignature`.
   */
  async closeChannel(
    channelId: bigint,
    nonClosingParticipant: string,
    proof: SignedBalanceProof | null,
  ): Promise<TxResult> {
    return this.#enqueue("closeChannel", async () => {
      const nonce = proof?.nonce ?? 0n;
      const balanceHash = proof?.balanceHash ?? ethers.ZeroHash;
      const signature = proof?.signature ?? "0x";
      return this.#result(
        await this.#send(() =>
          this.hub.closeChannel(channelId, nonClosingParticipant, nonce, balanceHash, signature),
        ),
      );
    });
  }

  /**
   * Contest (anyone may send it, e.g. a watchtower): replaces the closer's stored balance proof with
   * `proof` (signed by the closer) given the non-closer's EIP-712
   * `BalanceProofUpdate(uint256 channelId,uint256 nonce,bytes32 balanceHash,bytes closingSignature)`
   * counter-signature. Only before closedAt + settleTimeout (inclusive) and with a strictly higher nonce.
   * @throws HubCallError e.g. `ChannelHubStaleNonce`, `ChannelHubContestWindowExpired`.
   */
  async updateNonClosingBalanceProof(
    channelId: bigint,
    closingParticipant: string,
    nonClosingParticipant: string,
    proof: SignedBalanceProof,
    nonClosingSignature: string,
  ): Promise<TxResult> {
    return this.#enqueue("updateNonClosingBalanceProof", async () =>
      this.#result(
        await this.#send(() =>
          this.hub.updateNonClosingBalanceProof(
            channelId,
            closingParticipant,
            nonClosingParticipant,
            proof.nonce,
            proof.balanceHash,
            proof.signature,
            nonClosingSignature,
          ),
        ),
      ),
    );
  }

  /**
   * Settles a closed channel after the contest window (block.timestamp > closedAt + settleTimeout).
   * Each side's data is what THAT participant transferred to the other and must hash to the stored
   * balance hash (all zero when none was stored). Either order of participants.
   * @throws HubCallError e.g. `ChannelHubSettleTimeoutNotExpired`, `ChannelHubInvalidBalanceData`.
   */
  async settleChannel(channelId: bigint, p1: SettleBalanceData, p2: SettleBalanceData): Promise<TxResult> {
    return this.#enqueue("settleChannel", async () =>
      this.#result(
        await this.#send(() =>
          this.hub.settleChannel(
            channelId,
            p1.participant,
            p1.transferredAmount,
            p1.lockedAmount,
            p1.locksRoot,
            p2.participant,
            p2.transferredAmount,
            p2.lockedAmount,
            p2.locksRoot,
          ),
        ),
      ),
    );
  }

  /**
   * Sends the signer's deferred payout of `token` (kept by the hub after a failed payout) to `to`.
   * @throws HubCallError `ChannelHubNoDeferredPayout` when there is none.
   */
  async claimDeferredPayout(token: string, to: string): Promise<TxResult> {
    return this.#enqueue("claimDeferredPayout", async () =>
      this.#result(await this.#send(() => this.hub.claimDeferredPayout(token, to))),
    );
  }

  /**
   * Pays out `sender`'s pending locks kept when `channelId` settled (anyone may send it, once):
   * the receiver gets the locks whose secret was registered in the SecretRegistry strictly before their
   * expiration (capped at the kept locked amount), the sender the rest. `locks` are all of the sender's
   * pending locks in locksroot order (at most 160); `keccak256(packed locks)` must equal the kept locksroot.
   * @param sender The participant who sent the locked transfers.
   * @param receiver The other participant.
   * @throws HubCallError e.g. `ChannelHubNothingToUnlock`, `ChannelHubInvalidLocks`, `ChannelHubNotParticipant`.
   */
  async unlock(
    channelId: bigint,
    sender: string,
    receiver: string,
    locks: readonly PendingLock[],
  ): Promise<UnlockResult> {
    return this.#enqueue("unlock", async () => {
      const receipt = await this.#send(() => this.hub.unlock(channelId, sender, receiver, packLocks(locks)));
      const event = this.#events(receipt, this.hub, "ChannelUnlocked")[0];
      if (event === undefined) throw new Error("ChannelUnlocked event not found in the receipt");
      return {
        unlockedAmount: event.args[4] as bigint,
        returnedAmount: event.args[5] as bigint,
        ...this.#result(receipt),
      };
    });
  }

  /**
   * Registers an HTLC secret in the SecretRegistry (stores sha256(secret) -> block.timestamp). Registering
   * a zero or already registered secret is a successful no-op with `registered: false`.
   * @param secret The 32-byte secret, 0x-hex.
   */
  async registerSecret(secret: string): Promise<RegisterSecretResult> {
    return this.#enqueue("SecretRegistry.registerSecret", async () => {
      const secretHash = ethers.sha256(secret);
      const receipt = await this.#send(() => this.secretRegistry.registerSecret(secret));
      const registered = this.#events(receipt, this.secretRegistry, "SecretRevealed").some(
        (e) => e.args[0] === secretHash,
      );
      return { secretHash, registered, ...this.#result(receipt) };
    });
  }

  /**
   * Registers several HTLC secrets in one transaction; zero or already registered ones are skipped.
   * @param secrets 32-byte secrets, 0x-hex.
   */
  async registerSecretBatch(secrets: readonly string[]): Promise<RegisterSecretBatchResult> {
    return this.#enqueue("SecretRegistry.registerSecretBatch", async () => {
      const receipt = await this.#send(() => this.secretRegistry.registerSecretBatch([...secrets]));
      const registeredSecretHashes = this.#events(receipt, this.secretRegistry, "SecretRevealed").map(
        (e) => e.args[0] as string,
      );
      return {
        allRegistered: registeredSecretHashes.length === secrets.length,
        registeredSecretHashes,
        ...this.#result(receipt),
      };
    });
  }

  /**
   * When the secret of `secretHash` was registered in the SecretRegistry.
   * @param secretHash sha256(secret), bytes32 hex.
   * @returns block.timestamp of the registration (seconds), 0n if never registered.
   */
  async secretRevealedAt(secretHash: string): Promise<bigint> {
    return this.secretRegistry
      .getSecretRevealTimestamp(secretHash)
      .catch(this.#rethrow("SecretRegistry.getSecretRevealTimestamp"));
  }

  /** `participant`'s pending locks kept by the hub when `channelId` settled (0n / zero hash if none). */
  async getLockedBalance(channelId: bigint, participant: string): Promise<LockedBalanceView> {
    const l = await this.hub
      .getLockedBalance(channelId, participant)
      .catch(this.#rethrow("getLockedBalance"));
    return { lockedAmount: l.lockedAmount, locksRoot: l.locksRoot };
  }

  /** Reads channel `channelId` (state "none" if it does not exist). */
  async getChannel(channelId: bigint): Promise<ChannelView> {
    const c = await this.hub.getChannel(channelId).catch(this.#rethrow("getChannel"));
    return {
      state: CHANNEL_STATES[Number(c.state)] ?? "none",
      participant1: c.participant1,
      participant2: c.participant2,
      token: c.token,
      settleTimeoutSeconds: Number(c.settleTimeoutSeconds),
      closedAtSeconds: Number(c.closedAt),
      closingParticipant: c.closingParticipant,
    };
  }

  /** Reads `participant`'s deposit, total withdraw and stored balance proof in `channelId`. */
  async getParticipant(channelId: bigint, participant: string): Promise<ParticipantView> {
    const p = await this.hub.getParticipant(channelId, participant).catch(this.#rethrow("getParticipant"));
    return {
      totalDeposit: p.totalDeposit,
      totalWithdraw: p.totalWithdraw,
      nonce: p.nonce,
      balanceHash: p.balanceHash,
    };
  }

  /** The unsettled channel id of the pair (either order) for `token`, or 0n. */
  async openChannelIdOf(a: string, b: string, token: string): Promise<bigint> {
    return this.hub.openChannelIdOf(a, b, token).catch(this.#rethrow("openChannelIdOf"));
  }

  /** Balance of `owner` in `token` base units (wei when `token` is ethers.ZeroAddress). */
  async tokenBalance(token: string, owner: string): Promise<bigint> {
    if (token === ethers.ZeroAddress) return this.#provider.getBalance(owner);
    return IERC20__factory.connect(token, this.#provider).balanceOf(owner);
  }

  /** Timestamp of the latest block, seconds. */
  /** The timestamp (unix seconds) of block `blockNumber`. @throws Error when the node does not have it. */
  async blockTimestamp(blockNumber: number): Promise<number> {
    const block = await this.#provider.getBlock(blockNumber);
    if (block === null) throw new Error(`blockTimestamp: no block ${blockNumber}`);
    return block.timestamp;
  }

  async latestTimestamp(): Promise<number> {
    const block = await this.#provider.getBlock("latest");
    if (block === null) throw new Error("latestTimestamp: no latest block");
    return block.timestamp;
  }

  /** Decodes a revert from `error` (any ethers/Hardhat error shape) with the hub, bridge and ERC-20 errors. */
  decodeError(error: unknown): ethers.ErrorDescription | null {
    return decodeHubError(error);
  }

  #enqueue<T>(action: string, fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn).catch((error: unknown) => {
      throw this.#wrap(action, error);
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #rethrow(action: string): (error: unknown) => never {
    return (error: unknown) => {
      throw this.#wrap(action, error);
    };
  }

  async #send(fn: () => Promise<ethers.ContractTransactionResponse>): Promise<ethers.TransactionReceipt> {
    let response: ethers.ContractTransactionResponse;
    try {
      response = await fn();
    } catch (error) {
      // NonceManager increments before populating; a tx that was never sent must not leave a nonce gap.
      this.#signer.reset();
      throw error;
    }
    const receipt = await response.wait(1);
    if (receipt === null) throw new Error(`transaction ${response.hash} was not mined`);
    return receipt;
  }

  /** The logs of `contract` named `name` in `receipt`, decoded, in log order. */
  #events(
    receipt: ethers.TransactionReceipt,
    contract: { readonly interface: ethers.Interface; readonly target: string | ethers.Addressable },
    name: string,
  ): ethers.LogDescription[] {
    const address = String(contract.target).toLowerCase();
    const out: ethers.LogDescription[] = [];
    for (const log of receipt.logs) {
      if (log.address.toLowerCase() !== address) continue;
      const parsed = contract.interface.parseLog(log);
      if (parsed?.name === name) out.push(parsed);
    }
    return out;
  }

  #result(receipt: ethers.TransactionReceipt): TxResult {
    return { txHash: receipt.hash, gasUsed: receipt.gasUsed };
  }

  #wrap(action: string, error: unknown): Error {
    if (error instanceof HubCallError || isQrwpError(error)) return error;
    const decoded = this.decodeError(error);
    return new HubCallError(
      action.includes(".") ? action : `ChannelHub.${action}`,
      decoded?.name ?? null,
      decoded ? [...decoded.args] : [],
      error,
    );
  }
}
