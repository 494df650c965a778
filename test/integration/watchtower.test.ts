/**
 * Watchtowers against a `hardhat node` chain, with `qrwp node start --watchtower ...` and
 * `qrwp watchtower start` processes over libp2p on 127.0.0.1 (real keys, real SQLite files).
 *
 * alice is the closer in every scenario: she pays a victim over a channel, the victim's node hands its
 * towers appointments, and alice closes unilaterally. Her close leaves her own balance proof off-chain
 * (stored nonce 0): unless the victim or a tower submits her latest proof, she gets back what she paid.
 * Scenarios: a breach while the victim is offline (contested by the tower, settled to the wei); two towers
 * (one contest lands, the other is a no-op); a tower killed and restarted inside the settle window; a tower
 * whose first RPC endpoint stalls and whose second fails for a while; the victim online (it contests itself; the tower does
 * nothing); bad appointments over HTTP and libp2p (refused with a coded reason, state unchanged).
 */
import { createServer, type Server } from "node:http";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { Wallet, parseUnits } from "ethers";
import { Devnet, freePort, type NodeProcess, type TowerProcess } from "../../devnet/harness.js";
import { waitUntil } from "./api-errors.js";
import { loadIdentity } from "../../host/keystore.js";
import { createHost } from "../../host/libp2p.js";
import { createLogger } from "../../host/logger.js";
import { SessionTransport } from "../../host/session-transport.js";
import {
  WATCHTOWER_PROTOCOL,
  appointmentId,
  appointmentToJson,
  createAppointment,
  generateNodeKeys,
  signBalanceProof,
  type Appointment,
  type NodeKeys,
} from "../../protocol/index.js";
import { ChannelHub__factory } from "../../typechain-types/index.js";

interface ChannelJson {
  channelId: string;
  partner: string;
  state: string;
  ourBalance: string;
  partnerBalance: string;
}
interface AppointmentJson {
  id: string;
  nonce: string;
  status: string;
  contestTxHash: string | null;
  contestAttempts: number;
}
interface ApiError extends Error {
  status: number;
  body: { error: { code: string; message: string; details?: { field?: string } } };
}

const unit = parseUnits("1", 18);
const deposit = 100n * unit;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const until = waitUntil;

async function apiError(p: Promise<unknown>): Promise<ApiError> {
  return p.then(
    () => expect.fail("the request succeeded"),
    (e: ApiError) => e,
  );
}

describe("integration: watchtowers", function () {
  this.timeout(900_000);
  let devnet: Devnet;
  let alice: NodeProcess;
  let aliceKeys: NodeKeys;
  let stopMining: () => void;
  const towers: Record<string, TowerProcess> = {};
  let token: string;

  before(async () => {
    devnet = await Devnet.start(mkdtempSync(join(tmpdir(), "qrwp-tower-")));
    token = devnet.token;
    // A chain that keeps producing blocks (hardhat mines only on transactions otherwise).
    stopMining = devnet.chain.mineEvery(1000);
    await devnet.initNode("alice", 1000n * unit);
    aliceKeys = loadIdentity(join(devnet.dir, "alice", "keys.json")).keys;
    alice = await devnet.startNode("alice", { chainPollMs: 500 });
    for (const name of ["t1", "t2"]) {
      await devnet.initWatchtower(name);
      towers[name] = await devnet.startWatchtower(name);
    }
  });

  after(async () => {
    stopMining?.();
    await devnet?.stop();
  });

  const hub = () => ChannelHub__factory.connect(devnet.deployment.hub, devnet.chain.provider);

  async function victim(name: string, towerNames: string[], extra: string[] = []): Promise<NodeProcess> {
    if (!devnet.nodes.has(name)) await devnet.initNode(name, 0n);
    return devnet.startNode(name, {
      chainPollMs: 500,
      extraArgs: [...towerNames.flatMap((t) => ["--watchtower", towers[t]!.multiaddr]), ...extra],
    });
  }

  /** alice opens a channel to `to` (only alice deposits), pays it `payments` times; returns the channel id. */
  async function openAndPay(to: NodeProcess, amounts: bigint[], settleTimeoutSeconds = 20): Promise<bigint> {
    const view = await alice.api.call<{ channelId: string }>("POST", "/v1/channels", {
      partner: to.address,
      partnerMultiaddr: to.multiaddr,
      token,
      deposit: deposit.toString(),
      settleTimeoutSeconds,
    });
    for (const amount of amounts) {
      const p = await alice.api.call<{ status: string }>("POST", "/v1/payments", {
        target: to.address,
        token,
        amount: amount.toString(),
      });
      expect(p.status).to.equal("completed");
    }
    return BigInt(view.channelId);
  }

  const slot = (channelId: bigint, client: string) =>
    appointmentId(BigInt(devnet.deployment.chainId), devnet.deployment.hub, channelId, client);

  async function appointmentAt(tower: TowerProcess, channelId: bigint, client: string) {
    return tower.api.call<AppointmentJson>("GET", `/v1/appointments/${slot(channelId, client)}`);
  }

  /** Waits until `tower` holds the appointment with `nonce` for (channel, client). */
  async function towerHas(tower: TowerProcess, channelId: bigint, client: string, nonce: bigint) {
    return until(`${tower.name} to hold nonce ${nonce}`, async () => {
      const a = await appointmentAt(tower, channelId, client);
      return a.nonce === nonce.toString() ? a : undefined;
    });
  }

  async function waitStatus(tower: TowerProcess, channelId: bigint, client: string, statuses: string[]) {
    return until(
      `${tower.name} status ${statuses.join("|")}`,
      async () => {
        const a = await appointmentAt(tower, channelId, client);
        return statuses.includes(a.status) ? a : undefined;
      },
      90_000,
    );
  }

  async function aliceChannel(channelId: bigint): Promise<ChannelJson> {
    return alice.api.call<ChannelJson>("GET", `/v1/channels/${channelId}`);
  }

  async function settled(channelId: bigint): Promise<void> {
    await until(
      "the channel to settle",
      async () => (await hub().getChannel(channelId)).state === 3n,
      120_000,
    );
  }

  /** alice closes; the victim is offline; returns the on-chain token balance change of the victim. */
  async function breach(v: NodeProcess, channelId: bigint, paid: bigint): Promise<void> {
    const victimBefore = await devnet.tokenBalance(v.address);
    const aliceBefore = await devnet.tokenBalance(alice.address);
    await alice.api.call("POST", `/v1/channels/${channelId}/close`, { cooperative: false });
    expect((await hub().getParticipant(channelId, alice.address)).nonce).to.equal(0n);
    await settled(channelId);
    // The tower put alice's latest proof on-chain; the settlement pays the victim everything alice paid.
    expect(await devnet.tokenBalance(v.address)).to.equal(victimBefore + paid);
    expect(await devnet.tokenBalance(alice.address)).to.equal(aliceBefore + deposit - paid);
  }

  it("contests a breach while the victim is offline; the channel settles with the victim's balance to the wei", async () => {
    const bob = await victim("bob", ["t1"]);
    const amounts = [3n * unit, unit / 7n, 11n * unit];
    const channelId = await openAndPay(bob, amounts);
    const paid = amounts.reduce((a, b) => a + b, 0n);
    await towerHas(towers.t1!, channelId, bob.address, BigInt(amounts.length));
    await bob.stop();
    await breach(bob, channelId, paid);
    const a = await appointmentAt(towers.t1!, channelId, bob.address);
    expect(a.status).to.equal("contested");
    expect(a.contestTxHash).to.match(/^0x[0-9a-f]{64}$/);
    const receipt = await devnet.chain.provider.getTransactionReceipt(a.contestTxHash!);
    expect(receipt?.status).to.equal(1);
    expect((await aliceChannel(channelId)).state).to.equal("settled");
  });

  it("with two towers, exactly one contest lands and the other tower does nothing harmful", async () => {
    const carol = await victim("carol", ["t1", "t2"]);
    const amounts = [5n * unit, 2n * unit];
    const channelId = await openAndPay(carol, amounts);
    const paid = amounts.reduce((a, b) => a + b, 0n);
    await towerHas(towers.t1!, channelId, carol.address, 2n);
    await towerHas(towers.t2!, channelId, carol.address, 2n);
    await carol.stop();
    await breach(carol, channelId, paid);
    const updates = await hub().queryFilter(hub().filters.NonClosingBalanceProofUpdated(channelId), 0);
    expect(updates).to.have.length(1);
    const [s1, s2] = await Promise.all([
      appointmentAt(towers.t1!, channelId, carol.address),
      appointmentAt(towers.t2!, channelId, carol.address),
    ]);
    expect([s1.status, s2.status].sort()).to.deep.equal(["contested", "not_needed"]);
    const landed = s1.status === "contested" ? s1 : s2;
    expect(updates[0]!.transactionHash).to.equal(landed.contestTxHash);
  });

  it("a tower killed and restarted inside the settle window still contests", async () => {
    await devnet.initWatchtower("t3");
    // Contest at 60 % of the window exactly, so the kill lands before it.
    const args = ["--contest-start-pct", "60", "--contest-spread-pct", "0"];
    towers.t3 = await devnet.startWatchtower("t3", { extraArgs: args });
    const dave = await victim("dave", ["t3"]);
    const amounts = [4n * unit];
    const channelId = await openAndPay(dave, amounts, 30);
    await towerHas(towers.t3, channelId, dave.address, 1n);
    await dave.stop();
    const victimBefore = await devnet.tokenBalance(dave.address);
    await alice.api.call("POST", `/v1/channels/${channelId}/close`, { cooperative: false });
    await waitStatus(towers.t3, channelId, dave.address, ["breach"]);
    await towers.t3.kill();
    await sleep(3000);
    towers.t3 = await devnet.startWatchtower("t3", { extraArgs: args });
    const a = await waitStatus(towers.t3, channelId, dave.address, ["contested", "missed"]);
    expect(a.status).to.equal("contested");
    await settled(channelId);
    expect(await devnet.tokenBalance(dave.address)).to.equal(victimBefore + amounts[0]!);
  });

  it("misses no breach while one RPC endpoint stalls and the other returns errors for a while", async () => {
    // An endpoint that accepts requests and never answers (the tower's first URL) ...
    const stalled: Server = createServer(() => undefined);
    const stallPort = await freePort();
    await new Promise<void>((r) => stalled.listen(stallPort, "127.0.0.1", r));
    // ... and a JSON-RPC proxy in front of the chain that fails every request while `failing` is set.
    let failing = false;
    let refused = 0;
    const proxy: Server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        if (failing) {
          refused++;
          res.writeHead(503, { "content-type": "text/plain" }).end("unavailable");
          return;
        }
        fetch(devnet.chain.rpcUrl, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: Buffer.concat(chunks),
        })
          .then(async (r) =>
            res.writeHead(r.status, { "content-type": "application/json" }).end(await r.text()),
          )
          .catch(() => res.writeHead(502).end());
      });
    });
    const port = await freePort();
    await new Promise<void>((r) => proxy.listen(port, "127.0.0.1", r));
    try {
      await devnet.initWatchtower("t4");
      towers.t4 = await devnet.startWatchtower("t4", {
        rpcUrls: [`http://127.0.0.1:${stallPort}`, `http://127.0.0.1:${port}`],
        extraArgs: ["--rpc-timeout-ms", "1000"],
      });
      const erin = await victim("erin", ["t4"]);
      const amounts = [6n * unit, unit];
      const channelId = await openAndPay(erin, amounts, 30);
      await towerHas(towers.t4, channelId, erin.address, 2n);
      await erin.stop();
      failing = true;
      const victimBefore = await devnet.tokenBalance(erin.address);
      await alice.api.call("POST", `/v1/channels/${channelId}/close`, { cooperative: false });
      await sleep(6000);
      expect(refused).to.be.greaterThan(0);
      failing = false;
      const a = await waitStatus(towers.t4, channelId, erin.address, ["contested", "missed"]);
      expect(a.status).to.equal("contested");
      await settled(channelId);
      expect(await devnet.tokenBalance(erin.address)).to.equal(victimBefore + 7n * unit);
    } finally {
      failing = false;
      await towers.t4?.stop();
      proxy.close();
      stalled.closeAllConnections();
      stalled.close();
    }
  });

  it("does nothing when the victim is online and contests by itself", async () => {
    const frank = await victim("frank", ["t1"]);
    const channelId = await openAndPay(frank, [unit, unit]);
    await towerHas(towers.t1!, channelId, frank.address, 2n);
    const before = (await towers.t1!.api.call<{ contestsSent: number }>("GET", "/v1/stats")).contestsSent;
    await alice.api.call("POST", `/v1/channels/${channelId}/close`, { cooperative: false });
    const a = await waitStatus(towers.t1!, channelId, frank.address, [
      "not_needed",
      "contested",
      "contest_sent",
    ]);
    expect(a.status).to.equal("not_needed");
    expect(a.contestTxHash).to.equal(null);
    await settled(channelId);
    const after = (await towers.t1!.api.call<{ contestsSent: number }>("GET", "/v1/stats")).contestsSent;
    expect(after).to.equal(before);
    const updates = await hub().queryFilter(hub().filters.NonClosingBalanceProofUpdated(channelId), 0);
    expect(updates).to.have.length(1);
    const tx = await devnet.chain.provider.getTransaction(updates[0]!.transactionHash);
    expect(tx?.from).to.equal(frank.address);
  });

  describe("bad appointments", () => {
    let grace: NodeProcess;
    let graceKeys: NodeKeys;
    let channelId: bigint;
    const chainId = () => BigInt(devnet.deployment.chainId);

    before(async () => {
      grace = await victim("grace", []);
      graceKeys = loadIdentity(join(devnet.dir, "grace", "keys.json")).keys;
      channelId = await openAndPay(grace, [unit]);
    });

    /** An appointment for grace's channel signed with real keys: alice's proof with `nonce`. */
    function make(nonce: bigint, over: Partial<{ channelId: bigint; hub: string; chainId: bigint }> = {}) {
      const proof = signBalanceProof(
        {
          chainId: over.chainId ?? chainId(),
          hub: over.hub ?? devnet.deployment.hub,
          channelId: over.channelId ?? channelId,
          nonce,
          transferredAmount: nonce * 1000n,
          lockedAmount: 0n,
          locksRoot: `0x${"00".repeat(32)}`,
        },
        aliceKeys,
      );
      return createAppointment(
        proof,
        { address: alice.address, mldsaPublicKey: aliceKeys.mldsaPublicKey },
        graceKeys,
      );
    }
    const post = (a: Appointment | Record<string, string>) =>
      towers.t2!.api.call<{ id: string; nonce: string; stored: boolean }>(
        "POST",
        "/v1/appointments",
        "chainId" in a && typeof a.chainId === "bigint" ? appointmentToJson(a as Appointment) : a,
      );
    const accepted = async () =>
      (await towers.t2!.api.call<{ appointmentsAccepted: number }>("GET", "/v1/stats")).appointmentsAccepted;

    it("accepts a good one, treats a replay as a no-op, and refuses a lower or conflicting nonce", async () => {
      const good = make(10n);
      const r = await post(good);
      expect(r).to.include({ nonce: "10", stored: true, id: slot(channelId, grace.address) });
      const count = await accepted();
      expect(await post(good)).to.include({ stored: false });
      for (const bad of [make(9n), make(10n)]) {
        const e = await apiError(post(bad));
        expect(e.status).to.equal(409);
        expect(e.body.error.code).to.equal("STALE_NONCE");
      }
      expect(await accepted()).to.equal(count);
      expect((await appointmentAt(towers.t2!, channelId, grace.address)).nonce).to.equal("10");
    });

    it("refuses bad signatures, naming the signature", async () => {
      const before = await appointmentAt(towers.t2!, channelId, grace.address);
      const flip = (b: Uint8Array) => {
        const c = Uint8Array.from(b);
        c[100] = (c[100] as number) ^ 1;
        return c;
      };
      const other = Wallet.createRandom();
      const cases: [string, Appointment][] = [
        ["coSignature", { ...make(11n), coSignature: flip(make(11n).coSignature) }],
        ["closingPqSignature", { ...make(11n), closingPqSignature: flip(make(11n).closingPqSignature) }],
        ["closingSignature", { ...make(11n), closingSignature: make(12n).closingSignature }],
        ["nonClosingSignature", { ...make(11n), nonClosingSignature: make(12n).nonClosingSignature }],
        [
          "appointmentSignature",
          {
            ...make(11n),
            appointmentSignature: other.signingKey.sign(new Uint8Array(32).fill(1)).serialized,
          },
        ],
      ];
      for (const [field, a] of cases) {
        const e = await apiError(post(a));
        expect(e.body.error.code, field).to.equal("INVALID_SIGNATURE");
        expect(e.body.error.details?.field, field).to.equal(field);
      }
      expect(await appointmentAt(towers.t2!, channelId, grace.address)).to.deep.equal(before);
    });

    it("refuses a wrong channel, a foreign participant and an unknown hub or chain", async () => {
      const count = await accepted();
      let e = await apiError(post(make(20n, { channelId: 999_999n })));
      expect([e.status, e.body.error.code]).to.deep.equal([404, "CHANNEL_NOT_FOUND"]);
      // grace's channel, but the "closer" is a stranger (real keys, valid signatures).
      const mallory = generateNodeKeys();
      const proof = signBalanceProof(
        {
          chainId: chainId(),
          hub: devnet.deployment.hub,
          channelId,
          nonce: 20n,
          transferredAmount: 1n,
          lockedAmount: 0n,
          locksRoot: `0x${"00".repeat(32)}`,
        },
        mallory,
      );
      const stranger = createAppointment(
        proof,
        { address: mallory.address, mldsaPublicKey: mallory.mldsaPublicKey },
        graceKeys,
      );
      e = await apiError(post(stranger));
      expect([e.body.error.code, e.body.error.details?.field]).to.deep.equal([
        "NOT_PARTICIPANT",
        "closingParticipant",
      ]);
      e = await apiError(post(make(20n, { hub: Wallet.createRandom().address })));
      expect([e.status, e.body.error.code, e.body.error.details?.field]).to.deep.equal([
        422,
        "UNKNOWN_HUB",
        "hub",
      ]);
      e = await apiError(post(make(20n, { chainId: 1n })));
      expect([e.body.error.code, e.body.error.details?.field]).to.deep.equal(["UNKNOWN_HUB", "chainId"]);
      const json = appointmentToJson(make(21n));
      e = await apiError(post({ ...json, balanceHash: "0x1234" }));
      expect([e.status, e.body.error.code, e.body.error.details?.field]).to.deep.equal([
        400,
        "INVALID_ARGUMENT",
        "balanceHash",
      ]);
      expect(await accepted()).to.equal(count);
      expect((await appointmentAt(towers.t2!, channelId, grace.address)).nonce).to.equal("10");
    });

    it("over libp2p, refuses an appointment sent by anyone but its non-closing participant", async () => {
      const keys = loadIdentity(join(devnet.dir, "alice", "keys.json"));
      // A fresh libp2p identity speaking with alice's node keys: the session proves alice, not grace.
      const { generateKeyPair } = await import("@libp2p/crypto/keys");
      const libp2p = await createHost({ privateKey: await generateKeyPair("Ed25519") });
      const transport = new SessionTransport(libp2p, keys.keys, createLogger({ level: "silent" }), {
        protocol: WATCHTOWER_PROTOCOL,
      });
      try {
        const tower = await transport.connectByMultiaddr([towers.t2!.multiaddr]);
        expect(tower).to.equal(towers.t2!.address);
        const reply = await transport.request(tower, { type: "Appointment", appointment: make(30n) }, null);
        expect(reply).to.include({ type: "Error", code: "NOT_PARTICIPANT" });
        expect((await appointmentAt(towers.t2!, channelId, grace.address)).nonce).to.equal("10");
      } finally {
        await transport.stop();
        await libp2p.stop();
      }
    });
  });
});
