/**
 * The node store's records: what `NodeStore` takes and returns (node/store/store.ts re-exports them). Amounts
 * are bigints of token base units, times are unix ms unless the name says otherwise.
 */
import type {
  ChannelLifecycle,
  ChannelLifecycleState,
  Lock,
  SignedBalanceProof,
} from "../../protocol/index.js";

export type ChannelState = ChannelLifecycleState;

/** What a channel record holds whatever its state. Deposits are on-chain total deposits (base units). */
export interface ChannelBase {
  channelId: bigint;
  partner: string;
  token: string;
  settleTimeoutSeconds: number;
  ourDeposit: bigint;
  partnerDeposit: bigint;
  /** Total withdraws the hub stored for us / the partner (`setTotalWithdraw` mined), base units. */
  ourWithdraw: bigint;
  partnerWithdraw: bigint;
  openedAtMs: number;
  updatedAtMs: number;
}

/**
 * A withdraw co-signed or being co-signed (Raiden's WithdrawRequest/Confirmation) and not yet mined: both
 * sides count `totalWithdraw` as withdrawn until it is mined (then the channel's total takes over) or the
 * chain's time passes `expiryTimestamp`. One per channel and participant.
 */
export interface PendingWithdraw {
  channelId: bigint;
  participant: string;
  /** The participant's new total withdraw, base units. */
  totalWithdraw: bigint;
  /** Unix seconds of block.timestamp. */
  expiryTimestamp: bigint;
  participantSignature: string;
  /** The partner's signature; null until its confirmation arrived. */
  partnerSignature: string | null;
  createdAtMs: number;
}

/**
 * A channel as the node sees it: its fixed data and deposits, and its lifecycle (protocol/channel-lifecycle.ts:
 * an open channel has no close data, a closed one has its closer and close time).
 */
export type ChannelRecord = ChannelBase & ChannelLifecycle;

export type PaymentDirection = "outgoing" | "incoming";
export type PaymentStatus = "pending" | "completed" | "failed";

/** One direct payment, sent or received; `nonce` is the balance proof that carried it. */
export interface PaymentRecord {
  paymentId: string;
  direction: PaymentDirection;
  channelId: bigint;
  partner: string;
  token: string;
  amount: bigint;
  nonce: bigint;
  status: PaymentStatus;
  errorCode: string | null;
  errorMessage: string | null;
  createdAtMs: number;
  completedAtMs: number | null;
}

/**
 * Where a page of {@link NodeStore.listPayments} ends: payments sort newest first by `(createdAtMs, source,
 * seq)`, with `source` 0 for the `payments` table (direct payments and routed payments received) and 1 for
 * `mediated_payments` (routed payments sent), and `seq` the row's SQLite rowid (unique within its source).
 */
export interface PaymentCursor {
  createdAtMs: number;
  source: 0 | 1;
  seq: number;
}

/** One row of {@link NodeStore.listPayments}: a channel payment (direct, or routed received) or a routed one sent. */
export type ListedPayment =
  | { source: 0; payment: PaymentRecord; cursor: PaymentCursor }
  | { source: 1; payment: MediatedPaymentRecord; cursor: PaymentCursor };

/** A known peer: its Ethereum address, libp2p peer id and dialable addresses. */
export interface PeerRecord {
  address: string;
  peerId: string;
  multiaddrs: string[];
}

/** Delivery status of a balance proof: ours are `pending` until the partner's Processed (or refusal). */
export type ProofStatus = "pending" | "acked" | "refused";

/** A stored balance proof with its pending locks and, for ours, the message that carried it. */
export interface StoredProof {
  signed: SignedBalanceProof;
  /** The pending locks the proof commits to (in order). */
  locks: Lock[];
  status: ProofStatus;
  /** The encoded message body (CBOR envelope body) that carried the proof, for re-delivery. */
  message: Uint8Array | null;
  /** When the proof was stored (unix ms). */
  createdAtMs: number;
}

/** Role state of one mediated transfer (protocol/transfers.ts), stored as JSON with bigints as strings. */
export interface TransferRecord {
  id: string;
  role: "initiator" | "mediator" | "target";
  secretHash: string;
  paymentId: string;
  state: unknown;
  done: boolean;
}

/** An outgoing multi-hop payment as the payer sees it (all attempts). */
export interface MediatedPaymentRecord {
  paymentId: string;
  target: string;
  token: string;
  amount: bigint;
  maxFee: bigint | null;
  secretHash: string;
  /** Known for spontaneous payments from the start; learnt at the end for invoice payments. */
  secret: string | null;
  status: "pending" | "completed" | "failed";
  /** Fee of the successful (or last) attempt, token base units. */
  fee: bigint;
  attempts: PaymentAttempt[];
  errorCode: string | null;
  errorMessage: string | null;
  createdAtMs: number;
  completedAtMs: number | null;
  deadlineMs: number;
}

/** One route tried for a payment. */
export interface PaymentAttempt {
  route: { address: string; channelId: string; amount: string; expiration: string; fee: string }[];
  fee: string;
  status: "pending" | "succeeded" | "failed";
  errorCode?: string;
  errorMessage?: string;
  failedAt?: string;
}

/** An invoice: a payment hash whose secret we chose, and what it must pay. */
export interface InvoiceRecord {
  paymentHash: string;
  secret: string;
  token: string;
  amount: bigint;
  description: string;
  status: "open" | "paid" | "expired";
  paidAmount: bigint;
  createdAtMs: number;
  expiresAtMs: number;
  paidAtMs: number | null;
}
