/**
 * x402 through the plain `node:http` middleware (`qrwpMiddleware`), end to end: alice (payer) --- bob ---
 * carol (merchant node) as `qrwp node start` processes over libp2p against a `hardhat node`, a `node:http`
 * server in this process selling `GET /weather` (fixed price) and `GET /meter?units=N` (metered), real SQLite
 * receipts, a real local webhook receiver. No mocks. Checks: qrwpFetch pays and gets the resource with
 * `PAYMENT-RESPONSE`; missing, malformed and replayed payments are coded 402s and never the resource; the
 * metered price follows `units` and a payment for units=1 cannot buy units=5; `onPaid`, the SSE stream and
 * the HMAC-signed webhook see exactly one event per paid request and none for refused ones; a burst of unpaid
 * requests beyond the cap is answered 429 and mints at most the cap of invoices on carol's node, and refused
 * payments drain the same bucket; the same
 * middleware mounted in express with `app.use`.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { join } from "node:path";
import { expect } from "chai";
import express from "express";
import { decodePaymentResponseHeader } from "@x402/fetch";
import { decodePaymentRequiredHeader, encodePaymentSignatureHeader } from "@x402/core/http";
import type { PaymentRequired } from "@x402/core/types";
import {
  QrwpChannelClientScheme,
  WEBHOOK_DELIVERY_HEADER,
  WEBHOOK_SIGNATURE_HEADER,
  price,
  qrwpFetch,
  qrwpMiddleware,
  webhookSignature,
  type QrwpMiddleware,
  type Receipt,
} from "../../x402/index.js";
import {
  expectPaidWeather,
  startX402Devnet,
  subscribe,
  unit,
  until,
  type X402Devnet,
} from "./x402-devnet.js";

const weatherPrice = unit / 100n + 3n;
const perUnit = unit / 1000n + 1n;
const adminToken = "admin-token-for-tests";
const webhookSecret = "webhook-secret-for-tests";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function listen(server: Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

describe("integration: x402 node:http middleware (metered prices, paid events, unpaid cap)", function () {
  this.timeout(150_000);
  let net: X402Devnet;
  let mw: QrwpMiddleware;
  let server: Server;
  let baseUrl: string;
  let hookServer: Server;
  let expressServer: Server | undefined;
  const served: string[] = [];
  const onPaid: Receipt[] = [];
  const hooks: { headers: IncomingMessage["headers"]; body: string; answered: number }[] = [];
  const paidHashes: string[] = [];
  const signatures: string[] = [];
  let sse: ReturnType<typeof subscribe>;

  const recordingFetch: typeof fetch = async (input, init) => {
    const request = new Request(input, init);
    const sig = request.headers.get("payment-signature");
    if (sig) signatures.push(sig);
    return fetch(request);
  };

  function handler(req: IncomingMessage, res: ServerResponse) {
    const url = new URL(req.url ?? "/", "http://x");
    served.push(url.pathname + url.search);
    res.writeHead(200, { "content-type": "application/json" });
    if (url.pathname === "/weather") res.end(JSON.stringify({ city: "Lisbon", celsius: 21 }));
    else if (url.pathname === "/meter")
      res.end(JSON.stringify({ units: Number(url.searchParams.get("units")) }));
    else res.end(JSON.stringify({ free: true }));
  }

  async function unpaid(path: string): Promise<PaymentRequired> {
    const res = await fetch(`${baseUrl}${path}`);
    expect(res.status).to.equal(402);
    expect(await res.json()).to.deep.equal({ error: "missing_payment" });
    return decodePaymentRequiredHeader(res.headers.get("payment-required")!);
  }

  async function status(path: string, headers: Record<string, string> = {}) {
    const res = await fetch(`${baseUrl}${path}`, { headers });
    return { status: res.status, body: (await res.json()) as Record<string, unknown>, headers: res.headers };
  }

  async function receiptCount(): Promise<number> {
    const res = await fetch(`${baseUrl}/v1/receipts`, { headers: { authorization: `Bearer ${adminToken}` } });
    return ((await res.json()) as { count: number }).count;
  }

  before(async () => {
    net = await startX402Devnet("x402-http", 100n * unit, weatherPrice);
    let first = true;
    hookServer = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        // The very first delivery fails once: the webhook must retry it.
        const answered = first ? 500 : 200;
        first = false;
        hooks.push({ headers: req.headers, body, answered });
        res.writeHead(answered).end();
      });
    });
    const hookUrl = await listen(hookServer);
    mw = await qrwpMiddleware({
      node: net.carolNode,
      routes: [
        price("GET /weather", weatherPrice, net.token, { description: "today's weather" }),
        price("GET /meter", (req) => perUnit * BigInt(req.query.units ?? ""), net.token),
      ],
      receiptsPath: join(net.devnet.dir, "receipts-http.sqlite"),
      adminToken,
      onPaid: (r) => {
        onPaid.push(r);
      },
      webhookUrl: `${hookUrl}/hook`,
      webhookSecret,
      maxEventSubscribers: 2,
      eventsKeepAliveMs: 200,
    });
    server = createServer((req, res) => mw(req, res, () => handler(req, res)));
    baseUrl = await listen(server);
    sse = subscribe(`${baseUrl}/v1/receipts/events`, adminToken);
    expect((await sse.opened).headers.get("content-type")).to.match(/^text\/event-stream/);
  });

  after(async () => {
    sse?.close();
    await mw?.close();
    for (const s of [server, hookServer, expressServer]) {
      s?.closeAllConnections();
      await new Promise((r) => (s ? s.close(r) : r(undefined)));
    }
    await net?.stop();
  });

  it("sells /weather: qrwpFetch pays through bob, PAYMENT-RESPONSE present; one SSE `paid` event; receipts need the token", async () => {
    const res = await qrwpFetch(`${baseUrl}/weather`, undefined, {
      node: net.aliceNode,
      maxAmount: weatherPrice,
      maxFee: unit,
      fetch: recordingFetch,
    });
    const settle = await expectPaidWeather(res);
    paidHashes.push(settle.transaction);
    expect((await net.carolApi.getInvoice(settle.transaction)).status).to.equal("paid");
    await until("the SSE event", () => sse.events.length === 1);
    const ev = sse.events[0]!;
    expect(ev.event).to.equal("paid");
    expect(ev.id).to.equal(settle.transaction);
    expect(JSON.parse(ev.data)).to.include({
      paymentHash: settle.transaction,
      route: "GET /weather",
      amount: weatherPrice.toString(),
    });
    await until("a keep-alive comment", () => sse.comments() > 0);
    expect(served).to.deep.equal(["/weather"]);
    // /v1/receipts and the SSE stream need the bearer token.
    expect((await fetch(`${baseUrl}/v1/receipts`)).status).to.equal(401);
    const bad = await fetch(`${baseUrl}/v1/receipts`, { headers: { authorization: "Bearer nope" } });
    expect(bad.status).to.equal(401);
    expect((await fetch(`${baseUrl}/v1/receipts/events`)).status).to.equal(401);
    const list = (await (
      await fetch(`${baseUrl}/v1/receipts?limit=5`, { headers: { authorization: `Bearer ${adminToken}` } })
    ).json()) as { receipts: Receipt[]; count: number };
    expect(list.count).to.equal(1);
    expect(list.receipts[0]!.paymentHash).to.equal(settle.transaction);
    const badLimit = await fetch(`${baseUrl}/v1/receipts?limit=0`, {
      headers: { authorization: `Bearer ${adminToken}` },
    });
    expect(badLimit.status).to.equal(400);
  });

  it("refuses missing, malformed and replayed payments with a coded 402, never the resource", async () => {
    await sleep(1100); // a full unpaid bucket
    const servedBefore = served.length;
    const receiptsBefore = await receiptCount();
    const missing = await status("/weather");
    expect(missing.status).to.equal(402);
    expect(missing.body).to.deep.equal({ error: "missing_payment" });
    expect(decodePaymentRequiredHeader(missing.headers.get("payment-required")!).error).to.equal(
      "missing_payment",
    );
    for (const header of ["%%% not base64 %%%", Buffer.from("{not json").toString("base64")]) {
      const r = await status("/weather", { "payment-signature": header });
      expect(r.status).to.equal(402);
      expect(r.body).to.deep.equal({ error: "malformed_payment" });
    }
    const replay = await status("/weather", { "payment-signature": signatures[0]! });
    expect(replay.status).to.equal(402);
    expect(replay.body).to.deep.equal({ error: "replayed" });
    expect(replay.headers.get("payment-response")).to.equal(null);
    expect(served.length).to.equal(servedBefore);
    expect(await receiptCount()).to.equal(receiptsBefore);
  });

  it("metered /meter: the price follows ?units; unpriceable units are a 400 minting nothing", async () => {
    await sleep(1100);
    const required = await unpaid("/meter?units=3");
    expect(required.accepts[0]!.amount).to.equal((3n * perUnit).toString());
    const hash = (required.accepts[0]!.extra as { invoice: { paymentHash: string } }).invoice.paymentHash;
    expect(await net.carolApi.getInvoice(hash)).to.include({ amount: (3n * perUnit).toString() });
    const invoicesBefore = net.carolInvoiceCount();
    for (const q of ["", "?units=0", "?units=-2", "?units=abc", "?units=1.5", `?units=${"9".repeat(80)}`]) {
      const r = await status(`/meter${q}`);
      expect(r.status, q).to.equal(400);
      expect(r.body, q).to.deep.equal({ error: "unpriceable_request" });
    }
    expect(net.carolInvoiceCount()).to.equal(invoicesBefore);
  });

  it("a payment for units=1 cannot buy units=5 (coded 402, not served, not consumed); it still buys units=1", async () => {
    await sleep(1100); // a full unpaid bucket: the test before used most of it
    const required = await unpaid("/meter?units=1");
    const accepted = required.accepts[0]!;
    const scheme = new QrwpChannelClientScheme(net.aliceNode, { maxAmount: perUnit, maxFee: unit });
    const { payload } = await scheme.createPaymentPayload(2, accepted);
    const header = encodePaymentSignatureHeader({
      x402Version: 2,
      resource: required.resource,
      accepted,
      payload,
    });
    const servedBefore = served.length;
    const more = await status("/meter?units=5", { "payment-signature": header });
    expect(more.status).to.equal(402);
    expect(more.body).to.deep.equal({ error: "wrong_amount" });
    // Lying about the amount in `accepted` does not help either: the invoice is for units=1.
    const lie = encodePaymentSignatureHeader({
      x402Version: 2,
      resource: required.resource,
      accepted: { ...accepted, amount: (5n * perUnit).toString() },
      payload,
    });
    const lied = await status("/meter?units=5", { "payment-signature": lie });
    expect(lied.status).to.equal(402);
    expect(lied.body).to.deep.equal({ error: "wrong_amount" });
    expect(served.length).to.equal(servedBefore);
    expect(onPaid).to.have.length(1);
    const ok = await status("/meter?units=1", { "payment-signature": header });
    expect(ok.status).to.equal(200);
    expect(ok.body).to.deep.equal({ units: 1 });
    const settle = decodePaymentResponseHeader(ok.headers.get("payment-response")!);
    paidHashes.push(settle.transaction);
    expect(served.slice(servedBefore)).to.deep.equal(["/meter?units=1"]);
  });

  it("qrwpFetch pays the metered price for units=4", async () => {
    const res = await qrwpFetch(`${baseUrl}/meter?units=4`, undefined, {
      node: net.aliceNode,
      maxAmount: 4n * perUnit,
      maxFee: unit,
    });
    expect(res.status).to.equal(200);
    expect(await res.json()).to.deep.equal({ units: 4 });
    const settle = decodePaymentResponseHeader(res.headers.get("payment-response")!);
    paidHashes.push(settle.transaction);
    expect(onPaid.at(-1)).to.include({ paymentHash: settle.transaction, amount: (4n * perUnit).toString() });
  });

  it("the same middleware mounted in express with app.use sells /weather", async () => {
    await sleep(1100); // a full unpaid bucket (10 per second per IP; the two tests before used 6)
    const app = express();
    app.use(mw);
    app.get("/weather", (_req, res) => {
      served.push("express:/weather");
      res.json({ city: "Porto", celsius: 18 });
    });
    expressServer = createServer(app);
    const url = await listen(expressServer);
    expect((await fetch(`${url}/weather`)).status).to.equal(402);
    const res = await qrwpFetch(`${url}/weather`, undefined, {
      node: net.aliceNode,
      maxAmount: weatherPrice,
      maxFee: unit,
    });
    expect(res.status).to.equal(200);
    expect(await res.json()).to.deep.equal({ city: "Porto", celsius: 18 });
    const settle = decodePaymentResponseHeader(res.headers.get("payment-response")!);
    expect(settle.success).to.equal(true);
    paidHashes.push(settle.transaction);
  });

  it("onPaid, SSE and the signed webhook saw exactly one event per paid request, none for refused ones", async () => {
    expect(paidHashes).to.have.length(4);
    expect(new Set(paidHashes).size).to.equal(4);
    await until("4 SSE events", () => sse.events.length >= 4);
    await until("4 accepted webhook deliveries", () => hooks.filter((h) => h.answered === 200).length >= 4);
    await sleep(500); // nothing more arrives
    expect(onPaid.map((r) => r.paymentHash)).to.deep.equal(paidHashes);
    expect(sse.events.map((e) => e.id)).to.deep.equal(paidHashes);
    expect(sse.events.every((e) => e.event === "paid")).to.equal(true);
    const accepted = hooks.filter((h) => h.answered === 200);
    expect(accepted.map((h) => h.headers[WEBHOOK_DELIVERY_HEADER])).to.deep.equal(paidHashes);
    // The first delivery was answered 500 once and retried with the same body.
    expect(hooks).to.have.length(5);
    expect(hooks[0]!.answered).to.equal(500);
    expect(hooks[0]!.body).to.equal(hooks[1]!.body);
    for (const h of hooks) {
      expect(h.headers["content-type"]).to.equal("application/json");
      expect(h.headers[WEBHOOK_SIGNATURE_HEADER]).to.equal(webhookSignature(webhookSecret, h.body));
      const receipt = JSON.parse(h.body) as Receipt;
      expect(receipt.paymentHash).to.equal(h.headers[WEBHOOK_DELIVERY_HEADER]);
      expect(onPaid.find((r) => r.paymentHash === receipt.paymentHash)).to.deep.equal(receipt);
    }
    expect(webhookSignature("another secret", hooks[1]!.body)).to.not.equal(
      hooks[1]!.headers[WEBHOOK_SIGNATURE_HEADER],
    );
  });

  it("SSE subscribers are bounded and dropped on disconnect", async () => {
    expect(mw.paywall.events.subscribers).to.equal(1);
    const second = subscribe(`${baseUrl}/v1/receipts/events`, adminToken);
    expect((await second.opened).status).to.equal(200);
    await until("2 subscribers", () => mw.paywall.events.subscribers === 2);
    const third = await fetch(`${baseUrl}/v1/receipts/events`, {
      headers: { authorization: `Bearer ${adminToken}` },
    });
    expect(third.status).to.equal(503);
    expect(await third.json()).to.deep.equal({ error: "too_many_subscribers" });
    second.close();
    await until("the closed subscriber to be dropped", () => mw.paywall.events.subscribers === 1);
  });

  it("a burst of unpaid requests beyond the cap gets 429 and mints at most the cap of invoices; refused payments count", async () => {
    // The bucket refills continuously (10 per second per IP, default), so every bound below allows what
    // could have refilled during the time the requests actually took on this machine.
    const refilledDuring = (startedMs: number) => Math.ceil(((Date.now() - startedMs) / 1000) * 10) + 1;
    await sleep(1100); // a full bucket: 10 per IP
    const invoicesBefore = net.carolInvoiceCount();
    const burstStarted = Date.now();
    const burst = Array.from({ length: 40 }, async () => {
      const res = await fetch(`${baseUrl}/weather`);
      return {
        status: res.status,
        body: (await res.json()) as Record<string, unknown>,
        retryAfter: res.headers.get("retry-after"),
        required: res.headers.get("payment-required"),
      };
    });
    // Refusals are answered at once; the minted 402s wait for carol's node. While those are still being
    // minted this client's bucket is empty: payments sent now are refused before being verified.
    const firstRefusal = await Promise.any(
      burst.map(async (p) => {
        const r = await p;
        if (r.status !== 429) throw new Error("not refused");
        return r;
      }),
    );
    expect(firstRefusal.body).to.deep.equal({ error: "rate_limited" });
    const earlyStarted = Date.now();
    const early = await Promise.all(
      Array.from({ length: 20 }, () => status("/weather", { "payment-signature": signatures[0]! })),
    );
    const earlyVerified = early.filter((r) => r.status !== 429);
    expect(earlyVerified.length, "payments verified while the bucket was empty").to.be.at.most(
      refilledDuring(earlyStarted),
    );
    for (const r of early.filter((e) => e.status === 429))
      expect(r.body).to.deep.equal({ error: "rate_limited" });
    const results = await Promise.all(burst);
    const minted = results.filter((r) => r.status === 402);
    const limited = results.filter((r) => r.status === 429);
    expect(minted.length + limited.length).to.equal(40);
    expect(minted.length).to.be.within(1, 10 + refilledDuring(burstStarted));
    expect(limited.length).to.be.at.least(1);
    for (const r of limited) {
      expect(r.body).to.deep.equal({ error: "rate_limited" });
      expect(Number(r.retryAfter)).to.be.at.least(1);
      expect(r.required).to.equal(null);
    }
    expect(net.carolInvoiceCount() - invoicesBefore).to.equal(minted.length);
    // Once it refilled, a payment is verified (this one is a replay) and its refusal takes a token again:
    // about 10 replays are refused as replays, then the bucket is empty again.
    await sleep(1100);
    const replaysStarted = Date.now();
    const replays = [];
    for (let i = 0; i < 40; i++) {
      const r = await status("/weather", { "payment-signature": signatures[0]! });
      replays.push(r);
      if (r.status === 429) break;
    }
    expect(replays[0]!.status).to.equal(402);
    expect(replays[0]!.body).to.deep.equal({ error: "replayed" });
    expect(replays.slice(-1)[0]!.status, "the bucket empties again").to.equal(429);
    expect(replays.length - 1).to.be.within(10, 10 + refilledDuring(replaysStarted));
    expect(net.carolInvoiceCount() - invoicesBefore, "refused payments mint nothing").to.equal(minted.length);
    // Free routes are never limited.
    expect((await status("/free")).status).to.equal(200);
  });
});
