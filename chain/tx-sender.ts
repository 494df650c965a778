/**
 * TxSender: robust transactions of one account over an {@link RpcPool}, for any ChannelHub or
 * SecretRegistry call ({@link TxCall}, built by `hub-calls.ts`).
 *
 * Every transaction is **simulated** first (`eth_call` + `eth_estimateGas` as the sender; a revert is thrown
 * as {@link HubCallError} with the decoded custom error and nothing is sent), then signed **once** as an
 * EIP-1559 transaction with an **explicit account nonce** (the larger of the chain's pending count and the
 * sender's own next nonce), and the same raw bytes are broadcast, failing over between URLs: a URL that
 * already has them ("already known", or "nonce too low" while the chain holds this very hash) counts as a
 * success, so a failover never makes a second transaction. Nonces are picked, and transactions signed and
 * broadcast, one at a time through a per-account queue, so two sends never take the same nonce.
 *
 * Two levels:
 * - {@link TxSender.submit} sends once and returns ({@link SentTx}); with `replace` it re-signs the
 *   transaction at the same nonce with fees raised by 25 % (above the 10-12.5 % bump nodes require). For
 *   callers that persist their own progress between ticks (the watchtower).
 * - {@link TxSender.send} drives one call to the end: submit, follow the receipt, replace the transaction
 *   when it is not mined within `mineTimeoutMs` (same nonce, same call, higher fees; the call is not
 *   simulated again, so the nonce is always filled and later transactions never wait behind a gap), and
 *   return once it is `confirmations` blocks deep ({@link ConfirmedTx}, with the hub's and registry's
 *   decoded events). A receipt that disappears (reorganisation) sends it back to waiting.
 *
 * Source followed: EIP-1559 (type-2 transactions), EIP-155 (chain id in the signature); the replacement
 * rule is geth's / Hardhat's (same sender and nonce, both fees raised by at least 10 %).
 */
import { Transaction, Wallet } from "ethers";
import { z } from "zod";
import { QrwpError, isQrwpError } from "../protocol/index.js";
import type { Deployment } from "./deployment.js";
import { decodeChainEvents, type ChainEvent } from "./events.js";
import type { TxCall } from "./hub-calls.js";
import { HubCallError, decodeHubError } from "./hub-errors.js";
import { errorMessage, type ChainLogger, type RpcPool } from "./rpc-pool.js";

/** Account nonce and fees of a signed transaction: what a replacement needs. */
export interface TxFeeParams {
  /** Account nonce of the transaction. */
  txNonce: number;
  /** EIP-1559 `maxFeePerGas`, wei. */
  maxFeePerGas: bigint;
  /** EIP-1559 `maxPriorityFeePerGas`, wei. */
  maxPriorityFeePerGas: bigint;
}

/** A transaction as signed and broadcast. */
export interface SentTx extends TxFeeParams {
  /** keccak256 of the signed transaction, 0x-hex. */
  txHash: string;
  /** Gas limit signed (the estimate + 20 %). */
  gasLimit: bigint;
  /** True when it replaced an earlier transaction at the same nonce. */
  replacement: boolean;
}

/** A transaction mined and `confirmations` blocks deep, as {@link TxSender.send} returns it. */
export interface ConfirmedTx {
  /** Hash of the transaction that was mined (the first one or a replacement). */
  txHash: string;
  txNonce: number;
  blockNumber: number;
  blockHash: string;
  /** Depth of its block when the send returned (>= the confirmations asked for). */
  confirmations: number;
  gasUsed: bigint;
  /** Price paid per gas, wei. */
  effectiveGasPriceWei: bigint;
  /** The ChannelHub's and SecretRegistry's events it emitted, decoded, in log order. */
  events: ChainEvent[];
  /** Every log of the receipt, raw JSON-RPC objects (for events `events` does not decode). */
  logs: unknown[];
  /** Every transaction broadcast for this call, in order (more than one when replaced). */
  sent: SentTx[];
}

/** A receipt as {@link TxSender.receipt} returns it. */
export interface TxReceiptView {
  txHash: string;
  blockNumber: number;
  blockHash: string;
  /** True when it succeeded, false when it reverted. */
  success: boolean;
  gasUsed: bigint;
  effectiveGasPriceWei: bigint;
  /** Raw JSON-RPC logs (decode with `decodeChainEvents`). */
  logs: unknown[];
}

/** The account nonce was used by another transaction (none of the ones this call sent): send afresh. */
export class NonceUsedError extends Error {
  override readonly name = "NonceUsedError";
}

/** The transaction was mined and reverted (its nonce is spent). */
export class TxRevertedError extends Error {
  override readonly name = "TxRevertedError";
  constructor(
    readonly action: string,
    readonly receipt: TxReceiptView,
  ) {
    super(`${action} reverted on-chain in block ${receipt.blockNumber} (tx ${receipt.txHash})`);
  }
}

/** Options of {@link TxSender}. */
export interface TxSenderInit {
  /** The chain's URLs (its chain id is the one signed, EIP-155). */
  pool: RpcPool;
  /** The account's secp256k1 private key (32 bytes, or 0x-hex); it pays the gas. */
  privateKey: Uint8Array | string;
  /** Addresses whose events {@link TxSender.send} decodes (hub and registry). */
  deployment: Pick<Deployment, "hub" | "secretRegistry">;
  /** Default depth {@link TxSender.send} waits for (1 = the block that mined it). Default 1. */
  confirmations?: number;
  /** Default time {@link TxSender.send} lets a transaction stay unmined before replacing it, ms. Default 60000. */
  mineTimeoutMs?: number;
  /** How often {@link TxSender.send} checks receipts and the head, ms. Default 1000. */
  pollIntervalMs?: number;
  /** Logger (pino-compatible). Default: none. */
  log?: ChainLogger;
  /**
   * Called right before a signed transaction is broadcast: what led to it must be durable by then (the node
   * makes its store durable here).
   */
  beforeBroadcast?: () => void;
}

/** Options of one {@link TxSender.send}. */
export interface SendTxOptions {
  /** Depth to wait for (>= 1); default the sender's. */
  confirmations?: number;
  /** Unmined time before a replacement, ms; default the sender's. */
  mineTimeoutMs?: number;
  /** Stops following (the transaction may still be mined); the send rejects with the abort reason. */
  signal?: AbortSignal;
  /** Called after each broadcast (the first and every replacement), e.g. to persist the hashes. */
  onSent?: (tx: SentTx) => void;
}

/** Options of one {@link TxSender.submit}. */
export interface SubmitTxOptions {
  /** Replace this earlier transaction: same nonce, fees at least 25 % higher. */
  replace?: TxFeeParams & { gasLimit?: bigint };
  /** Simulate first (default true). Without it `replace.gasLimit` is reused. */
  simulate?: boolean;
}

const FEE_BUMP_PERCENT = 125n;
const GAS_LIMIT_PERCENT = 120n;
const MIN_PRIORITY_FEE = 1_000_000_000n; // 1 gwei
const FRESH_SEND_TRIES = 3;
const NOOP_LOGGER: ChainLogger = { debug() {}, info() {}, warn() {}, error() {} };

const quantity = z.string().regex(/^0x[0-9a-fA-F]+$/);
const hash32 = z.string().regex(/^0x[0-9a-fA-F]{64}$/);
const receiptSchema = z.object({
  transactionHash: hash32,
  blockNumber: quantity,
  blockHash: hash32,
  status: quantity,
  gasUsed: quantity,
  effectiveGasPrice: quantity.optional(),
  logs: z.array(z.unknown()),
});

/** See the module docs. */
export class TxSender {
  readonly #pool: RpcPool;
  readonly #beforeBroadcast: (() => void) | undefined;
  readonly #wallet: Wallet;
  readonly #deployment: Pick<Deployment, "hub" | "secretRegistry">;
  readonly #confirmations: number;
  readonly #mineTimeoutMs: number;
  readonly #pollIntervalMs: number;
  readonly #log: ChainLogger;
  /** Next account nonce for a fresh transaction (null: read the pending count from the chain). */
  #nextNonce: number | null = null;
  /** The last signed bytes broadcast at each of our recent nonces (to fill a gap a dropped one left). */
  readonly #rawByNonce = new Map<number, { raw: string; txHash: string }>();
  #queue: Promise<unknown> = Promise.resolve();

  constructor(init: TxSenderInit) {
    this.#pool = init.pool;
    this.#beforeBroadcast = init.beforeBroadcast;
    const key =
      typeof init.privateKey === "string"
        ? init.privateKey
        : `0x${Buffer.from(init.privateKey).toString("hex")}`;
    this.#wallet = new Wallet(key);
    this.#deployment = init.deployment;
    this.#confirmations = positive(init.confirmations ?? 1, "confirmations");
    this.#mineTimeoutMs = positive(init.mineTimeoutMs ?? 60_000, "mineTimeoutMs");
    this.#pollIntervalMs = positive(init.pollIntervalMs ?? 1000, "pollIntervalMs");
    this.#log = init.log ?? NOOP_LOGGER;
  }

  /** The sending account's address (checksummed). */
  get address(): string {
    return this.#wallet.address;
  }

  /**
   * `eth_call` and `eth_estimateGas` of `call` as the sender, on the latest block.
   * @returns the gas estimate.
   * @throws HubCallError when it reverts (`errorName` is the decoded custom error, null if not decodable);
   *   QrwpError CHAIN_ERROR when no URL answers.
   */
  simulate(call: TxCall): Promise<bigint> {
    const tx = { from: this.#wallet.address, to: call.to, data: call.data, value: call.valueWei ?? 0n };
    return this.#pool.run(
      call.action,
      async (e) => {
        try {
          await e.provider.call(tx);
          return await e.provider.estimateGas(tx);
        } catch (error) {
          const decoded = decodeHubError(error);
          if (decoded) throw new HubCallError(call.action, decoded.name, [...decoded.args], error);
          if ((error as { code?: unknown }).code === "CALL_EXCEPTION") {
            throw new HubCallError(call.action, null, [], error);
          }
          throw error;
        }
      },
      { isFinal: (error) => error instanceof HubCallError },
    );
  }

  /**
   * Simulates (unless `simulate: false`), signs and broadcasts `call` once, through the account's queue.
   * A fresh transaction takes the next account nonce; with `replace` it takes `replace.txNonce` and fees
   * at least 25 % above `replace`'s (or the network's, if higher).
   * @throws HubCallError when the simulation reverts (nothing sent);
   *   NonceUsedError when the nonce was already mined by another transaction (a replaced one: check its
   *   receipt; a fresh one: another sender uses this key; the next fresh send reads the nonce again);
   *   QrwpError CHAIN_ERROR when no URL takes it.
   */
  submit(call: TxCall, options: SubmitTxOptions = {}): Promise<SentTx> {
    return this.#enqueue(() => this.#submit(call, options));
  }

  async #submit(call: TxCall, options: SubmitTxOptions): Promise<SentTx> {
    const replace = options.replace;
    let gasLimit: bigint;
    if (options.simulate === false) {
      if (replace?.gasLimit === undefined) throw new Error("submit: simulate: false needs replace.gasLimit");
      gasLimit = replace.gasLimit;
    } else {
      gasLimit = ((await this.simulate(call)) * GAS_LIMIT_PERCENT) / 100n;
    }
    const fees = await this.#pool.run("getFeeData", (e) => e.provider.getFeeData());
    let maxPriorityFeePerGas = fees.maxPriorityFeePerGas ?? MIN_PRIORITY_FEE;
    let maxFeePerGas = fees.maxFeePerGas ?? (fees.gasPrice ?? MIN_PRIORITY_FEE) * 2n;
    let txNonce: number;
    if (replace) {
      txNonce = replace.txNonce;
      const bump = (v: bigint) => (v * FEE_BUMP_PERCENT) / 100n + 1n;
      maxPriorityFeePerGas = bigMax(maxPriorityFeePerGas, bump(replace.maxPriorityFeePerGas));
      maxFeePerGas = bigMax(maxFeePerGas, bump(replace.maxFeePerGas));
      const mined = await this.#transactionCount("latest");
      if (mined > txNonce) throw new NonceUsedError(`nonce ${txNonce} was already mined`);
    } else {
      const pending = await this.#transactionCount("pending");
      if (this.#nextNonce !== null && pending < this.#nextNonce) await this.#refill(pending, this.#nextNonce);
      txNonce = Math.max(pending, this.#nextNonce ?? 0);
    }
    if (maxFeePerGas < maxPriorityFeePerGas) maxFeePerGas = maxPriorityFeePerGas;
    const raw = await this.#wallet.signTransaction({
      type: 2,
      chainId: this.#pool.chainId,
      nonce: txNonce,
      to: call.to,
      data: call.data,
      value: call.valueWei ?? 0n,
      gasLimit,
      maxFeePerGas,
      maxPriorityFeePerGas,
    });
    const txHash = Transaction.from(raw).hash as string;
    await this.#broadcast(raw, txHash, txNonce);
    if (!replace) this.#nextNonce = txNonce + 1;
    this.#remember(txNonce, raw, txHash);
    const sent: SentTx = {
      txHash,
      txNonce,
      maxFeePerGas,
      maxPriorityFeePerGas,
      gasLimit,
      replacement: replace !== undefined,
    };
    this.#log.info(
      {
        action: call.action,
        tx: txHash,
        txNonce,
        maxFeePerGas: maxFeePerGas.toString(),
        replacement: sent.replacement,
      },
      "transaction sent",
    );
    return sent;
  }

  /**
   * Our nonces in [from, to) the chain no longer counts as pending (a reorganisation dropped the transaction
   * from every mempool, or a node evicted it): the same signed bytes are broadcast again, as the network
   * does with the transactions of a reorganised block, so a later transaction does not wait behind a gap.
   */
  async #refill(from: number, to: number): Promise<void> {
    for (let n = from; n < to; n++) {
      const kept = this.#rawByNonce.get(n);
      if (kept === undefined) continue;
      if ((await this.#pool.request("eth_getTransactionByHash", [kept.txHash])) !== null) continue;
      this.#log.warn({ tx: kept.txHash, txNonce: n }, "our transaction was dropped; broadcasting it again");
      try {
        await this.#broadcast(kept.raw, kept.txHash, n);
      } catch (error) {
        if (!(error instanceof NonceUsedError)) throw error;
        this.#nextNonce = to; // #broadcast forgot it; the nonce is used after all: no gap there
      }
    }
  }

  /** Keeps the bytes of our transaction at `txNonce` (the last 64 nonces). */
  #remember(txNonce: number, raw: string, txHash: string): void {
    this.#rawByNonce.set(txNonce, { raw, txHash });
    for (const n of this.#rawByNonce.keys()) if (n < txNonce - 64) this.#rawByNonce.delete(n);
  }

  /** The same raw bytes to the current URL, failing over; a URL that already has them is a success. */
  async #broadcast(raw: string, txHash: string, txNonce: number): Promise<void> {
    this.#beforeBroadcast?.();
    await this.#pool.run(
      "eth_sendRawTransaction",
      async (e, signal) => {
        try {
          await e.send("eth_sendRawTransaction", [raw], signal);
        } catch (error) {
          const text = errorMessage(error).toLowerCase();
          if (text.includes("already known") || text.includes("known transaction")) {
            this.#log.debug({ rpc: e.label, tx: txHash }, "the URL already holds the transaction");
            return;
          }
          if (text.includes("nonce too low") || text.includes("nonce has already been used")) {
            // Our own bytes, taken by an earlier try (a stalled URL that passed them on)?
            if ((await e.send("eth_getTransactionByHash", [txHash], signal)) !== null) {
              this.#log.debug({ rpc: e.label, tx: txHash }, "the chain already holds the transaction");
              return;
            }
            this.#nextNonce = null;
            throw new NonceUsedError(`nonce ${txNonce} was already used`);
          }
          throw error;
        }
      },
      { isFinal: (error) => error instanceof NonceUsedError },
    );
  }

  /**
   * Sends `call` and follows it until it is `confirmations` blocks deep (see the module docs).
   * @throws HubCallError when the first simulation reverts (nothing sent);
   *   TxRevertedError when it was mined and reverted;
   *   NonceUsedError when another transaction (none of this call's) took the nonce of a pending one;
   *   QrwpError CHAIN_ERROR when the first broadcast failed on every URL (later failures are retried);
   *   the signal's reason when aborted.
   */
  async send(call: TxCall, options: SendTxOptions = {}): Promise<ConfirmedTx> {
    const confirmations = positive(options.confirmations ?? this.#confirmations, "confirmations");
    const mineTimeoutMs = positive(options.mineTimeoutMs ?? this.#mineTimeoutMs, "mineTimeoutMs");
    const signal = options.signal;
    const sent: SentTx[] = [await this.#submitFresh(call)];
    options.onSent?.(sent[0] as SentTx);
    let pendingSince = Date.now();
    for (;;) {
      signal?.throwIfAborted();
      const mined = await this.#minedOf(sent).catch((error: unknown) => this.#transient(call, error));
      if (mined) {
        const head = await this.#blockNumber().catch((error: unknown) => this.#transient(call, error));
        const depth = head === undefined ? 0 : head - mined.blockNumber + 1;
        if (depth >= confirmations) {
          if (!mined.success) throw new TxRevertedError(call.action, mined);
          this.#log.info(
            { action: call.action, tx: mined.txHash, blockNumber: mined.blockNumber, confirmations: depth },
            "transaction confirmed",
          );
          return {
            txHash: mined.txHash,
            txNonce: (sent[0] as SentTx).txNonce,
            blockNumber: mined.blockNumber,
            blockHash: mined.blockHash,
            confirmations: depth,
            gasUsed: mined.gasUsed,
            effectiveGasPriceWei: mined.effectiveGasPriceWei,
            events: decodeChainEvents(mined.logs, this.#deployment),
            logs: mined.logs,
            sent,
          };
        }
        pendingSince = Date.now();
      } else if (mined === null && Date.now() - pendingSince >= mineTimeoutMs) {
        const last = sent[sent.length - 1] as SentTx;
        this.#log.warn(
          { action: call.action, tx: last.txHash, txNonce: last.txNonce },
          "transaction not mined in time; replacing it with higher fees",
        );
        try {
          const replacement = await this.submit(call, { replace: last, simulate: false });
          sent.push(replacement);
          options.onSent?.(replacement);
        } catch (error) {
          if (error instanceof NonceUsedError) {
            // The nonce is spent: by one of ours (found on the next pass), or by another transaction.
            if ((await this.#minedOf(sent).catch(() => null)) === null) throw error;
          } else if (!isQrwpError(error)) {
            throw error;
          } else {
            this.#log.warn({ action: call.action, err: errorMessage(error) }, "replacement failed; retrying");
          }
        }
        pendingSince = Date.now();
      }
      await sleep(this.#pollIntervalMs, signal);
    }
  }

  /**
   * The receipt of `txHash` on the current URL, or null while it is not mined.
   * @throws QrwpError CHAIN_ERROR when no URL answers.
   */
  async receipt(txHash: string): Promise<TxReceiptView | null> {
    const answer = await this.#pool.request("eth_getTransactionReceipt", [txHash]);
    if (answer === null) return null;
    const r = receiptSchema.safeParse(answer);
    if (!r.success) throw new Error(`malformed receipt of ${txHash}: ${r.error.issues[0]?.message}`);
    return {
      txHash: r.data.transactionHash.toLowerCase(),
      blockNumber: Number(BigInt(r.data.blockNumber)),
      blockHash: r.data.blockHash.toLowerCase(),
      success: BigInt(r.data.status) === 1n,
      gasUsed: BigInt(r.data.gasUsed),
      effectiveGasPriceWei: BigInt(r.data.effectiveGasPrice ?? "0x0"),
      logs: r.data.logs,
    };
  }

  /**
   * Mined status of a transaction: true (success), false (reverted), null (not mined yet).
   * @throws QrwpError CHAIN_ERROR when no URL answers.
   */
  async receiptStatus(txHash: string): Promise<boolean | null> {
    const r = await this.receipt(txHash);
    return r === null ? null : r.success;
  }

  /** A fresh send; a nonce taken meanwhile by another sender of this key is read again (up to 3 tries). */
  async #submitFresh(call: TxCall): Promise<SentTx> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.submit(call);
      } catch (error) {
        if (!(error instanceof NonceUsedError) || attempt >= FRESH_SEND_TRIES) throw error;
        this.#log.warn({ action: call.action, err: error.message }, "nonce already used; sending afresh");
      }
    }
  }

  /** The first of `sent` that has a receipt, or null. */
  async #minedOf(sent: readonly SentTx[]): Promise<TxReceiptView | null> {
    for (const s of sent) {
      const r = await this.receipt(s.txHash);
      if (r !== null) return r;
    }
    return null;
  }

  /** A read failed on every URL while following: log it and try again on the next poll. */
  #transient(call: TxCall, error: unknown): undefined {
    this.#log.warn(
      { action: call.action, err: errorMessage(error) },
      "could not read the transaction's state",
    );
    return undefined;
  }

  async #transactionCount(tag: "latest" | "pending"): Promise<number> {
    const answer = await this.#pool.request("eth_getTransactionCount", [this.#wallet.address, tag]);
    return parseQuantity(answer, "eth_getTransactionCount");
  }

  async #blockNumber(): Promise<number> {
    return parseQuantity(await this.#pool.request("eth_blockNumber", []), "eth_blockNumber");
  }

  #enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }
}

function parseQuantity(value: unknown, what: string): number {
  const parsed = quantity.safeParse(value);
  const n = parsed.success ? Number(BigInt(parsed.data)) : Number.NaN;
  if (!Number.isSafeInteger(n)) throw new Error(`${what}: expected a hex quantity, got ${String(value)}`);
  return n;
}

function positive(value: number, name: string): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new QrwpError("INVALID_ARGUMENT", `${name} must be an integer >= 1`, { field: name, value });
  }
  return value;
}

function bigMax(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
