/**
 * The tower's contest transactions against a `hardhat node` (in process: Watchtower + TowerChain + a real
 * SQLite file). A contest transaction that the chain drops is replaced with the same account nonce and
 * higher fees, and the replacement lands; a newer appointment accepted while a contest is pending is never
 * overwritten by the older contest's progress; a tower given a batch of appointments contests with the latest
 * nonce of the batch.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { Wallet, ZeroAddress, parseEther } from "ethers";
import { pino } from "pino";
import { deployQrwp, type Deployment } from "../../chain/index.js";
import { startLocalChain, type LocalChain } from "../../devnet/harness.js";
import {
  appointmentId,
  createAppointment,
  createAppointmentSlot,
  generateNodeKeys,
  signAppointmentBatch,
  signBalanceProof,
  type NodeKeys,
} from "../../protocol/index.js";
import { ChannelHub__factory } from "../../typechain-types/index.js";
import { TowerChain } from "../../watchtower/chain.js";
import { Watchtower } from "../../watchtower/service.js";
import { WatchtowerStore, type StoredAppointment } from "../../watchtower/store.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hex = (b: Uint8Array) => `0x${Buffer.from(b).toString("hex")}`;

async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

describe("integration: watchtower contest transactions", function () {
  this.timeout(120_000);
  let chain: LocalChain;
  let deployment: Deployment;
  let store: WatchtowerStore;
  let towerChain: TowerChain;
  let tower: Watchtower;
  let towerKeys: NodeKeys;
  const log = pino({ level: "silent" });

  before(async () => {
    chain = await startLocalChain();
    const funder = await chain.provider.getSigner(0);
    deployment = await deployQrwp(funder, { testToken: false });
    towerKeys = generateNodeKeys();
    await (await funder.sendTransaction({ to: towerKeys.address, value: parseEther("5") })).wait();
    store = new WatchtowerStore(join(mkdtempSync(join(tmpdir(), "qrwp-tower-tx-")), "watchtower.db"));
    towerChain = new TowerChain({
      rpcUrls: [chain.rpcUrl],
      deployment,
      privateKey: towerKeys.secp256k1PrivateKey,
      log,
    });
    tower = new Watchtower({
      store,
      deployment,
      chain: towerChain,
      address: towerKeys.address,
      rpcUrls: [chain.rpcUrl],
      pollIntervalMs: 100,
      tickMs: 200,
      mineTimeoutMs: 1500,
      contestStartPct: 0,
      contestSpreadPct: 0,
      log,
    });
    await tower.start();
  });

  after(async () => {
    await tower?.stop();
    towerChain?.destroy();
    store?.close();
    await chain?.provider.send("evm_setAutomine", [true]).catch(() => undefined);
    await chain?.stop();
  });

  /** A channel closer -> client (the closer funded for gas), known to the tower. */
  async function channel(): Promise<{
    closer: NodeKeys;
    client: NodeKeys;
    channelId: bigint;
    wallet: Wallet;
  }> {
    const closer = generateNodeKeys();
    const client = generateNodeKeys();
    const funder = await chain.provider.getSigner(0);
    await (await funder.sendTransaction({ to: closer.address, value: parseEther("1") })).wait();
    const wallet = new Wallet(hex(closer.secp256k1PrivateKey), chain.provider);
    const hub = ChannelHub__factory.connect(deployment.hub, wallet);
    await (await hub.openChannel(closer.address, client.address, ZeroAddress, 120, { nonce: 0 })).wait();
    const channelId = await hub.channelCounter();
    await until("the tower to know the channel", () => (store.channel(channelId) ? true : undefined));
    return { closer, client, channelId, wallet };
  }

  function closerProof(closer: NodeKeys, channelId: bigint, nonce: bigint) {
    return signBalanceProof(
      {
        chainId: BigInt(deployment.chainId),
        hub: deployment.hub,
        channelId,
        nonce,
        transferredAmount: nonce * 10n,
        lockedAmount: 0n,
        locksRoot: `0x${"00".repeat(32)}`,
      },
      closer,
    );
  }

  function appointment(closer: NodeKeys, client: NodeKeys, channelId: bigint, nonce: bigint) {
    return createAppointment(
      closerProof(closer, channelId, nonce),
      { address: closer.address, mldsaPublicKey: closer.mldsaPublicKey },
      client,
    );
  }

  const slotOf = (channelId: bigint, client: NodeKeys) =>
    appointmentId(BigInt(deployment.chainId), deployment.hub, channelId, client.address);

  it("replaces a dropped contest transaction (same account nonce, higher fees) and the replacement lands", async () => {
    const { closer, client, channelId, wallet } = await channel();
    await tower.submit(appointment(closer, client, channelId, 5n));
    const hub = ChannelHub__factory.connect(deployment.hub, wallet);
    await (
      await hub.closeChannel(channelId, client.address, 0n, `0x${"00".repeat(32)}`, "0x", { nonce: 1 })
    ).wait();
    // From now on nothing is mined until we say so: the tower's first contest waits in the mempool.
    await chain.provider.send("evm_setAutomine", [false]);
    try {
      const id = slotOf(channelId, client);
      const first = await until("the first contest", () => {
        const a = store.appointment(id);
        return a?.status === "contest_sent" ? a : undefined;
      });
      expect(await chain.provider.send("hardhat_dropTransaction", [first.contestTxHash])).to.equal(true);
      const replaced: StoredAppointment = await until(
        "the replacement",
        () => {
          const a = store.appointment(id);
          return a && a.contestTxHashes.length >= 2 ? a : undefined;
        },
        20_000,
      );
      expect(replaced.contestTx?.txNonce).to.equal(first.contestTx?.txNonce);
      expect(replaced.contestTx!.maxFeePerGas > first.contestTx!.maxFeePerGas).to.equal(true);
      await chain.provider.send("evm_mine", []);
      const done = await until("contested", () => {
        const a = store.appointment(id);
        return a?.status === "contested" ? a : undefined;
      });
      expect(done.contestTxHash).to.equal(replaced.contestTxHash);
      expect((await hub.getParticipant(channelId, closer.address)).nonce).to.equal(5n);
    } finally {
      await chain.provider.send("evm_setAutomine", [true]);
    }
  });

  it("a newer appointment accepted while a contest is pending wins; the newer nonce is contested", async () => {
    const { closer, client, channelId, wallet } = await channel();
    await tower.submit(appointment(closer, client, channelId, 3n));
    const hub = ChannelHub__factory.connect(deployment.hub, wallet);
    await (
      await hub.closeChannel(channelId, client.address, 0n, `0x${"00".repeat(32)}`, "0x", { nonce: 1 })
    ).wait();
    await chain.provider.send("evm_setAutomine", [false]);
    try {
      const id = slotOf(channelId, client);
      await until("the first contest", () =>
        store.appointment(id)?.status === "contest_sent" ? true : undefined,
      );
      // The client (late) hands over a newer proof while the contest for nonce 3 is pending.
      const r = await tower.submit(appointment(closer, client, channelId, 4n));
      expect(r.stored).to.equal(true);
      // Mine the pending contest for nonce 3, then let blocks come with transactions again.
      await chain.provider.send("evm_mine", []);
      await chain.provider.send("evm_setAutomine", [true]);
      // The slot still holds nonce 4 (the older contest's progress did not overwrite it) and it lands.
      const done = await until(
        "nonce 4 on-chain",
        async () => ((await hub.getParticipant(channelId, closer.address)).nonce === 4n ? true : undefined),
        20_000,
      );
      expect(done).to.equal(true);
      expect(store.appointment(id)?.nonce).to.equal(4n);
    } finally {
      await chain.provider.send("evm_setAutomine", [true]);
    }
  });

  it("a tower given a batch of appointments contests the latest nonce", async () => {
    const { closer, client, channelId, wallet } = await channel();
    // The client's batch: three nonces of this channel in no particular order (the highest is stored, the
    // others superseded).
    const slot = (nonce: bigint) =>
      createAppointmentSlot(
        closerProof(closer, channelId, nonce),
        { address: closer.address, mldsaPublicKey: closer.mldsaPublicKey },
        client,
      );
    const batch = signAppointmentBatch(
      { chainId: BigInt(deployment.chainId), hub: deployment.hub, tower: towerKeys.address },
      [slot(2n), slot(7n), slot(4n)],
      client,
    );
    const r = await tower.submitBatch(batch, { address: client.address });
    expect(r.results.map((x) => x.outcome)).to.deep.equal(["superseded", "stored", "superseded"]);
    const id = slotOf(channelId, client);
    expect(store.appointment(id)?.nonce).to.equal(7n);
    const hub = ChannelHub__factory.connect(deployment.hub, wallet);
    await (
      await hub.closeChannel(channelId, client.address, 0n, `0x${"00".repeat(32)}`, "0x", { nonce: 1 })
    ).wait();
    const done = await until("contested", () => {
      const a = store.appointment(id);
      return a?.status === "contested" ? a : undefined;
    });
    expect(done.nonce).to.equal(7n);
    expect((await hub.getParticipant(channelId, closer.address)).nonce).to.equal(7n);
  });
});
