/**
 * The HTTP boundary of a node and a watchtower (issue 11, "strict HTTP input"), against real processes: a
 * `hardhat node` chain, two `qrwp node start` processes with a channel alice -> bob and a
 * `qrwp watchtower start`, all shared by the whole file, spoken to over raw HTTP. Nothing is coerced or
 * dropped (a JSON number or an array for an amount, an unknown field, a wrong type are 400 naming the field),
 * amounts are bounded to uint256, a deposit above the wallet is a 4xx that approves nothing on-chain, client
 * mistakes are 4xx, a direct payment that may still complete is 202 pending and is paid once however
 * often it is retried with the same payment id, and the payment list's query is as strict as the rest.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { Wallet, parseUnits } from "ethers";
import { Devnet, type NodeProcess, type TowerProcess } from "../../devnet/harness.js";
import { waitUntil } from "./api-errors.js";
import { ChannelHub__factory, TestToken__factory } from "../../typechain-types/index.js";

interface Answer {
  status: number;
  body: Record<string, unknown> & {
    error?: { code: string; message: string; details: Record<string, unknown> };
  };
}
interface ChannelJson {
  channelId: string;
  ourNonce: string;
  ourDeposit: string;
  totals: { sent: string; received: string; sentCount: number; receivedCount: number };
}

const unit = parseUnits("1", 18);
const TWO_256 = 1n << 256n;

describe("integration: strict HTTP input on the node and watchtower APIs", function () {
  this.timeout(180_000);
  let devnet: Devnet;
  let alice: NodeProcess;
  let bob: NodeProcess;
  let tower: TowerProcess;
  let token: string;
  let channelId: string;
  let bobStopped = false;

  /** Sends `body` verbatim (a string is sent as is: JSON numbers beyond 2^53 survive) and reads the answer. */
  async function send(
    apiUrl: string,
    apiToken: string,
    method: string,
    path: string,
    body?: unknown,
  ): Promise<Answer> {
    const res = await fetch(apiUrl + path, {
      method,
      headers: {
        ...(apiToken ? { authorization: `Bearer ${apiToken}` } : {}),
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
    });
    return { status: res.status, body: (await res.json().catch(() => ({}))) as Answer["body"] };
  }
  const call = (method: string, path: string, body?: unknown) =>
    send(alice.apiUrl, alice.api.token, method, path, body);

  /** Expects a coded refusal: status, code and the field it names. */
  function refused(a: Answer, status: number, code: string, field?: string): void {
    expect(a.status, JSON.stringify(a.body)).to.equal(status);
    expect(a.body.error?.code, JSON.stringify(a.body)).to.equal(code);
    if (field !== undefined) expect(a.body.error?.details.field, JSON.stringify(a.body)).to.equal(field);
  }

  const channelOf = async (n: NodeProcess) => n.api.call<ChannelJson>("GET", `/v1/channels/${channelId}`);
  const allowance = () =>
    TestToken__factory.connect(token, devnet.chain.provider).allowance(
      alice.address,
      devnet.deployment.bridge,
    );
  const txCount = () => devnet.chain.provider.getTransactionCount(alice.address, "latest");

  before(async () => {
    devnet = await Devnet.start(mkdtempSync(join(tmpdir(), "qrwp-http-")));
    token = devnet.token;
    await devnet.initNode("alice", 1000n * unit);
    await devnet.initNode("bob", 1000n * unit);
    await devnet.initWatchtower("tower");
    [alice, bob, tower] = await Promise.all([
      devnet.startNode("alice"),
      devnet.startNode("bob"),
      devnet.startWatchtower("tower"),
    ]);
    const opened = await alice.api.call<ChannelJson>("POST", "/v1/channels", {
      partner: bob.address,
      partnerMultiaddr: bob.multiaddr,
      token,
      deposit: (100n * unit).toString(),
      settleTimeoutSeconds: 600,
    });
    channelId = opened.channelId;
  });

  after(async () => {
    if (bobStopped) bob.child.kill("SIGCONT");
    await devnet?.stop();
  });

  const payBody = (extra: Record<string, unknown> = {}) => ({
    target: bob.address,
    token,
    amount: "1",
    ...extra,
  });

  it("refuses a JSON number or an array for an amount instead of coercing it", async () => {
    const before = await channelOf(alice);
    // 12345678901234567890 is no float64: coerced it would have been rounded to ...7168.
    const asNumber = `{"target":"${bob.address}","token":"${token}","amount":12345678901234567890}`;
    refused(await call("POST", "/v1/payments", asNumber), 400, "INVALID_ARGUMENT", "amount");
    refused(
      await call("POST", "/v1/payments", payBody({ amount: ["5"] })),
      400,
      "INVALID_ARGUMENT",
      "amount",
    );
    refused(await call("POST", "/v1/invoices", { token, amount: 5 }), 400, "INVALID_ARGUMENT", "amount");
    expect((await channelOf(alice)).ourNonce).to.equal(before.ourNonce);
  });

  it("refuses unknown fields (also nested, in the query and on body-less routes) and wrong types, naming them", async () => {
    refused(await call("POST", "/v1/payments", payBody({ memo: "x" })), 400, "INVALID_ARGUMENT", "memo");
    refused(
      await call("POST", "/v1/payments/p-1/processed", {
        processed: { channelId, nonce: "1", signature: `0x${"11".repeat(65)}`, extra: true },
      }),
      400,
      "INVALID_ARGUMENT",
      "processed.extra",
    );
    refused(
      await call("POST", "/v1/payments/p-1/processed", {
        processed: { channelId, signature: `0x${"11".repeat(65)}` },
      }),
      400,
      "INVALID_ARGUMENT",
      "processed.nonce",
    );
    refused(await call("GET", "/v1/channels?verbose=1"), 400, "INVALID_ARGUMENT", "verbose");
    refused(
      await call("POST", `/v1/channels/${channelId}/settle`, { force: true }),
      400,
      "INVALID_ARGUMENT",
      "force",
    );
    // Wrong types: a string for an integer, a string for a boolean, a number for a string.
    refused(
      await call("POST", "/v1/channels", {
        partner: bob.address,
        token,
        deposit: "1",
        settleTimeoutSeconds: "600",
      }),
      400,
      "INVALID_ARGUMENT",
      "settleTimeoutSeconds",
    );
    refused(
      await call("POST", `/v1/channels/${channelId}/close`, { cooperative: "false" }),
      400,
      "INVALID_ARGUMENT",
      "cooperative",
    );
    refused(
      await call("POST", "/v1/payments", payBody({ paymentId: 7 })),
      400,
      "INVALID_ARGUMENT",
      "paymentId",
    );
    refused(await call("POST", "/v1/payments", "[]"), 400, "INVALID_ARGUMENT", "body");
    expect((await channelOf(alice)).ourDeposit).to.equal((100n * unit).toString());
  });

  it("bounds every amount to uint256: 79 digits, 2^256 (payment, maxFee, invoice, deposits) are 400 naming the field", async () => {
    const digits79 = "1".repeat(79);
    refused(
      await call("POST", "/v1/payments", payBody({ amount: digits79 })),
      400,
      "INVALID_ARGUMENT",
      "amount",
    );
    refused(
      await call("POST", "/v1/payments", payBody({ amount: TWO_256.toString() })),
      400,
      "INVALID_ARGUMENT",
      "amount",
    );
    refused(
      await call("POST", "/v1/payments", payBody({ maxFee: TWO_256.toString() })),
      400,
      "INVALID_ARGUMENT",
      "maxFee",
    );
    refused(
      await call("POST", "/v1/invoices", { token, amount: TWO_256.toString() }),
      400,
      "INVALID_ARGUMENT",
      "amount",
    );
    const maxInvoice = await call("POST", "/v1/invoices", { token, amount: (TWO_256 - 1n).toString() });
    expect(maxInvoice.status, JSON.stringify(maxInvoice.body)).to.equal(201);
    refused(
      await call("POST", `/v1/channels/${channelId}/deposit`, { totalDeposit: TWO_256.toString() }),
      400,
      "INVALID_ARGUMENT",
      "totalDeposit",
    );
    refused(
      await call("POST", "/v1/channels", {
        partner: Wallet.createRandom().address,
        partnerMultiaddr: bob.multiaddr,
        token,
        deposit: TWO_256.toString(),
      }),
      400,
      "INVALID_ARGUMENT",
      "deposit",
    );
    refused(
      await call("GET", `/v1/routes?target=${bob.address}&token=${token}&amount=${TWO_256}`),
      400,
      "INVALID_ARGUMENT",
      "amount",
    );
  });

  it("a deposit above the wallet is 422 INSUFFICIENT_FUNDS and approves nothing on-chain", async () => {
    const allowanceBefore = await allowance();
    const txsBefore = await txCount();
    const wallet = await devnet.tokenBalance(alice.address);
    // Raising the deposit: the increase exceeds what the wallet holds (also the largest uint256).
    for (const totalDeposit of [100n * unit + wallet + 1n, TWO_256 - 1n]) {
      refused(
        await call("POST", `/v1/channels/${channelId}/deposit`, { totalDeposit: totalDeposit.toString() }),
        422,
        "INSUFFICIENT_FUNDS",
        "totalDeposit",
      );
    }
    // Opening: refused before anything is sent (no channel, no gas).
    const stranger = Wallet.createRandom().address;
    refused(
      await call("POST", "/v1/channels", {
        partner: stranger,
        partnerMultiaddr: bob.multiaddr,
        token,
        deposit: (wallet + 1n).toString(),
      }),
      422,
      "INSUFFICIENT_FUNDS",
      "deposit",
    );
    const hub = ChannelHub__factory.connect(devnet.deployment.hub, devnet.chain.provider);
    expect(await hub.openChannelIdOf(alice.address, stranger, token)).to.equal(0n);
    expect(await allowance()).to.equal(allowanceBefore);
    expect(await allowance()).to.equal(0n);
    expect(await txCount()).to.equal(txsBefore);
    expect((await channelOf(alice)).ourDeposit).to.equal((100n * unit).toString());
    // A deposit the hub refuses (not above the current one) is a 400 too, with nothing sent.
    refused(
      await call("POST", `/v1/channels/${channelId}/deposit`, { totalDeposit: (100n * unit).toString() }),
      400,
      "INVALID_ARGUMENT",
      "totalDeposit",
    );
    expect(await txCount()).to.equal(txsBefore);
  });

  it("client mistakes are 4xx: an unknown partner without (or with a wrong) partnerMultiaddr, a token that is no contract, a notAfterMs already past", async () => {
    refused(
      await call("POST", "/v1/channels", { partner: Wallet.createRandom().address, token, deposit: "0" }),
      400,
      "INVALID_ARGUMENT",
      "partnerMultiaddr",
    );
    const txsBefore = await txCount();
    // A multiaddr naming no valid peer id; a multiaddr of another node (bob proves his own address); a token
    // address that is no contract (the hub refuses it when the gas is estimated).
    const stranger = Wallet.createRandom().address;
    refused(
      await call("POST", "/v1/channels", {
        partner: stranger,
        partnerMultiaddr: "/ip4/127.0.0.1/tcp/1/p2p/not-a-peer-id",
        token,
        deposit: "0",
      }),
      400,
      "INVALID_ARGUMENT",
      "partnerMultiaddr",
    );
    refused(
      await call("POST", "/v1/channels", {
        partner: stranger,
        partnerMultiaddr: bob.multiaddr,
        token,
        deposit: "0",
      }),
      400,
      "INVALID_ARGUMENT",
      "partnerMultiaddr",
    );
    refused(
      await call("POST", "/v1/channels", { partner: bob.address, token: stranger, deposit: "0" }),
      400,
      "INVALID_ARGUMENT",
      "token",
    );
    expect(await txCount()).to.equal(txsBefore);
    const before = await channelOf(alice);
    refused(
      await call("POST", "/v1/payments/direct-transfers", payBody({ notAfterMs: Date.now() - 1000 })),
      400,
      "INVALID_ARGUMENT",
      "notAfterMs",
    );
    refused(
      await call("POST", "/v1/payments/direct-transfers", payBody({ notAfterMs: "9999999999999" })),
      400,
      "INVALID_ARGUMENT",
      "notAfterMs",
    );
    expect((await channelOf(alice)).ourNonce).to.equal(before.ourNonce); // nothing was signed
  });

  it("query-string integers are strings parsed by the route: k=2 works, k=abc / k=11 / k=2.0 are 400 naming k", async () => {
    const q = `target=${bob.address}&token=${token}&amount=1`;
    // The route appears once alice's graph holds the channel (chain events and gossip): wait for it.
    const ok = await waitUntil(
      "a route to bob",
      async () => {
        const r = await call("GET", `/v1/routes?${q}&k=2`);
        expect(r.status, JSON.stringify(r.body)).to.equal(200);
        return (r.body.routes as unknown[]).length > 0 ? r : undefined;
      },
      30_000,
    );
    expect(ok.body.routes).to.be.an("array").with.length.greaterThan(0);
    for (const k of ["abc", "11", "0", "2.0", ""])
      refused(await call("GET", `/v1/routes?${q}&k=${k}`), 400, "INVALID_ARGUMENT", "k");
    refused(await call("GET", `/v1/routes?${q}&limit=2`), 400, "INVALID_ARGUMENT", "limit");
  });

  it("a payment to an unresponsive partner is 202 pending; retries with its id pay exactly once; another amount is 409", async () => {
    const paymentId = "http-boundary-offline-1";
    const amount = (3n * unit).toString();
    const bobBefore = await channelOf(bob);
    const aliceBefore = await channelOf(alice);
    // Freeze bob: the session stays open, so the proof is signed and sent but never acknowledged.
    bob.child.kill("SIGSTOP");
    bobStopped = true;
    const first = await call("POST", "/v1/payments", payBody({ amount, paymentId }));
    expect(first.status, JSON.stringify(first.body)).to.equal(202);
    expect(first.body).to.include({ paymentId, status: "pending", kind: "direct", amount });
    const polled = await call("GET", `/v1/payments/${paymentId}`);
    expect(polled.body).to.include({ paymentId, status: "pending", direction: "outgoing" });
    // The same id with another amount or target is a conflict, answered without touching the channel.
    refused(
      await call("POST", "/v1/payments", payBody({ amount: (4n * unit).toString(), paymentId })),
      409,
      "CONFLICT",
      "amount",
    );
    bob.child.kill("SIGCONT");
    bobStopped = false;
    // The client retries with the same id: the stored proof is re-delivered, nothing new is signed.
    const retry = await call("POST", "/v1/payments", payBody({ amount, paymentId }));
    expect(retry.status, JSON.stringify(retry.body)).to.equal(201);
    expect(retry.body).to.include({ paymentId, status: "completed", nonce: first.body.nonce, amount });
    const again = await call("POST", "/v1/payments", payBody({ amount, paymentId }));
    expect(again.status).to.equal(201);
    expect(again.body).to.include({ paymentId, status: "completed", nonce: first.body.nonce });
    const [aliceAfter, bobAfter] = await Promise.all([channelOf(alice), channelOf(bob)]);
    expect(bobAfter.totals.receivedCount).to.equal(bobBefore.totals.receivedCount + 1);
    expect(BigInt(bobAfter.totals.received) - BigInt(bobBefore.totals.received)).to.equal(3n * unit);
    expect(aliceAfter.totals.sentCount).to.equal(aliceBefore.totals.sentCount + 1);
    expect(BigInt(aliceAfter.ourNonce)).to.equal(BigInt(aliceBefore.ourNonce) + 1n);
    const received = await bob.api.call<{ direction: string; status: string; amount: string }>(
      "GET",
      `/v1/payments/${paymentId}`,
    );
    expect(received).to.include({ direction: "incoming", status: "completed", amount });
    // A completed id with another amount is still a conflict.
    refused(
      await call("POST", "/v1/payments", payBody({ amount: "1", paymentId })),
      409,
      "CONFLICT",
      "amount",
    );
  });

  it("concurrent calls with one new paymentId, queued behind a slow payment, pay once and get the same answer", async () => {
    const paymentId = "http-boundary-concurrent-1";
    const blockerId = "http-boundary-blocker-1";
    const bobBefore = await channelOf(bob);
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    // A payment to a frozen bob holds the channel's queue, so the three calls all pass the id check before
    // any of them is signed.
    bob.child.kill("SIGSTOP");
    bobStopped = true;
    const blocker = call("POST", "/v1/payments", payBody({ amount: unit.toString(), paymentId: blockerId }));
    await sleep(300);
    const concurrent = Promise.all(
      [1, 2, 3].map(() =>
        call("POST", "/v1/payments", payBody({ amount: (2n * unit).toString(), paymentId })),
      ),
    );
    await sleep(300);
    bob.child.kill("SIGCONT");
    bobStopped = false;
    const [first, answers] = await Promise.all([blocker, concurrent]);
    expect(first.status, JSON.stringify(first.body)).to.be.oneOf([201, 202]);
    for (const a of answers) {
      expect(a.status, JSON.stringify(a.body)).to.be.oneOf([201, 202]);
      expect(a.body).to.include({ paymentId, nonce: answers[0]!.body.nonce });
    }
    // Retried with their ids until completed (a 202 completes by re-delivery).
    for (const [id, amount] of [
      [blockerId, unit],
      [paymentId, 2n * unit],
    ] as const) {
      const done = await call("POST", "/v1/payments", payBody({ amount: amount.toString(), paymentId: id }));
      expect(done.status, JSON.stringify(done.body)).to.equal(201);
    }
    const bobAfter = await channelOf(bob);
    expect(bobAfter.totals.receivedCount).to.equal(bobBefore.totals.receivedCount + 2);
    expect(BigInt(bobAfter.totals.received) - BigInt(bobBefore.totals.received)).to.equal(3n * unit);
  });

  it("GET /v1/payments: newest first as GET /v1/payments/:id shows each, filters, pages by nextCursor; a bad query is 400 naming the field", async () => {
    type Listed = { paymentId: string; direction: string; status: string; createdAtMs: number };
    type Page = { payments: Listed[]; nextCursor: string | null };
    await call("POST", "/v1/payments", payBody({ amount: "2", paymentId: "http-boundary-list-1" }));
    const all = await alice.api.call<Page>("GET", "/v1/payments");
    expect(all.nextCursor).to.equal(null);
    expect(all.payments.length).to.be.greaterThan(3);
    expect(all.payments[0]?.paymentId).to.equal("http-boundary-list-1");
    const times = all.payments.map((p) => p.createdAtMs);
    expect(times).to.deep.equal([...times].sort((a, b) => b - a));
    for (const p of all.payments.slice(0, 3))
      expect(p).to.deep.equal(await alice.api.call("GET", `/v1/payments/${p.paymentId}`));
    // Pages of 2 give the same list, each payment once.
    const paged: string[] = [];
    let before = "";
    for (;;) {
      const page = await alice.api.call<Page>("GET", `/v1/payments?limit=2${before}`);
      expect(page.payments.length).to.be.at.most(2);
      paged.push(...page.payments.map((p) => p.paymentId));
      if (page.nextCursor === null) break;
      before = `&before=${page.nextCursor}`;
    }
    expect(paged).to.deep.equal(all.payments.map((p) => p.paymentId));
    const outgoing = await alice.api.call<Page>("GET", "/v1/payments?direction=outgoing&status=completed");
    expect(outgoing.payments.map((p) => p.paymentId)).to.deep.equal(
      all.payments
        .filter((p) => p.direction === "outgoing" && p.status === "completed")
        .map((p) => p.paymentId),
    );
    const incoming = await bob.api.call<Page>("GET", "/v1/payments?direction=incoming&limit=1000");
    expect(incoming.payments.map((p) => p.paymentId)).to.include("http-boundary-list-1");
    for (const limit of ["0", "1001", "abc", "1.5", ""])
      refused(await call("GET", `/v1/payments?limit=${limit}`), 400, "INVALID_ARGUMENT", "limit");
    refused(await call("GET", "/v1/payments?status=done"), 400, "INVALID_ARGUMENT", "status");
    refused(await call("GET", "/v1/payments?direction=in"), 400, "INVALID_ARGUMENT", "direction");
    for (const cursor of ["yesterday", "1-2-3", "99999999999999999-0-1", "1-0-0"])
      refused(await call("GET", `/v1/payments?before=${cursor}`), 400, "INVALID_ARGUMENT", "before");
    refused(await call("GET", "/v1/payments?offset=5"), 400, "INVALID_ARGUMENT", "offset");
  });

  it("the watchtower API refuses unknown fields and wrong types on POST /v1/appointments, naming them", async () => {
    const hex = (bytes: number) => `0x${"11".repeat(bytes)}`;
    const appointment = {
      chainId: devnet.deployment.chainId.toString(),
      hub: devnet.deployment.hub,
      channelId,
      closingParticipant: alice.address,
      nonClosingParticipant: bob.address,
      nonce: "1",
      balanceHash: hex(32),
      closingSignature: hex(65),
      closingPqSignature: hex(3309),
      closingMldsaPublicKey: hex(1952),
      nonClosingSignature: hex(65),
      nonClosingMldsaPublicKey: hex(1952),
      appointmentSignature: hex(65),
      coSignature: hex(3309),
    };
    const post = (body: unknown) => send(tower.apiUrl, "", "POST", "/v1/appointments", body);
    refused(await post({ ...appointment, fee: "1" }), 400, "INVALID_ARGUMENT", "fee");
    refused(await post({ ...appointment, nonce: 1 }), 400, "INVALID_ARGUMENT", "nonce");
    refused(await post({ ...appointment, channelId: [channelId] }), 400, "INVALID_ARGUMENT", "channelId");
    refused(await post({ ...appointment, nonce: TWO_256.toString() }), 400, "INVALID_ARGUMENT", "nonce");
    refused(await send(tower.apiUrl, "", "GET", "/v1/stats?all=1"), 400, "INVALID_ARGUMENT", "all");
    const stats = await send(tower.apiUrl, "", "GET", "/v1/stats");
    expect(stats.status).to.equal(200);
    expect(stats.body.appointments).to.equal(0); // none of the refused ones was stored
  });
});
