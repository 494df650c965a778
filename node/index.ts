/**
 * node/: the channel node. Owns the SQLite store (store/), the channel service that signs, persists, sends
 * and accepts balance proofs and drives the channel lifecycle on-chain (channels/), multi-hop payments
 * (payments/), routing (routing.ts), the watchtower client (watchtowers.ts), the HTTP API (api/), process
 * wiring (runtime.ts) and the node's CLI commands (cli.ts). Imports protocol/, chain/, router/ and host/; nothing imports node/ but cli/ and devnet/.
 */
export { startNode, type NodeConfig, type RunningNode } from "./runtime.js";
export {
  ChannelService,
  type ChannelView,
  type OpenChannelParams,
  type PayParams,
} from "./channels/service.js";
export { WatchtowerClient, type WatchtowerStatus } from "./watchtowers.js";
export { NodeStore, type ChannelRecord, type PaymentRecord } from "./store/store.js";
