/**
 * `npm run devnet`: the main job. Starts a Hardhat JSON-RPC chain on a free port, deploys Bridge, ChannelHub,
 * SecretRegistry and TestToken, funds five nodes and starts them as `qrwp node start` processes in a
 * topology with two paths from alice to dave:
 *
 *   alice --- bob --- carol --- dave       (bob and carol charge small fees)
 *     \_______ erin ___________/           (erin charges more)
 *
 * Scenario: direct payments alice <-> bob; the routes alice -> dave with their fees; multi-hop payments
 * alice -> dave over the cheap path (spontaneous and one invoice); carol goes offline and the next payments
 * retry over erin; carol comes back. x402: carol's merchant app (examples/weather-merchant.ts, a child process backed
 * by carol's node) sells `GET /weather`; alice buys it 3 times with `qrwpFetch`, routed through bob (one
 * mediator), and the merchant's receipts are printed and checked (count, amounts). Every node hands a watchtower (`qrwp watchtower start`) appointments
 * for its partners' latest balance proofs. Breach: bob goes offline and alice closes alice <-> bob
 * unilaterally — on-chain her own balance proof is then the stale empty one (nonce 0: as if she had paid bob
 * nothing); the tower contests with her latest proof inside the settle window and the channel settles with
 * bob's correct balance. The other channels close cooperatively; the table compares each node's on-chain
 * token change with its off-chain result (payments, fees earned and paid). Exit 0 when all match.
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
import { decodePaymentResponseHeader } from "@x402/core/http";
import {
  Devnet,
  type MerchantProcess,
  type NodeProcess,
  type ReceiptJson,
  type TowerProcess,
} from "./harness.js";
import { appointmentId } from "../protocol/index.js";
import { qrwpFetch } from "../x402/index.js";
import { ChannelHub__factory } from "../typechain-types/index.js";

interface ChannelJson {
  channelId: string;
  partner: string;
  state: string;
  ourDeposit: string;
  ourWithdraw: string;
  ourBalance: string;
  ourLocked: string;
  pendingWithdraw: { ours: string | null; partner: string | null };
  partnerLocked: string;
  totals: { sent: string; received: string; sentCount: number; receivedCount: number };
}
interface RoutedPayment {
  paymentId: string;
  /** `direct` for a payment on a channel with the target (then no route). */
  kind?: string;
  status: string;
  fee: string;
  route?: { address: string; fee: string; amount: string }[];
  attempts: { status: string; errorCode?: string; failedAt?: string }[];
}
interface ChannelDetail extends ChannelJson {
  partnerNonce: string;
  settleTimeoutSeconds: number;
}
interface TowerAppointment {
  nonce: string;
  status: string;
  contestTxHash: string | null;
  contestNotBeforeSeconds: number | null;
  contestDeadlineSeconds: number | null;
}
interface RouteJson {
  fee: string;
  hops: { address: string; amount: string; fee: string; expiration: string }[];
}

const step = (msg: string) => process.stderr.write(`» ${msg}\n`);
const fmt = (v: bigint) => formatUnits(v, 18);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const FEES: Record<string, { feeFlat: bigint; feePpm: number }> = {
  alice: { feeFlat: 0n, feePpm: 0 },
  bob: { feeFlat: parseUnits("0.001", 18), feePpm: 100 },
  carol: { feeFlat: parseUnits("0.002", 18), feePpm: 250 },
  dave: { feeFlat: 0n, feePpm: 0 },
  erin: { feeFlat: parseUnits("0.01", 18), feePpm: 5000 },
};
const EDGES: [string, string][] = [
  ["alice", "bob"],
  ["bob", "carol"],
  ["carol", "dave"],
  ["alice", "erin"],
  ["erin", "dave"],
];

function progress(label: string, total: number): SingleBar {
  const bar = new SingleBar(
    { format: `  ${label} [{bar}] {value}/{total} payments`, stream: process.stderr },
    Presets.shades_classic,
  );
  bar.start(total, 0);
  return bar;
}

async function channels(node: NodeProcess): Promise<ChannelJson[]> {
  return (await node.api.call<{ channels: ChannelJson[] }>("GET", "/v1/channels")).channels;
}

async function waitNoLocks(nodes: NodeProcess[], timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const all = (await Promise.all(nodes.map(channels))).flat();
    if (all.every((c) => c.state !== "opened" || (c.ourLocked === "0" && c.partnerLocked === "0"))) return;
    if (Date.now() > deadline) throw new Error("locks still pending after 60 s");
    await sleep(200);
  }
}

/** Waits until `from` knows a route to `to` of each hop count in `hops` (chain events and gossip arrive async). */
async function waitRoutes(
  from: NodeProcess,
  to: NodeProcess,
  token: string,
  hops: number[],
): Promise<RouteJson[]> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const q = new URLSearchParams({
      target: to.address,
      token,
      amount: parseUnits("1", 18).toString(),
      k: "3",
    });
    const { routes } = await from.api.call<{ routes: RouteJson[] }>("GET", `/v1/routes?${q}`);
    if (hops.every((h) => routes.some((r) => r.hops.length === h))) return routes;
    if (Date.now() > deadline)
      throw new Error(`no ${hops.join(" and ")}-hop routes from ${from.name} to ${to.name} after 60 s`);
    await sleep(300);
  }
}

async function waitSettled(node: NodeProcess, channelId: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ch = await node.api.call<ChannelJson>("GET", `/v1/channels/${channelId}`);
    if (ch.state === "settled") return;
    if (Date.now() > deadline)
      throw new Error(`${node.name} did not see channel ${channelId} settled (${ch.state})`);
    await sleep(300);
  }
}

/** Price of `GET /weather` at carol's merchant app (base units): 0.01 QTT. */
const WEATHER_PRICE = parseUnits("0.01", 18);
/** A buyer's fee cap per purchase: bob's fee (0.001001 QTT) fits, the 2-mediator route over erin does not. */
const WEATHER_MAX_FEE = parseUnits("0.005", 18);

/** One `GET /weather` bought with `qrwpFetch`. */
interface Purchase {
  buyer: string;
  /** The invoice's payment hash (`PAYMENT-RESPONSE.transaction`). */
  paymentHash: string;
  /** The buyer node's payment path, e.g. "alice -> bob -> carol" ("?" if the node has no such payment). */
  path: string;
  /** Routing fee the buyer paid (base units). */
  fee: bigint;
  ms: number;
}

/** Waits until `a` and `b` hold an authenticated session with each other (`connectedPeers` of `/v1/info`). */
async function waitConnected(a: NodeProcess, b: NodeProcess, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const peersOf = async (x: NodeProcess) =>
      (await x.api.call<{ connectedPeers: string[] }>("GET", "/v1/info")).connectedPeers;
    if ((await peersOf(a)).includes(b.address) && (await peersOf(b)).includes(a.address)) return;
    if (Date.now() > deadline) throw new Error(`${a.name} and ${b.name} not connected after ${timeoutMs} ms`);
    await sleep(200);
  }
}

/** `0x1234ab…cdef` */
const shortHash = (h: string) => `${h.slice(0, 8)}…${h.slice(-4)}`;

/** Settle timeout of the alice <-> bob channel (the breach waits it out); the others use 600 s. */
const BREACH_SETTLE_TIMEOUT_SECONDS = 60;

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(300);
  }
}

async function run(options: { keep: boolean; dir?: string }): Promise<number> {
  const dir = options.dir ? resolve(options.dir) : mkdtempSync(join(tmpdir(), "qrwp-devnet-"));
  step(`devnet directory ${dir}`);
  step("starting hardhat node and deploying Bridge, ChannelHub, SecretRegistry, TestToken");
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
    const token = devnet.token;
    // Blocks every second, as on a real chain: settle timeouts are measured in block time.
    devnet.chain.mineEvery(1000);
    step("starting a watchtower (qrwp watchtower start) with its own keys and gas");
    await devnet.initWatchtower("tower");
    const tower: TowerProcess = await devnet.startWatchtower("tower");
    step(`  tower  ${tower.address}  ${tower.multiaddr}`);
    const towerArgs = ["--watchtower", tower.multiaddr];
    const funding = parseUnits("1000", 18);
    const deposit = parseUnits("100", 18);
    const names = Object.keys(FEES);
    step(`creating and funding ${names.join(", ")} (qrwp init)`);
    for (const name of names) await devnet.initNode(name, funding);
    step("starting the nodes (qrwp node start) with their fee schedules and the watchtower");
    const n: Record<string, NodeProcess> = {};
    const start = (name: string) => {
      const f = FEES[name] as { feeFlat: bigint; feePpm: number };
      return devnet.startNode(name, { ...f, chainPollMs: 250, extraArgs: towerArgs });
    };
    for (const name of names) {
      const f = FEES[name] as { feeFlat: bigint; feePpm: number };
      n[name] = await start(name);
      step(`  ${name.padEnd(6)} ${n[name].address}  fee ${fmt(f.feeFlat)} QTT + ${f.feePpm} ppm`);
    }
    const node = (name: string) => n[name] as NodeProcess;
    const before = new Map<string, bigint>();
    for (const name of names) before.set(name, await devnet.tokenBalance(node(name).address));

    const channelIds: { a: string; b: string; id: string }[] = [];
    for (const [a, b] of EDGES) {
      const opened = await node(a).api.call<ChannelJson>("POST", "/v1/channels", {
        partner: node(b).address,
        partnerMultiaddr: node(b).multiaddr,
        token,
        deposit: deposit.toString(),
        settleTimeoutSeconds: a === "alice" && b === "bob" ? BREACH_SETTLE_TIMEOUT_SECONDS : 600,
      });
      await node(b).api.call("POST", `/v1/channels/${opened.channelId}/deposit`, {
        totalDeposit: deposit.toString(),
      });
      channelIds.push({ a, b, id: opened.channelId });
      step(`channel ${opened.channelId}: ${a} <-> ${b}, ${fmt(deposit)} QTT each side`);
    }

    // Direct payments over one channel (no fees): 40 alice -> bob, 20 back.
    let bar = progress("direct alice -> bob", 40);
    for (let i = 1; i <= 40; i++) {
      await node("alice").api.call("POST", "/v1/payments", {
        target: node("bob").address,
        token,
        amount: (parseUnits("0.01", 18) * BigInt(i)).toString(),
      });
      bar.increment();
    }
    bar.stop();
    bar = progress("direct bob -> alice", 20);
    for (let i = 1; i <= 20; i++) {
      await node("bob").api.call("POST", "/v1/payments", {
        target: node("alice").address,
        token,
        amount: (parseUnits("0.005", 18) * BigInt(i)).toString(),
      });
      bar.increment();
    }
    bar.stop();

    step("waiting for the channel graph and fee updates to reach alice (chain events + gossip)");
    // Both paths must be known before the scenario relies on the second one (carol offline).
    const routes = await waitRoutes(node("alice"), node("dave"), token, [3, 2]);
    const nameOf = (address: string) => names.find((m) => node(m).address === address) ?? address;
    console.log("\nroutes alice -> dave for 1 QTT (best first):");
    console.table(
      routes.map((r) => ({
        path: ["alice", ...r.hops.map((h) => nameOf(h.address))].join(" -> "),
        "fee (QTT)": fmt(BigInt(r.fee)),
        "alice locks (QTT)": fmt(BigInt(r.hops[0]?.amount ?? "0")),
        "lock expiry (s from now)": Number(r.hops[0]?.expiration ?? 0) - Math.floor(Date.now() / 1000),
      })),
    );

    const payments: { path: string; amount: bigint; fee: bigint; attempts: number; firstError: string }[] =
      [];
    const routed = async (amount: bigint, extra: Record<string, unknown> = {}) => {
      const p = await node("alice").api.call<RoutedPayment>("POST", "/v1/payments", {
        target: node("dave").address,
        token,
        amount: amount.toString(),
        maxFee: parseUnits("1", 18).toString(),
        ...extra,
      });
      if (p.status !== "completed") throw new Error(`routed payment ${p.paymentId} ended ${p.status}`);
      payments.push({
        path: ["alice", ...(p.route ?? []).map((h) => nameOf(h.address))].join(" -> "),
        amount,
        fee: BigInt(p.fee),
        attempts: p.attempts.length,
        firstError: p.attempts[0]?.errorCode
          ? `${p.attempts[0].errorCode} at ${nameOf(p.attempts[0].failedAt ?? "")}`
          : "",
      });
    };
    bar = progress("routed alice -> dave", 20);
    for (let i = 1; i <= 20; i++) {
      await routed(parseUnits("0.1", 18) * BigInt(i));
      bar.increment();
    }
    bar.stop();
    step("dave issues an invoice for 2.5 QTT; alice pays it (dave reveals his own secret)");
    const invoice = await node("dave").api.call<{ paymentHash: string }>("POST", "/v1/invoices", {
      token,
      amount: parseUnits("2.5", 18).toString(),
      description: "devnet invoice",
    });
    await routed(parseUnits("2.5", 18), { paymentHash: invoice.paymentHash });

    step("carol goes offline; the next payments fail at bob (PEER_OFFLINE) and retry over erin");
    await node("carol").stop();
    bar = progress("routed alice -> dave without carol", 5);
    for (let i = 1; i <= 5; i++) {
      await routed(parseUnits("0.3", 18) * BigInt(i));
      bar.increment();
    }
    bar.stop();
    step("carol comes back");
    n.carol = await start("carol");

    // x402: carol's merchant app sells GET /weather; buyers pay through their own nodes with qrwpFetch.
    step(
      `starting carol's merchant app (examples/weather-merchant.ts): GET /weather for ${fmt(WEATHER_PRICE)} QTT`,
    );
    const merchant: MerchantProcess = await devnet.startMerchant("merchant", node("carol"), {
      price: WEATHER_PRICE,
    });
    step(`  merchant ${merchant.url}  backed by carol ${merchant.address}`);
    await waitConnected(node("bob"), node("carol"));
    const purchases: Purchase[] = [];
    const cities = ["Lisbon", "Porto", "Faro"];
    /** `buyer` buys `GET /weather` `times` times through its own node; each purchase is checked and recorded. */
    const buyWeather = async (buyer: NodeProcess, label: string, times: number) => {
      for (let i = 0; i < times; i++) {
        const city = cities[i % cities.length] as string;
        const t0 = performance.now();
        const res = await qrwpFetch(`${merchant.url}/weather?city=${city}`, undefined, {
          node: { apiUrl: buyer.apiUrl, token: buyer.api.token },
          maxAmount: WEATHER_PRICE,
          maxFee: WEATHER_MAX_FEE,
          asset: token,
        });
        const body = (await res.json()) as { city?: string; error?: string };
        const ms = performance.now() - t0;
        const header = res.headers.get("payment-response");
        if (res.status !== 200 || body.city !== city || !header)
          throw new Error(`${label}: GET /weather -> ${res.status} ${JSON.stringify(body)}`);
        const paymentHash = decodePaymentResponseHeader(header).transaction.toLowerCase();
        const p = await buyer.api
          .call<RoutedPayment>("GET", `/v1/payments/${encodeURIComponent(`x402:${paymentHash}`)}`)
          .catch(() => undefined);
        purchases.push({
          buyer: label,
          paymentHash,
          path: p?.route
            ? [buyer.name, ...p.route.map((h) => nameOf(h.address))].join(" -> ")
            : p?.kind === "direct"
              ? `${buyer.name} -> carol`
              : "?",
          fee: BigInt(p?.fee ?? 0),
          ms,
        });
      }
    };
    step("alice buys GET /weather 3 times with qrwpFetch, routed through bob");
    await buyWeather(node("alice"), "alice", 3);
    // dave has a channel with carol: qrwpFetch pays each 402 with a signed balance-proof increment on it
    // (direct streaming: no route, no fee), which carol's node stores before the resource is served.
    step("dave buys GET /weather 3 times with qrwpFetch, direct streaming on his channel with carol");
    await buyWeather(node("dave"), "dave", 3);

    const { receipts } = await merchant.api.call<{ receipts: ReceiptJson[] }>("GET", "/v1/receipts");
    receipts.sort((a, b) => a.createdAtMs - b.createdAtMs);
    const bought = new Map(purchases.map((p) => [p.paymentHash, p]));
    console.log(
      `\nx402 receipts of carol's merchant app (${merchant.url}, GET /weather for ${fmt(WEATHER_PRICE)} QTT):`,
    );
    console.table(
      receipts.map((r) => ({
        payment: shortHash(r.paymentHash),
        buyer: bought.get(r.paymentHash)?.buyer ?? "?",
        path: bought.get(r.paymentHash)?.path ?? "?",
        route: r.route,
        "amount (QTT)": fmt(BigInt(r.amount)),
        "fee (QTT)": fmt(bought.get(r.paymentHash)?.fee ?? 0n),
        mode: r.mode ?? "-",
        "ms (402 + pay + retry)": Math.round(bought.get(r.paymentHash)?.ms ?? NaN),
        time: new Date(r.createdAtMs).toISOString().slice(11, 23),
      })),
    );
    const receiptsTotal = receipts.reduce((s, r) => s + BigInt(r.amount), 0n);
    const expectedTotal = WEATHER_PRICE * BigInt(purchases.length);
    const receiptsOk =
      receipts.length === purchases.length &&
      receiptsTotal === expectedTotal &&
      receipts.every((r) => bought.has(r.paymentHash) && BigInt(r.amount) === WEATHER_PRICE);
    console.log(
      `x402: ${receipts.length} receipts (expected ${purchases.length}), ${fmt(receiptsTotal)} QTT ` +
        `(expected ${fmt(expectedTotal)}): ${receiptsOk ? "ok" : "MISMATCH"}`,
    );

    console.log("\nmulti-hop payments alice -> dave (by path):");
    const byPath = new Map<
      string,
      { count: number; amount: bigint; fee: bigint; retried: number; firstError: string }
    >();
    for (const p of payments) {
      const row = byPath.get(p.path) ?? { count: 0, amount: 0n, fee: 0n, retried: 0, firstError: "" };
      row.count++;
      row.amount += p.amount;
      row.fee += p.fee;
      if (p.attempts > 1) row.retried++;
      row.firstError ||= p.firstError;
      byPath.set(p.path, row);
    }
    console.table(
      [...byPath].map(([path, r]) => ({
        path,
        payments: r.count,
        "amount (QTT)": fmt(r.amount),
        "fees (QTT)": fmt(r.fee),
        "after a retry": r.retried,
        "first attempt failed with": r.firstError,
      })),
    );

    await waitNoLocks(Object.values(n));
    // A withdraw from an open channel: dave takes 1 QTT of what he received out of carol <-> dave.
    const cd = channelIds.find((c) => c.a === "carol" && c.b === "dave") as { id: string };
    const unit = parseUnits("1", 18);
    const daveWalletBefore = await devnet.tokenBalance(node("dave").address);
    step(
      `dave withdraws 1 QTT from the open channel ${cd.id} (carol <-> dave): carol co-signs, the hub pays it`,
    );
    const withdrawn = await node("dave").api.call<ChannelJson>("POST", `/v1/channels/${cd.id}/withdraw`, {
      amount: unit.toString(),
    });
    await waitFor(
      "carol to see dave's withdraw mined",
      async () => {
        const c = await node("carol").api.call<ChannelJson>("GET", `/v1/channels/${cd.id}`);
        return c.pendingWithdraw.partner === null ? c : undefined;
      },
      30_000,
    );
    const daveWalletGain = (await devnet.tokenBalance(node("dave").address)) - daveWalletBefore;
    step(
      `  dave's wallet +${fmt(daveWalletGain)} QTT; channel: withdrawn ${fmt(BigInt(withdrawn.ourWithdraw))} QTT, ` +
        `balance ${fmt(BigInt(withdrawn.ourBalance))} QTT, still ${withdrawn.state}`,
    );
    const withdrawOk = daveWalletGain === unit && withdrawn.state === "opened";
    // Off-chain result per node: what it holds over its channels (plus what it withdrew) minus its deposits.
    const offchain = new Map<string, bigint>();
    for (const name of names) {
      let net = 0n;
      for (const c of await channels(node(name)))
        net += BigInt(c.ourBalance) + BigInt(c.ourWithdraw) - BigInt(c.ourDeposit);
      offchain.set(name, net);
    }

    // The breach: alice <-> bob, with bob offline.
    const ab = channelIds.find((c) => c.a === "alice" && c.b === "bob") as { id: string };
    const bobView = await node("bob").api.call<ChannelDetail>("GET", `/v1/channels/${ab.id}`);
    const slot = appointmentId(
      BigInt(devnet.deployment.chainId),
      devnet.deployment.hub,
      BigInt(ab.id),
      node("bob").address,
    );
    step(
      `waiting until the tower holds bob's appointment for alice's latest proof (nonce ${bobView.partnerNonce})`,
    );
    await waitFor(
      "the tower's appointment",
      async () => {
        const a = await tower.api.call<TowerAppointment>("GET", `/v1/appointments/${slot}`);
        return a.nonce === bobView.partnerNonce ? a : undefined;
      },
      60_000,
    );
    step(
      "bob goes offline; alice closes alice <-> bob unilaterally (her own proof stays off-chain: nonce 0)",
    );
    await node("bob").stop();
    const hub = ChannelHub__factory.connect(devnet.deployment.hub, devnet.chain.provider);
    await node("alice").api.call("POST", `/v1/channels/${ab.id}/close`, { cooperative: false });
    const closedWithNonce = (await hub.getParticipant(ab.id, node("alice").address)).nonce;
    const closedAt = Number((await hub.getChannel(ab.id)).closedAt);

    step("closing the channels without bob cooperatively meanwhile");
    for (const c of channelIds.filter((x) => x.a !== "bob" && x.b !== "bob")) {
      await node(c.a).api.call("POST", `/v1/channels/${c.id}/close`, { cooperative: true });
      await waitSettled(node(c.a), c.id);
      await waitSettled(node(c.b), c.id);
    }
    step(`waiting for the tower's contest (staggered inside the ${BREACH_SETTLE_TIMEOUT_SECONDS} s window)`);
    const contested = await waitFor(
      "the tower's contest",
      async () => {
        const a = await tower.api.call<TowerAppointment>("GET", `/v1/appointments/${slot}`);
        if (a.status === "missed") throw new Error("the tower missed the breach");
        return a.status === "contested" ? a : undefined;
      },
      BREACH_SETTLE_TIMEOUT_SECONDS * 1000 + 30_000,
    );
    const contestReceipt = await devnet.chain.provider.getTransactionReceipt(
      contested.contestTxHash as string,
    );
    const contestBlock = contestReceipt
      ? await devnet.chain.provider.getBlock(contestReceipt.blockNumber)
      : null;
    step("waiting for the settle window to end; alice's node settles");
    await waitSettled(node("alice"), ab.id, BREACH_SETTLE_TIMEOUT_SECONDS * 1000 + 60_000);
    const [settledEvent] = await hub.queryFilter(hub.filters.ChannelSettled(ab.id), 0);
    const onchainChannel = await hub.getChannel(ab.id);
    const bobIsP1 = onchainChannel.participant1 === node("bob").address;
    const bobPayout = settledEvent
      ? bobIsP1
        ? settledEvent.args.participant1Amount
        : settledEvent.args.participant2Amount
      : -1n;
    step("bob comes back; bob <-> carol closes cooperatively");
    n.bob = await start("bob");
    await waitSettled(node("bob"), ab.id);
    const bc = channelIds.find((c) => c.a === "bob" && c.b === "carol") as {
      id: string;
      a: string;
      b: string;
    };
    await node("bob").api.call("POST", `/v1/channels/${bc.id}/close`, { cooperative: true });
    await waitSettled(node("bob"), bc.id);
    await waitSettled(node("carol"), bc.id);

    console.log(`\nbreach of channel ${ab.id} (alice <-> bob) while bob was offline:`);
    console.table([
      {
        "closed by": "alice",
        "alice's nonce on-chain at close": closedWithNonce.toString(),
        "tower contested with nonce": contested.nonce,
        "contest mined (s after close)": contestBlock ? contestBlock.timestamp - closedAt : "?",
        "settle window (s)": BREACH_SETTLE_TIMEOUT_SECONDS,
        "bob's off-chain balance (QTT)": fmt(BigInt(bobView.ourBalance)),
        "bob's settlement payout (QTT)": fmt(bobPayout),
        match: bobPayout === BigInt(bobView.ourBalance) ? "yes" : "NO",
      },
    ]);
    const towerStats = await tower.api.call<{
      appointmentsAccepted: number;
      clients: number;
      contestsSent: number;
    }>("GET", "/v1/stats");
    console.log(
      `tower: ${towerStats.appointmentsAccepted} appointments accepted from ${towerStats.clients} nodes, ` +
        `${towerStats.contestsSent} contest(s) sent`,
    );

    const totalFees =
      payments.reduce((s, p) => s + p.fee, 0n) +
      purchases.filter((p) => p.buyer === "alice").reduce((s, p) => s + p.fee, 0n);
    const rows = [];
    for (const name of names) {
      const after = await devnet.tokenBalance(node(name).address);
      const onchain = after - (before.get(name) as bigint);
      const off = offchain.get(name) as bigint;
      rows.push({
        node: name,
        "on-chain before (QTT)": fmt(before.get(name) as bigint),
        "on-chain after (QTT)": fmt(after),
        "on-chain change": fmt(onchain),
        "off-chain result": fmt(off),
        match: onchain === off ? "yes" : "NO",
      });
    }
    const sum = [...offchain.values()].reduce((a, b) => a + b, 0n);
    console.log(
      `\nevery channel settled (alice <-> bob after the breach and the tower's contest, the others ` +
        `cooperatively); token ${token}; fees paid by alice ${fmt(totalFees)} QTT`,
    );
    console.table(rows);
    const balancesOk =
      rows.every((r) => r.match === "yes") && sum === 0n && bobPayout === BigInt(bobView.ourBalance);
    console.log(
      balancesOk
        ? "RESULT: on-chain balances match the off-chain totals"
        : "RESULT: MISMATCH between on-chain and off-chain",
    );
    if (!withdrawOk) console.log("RESULT: the withdraw did not reach dave's wallet");
    const ok = balancesOk && receiptsOk && withdrawOk;

    if (options.keep) {
      console.log("\nnetwork left running (Ctrl-C stops it):");
      console.log(`  chain RPC   ${devnet.chain.rpcUrl}`);
      console.log(`  deployment  ${devnet.deploymentFile}`);
      console.log(`  tower       API ${tower.apiUrl}  p2p ${tower.multiaddr}`);
      for (const x of Object.values(n))
        console.log(`  ${x.name.padEnd(6)} API ${x.apiUrl}  token file ${x.tokenFile}  p2p ${x.multiaddr}`);
      console.log(
        `  merchant    ${merchant.url}/weather (GET /health free), backed by carol; ` +
          `GET /v1/receipts token file ${merchant.adminTokenFile}`,
      );
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
