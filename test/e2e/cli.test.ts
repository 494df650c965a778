/**
 * The `qrwp` CLI as a user runs it: `init` writes private files and prints the identity; bad flags exit 2
 * with a one-line message naming the flag; nothing is created on a refused command.
 */
import { existsSync, mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { runCli } from "../../devnet/harness.js";

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

  it("exits 2 with a one-line message naming the bad flag", async () => {
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
