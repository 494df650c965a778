/**
 * The watchtower's view of the chain over several JSON-RPC URLs: channel reads, the closer's stored nonce,
 * chain time, and the contest transaction. Each call has a timeout (a stalled endpoint counts as failed);
 * a failed call moves on to the next URL (round robin) and is retried there, up to one try per URL. A
 * revert of the hub is not an endpoint failure: it is returned decoded (`HubCallError.errorName`).
 */
import { JsonRpcProvider, NonceManager, Wallet } from "ethers";
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

/** A contest transaction: its hash as soon as it was sent, and a promise of its mined status. */
export interface SentContest {
  txHash: string;
  /** Resolves true when mined successfully, false when mined reverted; rejects on timeout. */
  mined: Promise<boolean>;
}

interface Endpoint {
  url: string;
  label: string;
  provider: JsonRpcProvider;
  hub: HubClient;
}

export interface TowerChainInit {
  rpcUrls: readonly string[];
  deployment: Deployment;
  /** The tower's secp256k1 key (pays the contest gas). */
  privateKey: Uint8Array;
  /** Timeout of one read call, ms (default 10 s). */
  requestTimeoutMs?: number;
  /** Timeout of waiting for a contest to be mined, ms (default 120 s). */
  mineTimeoutMs?: number;
  log: Logger;
}

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
    }),
  ]).finally(() => clearTimeout(timer));
}

/** See the module doc. */
export class TowerChain {
  readonly #endpoints: Endpoint[];
  #current = 0;
  readonly #timeoutMs: number;
  readonly #mineTimeoutMs: number;
  readonly #log: Logger;

  constructor(init: TowerChainInit) {
    if (init.rpcUrls.length === 0) {
      throw new QrwpError("INVALID_ARGUMENT", "at least one RPC URL is required", { field: "rpc" });
    }
    this.#timeoutMs = init.requestTimeoutMs ?? 10_000;
    this.#mineTimeoutMs = init.mineTimeoutMs ?? 120_000;
    this.#log = init.log;
    const key = "0x" + Buffer.from(init.privateKey).toString("hex");
    this.#endpoints = init.rpcUrls.map((url) => {
      const provider = new JsonRpcProvider(url, Number(init.deployment.chainId), {
        staticNetwork: true,
        pollingInterval: 250,
      });
      return {
        url,
        label: label(url),
        provider,
        hub: new HubClient(new NonceManager(new Wallet(key, provider)), init.deployment),
      };
    });
  }

  /** Runs `fn` on the current endpoint, failing over to the others on non-revert errors. */
  async #call<T>(what: string, fn: (e: Endpoint) => Promise<T>): Promise<T> {
    let lastError: unknown;
    for (let i = 0; i < this.#endpoints.length; i++) {
      const e = this.#endpoints[this.#current] as Endpoint;
      try {
        return await withTimeout(fn(e), this.#timeoutMs, what);
      } catch (err) {
        if (err instanceof HubCallError && err.errorName !== null) throw err;
        lastError = err;
        this.#log.warn(
          { rpc: e.label, call: what, err: err instanceof Error ? err.message.split("\n")[0] : String(err) },
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

  /** The tower's balance in wei. @throws QrwpError CHAIN_ERROR */
  async balanceWei(address: string): Promise<bigint> {
    return this.#call("getBalance", (e) => e.provider.getBalance(address));
  }

  /**
   * Simulates, then sends `updateNonClosingBalanceProof`. Returns once the transaction was accepted by an
   * endpoint; `mined` reports the outcome.
   * @throws HubCallError when the simulation reverts (e.g. ChannelHubStaleNonce, ChannelHubContestWindowExpired);
   *   QrwpError CHAIN_ERROR when no endpoint takes it.
   */
  async sendContest(a: ContestArgs): Promise<SentContest> {
    const args = [
      a.channelId,
      a.closingParticipant,
      a.nonClosingParticipant,
      a.nonce,
      a.balanceHash,
      a.closingSignature,
      a.nonClosingSignature,
    ] as const;
    return this.#call("updateNonClosingBalanceProof", async (e) => {
      try {
        await e.hub.hub.updateNonClosingBalanceProof.staticCall(...args);
      } catch (err) {
        const decoded = e.hub.decodeError(err);
        if (decoded)
          throw new HubCallError(
            "ChannelHub.updateNonClosingBalanceProof",
            decoded.name,
            [...decoded.args],
            err,
          );
        throw err;
      }
      let tx;
      try {
        tx = await e.hub.hub.updateNonClosingBalanceProof(...args);
      } catch (err) {
        // The NonceManager counted a transaction that was never sent.
        (e.hub.hub.runner as NonceManager).reset();
        throw err;
      }
      const mined = withTimeout(tx.wait(1), this.#mineTimeoutMs, "contest mining").then(
        (r) => r !== null && r.status === 1,
        (err: unknown) => {
          const decoded = e.hub.decodeError(err);
          if (decoded || (err as { code?: string }).code === "CALL_EXCEPTION") return false;
          throw err;
        },
      );
      mined.catch(() => undefined);
      return { txHash: tx.hash, mined };
    });
  }

  destroy(): void {
    for (const e of this.#endpoints) e.provider.destroy();
  }
}
