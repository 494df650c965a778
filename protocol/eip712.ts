/**
 * Minimal EIP-712 / ABI encoding helpers shared by every typed struct QRWP hashes by hand (ChannelHub
 * balance proofs, channel updates): 32-byte ABI words and the domain separator
 * `keccak256(typeHash(EIP712Domain) || keccak(name) || keccak(version) || chainId || verifyingContract)`
 * (EIP-712). Digests are cross-checked against ethers' TypedDataEncoder in the unit tests.
 */
import { keccak_256 } from "@noble/hashes/sha3.js";
import { concatBytes, hexToBytes, utf8ToBytes } from "@noble/hashes/utils.js";

/** keccak256 of a UTF-8 string (EIP-712 `string` members and type strings). */
export const keccakText = (s: string): Uint8Array => keccak_256(utf8ToBytes(s));

/** keccak256 of `EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)`. */
export const EIP712_DOMAIN_TYPEHASH = keccakText(
  "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)",
);

/** A uint256 as a 32-byte big-endian ABI word (the caller range-checks `value`). */
export function abiWord(value: bigint): Uint8Array {
  const out = new Uint8Array(32);
  let v = value;
  for (let i = 31; i >= 0 && v > 0n; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** A 0x address as a left-padded 32-byte ABI word (the caller validates the address). */
export function abiAddressWord(address: string): Uint8Array {
  const out = new Uint8Array(32);
  out.set(hexToBytes(address.slice(2)), 12);
  return out;
}

const cache = new Map<string, Uint8Array>();
const CACHE_LIMIT = 128;

/**
 * EIP-712 domain separator (32 bytes) of `{name, version, chainId, verifyingContract}`, memoised (bounded).
 * The caller validates `chainId` (uint256) and `verifyingContract` (address). Returns a fresh copy.
 */
export function eip712DomainSeparator(
  name: string,
  version: string,
  chainId: bigint,
  verifyingContract: string,
): Uint8Array {
  const key = `${name}\u0000${version}\u0000${chainId}\u0000${verifyingContract.toLowerCase()}`;
  let sep = cache.get(key);
  if (sep === undefined) {
    sep = keccak_256(
      concatBytes(
        EIP712_DOMAIN_TYPEHASH,
        keccakText(name),
        keccakText(version),
        abiWord(chainId),
        abiAddressWord(verifyingContract),
      ),
    );
    if (cache.size >= CACHE_LIMIT) cache.clear();
    cache.set(key, sep);
  }
  return Uint8Array.from(sep);
}
