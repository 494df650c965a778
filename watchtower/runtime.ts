/**
 * Starts a complete watchtower: keys (created on first start), SQLite store, chain access over one or more
 * RPC URLs, the `/qrwp/watchtower/1.0.0` protocol on a libp2p host (the same post-quantum session as channel
 * nodes), the chain follower and contest loop, and the HTTP API; and stops them gracefully.
 */
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { readDeployment, type Deployment } from "../chain/index.js";
import {
  QrwpError,
  WATCHTOWER_PROTOCOL,
  isQrwpError,
  secp256k1Backend,
  secp256k1FallbackReason,
  type ChannelMessage,
} from "../protocol/index.js";
import { initKeystore, loadIdentity, KEYS_FILE } from "../host/keystore.js";
import { PeerGuard, type PeerLimits } from "../host/peer-guard.js";
import { createHost, dialableMultiaddrs } from "../host/libp2p.js";
import { SessionTransport } from "../host/session-transport.js";
import { listenApi } from "../host/http.js";
import { buildTowerApi } from "./api.js";
import { TowerChain } from "./chain.js";
import { Watchtower } from "./service.js";
import { WatchtowerStore } from "./store.js";

/** Everything `qrwp watchtower start` takes (flags or env). */
export interface WatchtowerConfig {
  dataDir: string;
  /** JSON-RPC URLs, tried in order with failover; at least one. */
  rpcUrls: string[];
  deploymentFile: string;
  /** libp2p listen multiaddr, default `/ip4/127.0.0.1/tcp/0`. */
  listen?: string;
  apiHost?: string;
  apiPort?: number;
  /** Blocks below the head before the tower acts on an event (default 0; use more on a real chain). */
  confirmations?: number;
  pollIntervalMs?: number;
  /** Timeout of one JSON-RPC call, ms: a stalled endpoint counts as failed and the next URL is used. */
  rpcTimeoutMs?: number;
  contestStartPct?: number;
  contestSpreadPct?: number;
  /** Worker threads verifying ML-DSA-65 signatures (default: the available cores; 0: the main thread). */
  mldsaVerifyThreads?: number;
  /** What strangers may cost (puzzle, connection and session budgets); defaults `DEFAULT_PEER_LIMITS`. */
  peerLimits?: Partial<PeerLimits>;
}

export interface RunningWatchtower {
  address: string;
  peerId: string;
  multiaddrs: string[];
  apiUrl: string;
  deployment: Deployment;
  tower: Watchtower;
  store: WatchtowerStore;
  stop(): Promise<void>;
}

/**
 * Starts a watchtower (see the module doc) and resolves once it caught up with the chain and listens on
 * libp2p and HTTP. Everything that can be refused (contest percentages, deployment file) is checked before
 * the data directory is touched.
 * @throws QrwpError INVALID_ARGUMENT (field `contest-spread-pct` | `deployment`), CHAIN_ERROR when no RPC URL
 *   answers; listen errors (e.g. EADDRINUSE).
 */
export async function startWatchtower(config: WatchtowerConfig, log: Logger): Promise<RunningWatchtower> {
  // Everything that can be refused is checked before anything is created in the data directory.
  const startPct = config.contestStartPct ?? 30;
  const spreadPct = config.contestSpreadPct ?? 40;
  if (startPct + spreadPct > 90) {
    throw new QrwpError(
      "INVALID_ARGUMENT",
      "--contest-start-pct + --contest-spread-pct must be at most 90 (percent of the settle window)",
      {
        field: "contest-spread-pct",
      },
    );
  }
  const deployment = await readDeployment(config.deploymentFile).catch((cause: unknown) => {
    throw new QrwpError(
      "INVALID_ARGUMENT",
      `cannot read deployment ${config.deploymentFile}`,
      { field: "deployment" },
      { cause },
    );
  });
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const keyFile = join(config.dataDir, KEYS_FILE);
  if (!existsSync(keyFile)) {
    const created = await initKeystore(config.dataDir);
    log.info({ address: created.address, peerId: created.peerId }, "created watchtower keys");
  }
  const identity = loadIdentity(keyFile);
  const chain = new TowerChain({
    rpcUrls: config.rpcUrls,
    deployment,
    privateKey: identity.keys.secp256k1PrivateKey,
    log: log.child({ component: "chain" }),
    ...(config.rpcTimeoutMs !== undefined ? { requestTimeoutMs: config.rpcTimeoutMs } : {}),
  });
  const store = new WatchtowerStore(join(config.dataDir, "watchtower.db"));
  const tower = new Watchtower({
    store,
    deployment,
    chain,
    address: identity.keys.address,
    rpcUrls: config.rpcUrls,
    log: log.child({ component: "watchtower" }),
    ...(config.confirmations !== undefined ? { confirmations: config.confirmations } : {}),
    ...(config.pollIntervalMs !== undefined ? { pollIntervalMs: config.pollIntervalMs } : {}),
    ...(config.rpcTimeoutMs !== undefined ? { rpcTimeoutMs: config.rpcTimeoutMs } : {}),
    ...(config.contestStartPct !== undefined ? { contestStartPct: config.contestStartPct } : {}),
    ...(config.contestSpreadPct !== undefined ? { contestSpreadPct: config.contestSpreadPct } : {}),
    ...(config.mldsaVerifyThreads !== undefined ? { mldsaVerifyThreads: config.mldsaVerifyThreads } : {}),
  });
  const closeEarly = () => {
    chain.destroy();
    store.close();
  };
  try {
    await tower.start();
  } catch (err) {
    closeEarly();
    throw err;
  }

  const libp2p = await createHost({
    privateKey: identity.libp2pKey,
    ...(config.listen ? { listen: config.listen } : {}),
    ...(config.peerLimits ? { limits: config.peerLimits } : {}),
  });
  const guard = new PeerGuard(libp2p, log.child({ component: "p2p" }), config.peerLimits);
  guard.start();
  const transport = new SessionTransport(libp2p, identity.keys, log.child({ component: "p2p" }), {
    protocol: WATCHTOWER_PROTOCOL,
    guard,
    // A client with an accepted appointment is kept; anyone else is a stranger until then.
    isProtected: (address) => store.clientKeyHash(address) !== null,
  });
  transport.setHandler(async (from, body): Promise<ChannelMessage> => {
    if (body.type !== "Appointment" && body.type !== "AppointmentBatch") {
      return {
        type: "Error",
        code: "INVALID_MESSAGE",
        message: `unexpected ${body.type} on the watchtower protocol`,
      };
    }
    try {
      if (body.type === "AppointmentBatch") {
        const r = await tower.submitBatch(body.batch, { address: from.address });
        return { type: "AppointmentBatchAccepted", results: r.results };
      }
      const r = await tower.submit(body.appointment, { address: from.address });
      return { type: "AppointmentAccepted", id: r.id, nonce: r.nonce, stored: r.stored };
    } catch (err) {
      const e = isQrwpError(err) ? err : new QrwpError("INTERNAL", "internal error");
      const field = typeof e.details.field === "string" ? ` (field ${e.details.field})` : "";
      return { type: "Error", code: e.code, message: `${e.message}${field}`.slice(0, 1024) };
    }
  });
  await transport.start();
  const multiaddrs = () => dialableMultiaddrs(libp2p);

  // The balance is read at most every 30 s: /v1/info is public and must not spend the RPC quota.
  let balanceCache: { atMs: number; value: string | null } | null = null;
  const balance = async () => {
    if (!balanceCache || Date.now() - balanceCache.atMs > 30_000) {
      const value = await chain.balanceWei().then(
        (b) => b.toString(),
        () => null,
      );
      balanceCache = { atMs: Date.now(), value };
    }
    return balanceCache.value;
  };
  const api: FastifyInstance = await buildTowerApi({
    tower,
    store,
    log,
    info: async () => ({
      address: identity.keys.address,
      peerId: identity.peerId,
      multiaddrs: multiaddrs(),
      chainId: deployment.chainId,
      hub: deployment.hub,
      confirmations: tower.confirmations,
      contestWindow: tower.contestWindow,
      lastProcessedBlock: tower.lastProcessedBlock,
      balanceWei: await balance(),
    }),
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
    "watchtower started",
  );

  let stopping: Promise<void> | undefined;
  return {
    address: identity.keys.address,
    peerId: identity.peerId,
    multiaddrs: multiaddrs(),
    apiUrl,
    deployment,
    tower,
    store,
    stop() {
      stopping ??= (async () => {
        await api.close();
        await transport.stop();
        guard.stop();
        await libp2p.stop();
        await tower.stop();
        chain.destroy();
        store.close();
        log.info("watchtower stopped");
      })();
      return stopping;
    },
  };
}
