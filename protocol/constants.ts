/**
 * Protocol constants shared by every QRWP component. Changing any value here is a wire or
 * on-chain incompatibility: bump the protocol id / EIP-712 version alongside it.
 */

/** libp2p protocol id of the channel protocol (handshake + encrypted frames, see session.ts). */
export const CHANNEL_PROTOCOL = "/qrwp/channel/1.0.0";
/** libp2p protocol id of the watchtower protocol (appointments). */
export const WATCHTOWER_PROTOCOL = "/qrwp/watchtower/1.0.0";
/** libp2p protocol id / gossip topic prefix for channel-graph gossip. */
export const GOSSIP_PROTOCOL = "/qrwp/gossip/1.0.0";

/** EIP-712 domain `name` of the ChannelHub contract (must match the contract's `EIP712(name, version)`). */
export const EIP712_DOMAIN_NAME = "QRWP ChannelHub";
/** EIP-712 domain `version` of the ChannelHub contract. */
export const EIP712_DOMAIN_VERSION = "1";

/** 32 zero bytes as 0x-hex: the `bytes32(0)` value. */
export const ZERO_HASH = `0x${"00".repeat(32)}`;
/** locksRoot of a direction with no pending locks (`bytes32(0)`, as the ChannelHub expects). */
export const EMPTY_LOCKS_ROOT = ZERO_HASH;
/** The zero address (`address(0)`). */
export const ZERO_ADDRESS = `0x${"00".repeat(20)}`;
/** Largest uint256, `2^256 - 1`. */
export const UINT256_MAX = (1n << 256n) - 1n;
/** At most this many pending locks per channel direction (Raiden spec; bounds the on-chain unlock cost). */
export const MAX_PENDING_LOCKS = 160;

/**
 * Evidence bound, in updates (docs/PROTOCOL.md §7.4): a balance update without an ML-DSA-65 signature is
 * refused (`EVIDENCE_REQUIRED`) when its nonce exceeds the nonce of the partner's latest evidenced proof
 * (one carrying an ML-DSA-65 signature) by more than this.
 */
export const EVIDENCE_MAX_UPDATES = 64;
/**
 * Evidence bound, in time: a balance update without an ML-DSA-65 signature is refused (`EVIDENCE_REQUIRED`)
 * once the receiver has held an un-evidenced proof of the partner for longer than this many milliseconds.
 */
export const EVIDENCE_MAX_DELAY_MS = 5_000;
/** Largest number of changes (payments, locks, unlocks, lock removals) one `BalanceUpdate` carries. */
export const MAX_BATCH_CHANGES = 256;

/** ML-DSA-65 (FIPS 204) context string for balance-proof signatures: separates them from any other use. */
export const MLDSA_CONTEXT_BALANCE_PROOF = "qrwp-bp-v1";
/** ML-DSA-65 (FIPS 204) context string for channel-protocol handshake transcript signatures. */
export const MLDSA_CONTEXT_HANDSHAKE = "qrwp-hs-v1";
/** ML-DSA-65 context string of a watchtower appointment co-signature. */
export const MLDSA_CONTEXT_APPOINTMENT = "qrwp-wt-v1";

/**
 * Channel-protocol handshake version carried in `hello`; a peer with another version is refused.
 * Version 2 added the responder's client puzzle (`challenge`, and `solution` in `hello`).
 */
export const HANDSHAKE_VERSION = 2;
/** Largest accepted encoded handshake message in bytes (the reply is about 6.5 KiB). */
export const MAX_HANDSHAKE_MESSAGE_BYTES = 16 * 1024;
/** Size of the random nonce each handshake side contributes, in bytes. */
export const HANDSHAKE_NONCE_BYTES = 32;

/**
 * Most slots in one watchtower appointment batch (PROTOCOL.md §10.5). A slot is at most ~6 kB in CBOR
 * (~11.4 kB as JSON), so a full batch stays well inside one frame ({@link MAX_FRAME_BYTES}) and inside the
 * tower's HTTP body limit for batches ({@link MAX_APPOINTMENT_BATCH_JSON_BYTES}), and a tower spends at most
 * ~64 × (two secp256k1 recoveries + one ML-DSA-65 verification) on one batch.
 */
export const MAX_APPOINTMENT_BATCH_SLOTS = 64;
/** Largest `POST /v1/appointment-batches` body the tower reads, in bytes (a full batch as JSON is ~0.73 MB). */
export const MAX_APPOINTMENT_BATCH_JSON_BYTES = 1024 * 1024;

/** Largest plaintext accepted by `Session.seal`, in bytes (1 MiB). */
export const MAX_FRAME_BYTES = 1024 * 1024;
/** Frame header: the 64-bit big-endian frame counter, in bytes. */
export const FRAME_HEADER_BYTES = 8;
/** Poly1305 tag length (RFC 8439), in bytes. */
export const FRAME_TAG_BYTES = 16;
/**
 * Frames per key epoch. Each direction's key is replaced by HKDF(current key) every time its 64-bit frame
 * counter reaches a multiple of this value; both sides do it at the same counter, no message needed.
 */
export const REKEY_AFTER_FRAMES = 2n ** 32n;
/** Largest frame counter ever used (the 64-bit counter never wraps; the session refuses to go beyond). */
export const MAX_FRAME_COUNTER = 2n ** 64n - 1n;
