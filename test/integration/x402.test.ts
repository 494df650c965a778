/**
 * x402 v2 routed mode end to end: three `qrwp node start` processes over libp2p against a `hardhat node`
 * chain, alice (payer) --- bob (mediator) --- carol (merchant node), and a fastify merchant app in this
 * process with `qrwpPaywall` pricing `GET /weather`, backed by carol's node API. Real SQLite receipts, no
 * mocks. Checks: `qrwpFetch` pays through bob and gets the resource with `PAYMENT-RESPONSE`; the unmodified
 * `wrapFetchWithPayment` of `@x402/fetch` with our scheme pays too; bad input is a coded 402 and never the
 * resource; a concurrent double use of one payment serves once; a flood of unpaid requests adds no receipt;
 * the same scheme and facilitator behind the official `@x402/express` middleware; the SSE stream of paid
 * events.
 */
import { join } from "node:path";
import { expect } from "chai";
import Fastify, { type FastifyInstance } from "fastify";
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { decodePaymentRequiredHeader, encodePaymentSignatureHeader } from "@x402/core/http";
import type { PaymentRequired } from "@x402/core/types";
import { runCli, type Devnet } from "../../devnet/harness.js";
import { randomSecret, x402Network } from "../../protocol/index.js";
import express from "express";
import type { Server } from "node:http";
import { paymentMiddleware } from "@x402/express";
import { x402ResourceServer } from "@x402/core/server";
import {
  QrwpChannelClientScheme,
  QrwpNodeApi,
  ReceiptStore,
  createQrwpMerchant,
  price,
  qrwpFetch,
  qrwpPaymentOption,
  qrwpPaywall,
} from "../../x402/index.js";
import {
  expectPaidWeather,
  startX402Devnet,
  subscribe,
  unit,
  until,
  type X402Devnet,
} from "./x402-devnet.js";

const weatherPrice = unit / 100n + 7n;

describe("integration: x402 routed payments (alice -> bob -> carol's merchant app)", function () {
  this.timeout(180_000);
  let net: X402Devnet;
  let devnet: Devnet;
  let n: X402Devnet["nodes"];
  let token: string;
  let app: FastifyInstance;
  let baseUrl: string;
  let aliceNode: { apiUrl: string; token: string };
  let carolApi: QrwpNodeApi;
  let served = 0;
  let expressServer: Server | undefined;
  let expressReceipts: ReceiptStore | undefined;

  async function unpaid(): Promise<{ res: Response; required: PaymentRequired }> {
    const res = await fetch(`${baseUrl}/weather`);
    expect(res.status).to.equal(402);
    return { res, required: decodePaymentRequiredHeader(res.headers.get("payment-required")!) };
  }

  async function receiptCount(): Promise<number> {
    const res = await fetch(`${baseUrl}/v1/receipts`);
    return ((await res.json()) as { count: number }).count;
  }

  before(async () => {
    net = await startX402Devnet("x402", 100n * unit, weatherPrice);
    ({ devnet, nodes: n, token, aliceNode, carolApi } = net);
    const carolNode = net.carolNode;
    app = Fastify({ logger: false });
    await app.register(qrwpPaywall, {
      node: carolNode,
      routes: [price("GET /weather", weatherPrice, token, { description: "today's weather" })],
      receiptsPath: join(devnet.dir, "receipts.sqlite"),
      // This suite floods unpaid requests on purpose; the unpaid cap is tested in x402-http.test.ts.
      maxUnpaidPerSecond: false,
      maxUnpaidPerIpPerSecond: false,
    });
    app.get("/weather", async () => {
      served++;
      return { city: "Lisbon", celsius: 21 };
    });
    app.get("/free", async () => ({ free: true }));
    baseUrl = await app.listen({ port: 0, host: "127.0.0.1" });
  });

  after(async () => {
    await app?.close();
    await new Promise((r) => (expressServer ? expressServer.close(r) : r(undefined)));
    expressReceipts?.close();
    await net?.stop();
  });

  it("answers an unpaid request with a 402 naming a fresh invoice of carol's node; free routes are free", async () => {
    const { res, required } = await unpaid();
    expect(await res.json()).to.deep.equal({ error: "missing_payment" });
    expect(required.x402Version).to.equal(2);
    expect(required.error).to.equal("missing_payment");
    const req = required.accepts[0]!;
    expect(req).to.include({
      scheme: "qrwp-channel",
      network: x402Network(31337n),
      amount: weatherPrice.toString(),
      asset: token,
      payTo: n.carol!.address,
    });
    const extra = req.extra as { assetTransferMethod: string; hub: string; invoice: { paymentHash: string } };
    expect(extra.assetTransferMethod).to.equal("invoice");
    expect(extra.hub).to.equal(devnet.deployment.hub);
    const invoice = await carolApi.getInvoice(extra.invoice.paymentHash);
    expect(invoice).to.include({ status: "open", amount: weatherPrice.toString() });
    const { res: second, required: again } = await unpaid();
    await second.body?.cancel();
    expect((again.accepts[0]!.extra as typeof extra).invoice.paymentHash).to.not.equal(
      extra.invoice.paymentHash,
    );
    expect((await fetch(`${baseUrl}/free`)).status).to.equal(200);
    expect(served).to.equal(0);
  });

  const usedSignatures: string[] = [];
  const recordingFetch: typeof fetch = async (input, init) => {
    const request = new Request(input, init);
    const sig = request.headers.get("payment-signature");
    if (sig) usedSignatures.push(sig);
    return fetch(request);
  };

  it("qrwpFetch pays routed through bob and gets the resource with PAYMENT-RESPONSE; a receipt is listed", async () => {
    const before = await receiptCount();
    const res = await qrwpFetch(`${baseUrl}/weather`, undefined, {
      node: aliceNode,
      maxAmount: weatherPrice,
      maxFee: unit,
      fetch: recordingFetch,
    });
    const settle = await expectPaidWeather(res);
    expect(settle.network).to.equal("eip155:31337");
    const invoice = await carolApi.getInvoice(settle.transaction);
    expect(invoice.status).to.equal("paid");
    expect(BigInt(invoice.paidAmount)).to.equal(weatherPrice);
    // alice paid through bob: her routed payment names the route alice -> bob -> carol.
    const payment = await n.alice!.api.call<{ status: string; route: { address: string }[] }>(
      "GET",
      `/v1/payments/${encodeURIComponent(`x402:${settle.transaction}`)}`,
    );
    expect(payment.status).to.equal("completed");
    expect(payment.route.map((h) => h.address)).to.deep.equal([n.bob!.address, n.carol!.address]);
    const list = (await (await fetch(`${baseUrl}/v1/receipts`)).json()) as {
      receipts: { paymentHash: string; route: string; amount: string }[];
      count: number;
    };
    expect(list.count).to.equal(before + 1);
    expect(list.receipts[0]).to.include({
      paymentHash: settle.transaction,
      route: "GET /weather",
      amount: weatherPrice.toString(),
    });
    expect(served).to.equal(1);
    expect(usedSignatures).to.have.length(1);
  });

  it("the unmodified wrapFetchWithPayment of @x402/fetch with the qrwp-channel scheme pays too", async () => {
    const scheme = new QrwpChannelClientScheme(aliceNode, { maxAmount: weatherPrice, maxFee: unit });
    const network = x402Network(31337n);
    const client = new x402Client().register(network, scheme).setSpendControls({
      allowedAssets: [{ network, asset: token, maxAmountPerPayment: weatherPrice.toString() }],
    });
    const res = await wrapFetchWithPayment(fetch, client)(`${baseUrl}/weather`);
    expect(res.status).to.equal(200);
    expect(await res.json()).to.deep.equal({ city: "Lisbon", celsius: 21 });
    expect(decodePaymentResponseHeader(res.headers.get("payment-response")!).success).to.equal(true);
    expect(served).to.equal(2);
  });

  it("refuses bad input with a coded 402 and never serves the resource", async () => {
    const servedBefore = served;
    const receiptsBefore = await receiptCount();
    const refusal = async (headers: Record<string, string>) => {
      const res = await fetch(`${baseUrl}/weather`, { headers });
      const body = (await res.json()) as { error: string };
      expect(res.status, JSON.stringify(body)).to.equal(402);
      return body.error;
    };
    expect(await refusal({})).to.equal("missing_payment");
    expect(await refusal({ "payment-signature": "%%% not base64 %%%" })).to.equal("malformed_payment");
    expect(await refusal({ "payment-signature": Buffer.from("{not json").toString("base64") })).to.equal(
      "malformed_payment",
    );
    const b64 = (v: string) => Buffer.from(v).toString("base64");
    for (const json of [
      "123",
      "null",
      "[]",
      '"x"',
      '{"x402Version":2}',
      '{"x402Version":1}',
      '{"x402Version":2,"accepted":null,"payload":{}}',
    ]) {
      expect(await refusal({ "payment-signature": b64(json) }), json).to.equal("malformed_payment");
    }
    // A well-formed payload for a fresh (unpaid) invoice, with a preimage that does not hash to it.
    const { required } = await unpaid();
    const accepted = required.accepts[0]!;
    const paymentHash = (accepted.extra as { invoice: { paymentHash: string } }).invoice.paymentHash;
    const forged = (payload: Record<string, unknown>, acc = accepted) =>
      encodePaymentSignatureHeader({ x402Version: 2, resource: required.resource, accepted: acc, payload });
    expect(
      await refusal({ "payment-signature": forged({ paymentHash, preimage: randomSecret() }) }),
    ).to.equal("invalid_preimage");
    expect(await refusal({ "payment-signature": forged({ paymentHash }) })).to.equal("malformed_payment");
    expect(
      await refusal({
        "payment-signature": forged({ paymentHash, preimage: randomSecret() }, { ...accepted, amount: "1" }),
      }),
    ).to.equal("wrong_amount");
    // Replaying the PAYMENT-SIGNATURE that bought /weather before.
    expect(await refusal({ "payment-signature": usedSignatures[0]! })).to.equal("replayed");
    // qrwpFetch sends a request that already carries a payment as is, and never pays for it.
    const passed = await qrwpFetch(
      `${baseUrl}/weather`,
      { headers: { "payment-signature": usedSignatures[0]! } },
      { node: aliceNode, maxAmount: weatherPrice },
    );
    expect(passed.status).to.equal(402);
    expect(await passed.json()).to.deep.equal({ error: "replayed" });
    expect(served).to.equal(servedBefore);
    expect(await receiptCount()).to.equal(receiptsBefore);
  });

  it("qrwpFetch refuses a price above maxAmount and pays nothing", async () => {
    const balances = async () =>
      (await n.alice!.api.call<{ channels: { ourBalance: string }[] }>("GET", "/v1/channels")).channels.map(
        (c) => c.ourBalance,
      );
    const before = await balances();
    const servedBefore = served;
    // Without an asset the scheme's own cap refuses; with one the SDK's spend controls refuse first.
    for (const asset of [undefined, token]) {
      let error: unknown;
      try {
        await qrwpFetch(`${baseUrl}/weather`, undefined, {
          node: aliceNode,
          maxAmount: weatherPrice - 1n,
          ...(asset ? { asset } : {}),
        });
      } catch (err) {
        error = err;
      }
      expect(error, "qrwpFetch should reject").to.be.instanceOf(Error);
      expect((error as Error).message).to.match(/maximum|spend|amount|no .*requirements/i);
    }
    expect(await balances()).to.deep.equal(before);
    expect(served).to.equal(servedBefore);
  });

  it("a payment used by two concurrent requests serves exactly one", async () => {
    const { required } = await unpaid();
    const scheme = new QrwpChannelClientScheme(aliceNode, { maxAmount: weatherPrice, maxFee: unit });
    const accepted = required.accepts[0]!;
    const { payload } = await scheme.createPaymentPayload(2, accepted);
    const header = encodePaymentSignatureHeader({
      x402Version: 2,
      resource: required.resource,
      accepted,
      payload,
    });
    const servedBefore = served;
    const results = await Promise.all(
      [0, 1].map(async () => {
        const res = await fetch(`${baseUrl}/weather`, { headers: { "payment-signature": header } });
        return { status: res.status, body: (await res.json()) as Record<string, unknown> };
      }),
    );
    const statuses = results.map((r) => r.status).sort();
    expect(statuses, JSON.stringify(results)).to.deep.equal([200, 402]);
    expect(results.find((r) => r.status === 402)!.body).to.deep.equal({ error: "replayed" });
    // Both handlers may have run; only one response carried the resource.
    expect(served - servedBefore).to.be.within(1, 2);
  });

  it("a flood of 50 unpaid requests adds no receipt", async () => {
    const before = await receiptCount();
    const statuses = await Promise.all(
      Array.from({ length: 50 }, async () => {
        const res = await fetch(`${baseUrl}/weather`);
        await res.body?.cancel();
        return res.status;
      }),
    );
    expect(statuses.every((s) => s === 402)).to.equal(true);
    expect(await receiptCount()).to.equal(before);
  });

  it("the same scheme and facilitator work behind the official @x402/express middleware", async () => {
    expressReceipts = new ReceiptStore(join(devnet.dir, "receipts-express.sqlite"));
    const merchant = await createQrwpMerchant(new QrwpNodeApi(net.carolNode), expressReceipts);
    const resourceServer = new x402ResourceServer(merchant.facilitator).register(
      merchant.network,
      merchant.scheme,
    );
    await resourceServer.initialize();
    const routes = {
      "GET /forecast": { accepts: qrwpPaymentOption(merchant, weatherPrice.toString(), token) },
    };
    const exp = express();
    exp.use(paymentMiddleware(routes, resourceServer, undefined, undefined, false));
    exp.get("/forecast", (_req, res) => {
      res.json({ city: "Porto", celsius: 18 });
    });
    const server = exp.listen(0, "127.0.0.1");
    expressServer = server;
    await new Promise((r) => server.once("listening", r));
    const { port } = server.address() as { port: number };
    const url = `http://127.0.0.1:${port}/forecast`;
    const signatures: string[] = [];
    const res = await qrwpFetch(url, undefined, {
      node: aliceNode,
      maxAmount: weatherPrice,
      maxFee: unit,
      asset: token,
      fetch: async (input, init) => {
        const request = new Request(input, init);
        const sig = request.headers.get("payment-signature");
        if (sig) signatures.push(sig);
        return fetch(request);
      },
    });
    expect(res.status).to.equal(200);
    expect(await res.json()).to.deep.equal({ city: "Porto", celsius: 18 });
    const settle = decodePaymentResponseHeader(res.headers.get("payment-response")!);
    expect(settle.success).to.equal(true);
    expect(expressReceipts.get(settle.transaction)?.route).to.equal("GET /forecast");
    // A replay is refused by our facilitator; the reason travels in PAYMENT-REQUIRED.error.
    const replay = await fetch(url, { headers: { "payment-signature": signatures[0]! } });
    expect(replay.status).to.equal(402);
    expect(decodePaymentRequiredHeader(replay.headers.get("payment-required")!).error).to.equal("replayed");
  });

  it("qrwp fetch (the CLI) pays and prints the resource; above --max-amount it pays nothing", async () => {
    const before = await receiptCount();
    const common = [
      "--api-url",
      n.alice!.apiUrl,
      "--data-dir",
      n.alice!.dataDir,
      "--max-fee",
      unit.toString(),
    ];
    const paid = await runCli([
      "fetch",
      `${baseUrl}/weather`,
      "--max-amount",
      weatherPrice.toString(),
      ...common,
    ]);
    expect(paid.code, paid.stderr).to.equal(0);
    expect(JSON.parse(paid.stdout)).to.deep.equal({ city: "Lisbon", celsius: 21 });
    const line = JSON.parse(paid.stderr.trim().split("\n").pop()!) as {
      status: number;
      payment: { success: boolean; transaction: string };
    };
    expect(line.status).to.equal(200);
    expect(line.payment.success).to.equal(true);
    expect(await receiptCount()).to.equal(before + 1);
    const refused = await runCli(["fetch", `${baseUrl}/weather`, "--max-amount", "1", ...common]);
    expect(refused.code).to.equal(1);
    expect(refused.stdout).to.equal("");
    expect(await receiptCount()).to.equal(before + 1);
  });

  it("streams one SSE `paid` event per paid request at GET /v1/receipts/events; app.close() ends the stream", async () => {
    const sse = subscribe(`${baseUrl}/v1/receipts/events`);
    const opened = await sse.opened;
    expect(opened.status).to.equal(200);
    expect(opened.headers.get("content-type")).to.match(/^text\/event-stream/);
    await until("the subscriber", () => app.qrwpPaywall.events.subscribers === 1);
    const res = await qrwpFetch(`${baseUrl}/weather`, undefined, {
      node: aliceNode,
      maxAmount: weatherPrice,
      maxFee: unit,
    });
    expect(res.status).to.equal(200);
    const settle = decodePaymentResponseHeader(res.headers.get("payment-response")!);
    // A refused request emits nothing.
    expect(
      (await fetch(`${baseUrl}/weather`, { headers: { "payment-signature": usedSignatures[0]! } })).status,
    ).to.equal(402);
    await until("the paid event", () => sse.events.length === 1);
    await new Promise((r) => setTimeout(r, 300));
    expect(sse.events).to.have.length(1);
    expect(sse.events[0]).to.include({ event: "paid", id: settle.transaction });
    expect(JSON.parse(sse.events[0]!.data)).to.include({
      paymentHash: settle.transaction,
      route: "GET /weather",
    });
    // The stream stays open; after() closes the app, which must end it (or the hook times out).
  });
});
