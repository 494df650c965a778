/**
 * ChainEventFollower: the ChannelHub's and SecretRegistry's events, in order, from confirmed blocks.
 *
 * Shared by the node (channel graph, lock recovery) and the watchtower. It polls `eth_getLogs` for both
 * contracts over block ranges `[cursor, head - confirmations]`, at most `maxBlockRange` blocks per call,
 * decodes the logs into the {@link ChainEvent} union and hands each range to an async handler as one
 * {@link ChainEventBatch}. The cursor advances only after the handler resolved, so delivery is
 * at-least-once per batch and in (blockNumber, logIndex) order; a handler that throws gets the same range
 * again after a backoff. Handlers should persist their effects and `batch.toBlock` (the caller's
 * `lastProcessedBlock`) together, and start the next follower at `lastProcessedBlock + 1`.
 *
 * Several JSON-RPC URLs may be given (an {@link RpcPool}): the follower stays on one until a call fails
 * (connection refused, HTTP or JSON-RPC error, malformed answer, a stall longer than `requestTimeoutMs`)
 * and then tries the next ones at once; a URL that serves another chain than the deployment's is refused
 * for good. When every URL failed it waits with capped exponential backoff. Reorgs deeper than `confirmations` are not detected: set it to the chain's
 * finality depth on a real chain.
 */
import { ethers } from "ethers";
import { z } from "zod";
import { ChannelHub__factory, SecretRegistry__factory } from "../typechain-types/index.js";
import type { Deployment } from "./deployment.js";
import { RpcPool, errorMessage, type ChainLogger } from "./rpc-pool.js";

/** Where an event was logged. */
export interface ChainEventMeta {
  /** Block number of the log. */
  blockNumber: number;
  /** Hash of the block (0x-hex). */
  blockHash: string;
  /** Index of the log in its block. */
  logIndex: number;
  /** Hash of the transaction that emitted it (0x-hex). */
  txHash: string;
}

/** ChannelHub `ChannelOpened`. */
export interface ChannelOpenedEvent extends ChainEventMeta {
  type: "ChannelOpened";
  channelId: bigint;
  participant1: string;
  participant2: string;
  /** ERC-20 address, or ethers.ZeroAddress for ETH. */
  token: string;
  settleTimeoutSeconds: bigint;
}

/** ChannelHub `ChannelNewDeposit`: `participant`'s total deposit is now `totalDeposit` (base units). */
export interface ChannelNewDepositEvent extends ChainEventMeta {
  type: "ChannelNewDeposit";
  channelId: bigint;
  participant: string;
  totalDeposit: bigint;
}

/**
 * ChannelHub `ChannelWithdraw`: `participant`'s total withdraw is now `totalWithdraw` (base units); the
 * increase left the channel (paid to `participant`, or kept as a deferred payout).
 */
export interface ChannelWithdrawEvent extends ChainEventMeta {
  type: "ChannelWithdraw";
  channelId: bigint;
  participant: string;
  totalWithdraw: bigint;
}

/** ChannelHub `ChannelClosed`: the closer submitted the partner's balance proof (`nonce`, `balanceHash`). */
export interface ChannelClosedEvent extends ChainEventMeta {
  type: "ChannelClosed";
  channelId: bigint;
  closingParticipant: string;
  nonce: bigint;
  balanceHash: string;
}

/** ChannelHub `NonClosingBalanceProofUpdated`: a contest replaced the closer's balance proof. */
export interface NonClosingBalanceProofUpdatedEvent extends ChainEventMeta {
  type: "NonClosingBalanceProofUpdated";
  channelId: bigint;
  closingParticipant: string;
  nonce: bigint;
  balanceHash: string;
}

/** ChannelHub `ChannelSettled`: amounts (base units) for participant1 and participant2 of the channel. */
export interface ChannelSettledEvent extends ChainEventMeta {
  type: "ChannelSettled";
  channelId: bigint;
  participant1Amount: bigint;
  participant2Amount: bigint;
  cooperative: boolean;
}

/** ChannelHub `ChannelUnlocked`: `sender`'s pending locks kept at settlement were paid out. */
export interface ChannelUnlockedEvent extends ChainEventMeta {
  type: "ChannelUnlocked";
  channelId: bigint;
  sender: string;
  receiver: string;
  locksRoot: string;
  /** Paid to `receiver`, base units. */
  unlockedAmount: bigint;
  /** Paid back to `sender`, base units. */
  returnedAmount: bigint;
}

/** SecretRegistry `SecretRevealed`: `secret` (with `secretHash = sha256(secret)`) was registered. */
export interface SecretRevealedEvent extends ChainEventMeta {
  type: "SecretRevealed";
  secretHash: string;
  secret: string;
}

/** Every event the follower delivers, keyed on `type`. Addresses are checksummed, uint256 are bigint. */
export type ChainEvent =
  | ChannelOpenedEvent
  | ChannelNewDepositEvent
  | ChannelWithdrawEvent
  | ChannelClosedEvent
  | NonClosingBalanceProofUpdatedEvent
  | ChannelSettledEvent
  | ChannelUnlockedEvent
  | SecretRevealedEvent;

/** The event type names, in the order of {@link ChainEvent}. */
export const CHAIN_EVENT_TYPES = [
  "ChannelOpened",
  "ChannelNewDeposit",
  "ChannelWithdraw",
  "ChannelClosed",
  "NonClosingBalanceProofUpdated",
  "ChannelSettled",
  "ChannelUnlocked",
  "SecretRevealed",
] as const satisfies readonly ChainEvent["type"][];

/** One fully scanned block range and its events, in (blockNumber, logIndex) order. */
export interface ChainEventBatch {
  /** First block of the range (inclusive). */
  fromBlock: number;
  /** Last block of the range (inclusive): persist it as `lastProcessedBlock` once the events are handled. */
  toBlock: number;
  /** The range's events (possibly none). */
  events: readonly ChainEvent[];
}

/** The subset of a pino logger the follower uses (a pino `Logger` fits). */
export type ChainEventLogger = ChainLogger;

/** Options of {@link ChainEventFollower}. */
export interface ChainEventFollowerInit {
  /** JSON-RPC HTTP(S) URLs, tried in this order; at least one. */
  rpcUrls: readonly string[];
  /** Chain id (checked on every URL before use) and the addresses to follow. */
  deployment: Pick<Deployment, "chainId" | "hub" | "secretRegistry">;
  /**
   * First block to scan (inclusive): the caller's persisted `lastProcessedBlock + 1`, or
   * `deployment.deployBlock` the first time.
   */
  fromBlock: number;
  /**
   * Called once per scanned range, also for ranges without events, one call at a time and in block
   * order. The cursor advances past `batch.toBlock` only after it resolves; if it throws, the same range
   * is delivered again after a backoff.
   */
  onBatch: (batch: ChainEventBatch) => Promise<void>;
  /** Blocks below the head a block must be to be scanned (0 = the head itself). Default 0. */
  confirmations?: number;
  /** Wait between polls once caught up, ms. Default 2000 (the devnet uses ~250). */
  pollIntervalMs?: number;
  /** Most blocks per `eth_getLogs` call. Halved after a failed call, grown back after successes. Default 2000. */
  maxBlockRange?: number;
  /** Timeout of one JSON-RPC call, ms; a stalled URL counts as failed. Default 10000. */
  requestTimeoutMs?: number;
  /** First backoff after a failed poll, ms; doubles per consecutive failure. Default 500. */
  retryMinDelayMs?: number;
  /** Cap of the backoff, ms. Default 30000. */
  retryMaxDelayMs?: number;
  /** Logger (pino-compatible). Default: none. */
  log?: ChainEventLogger;
}

const DEFAULTS = {
  confirmations: 0,
  pollIntervalMs: 2000,
  maxBlockRange: 2000,
  requestTimeoutMs: 10_000,
  retryMinDelayMs: 500,
  retryMaxDelayMs: 30_000,
} as const;

const quantity = z.string().regex(/^0x[0-9a-fA-F]+$/);
const hex32 = z.string().regex(/^0x[0-9a-fA-F]{64}$/);
const rpcLogSchema = z.object({
  address: z.string().regex(/^0x[0-9a-fA-F]{40}$/),
  topics: z.array(hex32),
  data: z.string().regex(/^0x(?:[0-9a-fA-F]{2})*$/),
  blockNumber: quantity,
  blockHash: hex32,
  transactionHash: hex32,
  logIndex: quantity,
  removed: z.boolean().optional(),
});
const rpcLogsSchema = z.array(rpcLogSchema);
type RpcLog = z.infer<typeof rpcLogSchema>;

const EVENT_FRAGMENTS = [
  ...ChannelHub__factory.createInterface().fragments,
  ...SecretRegistry__factory.createInterface().fragments,
].filter(
  (f): f is ethers.EventFragment =>
    f instanceof ethers.EventFragment && (CHAIN_EVENT_TYPES as readonly string[]).includes(f.name),
);
/** Decodes the events of {@link CHAIN_EVENT_TYPES}. */
const EVENT_INTERFACE = new ethers.Interface(EVENT_FRAGMENTS);
const EVENT_TOPICS = EVENT_FRAGMENTS.map((f) => f.topicHash);

/**
 * Decodes the hub's and the registry's events among raw JSON-RPC logs (e.g. the `logs` of an
 * `eth_getTransactionReceipt` answer), in (blockNumber, logIndex) order. Logs of other contracts, removed
 * logs and other events are skipped.
 * @throws Error when `logs` is not an array of JSON-RPC logs.
 */
export function decodeChainEvents(
  logs: unknown,
  deployment: Pick<Deployment, "hub" | "secretRegistry">,
): ChainEvent[] {
  const parsed = rpcLogsSchema.safeParse(logs);
  if (!parsed.success) throw new Error(`malformed logs: ${parsed.error.issues[0]?.message}`);
  const addresses = [deployment.hub, deployment.secretRegistry].map((a) => a.toLowerCase());
  const events: ChainEvent[] = [];
  for (const log of parsed.data) {
    if (log.removed === true || !addresses.includes(log.address.toLowerCase())) continue;
    const description = EVENT_INTERFACE.parseLog({ topics: log.topics, data: log.data });
    if (description !== null) events.push(toChainEvent(description, logMeta(log)));
  }
  return events.sort((a, b) => a.blockNumber - b.blockNumber || a.logIndex - b.logIndex);
}

function logMeta(log: RpcLog): ChainEventMeta {
  return {
    blockNumber: parseQuantity(log.blockNumber, "log.blockNumber"),
    blockHash: log.blockHash.toLowerCase(),
    logIndex: parseQuantity(log.logIndex, "log.logIndex"),
    txHash: log.transactionHash.toLowerCase(),
  };
}

const NOOP_LOGGER: ChainEventLogger = { debug() {}, info() {}, warn() {}, error() {} };

/**
 * Follows the ChannelHub and SecretRegistry logs of one deployment (see the module docs).
 * Lifecycle: optionally {@link catchUp} once, then {@link start}; {@link stop} ends it.
 */
export class ChainEventFollower {
  readonly #pool: RpcPool;
  readonly #addresses: string[];
  readonly #onBatch: (batch: ChainEventBatch) => Promise<void>;
  readonly #confirmations: number;
  readonly #pollIntervalMs: number;
  readonly #maxBlockRange: number;
  readonly #requestTimeoutMs: number;
  readonly #retryMinDelayMs: number;
  readonly #retryMaxDelayMs: number;
  readonly #log: ChainEventLogger;
  #blockRange: number;
  #next: number;
  #loop: Promise<void> | null = null;
  #busy = false;
  readonly #abort = new AbortController();

  constructor(init: ChainEventFollowerInit) {
    if (init.rpcUrls.length === 0) throw new Error("ChainEventFollower: at least one RPC URL is required");
    assertCount(init.fromBlock, "fromBlock", 0);
    this.#addresses = [init.deployment.hub, init.deployment.secretRegistry].map((a) => ethers.getAddress(a));
    this.#onBatch = init.onBatch;
    this.#confirmations = assertCount(init.confirmations ?? DEFAULTS.confirmations, "confirmations", 0);
    this.#pollIntervalMs = assertCount(init.pollIntervalMs ?? DEFAULTS.pollIntervalMs, "pollIntervalMs", 0);
    this.#maxBlockRange = assertCount(init.maxBlockRange ?? DEFAULTS.maxBlockRange, "maxBlockRange", 1);
    this.#requestTimeoutMs = assertCount(
      init.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs,
      "requestTimeoutMs",
      1,
    );
    this.#retryMinDelayMs = assertCount(
      init.retryMinDelayMs ?? DEFAULTS.retryMinDelayMs,
      "retryMinDelayMs",
      0,
    );
    this.#retryMaxDelayMs = assertCount(
      init.retryMaxDelayMs ?? DEFAULTS.retryMaxDelayMs,
      "retryMaxDelayMs",
      this.#retryMinDelayMs,
    );
    this.#log = init.log ?? NOOP_LOGGER;
    this.#pool = new RpcPool({
      rpcUrls: init.rpcUrls,
      chainId: init.deployment.chainId,
      requestTimeoutMs: this.#requestTimeoutMs,
      signal: this.#abort.signal,
      log: this.#log,
      name: "chain event follower",
    });
    this.#blockRange = this.#maxBlockRange;
    this.#next = init.fromBlock;
  }

  /** The last block whose events were handled (`fromBlock - 1` before the first batch). */
  get lastProcessedBlock(): number {
    return this.#next - 1;
  }

  /** True between {@link start} and the end of {@link stop}. */
  get running(): boolean {
    return this.#loop !== null;
  }

  /**
   * Starts polling in the background: catch up in ranges of at most `maxBlockRange` blocks, then poll
   * every `pollIntervalMs`. Errors are logged and retried with backoff; they never reject.
   * @throws Error if already running, during {@link catchUp}, or after {@link stop} (a follower runs once).
   */
  start(): void {
    if (this.#busy || this.#abort.signal.aborted) {
      throw new Error("ChainEventFollower: already started or stopped, or catchUp() in progress");
    }
    this.#busy = true;
    this.#log.info(
      { fromBlock: this.#next, confirmations: this.#confirmations, rpc: this.#pool.labels },
      "chain event follower started",
    );
    this.#loop = this.#run().finally(() => {
      this.#busy = false;
    });
  }

  /**
   * Stops polling: aborts an RPC call or backoff in progress, lets a running handler finish, and resolves
   * once the loop has ended. Safe to call more than once, and before {@link start}.
   */
  async stop(): Promise<void> {
    this.#abort.abort();
    const loop = this.#loop;
    if (loop !== null) await loop;
    this.#loop = null;
    this.#pool.destroy();
  }

  /**
   * Scans and delivers every confirmed block up to the current head once, without retrying a failed poll
   * (each call still fails over between URLs). For startup ("handle everything before serving") and
   * tests; not while {@link start} is running.
   * @returns The new {@link lastProcessedBlock}.
   * @throws the last RPC or handler error; Error if running or stopped.
   */
  async catchUp(): Promise<number> {
    if (this.#busy || this.#abort.signal.aborted) {
      throw new Error("ChainEventFollower: catchUp() while running or after stop()");
    }
    this.#busy = true;
    try {
      while (!(await this.#step())) {
        // next range
      }
      return this.lastProcessedBlock;
    } finally {
      this.#busy = false;
    }
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    let failures = 0;
    while (!signal.aborted) {
      try {
        const caughtUp = await this.#step();
        if (failures > 0) this.#log.info({ failures }, "chain event follower recovered");
        failures = 0;
        if (caughtUp) await sleep(this.#pollIntervalMs, signal);
      } catch (error) {
        if (signal.aborted) break;
        failures += 1;
        const delayMs = Math.min(
          this.#retryMaxDelayMs,
          this.#retryMinDelayMs * 2 ** Math.min(failures - 1, 30),
        );
        this.#log.warn(
          { err: errorMessage(error), failures, delayMs, nextBlock: this.#next },
          "chain event poll failed; retrying",
        );
        await sleep(delayMs, signal);
      }
    }
    this.#log.info({ lastProcessedBlock: this.lastProcessedBlock }, "chain event follower stopped");
  }

  /** Scans and delivers one range. @returns true when caught up with the confirmed head. */
  async #step(): Promise<boolean> {
    const head = parseQuantity(await this.#call("eth_blockNumber", []), "eth_blockNumber");
    const safeHead = head - this.#confirmations;
    if (safeHead < this.#next) return true;
    const fromBlock = this.#next;
    const toBlock = Math.min(safeHead, fromBlock + this.#blockRange - 1);
    let logs: RpcLog[];
    try {
      logs = await this.#getLogs(fromBlock, toBlock);
    } catch (error) {
      // Providers cap ranges or result sizes; retry with a smaller range.
      this.#blockRange = Math.max(1, Math.floor(this.#blockRange / 2));
      throw error;
    }
    this.#blockRange = Math.min(this.#maxBlockRange, this.#blockRange * 2);
    const events = this.#decode(logs, fromBlock, toBlock);
    if (this.#abort.signal.aborted) return true;
    this.#log.debug({ fromBlock, toBlock, events: events.length }, "chain events");
    try {
      await this.#onBatch({ fromBlock, toBlock, events });
    } catch (error) {
      throw new Error(`handler failed on blocks ${fromBlock}-${toBlock}: ${errorMessage(error)}`, {
        cause: error,
      });
    }
    this.#next = toBlock + 1;
    return toBlock >= safeHead;
  }

  async #getLogs(fromBlock: number, toBlock: number): Promise<RpcLog[]> {
    const result = await this.#call("eth_getLogs", [
      {
        fromBlock: ethers.toQuantity(fromBlock),
        toBlock: ethers.toQuantity(toBlock),
        address: this.#addresses,
        topics: [EVENT_TOPICS],
      },
    ]);
    const parsed = rpcLogsSchema.safeParse(result);
    if (!parsed.success) throw new Error(`malformed eth_getLogs answer: ${parsed.error.issues[0]?.message}`);
    return parsed.data;
  }

  /** Decodes, checks and orders `logs`; a log outside the range or of another contract is an RPC fault. */
  #decode(logs: RpcLog[], fromBlock: number, toBlock: number): ChainEvent[] {
    const seen = new Set<string>();
    const events: ChainEvent[] = [];
    for (const log of logs) {
      if (log.removed === true) continue;
      const meta = logMeta(log);
      if (meta.blockNumber < fromBlock || meta.blockNumber > toBlock) {
        throw new Error(`eth_getLogs returned block ${meta.blockNumber} outside ${fromBlock}-${toBlock}`);
      }
      if (!this.#addresses.includes(ethers.getAddress(log.address))) {
        throw new Error(`eth_getLogs returned a log of ${log.address}, which was not asked for`);
      }
      const key = `${meta.blockNumber}:${meta.logIndex}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const parsed = EVENT_INTERFACE.parseLog({ topics: log.topics, data: log.data });
      if (parsed === null) continue;
      events.push(toChainEvent(parsed, meta));
    }
    return events.sort((a, b) => a.blockNumber - b.blockNumber || a.logIndex - b.logIndex);
  }

  /** One JSON-RPC call with failover over the follower's URLs (see {@link RpcPool}). */
  #call(method: string, params: unknown[]): Promise<unknown> {
    return this.#pool.request(method, params);
  }
}

function toChainEvent(parsed: ethers.LogDescription, meta: ChainEventMeta): ChainEvent {
  const arg = <T>(name: string): T => parsed.args.getValue(name) as T;
  switch (parsed.name as ChainEvent["type"]) {
    case "ChannelOpened":
      return {
        ...meta,
        type: "ChannelOpened",
        channelId: arg("channelId"),
        participant1: arg("participant1"),
        participant2: arg("participant2"),
        token: arg("token"),
        settleTimeoutSeconds: arg("settleTimeoutSeconds"),
      };
    case "ChannelNewDeposit":
      return {
        ...meta,
        type: "ChannelNewDeposit",
        channelId: arg("channelId"),
        participant: arg("participant"),
        totalDeposit: arg("totalDeposit"),
      };
    case "ChannelWithdraw":
      return {
        ...meta,
        type: "ChannelWithdraw",
        channelId: arg("channelId"),
        participant: arg("participant"),
        totalWithdraw: arg("totalWithdraw"),
      };
    case "ChannelClosed":
    case "NonClosingBalanceProofUpdated":
      return {
        ...meta,
        type: parsed.name as "ChannelClosed" | "NonClosingBalanceProofUpdated",
        channelId: arg("channelId"),
        closingParticipant: arg("closingParticipant"),
        nonce: arg("nonce"),
        balanceHash: arg("balanceHash"),
      };
    case "ChannelSettled":
      return {
        ...meta,
        type: "ChannelSettled",
        channelId: arg("channelId"),
        participant1Amount: arg("participant1Amount"),
        participant2Amount: arg("participant2Amount"),
        cooperative: arg("cooperative"),
      };
    case "ChannelUnlocked":
      return {
        ...meta,
        type: "ChannelUnlocked",
        channelId: arg("channelId"),
        sender: arg("sender"),
        receiver: arg("receiver"),
        locksRoot: arg("locksRoot"),
        unlockedAmount: arg("unlockedAmount"),
        returnedAmount: arg("returnedAmount"),
      };
    case "SecretRevealed":
      return { ...meta, type: "SecretRevealed", secretHash: arg("secretHash"), secret: arg("secret") };
  }
  throw new Error(`unexpected event ${parsed.name}`);
}

function assertCount(value: number, name: string, min: number): number {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new Error(`ChainEventFollower: ${name} must be an integer >= ${min}, got ${value}`);
  }
  return value;
}

function parseQuantity(value: unknown, what: string): number {
  const parsed = quantity.safeParse(value);
  const n = parsed.success ? Number.parseInt(parsed.data.slice(2), 16) : Number.NaN;
  if (!Number.isSafeInteger(n)) throw new Error(`${what}: expected a hex quantity, got ${String(value)}`);
  return n;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
