/**
 * What the channel engine's modules share: the public shapes of channels and payments (amounts in token
 * base units), the in-memory `Live` view of one channel, and small helpers. No I/O.
 */
import { getAddress } from "ethers";
import type { Queue } from "@libp2p/utils";
import type {
  BalanceChange,
  BatchableRequest,
  ChannelEnd,
  ChannelMessage,
  DirectTransfer,
  Lock,
  LockedTransfer,
  SignedBalanceProof,
} from "../../protocol/index.js";
import type { RemotePeer } from "../../host/session-transport.js";
import type { ChannelRecord, PaymentRecord, PendingWithdraw, StoredProof } from "../store/store.js";

/** Default settle timeout for channels we open (seconds of block.timestamp). */
export const DEFAULT_SETTLE_TIMEOUT_SECONDS = 3600;

/**
 * The re-delivery timer re-sends a pending proof over libp2p only once it is at least this old (ms), so a
 * direct transfer signed for HTTP delivery ({@link ChannelService.signDirectTransfer}) normally reaches the
 * partner through the client first. The next proof on the channel re-sends pending ones at once, whatever
 * their age.
 */
export const RESEND_AFTER_MS = 10_000;

/**
 * What the payments layer (node/payments) plugs into the channel layer: it owns the mediated-transfer
 * state machines; the channel layer owns balance proofs. Hooks named `*Received` run inside the store
 * transaction that accepts the partner's proof and return work to run after the reply is sent.
 */
export interface TransferHooks {
  lockReceived(
    msg: LockedTransfer,
    channel: { channelId: bigint; partner: string; token: string },
  ): () => void;
  unlockReceived(
    channelId: bigint,
    partner: string,
    secretHash: string,
    secret: string,
    lock: Lock,
  ): () => void;
  lockExpiredReceived(channelId: bigint, partner: string, secretHash: string): () => void;
  /** May the partner remove its lock now (it expired, or we declined it), given we do not know its secret? */
  mayRemoveLock(channelId: bigint, partner: string, lock: Lock, nowSeconds: bigint): boolean;
  /** Handles RevealSecret / SecretRequest / TransferFailed requests. */
  request(from: RemotePeer, body: ChannelMessage): Promise<ChannelMessage>;
  /**
   * Handles the messages of a MessageBatch in order, each exactly as {@link request} would, in one store
   * transaction (a savepoint per message, so a refused one leaves nothing behind). One outcome per message:
   * its reply, or the error it was refused with.
   */
  requestBatch(from: RemotePeer, messages: BatchableRequest[]): Promise<BatchOutcome[]>;
}

/** What {@link TransferHooks.requestBatch} made of one message. */
export type BatchOutcome = { reply: ChannelMessage } | { error: unknown };

/**
 * The partner's latest accepted balance proof on an unsettled channel, with the ML-DSA-65 key that verified
 * it: what a watchtower appointment is built from (`createAppointment`).
 */
export interface PartnerProof {
  channelId: bigint;
  partner: string;
  signed: SignedBalanceProof;
  mldsaPublicKey: Uint8Array;
}

/** Outcome of sending one balance proof to the partner. */
/**
 * One change waiting in a channel's outbox for our next balance update, and how its caller learns the
 * outcome: the update's {@link ProofDelivery}, `raced` (a direct payment whose id another call stored
 * first: answer it as a retry), or a rejection (nothing signed for it, or the outcome is unknown: the error
 * has `details.pending`).
 */
export interface OutboundChange {
  change: BalanceChange;
  /** Direct payments: the pending record stored with the proof. */
  payment?: PaymentRecord;
  /**
   * Runs inside the transaction that stores the proof carrying this change (never if the change is refused
   * before signing): the caller's own writes that must commit with it, e.g. removing the transfer action
   * that asked for it, so a crash cannot leave the proof stored and the action to run again.
   */
  persist?: () => void;
  resolve: (result: ProofDelivery | { raced: true }) => void;
  reject: (err: unknown) => void;
}

export type ProofDelivery = { ok: true; nonce: bigint } | { ok: false; code: string; message: string };

/** A channel with derived balances and payment totals, as the API shows it. Amounts are token base units. */
export interface ChannelView extends ChannelSummary {
  totals: { sent: bigint; received: bigint; sentCount: number; receivedCount: number };
}

/** A channel's state and derived balances (token base units). */
export interface ChannelSummary {
  channelId: bigint;
  partner: string;
  token: string;
  state: ChannelRecord["state"];
  settleTimeoutSeconds: number;
  ourDeposit: bigint;
  partnerDeposit: bigint;
  /** Total withdraws the hub stored (base units). */
  ourWithdraw: bigint;
  partnerWithdraw: bigint;
  /** A co-signed (or being co-signed) withdraw not mined yet: its new total, counted as withdrawn. */
  pendingWithdraw: { ours: bigint | null; partner: bigint | null };
  ourBalance: bigint;
  partnerBalance: bigint;
  ourNonce: bigint;
  partnerNonce: bigint;
  /** Sum of our pending locks / the partner's pending locks (base units). */
  ourLocked: bigint;
  partnerLocked: bigint;
  pendingLocks: { ours: number; partner: number };
  closedAtSeconds: number | null;
  closingParticipant: string | null;
}

/** What {@link ChannelService.openChannel} takes. */
export interface OpenChannelParams {
  partner: string;
  /** The partner's multiaddr ending in /p2p/<peerId>; optional when the partner is already known. */
  partnerMultiaddr?: string;
  token: string;
  depositAmount: bigint;
  settleTimeoutSeconds?: number;
}

/** What {@link ChannelService.pay} takes. */
export interface PayParams {
  target: string;
  token: string;
  amount: bigint;
  paymentId?: string;
}

/** What {@link ChannelService.signDirectTransfer} returns. */
export interface SignedDirectTransfer {
  /** Our outgoing payment, status `pending` until the partner's acknowledgement (amount in base units). */
  payment: PaymentRecord;
  /**
   * `encodeEnvelope({id: 0, body})` (CBOR, protocol/messages.ts) with `body` a DirectTransfer, or a
   * BalanceUpdate of direct changes when several payments share the proof: exactly the bytes stored with the
   * proof, and what the libp2p re-send carries.
   */
  transfer: Uint8Array;
}

/**
 * The receiver's acknowledgement of one balance proof: its secp256k1 signature (65 bytes `r ‖ s ‖ v`, 0x-hex)
 * over the EIP-712 `Processed(channelId, nonce, balanceHash)` digest of that proof
 * (protocol/balance-proof.ts `processedDigest`).
 */
export interface ProcessedAcknowledgement {
  channelId: bigint;
  nonce: bigint;
  signature: string;
}

/** What {@link ChannelService.acceptDirectTransfer} returns (amounts in token base units). */
export interface AcceptedDirectTransfer {
  /** The payment the proof carries, or null when it carries several (see {@link payments}). */
  paymentId: string | null;
  /** Every payment the proof carries, in order. */
  payments: { paymentId: string; amount: bigint }[];
  channelId: bigint;
  nonce: bigint;
  /** The proof's increment: the sum of {@link payments}. */
  amount: bigint;
  token: string;
  /** The payer: the channel's partner. */
  partner: string;
  processed: ProcessedAcknowledgement;
}

/** In-memory view of a channel's balance proofs; always equal to what the store holds. */
export interface Live {
  record: ChannelRecord;
  /** Our state as of our last acknowledged proof: what the next proof builds on. */
  ourEnd: ChannelEnd;
  /** Highest nonce we ever signed (acknowledged, refused or pending); the next proof uses + 1. */
  ourLatestNonce: bigint;
  /** Our proofs sent but not yet acknowledged or refused (normally at most one). */
  ourPending: StoredProof[];
  /** The partner's state as of its latest accepted proof. */
  partnerEnd: ChannelEnd;
  /** The partner's highest-nonce balance proof we accepted. */
  partnerLatest: SignedBalanceProof | null;
  /** The partner's highest-nonce accepted proof that carries evidence (ML-DSA-65): what towers are given. */
  partnerEvidenced: SignedBalanceProof | null;
  /** When we accepted the partner's first proof not covered by evidence (ms), or null when none is. */
  partnerUnevidencedSinceMs: number | null;
  /** Nonce of our highest acknowledged proof that carries evidence (0 when none). */
  ourEvidencedNonce: bigint;
  /** When our first acknowledged proof not covered by evidence was acknowledged (ms), or null. */
  ourUnevidencedSinceMs: number | null;
  /** Changes waiting for the next balance update of ours (folded into one proof by `OutgoingProofs`). */
  outbox: OutboundChange[];
  /** True while a flush of {@link outbox} is queued in {@link queue}. */
  flushQueued: boolean;
  /** Outgoing queue: every change to OUR balance proofs on this channel runs here, one at a time. */
  queue: Queue<unknown>;
  /** Set while a cooperative settle or close is in progress: no new outgoing payments. */
  closing: boolean;
  /** Our / the partner's withdraw being co-signed or co-signed and not mined yet (counted as withdrawn). */
  ourPendingWithdraw: PendingWithdraw | null;
  partnerPendingWithdraw: PendingWithdraw | null;
}

/** Case-insensitive address equality. */
export const eqAddr = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase();

/** `meta` key of a partner's ML-DSA-65 public key (hex), the one that verified its latest proof. */
export function partnerKeyMetaKey(partner: string): string {
  return `partner-mldsa-key:${getAddress(partner)}`;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
}

export function cosignedKey(channelId: bigint): string {
  return `cooperative-settle-cosigned:${channelId}`;
}

export function stripP2p(addr: string): string {
  return addr.split("/p2p/")[0] as string;
}

export function stringify(o: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, String(v)]));
}

export function directTransferOf(payment: PaymentRecord, balanceProof: SignedBalanceProof): DirectTransfer {
  return { type: "DirectTransfer", paymentId: payment.paymentId, amount: payment.amount, balanceProof };
}

export function endOf(stored: StoredProof): ChannelEnd {
  return {
    nonce: stored.signed.proof.nonce,
    transferredAmount: stored.signed.proof.transferredAmount,
    locks: stored.locks,
  };
}
