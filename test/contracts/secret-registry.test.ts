import { expect } from "chai";
import { ethers } from "ethers";
import { time } from "@nomicfoundation/hardhat-network-helpers";
import type { SecretRegistry } from "../../typechain-types/index.js";
import { deployFixture, eventsOf, newSecret, registryInterface } from "./helpers.js";

describe("SecretRegistry", function () {
  let registry: SecretRegistry;

  beforeEach(async function () {
    const f = await deployFixture();
    // Anyone may register: carol is neither deployer nor channel participant.
    registry = f.registry.connect(f.carol);
  });

  const revealed = async (tx: Promise<ethers.ContractTransactionResponse>) =>
    eventsOf(await (await tx).wait(), registryInterface, "SecretRevealed").map((e) => [
      e.args[0] as string,
      e.args[1] as string,
    ]);

  it("registers sha256(secret) at the block timestamp, once; a duplicate keeps the first time", async function () {
    const secret = newSecret();
    const secretHash = ethers.sha256(secret);
    expect(await registry.getSecretRevealTimestamp(secretHash)).to.equal(0n);
    expect(await registry.registerSecret.staticCall(secret)).to.equal(true);

    const at = BigInt(await time.latest()) + 100n;
    await time.setNextBlockTimestamp(at);
    expect(await revealed(registry.registerSecret(secret))).to.deep.equal([[secretHash, secret]]);
    expect(await registry.getSecretRevealTimestamp(secretHash)).to.equal(at);
    // Keyed by sha256, not keccak256.
    expect(await registry.getSecretRevealTimestamp(ethers.keccak256(secret))).to.equal(0n);

    expect(await registry.registerSecret.staticCall(secret)).to.equal(false);
    await time.setNextBlockTimestamp(at + 50n);
    expect(await revealed(registry.registerSecret(secret))).to.deep.equal([]);
    expect(await registry.getSecretRevealTimestamp(secretHash)).to.equal(at);
  });

  it("refuses the zero secret", async function () {
    expect(await registry.registerSecret.staticCall(ethers.ZeroHash)).to.equal(false);
    expect(await revealed(registry.registerSecret(ethers.ZeroHash))).to.deep.equal([]);
    expect(await registry.getSecretRevealTimestamp(ethers.sha256(ethers.ZeroHash))).to.equal(0n);
  });

  it("batch: registers every new secret, returns true only if all were new", async function () {
    const [s1, s2, s3, s4] = [newSecret(), newSecret(), newSecret(), newSecret()];
    expect(await registry.registerSecretBatch.staticCall([s1, s2])).to.equal(true);
    const at = BigInt(await time.latest()) + 10n;
    await time.setNextBlockTimestamp(at);
    expect(await revealed(registry.registerSecretBatch([s1, s2]))).to.deep.equal([
      [ethers.sha256(s1), s1],
      [ethers.sha256(s2), s2],
    ]);
    expect(await registry.getSecretRevealTimestamp(ethers.sha256(s1))).to.equal(at);
    expect(await registry.getSecretRevealTimestamp(ethers.sha256(s2))).to.equal(at);

    // A duplicate, the zero secret and a secret given twice are skipped; the new ones still register.
    const mixed = [s1, s3, ethers.ZeroHash, s4, s4];
    expect(await registry.registerSecretBatch.staticCall(mixed)).to.equal(false);
    await time.setNextBlockTimestamp(at + 10n);
    expect(await revealed(registry.registerSecretBatch(mixed))).to.deep.equal([
      [ethers.sha256(s3), s3],
      [ethers.sha256(s4), s4],
    ]);
    expect(await registry.getSecretRevealTimestamp(ethers.sha256(s1))).to.equal(at);
    expect(await registry.getSecretRevealTimestamp(ethers.sha256(s3))).to.equal(at + 10n);
    expect(await registry.getSecretRevealTimestamp(ethers.sha256(s4))).to.equal(at + 10n);

    expect(await registry.registerSecretBatch.staticCall([s1])).to.equal(false);
    expect(await registry.registerSecretBatch.staticCall([])).to.equal(true);
    expect(await revealed(registry.registerSecretBatch([]))).to.deep.equal([]);
  });
});
