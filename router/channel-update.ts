/**
 * `ChannelUpdate`: the signed forwarding policy of one channel direction, gossiped on
 * `/qrwp/gossip/1.0.0/<chainId>/<hub>` (see gossip.ts). Lightning's `channel_update` (BOLT 7) adapted to a
 * ChannelHub deployment: fee schedule `feeFlat + amountToForward * feePpm / 1e6` (floor), the expiry delta
 * the forwarder requires between its incoming and outgoing lock (`cltv_expiry_delta`, in seconds), HTLC
 * bounds, a capacity hint (what the participant can currently send) and a disabled flag.
 *
 * Signing: secp256k1 (Ethereum `r||s||v`, low-s) by `participant` over an EIP-712 typed-data digest
 * `keccak256(0x1901 || domainSeparator || hashStruct(update))` with the domain
 * `EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)` =
 * ("QRWP ChannelUpdate", "1", chainId, hub) and the type {@link CHANNEL_UPDATE_TYPE}. The domain name differs
 * from the ChannelHub's ("QRWP ChannelHub"), so an update signature can never be replayed as a balance proof,
 * and chainId + hub bind it to one deployment. Hand-computed like protocol/balance-proof.ts; the unit tests
 * cross-check it against ethers' `TypedDataEncoder`.
 *
 * Not ML-DSA signed yet: a gossip signature only needs to bind the update to the on-chain participant
 * address, and there are no identity records (address -> ML-DSA key) to verify a PQ signature against.
 * Add an ML-DSA-65 signature when identity records exist (docs/DECISIONS.md).
 *
 * Wire form: CBOR (cbor-x) of a strict object with `type: "ChannelUpdate"`, integers as decimal strings
 * (feePpm and expiryDeltaSeconds as CBOR integers), the signature as 0x-hex; at most
 * {@link MAX_CHANNEL_UPDATE_BYTES}. A malformed update is refused with `QrwpError("INVALID_MESSAGE")` naming
 * the field; the decoder never throws anything else.
 */
import { keccak_256 } from "@noble/hashes/sha3.js";
import { concatBytes } from "@noble/hashes/utils.js";
import { Encoder } from "cbor-x";
import { z } from "zod";
import {
  abiAddressWord,
  abiWord,
  eip712DomainSeparator,
  keccakText,
  QrwpError,
  assertArgument,
  assertUint256,
  normalizeAddress,
  recoverDigestSigner,
  signDigest,
  type NodeKeys,
} from "../protocol/index.js";

/** EIP-712 domain `name` of channel updates (distinct from the ChannelHub's, see the module docs). */
export const CHANNEL_UPDATE_DOMAIN_NAME = "QRWP ChannelUpdate";
/** EIP-712 domain `version` of channel updates. */
export const CHANNEL_UPDATE_DOMAIN_VERSION = "1";
/** EIP-712 type string of a channel update (the field order is the wire-independent canonical order). */
export const CHANNEL_UPDATE_TYPE =
  "ChannelUpdate(address token,uint256 channelId,address participant,address partner,uint64 nonce," +
  "uint256 feeFlat,uint32 feePpm,uint32 expiryDeltaSeconds,uint256 htlcMinimum,uint256 htlcMaximum," +
  "uint256 capacityHint,bool disabled)";
/** Largest encoded channel update accepted, in bytes (a maximal one is about 900 bytes). */
export const MAX_CHANNEL_UPDATE_BYTES = 2048;
/** Largest `feePpm` / `expiryDeltaSeconds` (`uint32`). */
export const UINT32_MAX = 2 ** 32 - 1;
/** Largest `nonce` (`uint64`; a millisecond timestamp fits for 584 million years). */
export const UINT64_MAX = 2n ** 64n - 1n;

/** The signed fields of a channel update. Amounts are token base units (wei-scale bigints). */
export interface UnsignedChannelUpdate {
  /** EIP-155 chain id of the deployment. */
  chainId: bigint;
  /** ChannelHub address (EIP-55). */
  hub: string;
  /** Token of the channel (EIP-55). */
  token: string;
  /** Channel id assigned by the ChannelHub. */
  channelId: bigint;
  /** The forwarder of this direction and the signer (EIP-55). */
  participant: string;
  /** The other participant of the channel, who receives over this direction (EIP-55). */
  partner: string;
  /** Strictly increasing per (hub, channelId, participant), uint64; e.g. a millisecond timestamp. */
  nonce: bigint;
  /** Flat fee charged per forwarded payment, base units. */
  feeFlat: bigint;
  /** Proportional fee in parts per million of the forwarded amount (uint32). */
  feePpm: number;
  /** Seconds the participant requires between its incoming lock's expiration and the outgoing one (uint32). */
  expiryDeltaSeconds: number;
  /** Smallest lock amount the participant forwards over this direction. */
  htlcMinimum: bigint;
  /** Largest lock amount the participant forwards over this direction (>= htlcMinimum). */
  htlcMaximum: bigint;
  /** What the participant can currently send over this direction (a hint: it changes with every payment). */
  capacityHint: bigint;
  /** The participant does not forward over this direction. */
  disabled: boolean;
}

/** A channel update with the participant's secp256k1 signature (0x-hex, 65 bytes `r||s||v`). */
export interface ChannelUpdate extends UnsignedChannelUpdate {
  signature: string;
}

/** The EIP-712 `types` of a channel update, in the shape ethers' `TypedDataEncoder` takes. */
export const CHANNEL_UPDATE_EIP712_TYPES = {
  ChannelUpdate: [
    { name: "token", type: "address" },
    { name: "channelId", type: "uint256" },
    { name: "participant", type: "address" },
    { name: "partner", type: "address" },
    { name: "nonce", type: "uint64" },
    { name: "feeFlat", type: "uint256" },
    { name: "feePpm", type: "uint32" },
    { name: "expiryDeltaSeconds", type: "uint32" },
    { name: "htlcMinimum", type: "uint256" },
    { name: "htlcMaximum", type: "uint256" },
    { name: "capacityHint", type: "uint256" },
    { name: "disabled", type: "bool" },
  ],
} as const;

/** keccak256 of {@link CHANNEL_UPDATE_TYPE}. */
export const CHANNEL_UPDATE_TYPEHASH = keccakText(CHANNEL_UPDATE_TYPE);

/** The EIP-712 domain object of channel updates (for ethers / wallets). @throws QrwpError INVALID_ARGUMENT */
export function channelUpdateDomain(
  chainId: bigint,
  hub: string,
): { name: string; version: string; chainId: bigint; verifyingContract: string } {
  assertUint256(chainId, "chainId");
  return {
    name: CHANNEL_UPDATE_DOMAIN_NAME,
    version: CHANNEL_UPDATE_DOMAIN_VERSION,
    chainId,
    verifyingContract: normalizeAddress(hub, "hub"),
  };
}

function domainSeparator(chainId: bigint, hub: string): Uint8Array {
  return eip712DomainSeparator(CHANNEL_UPDATE_DOMAIN_NAME, CHANNEL_UPDATE_DOMAIN_VERSION, chainId, hub);
}

function isUint32(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= UINT32_MAX;
}

/**
 * Validates the fields of an update and returns a copy with checksummed addresses.
 * @throws QrwpError INVALID_ARGUMENT naming the field.
 */
export function normalizeChannelUpdateFields(u: UnsignedChannelUpdate): UnsignedChannelUpdate {
  assertArgument(typeof u === "object" && u !== null, "channel update must be an object", "update");
  assertUint256(u.chainId, "chainId");
  assertUint256(u.channelId, "channelId");
  assertArgument(
    typeof u.nonce === "bigint" && u.nonce >= 0n && u.nonce <= UINT64_MAX,
    "nonce must be a uint64",
    "nonce",
    u.nonce,
  );
  assertUint256(u.feeFlat, "feeFlat");
  assertArgument(isUint32(u.feePpm), "feePpm must be a uint32", "feePpm", u.feePpm);
  assertArgument(
    isUint32(u.expiryDeltaSeconds),
    "expiryDeltaSeconds must be a uint32",
    "expiryDeltaSeconds",
    u.expiryDeltaSeconds,
  );
  assertUint256(u.htlcMinimum, "htlcMinimum");
  assertUint256(u.htlcMaximum, "htlcMaximum");
  assertArgument(
    u.htlcMinimum <= u.htlcMaximum,
    "htlcMaximum must be >= htlcMinimum",
    "htlcMaximum",
    u.htlcMaximum,
  );
  assertUint256(u.capacityHint, "capacityHint");
  assertArgument(typeof u.disabled === "boolean", "disabled must be a boolean", "disabled", u.disabled);
  const participant = normalizeAddress(u.participant, "participant");
  const partner = normalizeAddress(u.partner, "partner");
  assertArgument(participant !== partner, "partner must differ from participant", "partner", partner);
  return {
    chainId: u.chainId,
    hub: normalizeAddress(u.hub, "hub"),
    token: normalizeAddress(u.token, "token"),
    channelId: u.channelId,
    participant,
    partner,
    nonce: u.nonce,
    feeFlat: u.feeFlat,
    feePpm: u.feePpm,
    expiryDeltaSeconds: u.expiryDeltaSeconds,
    htlcMinimum: u.htlcMinimum,
    htlcMaximum: u.htlcMaximum,
    capacityHint: u.capacityHint,
    disabled: u.disabled,
  };
}

/**
 * EIP-712 digest of a channel update (see the module docs). Both signing and verification use it.
 * @returns 32 bytes.
 * @throws QrwpError INVALID_ARGUMENT on a malformed field.
 */
export function channelUpdateDigest(update: UnsignedChannelUpdate): Uint8Array {
  const u = normalizeChannelUpdateFields(update);
  const struct = keccak_256(
    concatBytes(
      CHANNEL_UPDATE_TYPEHASH,
      abiAddressWord(u.token),
      abiWord(u.channelId),
      abiAddressWord(u.participant),
      abiAddressWord(u.partner),
      abiWord(u.nonce),
      abiWord(u.feeFlat),
      abiWord(BigInt(u.feePpm)),
      abiWord(BigInt(u.expiryDeltaSeconds)),
      abiWord(u.htlcMinimum),
      abiWord(u.htlcMaximum),
      abiWord(u.capacityHint),
      abiWord(u.disabled ? 1n : 0n),
    ),
  );
  return keccak_256(concatBytes(new Uint8Array([0x19, 0x01]), domainSeparator(u.chainId, u.hub), struct));
}

/**
 * Signs a channel update with the participant's secp256k1 key.
 * @param update - the fields; `participant` must be `keys.address`.
 * @param keys - the participant's node keys (only the secp256k1 key is used).
 * @returns the signed update (a copy, addresses checksummed).
 * @throws QrwpError INVALID_ARGUMENT on a malformed field or when `keys` are not the participant's.
 */
export function signChannelUpdate(
  update: UnsignedChannelUpdate,
  keys: Pick<NodeKeys, "address" | "secp256k1PrivateKey">,
): ChannelUpdate {
  const u = normalizeChannelUpdateFields(update);
  assertArgument(
    normalizeAddress(keys.address, "keys.address") === u.participant,
    "a channel update is signed by its participant",
    "participant",
    u.participant,
  );
  return { ...u, signature: signDigest(channelUpdateDigest(u), keys.secp256k1PrivateKey) };
}

/**
 * Checks that `update.signature` recovers `update.participant` over {@link channelUpdateDigest}.
 * Does not check the channel, chain or nonce (NetworkGraph does).
 * @throws QrwpError INVALID_SIGNATURE (`details.field` = "signature") when it does not;
 *   QrwpError INVALID_ARGUMENT on a malformed field.
 */
export function verifyChannelUpdate(update: ChannelUpdate): void {
  const digest = channelUpdateDigest(update);
  const participant = normalizeAddress(update.participant, "participant");
  const recovered = recoverDigestSigner(digest, update.signature);
  if (recovered !== participant) {
    throw new QrwpError("INVALID_SIGNATURE", "channel update is not signed by its participant", {
      field: "signature",
      expected: participant,
      recovered,
    });
  }
}

const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

const uint = (max: bigint) =>
  z
    .string()
    .regex(/^(0|[1-9][0-9]{0,77})$/, "must be a decimal unsigned integer")
    .transform((s) => BigInt(s))
    .refine((v) => v <= max, "out of range");
const UINT256_MAX = 2n ** 256n - 1n;
const uint256 = uint(UINT256_MAX);
const uint32 = z.number().int().min(0).max(UINT32_MAX);
const address = z.string().regex(/^0x[0-9a-fA-F]{40}$/, "must be a 20-byte hex address");

const wireSchema = z.strictObject({
  type: z.literal("ChannelUpdate"),
  chainId: uint256,
  hub: address,
  token: address,
  channelId: uint256,
  participant: address,
  partner: address,
  nonce: uint(UINT64_MAX),
  feeFlat: uint256,
  feePpm: uint32,
  expiryDeltaSeconds: uint32,
  htlcMinimum: uint256,
  htlcMaximum: uint256,
  capacityHint: uint256,
  disabled: z.boolean(),
  signature: z.string().regex(/^0x[0-9a-fA-F]{130}$/, "must be a 65-byte hex signature"),
});

/**
 * Encodes a signed channel update to CBOR bytes (bigints as decimal strings).
 * @throws QrwpError INVALID_ARGUMENT on a malformed field.
 */
export function encodeChannelUpdate(update: ChannelUpdate): Uint8Array {
  const u = normalizeChannelUpdateFields(update);
  assertArgument(
    typeof update.signature === "string" && /^0x[0-9a-fA-F]{130}$/.test(update.signature),
    "signature must be 0x-hex of 65 bytes",
    "signature",
  );
  return cbor.encode({
    type: "ChannelUpdate",
    chainId: u.chainId.toString(),
    hub: u.hub,
    token: u.token,
    channelId: u.channelId.toString(),
    participant: u.participant,
    partner: u.partner,
    nonce: u.nonce.toString(),
    feeFlat: u.feeFlat.toString(),
    feePpm: u.feePpm,
    expiryDeltaSeconds: u.expiryDeltaSeconds,
    htlcMinimum: u.htlcMinimum.toString(),
    htlcMaximum: u.htlcMaximum.toString(),
    capacityHint: u.capacityHint.toString(),
    disabled: u.disabled,
    signature: update.signature,
  }) as Uint8Array;
}

/**
 * Decodes and validates the shape of a channel update (not its signature: see {@link verifyChannelUpdate}).
 * @returns the update with checksummed addresses.
 * @throws QrwpError("INVALID_MESSAGE") with `details.field` naming the first bad field; never anything else.
 */
export function decodeChannelUpdate(data: Uint8Array): ChannelUpdate {
  if (!(data instanceof Uint8Array) || data.length > MAX_CHANNEL_UPDATE_BYTES) {
    throw new QrwpError("INVALID_MESSAGE", "channel update too large", {
      field: "update",
      size: data instanceof Uint8Array ? data.length : undefined,
    });
  }
  let raw: unknown;
  try {
    raw = cbor.decode(data);
  } catch (cause) {
    throw new QrwpError(
      "INVALID_MESSAGE",
      "channel update is not valid CBOR",
      { field: "update" },
      { cause },
    );
  }
  const parsed = wireSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue && issue.path.length > 0 ? issue.path.join(".") : "update";
    throw new QrwpError("INVALID_MESSAGE", `invalid ${field}: ${issue?.message ?? "malformed"}`, { field });
  }
  const { type: _type, signature, ...fields } = parsed.data;
  let u: UnsignedChannelUpdate;
  try {
    u = normalizeChannelUpdateFields(fields);
  } catch (cause) {
    const field = (cause as QrwpError).details?.field ?? "update";
    throw new QrwpError(
      "INVALID_MESSAGE",
      `invalid ${String(field)}: ${(cause as Error).message}`,
      { field },
      { cause },
    );
  }
  return { ...u, signature };
}
