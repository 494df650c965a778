/**
 * Coalesces the per-payment requests a node sends to one peer (SecretRequest, RevealSecret, TransferFailed)
 * into {@link MessageBatch}es: requests made in the same turn of the event loop for the same peer leave
 * together on the next turn, in call order, as one request (a lone request leaves as itself). Each caller
 * still gets its own reply, as if it had sent its message alone. Under load this turns one round trip per
 * payment per hop into one per batch (docs/PROTOCOL.md §9, "Batches").
 */
import { MAX_MESSAGE_BATCH, type BatchableRequest, type ChannelMessage } from "../../protocol/index.js";

/** Where to reach a peer without an open session (as `SessionTransport.request` takes it). */
export type PeerTarget = { peerId?: string; multiaddrs: string[] } | null;
/** A target, or how to look it up (called once per batch, when the batch leaves). */
export type PeerTargetSource = PeerTarget | (() => PeerTarget);

/** What the batcher needs of the session transport. */
export interface BatchTransport {
  request(address: string, body: ChannelMessage, target: PeerTarget): Promise<ChannelMessage>;
}

interface Queued {
  body: BatchableRequest;
  resolve: (reply: ChannelMessage) => void;
  reject: (err: Error) => void;
}

/** See the module doc. */
export class MessageBatcher {
  readonly #transport: BatchTransport;
  /** Per peer (lower-cased address): what waits for the next turn, and the freshest dial target given. */
  readonly #queues = new Map<string, { address: string; target: PeerTargetSource; items: Queued[] }>();

  constructor(transport: BatchTransport) {
    this.#transport = transport;
  }

  /**
   * Sends `body` to `address` (with the next batch for that peer) and resolves with its own reply.
   * A peer's reply that does not match the batch answers each message `Error INVALID_MESSAGE`; a refusal of
   * the whole batch answers each message with it.
   * @throws (rejects) what `SessionTransport.request` throws (PEER_OFFLINE, HANDSHAKE_FAILED, TIMEOUT) for
   *   every message of the batch.
   */
  request(address: string, body: BatchableRequest, target: PeerTargetSource): Promise<ChannelMessage> {
    const key = address.toLowerCase();
    let queue = this.#queues.get(key);
    if (!queue) {
      queue = { address, target, items: [] };
      this.#queues.set(key, queue);
      setImmediate(() => this.#flush(key));
    } else if (
      target &&
      (typeof target !== "function" || typeof queue.target === "function" || !queue.target)
    ) {
      // A concrete target (a transfer's own dial addresses) is kept over a lookup.
      queue.target = target;
    }
    const items = queue.items;
    return new Promise<ChannelMessage>((resolve, reject) => items.push({ body, resolve, reject }));
  }

  #flush(key: string): void {
    const queue = this.#queues.get(key);
    this.#queues.delete(key);
    if (!queue) return;
    let target: PeerTarget;
    try {
      target = typeof queue.target === "function" ? queue.target() : queue.target;
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      for (const x of queue.items) x.reject(error);
      return;
    }
    for (let i = 0; i < queue.items.length; i += MAX_MESSAGE_BATCH) {
      void this.#send(queue.address, target, queue.items.slice(i, i + MAX_MESSAGE_BATCH));
    }
  }

  async #send(address: string, target: PeerTarget, items: Queued[]): Promise<void> {
    const [first] = items;
    if (!first) return;
    try {
      if (items.length === 1) {
        first.resolve(await this.#transport.request(address, first.body, target));
        return;
      }
      const reply = await this.#transport.request(
        address,
        { type: "MessageBatch", messages: items.map((x) => x.body) },
        target,
      );
      if (reply.type === "Error") {
        // The whole batch was refused (e.g. RATE_LIMITED): each message gets the refusal.
        for (const x of items) x.resolve(reply);
        return;
      }
      if (reply.type !== "MessageBatchReply" || reply.replies.length !== items.length) {
        // Each message gets the refusal it would have got alone from a peer answering nonsense.
        const refusal: ChannelMessage = {
          type: "Error",
          code: "INVALID_MESSAGE",
          message: "the peer's reply does not match the batch",
        };
        for (const x of items) x.resolve(refusal);
        return;
      }
      items.forEach((x, i) => x.resolve(reply.replies[i] as ChannelMessage));
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      for (const x of items) x.reject(error);
    }
  }
}
