/**
 * e2e: the README's main job. `npm run devnet` (here: `tsx devnet/main.ts`) must exit 0 and print the
 * balance table with every row matching, and leave no process behind.
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
    const rows = stdout.split("\n").filter((l) => /'(alice|bob)'/.test(l));
    expect(rows).to.have.length(2);
    for (const row of rows) expect(row).to.include("'yes'");
    expect(stdout).to.include("(100)");
    expect(stdout).to.include("(50)");
    expect(stderr).to.include("alice closes the channel cooperatively");
  });
});
