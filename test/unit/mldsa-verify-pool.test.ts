/**
 * host/mldsa-verify-pool.ts: ML-DSA-65 verification on worker threads gives exactly `mldsaVerify`'s answers
 * (real keys and signatures, FIPS 204 contexts): valid, tampered, another key, another context, malformed
 * input; many in flight over the threads, and past the in-flight bound; and after `stop()` (or with size 0) on the calling thread.
 */
import { expect } from "chai";
import {
  MLDSA_CONTEXT_APPOINTMENT,
  MLDSA_CONTEXT_BALANCE_PROOF,
  generateNodeKeys,
  mldsaSign,
  mldsaVerify,
  type NodeKeys,
} from "../../protocol/index.js";
import { MldsaVerifyPool, defaultVerifyThreads } from "../../host/mldsa-verify-pool.js";

describe("host/mldsa-verify-pool", function () {
  this.timeout(60_000);
  let alice: NodeKeys;
  let bob: NodeKeys;
  const message = new TextEncoder().encode("a balance proof digest, 32 bytes");
  let signature: Uint8Array;
  let tampered: Uint8Array;

  before(() => {
    alice = generateNodeKeys();
    bob = generateNodeKeys();
    signature = mldsaSign(message, alice.mldsaSecretKey, MLDSA_CONTEXT_BALANCE_PROOF);
    tampered = Uint8Array.from(signature);
    tampered[42]! ^= 0x80;
  });

  /** Every case with the answer `mldsaVerify` gives on this thread. */
  function cases(): Array<{ name: string; args: Parameters<typeof mldsaVerify>; expected: boolean }> {
    const list: Array<{ name: string; args: Parameters<typeof mldsaVerify> }> = [
      { name: "valid", args: [signature, message, alice.mldsaPublicKey, MLDSA_CONTEXT_BALANCE_PROOF] },
      { name: "tampered", args: [tampered, message, alice.mldsaPublicKey, MLDSA_CONTEXT_BALANCE_PROOF] },
      { name: "another key", args: [signature, message, bob.mldsaPublicKey, MLDSA_CONTEXT_BALANCE_PROOF] },
      {
        name: "another context",
        args: [signature, message, alice.mldsaPublicKey, MLDSA_CONTEXT_APPOINTMENT],
      },
      { name: "no context", args: [signature, message, alice.mldsaPublicKey] },
      {
        name: "another message",
        args: [signature, message.subarray(1), alice.mldsaPublicKey, MLDSA_CONTEXT_BALANCE_PROOF],
      },
      {
        name: "short signature",
        args: [signature.subarray(1), message, alice.mldsaPublicKey, MLDSA_CONTEXT_BALANCE_PROOF],
      },
      {
        name: "short key",
        args: [signature, message, alice.mldsaPublicKey.subarray(1), MLDSA_CONTEXT_BALANCE_PROOF],
      },
      { name: "context of 256 bytes", args: [signature, message, alice.mldsaPublicKey, new Uint8Array(256)] },
    ];
    return list.map((c) => ({ ...c, expected: mldsaVerify(...c.args) }));
  }

  it("answers exactly what mldsaVerify answers, on its threads", async () => {
    const pool = new MldsaVerifyPool({ size: 2 });
    try {
      const all = cases();
      expect(all.filter((c) => c.expected).map((c) => c.name)).to.deep.equal(["valid"]);
      const answers = await Promise.all(all.map((c) => pool.verify(...c.args)));
      expect(answers).to.deep.equal(all.map((c) => c.expected));
      expect(pool.running).to.be.greaterThan(0);
    } finally {
      await pool.stop();
    }
  });

  it("many verifications in flight over every thread each get their own answer", async () => {
    const pool = new MldsaVerifyPool({ size: 2 });
    try {
      const jobs = Array.from({ length: 24 }, (_, i) => (i % 3 === 0 ? tampered : signature));
      const answers = await Promise.all(
        jobs.map((s) => pool.verify(s, message, alice.mldsaPublicKey, MLDSA_CONTEXT_BALANCE_PROOF)),
      );
      expect(answers).to.deep.equal(jobs.map((s) => s === signature));
      expect(pool.running).to.equal(2);
    } finally {
      await pool.stop();
    }
  });

  it("past maxInFlight the calling thread verifies; every answer is still right", async () => {
    const pool = new MldsaVerifyPool({ size: 1, maxInFlight: 2 });
    try {
      const jobs = [signature, tampered, signature, tampered, signature];
      const answers = jobs.map((s) =>
        pool.verify(s, message, alice.mldsaPublicKey, MLDSA_CONTEXT_BALANCE_PROOF),
      );
      expect(pool.inFlight).to.equal(2);
      expect(await Promise.all(answers)).to.deep.equal(jobs.map((s) => s === signature));
      expect(pool.inFlight).to.equal(0);
    } finally {
      await pool.stop();
    }
  });

  it("verifies on the calling thread after stop() and with size 0", async () => {
    const stopped = new MldsaVerifyPool({ size: 1 });
    await stopped.verify(signature, message, alice.mldsaPublicKey, MLDSA_CONTEXT_BALANCE_PROOF);
    await stopped.stop();
    expect(stopped.running).to.equal(0);
    const inline = new MldsaVerifyPool({ size: 0 });
    for (const pool of [stopped, inline]) {
      const all = cases();
      expect(await Promise.all(all.map((c) => pool.verify(...c.args)))).to.deep.equal(
        all.map((c) => c.expected),
      );
      expect(pool.running).to.equal(0);
    }
  });

  it("defaults to the available cores, at least one; a negative or fractional size is refused", () => {
    expect(new MldsaVerifyPool().size).to.equal(defaultVerifyThreads());
    expect(defaultVerifyThreads()).to.be.at.least(1);
    expect(() => new MldsaVerifyPool({ size: -1 })).to.throw(RangeError);
    expect(() => new MldsaVerifyPool({ size: 1.5 })).to.throw(RangeError);
    expect(() => new MldsaVerifyPool({ maxInFlight: 0 })).to.throw(RangeError);
  });
});
