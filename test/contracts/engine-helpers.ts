/**
 * In-process channel engines for the contract-level tests: a `ChannelService` with a real SQLite store, a
 * real libp2p host over TCP on 127.0.0.1 and real keys, against the in-process Hardhat chain.
 */
import { join } from "node:path";
import { ethers, NonceManager } from "ethers";
import hre from "hardhat";
import { generateKeyPair } from "@libp2p/crypto/keys";
import type { Libp2p } from "@libp2p/interface";
import { pino } from "pino";
import { HubClient } from "../../chain/index.js";
import { createHost, dialableMultiaddrs } from "../../host/libp2p.js";
import { SessionTransport } from "../../host/session-transport.js";
import { ChannelService, type ChannelServiceInit } from "../../node/channels/service.js";
import { NodeStore } from "../../node/store/store.js";
import { generateNodeKeys, isQrwpError, type NodeKeys } from "../../protocol/index.js";
import type { Fixture } from "./helpers.js";

const log = pino({ level: "silent" });

export interface Engine {
  keys: NodeKeys;
  store: NodeStore;
  libp2p: Libp2p;
  transport: SessionTransport;
  service: ChannelService;
}

/** Starts an engine named `name` (its store is `<dir>/<name>.db`) with 100 ETH and 1000 test tokens. */
export async function startEngine(
  f: Fixture,
  dir: string,
  name: string,
  options: Pick<ChannelServiceInit, "evidence"> = {},
): Promise<Engine> {
  const keys = generateNodeKeys();
  const wallet = new ethers.Wallet(ethers.hexlify(keys.secp256k1PrivateKey), hre.ethers.provider);
  await hre.network.provider.send("hardhat_setBalance", [
    wallet.address,
    ethers.toQuantity(ethers.parseEther("100")),
  ]);
  await (await f.token.mint(wallet.address, ethers.parseEther("1000"))).wait();
  const store = new NodeStore(join(dir, `${name}.db`));
  const libp2p = await createHost({ privateKey: await generateKeyPair("Ed25519") });
  const transport = new SessionTransport(libp2p, keys, log);
  const service = new ChannelService({
    store,
    keys,
    hub: new HubClient(new NonceManager(wallet), f.deployment),
    deployment: f.deployment,
    transport,
    log,
    listenAddrs: () => dialableMultiaddrs(libp2p),
    ...options,
  });
  await transport.start();
  await service.start();
  return { keys, store, libp2p, transport, service };
}

/** Stops what {@link startEngine} started (engines that never started are skipped). */
export async function stopEngines(engines: (Engine | undefined)[]): Promise<void> {
  for (const e of engines) {
    await e?.service.stop();
    await e?.transport.stop();
    await e?.libp2p.stop();
    e?.store.close();
  }
}

/** The error code `p` rejects with, or "none" when it resolves. */
export async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (isQrwpError(err)) return err.code;
    throw err;
  }
  return "none";
}
