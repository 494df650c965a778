/**
 * Starts a complete channel node: store, libp2p host (tcp, noise, yamux, identify, ping) with the
 * `/qrwp/channel/1.0.0` protocol, chain client, channel service, the watchtower client (with `watchtowers`) and
 * HTTP API; and stops it gracefully.
 */
import { join } from "node:path";
import type { Libp2p } from "@libp2p/interface";
import type { GossipSub } from "@libp2p/gossipsub";
import type { FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { PooledHubClient, RpcPool, TxSender, readDeployment, type Deployment } from "../chain/index.js";
import {
  DEFAULT_SAFETY_MARGINS,
  QrwpError,
  assertArgument,
  lockTiming,
  secp256k1Backend,
  secp256k1FallbackReason,
  type FeeSchedule,
  type SafetyMargins,
} from "../protocol/index.js";
import { buildApiServer } from "./api/server.js";
import { ChannelService } from "./channels/service.js";
import type { EvidencePolicy } from "./channels/evidence.js";
import { loadIdentity, readApiToken, KEYS_FILE } from "../host/keystore.js";
import { SessionTransport } from "../host/session-transport.js";
import { listenApi } from "../host/http.js";
import { cachedDialableMultiaddrs, createHost } from "../host/libp2p.js";
import { PeerGuard, type PeerLimits } from "../host/peer-guard.js";
import { NodeStore } from "./store/store.js";
import { PaymentService } from "./payments/service.js";
import { NetworkRouting } from "./routing.js";
import { ChannelMonitor } from "./monitor/monitor.js";
import { WatchtowerClient, towerPeerId } from "./watchtowers.js";

/** Everything `qrwp node start` takes (flags or env). */
export interface NodeConfig {
  dataDir: string;
  /** Keys file; default `<dataDir>/keys.json`. */
  keyFile?: string;
  /** JSON-RPC URLs of the chain, tried in order with failover (at least one). */
  rpcUrls: string[];
  /**
   * Blocks below the head before the channel monitor acts on an event (default 0); the node's own
   * transactions are awaited at the same depth (`confirmations + 1` blocks deep, the mining block included).
   */
  confirmations?: number;
  /** When our balance updates carry ML-DSA-65 evidence (docs/PROTOCOL.md §7.4; defaults in channels/outgoing.ts). */
  evidence?: Partial<EvidencePolicy>;
  /** Timeout of one JSON-RPC call on one URL, ms; a stalled URL fails over to the next (default 10 000). */
  requestTimeoutMs?: number;
  deploymentFile: string;
  /** libp2p listen multiaddr, default `/ip4/127.0.0.1/tcp/0`. */
  listen?: string;
  apiHost?: string;
  apiPort?: number;
  chainPollMs?: number;
  /** Fee schedule we charge as a mediator (default flat 0, 0 ppm). */
  fees?: FeeSchedule;
  /** Safety margins R, G, S (seconds) that set the expiry delta and reveal timeout. */
  margins?: SafetyMargins;
  /** Watchtowers to hand appointments to: multiaddrs ending in `/p2p/<peerId>`. */
  watchtowers?: string[];
  /** What strangers may cost (puzzle, connection and session budgets); defaults `DEFAULT_PEER_LIMITS`. */
  peerLimits?: Partial<PeerLimits>;
}

export interface RunningNode {
  address: string;
  peerId: string;
  multiaddrs: string[];
  apiUrl: string;
  deployment: Deployment;
  service: ChannelService;
  payments: PaymentService;
  /** The watchtower client, when the node was started with watchtowers. */
  watchtowers: WatchtowerClient | null;
  stop(): Promise<void>;
}

export async function startNode(config: NodeConfig, log: Logger): Promise<RunningNode> {
  for (const m of config.watchtowers ?? []) towerPeerId(m); // a bad multiaddr fails before anything starts
  const identity = loadIdentity(config.keyFile ?? join(config.dataDir, KEYS_FILE));
  const deployment = await readDeployment(config.deploymentFile).catch((cause: unknown) => {
    throw new QrwpError(
      "INVALID_ARGUMENT",
      `cannot read deployment ${config.deploymentFile}`,
      { field: "deployment" },
      { cause },
    );
  });
  assertArgument(config.rpcUrls.length > 0, "at least one RPC URL is required", "rpc", config.rpcUrls.length);
  // Every transaction and read of the engine goes through one pool of every URL and ONE sender (one
  // account nonce); the channel monitor follows the same URLs.
  const pool = new RpcPool({
    rpcUrls: config.rpcUrls,
    chainId: deployment.chainId,
    log: log.child({ component: "rpc" }),
    name: "node",
    ...(config.requestTimeoutMs !== undefined ? { requestTimeoutMs: config.requestTimeoutMs } : {}),
  });
  // A URL on another chain is refused; none answering (or all on another chain) stops the start.
  await pool.request("eth_blockNumber", []).catch((cause: unknown) => {
    pool.destroy();
    throw new QrwpError(
      "CHAIN_ERROR",
      "no RPC URL serves the deployment's chain",
      { field: "rpc" },
      { cause },
    );
  });
  const sender = new TxSender({
    pool,
    privateKey: identity.keys.secp256k1PrivateKey,
    deployment,
    confirmations: (config.confirmations ?? 0) + 1,
    pollIntervalMs: Math.min(config.chainPollMs ?? 1000, 1000),
    log: log.child({ component: "tx" }),
    beforeBroadcast: () => store.syncBarrier(),
  });
  const hub = new PooledHubClient({ pool, sender, deployment });
  const store = new NodeStore(join(config.dataDir, "node.db"));

  const libp2p: Libp2p = await createHost({
    privateKey: identity.libp2pKey,
    ...(config.listen ? { listen: config.listen } : {}),
    pubsub: true,
    ...(config.peerLimits ? { limits: config.peerLimits } : {}),
  });
  const multiaddrs = () => libp2p.getMultiaddrs().map((m) => m.toString());
  // Channel partners (the only peers the store keeps) and our towers are protected; the rest are strangers.
  const towerPeerIds = (config.watchtowers ?? []).map((m) => towerPeerId(m));
  const guard = new PeerGuard(libp2p, log.child({ component: "p2p" }), config.peerLimits, [
    ...store.partnerPeerIds(),
    ...towerPeerIds,
  ]);
  guard.start();
  const transport: SessionTransport = new SessionTransport(
    libp2p,
    identity.keys,
    log.child({ component: "p2p" }),
    { guard, isProtected: (address: string): boolean => service.isPartner(address) },
  );
  // Group commit (docs/DECISIONS.md): writes commit without an fsync; the store is made durable right
  // before anything that may depend on them leaves the process: a libp2p frame, an HTTP response, a
  // chain transaction.
  transport.beforeSend = () => store.syncBarrierSoon();
  store.deferSyncToBarrier();
  const service = new ChannelService({
    store,
    keys: identity.keys,
    hub,
    deployment,
    transport,
    log: log.child({ component: "channels" }),
    listenAddrs: multiaddrs,
    ...(config.chainPollMs ? { redeliveryIntervalMs: config.chainPollMs } : {}),
    ...(config.evidence ? { evidence: config.evidence } : {}),
  });
  const monitor = new ChannelMonitor({
    store,
    keys: identity.keys,
    deployment,
    registry: service.registry,
    chain: service.chain,
    manager: service.manager,
    withdraws: service.withdraws,
    rpcUrls: config.rpcUrls,
    ...(config.confirmations !== undefined ? { confirmations: config.confirmations } : {}),
    ...(config.chainPollMs ? { pollIntervalMs: config.chainPollMs } : {}),
    ...(config.requestTimeoutMs !== undefined ? { requestTimeoutMs: config.requestTimeoutMs } : {}),
    log: log.child({ component: "monitor" }),
  });
  const fees: FeeSchedule = config.fees ?? { feeFlat: 0n, feePpm: 0 };
  const timing = lockTiming(config.margins ?? DEFAULT_SAFETY_MARGINS);
  const routing = new NetworkRouting({
    store,
    keys: identity.keys,
    deployment,
    channels: service,
    pubsub: libp2p.services.pubsub as GossipSub,
    fees,
    timing,
    log: log.child({ component: "routing" }),
  });
  const payments = new PaymentService({
    store,
    channels: service,
    transport,
    hub,
    address: identity.keys.address,
    log: log.child({ component: "payments" }),
    timing,
    fees,
    routes: routing,
    listenAddrs: cachedDialableMultiaddrs(libp2p),
  });
  service.setTransferHooks(payments.hooks());
  const watchtowers =
    config.watchtowers && config.watchtowers.length > 0
      ? new WatchtowerClient({
          libp2p,
          keys: identity.keys,
          log: log.child({ component: "watchtowers" }),
          towers: config.watchtowers,
          source: service,
          meta: store,
          guard,
        })
      : null;
  if (watchtowers) service.registry.events.on("partnerProof", (channelId) => watchtowers.notify(channelId));
  monitor.events.on("chain", (batch) => routing.applyBatch(batch));
  monitor.events.on("secretRevealed", ({ secret }) => payments.secretRevealedOnChain(secret));
  await transport.start();
  await service.start();
  watchtowers?.start();
  payments.start();
  await routing.start();
  await monitor.start();

  const api: FastifyInstance = await buildApiServer({
    service,
    payments,
    store,
    token: readApiToken(config.dataDir),
    log,
    beforeReply: () => store.syncBarrierSoon(),
    events: { channels: service.registry.events, payments: payments.events, monitor: monitor.events },
    info: {
      address: identity.keys.address,
      peerId: identity.peerId,
      multiaddrs,
      chainId: deployment.chainId,
      hub: deployment.hub,
      bridge: deployment.bridge,
      connectedPeers: () => transport.connectedPeers(),
      watchtowers: () => watchtowers?.status() ?? [],
    },
  });
  const apiUrl = await listenApi(api, config.apiHost ?? "127.0.0.1", config.apiPort ?? 0);
  log.info(
    {
      address: identity.keys.address,
      peerId: identity.peerId,
      multiaddrs: multiaddrs(),
      apiUrl,
      secp256k1: secp256k1Backend(),
      secp256k1FallbackReason: secp256k1FallbackReason(),
    },
    "node started",
  );

  let stopping: Promise<void> | undefined;
  return {
    address: identity.keys.address,
    peerId: identity.peerId,
    multiaddrs: multiaddrs(),
    apiUrl,
    deployment,
    service,
    payments,
    watchtowers,
    stop() {
      stopping ??= (async () => {
        await api.close();
        await monitor.stop();
        await routing.stop();
        await payments.stop();
        await service.stop();
        await watchtowers?.stop();
        await transport.stop();
        guard.stop();
        await libp2p.stop();
        pool.destroy();
        store.close();
        log.info("node stopped");
      })();
      return stopping;
    },
  };
}
