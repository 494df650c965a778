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
 *    **Batches** (protocol/appointment-batch.ts, `Watchtower.submitBatch`), every signature checked: per batch the
 *    client's secp256k1 and ML-DSA-65 signatures, per slot the closer's and the client's secp256k1 signatures,
 *    and the closer's ML-DSA-65 evidence once per channel (on its highest nonce in the batch; lower slots are
 *    superseded, checked and counted, not stored); one fsync'd SQLite transaction per batch.
 *    (c) `--batch-sample` slots in batches of `--batch-size`, one slot per channel (what a node sends: its
 *    latest proof per channel); (d) as many slots with `--nonces-per-channel` nonces of each channel in a
 *    batch (appointments for every update, or a node that was offline); (e) `--http-batch-sample` slots, one per
 *    channel, over `POST /v1/appointment-batches` with 2 in flight. Each phase reports slots/s, the batch
 *    latency and the tower process's CPU ms per slot (the bench's own signing is done before the clock starts).
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
  MAX_APPOINTMENT_BATCH_SLOTS,
  appointmentBatchToJson,
  appointmentDigest,
  appointmentId,
  appointmentToJson,
  createAppointment,
  createAppointmentSlot,
  generateNodeKeys,
  secp256k1Backend,
  signAppointmentBatch,
  signBalanceProof,
  type Appointment,
  type AppointmentBatch,
  type AppointmentSlot,
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
  .option("--batch-sample <n>", "slots submitted in batches in process, per batch phase", positiveInt, 2_048)
  .option("--batch-size <n>", "slots per batch (at most 64)", positiveInt, MAX_APPOINTMENT_BATCH_SLOTS)
  .option("--nonces-per-channel <n>", "nonces of each channel in one batch (phase d)", positiveInt, 8)
  .option("--http-batch-sample <n>", "slots posted in batches over HTTP", positiveInt, 1_024)
  .parse()
  .opts<{
    channels: number;
    appointments: number;
    sample: number;
    httpSample: number;
    breaches: number;
    batchSample: number;
    batchSize: number;
    noncesPerChannel: number;
    httpBatchSample: number;
  }>();
if (opts.batchSize > MAX_APPOINTMENT_BATCH_SLOTS || opts.batchSize > SIDE) {
  throw new Error(`--batch-size must be at most ${MAX_APPOINTMENT_BATCH_SLOTS}`);
}
if (opts.batchSize % opts.noncesPerChannel !== 0) {
  throw new Error("--nonces-per-channel must divide --batch-size");
}

const log = pino({ level: process.env.QRWP_LOG_LEVEL ?? "warn" });
const mb = (b: number) => Math.round((b / 1024 / 1024) * 10) / 10;
const ms = (t0: number) => performance.now() - t0;

function closerProof(d: Deployment, channelId: bigint, closer: NodeKeys, nonce: bigint) {
  return signBalanceProof(
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
}

function appointmentFor(
  d: Deployment,
  channelId: bigint,
  closer: NodeKeys,
  client: NodeKeys,
  nonce: bigint,
): Appointment {
  return createAppointment(
    closerProof(d, channelId, closer, nonce),
    { address: closer.address, mldsaPublicKey: closer.mldsaPublicKey },
    client,
  );
}

function slotFor(
  d: Deployment,
  channelId: bigint,
  closer: NodeKeys,
  client: NodeKeys,
  nonce: bigint,
): AppointmentSlot {
  return createAppointmentSlot(
    closerProof(d, channelId, closer, nonce),
    { address: closer.address, mldsaPublicKey: closer.mldsaPublicKey },
    client,
  );
}

/** CPU ms of this process since `since` (user + system). */
function cpuMs(since: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1000;
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
    machine: {
      cpus: cpus().length,
      model: cpus()[0]?.model,
      node: process.version,
      loadavg: loadavg(),
      secp256k1: secp256k1Backend(),
    },
    options: opts,
  };
  let tower: Watchtower | undefined;
  let store: WatchtowerStore | undefined;
  let towerChain: TowerChain | undefined;
  try {
    const funder = await chain.provider.getSigner(0);
    const deployment = await deployQrwp(funder, { testToken: false });
    console.log(`secp256k1 backend: ${secp256k1Backend()}`);
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
    let cpu0 = process.cpuUsage();
    t0 = performance.now();
    for (const a of signed) {
      const s = performance.now();
      const r = await tower.submit(a);
      lat.push(ms(s));
      if (!r.stored) throw new Error("appointment not stored");
    }
    const acceptSeconds = ms(t0) / 1000;
    const inProcess = {
      count: sample,
      perSecond: sample / acceptSeconds,
      latencyMs: latencySummary(lat),
      cpuMsPerAppointment: cpuMs(cpu0) / sample,
      loadavg: loadavg(),
    };

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
    cpu0 = process.cpuUsage();
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
      // The HTTP client runs in this process too.
      cpuMsPerAppointment: cpuMs(cpu0) / httpSample,
      loadavg: loadavg(),
    };

    // Phase 2c-2e: batches. Client k's channels are k+1, k+101, ... (100 channels, 100 distinct closers);
    // each phase takes its own clients, and nonces above the ones the single path stored.
    const size = opts.batchSize;
    const perChannel = opts.noncesPerChannel;
    const channelOf = (client: number, j: number) => BigInt(client + 1 + SIDE * j);
    let nextClient = 0;
    const batchesOf = (slots: number, noncesPerChannel: number, firstNonce: bigint): AppointmentBatch[] => {
      const batches: AppointmentBatch[] = [];
      const channelsPerBatch = size / noncesPerChannel;
      for (let done = 0; done < slots; done += size) {
        const k = nextClient++;
        if (k >= SIDE) throw new Error("not enough clients for the batch phases: lower the samples");
        const client = clients[k]!;
        const batchSlots: AppointmentSlot[] = [];
        for (let j = 0; j < channelsPerBatch; j++) {
          const channelId = channelOf(k, j);
          if (channelId > BigInt(channelCount)) throw new Error("not enough channels for the batch phases");
          for (let n = 0; n < noncesPerChannel; n++) {
            batchSlots.push(
              slotFor(deployment, channelId, closerOf(channelId), client, firstNonce + BigInt(n)),
            );
          }
        }
        batches.push(
          signAppointmentBatch(
            { chainId: BigInt(deployment.chainId), hub: deployment.hub, tower: towerKeys.address },
            batchSlots,
            client,
          ),
        );
      }
      return batches;
    };
    const runBatches = async (batches: AppointmentBatch[], label: string) => {
      const batchLat: number[] = [];
      let accepted = 0;
      let stored = 0;
      const c0 = process.cpuUsage();
      const start = performance.now();
      for (const b of batches) {
        const s0 = performance.now();
        const r = await tower!.submitBatch(b, { address: b.client });
        batchLat.push(ms(s0));
        if (r.refused > 0 || r.replayed > 0) throw new Error(`${label}: a slot was not accepted`);
        accepted += r.stored + r.superseded;
        stored += r.stored;
      }
      const seconds = ms(start) / 1000;
      return {
        slots: accepted,
        stored,
        batches: batches.length,
        batchSize: size,
        perSecond: accepted / seconds,
        batchLatencyMs: latencySummary(batchLat),
        cpuMsPerSlot: cpuMs(c0) / accepted,
        loadavg: loadavg(),
      };
    };
    console.log(`signing ${opts.batchSample} slots (one per channel) in batches of ${size} ...`);
    const distinct = await runBatches(batchesOf(opts.batchSample, 1, 3n), "one slot per channel");
    console.log(
      `signing ${opts.batchSample} slots (${perChannel} nonces per channel) in batches of ${size} ...`,
    );
    const multiNonce = {
      ...(await runBatches(batchesOf(opts.batchSample, perChannel, 11n), "several nonces per channel")),
      noncesPerChannel: perChannel,
    };
    console.log(`signing ${opts.httpBatchSample} slots for HTTP batches ...`);
    const httpBatches = batchesOf(opts.httpBatchSample, 1, 3n).map((b) => ({
      slots: b.slots.length,
      body: JSON.stringify(appointmentBatchToJson(b)),
    }));
    // A fresh server: the first one's idle keep-alive connections may close under the client meanwhile.
    const batchApi = await buildTowerApi({ tower, store, log, info: async () => ({}) });
    await batchApi.listen({ host: "127.0.0.1", port: 0 });
    const batchAddr = batchApi.server.address();
    const batchPort = typeof batchAddr === "object" && batchAddr ? batchAddr.port : 0;
    const batchUrl = `http://127.0.0.1:${batchPort}/v1/appointment-batches`;
    const httpBatchLat: number[] = [];
    let httpSlots = 0;
    cpu0 = process.cpuUsage();
    const httpBatchRun = await runConcurrently(httpBatches.length, 2, async (i) => {
      const s = performance.now();
      const res = await fetch(batchUrl, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: httpBatches[i]!.body,
      });
      httpBatchLat.push(ms(s));
      if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
      const r = (await res.json()) as { stored: number; superseded: number };
      httpSlots += r.stored + r.superseded;
    });
    await batchApi.close();
    const batchOverHttp = {
      slots: httpSlots,
      batches: httpBatches.length,
      batchSize: size,
      concurrency: 2,
      perSecond: httpSlots / httpBatchRun.seconds,
      batchLatencyMs: latencySummary(httpBatchLat),
      bodyBytes: httpBatches[0]!.body.length,
      cpuMsPerSlot: cpuMs(cpu0) / httpSlots,
      loadavg: loadavg(),
    };

    // Phase 3: the store at `appointments` appointments over the channels (highest nonce kept per slot).
    const fillPerChannel = Math.ceil(opts.appointments / channelCount);
    const template = signed[0]!;
    const baseDigest = appointmentDigest(template);
    const acceptedSoFar = sample + httpSample + distinct.slots + multiNonce.slots + batchOverHttp.slots;
    let written = acceptedSoFar;
    t0 = performance.now();
    for (let n = 1; n <= fillPerChannel && written < opts.appointments; n++) {
      for (let c = 1; c <= channelCount && written < opts.appointments; c++) {
        const channelId = BigInt(c);
        const nonce = BigInt(n + 100);
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
      writesPerSecond: (written - acceptedSoFar) / fillSeconds,
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
      await tower.submit(a);
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
      accept: {
        inProcess,
        overHttp,
        batches: {
          oneSlotPerChannel: distinct,
          severalNoncesPerChannel: multiNonce,
          overHttp: batchOverHttp,
        },
      },
      store: storePhase,
      breach,
    });
    console.log("\nAppointments accepted (every signature checked; p50/p99 of one request or batch)");
    const load = (l: number[]) => l.map((v) => v.toFixed(2)).join(" ");
    console.table({
      "single, in process": {
        appointments: inProcess.count,
        "per s": inProcess.perSecond.toFixed(1),
        "p50 ms": inProcess.latencyMs.p50,
        "p99 ms": inProcess.latencyMs.p99,
        "CPU ms each": inProcess.cpuMsPerAppointment.toFixed(2),
        load: load(inProcess.loadavg),
      },
      "single, HTTP, 4 in flight": {
        appointments: overHttp.count,
        "per s": overHttp.perSecond.toFixed(1),
        "p50 ms": overHttp.latencyMs.p50,
        "p99 ms": overHttp.latencyMs.p99,
        "CPU ms each": overHttp.cpuMsPerAppointment.toFixed(2),
        load: load(overHttp.loadavg),
      },
      [`batches of ${size}, 1 slot/channel`]: {
        appointments: distinct.slots,
        "per s": distinct.perSecond.toFixed(1),
        "p50 ms": distinct.batchLatencyMs.p50,
        "p99 ms": distinct.batchLatencyMs.p99,
        "CPU ms each": distinct.cpuMsPerSlot.toFixed(2),
        load: load(distinct.loadavg),
      },
      [`batches of ${size}, ${perChannel} nonces/channel`]: {
        appointments: multiNonce.slots,
        "per s": multiNonce.perSecond.toFixed(1),
        "p50 ms": multiNonce.batchLatencyMs.p50,
        "p99 ms": multiNonce.batchLatencyMs.p99,
        "CPU ms each": multiNonce.cpuMsPerSlot.toFixed(2),
        load: load(multiNonce.loadavg),
      },
      [`batches of ${size}, HTTP, 2 in flight`]: {
        appointments: batchOverHttp.slots,
        "per s": batchOverHttp.perSecond.toFixed(1),
        "p50 ms": batchOverHttp.batchLatencyMs.p50,
        "p99 ms": batchOverHttp.batchLatencyMs.p99,
        "CPU ms each": batchOverHttp.cpuMsPerSlot.toFixed(2),
        load: load(batchOverHttp.loadavg),
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
