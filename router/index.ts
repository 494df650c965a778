/**
 * router/ owns the payment channel graph and path finding: the directed channel graph
 * ({@link ChannelGraph}) and the route search with a learning {@link Scorer} (pathfind.ts), importers for
 * real Lightning graphs (CLN `listchannels`, LND `describegraph`), signed per-direction channel updates
 * (channel-update.ts), the deployment's public graph built from on-chain events and updates
 * ({@link NetworkGraph}), exact payment routes with fees and lock expirations ({@link findPaymentRoutes},
 * {@link buildRoute}), and channel-update gossip over libp2p gossipsub ({@link ChannelGossip}).
 * It imports only the pure protocol kernel (`../protocol/index.js`), never chain/ or node/: the node feeds
 * it chain events in router-local types and hands it its gossipsub service.
 */
export * from "./graph.js";
export * from "./import-ln.js";
export * from "./pathfind.js";
export * from "./channel-update.js";
export * from "./network.js";
export * from "./route.js";
export * from "./gossip.js";
