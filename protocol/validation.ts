/**
 * Boundary validators for the shapes the protocol uses everywhere (uint256, bytes32 hex, addresses,
 * byte arrays). Each throws `QrwpError("INVALID_ARGUMENT", ..., { field, value })` naming the field.
 */
import { getAddress } from "ethers";
import { UINT256_MAX } from "./constants.js";
import { assertArgument } from "./errors.js";

const HEX32_RE = /^0x[0-9a-fA-F]{64}$/;
const ADDRESS_RE = /^0x[0-9a-fA-F]{40}$/;

/** Asserts `value` is a bigint in `[0, 2^256 - 1]` (Solidity `uint256`). @throws QrwpError INVALID_ARGUMENT */
export function assertUint256(value: unknown, field: string): asserts value is bigint {
  assertArgument(
    typeof value === "bigint" && value >= 0n && value <= UINT256_MAX,
    `${field} must be a uint256 bigint`,
    field,
    value,
  );
}

/** Asserts `value` is a 0x-prefixed 32-byte hex string (Solidity `bytes32`). @throws QrwpError INVALID_ARGUMENT */
export function assertBytes32Hex(value: unknown, field: string): asserts value is string {
  assertArgument(
    typeof value === "string" && HEX32_RE.test(value),
    `${field} must be 0x-prefixed 32-byte hex`,
    field,
    value,
  );
}

/** Inputs of {@link normalizeAddress} that were valid, with their checksummed form (bounded; cleared when full). */
const checksummed = new Map<string, string>();
const CHECKSUMMED_LIMIT = 4096;

/**
 * Validates an Ethereum address and returns it EIP-55 checksummed. Accepts all-lowercase / all-uppercase
 * hex or a correct checksum; a mixed-case string with a wrong checksum is rejected (EIP-55). Valid inputs are
 * memoised (the checksum costs a keccak256, ~20 µs in JS, and hot paths see the same few addresses).
 * @throws QrwpError INVALID_ARGUMENT
 */
export function normalizeAddress(value: unknown, field: string): string {
  if (typeof value === "string") {
    const hit = checksummed.get(value);
    if (hit !== undefined) return hit;
  }
  assertArgument(
    typeof value === "string" && ADDRESS_RE.test(value),
    `${field} must be a 20-byte 0x address`,
    field,
    value,
  );
  let address: string;
  try {
    address = getAddress(value);
  } catch {
    assertArgument(false, `${field} has an invalid EIP-55 checksum`, field, value);
  }
  if (checksummed.size >= CHECKSUMMED_LIMIT) checksummed.clear();
  checksummed.set(value, address);
  return address;
}

/** Asserts `value` is a Uint8Array of exactly `length` bytes (any length if omitted). @throws QrwpError INVALID_ARGUMENT */
export function assertBytes(value: unknown, field: string, length?: number): asserts value is Uint8Array {
  assertArgument(value instanceof Uint8Array, `${field} must be a Uint8Array`, field);
  if (length !== undefined) {
    assertArgument(
      value.length === length,
      `${field} must be ${length} bytes`,
      field,
      `${value.length} bytes`,
    );
  }
}
