/**
 * TxSender against a real `hardhat node` child process: a reverting call refused by its simulation (decoded,
 * nothing sent), hub and registry calls driven to their typed results, concurrent sends on consecutive
 * nonces, one transaction (same hash) when the first URL stalls after passing it on, a transaction that is
 * not mined replaced at the same nonce with higher fees, the confirmation depth, a replacement of a nonce
 * already mined, a transaction a reorganisation dropped broadcast again before the next one; PooledHubClient
 * (HubClient's methods over the pool and one sender) when the first URL stalls.
 */
import { expect } from "chai";
import { ethers } from "ethers";
import { createServer, request as httpRequest, type Server } from "node:http";
import {
  HubCallError,
  HubClient,
  NonceUsedError,
  PooledHubClient,
  RpcPool,
  TxSender,
  closeChannelCall,
  deployQrwp,
  registerSecretBatchCall,
  registerSecretCall,
  settleChannelCall,
  type ChainLogger,
  type ConfirmedTx,
  type Deployment,
  type SentTx,
} from "../../chain/index.js";
import { startLocalChain, type LocalChain } from "../../devnet/harness.js";

const E = (n: string) => ethers.parseEther(n);
const secret = () => ethers.hexlify(ethers.randomBytes(32));

function captureLogger() {
  const records: { level: string; msg: string; obj: Record<string, unknown> }[] = [];
  const at = (level: string) => (obj: object, msg?: string) =>
    records.push({ level, msg: msg ?? "", obj: obj as Record<string, unknown> });
  const log: ChainLogger = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
  return { log, records };
}

async function waitUntil(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("chain/TxSender (hardhat node)", function () {
  this.timeout(120_000);
  let chain: LocalChain;
  let deployment: Deployment;
  let funder: ethers.Signer;
  const pools: RpcPool[] = [];
  const servers: Server[] = [];

  before(async function () {
    chain = await startLocalChain();
    funder = await chain.provider.getSigner(0);
    deployment = await deployQrwp(funder, { testToken: false });
  });

  afterEach(async function () {
    await chain.provider.send("evm_setAutomine", [true]);
    for (const p of pools.splice(0)) p.destroy();
  });

  after(async function () {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    await chain?.stop();
  });

  /** A funded account and a sender for it over `rpcUrls` (default: the node itself). */
  async function account(options: { rpcUrls?: string[]; requestTimeoutMs?: number; log?: ChainLogger } = {}) {
    const wallet = new ethers.Wallet(ethers.hexlify(ethers.randomBytes(32)), chain.provider);
    await (await funder.sendTransaction({ to: wallet.address, value: E("10") })).wait();
    const pool = new RpcPool({
      rpcUrls: options.rpcUrls ?? [chain.rpcUrl],
      chainId: deployment.chainId,
      ...(options.requestTimeoutMs !== undefined ? { requestTimeoutMs: options.requestTimeoutMs } : {}),
      ...(options.log ? { log: options.log } : {}),
    });
    pools.push(pool);
    const sender = new TxSender({
      pool,
      privateKey: wallet.privateKey,
      deployment,
      pollIntervalMs: 50,
      ...(options.log ? { log: options.log } : {}),
    });
    return { wallet, sender };
  }

  const nonceOf = async (address: string) => chain.provider.getTransactionCount(address, "latest");
  const head = async () => Number(await chain.provider.send("eth_blockNumber", []));

  it("simulates first: a reverting call is a decoded HubCallError and nothing is sent", async function () {
    const { wallet, sender } = await account();
    const none = {
      participant: wallet.address,
      transferredAmount: 0n,
      lockedAmount: 0n,
      locksRoot: ethers.ZeroHash,
    };
    const call = settleChannelCall(deployment, 999n, none, {
      ...none,
      participant: ethers.Wallet.createRandom().address,
    });
    const error = (await sender.send(call).catch((e: unknown) => e)) as HubCallError;
    expect(error).to.be.instanceOf(HubCallError);
    expect(error.errorName).to.equal("ChannelHubInvalidChannelState");
    expect(error.errorArgs[0]).to.equal(999n);
    expect(error.message).to.contain("ChannelHub.settleChannel failed");
    expect(await nonceOf(wallet.address)).to.equal(0);
    expect(await chain.provider.getTransactionCount(wallet.address, "pending")).to.equal(0);
  });

  it("closes and settles a channel: typed results with the decoded events, after its own HubClient transaction", async function () {
    const { wallet, sender } = await account();
    const partner = ethers.Wallet.createRandom().address;
    // The account's first transaction goes through another client: the sender reads the nonce from the chain.
    const opened = await new HubClient(wallet, deployment).openChannel(partner, ethers.ZeroAddress, 10);
    const closed = await sender.send(closeChannelCall(deployment, opened.channelId, partner, null));
    expect(closed.txNonce).to.equal(1);
    expect(closed.sent).to.have.length(1);
    expect(closed.sent[0]?.txHash).to.equal(closed.txHash);
    expect(closed.confirmations).to.equal(1);
    const receipt = await chain.provider.getTransactionReceipt(closed.txHash);
    expect(receipt?.blockNumber).to.equal(closed.blockNumber);
    expect(receipt?.blockHash).to.equal(closed.blockHash);
    expect(receipt?.gasUsed).to.equal(closed.gasUsed);
    expect(closed.events.map((e) => e.type)).to.deep.equal(["ChannelClosed"]);
    expect(closed.events[0]).to.include({
      channelId: opened.channelId,
      closingParticipant: wallet.address,
      nonce: 0n,
      txHash: closed.txHash,
    });

    // Too early: the settle timeout has not passed.
    const zero = (participant: string) => ({
      participant,
      transferredAmount: 0n,
      lockedAmount: 0n,
      locksRoot: ethers.ZeroHash,
    });
    const settle = settleChannelCall(deployment, opened.channelId, zero(wallet.address), zero(partner));
    const early = (await sender.send(settle).catch((e: unknown) => e)) as HubCallError;
    expect(early.errorName).to.equal("ChannelHubSettleTimeoutNotExpired");
    await chain.provider.send("evm_increaseTime", [11]);
    await chain.provider.send("evm_mine", []);
    const settled = await sender.send(settle);
    expect(settled.txNonce).to.equal(2);
    expect(settled.events).to.have.length(1);
    const event = settled.events[0];
    if (event?.type !== "ChannelSettled") throw new Error(`expected ChannelSettled, got ${event?.type}`);
    expect([
      event.channelId,
      event.participant1Amount,
      event.participant2Amount,
      event.cooperative,
    ]).to.deep.equal([opened.channelId, 0n, 0n, false]);
  });

  it("concurrent sends take consecutive nonces through the account's queue", async function () {
    const { wallet, sender } = await account();
    const secrets = [secret(), secret(), secret()];
    const results = await Promise.all([
      sender.send(registerSecretCall(deployment, secrets[0] as string)),
      sender.send(registerSecretBatchCall(deployment, [secrets[1] as string, secrets[2] as string])),
      sender.send(registerSecretCall(deployment, secrets[0] as string)),
    ]);
    expect(results.map((r) => r.txNonce).sort()).to.deep.equal([0, 1, 2]);
    expect(await nonceOf(wallet.address)).to.equal(3);
    const revealed = (r: ConfirmedTx) =>
      r.events.map((e) => (e.type === "SecretRevealed" ? e.secret : e.type));
    expect(revealed(results[0] as ConfirmedTx)).to.deep.equal([secrets[0]]);
    expect(revealed(results[1] as ConfirmedTx)).to.deep.equal([secrets[1], secrets[2]]);
    // The same secret again registers nothing: mined, no event.
    expect(revealed(results[2] as ConfirmedTx)).to.deep.equal([]);
  });

  for (const mode of ["mined at once", "still in the mempool"] as const) {
    it(`broadcasts one transaction (the same bytes and hash) when the first URL stalls after passing it on (${mode})`, async function () {
      const automine = mode === "mined at once";
      // Forwards every request to the node, but never answers eth_sendRawTransaction (after forwarding it).
      const forwarded: string[] = [];
      const proxy = createServer((req, res) => {
        let body = "";
        req.on("data", (d: Buffer) => (body += d.toString()));
        req.on("end", () => {
          const call = JSON.parse(body) as { method?: string; params?: unknown[] };
          const upstream = httpRequest(
            chain.rpcUrl,
            { method: "POST", headers: { "content-type": "application/json" } },
            (up) => {
              if (call.method === "eth_sendRawTransaction") {
                forwarded.push(String(call.params?.[0]));
                up.resume();
                return; // stall: the client never hears back
              }
              res.statusCode = up.statusCode ?? 502;
              up.pipe(res);
            },
          );
          upstream.end(body);
        });
      });
      servers.push(proxy);
      await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", () => r()));
      const proxyUrl = `http://127.0.0.1:${(proxy.address() as { port: number }).port}`;
      const { log, records } = captureLogger();
      const { wallet, sender } = await account({
        rpcUrls: [proxyUrl, chain.rpcUrl],
        requestTimeoutMs: 1_000,
        log,
      });

      const s = secret();
      if (!automine) await chain.provider.send("evm_setAutomine", [false]);
      const done = await sender.send(registerSecretCall(deployment, s), {
        // Mine once the (only) broadcast is done, wherever it landed.
        onSent: () => void chain.provider.send("evm_mine", []),
      });
      expect(forwarded).to.have.length(1);
      expect(ethers.Transaction.from(forwarded[0]).hash).to.equal(done.txHash);
      expect(done.sent.map((t) => t.txHash)).to.deep.equal([done.txHash]);
      // One transaction of the account, and it is the one that registered the secret.
      expect(await nonceOf(wallet.address)).to.equal(1);
      const block = await chain.provider.getBlock(done.blockNumber);
      expect(block?.transactions).to.deep.equal([done.txHash]);
      expect(done.events.map((e) => (e.type === "SecretRevealed" ? e.secret : e.type))).to.deep.equal([s]);
      const failed = records
        .filter((r) => r.msg === "RPC call failed")
        .map((r) => [r.obj.rpc, r.obj.method, r.obj.err]);
      expect(failed).to.deep.equal([
        [proxyUrl, "eth_sendRawTransaction", "eth_sendRawTransaction timed out after 1000 ms"],
      ]);
      // When the second URL got the same bytes the node had mined them ("nonce too low", but our hash is on
      // the chain) or held them in its mempool ("known transaction"): a success either way.
      const held = records
        .filter((r) => r.level === "debug" && r.obj.tx === done.txHash)
        .map((r) => [r.obj.rpc, r.msg]);
      expect(held).to.deep.equal([
        [
          chain.rpcUrl,
          automine ? "the chain already holds the transaction" : "the URL already holds the transaction",
        ],
      ]);
    });
  }

  it("replaces a transaction that is not mined in time: same nonce, higher fees, and the replacement lands", async function () {
    const { wallet, sender } = await account();
    await chain.provider.send("evm_setAutomine", [false]);
    const sent: SentTx[] = [];
    const sending = sender.send(registerSecretCall(deployment, secret()), {
      mineTimeoutMs: 300,
      onSent: (tx) => sent.push(tx),
    });
    sending.catch(() => undefined);
    await waitUntil("a replacement", () => sent.length >= 2);
    const [first, second] = sent as [SentTx, SentTx];
    expect(first.replacement).to.equal(false);
    expect(second.replacement).to.equal(true);
    expect(second.txNonce).to.equal(first.txNonce);
    expect(second.txHash).not.to.equal(first.txHash);
    expect(second.maxFeePerGas >= (first.maxFeePerGas * 125n) / 100n).to.equal(true);
    expect(second.maxPriorityFeePerGas >= (first.maxPriorityFeePerGas * 125n) / 100n).to.equal(true);
    expect(second.gasLimit).to.equal(first.gasLimit);
    await chain.provider.send("evm_mine", []);
    const done = await sending;
    const landed = sent.find((t) => t.txHash === done.txHash);
    expect(landed?.replacement).to.equal(true);
    expect(await chain.provider.getTransactionReceipt(first.txHash)).to.equal(null);
    expect(done.sent.map((t) => t.txHash)).to.deep.equal(sent.map((t) => t.txHash));
    expect(await nonceOf(wallet.address)).to.equal(1);
  });

  it("returns only once the transaction is as deep as the confirmations asked for", async function () {
    const { sender } = await account();
    let result: ConfirmedTx | null = null;
    let headAtResult = -1;
    const sent: SentTx[] = [];
    const sending = sender.send(registerSecretCall(deployment, secret()), {
      confirmations: 3,
      onSent: (tx) => sent.push(tx),
    });
    void sending.then(
      async (r) => {
        headAtResult = await head();
        result = r;
      },
      () => undefined,
    );
    await waitUntil(
      "the receipt",
      async () => sent.length > 0 && (await chain.provider.getTransactionReceipt(sent[0]!.txHash)) !== null,
    );
    const minedIn = (await chain.provider.getTransactionReceipt(sent[0]!.txHash))!.blockNumber;
    for (let depth = 1; depth < 3; depth++) {
      expect(await head()).to.equal(minedIn + depth - 1);
      await sleep(300); // several of the sender's polls
      expect(result).to.equal(null);
      await chain.provider.send("evm_mine", []);
    }
    const done = await sending;
    expect(done.blockNumber).to.equal(minedIn);
    expect(done.confirmations).to.be.at.least(3);
    await waitUntil("the result", () => result !== null);
    expect(headAtResult).to.be.at.least(minedIn + 2);
  });

  it("a replacement whose nonce was already mined by another transaction is a NonceUsedError", async function () {
    const { wallet, sender } = await account();
    const mined = await sender.send(registerSecretCall(deployment, secret()));
    const error = await sender
      .submit(registerSecretCall(deployment, secret()), {
        replace: { txNonce: mined.txNonce, maxFeePerGas: 10n ** 9n, maxPriorityFeePerGas: 10n ** 9n },
      })
      .catch((e: unknown) => e);
    expect(error).to.be.instanceOf(NonceUsedError);
    expect(await nonceOf(wallet.address)).to.equal(1);
    // The next fresh send takes the next nonce.
    expect((await sender.send(registerSecretCall(deployment, secret()))).txNonce).to.equal(1);
  });

  it("broadcasts its own transaction again (same bytes) when a reorganisation dropped it, so the next one has no gap", async function () {
    const { wallet, sender } = await account();
    // Uncached reads (ethers caches an identical request for 250 ms).
    const mined = async () =>
      Number(await chain.provider.send("eth_getTransactionCount", [wallet.address, "latest"]));
    const snapshot = (await chain.provider.send("evm_snapshot", [])) as string;
    const first = await sender.send(registerSecretCall(deployment, secret()));
    expect(first.txNonce).to.equal(0);
    await chain.provider.send("evm_revert", [snapshot]);
    expect(await mined()).to.equal(0);
    const second = await sender.send(registerSecretCall(deployment, secret()));
    expect(second.txNonce).to.equal(1);
    expect(await mined()).to.equal(2);
    expect((await chain.provider.getTransaction(first.txHash))?.blockNumber).to.be.a("number");
  });

  it("PooledHubClient: opens, deposits and reads through the second URL when the first stalls; refusals send nothing", async function () {
    const stall = createServer(() => undefined);
    servers.push(stall);
    await new Promise<void>((r) => stall.listen(0, "127.0.0.1", r));
    const stalled = `http://127.0.0.1:${(stall.address() as { port: number }).port}`;
    const wallet = new ethers.Wallet(ethers.hexlify(ethers.randomBytes(32)), chain.provider);
    await (await funder.sendTransaction({ to: wallet.address, value: E("10") })).wait();
    const pool = new RpcPool({
      rpcUrls: [stalled, chain.rpcUrl],
      chainId: deployment.chainId,
      requestTimeoutMs: 300,
    });
    pools.push(pool);
    const sender = new TxSender({ pool, privateKey: wallet.privateKey, deployment, pollIntervalMs: 50 });
    const client = new PooledHubClient({ pool, sender, deployment });
    const partner = ethers.Wallet.createRandom().address;

    const opened = await client.openChannel(partner, ethers.ZeroAddress, 30);
    expect(opened.channelId > 0n).to.equal(true);
    const view = await client.getChannel(opened.channelId);
    expect(view.state).to.equal("opened");
    expect(view.participant2).to.equal(partner);
    const deposited = await client.setTotalDeposit(opened.channelId, E("2"));
    expect(deposited.approve).to.equal(null);
    expect((await client.getParticipant(opened.channelId, wallet.address)).totalDeposit).to.equal(E("2"));

    const nonce = await nonceOf(wallet.address);
    const same = (await client
      .setTotalDeposit(opened.channelId, E("2"))
      .catch((e: unknown) => e)) as HubCallError;
    expect(same).to.be.instanceOf(HubCallError);
    expect(same.errorName).to.equal("ChannelHubDepositNotIncreasing");
    const tooMuch = (await client.setTotalDeposit(opened.channelId, E("100")).catch((e: unknown) => e)) as {
      code?: string;
      details?: { field?: string };
    };
    expect(tooMuch.code).to.equal("INSUFFICIENT_FUNDS");
    expect(tooMuch.details?.field).to.equal("totalDeposit");
    const bad = (await client
      .setTotalWithdraw(opened.channelId, "0x1234", 1n, 1n, "0x", "0x")
      .catch((e: unknown) => e)) as { code?: string; details?: { field?: string } };
    expect(bad.code).to.equal("INVALID_ARGUMENT");
    expect(bad.details?.field).to.equal("participant");
    expect(await nonceOf(wallet.address)).to.equal(nonce); // nothing was sent for the refusals
    expect(pool.currentLabel).to.equal(chain.rpcUrl);
  });
});
