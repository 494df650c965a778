/**
 * node/: the channel node. Owns the SQLite store (store/), the `/qrwp/channel/1.0.0` transport over libp2p
 * (p2p/), the channel service that signs, persists, sends and accepts balance proofs and drives the channel
 * lifecycle on-chain (channels/), the HTTP API (api/), key files (keystore.ts), process wiring (runtime.ts)
 * and the `qrwp` CLI (cli.ts). Imports protocol/ and chain/ (router/ later); nothing imports node/ but devnet/.
 */
export { startNode, type NodeConfig, type RunningNode } from "./runtime.js";
export {
  ChannelService,
  type ChannelView,
  type OpenChannelParams,
  type PayParams,
} from "./channels/service.js";
export { NodeStore, type ChannelRecord, type PaymentRecord } from "./store/store.js";
export { ChannelTransport, type RemotePeer } from "./p2p/channel-transport.js";
export { initKeystore, loadIdentity, readApiToken } from "./keystore.js";
