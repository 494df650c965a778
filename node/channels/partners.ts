/**
 * How the channel engine reaches a partner: where it listens (the `peers` table, kept for channel partners
 * only), a request whose `Error` reply becomes PEER_REJECTED, and a connection made before anything is signed.
 */
import type { ChannelMessage } from "../../protocol/index.js";
import { QrwpError, isQrwpError } from "../../protocol/index.js";
import type { SessionTransport } from "../../host/session-transport.js";
import type { NodeStore } from "../store/store.js";

export class Partners {
  readonly transport: SessionTransport;
  readonly #store: NodeStore;

  constructor(transport: SessionTransport, store: NodeStore) {
    this.transport = transport;
    this.#store = store;
  }

  /** Where `partner` listens, as stored (null: never learnt). */
  target(partner: string): { peerId?: string; multiaddrs: string[] } | null {
    const peer = this.#store.getPeer(partner);
    return peer ? { peerId: peer.peerId, multiaddrs: peer.multiaddrs } : null;
  }

  /**
   * Sends `body` to `partner` and returns its reply.
   * @throws QrwpError PEER_REJECTED (an `Error` reply: `details.peerCode`) | PEER_OFFLINE | HANDSHAKE_FAILED | TIMEOUT
   */
  async request(partner: string, body: ChannelMessage): Promise<ChannelMessage> {
    const reply = await this.transport.request(partner, body, this.target(partner));
    if (reply.type === "Error") {
      throw new QrwpError("PEER_REJECTED", `peer refused ${body.type}: ${reply.code}: ${reply.message}`, {
        peer: partner,
        peerCode: reply.code,
      });
    }
    return reply;
  }

  /** Connects to `partner` unless a session exists; the failure as `{code, message}` (nothing thrown). */
  async reach(partner: string): Promise<{ code: string; message: string } | null> {
    if (this.transport.isConnected(partner)) return null;
    const target = this.target(partner);
    try {
      if (!target) throw new QrwpError("PEER_OFFLINE", "partner's address is unknown");
      await this.transport.connect(partner, target);
      return null;
    } catch (err) {
      const e = isQrwpError(err) ? err : null;
      return { code: e?.code ?? "PEER_OFFLINE", message: e?.message ?? "partner unreachable" };
    }
  }
}
