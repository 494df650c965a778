/**
 * The node's key files in its data directory, each written with mode 0600:
 * - `keys.json`: the secp256k1 private key (Ethereum account, what the contracts see), the 32-byte ML-DSA-65
 *   seed (FIPS 204 keygen input) and the libp2p Ed25519 private key (protobuf, base64).
 * - `api-token`: the HTTP API bearer token (32 random bytes, hex).
 * Nothing here is ever logged.
 */
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import type { PrivateKey } from "@libp2p/interface";
import { z } from "zod";
import { QrwpError, nodeKeysFromSecrets, type NodeKeys } from "../protocol/index.js";

/** Name of the keys file in a data directory (mode 0600). */
export const KEYS_FILE = "keys.json";
/** Name of the HTTP API bearer-token file in a data directory (mode 0600). */
export const API_TOKEN_FILE = "api-token";

const hex32 = z.string().regex(/^0x[0-9a-f]{64}$/i);
const keysFileSchema = z.object({
  version: z.literal(1),
  secp256k1PrivateKey: hex32,
  mldsaSeed: hex32,
  libp2pPrivateKey: z.string().min(1),
});

/** Everything a node needs to prove who it is. */
export interface NodeIdentity {
  keys: NodeKeys;
  libp2pKey: PrivateKey;
  peerId: string;
}

const hex = (b: Uint8Array) => "0x" + Buffer.from(b).toString("hex");
const unhex = (s: string) => new Uint8Array(Buffer.from(s.slice(2), "hex"));

function writeSecret(path: string, content: string): void {
  writeFileSync(path, content, { mode: 0o600, flag: "wx" });
  chmodSync(path, 0o600);
}

/**
 * Creates keys and an API token in `dataDir` (created with mode 0700 if missing).
 * @throws QrwpError("CONFLICT") if keys already exist there.
 */
export async function initKeystore(
  dataDir: string,
  keyFile = join(dataDir, KEYS_FILE),
): Promise<{ address: string; peerId: string }> {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  if (existsSync(keyFile)) {
    throw new QrwpError("CONFLICT", `keys already exist at ${keyFile}`, { field: "data-dir" });
  }
  const secp = randomBytes(32);
  const seed = randomBytes(32);
  const libp2pKey = await generateKeyPair("Ed25519");
  const keys = nodeKeysFromSecrets(new Uint8Array(secp), new Uint8Array(seed));
  writeSecret(
    keyFile,
    JSON.stringify(
      {
        version: 1,
        secp256k1PrivateKey: hex(secp),
        mldsaSeed: hex(seed),
        libp2pPrivateKey: Buffer.from(privateKeyToProtobuf(libp2pKey)).toString("base64"),
      },
      null,
      2,
    ) + "\n",
  );
  const tokenFile = join(dataDir, API_TOKEN_FILE);
  if (!existsSync(tokenFile)) writeSecret(tokenFile, randomBytes(32).toString("hex") + "\n");
  return { address: keys.address, peerId: peerIdFromPrivateKey(libp2pKey).toString() };
}

/**
 * Loads the identity from a keys file.
 * @throws QrwpError("INVALID_ARGUMENT") naming the file when it is missing or malformed.
 */
export function loadIdentity(keyFile: string): NodeIdentity {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(keyFile, "utf8"));
  } catch (cause) {
    throw new QrwpError(
      "INVALID_ARGUMENT",
      `cannot read key file ${keyFile} (run \`qrwp init\` first)`,
      { field: "key-file" },
      { cause },
    );
  }
  const parsed = keysFileSchema.safeParse(raw);
  if (!parsed.success) {
    throw new QrwpError("INVALID_ARGUMENT", `key file ${keyFile} is malformed`, { field: "key-file" });
  }
  const keys = nodeKeysFromSecrets(unhex(parsed.data.secp256k1PrivateKey), unhex(parsed.data.mldsaSeed));
  const libp2pKey = privateKeyFromProtobuf(Buffer.from(parsed.data.libp2pPrivateKey, "base64"));
  return { keys, libp2pKey, peerId: peerIdFromPrivateKey(libp2pKey).toString() };
}

/** Reads the API bearer token of a data directory. */
export function readApiToken(dataDir: string): string {
  return readFileSync(join(dataDir, API_TOKEN_FILE), "utf8").trim();
}
