import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ethers } from "ethers";
import { dialableMultiaddrs } from "../../host/libp2p.js";
import { deployFixture } from "./helpers.js";
import { startEngine, stopEngines } from "./engine-helpers.js";

describe("scratch", function () {
  this.timeout(600_000);
  it("measures", async () => {
    const f = await deployFixture();
    const dir = mkdtempSync(join(tmpdir(), "qrwp-scratch-"));
    const alice = await startEngine(f, dir, "alice");
    const bob = await startEngine(f, dir, "bob");
    const { channelId } = await alice.service.openChannel({
      partner: bob.keys.address,
      partnerMultiaddr: dialableMultiaddrs(bob.libp2p)[0] as string,
      token: f.deployment.token as string,
      depositAmount: ethers.parseEther("100"),
      settleTimeoutSeconds: 600,
    });
    const pay = () => alice.service.pay({ target: bob.keys.address, token: f.deployment.token as string, amount: 1n });
    for (const [c, n] of [[1, 300], [64, 5000]] as const) {
      const t0 = performance.now();
      const cpu0 = process.cpuUsage();
      let next = 0;
      const lat: number[] = [];
      await Promise.all(Array.from({ length: c }, async () => {
        while (next < n) { next++; const s = performance.now(); await pay(); lat.push(performance.now() - s); }
      }));
      const s = (performance.now() - t0) / 1000;
      console.log('nonces used', alice.service.getChannel(channelId).ourNonce);
      const cpu = process.cpuUsage(cpu0);
      lat.sort((a, b) => a - b);
      console.log(`c=${c} n=${n} ${(n / s).toFixed(0)}/s p50 ${lat[Math.floor(n / 2)]!.toFixed(2)} p99 ${lat[Math.floor(n * 0.99)]!.toFixed(2)} cpu ${((cpu.user + cpu.system) / 1000 / n).toFixed(2)} ms/payment`);
    }
    console.log(channelId);
    await stopEngines([alice, bob]);
  });
});
