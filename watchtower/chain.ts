/**
 * The watchtower's view of the chain over several JSON-RPC URLs: channel reads, the closer's stored nonce,
 * block times, and the contest transaction. Each call has a timeout (a stalled endpoint counts as failed);
 * a failed call moves on to the next URL (round robin) and is retried there, up to one try per URL. Every
 * URL's chain id is checked before its first use. A revert of the hub is not an endpoint failure: it is
 * returned decoded (`HubCallError.errorName`).
 *
 * Contest transactions are signed once (EIP-1559, explicit nonce) and the same raw bytes are broadcast, so a
 * failover never makes a second transaction. A contest that is not mined in time is **replaced**: same nonce,
 * fees raised by 25 % (above the 10-12.5 % bump nodes require), so a stuck or dropped transaction never
 * blocks the tower's later ones behind a nonce gap.
 */
import { JsonRpcProvider, Transaction, Wallet } from "ethers";
import type { Logger } from "pino";
import { HubCallError, HubClient, type ChannelView, type Deployment } from "../chain/index.js";
import { QrwpError } from "../protocol/index.js";

/** What the tower sends on-chain for a contest (blinded proof + the two secp256k1 signatures). */
export interface ContestArgs {
  channelId: bigint;
  closingParticipant: string;
  nonClosingParticipant: string;
  nonce: bigint;
  balanceHash: string;
  closingSignature: string;
  nonClosingSignature: string;
}

/** The account nonce and fees of a sent contest (kept to replace it if it is not mined). */
export interface ContestTxParams {
  txNonce: number;
  maxFeePerGas: bigint;
  maxPriorityFeePerGas: bigint;
}

/** A contest transaction as sent. */
export interface SentContest extends ContestTxParams {
  txHash: string;
}

/** Raised when a replacement's nonce was already used by another transaction of the tower (send afresh). */
export class NonceUsedError extends Error {
  override readonly name = "NonceUsedError";
}

interface Endpoint {
  url: string;
  label: string;
  provider: JsonRpcProvider;
  hub: HubClient;
  chainIdChecked: boolean;
}

export interface TowerChainInit {
  rpcUrls: readonly string[];
  deployment: Deployment;
  /** The tower's secp256k1 key (pays the contest gas). */
  privateKey: Uint8Array;
  /** Timeout of one call, ms (default 10 s). */
  requestTimeoutMs?: number;
  log: Logger;
}

const FEE_BUMP_PERCENT = 125n;
const MIN_PRIORITY_FEE = 1_000_000_000n; // 1 gwei

function label(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}`;
  } catch {
    return "rpc";
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
      timer.unref();
    }),
  ]).finally(() => clearTimeout(timer));
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? (err.message.split("\n")[0] ?? err.name) : String(err);
}

/** See the module doc. */
export class TowerChain {
  readonly #endpoints: Endpoint[];
  #current = 0;
  readonly #timeoutMs: number;
  readonly #log: Logger;
  readonly #wallet: Wallet;
  readonly #chainId: bigint;
  readonly #deployment: Deployment;
  /** Next account nonce to use for a fresh contest (null: read the pending count from the chain). */
  #nextNonce: number | null = null;

  constructor(init: TowerChainInit) {
    if (init.rpcUrls.length === 0) {
      throw new QrwpError("INVALID_ARGUMENT", "at least one RPC URL is required", { field: "rpc" });
    }
    this.#timeoutMs = init.requestTimeoutMs ?? 10_000;
    this.#log = init.log;
    this.#deployment = init.deployment;
    this.#chainId = BigInt(init.deployment.chainId);
    const key = "0x" + Buffer.from(init.privateKey).toString("hex");
    this.#wallet = new Wallet(key);
    this.#endpoints = init.rpcUrls.map((url) => {
      const provider = new JsonRpcProvider(url, Number(init.deployment.chainId), {
        staticNetwork: true,
        pollingInterval: 250,
      });
      return {
        url,
        label: label(url),
        provider,
        hub: new HubClient(new Wallet(key, provider), init.deployment),
        chainIdChecked: false,
      };
    });
  }

  /** The tower's address (pays the gas). */
  get address(): string {
    return this.#wallet.address;
  }

  /** Runs `fn` on the current endpoint, failing over to the others on non-revert errors. */
  async #call<T>(what: string, fn: (e: Endpoint) => Promise<T>): Promise<T> {
    let lastError: unknown;
    for (let i = 0; i < this.#endpoints.length; i++) {
      const e = this.#endpoints[this.#current] as Endpoint;
      try {
        if (!e.chainIdChecked) {
          const id = BigInt(
            (await withTimeout(e.provider.send("eth_chainId", []), this.#timeoutMs, "eth_chainId")) as string,
          );
          if (id !== this.#chainId) throw new Error(`${e.label} serves chain ${id}, not ${this.#chainId}`);
          e.chainIdChecked = true;
        }
        return await withTimeout(fn(e), this.#timeoutMs, what);
      } catch (err) {
        if (err instanceof HubCallError && err.errorName !== null) throw err;
        if (err instanceof NonceUsedError) throw err;
        lastError = err;
        this.#log.warn(
          { rpc: e.label, call: what, err: errorMessage(err) },
          "RPC call failed; trying the next endpoint",
        );
        this.#current = (this.#current + 1) % this.#endpoints.length;
      }
    }
    throw new QrwpError(
      "CHAIN_ERROR",
      `${what} failed on every RPC endpoint`,
      { field: "rpc" },
      { cause: lastError },
    );
  }

  /** The channel as the hub stores it now. @throws QrwpError CHAIN_ERROR */
  getChannel(channelId: bigint): Promise<ChannelView> {
    return this.#call("getChannel", (e) => e.hub.getChannel(channelId));
  }

  /** The nonce the hub stores for `participant`'s balance proof. @throws QrwpError CHAIN_ERROR */
  async storedNonce(channelId: bigint, participant: string): Promise<bigint> {
    return (await this.#call("getParticipant", (e) => e.hub.getParticipant(channelId, participant))).nonce;
  }

  /** Timestamp of the latest block (chain time, seconds). @throws QrwpError CHAIN_ERROR */
  latestTimestamp(): Promise<number> {
    return this.#call("latestTimestamp", (e) => e.hub.latestTimestamp());
  }

  /**
   * Timestamp of block `blockNumber` (seconds).
   * @throws QrwpError CHAIN_ERROR (also when no endpoint has the block yet)
   */
  blockTimestamp(blockNumber: number): Promise<number> {
    return this.#call("getBlock", async (e) => {
      const block = await e.provider.getBlock(blockNumber);
      if (!block) throw new Error(`block ${blockNumber} not found`);
      return block.timestamp;
    });
  }

  /** The tower's balance in wei. @throws QrwpError CHAIN_ERROR */
  async balanceWei(): Promise<bigint> {
    return this.#call("getBalance", (e) => e.provider.getBalance(this.#wallet.address));
  }

  /**
   * Mined status of a transaction: true (success), false (reverted), null (not mined yet).
   * @throws QrwpError CHAIN_ERROR
   */
  async receiptStatus(txHash: string): Promise<boolean | null> {
    const receipt = await this.#call("getTransactionReceipt", (e) =>
      e.provider.getTransactionReceipt(txHash),
    );
    return receipt === null ? null : receipt.status === 1;
  }

  /**
   * Simulates, signs and broadcasts `updateNonClosingBalanceProof`. With `replace`, the transaction reuses
   * that nonce with fees at least 25 % higher (a replacement of a contest that was not mined).
   * @throws HubCallError when the simulation reverts (e.g. ChannelHubStaleNonce, ChannelHubContestWindowExpired);
   *   NonceUsedError when `replace.txNonce` was already mined (by another transaction);
   *   QrwpError CHAIN_ERROR when no endpoint takes it.
   */
  async sendContest(a: ContestArgs, replace?: ContestTxParams): Promise<SentContest> {
    const args = [
      a.channelId,
      a.closingParticipant,
      a.nonClosingParticipant,
      a.nonce,
      a.balanceHash,
      a.closingSignature,
      a.nonClosingSignature,
    ] as const;
    const from = this.#wallet.address;
    const gas = await this.#call("updateNonClosingBalanceProof", async (e) => {
      try {
        await e.hub.hub.updateNonClosingBalanceProof.staticCall(...args, { from });
        return await e.hub.hub.updateNonClosingBalanceProof.estimateGas(...args, { from });
      } catch (err) {
        const decoded = e.hub.decodeError(err);
        if (decoded) {
          throw new HubCallError(
            "ChannelHub.updateNonClosingBalanceProof",
            decoded.name,
            [...decoded.args],
            err,
          );
        }
        throw err;
      }
    });
    const fees = await this.#call("getFeeData", (e) => e.provider.getFeeData());
    let maxPriorityFeePerGas = fees.maxPriorityFeePerGas ?? MIN_PRIORITY_FEE;
    let maxFeePerGas = fees.maxFeePerGas ?? (fees.gasPrice ?? MIN_PRIORITY_FEE) * 2n;
    let txNonce: number;
    if (replace) {
      txNonce = replace.txNonce;
      const bump = (v: bigint) => (v * FEE_BUMP_PERCENT) / 100n + 1n;
      maxPriorityFeePerGas = bigMax(maxPriorityFeePerGas, bump(replace.maxPriorityFeePerGas));
      maxFeePerGas = bigMax(maxFeePerGas, bump(replace.maxFeePerGas));
      const mined = await this.#call("getTransactionCount", (e) =>
        e.provider.getTransactionCount(from, "latest"),
      );
      if (mined > txNonce) throw new NonceUsedError(`nonce ${txNonce} was already mined`);
    } else {
      const pending = await this.#call("getTransactionCount", (e) =>
        e.provider.getTransactionCount(from, "pending"),
      );
      txNonce = Math.max(pending, this.#nextNonce ?? 0);
    }
    if (maxFeePerGas < maxPriorityFeePerGas) maxFeePerGas = maxPriorityFeePerGas;
    const raw = await this.#wallet.signTransaction({
      type: 2,
      chainId: this.#chainId,
      nonce: txNonce,
      to: this.#deployment.hub,
      data: this.#endpoints[0]!.hub.hub.interface.encodeFunctionData("updateNonClosingBalanceProof", [
        ...args,
      ]),
      gasLimit: (gas * 12n) / 10n,
      maxFeePerGas,
      maxPriorityFeePerGas,
    });
    const txHash = Transaction.from(raw).hash as string;
    await this.#call("eth_sendRawTransaction", async (e) => {
      try {
        await e.provider.broadcastTransaction(raw);
      } catch (err) {
        const msg = errorMessage(err).toLowerCase();
        // Another endpoint (or an earlier try) already has it: the same bytes, the same hash.
        if (msg.includes("already known") || msg.includes("known transaction")) return;
        if (msg.includes("nonce too low") || (err as { code?: string }).code === "NONCE_EXPIRED") {
          this.#nextNonce = null;
          throw new NonceUsedError(`nonce ${txNonce} was already used`);
        }
        throw err;
      }
    });
    if (!replace) this.#nextNonce = txNonce + 1;
    return { txHash, txNonce, maxFeePerGas, maxPriorityFeePerGas };
  }

  destroy(): void {
    for (const e of this.#endpoints) e.provider.destroy();
  }
}

function bigMax(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}
