/**
 * Deployment addresses of one QRWP chain deployment, how to deploy one, and how to persist it as JSON.
 */
import { readFile, writeFile, mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import type { ethers } from "ethers";
import { z } from "zod";
import {
  Bridge__factory,
  ChannelHub__factory,
  SecretRegistry__factory,
  TestToken__factory,
} from "../typechain-types/index.js";

/** Addresses of one deployment. `chainId` is a decimal string so the JSON round-trips exactly. */
export interface Deployment {
  /** EIP-155 chain id, decimal string (e.g. "31337"). */
  chainId: string;
  /** Bridge contract address (custody of every settlement module's funds). */
  bridge: string;
  /** ChannelHub contract address (registered in the Bridge as a module). */
  hub: string;
  /** SecretRegistry contract address (HTLC secret reveal times the hub's unlock reads). */
  secretRegistry: string;
  /** TestToken address, or null when no test token was deployed. */
  token: string | null;
  /** Block number of the first deployment transaction (where event followers start). */
  deployBlock: number;
}

/** Options of {@link deployQrwp}. */
export interface DeployOptions {
  /** Also deploy the mintable TestToken (devnets and tests only). Default false. */
  testToken?: boolean;
}

const addressSchema = z.string().regex(/^0x[0-9a-fA-F]{40}$/, "expected a 0x-prefixed 20-byte hex address");

/** Runtime schema of a deployment JSON file. */
export const deploymentSchema = z.strictObject({
  chainId: z.string().regex(/^[1-9][0-9]*$/, "expected a decimal chain id"),
  bridge: addressSchema,
  hub: addressSchema,
  secretRegistry: addressSchema,
  token: addressSchema.nullable(),
  deployBlock: z.number().int().nonnegative(),
});

/**
 * Deploys Bridge (owned by `deployer`), SecretRegistry, ChannelHub(bridge, secretRegistry), registers the
 * hub as a Bridge module and, with `options.testToken`, deploys TestToken. Waits for one confirmation of every transaction.
 * @param deployer A signer connected to a provider; it pays gas and owns the Bridge.
 * @returns The deployment's addresses, chain id and first block.
 */
export async function deployQrwp(deployer: ethers.Signer, options: DeployOptions = {}): Promise<Deployment> {
  const provider = deployer.provider;
  if (provider === null) throw new Error("deployQrwp: the deployer signer must be connected to a provider");
  const network = await provider.getNetwork();
  const owner = await deployer.getAddress();

  const bridge = await new Bridge__factory(deployer).deploy(owner);
  const bridgeReceipt = await bridge.deploymentTransaction()?.wait(1);
  if (!bridgeReceipt) throw new Error("deployQrwp: Bridge deployment was not mined");
  const bridgeAddress = await bridge.getAddress();

  const registry = await new SecretRegistry__factory(deployer).deploy();
  await registry.deploymentTransaction()?.wait(1);
  const secretRegistry = await registry.getAddress();

  const hub = await new ChannelHub__factory(deployer).deploy(bridgeAddress, secretRegistry);
  await hub.deploymentTransaction()?.wait(1);
  const hubAddress = await hub.getAddress();

  const registerTx = await bridge.registerModule(hubAddress);
  await registerTx.wait(1);

  let token: string | null = null;
  if (options.testToken === true) {
    const testToken = await new TestToken__factory(deployer).deploy();
    await testToken.deploymentTransaction()?.wait(1);
    token = await testToken.getAddress();
  }

  return {
    chainId: network.chainId.toString(),
    bridge: bridgeAddress,
    hub: hubAddress,
    secretRegistry,
    token,
    deployBlock: bridgeReceipt.blockNumber,
  };
}

/**
 * Reads and validates a deployment JSON file.
 * @throws Error naming the file and the invalid fields when the JSON does not match {@link deploymentSchema}.
 */
export async function readDeployment(path: string): Promise<Deployment> {
  const text = await readFile(path, "utf8");
  return parseDeployment(JSON.parse(text), path);
}

/** Validates `value` as a {@link Deployment}; `source` names where it came from in the error. */
export function parseDeployment(value: unknown, source = "deployment"): Deployment {
  const result = deploymentSchema.safeParse(value);
  if (!result.success) {
    const issues = result.error.issues.map(
      (issue) => `${issue.path.join(".") || "(root)"}: ${issue.message}`,
    );
    throw new Error(`invalid deployment in ${source}: ${issues.join("; ")}`);
  }
  return result.data;
}

/** Validates `deployment` and writes it as pretty JSON to `path`, creating the directory if needed. */
export async function writeDeployment(path: string, deployment: Deployment): Promise<void> {
  const valid = parseDeployment(deployment, path);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, `${JSON.stringify(valid, null, 2)}\n`, "utf8");
}
