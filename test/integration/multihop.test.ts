/**
 * Multi-hop HTLC payments between five `qrwp node start` processes over libp2p TCP on 127.0.0.1, against a
 * `hardhat node` chain. Topology (two paths from alice to dave):
 *
 *   alice --- bob --- carol --- dave        (cheap: bob and carol charge small fees)
 *     \_______ erin ___________/            (expensive: erin charges more)
 *
 * Checks a 3-hop spontaneous payment with fees to the wei, an invoice payment, routes, a mediator that is
 * offline (the payment fails at bob with PEER_OFFLINE and retries over erin), and that channels with no
 * pending locks settle cooperatively with balances matching the off-chain totals.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { expect } from "chai";
import { parseUnits } from "ethers";
import { Devnet, runCli, type NodeProcess } from "../../devnet/harness.js";

interface ChannelJson {
  channelId: string;
  partner: string;
  state: string;
  ourBalance: string;
  partnerBalance: string;
  ourLocked: string;
  partnerLocked: string;
}
interface RoutedPayment {
  paymentId: string;
  status: string;
  fee: string;
  amount: string;
  preimage: string | null;
  route: { address: string; amount: string; fee: string }[];
  attempts: { status: string; errorCode?: string; failedAt?: string; route: { address: string }[] }[];
}

const unit = parseUnits("1", 18);
const deposit = 100n * unit;

describe("integration: multi-hop payments over five nodes", function () {
  this.timeout(600_000);
  let devnet: Devnet;
  const n: Record<string, NodeProcess> = {};
  const channels: Record<string, string> = {};
  let token: string;

  const balances = async (node: NodeProcess) => {
    const { channels: list } = await node.api.call<{ channels: ChannelJson[] }>("GET", "/v1/channels");
    return new Map(list.map((c) => [c.partner.toLowerCase(), c]));
  };
  const ourBalance = async (a: NodeProcess, b: NodeProcess) =>
    BigInt((await balances(a)).get(b.address.toLowerCase())?.ourBalance ?? "0");

  /** Waits until each receiving end of alice -> bob -> carol -> dave (bob, carol, dave) holds no lock. */
  async function waitForUnlocks(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const [receiver, sender] of [
      [n.bob!, n.alice!],
      [n.carol!, n.bob!],
      [n.dave!, n.carol!],
    ] as const) {
      while ((await balances(receiver)).get(sender.address.toLowerCase())?.partnerLocked !== "0") {
        if (Date.now() > deadline) throw new Error("an incoming lock was not unlocked");
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  async function open(a: string, b: string): Promise<void> {
    const view = await n[a]!.api.call<{ channelId: string }>("POST", "/v1/channels", {
      partner: n[b]!.address,
      partnerMultiaddr: n[b]!.multiaddr,
      token,
      deposit: deposit.toString(),
    });
    await n[b]!.api.call("POST", `/v1/channels/${view.channelId}/deposit`, {
      totalDeposit: deposit.toString(),
    });
    channels[`${a}-${b}`] = view.channelId;
  }

  async function waitForRoutes(
    from: NodeProcess,
    to: NodeProcess,
    amount: bigint,
    hops: number[],
  ): Promise<void> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const q = new URLSearchParams({ target: to.address, token, amount: amount.toString(), k: "3" });
      const { routes } = await from.api.call<{ routes: { hops: unknown[] }[] }>("GET", `/v1/routes?${q}`);
      if (hops.every((h) => routes.some((r) => r.hops.length === h))) return;
      if (Date.now() > deadline)
        throw new Error(`no ${hops.join(" and ")}-hop routes from ${from.name} to ${to.name}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  before(async () => {
    devnet = await Devnet.start(mkdtempSync(join(tmpdir(), "qrwp-multihop-")));
    token = devnet.token;
    const fees: Record<string, { feeFlat: bigint; feePpm: number }> = {
      alice: { feeFlat: 0n, feePpm: 0 },
      bob: { feeFlat: 1000n, feePpm: 100 },
      carol: { feeFlat: 2000n, feePpm: 250 },
      dave: { feeFlat: 0n, feePpm: 0 },
      erin: { feeFlat: 10n ** 15n, feePpm: 5000 },
    };
    for (const name of Object.keys(fees)) await devnet.initNode(name, 1000n * unit);
    for (const [name, f] of Object.entries(fees)) {
      n[name] = await devnet.startNode(name, { feeFlat: f.feeFlat, feePpm: f.feePpm, chainPollMs: 250 });
    }
    await open("alice", "bob");
    await open("bob", "carol");
    await open("carol", "dave");
    await open("alice", "erin");
    await open("erin", "dave");
  });

  after(async () => {
    await devnet?.stop();
  });

  it("finds both routes once the graph and the channel updates have propagated", async () => {
    await waitForRoutes(n.alice!, n.dave!, unit, [3, 2]);
    const q = new URLSearchParams({ target: n.dave!.address, token, amount: unit.toString(), k: "3" });
    const { routes } = await n.alice!.api.call<{ routes: { fee: string; hops: { address: string }[] }[] }>(
      "GET",
      `/v1/routes?${q}`,
    );
    expect(routes[0]?.hops.map((h) => h.address)).to.deep.equal([
      n.bob!.address,
      n.carol!.address,
      n.dave!.address,
    ]);
  });

  it("shows the same best route through `qrwp route`", async () => {
    const res = await runCli([
      "route",
      "--target",
      n.dave!.address,
      "--token",
      token,
      "--amount",
      unit.toString(),
      "--api-url",
      n.alice!.apiUrl,
      "--data-dir",
      n.alice!.dataDir,
    ]);
    expect(res.code, res.stderr).to.equal(0);
    const { routes } = JSON.parse(res.stdout) as { routes: { hops: { address: string }[] }[] };
    expect(routes[0]?.hops.map((h) => h.address)).to.deep.equal([
      n.bob!.address,
      n.carol!.address,
      n.dave!.address,
    ]);
  });

  it("pays 3 hops with fees accounted to the wei", async () => {
    const amount = 3n * unit + 12345n;
    const before = {
      aliceBob: await ourBalance(n.alice!, n.bob!),
      bobCarol: await ourBalance(n.bob!, n.carol!),
      carolDave: await ourBalance(n.carol!, n.dave!),
      daveFromCarol: await ourBalance(n.dave!, n.carol!),
    };
    const p = await n.alice!.api.call<RoutedPayment>("POST", "/v1/payments", {
      target: n.dave!.address,
      token,
      amount: amount.toString(),
      maxFee: unit.toString(),
    });
    expect(p.status).to.equal("completed");
    expect(p.preimage).to.match(/^0x[0-9a-f]{64}$/);
    // carol forwards `amount` to dave and charges 2000 + amount * 250 / 1e6; bob forwards that sum.
    const carolFee = 2000n + (amount * 250n) / 1_000_000n;
    const bobFee = 1000n + ((amount + carolFee) * 100n) / 1_000_000n;
    expect(BigInt(p.fee)).to.equal(carolFee + bobFee);
    expect(p.route.map((h) => BigInt(h.amount))).to.deep.equal([
      amount + carolFee + bobFee,
      amount + carolFee,
      amount,
    ]);
    // `completed` means alice knows the secret; the Unlocks follow on every hop.
    await waitForUnlocks(30_000);
    expect(before.aliceBob - (await ourBalance(n.alice!, n.bob!))).to.equal(amount + carolFee + bobFee);
    expect(before.bobCarol - (await ourBalance(n.bob!, n.carol!))).to.equal(amount + carolFee);
    expect(before.carolDave - (await ourBalance(n.carol!, n.dave!))).to.equal(amount);
    expect((await ourBalance(n.dave!, n.carol!)) - before.daveFromCarol).to.equal(amount);
    // Each mediator earned exactly its fee: what it received upstream minus what it sent downstream.
    expect((await ourBalance(n.bob!, n.alice!)) - deposit).to.equal(amount + carolFee + bobFee);
  });

  it("pays 40 concurrent 3-hop payments to the wei (their SecretRequests and RevealSecrets travel in MessageBatches)", async () => {
    const amount = unit / 10n + 777n;
    const count = 40;
    const carolFee = 2000n + (amount * 250n) / 1_000_000n;
    const bobFee = 1000n + ((amount + carolFee) * 100n) / 1_000_000n;
    const before = {
      aliceBob: await ourBalance(n.alice!, n.bob!),
      bobFromAlice: await ourBalance(n.bob!, n.alice!),
      carolDave: await ourBalance(n.carol!, n.dave!),
      daveFromCarol: await ourBalance(n.dave!, n.carol!),
    };
    // Only the 3-hop route via bob and carol (erin's fee is far above this cap).
    const maxFee = (carolFee + bobFee) * 2n;
    const payments = await Promise.all(
      Array.from({ length: count }, () =>
        n.alice!.api.call<RoutedPayment>("POST", "/v1/payments", {
          target: n.dave!.address,
          token,
          amount: amount.toString(),
          maxFee: maxFee.toString(),
        }),
      ),
    );
    for (const p of payments) {
      expect(p.status).to.equal("completed");
      expect(BigInt(p.fee)).to.equal(carolFee + bobFee);
    }
    await waitForUnlocks(60_000);
    const each = amount + carolFee + bobFee;
    expect(before.aliceBob - (await ourBalance(n.alice!, n.bob!))).to.equal(BigInt(count) * each);
    expect((await ourBalance(n.bob!, n.alice!)) - before.bobFromAlice).to.equal(BigInt(count) * each);
    expect(before.carolDave - (await ourBalance(n.carol!, n.dave!))).to.equal(BigInt(count) * amount);
    expect((await ourBalance(n.dave!, n.carol!)) - before.daveFromCarol).to.equal(BigInt(count) * amount);
  });

  it("pays an invoice: the target reveals its own secret; the invoice is paid", async () => {
    const invoice = await n.dave!.api.call<{ paymentHash: string; status: string }>("POST", "/v1/invoices", {
      token,
      amount: (2n * unit).toString(),
      description: "coffee",
    });
    expect(invoice.status).to.equal("open");
    const payInvoice = (amount: bigint) =>
      n.alice!.api.call<RoutedPayment>("POST", "/v1/payments", {
        target: n.dave!.address,
        token,
        amount: amount.toString(),
        paymentHash: invoice.paymentHash,
        paymentId: "coffee-invoice",
      });
    const p = await payInvoice(2n * unit);
    expect(p.status).to.equal("completed");
    // A retry with the same paymentId is answered with the same payment: nothing is sent again.
    const aliceBob = await ourBalance(n.alice!, n.bob!);
    const again = await payInvoice(2n * unit);
    expect(again).to.deep.include({ paymentId: "coffee-invoice", status: "completed", preimage: p.preimage });
    expect(again.attempts.length).to.equal(p.attempts.length);
    expect(await ourBalance(n.alice!, n.bob!)).to.equal(aliceBob);
    const conflict = await payInvoice(3n * unit).then(
      () => null,
      (e: { status: number; body: { error: { code: string; details: { field: string } } } }) => e,
    );
    expect(conflict?.status).to.equal(409);
    expect(conflict?.body.error).to.deep.include({ code: "CONFLICT" });
    expect(conflict?.body.error.details.field).to.equal("amount");
    const deadline = Date.now() + 30_000;
    for (;;) {
      const inv = await n.dave!.api.call<{ status: string; paidAmount: string }>(
        "GET",
        `/v1/invoices/${invoice.paymentHash}`,
      );
      if (inv.status === "paid") {
        expect(BigInt(inv.paidAmount)).to.equal(2n * unit);
        break;
      }
      if (Date.now() > deadline) throw new Error("invoice not marked paid");
      await new Promise((r) => setTimeout(r, 200));
    }
  });

  it("kill -9 of a mediator with its forwarded lock stored and unanswered: the forward left its outbox with the proof; after the restart the payment completes in one attempt, to the wei", async () => {
    const amount = unit / 4n + 4321n;
    const carolFee = 2000n + (amount * 250n) / 1_000_000n;
    const bobFee = 1000n + ((amount + carolFee) * 100n) / 1_000_000n;
    const paymentId = "mediator-crash-1";
    // Let the earlier tests' unlocks and the evidence that follows them 250 ms later (sent in the channel's
    // queue, docs/PROTOCOL.md §7.4) reach carol first: a request to a stopped carol would hold the queue.
    await waitForUnlocks(30_000);
    await new Promise((r) => setTimeout(r, 1500));
    const before = {
      aliceBob: await ourBalance(n.alice!, n.bob!),
      bobFromAlice: await ourBalance(n.bob!, n.alice!),
      bobCarol: await ourBalance(n.bob!, n.carol!),
      daveFromCarol: await ourBalance(n.dave!, n.carol!),
    };
    // carol reads nothing while stopped: bob's LockedTransfer to her is stored, sent and never answered.
    process.kill(n.carol!.child.pid!, "SIGSTOP");
    let carolStopped = true;
    let bobDown: number | null = null; // bob's listen port while killed
    try {
      const paying = n.alice!.api.call<RoutedPayment>("POST", "/v1/payments", {
        target: n.dave!.address,
        token,
        amount: amount.toString(),
        paymentId,
        maxFee: ((carolFee + bobFee) * 2n).toString(), // only the route via bob and carol
        timeoutSeconds: 120,
      });
      const bobDb = new Database(join(n.bob!.dataDir, "node.db"), { readonly: true });
      try {
        const pendingToCarol = bobDb.prepare(
          `SELECT COUNT(*) AS c FROM balance_proofs WHERE status = 'pending' AND lower(signer) = ?
             AND channel_id IN (SELECT channel_id FROM channels WHERE lower(partner) = ?)`,
        );
        const deadline = Date.now() + 30_000;
        while (
          (pendingToCarol.get(n.bob!.address.toLowerCase(), n.carol!.address.toLowerCase()) as { c: number })
            .c === 0
        ) {
          if (Date.now() > deadline) throw new Error("bob stored no lock for carol");
          await new Promise((r) => setTimeout(r, 20));
        }
        // The forwarding action left bob's transfer outbox in the transaction that stored the lock's proof.
        const row = bobDb
          .prepare(`SELECT state FROM transfers WHERE role = 'mediator' AND payment_id = ?`)
          .get(paymentId) as { state: string } | undefined;
        expect(row, "bob's mediator transfer").to.not.equal(undefined);
        expect(row!.state).to.not.include('"SendLockedTransfer"');
      } finally {
        bobDb.close();
      }
      // Let bob's frame reach carol's socket buffer (the row is stored before the send): carol then forwards
      // as soon as she runs again, well before dave's lock would expire too soon, however slow bob's restart.
      await new Promise((r) => setTimeout(r, 300));
      const listenPort = Number(n.bob!.multiaddr.split("/tcp/")[1]?.split("/")[0]);
      bobDown = listenPort;
      await n.bob!.kill();
      process.kill(n.carol!.child.pid!, "SIGCONT");
      carolStopped = false;
      n.bob = await devnet.startNode("bob", { listenPort, feeFlat: 1000n, feePpm: 100, chainPollMs: 250 });
      bobDown = null;
      let p = await paying;
      const deadline = Date.now() + 90_000;
      while (p.status === "pending" && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 250));
        p = await n.alice!.api.call<RoutedPayment>("GET", `/v1/payments/${paymentId}`);
      }
      // One attempt: bob did not decline the transfer whose lock it had already forwarded.
      expect(p.status).to.equal("completed");
      expect(p.attempts.length).to.equal(1);
      expect(BigInt(p.fee)).to.equal(carolFee + bobFee);
      await waitForUnlocks(60_000);
      const each = amount + carolFee + bobFee;
      expect(before.aliceBob - (await ourBalance(n.alice!, n.bob!))).to.equal(each);
      expect((await ourBalance(n.bob!, n.alice!)) - before.bobFromAlice).to.equal(each);
      expect(before.bobCarol - (await ourBalance(n.bob!, n.carol!))).to.equal(amount + carolFee);
      expect((await ourBalance(n.dave!, n.carol!)) - before.daveFromCarol).to.equal(amount);
    } finally {
      if (carolStopped) process.kill(n.carol!.child.pid!, "SIGCONT");
      // The later tests need bob.
      if (bobDown !== null) {
        n.bob = await devnet.startNode("bob", {
          listenPort: bobDown,
          feeFlat: 1000n,
          feePpm: 100,
          chainPollMs: 250,
        });
      }
    }
  });

  it("retries over the other path when a mediator is offline, and reports the first failure", async () => {
    await n.carol!.stop();
    const p = await n.alice!.api.call<RoutedPayment>("POST", "/v1/payments", {
      target: n.dave!.address,
      token,
      amount: unit.toString(),
      timeoutSeconds: 60,
    });
    expect(p.status).to.equal("completed");
    expect(p.attempts.length).to.be.greaterThanOrEqual(2);
    expect(p.attempts[0]?.status).to.equal("failed");
    expect(p.attempts[0]?.errorCode).to.equal("PEER_OFFLINE");
    expect(p.attempts[0]?.failedAt).to.equal(n.bob!.address);
    expect(p.attempts.at(-1)?.route.map((h) => h.address)).to.deep.equal([n.erin!.address, n.dave!.address]);
    // erin's fee: 1e15 + amount * 5000 / 1e6
    expect(BigInt(p.fee)).to.equal(10n ** 15n + (unit * 5000n) / 1_000_000n);
    // bob holds no lock from alice any more (the failed attempt's lock was removed).
    const deadline = Date.now() + 30_000;
    while ((await balances(n.bob!)).get(n.alice!.address.toLowerCase())?.partnerLocked !== "0") {
      if (Date.now() > deadline) throw new Error("alice's lock at bob was not removed");
      await new Promise((r) => setTimeout(r, 200));
    }
  });

  it("refuses a payment with no route with NO_ROUTE, and bad input naming the field", async () => {
    const err = await n
      .alice!.api.call("POST", "/v1/payments", {
        target: n.dave!.address,
        token,
        amount: (10_000n * unit).toString(),
      })
      .then(
        () => null,
        (e: { status: number; body: { error: { code: string } } }) => e,
      );
    expect(err?.body.error.code).to.equal("NO_ROUTE");
    const bad = await n
      .alice!.api.call("POST", "/v1/payments", { target: n.dave!.address, token, amount: "1", maxFee: "-1" })
      .then(
        () => null,
        (e: { status: number; body: { error: { code: string; details: { field: string } } } }) => e,
      );
    expect(bad?.status).to.equal(400);
    expect(bad?.body.error.details.field).to.equal("maxFee");
  });
});
