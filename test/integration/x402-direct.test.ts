/**
 * x402 v2 direct streaming end to end: two `qrwp node start` processes over libp2p against a `hardhat node`
 * chain, alice (payer) with a channel to carol (merchant node), and a fastify merchant app in this process
 * with `qrwpPaywall` pricing `GET /weather`, backed by carol's node API. Real SQLite, no mocks. Checks:
 * `qrwpFetch` pays with a signed balance-proof increment (no routing), carol's node holds each payment
 * before the resource is served, receipts say `direct` with alice as payer, the acknowledgement reaches
 * alice's node; replays, concurrent double use, tampered and mismatched transfers are coded 402s that change
 * no balance; the unmodified `@x402/fetch` pays directly too (its transfer is then confirmed by the node's
 * own re-send before the next one). The fast path: a `qrwpFetchClient` pays a route through one 402 and then
 * straight with the cached requirement; stateless tickets that are forged, expired or for another route are
 * refused before carol's node stores anything; a direct payment under a ticket is usable once; a burst of
 * concurrent payments (signed together by alice's node) leaves every receipt, also after a graceful stop; a
 * merchant without routed mode answers 402s naming no invoice.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import Fastify, { type FastifyInstance } from "fastify";
import { parseUnits } from "ethers";
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { decodePaymentRequiredHeader, encodePaymentSignatureHeader } from "@x402/core/http";
import type { PaymentRequirements } from "@x402/core/types";
import { Devnet, type NodeProcess } from "../../devnet/harness.js";
import { readApiToken } from "../../host/keystore.js";
import {
  decodeEnvelope,
  encodeEnvelope,
  randomSecret,
  secretHashOf,
  x402Network,
  x402PaymentId,
} from "../../protocol/index.js";
import {
  QrwpChannelClientScheme,
  ReceiptStore,
  price,
  qrwpFetch,
  qrwpFetchClient,
  qrwpPaywall,
} from "../../x402/index.js";

const unit = parseUnits("1", 18);
const deposit = 100n * unit;
const weatherPrice = unit / 1000n + 3n;

interface ChannelView {
  channelId: string;
  partner: string;
  ourBalance?: string;
  received?: string;
  [k: string]: unknown;
}

describe("integration: x402 direct streaming (alice's channel with carol's merchant app)", function () {
  this.timeout(180_000);
  let devnet: Devnet;
  const n: Record<string, NodeProcess> = {};
  let token: string;
  let app: FastifyInstance;
  let baseUrl: string;
  let aliceNode: { apiUrl: string; token: string };
  let served = 0;

  /** carol's channel view with alice (balances as the node reports them). */
  async function carolChannel(): Promise<Record<string, unknown>> {
    const { channels } = await n.carol!.api.call<{ channels: ChannelView[] }>("GET", "/v1/channels");
    const c = channels.find((x) => x.partner.toLowerCase() === n.alice!.address.toLowerCase());
    expect(c, "carol's channel with alice").to.not.equal(undefined);
    return c as Record<string, unknown>;
  }

  async function receipts(): Promise<{ count: number; receipts: Record<string, unknown>[] }> {
    const res = await fetch(`${baseUrl}/v1/receipts`);
    return (await res.json()) as { count: number; receipts: Record<string, unknown>[] };
  }

  /** A fresh 402's requirement and alice's node's signed (undelivered) transfer paying it. */
  async function signedFor402(): Promise<{
    req: PaymentRequirements;
    paymentHash: string;
    transfer: string;
  }> {
    const res = await fetch(`${baseUrl}/weather`);
    expect(res.status).to.equal(402);
    await res.body?.cancel();
    const req = decodePaymentRequiredHeader(res.headers.get("payment-required")!).accepts[0]!;
    const paymentHash = (req.extra as { invoice: { paymentHash: string } }).invoice.paymentHash;
    const signed = await n.alice!.api.call<{ transfer: string }>("POST", "/v1/payments/direct-transfers", {
      target: n.carol!.address,
      token,
      amount: req.amount,
      paymentId: x402PaymentId(paymentHash),
    });
    return { req, paymentHash, transfer: signed.transfer };
  }

  /** A fresh 402 of `path` (its requirement carries a ticket) and alice's signed transfer under a random hash. */
  async function signedForTicket(path = "/weather"): Promise<{
    req: PaymentRequirements;
    paymentHash: string;
    transfer: string;
  }> {
    const res = await fetch(`${baseUrl}${path}`);
    expect(res.status).to.equal(402);
    await res.body?.cancel();
    const req = decodePaymentRequiredHeader(res.headers.get("payment-required")!).accepts[0]!;
    expect(req.extra.ticket, "the 402 carries a ticket").to.be.an("object");
    const paymentHash = `0x${randomBytes(32).toString("hex")}`;
    const signed = await n.alice!.api.call<{ transfer: string }>("POST", "/v1/payments/direct-transfers", {
      target: n.carol!.address,
      token,
      amount: req.amount,
      paymentId: x402PaymentId(paymentHash),
    });
    return { req, paymentHash, transfer: signed.transfer };
  }

  function header(req: PaymentRequirements, payload: Record<string, unknown>): string {
    return encodePaymentSignatureHeader({ x402Version: 2, accepted: req, payload });
  }

  before(async () => {
    devnet = await Devnet.start(mkdtempSync(join(tmpdir(), "qrwp-x402d-")));
    token = devnet.token;
    for (const name of ["alice", "carol"]) await devnet.initNode(name, 1000n * unit);
    for (const name of ["alice", "carol"]) n[name] = await devnet.startNode(name, { chainPollMs: 250 });
    await n.alice!.api.call("POST", "/v1/channels", {
      partner: n.carol!.address,
      partnerMultiaddr: n.carol!.multiaddr,
      token,
      deposit: deposit.toString(),
    });
    aliceNode = { apiUrl: n.alice!.apiUrl, token: readApiToken(n.alice!.dataDir) };
    const carolNode = { apiUrl: n.carol!.apiUrl, token: readApiToken(n.carol!.dataDir) };
    app = Fastify({ logger: false });
    await app.register(qrwpPaywall, {
      node: carolNode,
      routes: [
        price("GET /weather", weatherPrice, token),
        price("GET /flash", weatherPrice, token, { maxTimeoutSeconds: 1 }), // invoices live one second
        price("GET /forecast", weatherPrice, token), // the same terms as /weather, another route
      ],
      receiptsPath: join(devnet.dir, "receipts.sqlite"),
      // Every request comes from 127.0.0.1 in quick succession: no unpaid cap here (x402-http tests it).
      maxUnpaidPerSecond: false,
      maxUnpaidPerIpPerSecond: false,
      directExpiryGraceMs: 2_000,
    });
    app.get("/weather", async () => {
      served++;
      return { city: "Porto", celsius: 18 };
    });
    app.get("/flash", async () => {
      served++;
      return { flash: true };
    });
    app.get("/forecast", async () => {
      served++;
      return { forecast: "sunny" };
    });
    baseUrl = await app.listen({ port: 0, host: "127.0.0.1" });
  });

  after(async () => {
    await app?.close();
    await devnet?.stop();
  });

  it("advertises direct payments in the 402", async () => {
    const res = await fetch(`${baseUrl}/weather`);
    await res.body?.cancel();
    const req = decodePaymentRequiredHeader(res.headers.get("payment-required")!).accepts[0]!;
    expect(req).to.include({ network: x402Network(31337n), payTo: n.carol!.address });
    expect(req.extra).to.include({ direct: true, assetTransferMethod: "invoice" });
  });

  it("qrwpFetch streams five direct payments; each is held by carol's node and acknowledged to alice's", async () => {
    const before = served;
    const hashes: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await qrwpFetch(`${baseUrl}/weather`, undefined, { node: aliceNode, maxAmount: unit });
      expect(res.status).to.equal(200);
      expect(await res.json()).to.deep.equal({ city: "Porto", celsius: 18 });
      const settled = decodePaymentResponseHeader(res.headers.get("payment-response")!);
      expect(settled.success).to.equal(true);
      expect(settled.extra).to.include({ mode: "direct" });
      expect(settled.payer?.toLowerCase()).to.equal(n.alice!.address.toLowerCase());
      hashes.push(settled.transaction);
      // The acknowledgement was relayed: alice's payment is completed without any re-send.
      const payment = await n.alice!.api.call<{ status: string; amount: string }>(
        "GET",
        `/v1/payments/${encodeURIComponent(x402PaymentId(settled.transaction))}`,
      );
      expect(payment).to.include({ status: "completed", amount: weatherPrice.toString() });
    }
    expect(served - before).to.equal(5);
    expect(new Set(hashes).size).to.equal(5);
    const { receipts: list } = await receipts();
    for (const h of hashes) {
      const r = list.find((x) => x.paymentHash === h);
      expect(r).to.include({ mode: "direct", amount: weatherPrice.toString(), route: "GET /weather" });
      expect(String(r!.payer).toLowerCase()).to.equal(n.alice!.address.toLowerCase());
      // carol's node holds each one as an incoming payment.
      const incoming = await n.carol!.api.call<{ status: string; direction: string }>(
        "GET",
        `/v1/payments/${encodeURIComponent(x402PaymentId(h))}`,
      );
      expect(incoming).to.include({ status: "completed", direction: "incoming" });
    }
    // carol deposited nothing: her balance is exactly what alice streamed.
    expect((await carolChannel()).ourBalance).to.equal((5n * weatherPrice).toString());
  });

  it("refuses a replayed, a tampered and a mismatched transfer with coded 402s and no balance change", async () => {
    const first = await signedFor402();
    const good = header(first.req, { paymentHash: first.paymentHash, transfer: first.transfer });
    const ok = await fetch(`${baseUrl}/weather`, { headers: { "payment-signature": good } });
    expect(ok.status).to.equal(200);
    await ok.body?.cancel();
    const channelAfterPaid = JSON.stringify(await carolChannel());
    const receiptsAfterPaid = (await receipts()).count;
    const servedAfterPaid = served;

    const expectRefused = async (paymentSignature: string, reason: string): Promise<void> => {
      const res = await fetch(`${baseUrl}/weather`, { headers: { "payment-signature": paymentSignature } });
      expect(res.status, reason).to.equal(402);
      expect(await res.json(), reason).to.deep.equal({ error: reason });
    };
    // The same payment again.
    await expectRefused(good, "replayed");

    const next = await signedFor402();
    const bytes = Buffer.from(next.transfer, "base64url");
    const envelope = decodeEnvelope(bytes);
    if (envelope.body.type !== "DirectTransfer") throw new Error("not a DirectTransfer");
    const body = envelope.body;
    const reencode = (b: typeof body): string =>
      Buffer.from(encodeEnvelope({ id: 0, body: b })).toString("base64url");
    const sig = body.balanceProof.signature;
    const flipped = sig.slice(0, 10) + (sig[10] === "0" ? "1" : "0") + sig.slice(11);
    // A signature byte flipped: carol's node refuses the proof.
    await expectRefused(
      header(next.req, {
        paymentHash: next.paymentHash,
        transfer: reencode({ ...body, balanceProof: { ...body.balanceProof, signature: flipped } }),
      }),
      "invalid_transfer",
    );
    // Another nonce than the one signed: the signatures no longer match.
    await expectRefused(
      header(next.req, {
        paymentHash: next.paymentHash,
        transfer: reencode({
          ...body,
          balanceProof: {
            ...body.balanceProof,
            proof: { ...body.balanceProof.proof, nonce: body.balanceProof.proof.nonce + 1n },
          },
        }),
      }),
      "invalid_transfer",
    );
    // A transfer for less than the price.
    await expectRefused(
      header(next.req, { paymentHash: next.paymentHash, transfer: reencode({ ...body, amount: 1n }) }),
      "wrong_amount",
    );
    // A transfer naming another invoice.
    await expectRefused(
      header(next.req, {
        paymentHash: next.paymentHash,
        transfer: reencode({ ...body, paymentId: x402PaymentId(first.paymentHash) }),
      }),
      "unknown_invoice",
    );
    // Not a transfer at all, and both payload shapes at once.
    await expectRefused(
      header(next.req, { paymentHash: next.paymentHash, transfer: "AAAA" }),
      "malformed_payment",
    );
    await expectRefused(
      header(next.req, {
        paymentHash: next.paymentHash,
        transfer: next.transfer,
        preimage: first.paymentHash,
      }),
      "malformed_payment",
    );
    // The previous 402's transfer offered for this 402's invoice.
    await expectRefused(
      header(next.req, { paymentHash: next.paymentHash, transfer: first.transfer }),
      "unknown_invoice",
    );
    expect(JSON.stringify(await carolChannel())).to.equal(channelAfterPaid);
    expect((await receipts()).count).to.equal(receiptsAfterPaid);
    expect(served).to.equal(servedAfterPaid);

    // The untampered transfer still pays.
    const res = await fetch(`${baseUrl}/weather`, {
      headers: {
        "payment-signature": header(next.req, { paymentHash: next.paymentHash, transfer: next.transfer }),
      },
    });
    expect(res.status).to.equal(200);
    await res.body?.cancel();
    expect((await receipts()).count).to.equal(receiptsAfterPaid + 1);
  });

  it("refuses another payee, an invoice carol's node never minted and an invoice expired beyond the grace", async () => {
    const servedBefore = served;
    const receiptsBefore = (await receipts()).count;
    const refusal = async (path: string, paymentSignature: string): Promise<unknown> => {
      const res = await fetch(`${baseUrl}${path}`, { headers: { "payment-signature": paymentSignature } });
      expect(res.status).to.equal(402);
      return ((await res.json()) as { error: unknown }).error;
    };
    // The accepted requirement names alice as the payee.
    const p = await signedFor402();
    const toAlice = { ...p.req, payTo: n.alice!.address };
    expect(
      await refusal("/weather", header(toAlice, { paymentHash: p.paymentHash, transfer: p.transfer })),
    ).to.equal("wrong_payee");
    // A routed payload for an invoice nobody minted (its preimage is right for its hash).
    const preimage = randomSecret();
    const made = secretHashOf(preimage);
    const unknownReq = {
      ...p.req,
      extra: { ...p.req.extra, invoice: { paymentHash: made, expiresAtSeconds: 4_000_000_000 } },
    };
    expect(await refusal("/weather", header(unknownReq, { paymentHash: made, preimage }))).to.equal(
      "unknown_invoice",
    );
    // The earlier transfer still pays its own invoice.
    const ok = await fetch(`${baseUrl}/weather`, {
      headers: { "payment-signature": header(p.req, { paymentHash: p.paymentHash, transfer: p.transfer }) },
    });
    expect(ok.status).to.equal(200);
    await ok.body?.cancel();

    // One-second invoices (the app takes direct transfers up to 2 s after expiry here; 60 s by default).
    const flash = async (): Promise<{ req: PaymentRequirements; paymentHash: string }> => {
      const res = await fetch(`${baseUrl}/flash`);
      await res.body?.cancel();
      const req = decodePaymentRequiredHeader(res.headers.get("payment-required")!).accepts[0]!;
      return { req, paymentHash: (req.extra as { invoice: { paymentHash: string } }).invoice.paymentHash };
    };
    const sign = async (paymentHash: string, amount: string) =>
      (
        await n.alice!.api.call<{ transfer: string }>("POST", "/v1/payments/direct-transfers", {
          target: n.carol!.address,
          token,
          amount,
          paymentId: x402PaymentId(paymentHash),
        })
      ).transfer;
    // Expired, but within the grace: the payer is committed once signed, so the merchant takes it.
    const late = await flash();
    await new Promise((r) => setTimeout(r, 1_300));
    const lateTransfer = await sign(late.paymentHash, late.req.amount);
    const lateRes = await fetch(`${baseUrl}/flash`, {
      headers: {
        "payment-signature": header(late.req, { paymentHash: late.paymentHash, transfer: lateTransfer }),
      },
    });
    expect(lateRes.status).to.equal(200);
    await lateRes.body?.cancel();
    // Expired beyond the grace: refused before carol's node stores anything.
    const { req, paymentHash } = await flash();
    await new Promise((r) => setTimeout(r, 3_300));
    const channelBefore = JSON.stringify(await carolChannel());
    const transfer = await sign(paymentHash, req.amount);
    expect(await refusal("/flash", header(req, { paymentHash, transfer }))).to.equal("invoice_expired");
    expect(JSON.stringify(await carolChannel())).to.equal(channelBefore);
    expect(served).to.equal(servedBefore + 2);
    expect((await receipts()).count).to.equal(receiptsBefore + 2);
  });

  it("a direct payment used by two concurrent requests serves exactly one", async () => {
    const p = await signedFor402();
    const h = header(p.req, { paymentHash: p.paymentHash, transfer: p.transfer });
    const before = served;
    const results = await Promise.all(
      [0, 1].map(async () => {
        const res = await fetch(`${baseUrl}/weather`, { headers: { "payment-signature": h } });
        const body = (await res.json()) as Record<string, unknown>;
        return { status: res.status, body };
      }),
    );
    expect(results.map((r) => r.status).sort()).to.deep.equal([200, 402]);
    expect(results.find((r) => r.status === 402)!.body).to.deep.equal({ error: "replayed" });
    expect(results.filter((r) => r.body.city === "Porto")).to.have.length(1);
    // Both handlers may run (fastify settles in onSend); only one response carries the resource.
    expect(served - before).to.be.within(1, 2);
  });

  it("a qrwpFetchClient pays a route through one 402, then straight with the cached requirement", async () => {
    const statuses: number[] = [];
    const counting: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      statuses.push(res.status);
      return res;
    };
    const client = qrwpFetchClient({ node: aliceNode, maxAmount: unit, fetch: counting });
    const hashes: string[] = [];
    for (const city of ["Porto", "Faro", "Braga", "Porto"]) {
      const res = await client(`${baseUrl}/weather?city=${city}`);
      expect(res.status).to.equal(200);
      await res.body?.cancel();
      const settled = decodePaymentResponseHeader(res.headers.get("payment-response")!);
      expect(settled.extra).to.include({ mode: "direct" });
      hashes.push(settled.transaction);
    }
    // One 402 for the route (the query is not part of it), then each request paid at once.
    expect(statuses).to.deep.equal([402, 200, 200, 200, 200]);
    expect(new Set(hashes).size).to.equal(4);
    // Another route is not cached: it has its own 402.
    const other = await client(`${baseUrl}/forecast`);
    expect(other.status).to.equal(200);
    await other.body?.cancel();
    expect(statuses.slice(5)).to.deep.equal([402, 200]);
    // Every payment was received by carol's node and acknowledged to alice's (relayed in the background).
    for (const h of hashes) {
      const path = `/v1/payments/${encodeURIComponent(x402PaymentId(h))}`;
      expect((await n.carol!.api.call<{ status: string }>("GET", path)).status).to.equal("completed");
      for (let i = 0; ; i++) {
        const status = (await n.alice!.api.call<{ status: string }>("GET", path)).status;
        if (status === "completed") break;
        if (i > 100) expect.fail(`alice's payment ${h} is still ${status}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  });

  it("a direct payment under a ticket buys once; forged, expired and foreign-route tickets buy nothing", async () => {
    const refusal = async (path: string, paymentSignature: string): Promise<unknown> => {
      const res = await fetch(`${baseUrl}${path}`, { headers: { "payment-signature": paymentSignature } });
      expect(res.status).to.equal(402);
      return ((await res.json()) as { error: unknown }).error;
    };
    // Used once, then replayed: refused, nothing served again.
    const p = await signedForTicket();
    const good = header(p.req, { paymentHash: p.paymentHash, transfer: p.transfer });
    const ok = await fetch(`${baseUrl}/weather`, { headers: { "payment-signature": good } });
    expect(ok.status).to.equal(200);
    await ok.body?.cancel();
    const before = { served, receipts: (await receipts()).count };
    expect(await refusal("/weather", good)).to.equal("replayed");
    // The same transfer offered under another payment hash names no payment of its own.
    const otherHash = `0x${randomBytes(32).toString("hex")}`;
    expect(
      await refusal("/weather", header(p.req, { paymentHash: otherHash, transfer: p.transfer })),
    ).to.equal("unknown_invoice");

    // A forged ticket (one MAC nibble changed).
    const q = await signedForTicket();
    const channelBefore = JSON.stringify(await carolChannel());
    const ticket = q.req.extra.ticket as { mac: string; route: string };
    const mac = ticket.mac.slice(0, 10) + (ticket.mac[10] === "0" ? "1" : "0") + ticket.mac.slice(11);
    const forged = { ...q.req, extra: { ...q.req.extra, ticket: { ...ticket, mac } } };
    expect(
      await refusal("/weather", header(forged, { paymentHash: q.paymentHash, transfer: q.transfer })),
    ).to.equal("unknown_invoice");
    // A ticket of /weather offered on /forecast (same price and terms, another route).
    expect(
      await refusal("/forecast", header(q.req, { paymentHash: q.paymentHash, transfer: q.transfer })),
    ).to.equal("unknown_invoice");
    // Neither reached carol's node or bought anything; the untampered payment still buys /weather.
    expect(JSON.stringify(await carolChannel())).to.equal(channelBefore);
    expect(served).to.equal(before.served);
    expect((await receipts()).count).to.equal(before.receipts);
    const res = await fetch(`${baseUrl}/weather`, {
      headers: { "payment-signature": header(q.req, { paymentHash: q.paymentHash, transfer: q.transfer }) },
    });
    expect(res.status).to.equal(200);
    await res.body?.cancel();

    // A ticket of /flash (one second) used after it expired beyond the grace (2 s here): refused before
    // carol's node sees the transfer (alice's node delivers it over libp2p before its next one: a payer that
    // waits that long pays unserved, as with an expired invoice).
    const flash = await signedForTicket("/flash");
    await new Promise((r) => setTimeout(r, 3_300));
    const channelBeforeFlash = JSON.stringify(await carolChannel());
    expect(
      await refusal(
        "/flash",
        header(flash.req, { paymentHash: flash.paymentHash, transfer: flash.transfer }),
      ),
    ).to.equal("invoice_expired");
    expect(JSON.stringify(await carolChannel())).to.equal(channelBeforeFlash);
    expect(served).to.equal(before.served + 1);
    expect((await receipts()).count).to.equal(before.receipts + 1);
  });

  it("a burst of concurrent payments: every receipt is there, also after a graceful stop", async () => {
    const file = join(devnet.dir, "burst-receipts.sqlite");
    const carolNode = { apiUrl: n.carol!.apiUrl, token: readApiToken(n.carol!.dataDir) };
    const burst = Fastify({ logger: false });
    await burst.register(qrwpPaywall, {
      node: carolNode,
      routes: [price("GET /weather", weatherPrice, token)],
      receiptsPath: file,
      maxUnpaidPerSecond: false,
      maxUnpaidPerIpPerSecond: false,
    });
    burst.get("/weather", async () => ({ city: "Porto" }));
    const url = await burst.listen({ port: 0, host: "127.0.0.1" });
    const client = qrwpFetchClient({ node: aliceNode, maxAmount: unit });
    const first = await client(`${url}/weather`);
    expect(first.status).to.equal(200);
    await first.body?.cancel();
    const balanceBefore = BigInt(String((await carolChannel()).ourBalance));
    const hashes = await Promise.all(
      Array.from({ length: 24 }, async () => {
        const res = await client(`${url}/weather`);
        expect(res.status).to.equal(200);
        await res.body?.cancel();
        return decodePaymentResponseHeader(res.headers.get("payment-response")!).transaction;
      }),
    );
    expect(new Set(hashes).size).to.equal(24);
    await burst.close(); // writes every claimed receipt, then closes the file
    const stored = new ReceiptStore(file);
    for (const h of hashes)
      expect(stored.get(h), h).to.include({ mode: "direct", amount: weatherPrice.toString() });
    expect(stored.count()).to.equal(25);
    stored.close();
    // carol's node holds the 24, to the wei.
    expect(BigInt(String((await carolChannel()).ourBalance)) - balanceBefore).to.equal(24n * weatherPrice);
  });

  it("a merchant without routed mode names no invoice; direct payers pay, routed ones cannot", async () => {
    const carolNode = { apiUrl: n.carol!.apiUrl, token: readApiToken(n.carol!.dataDir) };
    const directOnly = Fastify({ logger: false });
    await directOnly.register(qrwpPaywall, {
      node: carolNode,
      routes: [price("GET /weather", weatherPrice, token)],
      receiptsPath: ":memory:",
      routed: false,
    });
    directOnly.get("/weather", async () => ({ city: "Porto" }));
    const url = await directOnly.listen({ port: 0, host: "127.0.0.1" });
    try {
      const res = await fetch(`${url}/weather`);
      expect(res.status).to.equal(402);
      await res.body?.cancel();
      const req = decodePaymentRequiredHeader(res.headers.get("payment-required")!).accepts[0]!;
      expect(req.extra).to.include({ direct: true });
      expect(req.extra).to.not.have.property("invoice");
      expect(req.extra.ticket).to.include({ route: "GET /weather", reusable: true });
      const paid = await qrwpFetch(`${url}/weather`, undefined, { node: aliceNode, maxAmount: unit });
      expect(paid.status).to.equal(200);
      await paid.body?.cancel();
      let error: unknown;
      try {
        await qrwpFetch(`${url}/weather`, undefined, { node: aliceNode, maxAmount: unit, prefer: "routed" });
      } catch (err) {
        error = err;
      }
      expect(String(error)).to.match(/direct payments only/);
    } finally {
      await directOnly.close();
    }
  });

  it("the unmodified @x402/fetch pays directly; the next payment confirms it over libp2p first", async () => {
    const scheme = new QrwpChannelClientScheme(aliceNode, { maxAmount: unit });
    const network = x402Network(31337n);
    const client = new x402Client().register(network, scheme).setSpendControls({
      allowedAssets: [{ network, asset: token, maxAmountPerPayment: weatherPrice.toString() }],
    });
    const res = await wrapFetchWithPayment(fetch, client)(`${baseUrl}/weather`);
    expect(res.status).to.equal(200);
    await res.body?.cancel();
    const settled = decodePaymentResponseHeader(res.headers.get("payment-response")!);
    expect(settled.extra).to.include({ mode: "direct" });
    const path = `/v1/payments/${encodeURIComponent(x402PaymentId(settled.transaction))}`;
    // Nobody relayed carol's acknowledgement: alice's node still counts the transfer as unacknowledged.
    expect((await n.alice!.api.call<{ status: string }>("GET", path)).status).to.equal("pending");
    const again = await qrwpFetch(`${baseUrl}/weather`, undefined, { node: aliceNode, maxAmount: unit });
    expect(again.status).to.equal(200);
    await again.body?.cancel();
    expect((await n.alice!.api.call<{ status: string }>("GET", path)).status).to.equal("completed");
  });
});
