/**
 * The payments layer's public types: routes as the router proposes them, what `PaymentService.pay` takes,
 * how the service is built and the events it emits. Amounts are token base units; times are unix seconds
 * unless the name says otherwise.
 */
import type { Logger } from "pino";
import type { FeeSchedule, LockTiming } from "../../protocol/index.js";
import type { PooledHubClient } from "../../chain/index.js";
import type { ChannelService } from "../channels/service.js";
import type { SessionTransport } from "../../host/session-transport.js";
import type { MediatedPaymentRecord, NodeStore, PaymentRecord } from "../store/store.js";

/** A route as the router proposes it: the lock each hop receives (the last hop is the target). */
export interface RouteCandidate {
  hops: { address: string; channelId: bigint; amount: bigint; expiration: bigint; fee: bigint }[];
  /** Total fees: first hop's amount minus the amount the target receives (token base units). */
  fee: bigint;
}

/** Query for {@link RouteProvider.findRoutes}. Amounts in token base units, times in unix seconds. */
export interface RouteQuery {
  source: string;
  target: string;
  token: string;
  amount: bigint;
  maxFee: bigint | null;
  nowSeconds: bigint;
  finalExpiryDeltaSeconds: number;
  excludeChannels: Set<string>;
  k: number;
}

/** Where routes come from (router/ behind it); results sorted best first. */
export interface RouteProvider {
  findRoutes(query: RouteQuery): RouteCandidate[];
  /** Tells the scorer a channel failed to forward `amount` (or succeeded). */
  reportFailure?(channelId: bigint, from: string, amount: bigint): void;
  reportSuccess?(channelId: bigint, from: string, amount: bigint): void;
}

export interface PaymentServiceInit {
  store: NodeStore;
  channels: ChannelService;
  transport: SessionTransport;
  hub: PooledHubClient;
  address: string;
  log: Logger;
  timing: LockTiming;
  fees: FeeSchedule;
  routes: RouteProvider;
  listenAddrs: () => string[];
  /** How often lock expiries and retries are checked (ms). Default 1000. */
  tickMs?: number;
}

/** What {@link PaymentService.pay} takes. */
export interface MediatedPayParams {
  target: string;
  token: string;
  /** What the target receives, token base units. */
  amount: bigint;
  /** Most the payer accepts to pay in fees (base units); default: no limit. */
  maxFee?: bigint;
  /** Give up starting new attempts after this many seconds (default 60). */
  timeoutSeconds?: number;
  paymentId?: string;
  /** Pay an invoice: the target holds the secret of this hash. Otherwise a spontaneous payment. */
  paymentHash?: string;
}

/**
 * A routed payment as {@link PaymentEventMap} reports it, after the write committed:
 * - `outgoing`: one of ours, when created (`pending`) and when it reached `completed` or `failed`;
 * - `incoming`: one paid to us (we were the target), once, when stored (`completed`); `paymentHash` is the
 *   lock's secret hash (an invoice's payment hash when it paid one; the invoice is `paid` by then).
 */
export type RoutedPaymentEvent =
  | { direction: "outgoing"; payment: MediatedPaymentRecord }
  | { direction: "incoming"; payment: PaymentRecord; paymentHash: string };

/** The payments layer's events (Node's typed EventEmitter); listeners must not throw (throws are logged). */
export interface PaymentEventMap {
  payment: [event: RoutedPaymentEvent];
}
