/**
 * protocol/: QRWP's shared kernel, pure and I/O-free (no fs, network, process or env; the one exception is
 * secp256k1-backend.ts, which loads the native libsecp256k1 binding once and reads `QRWP_SECP256K1`).
 * Owns: coded errors, protocol constants, node keys and the two signature schemes (secp256k1 for the chain,
 * ML-DSA-65 for post-quantum evidence), EIP-712 balance proofs / balance-proof updates / cooperative settle
 * and withdraws for the ChannelHub, the channel-protocol handshake (X-Wing + hybrid-signed transcript) and encrypted
 * frames, and boundary validators. Everyone imports it; it imports no other folder.
 * Wire message codecs live in messages.ts (exported below by its owner).
 */
export * from "./errors.js";
export * from "./constants.js";
export * from "./validation.js";
export * from "./keys.js";
export * from "./secp256k1-backend.js";
export * from "./eip712.js";
export * from "./balance-proof.js";
export * from "./withdraw.js";
export * from "./session.js";
export * from "./messages.js";
export * from "./locks.js";
export * from "./channel-state.js";
export * from "./channel-lifecycle.js";
export * from "./timing.js";
export * from "./transfers.js";
export * from "./appointment.js";
export * from "./appointment-batch.js";
export * from "./x402.js";
export * from "./handshake-puzzle.js";
export * from "./frames.js";
