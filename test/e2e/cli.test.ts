/**
 * The `qrwp` CLI as a user runs it: `init` writes private files and prints the identity; bad flags exit 2
 * with a one-line message naming the flag; nothing is created on a refused command. Against two running
 * nodes (one devnet for the whole block): `info`, `channel open|list|show|deposit|close` and
 * `payment list|show` print tables (and `--json` the API's JSON), page through payments, and refuse bad
 * arguments with exit 2 naming them.
 */
import { existsSync, mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { parseUnits } from "ethers";
import { Devnet, runCli, type NodeProcess } from "../../devnet/harness.js";
import { shortHex } from "../../node/cli-format.js";

const ADDR = "0x" + "ab".repeat(20);

describe("e2e: qrwp CLI", function () {
  this.timeout(60_000);
  const dir = mkdtempSync(join(tmpdir(), "qrwp-cli-"));

  it("init creates keys and an API token with mode 0600 and prints address and peer id", async () => {
    const dataDir = join(dir, "node");
    const res = await runCli(["init", "--data-dir", dataDir]);
    expect(res.code, res.stderr).to.equal(0);
    const out = JSON.parse(res.stdout.trim()) as { address: string; peerId: string };
    expect(out.address).to.match(/^0x[0-9a-fA-F]{40}$/);
    expect(out.peerId).to.match(/^12D3Koo/);
    for (const f of ["keys.json", "api-token"])
      expect(statSync(join(dataDir, f)).mode & 0o777).to.equal(0o600);
    const keys = readFileSync(join(dataDir, "keys.json"), "utf8");
    expect(res.stdout).not.to.include(JSON.parse(keys).secp256k1PrivateKey);
    const again = await runCli(["init", "--data-dir", dataDir]);
    expect(again.code).to.equal(2);
    expect(again.stderr).to.match(/CONFLICT/);
    expect(readFileSync(join(dataDir, "keys.json"), "utf8")).to.equal(keys);
  });

  it("exits 2 with a one-line message naming the bad flag", async function () {
    // 21 `qrwp` processes one after the other: 3-8 s each on a loaded 2-core machine.
    this.timeout(240_000);
    const dataDir = join(dir, "node");
    // A valid `node start` command line; each case breaks one flag of it.
    const start = [
      "node",
      "start",
      "--data-dir",
      dataDir,
      "--rpc",
      "http://127.0.0.1:1",
      "--deployment",
      "x.json",
    ];
    // A watchtower command line that only fails on the flag each case breaks.
    const towerDir = join(dir, "tower");
    const tower = [
      "watchtower",
      "start",
      "--data-dir",
      towerDir,
      "--rpc",
      "http://127.0.0.1:1",
      "--deployment",
      "x.json",
    ];
    const cases: [string[], RegExp][] = [
      [["node", "start", "--data-dir", dataDir, "--rpc", "not-a-url", "--deployment", "x.json"], /--rpc/],
      [[...start, "--api", "nope"], /--api/],
      [[...start, "--listen", "/bad"], /--listen/],
      [["node", "start", "--data-dir", dataDir, "--deployment", "x.json"], /--rpc/],
      [[...start.slice(0, 6), "--deployment", join(dir, "missing.json")], /deployment/],
      [["init"], /--data-dir/],
      [[...start, "--fee-ppm", "1.5"], /--fee-ppm/],
      [["pay", "--target", "0x12", "--token", ADDR, "--amount", "1", "--api-token", "t"], /--target/],
      [["pay", "--target", ADDR, "--token", ADDR, "--amount", "-5", "--api-token", "t"], /--amount/],
      [["invoice", "show", "0xzz", "--api-token", "t"], /paymentHash/],
      [["route", "--target", ADDR, "--token", ADDR, "--amount", "1"], /--data-dir or --api-token/],
      [[...start, "--watchtower", "/ip4/127.0.0.1/tcp/9100"], /--watchtower/],
      [[...tower, "--rpc", "not-a-url"], /--rpc/],
      [[...tower, "--contest-start-pct", "95"], /--contest-start-pct/],
      [[...tower, "--confirmations", "-1"], /--confirmations/],
      [[...tower, "--contest-start-pct", "60", "--contest-spread-pct", "40"], /contest-spread-pct/],
      [["watchtower", "start", "--data-dir", towerDir, "--deployment", "x.json"], /--rpc/],
      [[...tower.slice(0, 6), "--deployment", join(dir, "missing.json")], /deployment/],
      [["fetch", "not-a-url", "--max-amount", "1", "--api-token", "t"], /url/],
      [["fetch", "http://127.0.0.1:1/x", "--api-token", "t"], /--max-amount/],
      [["fetch", "http://127.0.0.1:1/x", "--max-amount", "-3", "--api-token", "t"], /--max-amount/],
    ];
    for (const [args, pattern] of cases) {
      const res = await runCli(args, { QRWP_DATA_DIR: "", QRWP_RPC_URL: "" });
      expect(res.code, `${args.join(" ")}: ${res.stderr}`).to.equal(2);
      expect(res.stderr.trim().split("\n")).to.have.length(1);
      expect(res.stderr).to.match(pattern);
    }
    expect(existsSync(join(dir, "missing.json"))).to.equal(false);
    // A refused watchtower command created nothing.
    expect(existsSync(towerDir)).to.equal(false);
  });

  it("client commands fail with a coded one-line error when the node API is unreachable", async () => {
    const res = await runCli(
      [
        "pay",
        "--target",
        ADDR,
        "--token",
        ADDR,
        "--amount",
        "1",
        "--api-url",
        "http://127.0.0.1:1",
        "--api-token",
        "t",
      ],
      { QRWP_DATA_DIR: "" },
    );
    expect(res.code).to.equal(1);
    expect(res.stderr.trim()).to.match(/^qrwp: PEER_OFFLINE: cannot reach the node API/);
  });

  it("prints help", async () => {
    const res = await runCli(["node", "start", "--help"]);
    expect(res.code).to.equal(0);
    expect(res.stdout).to.include("--rpc <url>");
    expect(res.stdout).to.include("QRWP_RPC_URL");
    expect(res.stdout).to.include("--watchtower <multiaddr>");
    const tower = await runCli(["watchtower", "start", "--help"]);
    expect(tower.code).to.equal(0);
    for (const flag of [
      "--rpc <url>",
      "--confirmations <blocks>",
      "--contest-start-pct <pct>",
      "QRWP_TOWER_RPC_URLS",
    ])
      expect(tower.stdout).to.include(flag);
  });
});

describe("e2e: qrwp channel and payment commands against two nodes", function () {
  this.timeout(300_000);
  const unit = parseUnits("1", 18);
  let devnet: Devnet;
  let alice: NodeProcess;
  let bob: NodeProcess;
  let token: string;
  let channelId: string;

  /** `qrwp <args>` against `node`'s API (its data directory gives the token); exit 0 expected. */
  async function qrwp(node: NodeProcess, args: string[]): Promise<string> {
    const res = await runCli([...args, "--api-url", node.apiUrl, "--data-dir", node.dataDir]);
    expect(res.code, `qrwp ${args.join(" ")}: ${res.stderr}`).to.equal(0);
    return res.stdout;
  }
  /** The same with `--json`, parsed. */
  async function qrwpJson<T>(node: NodeProcess, args: string[]): Promise<T> {
    return JSON.parse(await qrwp(node, [...args, "--json"])) as T;
  }
  /** The cells of each line of a table (header first): columns are 2+ spaces apart. */
  const cells = (out: string) =>
    out
      .trim()
      .split("\n")
      .map((l) => l.trim().split(/\s{2,}/));

  before(async () => {
    devnet = await Devnet.start(mkdtempSync(join(tmpdir(), "qrwp-cli-nodes-")));
    token = devnet.token;
    await devnet.initNode("alice", 1000n * unit);
    await devnet.initNode("bob", 1000n * unit);
    [alice, bob] = await Promise.all([devnet.startNode("alice"), devnet.startNode("bob")]);
  });

  after(async () => {
    await devnet?.stop();
  });

  it("info, and the empty states before any channel", async () => {
    const [info, json, channels, payments] = await Promise.all([
      qrwp(alice, ["info"]),
      qrwpJson<{ address: string; hub: string; channels: number }>(alice, ["info"]),
      qrwp(alice, ["channel", "list"]),
      qrwp(alice, ["payment", "list"]),
    ]);
    expect(info).to.match(new RegExp(`^address: +${alice.address}$`, "m"));
    expect(info).to.match(new RegExp(`^peer id: +${alice.peerId}$`, "m"));
    expect(info).to.match(/^channels: +0$/m);
    expect(json).to.include({ address: alice.address, hub: devnet.deployment.hub, channels: 0 });
    expect(channels.trim()).to.equal("no channels (open one with `qrwp channel open`)");
    expect(payments.trim()).to.equal("no payments");
  });

  it("channel open, deposit, list and show", async () => {
    const opened = await qrwpJson<{ channelId: string; state: string; ourDeposit: string }>(alice, [
      "channel",
      "open",
      "--partner",
      bob.address,
      "--partner-multiaddr",
      bob.multiaddr,
      "--token",
      token,
      "--deposit",
      (100n * unit).toString(),
      "--settle-timeout",
      "600",
    ]);
    expect(opened).to.include({ state: "opened", ourDeposit: (100n * unit).toString() });
    channelId = opened.channelId;
    const deposited = await qrwp(bob, [
      "channel",
      "deposit",
      channelId,
      "--total-deposit",
      (5n * unit).toString(),
    ]);
    expect(deposited).to.match(new RegExp(`^our deposit: +${5n * unit}$`, "m"));
    expect(deposited).to.match(new RegExp(`^partner: +${alice.address}$`, "m"));

    // bob's tables (the node that deposited last sees both deposits; a node learns its partner's deposit
    // only when a payment needs it) and alice's channel in full.
    const [list, shown, shownJson] = await Promise.all([
      qrwp(bob, ["channel", "list"]),
      qrwp(alice, ["channel", "show", channelId]),
      qrwpJson<Record<string, unknown>>(alice, ["channel", "show", channelId]),
    ]);
    const table = cells(list);
    expect(table[0]).to.deep.equal([
      "CHANNEL ID",
      "PARTNER",
      "TOKEN",
      "STATE",
      "OUR BALANCE",
      "PARTNER BALANCE",
      "LOCKS OURS/PARTNER",
      "SENT",
      "RECEIVED",
    ]);
    expect(table.slice(1)).to.deep.equal([
      [
        channelId,
        shortHex(alice.address),
        shortHex(token),
        "opened",
        (5n * unit).toString(),
        (100n * unit).toString(),
        "0/0",
        "0",
        "0",
      ],
    ]);
    expect(shown).to.match(new RegExp(`^channel id: +${channelId}$`, "m"));
    expect(shown).to.match(/^settle timeout: +600 s$/m);
    expect(shown).to.match(new RegExp(`^our deposit: +${100n * unit}$`, "m"));
    expect(shown).to.match(new RegExp(`^partner: +${bob.address}$`, "m"));
    expect(shownJson).to.deep.equal(await alice.api.call("GET", `/v1/channels/${channelId}`));
  });

  it("payment list pages newest first; payment show prints one payment", async () => {
    for (const [i, amount] of [1n, 2n, 3n].entries()) {
      await alice.api.call("POST", "/v1/payments", {
        target: bob.address,
        token,
        amount: amount.toString(),
        paymentId: `cli-${i + 1}`,
      });
    }
    const [list, firstPage, received, shown, shownJson] = await Promise.all([
      qrwp(alice, ["payment", "list"]),
      qrwp(alice, ["payment", "list", "--limit", "2"]),
      qrwpJson<{ payments: { paymentId: string; direction: string }[] }>(bob, [
        "payment",
        "list",
        "--direction",
        "incoming",
        "--status",
        "completed",
      ]),
      qrwp(alice, ["payment", "show", "cli-2"]),
      qrwpJson<Record<string, unknown>>(alice, ["payment", "show", "cli-2"]),
    ]);
    const table = cells(list);
    expect(table[0]).to.deep.equal([
      "CREATED",
      "PAYMENT ID",
      "KIND",
      "DIRECTION",
      "STATUS",
      "AMOUNT",
      "FEE",
      "PEER",
    ]);
    expect(table.slice(1).map((r) => r.slice(1))).to.deep.equal(
      ["cli-3", "cli-2", "cli-1"].map((id, i) => [
        id,
        "direct",
        "outgoing",
        "completed",
        String(3 - i),
        "-",
        shortHex(bob.address),
      ]),
    );
    for (const row of table.slice(1)) expect(row[0]).to.match(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    // Two per page: the first page says how to ask for the next one.
    const [rows, more] = firstPage.trim().split("\nmore: ");
    expect(
      cells(rows as string)
        .slice(1)
        .map((r) => r[1]),
    ).to.deep.equal(["cli-3", "cli-2"]);
    const next = /^qrwp payment list --limit 2 --before (\S+)$/.exec(more ?? "");
    expect(next, firstPage).to.not.equal(null);
    const second = await qrwpJson<{ payments: { paymentId: string }[]; nextCursor: string | null }>(alice, [
      "payment",
      "list",
      "--limit",
      "2",
      "--before",
      next?.[1] as string,
    ]);
    expect(second.payments.map((p) => p.paymentId)).to.deep.equal(["cli-1"]);
    expect(second.nextCursor).to.equal(null);

    expect(received.payments.map((p) => [p.paymentId, p.direction])).to.deep.equal([
      ["cli-3", "incoming"],
      ["cli-2", "incoming"],
      ["cli-1", "incoming"],
    ]);
    expect(shown).to.match(/^payment id: +cli-2$/m);
    expect(shown).to.match(/^amount: +2$/m);
    expect(shown).to.match(new RegExp(`^partner: +${bob.address}$`, "m"));
    expect(shown).to.match(new RegExp(`^channel id: +${channelId}$`, "m"));
    expect(shownJson).to.deep.equal(await alice.api.call("GET", "/v1/payments/cli-2"));
  });

  it("bad arguments exit 2 naming them (the CLI's and the node's); unknown ids exit 1", async () => {
    const api = ["--api-url", alice.apiUrl, "--data-dir", alice.dataDir];
    // Refused by the CLI before any request (test/unit/cli-format.test.ts has every flag), and by the node:
    // a total deposit below the current one.
    const [badLimit, lowDeposit, noChannel, noPayment] = await Promise.all([
      runCli(["payment", "list", "--limit", "0", ...api]),
      runCli(["channel", "deposit", channelId, "--total-deposit", "1", ...api]),
      runCli(["channel", "show", "999", ...api]),
      runCli(["payment", "show", "no-such-payment", ...api]),
    ]);
    for (const [res, field] of [
      [badLimit, "--limit"],
      [lowDeposit, "totalDeposit"],
    ] as const) {
      expect(res.code, res.stderr).to.equal(2);
      expect(res.stderr.trim().split("\n")).to.have.length(1);
      expect(res.stderr).to.include(field);
    }
    expect(lowDeposit.stderr).to.match(/^qrwp: INVALID_ARGUMENT: /);
    expect(noChannel.code).to.equal(1);
    expect(noChannel.stderr.trim()).to.match(/^qrwp: CHANNEL_NOT_FOUND: /);
    expect(noPayment.code).to.equal(1);
    expect(noPayment.stderr.trim()).to.match(/^qrwp: PAYMENT_NOT_FOUND: /);
  });

  it("channel close (cooperative by default): both nodes list it settled", async () => {
    const closed = await qrwp(alice, ["channel", "close", channelId]);
    expect(closed).to.match(/^state: +settled$/m);
    const row = cells(await qrwp(bob, ["channel", "list"]))[1];
    expect(row?.slice(0, 4)).to.deep.equal([channelId, shortHex(alice.address), shortHex(token), "settled"]);
  });
});
