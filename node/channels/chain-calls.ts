/**
 * The channel engine's calls to the chain through {@link PooledHubClient}: every failure becomes a coded
 * QrwpError (the hub's refusals of a client's request name the field), deposits are read back, known
 * secrets registered before a close. Shared by the channel manager and the channel monitor.
 */
import type { Logger } from "pino";
import { QrwpError, isQrwpError, type ErrorCode } from "../../protocol/index.js";
import type { PooledHubClient } from "../../chain/index.js";
import type { NodeStore } from "../store/store.js";
import type { ChannelRegistry } from "./registry.js";
import type { Live } from "./types.js";

/**
 * The hub's refusals that are the client's mistakes (found when estimating gas or simulating: nothing was
 * sent): [code, field (null: the field the caller names), reason].
 */
const HUB_REFUSALS: Record<string, [ErrorCode, string | null, string]> = {
  ChannelHubInvalidToken: ["INVALID_ARGUMENT", "token", "the token is not a contract"],
  ChannelHubInvalidSettleTimeout: ["INVALID_ARGUMENT", "settleTimeoutSeconds", "settle timeout out of range"],
  ChannelHubChannelAlreadyOpen: ["CONFLICT", "partner", "a channel with this partner and token is open"],
  ChannelHubDepositNotIncreasing: ["INVALID_ARGUMENT", null, "the total deposit must increase"],
  ChannelHubDepositOverflow: ["INVALID_ARGUMENT", null, "the deposit overflows"],
  ChannelHubInvalidChannelState: ["CHANNEL_STATE", null, "the channel is not open"],
  ChannelHubNotParticipant: ["CHANNEL_STATE", null, "we are not a participant of the channel"],
  ChannelHubWithdrawExpired: ["TIMEOUT", null, "the withdraw expired before it was mined"],
  ChannelHubWithdrawNotIncreasing: ["CONFLICT", null, "the total withdraw must increase"],
  ChannelHubWithdrawExceedsDeposits: ["INSUFFICIENT_CAPACITY", null, "the withdraw exceeds the deposits"],
};

/**
 * A failed chain call as a QrwpError: a QrwpError as it is; with `refusalField` (calls a client asked for:
 * open, deposit), a hub refusal of {@link HUB_REFUSALS} as its client error naming the table's field, else
 * `refusalField`; anything else CHAIN_ERROR for `action`.
 */
export function chainError(action: string, err: unknown, refusalField?: string): QrwpError {
  if (isQrwpError(err)) return err;
  const name = String((err as { errorName?: unknown }).errorName);
  const refusal = refusalField === undefined ? undefined : HUB_REFUSALS[name];
  if (refusal) {
    return new QrwpError(refusal[0], `the hub refuses ${action}: ${refusal[2]} (${name})`, {
      field: refusal[1] ?? refusalField,
    });
  }
  return new QrwpError(
    "CHAIN_ERROR",
    `${action} failed: ${err instanceof Error ? err.message.slice(0, 300) : String(err)}`,
    { action },
    { cause: err },
  );
}

/**
 * The hub operations the channel engine uses. The node gives it a `PooledHubClient` (every transaction
 * through its one `TxSender`, reads with failover); in-process tests a `HubClient` on one signer: both have
 * these methods with the same arguments and results.
 */
export type HubOperations = Pick<
  PooledHubClient,
  | "openChannel"
  | "setTotalDeposit"
  | "setTotalWithdraw"
  | "cooperativeSettle"
  | "closeChannel"
  | "updateNonClosingBalanceProof"
  | "settleChannel"
  | "unlock"
  | "registerSecret"
  | "registerSecretBatch"
  | "secretRevealedAt"
  | "getChannel"
  | "getParticipant"
  | "getLockedBalance"
  | "tokenBalance"
  | "latestTimestamp"
  | "blockTimestamp"
>;

/** The hub client wrapped with coded errors. */
export class ChainCalls {
  readonly #hub: HubOperations;
  readonly #store: NodeStore;
  readonly #registry: ChannelRegistry;
  readonly #log: Logger;

  constructor(hub: HubOperations, store: NodeStore, registry: ChannelRegistry, log: Logger) {
    this.#hub = hub;
    this.#store = store;
    this.#registry = registry;
    this.#log = log;
  }

  get hub(): HubOperations {
    return this.#hub;
  }

  /**
   * Runs one chain call; a failure becomes a QrwpError (`chainError`): with `refusalField`, the hub's
   * refusals of {@link HUB_REFUSALS} as their client codes naming that field, else CHAIN_ERROR.
   */
  async call<T>(action: string, fn: () => Promise<T>, refusalField?: string): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw chainError(action, err, refusalField);
    }
  }

  /**
   * Runs a `setTotalDeposit` of {@link PooledHubClient} (simulated before anything is sent) and turns the hub's
   * refusals of the deposit into coded client errors naming `field`: not increasing, overflow ->
   * INVALID_ARGUMENT; channel not open / not ours -> CHANNEL_STATE. QrwpErrors (INSUFFICIENT_FUNDS,
   * INVALID_ARGUMENT) pass with `field`; anything else is CHAIN_ERROR.
   */
  async deposit<T>(field: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (isQrwpError(err)) {
        if (err.details.field === "totalDeposit" && field !== "totalDeposit")
          throw new QrwpError(err.code, err.message.replace("totalDeposit", field), {
            ...err.details,
            field,
          });
        throw err;
      }
      throw chainError("setTotalDeposit", err, field);
    }
  }

  /**
   * Refuses (INSUFFICIENT_FUNDS, naming `field`) before any transaction when our wallet holds less than
   * `amount` base units of `token` (wei for ETH). A token address that is no ERC-20 is INVALID_ARGUMENT
   * (field "token").
   */
  async assertWalletHolds(token: string, amount: bigint, field: string): Promise<void> {
    let balance: bigint;
    try {
      balance = await this.#hub.tokenBalance(token, this.#registry.address);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code === "BAD_DATA" || code === "CALL_EXCEPTION")
        throw new QrwpError("INVALID_ARGUMENT", "token is not an ERC-20 contract", { field: "token", token });
      throw chainError("tokenBalance", err);
    }
    if (balance < amount)
      throw new QrwpError(
        "INSUFFICIENT_FUNDS",
        `the wallet holds ${balance} base units of the token; ${field} needs ${amount}`,
        { field, token, balance, needed: amount },
      );
  }

  /**
   * On a close, registers on-chain every secret we know for the partner's pending locks that is not
   * registered yet, so an early unlock after settle cannot send those amounts back to the partner.
   */
  async registerKnownSecrets(live: Live): Promise<void> {
    const secrets: string[] = [];
    for (const lock of live.partnerEnd.locks) {
      const secret = this.#store.getSecret(lock.secretHash);
      if (secret && (await this.#hub.secretRevealedAt(lock.secretHash)) === 0n) secrets.push(secret);
    }
    if (secrets.length === 0) return;
    await this.call("registerSecretBatch", () => this.#hub.registerSecretBatch(secrets));
    this.#log.warn(
      { channelId: live.record.channelId.toString(), secrets: secrets.length },
      "channel closing: registered known secrets of the partner's locks",
    );
  }

  /** Reads both deposits from the chain; persists and announces them when they changed. */
  async refreshDeposits(live: Live): Promise<void> {
    const [ours, theirs] = await Promise.all([
      this.#hub.getParticipant(live.record.channelId, this.#registry.address),
      this.#hub.getParticipant(live.record.channelId, live.record.partner),
    ]);
    // Totals only ever grow on chain: a URL that lags behind what the monitor applied never lowers them.
    const r = live.record;
    const max = (a: bigint, b: bigint) => (a > b ? a : b);
    const next = {
      ourDeposit: max(r.ourDeposit, ours.totalDeposit),
      partnerDeposit: max(r.partnerDeposit, theirs.totalDeposit),
      ourWithdraw: max(r.ourWithdraw, ours.totalWithdraw),
      partnerWithdraw: max(r.partnerWithdraw, theirs.totalWithdraw),
    };
    if (
      next.ourDeposit !== r.ourDeposit ||
      next.partnerDeposit !== r.partnerDeposit ||
      next.ourWithdraw !== r.ourWithdraw ||
      next.partnerWithdraw !== r.partnerWithdraw
    ) {
      Object.assign(r, next);
      this.#registry.save(live, "deposit");
    }
  }
}
