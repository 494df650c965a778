import { bytesToHex } from "@noble/hashes/utils.js";
import { Decoder, Encoder } from "cbor-x";
import { expect } from "chai";
import fc from "fast-check";
import type { HandshakeOptions, NodeKeys, QrwpError, Session } from "../../protocol/index.js";
import {
  HandshakeInitiator,
  HandshakeResponder,
  MAX_FRAME_BYTES,
  MLDSA_CONTEXT_HANDSHAKE,
  generateNodeKeys,
  isQrwpError,
  mldsaSign,
  signDigest,
} from "../../protocol/index.js";

const A_PEER = "12D3KooWAlice";
const B_PEER = "12D3KooWBob";
const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
const cborDecoder = new Decoder({ useRecords: false, mapsAsObjects: true });
const text = (s: string) => new TextEncoder().encode(s);
const hex = (b: Uint8Array) => bytesToHex(b);

function expectCode(fn: () => unknown, code: string): QrwpError {
  try {
    fn();
  } catch (e) {
    expect(isQrwpError(e), `expected QrwpError ${code}, got ${String(e)}`).to.equal(true);
    expect((e as QrwpError).code, (e as Error).message).to.equal(code);
    return e as QrwpError;
  }
  expect.fail(`expected ${code}`);
}

function handshake(
  a: NodeKeys,
  b: NodeKeys,
  aOpts: Partial<HandshakeOptions> = {},
  bOpts: Partial<HandshakeOptions> = {},
): { initiator: Session; responder: Session } {
  const i = new HandshakeInitiator(a, { localPeerId: A_PEER, remotePeerId: B_PEER, ...aOpts });
  const r = new HandshakeResponder(b, { localPeerId: B_PEER, remotePeerId: A_PEER, ...bOpts });
  const reply = r.respond(i.hello());
  const { finish, session } = i.finish(reply);
  return { initiator: session, responder: r.complete(finish) };
}

describe("protocol/session handshake", () => {
  let alice: NodeKeys;
  let bob: NodeKeys;
  let mallory: NodeKeys;

  before(() => {
    alice = generateNodeKeys();
    bob = generateNodeKeys();
    mallory = generateNodeKeys();
  });

  it("succeeds, authenticates both identities and derives matching keys", () => {
    const { initiator, responder } = handshake(
      alice,
      bob,
      { expectedRemoteAddress: bob.address.toLowerCase(), expectedRemoteMldsaPublicKey: bob.mldsaPublicKey },
      { expectedRemoteAddress: alice.address, expectedRemoteMldsaPublicKey: alice.mldsaPublicKey },
    );
    expect(hex(initiator.transcriptHash)).to.equal(hex(responder.transcriptHash));
    expect(initiator.remote.address).to.equal(bob.address);
    expect(responder.remote.address).to.equal(alice.address);
    expect(hex(initiator.remote.mldsaPublicKey)).to.equal(hex(bob.mldsaPublicKey));
    expect(hex(responder.remote.mldsaPublicKey)).to.equal(hex(alice.mldsaPublicKey));
    // Matching keys: each direction decrypts.
    expect(responder.open(initiator.seal(text("ping")))).to.deep.equal(text("ping"));
    expect(initiator.open(responder.seal(text("pong")))).to.deep.equal(text("pong"));
  });

  it("two handshakes between the same nodes give different transcripts (fresh ephemerals)", () => {
    const one = handshake(alice, bob);
    const two = handshake(alice, bob);
    expect(hex(one.initiator.transcriptHash)).not.to.equal(hex(two.initiator.transcriptHash));
    expectCode(() => two.responder.open(one.initiator.seal(text("x"))), "FRAME_REJECTED");
  });

  it("fails when the responder's ML-DSA key is not the expected one", () => {
    const i = new HandshakeInitiator(alice, {
      localPeerId: A_PEER,
      remotePeerId: B_PEER,
      expectedRemoteMldsaPublicKey: mallory.mldsaPublicKey,
    });
    const r = new HandshakeResponder(bob, { localPeerId: B_PEER, remotePeerId: A_PEER });
    const e = expectCode(() => i.finish(r.respond(i.hello())), "HANDSHAKE_FAILED");
    expect(e.details.field).to.equal("mldsaPublicKey");
    // The handshake is dead afterwards.
    expectCode(() => i.finish(new Uint8Array(10)), "HANDSHAKE_FAILED");
  });

  it("fails when the responder is not the expected address", () => {
    const i = new HandshakeInitiator(alice, {
      localPeerId: A_PEER,
      remotePeerId: B_PEER,
      expectedRemoteAddress: mallory.address,
    });
    const r = new HandshakeResponder(bob, { localPeerId: B_PEER, remotePeerId: A_PEER });
    expectCode(() => i.finish(r.respond(i.hello())), "HANDSHAKE_FAILED");
  });

  it("responder refuses an initiator whose ML-DSA key or address is not expected", () => {
    const i = new HandshakeInitiator(alice, { localPeerId: A_PEER, remotePeerId: B_PEER });
    const hello = i.hello();
    const r1 = new HandshakeResponder(bob, {
      localPeerId: B_PEER,
      remotePeerId: A_PEER,
      expectedRemoteMldsaPublicKey: mallory.mldsaPublicKey,
    });
    expectCode(() => r1.respond(hello), "HANDSHAKE_FAILED");
    const r2 = new HandshakeResponder(bob, {
      localPeerId: B_PEER,
      remotePeerId: A_PEER,
      expectedRemoteAddress: mallory.address,
    });
    expectCode(() => r2.respond(hello), "HANDSHAKE_FAILED");
  });

  it("fails on mismatched peer ids (channel binding)", () => {
    const i = new HandshakeInitiator(alice, { localPeerId: A_PEER, remotePeerId: B_PEER });
    const hello = i.hello();
    const wrongRemote = new HandshakeResponder(bob, { localPeerId: B_PEER, remotePeerId: "12D3KooWMallory" });
    expectCode(() => wrongRemote.respond(hello), "HANDSHAKE_FAILED");
    const wrongLocal = new HandshakeResponder(bob, { localPeerId: "12D3KooWOther", remotePeerId: A_PEER });
    expectCode(() => wrongLocal.respond(hello), "HANDSHAKE_FAILED");
  });

  it("fails on a forged responder transcript signature", () => {
    const i = new HandshakeInitiator(alice, { localPeerId: A_PEER, remotePeerId: B_PEER });
    const r = new HandshakeResponder(bob, { localPeerId: B_PEER, remotePeerId: A_PEER });
    const hello = i.hello();
    const reply = cborDecoder.decode(r.respond(hello)) as Record<string, Uint8Array>;
    const forgeries = [
      // ML-DSA signature by the right key over another message
      {
        ...reply,
        mldsaSignature: mldsaSign(new Uint8Array(32), bob.mldsaSecretKey, MLDSA_CONTEXT_HANDSHAKE),
      },
      // secp256k1 signature by a different key
      {
        ...reply,
        ecdsaSignature: Buffer.from(
          signDigest(new Uint8Array(32).fill(9), mallory.secp256k1PrivateKey).slice(2),
          "hex",
        ),
      },
    ];
    expectCode(() => i.finish(cbor.encode(forgeries[0]) as Uint8Array), "HANDSHAKE_FAILED");
    const i2 = new HandshakeInitiator(alice, { localPeerId: A_PEER, remotePeerId: B_PEER });
    const r2 = new HandshakeResponder(bob, { localPeerId: B_PEER, remotePeerId: A_PEER });
    const reply2 = cborDecoder.decode(r2.respond(i2.hello())) as Record<string, Uint8Array>;
    const e = expectCode(
      () =>
        i2.finish(
          cbor.encode({
            ...reply2,
            ecdsaSignature: (forgeries[1] as { ecdsaSignature: Uint8Array }).ecdsaSignature,
          }) as Uint8Array,
        ),
      "HANDSHAKE_FAILED",
    );
    expect(e.details.field).to.equal("ecdsaSignature");
  });

  it("fails when a node claims an address whose secp256k1 key it does not hold", () => {
    // Mallory signs with her own keys but claims Bob's address and presents her ML-DSA key.
    const impostor: NodeKeys = { ...mallory, address: bob.address };
    const i = new HandshakeInitiator(alice, { localPeerId: A_PEER, remotePeerId: B_PEER });
    const r = new HandshakeResponder(impostor, { localPeerId: B_PEER, remotePeerId: A_PEER });
    const e = expectCode(() => i.finish(r.respond(i.hello())), "HANDSHAKE_FAILED");
    expect(e.details.field).to.equal("ecdsaSignature");
    // Same for an initiator impostor, caught by the responder on finish.
    const i2 = new HandshakeInitiator(
      { ...mallory, address: alice.address },
      { localPeerId: A_PEER, remotePeerId: B_PEER },
    );
    const r2 = new HandshakeResponder(bob, { localPeerId: B_PEER, remotePeerId: A_PEER });
    const { finish } = i2.finish(r2.respond(i2.hello()));
    expectCode(() => r2.complete(finish), "HANDSHAKE_FAILED");
  });

  it("fails on a forged initiator finish", () => {
    const i = new HandshakeInitiator(alice, { localPeerId: A_PEER, remotePeerId: B_PEER });
    const r = new HandshakeResponder(bob, { localPeerId: B_PEER, remotePeerId: A_PEER });
    const { finish } = i.finish(r.respond(i.hello()));
    const decoded = cborDecoder.decode(finish) as Record<string, Uint8Array>;
    const sig = Uint8Array.from(decoded.mldsaSignature!);
    sig[7]! ^= 0x80;
    expectCode(
      () => r.complete(cbor.encode({ ...decoded, mldsaSignature: sig }) as Uint8Array),
      "HANDSHAKE_FAILED",
    );
    expectCode(() => r.complete(finish), "HANDSHAKE_FAILED"); // dead after a failure
  });

  it("fails when any byte of the reply is modified (transcript integrity)", () => {
    fc.assert(
      fc.property(fc.nat(), fc.integer({ min: 1, max: 255 }), (pos, xor) => {
        const i = new HandshakeInitiator(alice, { localPeerId: A_PEER, remotePeerId: B_PEER });
        const r = new HandshakeResponder(bob, { localPeerId: B_PEER, remotePeerId: A_PEER });
        const reply = r.respond(i.hello());
        reply[pos % reply.length]! ^= xor;
        expectCode(() => i.finish(reply), "HANDSHAKE_FAILED");
      }),
      { numRuns: 15 },
    );
  });

  it("rejects out-of-order calls", () => {
    const i = new HandshakeInitiator(alice, { localPeerId: A_PEER, remotePeerId: B_PEER });
    expectCode(() => i.finish(new Uint8Array(10)), "HANDSHAKE_FAILED");
    i.hello();
    expectCode(() => i.hello(), "HANDSHAKE_FAILED");
    const r = new HandshakeResponder(bob, { localPeerId: B_PEER, remotePeerId: A_PEER });
    expectCode(() => r.complete(new Uint8Array(10)), "HANDSHAKE_FAILED");
  });

  it("validates options with INVALID_ARGUMENT", () => {
    expectCode(
      () => new HandshakeInitiator(alice, { localPeerId: "", remotePeerId: B_PEER }),
      "INVALID_ARGUMENT",
    );
    expectCode(
      () =>
        new HandshakeResponder(bob, {
          localPeerId: B_PEER,
          remotePeerId: A_PEER,
          expectedRemoteMldsaPublicKey: new Uint8Array(5),
        }),
      "INVALID_ARGUMENT",
    );
  });

  describe("fuzz: garbage never crashes, always HANDSHAKE_FAILED", () => {
    const garbage = fc.oneof(
      fc.uint8Array({ minLength: 0, maxLength: 8000 }),
      // well-formed CBOR of arbitrary shape
      fc.anything().map((v) => {
        try {
          return cbor.encode(v) as Uint8Array;
        } catch {
          return new Uint8Array([0xff]);
        }
      }),
      // right keys, wrong sizes/types
      fc
        .record({
          t: fc.oneof(fc.constant(1), fc.constant(2), fc.constant(3), fc.integer()),
          v: fc.oneof(fc.constant(1), fc.integer()),
          nonce: fc.uint8Array({ maxLength: 40 }),
          kemPublicKey: fc.uint8Array({ minLength: 1216, maxLength: 1216 }),
          address: fc.uint8Array({ minLength: 20, maxLength: 20 }),
          mldsaPublicKey: fc.uint8Array({ minLength: 1950, maxLength: 1953 }),
          initiatorPeerId: fc.string(),
          responderPeerId: fc.string(),
          body: fc.uint8Array({ maxLength: 100 }),
        })
        .map((v) => cbor.encode(v) as Uint8Array),
    );

    it("HandshakeResponder.respond", () => {
      fc.assert(
        fc.property(garbage, (input) => {
          const r = new HandshakeResponder(bob, { localPeerId: B_PEER, remotePeerId: A_PEER });
          expectCode(() => r.respond(input), "HANDSHAKE_FAILED");
        }),
        { numRuns: 300 },
      );
    });

    it("HandshakeInitiator.finish", () => {
      fc.assert(
        fc.property(garbage, (input) => {
          const i = new HandshakeInitiator(alice, { localPeerId: A_PEER, remotePeerId: B_PEER });
          i.hello();
          expectCode(() => i.finish(input), "HANDSHAKE_FAILED");
        }),
        { numRuns: 150 },
      );
    });

    it("HandshakeResponder.complete", () => {
      const i = new HandshakeInitiator(alice, { localPeerId: A_PEER, remotePeerId: B_PEER });
      const hello = i.hello();
      fc.assert(
        fc.property(garbage, (input) => {
          const r = new HandshakeResponder(bob, { localPeerId: B_PEER, remotePeerId: A_PEER });
          r.respond(hello);
          expectCode(() => r.complete(input), "HANDSHAKE_FAILED");
        }),
        { numRuns: 40 },
      );
    });

    it("well-formed hello with a random X-Wing key: a reply or HANDSHAKE_FAILED, never a crash", () => {
      const hello = cborDecoder.decode(
        new HandshakeInitiator(alice, { localPeerId: A_PEER, remotePeerId: B_PEER }).hello(),
      ) as Record<string, unknown>;
      fc.assert(
        fc.property(fc.uint8Array({ minLength: 1216, maxLength: 1216 }), (kemPublicKey) => {
          const r = new HandshakeResponder(bob, { localPeerId: B_PEER, remotePeerId: A_PEER });
          try {
            expect(r.respond(cbor.encode({ ...hello, kemPublicKey }) as Uint8Array)).to.be.instanceOf(
              Uint8Array,
            );
          } catch (e) {
            expect((e as QrwpError).code).to.equal("HANDSHAKE_FAILED");
          }
        }),
        { numRuns: 10 },
      );
    });

    it("non-bytes inputs", () => {
      for (const input of [undefined, null, "hello", 42, {}, [1, 2, 3], new Uint16Array(4)]) {
        const r = new HandshakeResponder(bob, { localPeerId: B_PEER, remotePeerId: A_PEER });
        expectCode(() => r.respond(input as unknown as Uint8Array), "HANDSHAKE_FAILED");
      }
    });
  });
});

describe("protocol/session frames", () => {
  let alice: NodeKeys;
  let bob: NodeKeys;

  before(() => {
    alice = generateNodeKeys();
    bob = generateNodeKeys();
  });

  it("round-trips in both directions, including empty and maximum-size frames", () => {
    const { initiator, responder } = handshake(alice, bob);
    for (const size of [0, 1, 1000, MAX_FRAME_BYTES]) {
      const pt = new Uint8Array(size).map((_, k) => k & 0xff);
      const frame = initiator.seal(pt);
      expect(frame.length).to.equal(size + 24);
      expect(responder.open(frame)).to.deep.equal(pt);
      expect(initiator.open(responder.seal(pt))).to.deep.equal(pt);
    }
    expect(initiator.sentFrames).to.equal(4n);
    expect(responder.receivedFrames).to.equal(4n);
    expectCode(() => initiator.seal(new Uint8Array(MAX_FRAME_BYTES + 1)), "INVALID_ARGUMENT");
  });

  it("property: any sequence of messages round-trips in order", () => {
    const { initiator, responder } = handshake(alice, bob);
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }), (msgs) => {
        for (const m of msgs) expect(responder.open(initiator.seal(m))).to.deep.equal(m);
      }),
      { numRuns: 50 },
    );
  });

  it("rejects tampered frames (header, ciphertext, tag) without losing state", () => {
    const { initiator, responder } = handshake(alice, bob);
    const frame = initiator.seal(text("pay 5 wei"));
    for (const pos of [0, 7, 8, 12, frame.length - 16, frame.length - 1]) {
      const t = Uint8Array.from(frame);
      t[pos]! ^= 1;
      expectCode(() => responder.open(t), "FRAME_REJECTED");
    }
    expect(responder.open(frame)).to.deep.equal(text("pay 5 wei"));
  });

  it("property: any single bit flip is rejected", () => {
    const { initiator, responder } = handshake(alice, bob);
    const frame = initiator.seal(text("a balance proof"));
    fc.assert(
      fc.property(fc.nat({ max: frame.length * 8 - 1 }), (bit) => {
        const t = Uint8Array.from(frame);
        t[bit >> 3]! ^= 1 << (bit & 7);
        expectCode(() => responder.open(t), "FRAME_REJECTED");
      }),
      { numRuns: 200 },
    );
  });

  it("rejects replayed and reordered frames", () => {
    const { initiator, responder } = handshake(alice, bob);
    const f0 = initiator.seal(text("0"));
    const f1 = initiator.seal(text("1"));
    const f2 = initiator.seal(text("2"));
    let e = expectCode(() => responder.open(f1), "FRAME_REJECTED"); // reordered (f0 skipped)
    expect(e.details.reason).to.equal("counter");
    expect(responder.open(f0)).to.deep.equal(text("0"));
    e = expectCode(() => responder.open(f0), "FRAME_REJECTED"); // replay
    expect(e.details.reason).to.equal("counter");
    expect(responder.open(f1)).to.deep.equal(text("1"));
    expectCode(() => responder.open(f1), "FRAME_REJECTED");
    expect(responder.open(f2)).to.deep.equal(text("2"));
  });

  it("rejects a frame whose counter was rewritten to the expected one", () => {
    const { initiator, responder } = handshake(alice, bob);
    initiator.seal(text("lost"));
    const f1 = Uint8Array.from(initiator.seal(text("second")));
    f1[7] = 0; // claim counter 0
    expectCode(() => responder.open(f1), "FRAME_REJECTED");
  });

  it("rejects truncated and junk frames", () => {
    const { initiator, responder } = handshake(alice, bob);
    const frame = initiator.seal(text("truncate me"));
    for (const len of [0, 1, 8, 23, 24, frame.length - 1]) {
      expectCode(() => responder.open(frame.subarray(0, len)), "FRAME_REJECTED");
    }
    expectCode(() => responder.open(Uint8Array.from([...frame, 0])), "FRAME_REJECTED");
    expectCode(() => responder.open("frame" as unknown as Uint8Array), "FRAME_REJECTED");
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (junk) => {
        expectCode(() => responder.open(junk), "FRAME_REJECTED");
      }),
      { numRuns: 200 },
    );
    expect(responder.open(frame)).to.deep.equal(text("truncate me"));
  });

  it("directions do not cross (reflection rejected)", () => {
    const { initiator, responder } = handshake(alice, bob);
    const toBob = initiator.seal(text("for bob"));
    expectCode(() => initiator.open(toBob), "FRAME_REJECTED"); // reflected to its sender
    const toAlice = responder.seal(text("for alice"));
    expectCode(() => responder.open(toAlice), "FRAME_REJECTED");
    expect(responder.open(toBob)).to.deep.equal(text("for bob"));
    expect(initiator.open(toAlice)).to.deep.equal(text("for alice"));
  });

  it("rekeys deterministically at every epoch boundary on both sides", () => {
    const { initiator, responder } = handshake(
      alice,
      bob,
      { rekeyAfterFrames: 3n },
      { rekeyAfterFrames: 3n },
    );
    const frames: Uint8Array[] = [];
    for (let k = 0; k < 10; k++) {
      const f = initiator.seal(text(`m${k}`));
      frames.push(f);
      expect(responder.open(f)).to.deep.equal(text(`m${k}`));
      expect(initiator.open(responder.seal(text(`r${k}`)))).to.deep.equal(text(`r${k}`));
    }
    // A peer that did not rekey at the boundary cannot read epoch-1 frames.
    const noRekey = handshake(alice, bob, { rekeyAfterFrames: 3n }, {});
    for (let k = 0; k < 3; k++) noRekey.responder.open(noRekey.initiator.seal(text("x")));
    expectCode(() => noRekey.responder.open(noRekey.initiator.seal(text("x"))), "FRAME_REJECTED");
  });
});
