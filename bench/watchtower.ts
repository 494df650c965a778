/**
 * `npm run bench:watchtower`: the watchtower against a `hardhat node` chain, in process (real SQLite file,
 * real signatures, real chain follower and contest transactions).
 *
 * 1. Opens `--channels` channels (default 10,000) between 100 closers and 100 clients; the tower catches up
 *    with their `ChannelOpened` events.
 * 2. **Accept rate with every signature checked**: `--sample` (default 2,000) appointments, each freshly signed
 *    (2 secp256k1 + 1 ML-DSA-65 by the closer side, 2 secp256k1 + 1 ML-DSA-65 by the client), submitted one at
 *    a time to `Watchtower.submit` (checks: hub, channel, participants, nonce, 3 ecrecovers, 2 ML-DSA-65
 *    verifications, pinned key; then one fsync'd SQLite transaction), and `--http-sample` (default 500) more over
 *    `POST /v1/appointments` with 4 in flight.
 * 3. **Store size and memory at `--appointments` (default 100,000) appointments over the channels**: the
 *    remaining appointments (nonces 1..10 per channel) are written through `WatchtowerStore.putAppointment`,
 *    one durable call each, exactly the row `submit` writes (generating 100k ML-DSA-signed appointments would take
 *    ~25 min on this machine; phase 2 measures the checks). Only the highest nonce per slot is kept, so the
 *    table has one row per channel.
 * 4. **Breach to contest**: `--breaches` (default 5) channels closed by their closer while the tower holds an
 *    appointment; the time from the close transaction's receipt to the contest transaction's receipt, with the
 *    contest window start and spread set to 0 (the tower's reaction; by default a tower waits until 30-70 % of
 *    the settle window has passed, on purpose).
 * Prints tables and writes bench/results/watchtower.json.
 */
import "core-js/actual/promise/with-resolvers.js";
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync, existsSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Command } from "commander";
import { Wallet, parseEther, ZeroAddress, type JsonRpcSigner } from "ethers";
import { pino } from "pino";
import { deployQrwp, type Deployment } from "../chain/index.js";
import { ROOT, startLocalChain } from "../devnet/harness.js";
import {
  appointmentDigest,
  appointmentId,
  appointmentToJson,
  createAppointment,
  generateNodeKeys,
  signBalanceProof,
  type Appointment,
  type NodeKeys,
} from "../protocol/index.js";
import { ChannelHub__factory } from "../typechain-types/index.js";
import { buildTowerApi } from "../watchtower/api.js";
import { TowerChain } from "../watchtower/chain.js";
import { Watchtower } from "../watchtower/service.js";
import { WatchtowerStore, newStoredAppointment } from "../watchtower/store.js";
import { latencySummary, positiveInt, runConcurrently } from "./common.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";

const RESULTS_FILE = join(ROOT, "bench", "results", "watchtower.json");
const SIDE = 100;

const opts = new Command("bench:watchtower")
  .option("--channels <n>", "channels on the hub", positiveInt, 10_000)
  .option("--appointments <n>", "appointments in the store phase", positiveInt, 100_000)
  .option("--sample <n>", "fully signed appointments submitted in process", positiveInt, 2_000)
  .option("--http-sample <n>", "fully signed appointments posted over HTTP", positiveInt, 500)
  .option("--breaches <n>", "breaches to time", positiveInt, 5)
  .parse()
  .opts<{ channels: number; appointments: number; sample: number; httpSample: number; breaches: number }>();

const log = pino({ level: process.env.QRWP_LOG_LEVEL ?? "warn" });
const mb = (b: number) => Math.round((b / 1024 / 1024) * 10) / 10;
const ms = (t0: number) => performance.now() - t0;

function appointmentFor(
  d: Deployment,
  channelId: bigint,
  closer: NodeKeys,
  client: NodeKeys,
  nonce: bigint,
): Appointment {
  const proof = signBalanceProof(
    {
      chainId: BigInt(d.chainId),
      hub: d.hub,
      channelId,
      nonce,
      transferredAmount: nonce * 1_000_000_007n,
      lockedAmount: 0n,
      locksRoot: `0x${"00".repeat(32)}`,
    },
    closer,
  );
  return createAppointment(proof, { address: closer.address, mldsaPublicKey: closer.mldsaPublicKey }, client);
}

async function openChannels(
  funder: JsonRpcSigner,
  d: Deployment,
  pairs: [string, string][],
  settleTimeoutSeconds: number,
): Promise<void> {
  const hub = ChannelHub__factory.connect(d.hub, funder);
  const provider = funder.provider;
  let nonce = await funder.getNonce();
  // Hardhat refuses out-of-order nonces while automining: queue a batch, then mine it in one block.
  await provider.send("evm_setAutomine", [false]);
  try {
    const BATCH = 200;
    for (let i = 0; i < pairs.length; i += BATCH) {
      const txs = await Promise.all(
        pairs
          .slice(i, i + BATCH)
          .map(([a, b]) =>
            hub.openChannel(a, b, ZeroAddress, settleTimeoutSeconds, { nonce: nonce++, gasLimit: 150_000 }),
          ),
      );
      await provider.send("evm_mine", []);
      await txs[txs.length - 1]!.wait();
      process.stderr.write(`  opened ${Math.min(i + BATCH, pairs.length)} channels\r`);
    }
  } finally {
    await provider.send("evm_setAutomine", [true]);
  }
  process.stderr.write("\n");
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "qrwp-bench-tower-"));
  const chain = await startLocalChain(join(dir, "hardhat-node.log"));
  const results: Record<string, unknown> = {
    bench: "watchtower",
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version, loadavg: loadavg() },
    options: opts,
  };
  let tower: Watchtower | undefined;
  let store: WatchtowerStore | undefined;
  let towerChain: TowerChain | undefined;
  try {
    const funder = await chain.provider.getSigner(0);
    const deployment = await deployQrwp(funder, { testToken: false });
    console.log(`keys for ${SIDE} closers and ${SIDE} clients ...`);
    const closers = Array.from({ length: SIDE }, () => generateNodeKeys());
    const clients = Array.from({ length: SIDE }, () => generateNodeKeys());
    const channelCount = opts.channels;
    const pairs: [string, string][] = [];
    for (let i = 0; i < channelCount; i++) {
      pairs.push([closers[Math.floor(i / SIDE) % SIDE]!.address, clients[i % SIDE]!.address]);
    }
    // Pairs repeat after SIDE*SIDE channels; a pair can hold one open channel per token.
    if (channelCount > SIDE * SIDE) throw new Error(`at most ${SIDE * SIDE} channels`);
    console.log(`opening ${channelCount} channels ...`);
    let t0 = performance.now();
    await openChannels(funder, deployment, pairs, 3600);
    const openSeconds = ms(t0) / 1000;
    const closerOf = (channelId: bigint) => closers[Math.floor(Number(channelId - 1n) / SIDE) % SIDE]!;
    const clientOf = (channelId: bigint) => clients[Number(channelId - 1n) % SIDE]!;

    // The tower (in process) with its own funded key.
    const towerKeys = generateNodeKeys();
    await (await funder.sendTransaction({ to: towerKeys.address, value: parseEther("10") })).wait();
    store = new WatchtowerStore(join(dir, "watchtower.db"));
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
      pollIntervalMs: 250,
      contestStartPct: 0,
      contestSpreadPct: 0,
      log,
    });
    t0 = performance.now();
    await tower.start();
    const catchUpSeconds = ms(t0) / 1000;
    console.log(`tower caught up with ${store.stats().channels} channels in ${catchUpSeconds.toFixed(1)} s`);

    // Phase 2a: accept rate in process, every signature checked.
    const sample = Math.min(opts.sample, channelCount);
    console.log(`signing ${sample} appointments ...`);
    t0 = performance.now();
    const signed = Array.from({ length: sample }, (_, i) => {
      const id = BigInt(i + 1);
      return appointmentFor(deployment, id, closerOf(id), clientOf(id), 1n);
    });
    const signSeconds = ms(t0) / 1000;
    const lat: number[] = [];
    t0 = performance.now();
    for (const a of signed) {
      const s = performance.now();
      const r = tower.submit(a);
      lat.push(ms(s));
      if (!r.stored) throw new Error("appointment not stored");
    }
    const acceptSeconds = ms(t0) / 1000;
    const inProcess = { count: sample, perSecond: sample / acceptSeconds, latencyMs: latencySummary(lat) };

    // Phase 2b: over HTTP.
    const httpSample = Math.min(opts.httpSample, channelCount);
    const api = await buildTowerApi({ tower, store, log, info: async () => ({}) });
    await api.listen({ host: "127.0.0.1", port: 0 });
    const addr = api.server.address();
    const url = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}/v1/appointments`;
    const bodies = Array.from({ length: httpSample }, (_, i) => {
      const id = BigInt(i + 1);
      return JSON.stringify(
        appointmentToJson(appointmentFor(deployment, id, closerOf(id), clientOf(id), 2n)),
      );
    });
    const httpLat: number[] = [];
    const http = await runConcurrently(httpSample, 4, async (i) => {
      const s = performance.now();
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: bodies[i],
      });
      httpLat.push(ms(s));
      if (res.status !== 201) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
    });
    await api.close();
    const overHttp = {
      count: httpSample,
      concurrency: 4,
      perSecond: httpSample / http.seconds,
      latencyMs: latencySummary(httpLat),
      bodyBytes: bodies[0]!.length,
    };

    // Phase 3: the store at `appointments` appointments over the channels (highest nonce kept per slot).
    const perChannel = Math.ceil(opts.appointments / channelCount);
    const template = signed[0]!;
    const baseDigest = appointmentDigest(template);
    let written = sample + httpSample;
    t0 = performance.now();
    for (let n = 1; n <= perChannel && written < opts.appointments; n++) {
      for (let c = 1; c <= channelCount && written < opts.appointments; c++) {
        const channelId = BigInt(c);
        const nonce = BigInt(n + 2);
        const client = clientOf(channelId).address;
        store.putAppointment(
          newStoredAppointment({
            id: appointmentId(BigInt(deployment.chainId), deployment.hub, channelId, client),
            channelId,
            closingParticipant: closerOf(channelId).address,
            nonClosingParticipant: client,
            nonce,
            balanceHash: template.balanceHash,
            closingSignature: template.closingSignature,
            nonClosingSignature: template.nonClosingSignature,
            digest: `0x${bytesToHex(sha256(Uint8Array.from([...baseDigest, n, c & 255, c >> 8])))}`,
          }),
        );
        written++;
      }
    }
    const fillSeconds = ms(t0) / 1000;
    global.gc?.();
    const mem = process.memoryUsage();
    const stats = store.stats();
    const wal = `${store.path}-wal`;
    const storePhase = {
      appointments: written,
      channels: channelCount,
      rowsKept: stats.appointments,
      dbBytes: stats.dbBytes,
      walBytes: existsSync(wal) ? statSync(wal).size : 0,
      bytesPerRow: Math.round(stats.dbBytes / Math.max(1, stats.appointments + stats.channels)),
      writesPerSecond: (written - sample - httpSample) / fillSeconds,
      rssMB: mb(mem.rss),
      heapUsedMB: mb(mem.heapUsed),
    };

    // Phase 4: breach -> contest mined.
    const breachLat: number[] = [];
    const hubRead = ChannelHub__factory.connect(deployment.hub, chain.provider);
    for (let b = 0; b < opts.breaches; b++) {
      const closer = generateNodeKeys();
      const client = generateNodeKeys();
      const closerWallet = new Wallet(`0x${bytesToHex(closer.secp256k1PrivateKey)}`, chain.provider);
      await (await funder.sendTransaction({ to: closer.address, value: parseEther("1") })).wait();
      const hub = ChannelHub__factory.connect(deployment.hub, closerWallet);
      const openTx = await hub.openChannel(closer.address, client.address, ZeroAddress, 60, { nonce: 0 });
      await openTx.wait();
      const channelId = await hubRead.channelCounter();
      const a = appointmentFor(deployment, channelId, closer, client, 5n);
      // The tower accepts appointments for channels its follower has seen.
      while (!store.channel(channelId)) await new Promise((r) => setTimeout(r, 20));
      tower.submit(a);
      const closeTx = await hub.closeChannel(channelId, client.address, 0n, `0x${"00".repeat(32)}`, "0x", {
        nonce: 1,
      });
      await closeTx.wait();
      const closedAt = performance.now();
      const id = appointmentId(BigInt(deployment.chainId), deployment.hub, channelId, client.address);
      for (;;) {
        const s = store.appointment(id);
        if (s?.status === "contested") break;
        if (s?.status === "missed" || ms(closedAt) > 60_000) throw new Error(`breach ${b} not contested`);
        await new Promise((r) => setTimeout(r, 20));
      }
      breachLat.push(ms(closedAt));
      if ((await hubRead.getParticipant(channelId, closer.address)).nonce !== 5n) {
        throw new Error("contest did not land");
      }
    }
    const breach = { count: opts.breaches, closeToContestMinedMs: latencySummary(breachLat) };

    Object.assign(results, {
      setup: {
        channels: channelCount,
        openSeconds,
        catchUpSeconds,
        signSecondsPerAppointmentMs: (signSeconds * 1000) / sample,
      },
      accept: { inProcess, overHttp },
      store: storePhase,
      breach,
    });
    console.log("\nAppointments accepted (every signature checked)");
    console.table({
      "in process": {
        count: inProcess.count,
        "per s": inProcess.perSecond.toFixed(1),
        "p50 ms": inProcess.latencyMs.p50,
        "p99 ms": inProcess.latencyMs.p99,
      },
      "HTTP, 4 in flight": {
        count: overHttp.count,
        "per s": overHttp.perSecond.toFixed(1),
        "p50 ms": overHttp.latencyMs.p50,
        "p99 ms": overHttp.latencyMs.p99,
      },
    });
    console.log(`\nStore at ${written} appointments over ${channelCount} channels`);
    console.table({
      store: {
        "rows kept": storePhase.rowsKept,
        "db MB": mb(storePhase.dbBytes),
        "WAL MB": mb(storePhase.walBytes),
        "bytes/row": storePhase.bytesPerRow,
        "writes/s": storePhase.writesPerSecond.toFixed(0),
        "RSS MB": storePhase.rssMB,
        "heap MB": storePhase.heapUsedMB,
      },
    });
    console.log("\nBreach: close mined -> contest mined (window start/spread 0, poll 250 ms, tick 1 s)");
    console.table({ breach: { count: breach.count, ...breach.closeToContestMinedMs } });
    mkdirSync(dirname(RESULTS_FILE), { recursive: true });
    writeFileSync(RESULTS_FILE, JSON.stringify(results, null, 2) + "\n");
    console.log(`\nwrote ${RESULTS_FILE}`);
  } finally {
    await tower?.stop();
    towerChain?.destroy();
    store?.close();
    await chain.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
