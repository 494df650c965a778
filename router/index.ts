/**
 * router/ owns path finding over the payment channel graph: the directed channel graph
 * ({@link ChannelGraph}), importers that read real Lightning graphs (CLN `listchannels`, LND
 * `describegraph`) into it, and the route search (fees + lock time + success probability) with a
 * {@link Scorer} that learns channel liquidity from failed and successful attempts.
 * It imports only the pure protocol kernel (`../protocol/index.js`); gossip and on-chain graph sources
 * feed it from node/ and chain/ later.
 */
export * from "./graph.js";
export * from "./import-ln.js";
export * from "./pathfind.js";
