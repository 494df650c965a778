/**
 * RpcPool against a real `hardhat node` child process and small local HTTP servers in front of it: failover
 * past a URL that stalls, a URL on another chain refused with a coded error and never asked again, URL
 * secrets (path, user and password) absent from every log record and error, basic authentication taken from
 * the URL.
 */
import { expect } from "chai";
import { createServer, request as httpRequest, type Server } from "node:http";
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net";
import { RpcPool, type ChainLogger } from "../../chain/index.js";
import { freePort, startLocalChain, type LocalChain } from "../../devnet/harness.js";
import { QrwpError } from "../../protocol/index.js";

interface LogRecord {
  level: string;
  msg: string;
  obj: Record<string, unknown>;
}

function captureLogger() {
  const records: LogRecord[] = [];
  const at = (level: string) => (obj: object, msg?: string) =>
    records.push({ level, msg: msg ?? "", obj: obj as Record<string, unknown> });
  const log: ChainLogger = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
  return { log, records };
}

const portOf = (s: Server | TcpServer) => (s.address() as { port: number }).port;

describe("chain/RpcPool (hardhat node)", function () {
  this.timeout(120_000);
  let chain: LocalChain;
  const servers: (Server | TcpServer)[] = [];
  const sockets: Socket[] = [];
  const pools: RpcPool[] = [];

  before(async function () {
    chain = await startLocalChain();
  });

  afterEach(function () {
    for (const p of pools.splice(0)) p.destroy();
  });

  after(async function () {
    for (const s of sockets) s.destroy();
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    await chain?.stop();
  });

  function pool(init: Omit<ConstructorParameters<typeof RpcPool>[0], "chainId">) {
    const p = new RpcPool({ chainId: 31337, ...init });
    pools.push(p);
    return p;
  }

  async function listen<T extends Server | TcpServer>(server: T): Promise<T> {
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    return server;
  }

  /** A JSON-RPC server that answers eth_chainId with `chainId` and everything else with "0x0"; counts calls. */
  async function otherChain(chainId: string) {
    const calls: string[] = [];
    const server = await listen(
      createServer((req, res) => {
        let body = "";
        req.on("data", (d: Buffer) => (body += d.toString()));
        req.on("end", () => {
          const { id, method } = JSON.parse(body) as { id: number; method: string };
          calls.push(method);
          res.setHeader("content-type", "application/json");
          res.end(JSON.stringify({ jsonrpc: "2.0", id, result: method === "eth_chainId" ? chainId : "0x0" }));
        });
      }),
    );
    return { url: `http://127.0.0.1:${portOf(server)}`, calls };
  }

  it("fails over past a URL that stalls, then stays on the URL that answered", async function () {
    const stall = await listen(createTcpServer((socket) => sockets.push(socket)));
    const stalled = `http://127.0.0.1:${portOf(stall)}`;
    const { log, records } = captureLogger();
    const p = pool({ rpcUrls: [stalled, chain.rpcUrl], requestTimeoutMs: 300, log, name: "test pool" });
    expect(p.currentLabel).to.equal(stalled);

    const head = Number(await chain.provider.send("eth_blockNumber", []));
    expect(Number(await p.request("eth_blockNumber", []))).to.be.at.least(head);
    const warnings = records.filter((r) => r.level === "warn");
    expect(warnings.map((r) => [r.obj.rpc, r.obj.method, r.obj.err])).to.deep.equal([
      [stalled, "eth_blockNumber", "eth_chainId timed out after 300 ms"],
    ]);
    expect(records.filter((r) => r.msg === "test pool switched RPC URL").map((r) => r.obj.rpc)).to.deep.equal(
      [chain.rpcUrl],
    );
    expect(p.currentLabel).to.equal(chain.rpcUrl);

    // Typed calls through the URL's ethers provider fail over the same way and start on the current URL.
    const balance = await p.run("getBalance", (e) => e.provider.getBalance(`0x${"11".repeat(20)}`));
    expect(balance).to.equal(0n);
    expect(records.filter((r) => r.level === "warn").length).to.equal(1);

    // Every URL stalls: a coded error naming the field, after one try per URL.
    const dead = pool({ rpcUrls: [stalled, stalled], requestTimeoutMs: 200 });
    const error = await dead.request("eth_blockNumber", []).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(QrwpError);
    expect((error as QrwpError).code).to.equal("CHAIN_ERROR");
    expect((error as QrwpError).details.field).to.equal("rpcUrls");
    expect((error as QrwpError).message.match(/timed out after 200 ms/g)).to.have.length(2);
  });

  it("refuses a URL that serves another chain with a coded error and never uses it again", async function () {
    const liar = await otherChain("0x1");
    const { log, records } = captureLogger();
    const p = pool({ rpcUrls: [liar.url, chain.rpcUrl], log });
    for (let i = 0; i < 3; i++) expect(await p.request("eth_chainId", [])).to.equal("0x7a69");
    // Asked once for its chain id, never for anything else.
    expect(liar.calls).to.deep.equal(["eth_chainId"]);
    expect(p.refusedLabels).to.deep.equal([liar.url]);
    const refusal = records.find((r) => r.level === "error");
    expect(refusal?.msg).to.equal("RPC URL serves another chain; it will not be used");
    expect(refusal?.obj).to.include({ rpc: liar.url, chainId: "1", expectedChainId: "31337" });

    // Alone, the lying URL makes every call fail with CHAIN_ERROR, and it is still not asked again.
    const alone = pool({ rpcUrls: [liar.url] });
    for (let i = 0; i < 2; i++) {
      const error = (await alone.request("eth_blockNumber", []).catch((e: unknown) => e)) as QrwpError;
      expect(error.code).to.equal("CHAIN_ERROR");
      expect(error.message).to.contain("serves chain id 1, expected 31337");
      const cause = error.cause as QrwpError;
      expect(cause.code).to.equal("CHAIN_ERROR");
      expect(cause.details).to.include({ field: "rpcUrls", reason: "WRONG_CHAIN_ID" });
    }
    expect(liar.calls).to.deep.equal(["eth_chainId", "eth_chainId"]);
  });

  it("keeps URL secrets out of logs and errors; credentials in the URL are sent as basic authentication", async function () {
    const secretPath = "/v3/key-6b1f0a9e";
    const password = "hunter2-pw";
    // A gateway that wants `Authorization: Basic user:password` and forwards to the hardhat node.
    const seenPaths: string[] = [];
    const gateway = await listen(
      createServer((req, res) => {
        seenPaths.push(req.url ?? "");
        const expected = `Basic ${Buffer.from(`user:${password}`).toString("base64")}`;
        if (req.headers.authorization !== expected) {
          res.statusCode = 401;
          res.end(`unauthorized ${req.url}`);
          return;
        }
        const upstream = httpRequest(
          `${chain.rpcUrl}/`,
          { method: "POST", headers: { "content-type": "application/json" } },
          (up) => {
            res.statusCode = up.statusCode ?? 502;
            up.pipe(res);
          },
        );
        req.pipe(upstream);
      }),
    );
    // Passes the chain-id check, then answers 500 (quoting the URL) to everything else.
    const failing = await listen(
      createServer((req, res) => {
        let body = "";
        req.on("data", (d: Buffer) => (body += d.toString()));
        req.on("end", () => {
          const call = JSON.parse(body) as { id?: number; method?: string };
          if (call.method === "eth_chainId") {
            res.setHeader("content-type", "application/json");
            res.end(JSON.stringify({ jsonrpc: "2.0", id: call.id, result: "0x7a69" }));
            return;
          }
          res.statusCode = 500;
          res.end(`internal error at ${req.url}`);
        });
      }),
    );
    const refusedPort = await freePort();
    const { log, records } = captureLogger();
    const urls = [
      `http://127.0.0.1:${refusedPort}${secretPath}?apikey=${password}`,
      `http://user:wrong-${password}@127.0.0.1:${portOf(gateway)}${secretPath}`,
      `http://127.0.0.1:${portOf(failing)}${secretPath}`,
      `http://user:${password}@127.0.0.1:${portOf(gateway)}${secretPath}`,
    ];
    const p = pool({ rpcUrls: urls, requestTimeoutMs: 2_000, log });
    expect(await p.request("eth_blockNumber", [])).to.match(/^0x[0-9a-f]+$/);
    expect(p.currentLabel).to.equal(`http://127.0.0.1:${portOf(gateway)}`);
    // The ethers provider of the URL uses the same credentials.
    expect(await p.run("getBlockNumber", (e) => e.provider.getBlockNumber())).to.be.a("number");
    expect(seenPaths.every((path) => path === secretPath)).to.equal(true);

    // Through the ethers provider of the failing URL too (its errors quote the request URL).
    const thrown: unknown[] = [];
    const onlyFailing = pool({ rpcUrls: urls.slice(0, 3), requestTimeoutMs: 2_000, log });
    thrown.push(await onlyFailing.request("eth_blockNumber", []).catch((e: unknown) => e));
    thrown.push(
      await onlyFailing.run("getBlockNumber", (e) => e.provider.getBlockNumber()).catch((e: unknown) => e),
    );
    thrown.push(await onlyFailing.request("eth_blockNumber", []).catch((e: unknown) => e));

    const warnings = records.filter((r) => r.level === "warn");
    expect(warnings.length).to.be.at.least(3);
    const text = JSON.stringify(records) + thrown.map((e) => (e as Error).message).join("\n");
    expect(text).to.contain("HTTP 401").and.to.contain("HTTP 500");
    for (const secret of ["key-6b1f0a9e", password, "apikey", "wrong-"]) expect(text).not.to.contain(secret);
  });
});
