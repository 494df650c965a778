/**
 * The libp2p host every QRWP process runs: TCP, Noise, yamux, identify and ping, plus gossipsub when the
 * process takes part in channel-update gossip (channel nodes; a watchtower does not).
 */
import { createLibp2p, type Libp2p } from "libp2p";
import { tcp } from "@libp2p/tcp";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { identify } from "@libp2p/identify";
import { ping } from "@libp2p/ping";
import { gossipsub } from "@libp2p/gossipsub";
import type { PrivateKey } from "@libp2p/interface";
import { DEFAULT_PEER_LIMITS, type PeerLimits } from "./peer-guard.js";

export interface HostInit {
  /** The libp2p Ed25519 identity key (from the keystore). */
  privateKey: PrivateKey;
  /** Listen multiaddr, default `/ip4/127.0.0.1/tcp/0`. */
  listen?: string;
  /** Enable gossipsub as `services.pubsub` (emitSelf false, publish to zero topic peers allowed). */
  pubsub?: boolean;
  /** The limits the host's `PeerGuard` will enforce; libp2p's own caps are set just above them. */
  limits?: Partial<PeerLimits>;
}

/** Connections libp2p itself accepts above the guard's budget, so the guard (not libp2p) picks who goes. */
const HARD_CONNECTION_HEADROOM = 64;

/**
 * Creates and starts a libp2p host (see the module doc for its modules). Its connection manager is set on
 * purpose: a hard cap a little above the guard's budget (`maxConnections`), room for 64 inbound connections
 * still upgrading, which must finish Noise and yamux within 5 s, and libp2p's per-host limit of 5 new inbound
 * connections per second.
 */
export async function createHost(init: HostInit): Promise<Libp2p> {
  const maxConnections = init.limits?.maxConnections ?? DEFAULT_PEER_LIMITS.maxConnections;
  return createLibp2p({
    privateKey: init.privateKey,
    addresses: { listen: [init.listen ?? "/ip4/127.0.0.1/tcp/0"] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager: {
      maxConnections: maxConnections + HARD_CONNECTION_HEADROOM,
      maxIncomingPendingConnections: 64,
      inboundUpgradeTimeout: 5_000,
      inboundStreamProtocolNegotiationTimeout: 5_000,
      inboundConnectionThreshold: 5,
    },
    services: {
      identify: identify(),
      ping: ping(),
      ...(init.pubsub ? { pubsub: gossipsub({ emitSelf: false, allowPublishToZeroTopicPeers: true }) } : {}),
    },
  });
}

/**
 * {@link dialableMultiaddrs} for hot paths (every routed payment carries them): computed once and again
 * only after the host's own addresses changed (libp2p's `self:peer:update` event). Each call returns a
 * fresh copy of the array.
 */
export function cachedDialableMultiaddrs(libp2p: Libp2p): () => string[] {
  let cached: string[] | undefined;
  libp2p.addEventListener("self:peer:update", () => {
    cached = undefined;
  });
  return () => [...(cached ??= dialableMultiaddrs(libp2p))];
}

/** The host's multiaddrs as strings, each ending in `/p2p/<peerId>` (what another process dials). */
export function dialableMultiaddrs(libp2p: Libp2p): string[] {
  const peerId = libp2p.peerId.toString();
  return libp2p
    .getMultiaddrs()
    .map((m) => m.toString())
    .map((m) => (m.includes("/p2p/") ? m : `${m}/p2p/${peerId}`));
}
