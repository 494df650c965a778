/**
 * e2e: the README's main job. `npm run devnet` (here: `tsx devnet/main.ts`) must exit 0, print the breach
 * contested by the watchtower, the x402 merchant's receipts and the balance table with every row matching,
 * and leave no process behind.
 */
import { spawn } from "node:child_process";
import { expect } from "chai";
import { ROOT } from "../../devnet/harness.js";

describe("e2e: npm run devnet", function () {
  this.timeout(300_000);

  it("runs the scenario, prints a matching balance table and exits 0", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "devnet/main.ts"], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
    expect(code, `devnet failed:\n${stderr.slice(-2000)}`).to.equal(0);
    expect(stdout).to.include("RESULT: on-chain balances match the off-chain totals");
    // The balance table: one row per node, starting from 1000 QTT each.
    const rows = stdout
      .split("\n")
      .filter((l) => /│ \d+ +│ '(alice|bob|carol|dave|erin)' +│ '1000\.0' /.test(l));
    expect(rows).to.have.length(5);
    for (const row of rows) expect(row).to.include("'yes'");
    // Both paths alice -> dave were used: the 3-hop one, and erin's after carol went offline.
    expect(stdout).to.include("'alice -> bob -> carol -> dave'");
    expect(stdout).to.include("'alice -> erin -> dave'");
    expect(stdout).to.include("PEER_OFFLINE at bob");
    // The breach: alice closes while bob is offline; the watchtower contests; bob is paid to the wei.
    expect(stderr).to.include("bob goes offline; alice closes alice <-> bob unilaterally");
    expect(stdout).to.include("breach of channel");
    const breach = stdout.split("\n").find((l) => /│ 0 +│ 'alice' +│ '0' +│/.test(l));
    expect(breach, "breach row").to.be.a("string");
    expect(breach).to.include("'yes'");
    expect(stdout).to.match(/tower: \d+ appointments accepted from 5 nodes, 1 contest\(s\) sent/);
    expect(stderr).to.include("closing the channels without bob cooperatively");
    // x402: alice bought GET /weather 3 times from carol's merchant app, routed through bob (one mediator);
    // the merchant's receipts table lists each payment once at the price.
    const receipts = stdout
      .split("\n")
      .filter((l) =>
        /│ \d+ +│ '0x[0-9a-f]{6}…[0-9a-f]{4}' +│ 'alice' +│ 'alice -> bob -> carol' +│ 'GET \/weather' +│ '0\.01' +│/.test(
          l,
        ),
      );
    expect(receipts, "x402 receipt rows").to.have.length(3);
    for (const row of receipts) expect(row).to.include("'routed'");
    // dave bought 3 more by direct streaming on his channel with carol: no mediator, no fee.
    const direct = stdout
      .split("\n")
      .filter((l) =>
        /│ 'dave' +│ 'dave -> carol' +│ 'GET \/weather' +│ '0\.01' +│ '0\.0' +│ 'direct' +│/.test(l),
      );
    expect(direct, "x402 direct receipt rows").to.have.length(3);
    expect(stdout).to.include("x402: 6 receipts (expected 6), 0.06 QTT (expected 0.06): ok");
  });
});
