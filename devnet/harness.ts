/**
 * Building blocks for a local network, shared by `npm run devnet`, the e2e/integration tests and the
 * benchmarks: a `hardhat node` child process on a free port, the QRWP deployment, funded node identities
 * and `qrwp node start` child processes with an HTTP API client each. Everything started here is stopped
 * by {@link Devnet.stop} (SIGTERM, then SIGKILL after a grace period).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, mkdirSync, writeFileSync, type WriteStream } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { JsonRpcProvider, type JsonRpcSigner, parseEther } from "ethers";
import { DEVNET_SAFETY_MARGINS } from "../protocol/index.js";
import { deployQrwp, writeDeployment, type Deployment } from "../chain/index.js";
import { TestToken__factory } from "../typechain-types/index.js";

export const ROOT = resolve(fileURLToPath(new URL("..", import.meta.url)));
const HARDHAT_BIN = join(ROOT, "node_modules", ".bin", "hardhat");
const CLI = join(ROOT, "cli", "qrwp.ts");
const WEATHER_MERCHANT = join(ROOT, "examples", "weather-merchant.ts");

/** A free TCP port on 127.0.0.1 (asks the OS for one, then releases it). */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs: number,
  intervalMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${lastError instanceof Error ? `: ${lastError.message}` : ""}`,
  );
}

/** SIGTERM, then SIGKILL after `graceMs` (longer while CPU-profiling: the profile is written at exit). */
function stopChild(
  child: ChildProcess,
  graceMs = process.env.QRWP_CPU_PROF_DIR ? 30_000 : 8000,
): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    child.once("exit", () => {
      clearTimeout(timer);
      done();
    });
    child.kill("SIGTERM");
  });
}

/**
 * Opt-in CPU profiling of the `qrwp ... start` children (nodes and watchtowers) and of the merchant app
 * (`startMerchant`): when `QRWP_CPU_PROF_DIR`
 * is set, each child runs with `--cpu-prof --cpu-prof-dir=<dir>/<name>` (NODE_OPTIONS refuses `--cpu-prof`),
 * sampling every `QRWP_CPU_PROF_INTERVAL_US` microseconds when set (V8's default is 1000; a longer interval
 * slows the process less, at the price of fewer samples).
 * V8 writes the profile when the process exits normally, which the graceful stop (SIGTERM, then exit 0)
 * does; a SIGKILL'd child writes none. Summarize with `bench/profile-summary.ts`.
 */
function cpuProfArgs(name: string): string[] {
  const dir = process.env.QRWP_CPU_PROF_DIR;
  if (!dir) return [];
  const interval = process.env.QRWP_CPU_PROF_INTERVAL_US;
  return [
    "--cpu-prof",
    `--cpu-prof-dir=${join(resolve(dir), name)}`,
    ...(interval && /^[1-9][0-9]{0,6}$/.test(interval) ? [`--cpu-prof-interval=${interval}`] : []),
  ];
}

/** A `hardhat node` JSON-RPC chain in a child process. */
export interface LocalChain {
  rpcUrl: string;
  provider: JsonRpcProvider;
  /**
   * Mines an empty block every `intervalMs` (a devnet chain otherwise mines only on transactions, so its
   * latest block time stands still); returns a function that stops it.
   */
  mineEvery(intervalMs: number): () => void;
  stop(): Promise<void>;
}

/** Starts `hardhat node` on a free 127.0.0.1 port and waits until it answers eth_chainId. */
export async function startLocalChain(logFile?: string): Promise<LocalChain> {
  const port = await freePort();
  const child = spawn(HARDHAT_BIN, ["node", "--hostname", "127.0.0.1", "--port", String(port)], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, HARDHAT_DISABLE_TELEMETRY_PROMPT: "true" },
  });
  const log: WriteStream | undefined = logFile ? createWriteStream(logFile) : undefined;
  child.stdout?.on("data", (d: Buffer) => log?.write(d));
  child.stderr?.on("data", (d: Buffer) => log?.write(d));
  const rpcUrl = `http://127.0.0.1:${port}`;
  // `hardhat node` always serves chain id 31337; a static network avoids detection retries while it boots.
  const provider = new JsonRpcProvider(rpcUrl, 31337, { staticNetwork: true, pollingInterval: 200 });
  const exited = new Promise<never>((_, reject) =>
    child.once("exit", (code) => reject(new Error(`hardhat node exited early with code ${code}`))),
  );
  exited.catch(() => undefined);
  await Promise.race([
    waitFor("hardhat node", async () => (await provider.send("eth_chainId", [])) as string, 60_000, 250),
    exited,
  ]);
  return {
    rpcUrl,
    provider,
    mineEvery(intervalMs: number) {
      const timer = setInterval(() => {
        provider.send("evm_mine", []).catch(() => undefined);
      }, intervalMs);
      timer.unref();
      return () => clearInterval(timer);
    },
    async stop() {
      provider.destroy();
      await stopChild(child);
      log?.end();
    },
  };
}

/** A minimal client of a node's HTTP API (bearer token). Throws an Error carrying the coded body on 4xx/5xx. */
export class ApiClient {
  constructor(
    readonly baseUrl: string,
    readonly token: string,
  ) {}

  async call<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(this.baseUrl + path, {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const json = (await res.json().catch(() => ({}))) as T & { error?: { code: string; message: string } };
    if (!res.ok) {
      const err = new Error(
        `${method} ${path} -> ${res.status} ${json.error?.code ?? ""}: ${json.error?.message ?? ""}`,
      );
      Object.assign(err, { status: res.status, body: json });
      throw err;
    }
    return json;
  }
}

/** A child process the devnet supervises: its graceful stop and its crash. */
export interface ChildLifecycle {
  child: ChildProcess;
  /** SIGTERM and wait (graceful shutdown). */
  stop(): Promise<void>;
  /** SIGKILL: a crash. */
  kill(): Promise<void>;
}

/** A `qrwp ... start` child process (a node or a watchtower). */
export interface QrwpProcess extends ChildLifecycle {
  name: string;
  dataDir: string;
  address: string;
  peerId: string;
  /** Dialable multiaddr ending in /p2p/<peerId>. */
  multiaddr: string;
  apiUrl: string;
  api: ApiClient;
}

/** A `qrwp node start` child process (its API needs the token in `tokenFile`). */
export interface NodeProcess extends QrwpProcess {
  tokenFile: string;
}

/** A `qrwp watchtower start` child process (public API; `multiaddr` is what `--watchtower` takes). */
export type TowerProcess = QrwpProcess;

/**
 * The `examples/weather-merchant.ts` child process: a fastify app selling `GET /weather` (x402 v2,
 * `qrwp-channel`) backed by one node's API, with `GET /health` free.
 */
export interface MerchantProcess extends ChildLifecycle {
  name: string;
  /** Base URL of the app, e.g. `http://127.0.0.1:41234`. */
  url: string;
  /** The merchant node's address (the x402 `payTo`). */
  address: string;
  /** Price of `GET /weather`, token base units. */
  price: bigint;
  /** Receipts SQLite file. */
  receiptsFile: string;
  /** File (mode 0600) holding the admin token of `GET /v1/receipts`. */
  adminTokenFile: string;
  /** Client of the app with its admin token: `api.call("GET", "/v1/receipts")`. */
  api: ApiClient;
}

/** One receipt as `GET /v1/receipts` lists it (x402/receipts.ts; `mode` once direct streaming exists). */
export interface ReceiptJson {
  paymentHash: string;
  route: string;
  /** Token base units, decimal. */
  amount: string;
  asset: string;
  payer: string | null;
  /** Unix ms. */
  createdAtMs: number;
  /** "routed" | "direct" (absent before direct streaming: routed). */
  mode?: string;
}

/** `stop`: SIGTERM and wait (graceful shutdown); `kill`: SIGKILL and wait (a crash). */
function lifecycle(child: ChildProcess): { stop(): Promise<void>; kill(): Promise<void> } {
  return {
    stop: () => stopChild(child),
    kill: () => {
      child.kill("SIGKILL");
      return new Promise((r) =>
        child.exitCode !== null || child.signalCode !== null ? r() : child.once("exit", () => r()),
      );
    },
  };
}

/** `process.env` without `names`. */
function withoutEnv(...names: string[]): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const n of names) delete env[n];
  return env;
}

/** Runs `qrwp <args>` to completion; resolves with stdout, rejects with stderr on a non-zero exit. */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...env },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("exit", (code) => done({ stdout, stderr, code: code ?? 1 }));
  });
}

/**
 * A local network: chain, deployment, and named nodes. `dir` holds each node's data directory, the
 * deployment file and every process's log.
 */
export class Devnet {
  readonly nodes = new Map<string, NodeProcess>();
  readonly #children = new Set<ChildProcess>();

  private constructor(
    readonly dir: string,
    readonly chain: LocalChain,
    readonly deployment: Deployment,
    readonly deploymentFile: string,
    readonly funder: JsonRpcSigner,
  ) {}

  /** Starts a chain in `dir` and deploys Bridge, ChannelHub and TestToken. */
  static async start(dir: string): Promise<Devnet> {
    mkdirSync(dir, { recursive: true });
    const chain = await startLocalChain(join(dir, "hardhat-node.log"));
    try {
      const funder = await chain.provider.getSigner(0);
      const deployment = await deployQrwp(funder, { testToken: true });
      const deploymentFile = join(dir, "deployment.json");
      await writeDeployment(deploymentFile, deployment);
      return new Devnet(dir, chain, deployment, deploymentFile, funder);
    } catch (err) {
      await chain.stop();
      throw err;
    }
  }

  get token(): string {
    if (!this.deployment.token) throw new Error("deployment has no test token");
    return this.deployment.token;
  }

  /** Runs `qrwp init` for `name` and funds the new address with ETH (gas) and test tokens (base units). */
  async initNode(
    name: string,
    tokenAmount: bigint,
  ): Promise<{ dataDir: string; address: string; peerId: string }> {
    const dataDir = join(this.dir, name);
    const res = await runCli(["init", "--data-dir", dataDir]);
    if (res.code !== 0) throw new Error(`qrwp init ${name} failed: ${res.stderr.trim()}`);
    const { address, peerId } = JSON.parse(res.stdout.trim().split("\n").pop() as string) as {
      address: string;
      peerId: string;
    };
    await (await this.funder.sendTransaction({ to: address, value: parseEther("100") })).wait();
    const token = TestToken__factory.connect(this.token, this.funder);
    await (await token.mint(address, tokenAmount)).wait();
    return { dataDir, address, peerId };
  }

  /** Starts `qrwp node start` for an initialised node and waits for its ready line and API. */
  async startNode(
    name: string,
    options: {
      apiPort?: number;
      listenPort?: number;
      chainPollMs?: number;
      /** Mediator fee schedule (defaults 0). */
      feeFlat?: bigint;
      feePpm?: number;
      /** `--rpc` URLs in order (default the devnet chain's). */
      rpcUrls?: string[];
      /** Extra `qrwp node start` flags. */
      extraArgs?: string[];
    } = {},
  ): Promise<NodeProcess> {
    const dataDir = join(this.dir, name);
    const rpcArgs = (options.rpcUrls ?? [this.chain.rpcUrl]).flatMap((u) => ["--rpc", u]);
    const { child, info } = await this.#startQrwp(name, options, ({ apiPort, listenPort }) => [
      "node",
      "start",
      "--data-dir",
      dataDir,
      ...rpcArgs,
      "--deployment",
      this.deploymentFile,
      "--listen",
      `/ip4/127.0.0.1/tcp/${listenPort}`,
      "--api",
      `127.0.0.1:${apiPort}`,
      "--chain-poll-ms",
      String(options.chainPollMs ?? 1000),
      // Devnet margins (instant blocks, no reorgs): expiry delta 10 s, reveal timeout 5 s.
      "--reorg-seconds",
      String(DEVNET_SAFETY_MARGINS.reorgSeconds),
      "--grace-seconds",
      String(DEVNET_SAFETY_MARGINS.graceSeconds),
      "--confirmation-seconds",
      String(DEVNET_SAFETY_MARGINS.confirmationSeconds),
      "--fee-flat",
      String(options.feeFlat ?? 0n),
      "--fee-ppm",
      String(options.feePpm ?? 0),
      ...(options.extraArgs ?? []),
    ]);
    const tokenFile = join(dataDir, "api-token");
    const { readApiToken } = await import("../host/keystore.js");
    const node: NodeProcess = {
      name,
      dataDir,
      address: info.address,
      peerId: info.peerId,
      multiaddr: `${info.multiaddrs[0]}/p2p/${info.peerId}`,
      apiUrl: info.apiUrl,
      tokenFile,
      api: new ApiClient(info.apiUrl, readApiToken(dataDir)),
      child,
      ...lifecycle(child),
    };
    this.nodes.set(name, node);
    return node;
  }

  /**
   * Spawns `qrwp <args(ports)>` (tsx, from the repo root) on an API and a libp2p port (the caller's, or free
   * ones from {@link freePort}) and waits for its ready line. When the child lost the race for a port
   * freePort picked (another process bound it in between: EADDRINUSE), it is spawned again on new ports (at
   * most 3 attempts; never when the caller chose the ports).
   */
  async #startQrwp<T = { address: string; peerId: string; multiaddrs: string[]; apiUrl: string }>(
    name: string,
    ports: { apiPort?: number; listenPort?: number },
    args: (ports: { apiPort: number; listenPort: number }) => string[],
  ): Promise<{ child: ChildProcess; info: T }> {
    const portsChosen = ports.apiPort !== undefined || ports.listenPort !== undefined;
    for (let attempt = 1; ; attempt++) {
      const apiPort = ports.apiPort ?? (await freePort());
      const listenPort = ports.listenPort ?? (await freePort());
      const child = spawn(
        process.execPath,
        [...cpuProfArgs(name), "--import", "tsx", CLI, ...args({ apiPort, listenPort })],
        { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
      );
      try {
        return { child, info: await this.#ready<T>(name, child) };
      } catch (err) {
        const lostPortRace = err instanceof Error && err.message.includes("EADDRINUSE");
        if (!lostPortRace || portsChosen || attempt >= 3) throw err;
      }
    }
  }

  /**
   * Tracks a child, logs it to `<dir>/<name>.log` and waits for its JSON ready line (parsed). An exit before
   * it is rejected with the end of the child's stderr in the message.
   */
  async #ready<T = { address: string; peerId: string; multiaddrs: string[]; apiUrl: string }>(
    name: string,
    child: ChildProcess,
  ): Promise<T> {
    this.#children.add(child);
    child.once("exit", () => this.#children.delete(child));
    const log = createWriteStream(join(this.dir, `${name}.log`), { flags: "a" });
    let outputTail = ""; // the end of what the child printed (stderr and stdout)
    child.stderr?.on("data", (d: Buffer) => {
      log.write(d);
      outputTail = (outputTail + d.toString()).slice(-1000);
    });
    const lines = createInterface({ input: child.stdout! });
    const ready = new Promise<T>((resolveReady, reject) => {
      lines.on("line", (line) => {
        log.write(line + "\n");
        outputTail = (outputTail + line + "\n").slice(-1000);
        if (line.startsWith('{"event":"ready"')) resolveReady(JSON.parse(line) as T);
      });
      // "close", not "exit": by then the child's output has been read to the end.
      child.once("close", (code) =>
        reject(
          new Error(
            `${name} exited with code ${code} before it was ready (see ${name}.log): ${outputTail.trim()}`,
          ),
        ),
      );
    });
    return Promise.race([
      ready,
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error(`${name} not ready in 60 s`)), 60_000).unref(),
      ),
    ]);
  }

  /** Creates a watchtower's keys (`qrwp init`) and funds its address with ETH for contest gas. */
  async initWatchtower(name: string): Promise<{ dataDir: string; address: string }> {
    const dataDir = join(this.dir, name);
    const res = await runCli(["init", "--data-dir", dataDir]);
    if (res.code !== 0) throw new Error(`qrwp init ${name} failed: ${res.stderr.trim()}`);
    const { address } = JSON.parse(res.stdout.trim().split("\n").pop() as string) as { address: string };
    await (await this.funder.sendTransaction({ to: address, value: parseEther("10") })).wait();
    return { dataDir, address };
  }

  /**
   * Starts `qrwp watchtower start` for `name` (keys from {@link initWatchtower}, or created on first start
   * and then unfunded) and waits for its ready line. `rpcUrls` default to the devnet chain.
   */
  async startWatchtower(
    name: string,
    options: { rpcUrls?: string[]; apiPort?: number; listenPort?: number; extraArgs?: string[] } = {},
  ): Promise<TowerProcess> {
    const dataDir = join(this.dir, name);
    const rpcArgs = (options.rpcUrls ?? [this.chain.rpcUrl]).flatMap((u) => ["--rpc", u]);
    const { child, info } = await this.#startQrwp(name, options, ({ apiPort, listenPort }) => [
      "watchtower",
      "start",
      "--data-dir",
      dataDir,
      ...rpcArgs,
      "--deployment",
      this.deploymentFile,
      "--listen",
      `/ip4/127.0.0.1/tcp/${listenPort}`,
      "--api",
      `127.0.0.1:${apiPort}`,
      "--poll-ms",
      "250",
      ...(options.extraArgs ?? []),
    ]);
    return {
      name,
      dataDir,
      address: info.address,
      peerId: info.peerId,
      multiaddr: `${info.multiaddrs[0]}`,
      apiUrl: info.apiUrl,
      api: new ApiClient(info.apiUrl, ""),
      child,
      ...lifecycle(child),
    };
  }

  /**
   * Starts `examples/weather-merchant.ts` for `node` (its API URL and data directory, for the api-token) and
   * waits for its ready line. `GET /weather` costs `price` base units of the devnet token; receipts go to
   * `<dir>/<name>-receipts.sqlite`; a random admin token (passed by environment, never on the command line;
   * kept in `<dir>/<name>-admin-token`, mode 0600) guards `GET /v1/receipts`. Stopped with the devnet.
   */
  async startMerchant(
    name: string,
    node: NodeProcess,
    options: { price: bigint; port?: number; logLevel?: string; extraArgs?: string[] },
  ): Promise<MerchantProcess> {
    const port = options.port ?? (await freePort());
    const adminToken = randomBytes(24).toString("hex");
    const receiptsFile = join(this.dir, `${name}-receipts.sqlite`);
    const adminTokenFile = join(this.dir, `${name}-admin-token`);
    writeFileSync(adminTokenFile, adminToken + "\n", { mode: 0o600 });
    const child = spawn(
      process.execPath,
      [
        ...cpuProfArgs(name),
        "--import",
        "tsx",
        WEATHER_MERCHANT,
        "--api-url",
        node.apiUrl,
        "--data-dir",
        node.dataDir,
        "--token",
        this.token,
        "--price",
        options.price.toString(),
        "--listen",
        `127.0.0.1:${port}`,
        "--receipts",
        receiptsFile,
        "--log-level",
        options.logLevel ?? "info",
        ...(options.extraArgs ?? []),
      ],
      {
        cwd: ROOT,
        stdio: ["ignore", "pipe", "pipe"],
        // The node token comes from --data-dir only: a QRWP_API_TOKEN of the caller's shell must not win.
        env: { ...withoutEnv("QRWP_API_TOKEN"), QRWP_MERCHANT_ADMIN_TOKEN: adminToken },
      },
    );
    const info = await this.#ready<{ url: string; merchant: string }>(name, child);
    return {
      name,
      url: info.url,
      address: info.merchant,
      price: options.price,
      receiptsFile,
      adminTokenFile,
      api: new ApiClient(info.url, adminToken),
      child,
      ...lifecycle(child),
    };
  }

  /** On-chain token balance (base units). */
  async tokenBalance(address: string): Promise<bigint> {
    return TestToken__factory.connect(this.token, this.chain.provider).balanceOf(address);
  }

  /** Stops every node process and the chain. Safe to call twice. */
  async stop(): Promise<void> {
    await Promise.all([...this.#children].map((c) => stopChild(c)));
    await this.chain.stop();
  }
}
