/**
 * Shared setup of the x402 integration tests: a `hardhat node` chain and three `qrwp node start` processes
 * over libp2p, alice (payer) --- bob (mediator) --- carol (merchant node), with a channel each way funded
 * `deposit` on both sides, waiting until alice's node sees a 2-hop route to carol (gossip).
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { expect } from "chai";
import { decodePaymentResponseHeader } from "@x402/core/http";
import type { SettleResponse } from "@x402/core/types";
import { parseUnits } from "ethers";
import { Devnet, type NodeProcess } from "../../devnet/harness.js";
import { readApiToken } from "../../host/keystore.js";
import { QrwpNodeApi, type NodeApiConfig } from "../../x402/index.js";

/** 10^18 base units. */
export const unit = parseUnits("1", 18);

/** A running alice --- bob --- carol devnet. */
export interface X402Devnet {
  devnet: Devnet;
  nodes: Record<"alice" | "bob" | "carol", NodeProcess>;
  token: string;
  /** Alice's node API (the payer). */
  aliceNode: NodeApiConfig;
  /** Carol's node API (the merchant's node). */
  carolNode: NodeApiConfig;
  carolApi: QrwpNodeApi;
  /** Invoices in carol's node store (read-only SQLite read of its `node.db`). */
  carolInvoiceCount(): number;
  stop(): Promise<void>;
}

/**
 * Starts the devnet in a fresh temp dir named `qrwp-<prefix>-…`; channels alice-bob and bob-carol hold
 * `deposit` base units on each side; resolves once alice finds a 2-hop route to carol for `routeAmount`.
 */
export async function startX402Devnet(
  prefix: string,
  deposit = 100n * unit,
  routeAmount = unit / 100n,
): Promise<X402Devnet> {
  const devnet = await Devnet.start(mkdtempSync(join(tmpdir(), `qrwp-${prefix}-`)));
  try {
    const token = devnet.token;
    const names = ["alice", "bob", "carol"] as const;
    for (const name of names) await devnet.initNode(name, 1000n * unit);
    const n = {} as Record<(typeof names)[number], NodeProcess>;
    for (const name of names) n[name] = await devnet.startNode(name, { chainPollMs: 250 });
    const open = async (a: NodeProcess, b: NodeProcess) => {
      const view = await a.api.call<{ channelId: string }>("POST", "/v1/channels", {
        partner: b.address,
        partnerMultiaddr: b.multiaddr,
        token,
        deposit: deposit.toString(),
      });
      await b.api.call("POST", `/v1/channels/${view.channelId}/deposit`, {
        totalDeposit: deposit.toString(),
      });
    };
    await open(n.alice, n.bob);
    await open(n.bob, n.carol);
    const deadline = Date.now() + 60_000;
    for (;;) {
      const q = new URLSearchParams({ target: n.carol.address, token, amount: routeAmount.toString() });
      const { routes } = await n.alice.api.call<{ routes: { hops: unknown[] }[] }>("GET", `/v1/routes?${q}`);
      if (routes.some((r) => r.hops.length === 2)) break;
      if (Date.now() > deadline) throw new Error("no 2-hop route from alice to carol");
      await new Promise((r) => setTimeout(r, 500));
    }
    const carolNode = { apiUrl: n.carol.apiUrl, token: readApiToken(n.carol.dataDir) };
    const carolDb = join(n.carol.dataDir, "node.db");
    return {
      devnet,
      nodes: n,
      token,
      aliceNode: { apiUrl: n.alice.apiUrl, token: readApiToken(n.alice.dataDir) },
      carolNode,
      carolApi: new QrwpNodeApi(carolNode),
      carolInvoiceCount: () => {
        const db = new Database(carolDb, { readonly: true, fileMustExist: true });
        try {
          return (db.prepare("SELECT COUNT(*) AS n FROM invoices").get() as { n: number }).n;
        } finally {
          db.close();
        }
      },
      stop: () => devnet.stop(),
    };
  } catch (err) {
    await devnet.stop();
    throw err;
  }
}

/** An SSE client over fetch collecting events (`event`, `id`, `data`) and keep-alive comments. */
export function subscribe(url: string, token?: string) {
  const abort = new AbortController();
  const events: { event: string; id: string; data: string }[] = [];
  let comments = 0;
  const opened = fetch(url, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
    signal: abort.signal,
  }).then((res) => {
    if (res.ok && res.body) {
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      void (async () => {
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
          if (done) return;
          buf += value;
          let i: number;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const fields: Record<string, string> = {};
            for (const line of block.split("\n")) {
              if (line.startsWith(":")) comments++;
              const m = /^(event|id|data): ?(.*)$/.exec(line);
              if (m) fields[m[1]!] = m[2]!;
            }
            if (fields.event)
              events.push({ event: fields.event, id: fields.id ?? "", data: fields.data ?? "" });
          }
        }
      })();
    }
    return res;
  });
  return { opened, events, comments: () => comments, close: () => abort.abort() };
}

/** Polls `check` every 50 ms until true; throws after `ms`. */
export async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Asserts that `res` is the paid `GET /weather` of the test apps (200, the Lisbon forecast, a successful
 * `PAYMENT-RESPONSE` naming a payment hash, `Cache-Control: private`) and returns the settlement.
 */
export async function expectPaidWeather(res: Response): Promise<SettleResponse> {
  expect(res.status).to.equal(200);
  expect(await res.json()).to.deep.equal({ city: "Lisbon", celsius: 21 });
  const settle = decodePaymentResponseHeader(res.headers.get("payment-response")!);
  expect(settle.success).to.equal(true);
  expect(settle.transaction).to.match(/^0x[0-9a-f]{64}$/);
  expect(res.headers.get("cache-control")).to.match(/private/);
  return settle;
}
