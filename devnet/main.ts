/**
 * `npm run devnet`: the main job. Starts a Hardhat JSON-RPC chain on a free port, deploys Bridge, ChannelHub
 * and TestToken, funds two nodes (alice, bob), starts them as `qrwp node start` processes, opens a channel,
 * sends 100 payments alice -> bob and 50 back over libp2p, closes cooperatively and prints each party's
 * on-chain token balance before and after next to the off-chain totals. Exit 0 when everything matches.
 *
 *   --keep          leave the network running (prints each node's API URL and token file); Ctrl-C stops it
 *   --dir <path>    where data directories and logs go (default: a new temp directory)
 */
import "core-js/actual/promise/with-resolvers.js";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Command } from "commander";
import { SingleBar, Presets } from "cli-progress";
import { formatUnits, parseUnits } from "ethers";
import { Devnet, type NodeProcess } from "./harness.js";

interface ChannelJson {
  channelId: string;
  state: string;
  ourBalance: string;
  totals: { sent: string; received: string; sentCount: number; receivedCount: number };
}

const step = (msg: string) => process.stderr.write(`» ${msg}\n`);
const fmt = (v: bigint) => formatUnits(v, 18);

async function payMany(
  from: NodeProcess,
  to: NodeProcess,
  token: string,
  amounts: bigint[],
  label: string,
): Promise<void> {
  const bar = new SingleBar(
    { format: `  ${label} [{bar}] {value}/{total} payments`, stream: process.stderr },
    Presets.shades_classic,
  );
  bar.start(amounts.length, 0);
  try {
    for (const [i, amount] of amounts.entries()) {
      const p = await from.api.call<{ status: string }>("POST", "/v1/payments", {
        target: to.address,
        token,
        amount: amount.toString(),
        paymentId: `${label.replace(/\W+/g, "-")}-${i}`,
      });
      if (p.status !== "completed") throw new Error(`payment ${i} from ${from.name} ended ${p.status}`);
      bar.increment();
    }
  } finally {
    bar.stop();
  }
}

async function waitSettled(node: NodeProcess, channelId: string, timeoutMs = 30_000): Promise<ChannelJson> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ch = await node.api.call<ChannelJson>("GET", `/v1/channels/${channelId}`);
    if (ch.state === "settled") return ch;
    if (Date.now() > deadline)
      throw new Error(`${node.name} did not see channel ${channelId} settled (state ${ch.state})`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

async function run(options: { keep: boolean; dir?: string }): Promise<number> {
  const dir = options.dir ? resolve(options.dir) : mkdtempSync(join(tmpdir(), "qrwp-devnet-"));
  step(`devnet directory ${dir}`);
  step("starting hardhat node and deploying Bridge, ChannelHub, TestToken");
  const devnet = await Devnet.start(dir);
  let cleanedUp = false;
  const cleanup = async () => {
    if (cleanedUp) return;
    cleanedUp = true;
    step("stopping nodes and chain");
    await devnet.stop();
  };
  const onSignal = () => {
    void cleanup().then(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    step(
      `chain ${devnet.chain.rpcUrl} (chain id ${devnet.deployment.chainId}); hub ${devnet.deployment.hub}`,
    );
    const funding = parseUnits("1000", 18);
    const deposit = parseUnits("100", 18);
    step("creating and funding alice and bob (qrwp init)");
    await devnet.initNode("alice", funding);
    await devnet.initNode("bob", funding);
    step("starting alice and bob (qrwp node start)");
    const [alice, bob] = await Promise.all([devnet.startNode("alice"), devnet.startNode("bob")]);
    const token = devnet.token;
    const before = {
      alice: await devnet.tokenBalance(alice.address),
      bob: await devnet.tokenBalance(bob.address),
    };

    step(`alice opens a channel with bob and deposits ${fmt(deposit)} QTT`);
    const opened = await alice.api.call<ChannelJson>("POST", "/v1/channels", {
      partner: bob.address,
      partnerMultiaddr: bob.multiaddr,
      token,
      deposit: deposit.toString(),
      settleTimeoutSeconds: 600,
    });
    const channelId = opened.channelId;

    // 100 payments alice -> bob of 0.01, 0.02, ... 1.00 QTT; 50 back of 0.005, 0.010, ... 0.250 QTT.
    const toBob = Array.from({ length: 100 }, (_, i) => parseUnits("0.01", 18) * BigInt(i + 1));
    const toAlice = Array.from({ length: 50 }, (_, i) => parseUnits("0.005", 18) * BigInt(i + 1));
    const t0 = performance.now();
    await payMany(alice, bob, token, toBob, "alice -> bob");
    await payMany(bob, alice, token, toAlice, "bob -> alice");
    const seconds = (performance.now() - t0) / 1000;
    step(
      `150 payments in ${seconds.toFixed(1)} s (${(150 / seconds).toFixed(1)} payments/s through the HTTP API, one at a time)`,
    );

    const aliceView = await alice.api.call<ChannelJson>("GET", `/v1/channels/${channelId}`);
    const bobView = await bob.api.call<ChannelJson>("GET", `/v1/channels/${channelId}`);

    step("alice closes the channel cooperatively");
    await alice.api.call("POST", `/v1/channels/${channelId}/close`, { cooperative: true });
    await waitSettled(alice, channelId);
    await waitSettled(bob, channelId);
    const after = {
      alice: await devnet.tokenBalance(alice.address),
      bob: await devnet.tokenBalance(bob.address),
    };

    const sentToBob = toBob.reduce((a, b) => a + b, 0n);
    const sentToAlice = toAlice.reduce((a, b) => a + b, 0n);
    const rows = [
      {
        party: "alice",
        node: aliceView,
        before: before.alice,
        after: after.alice,
        expected: sentToAlice - sentToBob,
      },
      {
        party: "bob",
        node: bobView,
        before: before.bob,
        after: after.bob,
        expected: sentToBob - sentToAlice,
      },
    ].map((r) => {
      const offchainNet = BigInt(r.node.totals.received) - BigInt(r.node.totals.sent);
      const onchainNet = r.after - r.before;
      return {
        party: r.party,
        "on-chain before (QTT)": fmt(r.before),
        "on-chain after (QTT)": fmt(r.after),
        "on-chain change": fmt(onchainNet),
        "off-chain sent": `${fmt(BigInt(r.node.totals.sent))} (${r.node.totals.sentCount})`,
        "off-chain received": `${fmt(BigInt(r.node.totals.received))} (${r.node.totals.receivedCount})`,
        "off-chain net": fmt(offchainNet),
        match: onchainNet === offchainNet && offchainNet === r.expected ? "yes" : "NO",
      };
    });
    console.log(`\nchannel ${channelId} settled cooperatively; token ${token}`);
    console.table(rows);
    const ok = rows.every((r) => r.match === "yes");
    console.log(
      ok
        ? "RESULT: on-chain balances match the off-chain totals"
        : "RESULT: MISMATCH between on-chain and off-chain",
    );

    if (options.keep) {
      console.log("\nnetwork left running (Ctrl-C stops it):");
      console.log(`  chain RPC   ${devnet.chain.rpcUrl}`);
      console.log(`  deployment  ${devnet.deploymentFile}`);
      for (const n of [alice, bob])
        console.log(`  ${n.name.padEnd(6)} API ${n.apiUrl}  token file ${n.tokenFile}  p2p ${n.multiaddr}`);
      await new Promise(() => undefined);
    }
    return ok ? 0 : 1;
  } catch (err) {
    console.error(`devnet failed: ${err instanceof Error ? err.message : String(err)} (logs in ${dir})`);
    return 1;
  } finally {
    if (!options.keep) await cleanup();
  }
}

const program = new Command("devnet")
  .description("run a local QRWP network and a payment scenario")
  .option("--keep", "leave the network running after the scenario", false)
  .option("--dir <path>", "directory for data and logs (default: a new temp directory)")
  .action(async (opts: { keep: boolean; dir?: string }) => {
    process.exitCode = await run(opts);
  });
await program.parseAsync(process.argv);
