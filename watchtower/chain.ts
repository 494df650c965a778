/**
 * The watchtower's view of the chain: the reads its contest loop needs (the channel, the closer's stored
 * nonce, block times, the tower's balance, receipts) and the contest transaction, over the shared
 * `chain/` {@link RpcPool} (several URLs, per-call timeout, failover, chain id checked per URL) and
 * {@link TxSender} (simulated, signed once with an explicit account nonce, the same bytes broadcast on
 * failover, replaced at the same nonce with fees +25 %). A revert of the hub is not an endpoint failure: it
 * is returned decoded (`HubCallError.errorName`). The tower keeps its own contest progress in SQLite and
 * calls {@link TowerChain.sendContest} again (with `replace`) when a contest is not mined in time.
 */
import { Wallet } from "ethers";
import type { Logger } from "pino";
import {
  HubCallError,
  HubClient,
  NonceUsedError,
  RpcPool,
  TxSender,
  contestCall,
  type ChannelView,
  type ContestCallArgs,
  type Deployment,
  type RpcEndpoint,
  type TxFeeParams,
} from "../chain/index.js";

/** What the tower sends on-chain for a contest (blinded proof + the two secp256k1 signatures). */
export type ContestArgs = ContestCallArgs;

/** The account nonce and fees of a sent contest (kept to replace it if it is not mined). */
export type ContestTxParams = TxFeeParams;

/** A contest transaction as sent. */
export interface SentContest extends ContestTxParams {
  txHash: string;
}

export { NonceUsedError };

export interface TowerChainInit {
  rpcUrls: readonly string[];
  deployment: Deployment;
  /** The tower's secp256k1 key (pays the contest gas). */
  privateKey: Uint8Array;
  /** Timeout of one call, ms (default 10 s). */
  requestTimeoutMs?: number;
  log: Logger;
}

/** A revert the hub explained is an answer, not an endpoint failure. */
const decodedRevert = (error: unknown) => error instanceof HubCallError && error.errorName !== null;

/** See the module doc. */
export class TowerChain {
  readonly #pool: RpcPool;
  readonly #sender: TxSender;
  readonly #deployment: Deployment;
  readonly #key: string;
  /** One read-only HubClient per URL (by endpoint index). */
  readonly #hubs = new Map<number, HubClient>();

  constructor(init: TowerChainInit) {
    this.#deployment = init.deployment;
    this.#key = `0x${Buffer.from(init.privateKey).toString("hex")}`;
    this.#pool = new RpcPool({
      rpcUrls: init.rpcUrls,
      chainId: init.deployment.chainId,
      log: init.log,
      name: "watchtower",
      ...(init.requestTimeoutMs !== undefined ? { requestTimeoutMs: init.requestTimeoutMs } : {}),
    });
    this.#sender = new TxSender({
      pool: this.#pool,
      privateKey: init.privateKey,
      deployment: init.deployment,
      log: init.log,
    });
  }

  /** The tower's address (pays the gas). */
  get address(): string {
    return this.#sender.address;
  }

  #hub(e: RpcEndpoint): HubClient {
    let hub = this.#hubs.get(e.index);
    if (hub === undefined) {
      hub = new HubClient(new Wallet(this.#key, e.provider), this.#deployment);
      this.#hubs.set(e.index, hub);
    }
    return hub;
  }

  /** The channel as the hub stores it now. @throws QrwpError CHAIN_ERROR */
  getChannel(channelId: bigint): Promise<ChannelView> {
    return this.#pool.run("getChannel", (e) => this.#hub(e).getChannel(channelId), {
      isFinal: decodedRevert,
    });
  }

  /** The nonce the hub stores for `participant`'s balance proof. @throws QrwpError CHAIN_ERROR */
  async storedNonce(channelId: bigint, participant: string): Promise<bigint> {
    const view = await this.#pool.run(
      "getParticipant",
      (e) => this.#hub(e).getParticipant(channelId, participant),
      { isFinal: decodedRevert },
    );
    return view.nonce;
  }

  /** Timestamp of the latest block (chain time, seconds). @throws QrwpError CHAIN_ERROR */
  latestTimestamp(): Promise<number> {
    return this.#pool.run("latestTimestamp", (e) => this.#hub(e).latestTimestamp());
  }

  /**
   * Timestamp of block `blockNumber` (seconds).
   * @throws QrwpError CHAIN_ERROR (also when no endpoint has the block yet)
   */
  blockTimestamp(blockNumber: number): Promise<number> {
    return this.#pool.run("getBlock", async (e) => {
      const block = await e.provider.getBlock(blockNumber);
      if (!block) throw new Error(`block ${blockNumber} not found`);
      return block.timestamp;
    });
  }

  /** The tower's balance in wei. @throws QrwpError CHAIN_ERROR */
  balanceWei(): Promise<bigint> {
    return this.#pool.run("getBalance", (e) => e.provider.getBalance(this.address));
  }

  /**
   * Mined status of a transaction: true (success), false (reverted), null (not mined yet).
   * @throws QrwpError CHAIN_ERROR
   */
  receiptStatus(txHash: string): Promise<boolean | null> {
    return this.#sender.receiptStatus(txHash);
  }

  /**
   * Simulates, signs and broadcasts `updateNonClosingBalanceProof`. With `replace`, the transaction reuses
   * that nonce with fees at least 25 % higher (a replacement of a contest that was not mined).
   * @throws HubCallError when the simulation reverts (e.g. ChannelHubStaleNonce, ChannelHubContestWindowExpired);
   *   NonceUsedError when `replace.txNonce` was already mined (by another transaction);
   *   QrwpError CHAIN_ERROR when no endpoint takes it.
   */
  async sendContest(a: ContestArgs, replace?: ContestTxParams): Promise<SentContest> {
    const call = contestCall(this.#deployment, a);
    const sent = await this.#sender.submit(call, replace ? { replace } : {});
    return {
      txHash: sent.txHash,
      txNonce: sent.txNonce,
      maxFeePerGas: sent.maxFeePerGas,
      maxPriorityFeePerGas: sent.maxPriorityFeePerGas,
    };
  }

  destroy(): void {
    this.#pool.destroy();
  }
}
