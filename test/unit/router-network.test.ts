/**
 * Channel updates (EIP-712 digest cross-checked with ethers, signature, CBOR codec, decoder fuzzing) and the
 * NetworkGraph (on-chain events, update acceptance rules, pending buffer, policies, ChannelGraph export).
 */
import { expect } from "chai";
import fc from "fast-check";
import { TypedDataEncoder } from "ethers";
import { Encoder } from "cbor-x";
import { addressOf } from "../../protocol/index.js";
import {
  CHANNEL_UPDATE_EIP712_TYPES,
  MAX_CHANNEL_UPDATE_BYTES,
  NetworkGraph,
  channelUpdateDigest,
  channelUpdateDomain,
  decodeChannelUpdate,
  encodeChannelUpdate,
  signChannelUpdate,
  verifyChannelUpdate,
  type ChannelUpdate,
  type UnsignedChannelUpdate,
} from "../../router/index.js";
import { expectCode } from "./helpers.js";

interface TestKey {
  address: string;
  secp256k1PrivateKey: Uint8Array;
}

function key(i: number): TestKey {
  const sk = new Uint8Array(32);
  sk[30] = 0x5a;
  sk[31] = i;
  return { secp256k1PrivateKey: sk, address: addressOf(sk) };
}

const CHAIN = 31337n;
const HUB = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const TOKEN = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512";
const OTHER_TOKEN = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0";
const alice = key(1);
const bob = key(2);
const carol = key(3);

function unsigned(from: TestKey, to: TestKey, o: Partial<UnsignedChannelUpdate> = {}): UnsignedChannelUpdate {
  return {
    chainId: CHAIN,
    hub: HUB,
    token: TOKEN,
    channelId: 1n,
    participant: from.address,
    partner: to.address,
    nonce: 1_700_000_000_000n,
    feeFlat: 1_000_000_000n,
    feePpm: 250,
    expiryDeltaSeconds: 900,
    htlcMinimum: 1n,
    htlcMaximum: 10n ** 24n,
    capacityHint: 5n * 10n ** 18n,
    disabled: false,
    ...o,
  };
}

const signed = (from: TestKey, to: TestKey, o: Partial<UnsignedChannelUpdate> = {}): ChannelUpdate =>
  signChannelUpdate(unsigned(from, to, o), from);

function graphWithChannel(): NetworkGraph {
  const g = new NetworkGraph({ chainId: CHAIN, hub: HUB });
  g.applyEvent({
    type: "ChannelOpened",
    channelId: 1n,
    participant1: alice.address,
    participant2: bob.address,
    token: TOKEN,
    settleTimeoutSeconds: 86_400n,
  });
  g.applyEvent({
    type: "ChannelNewDeposit",
    channelId: 1n,
    participant: alice.address,
    totalDeposit: 3n * 10n ** 18n,
  });
  g.applyEvent({
    type: "ChannelNewDeposit",
    channelId: 1n,
    participant: bob.address,
    totalDeposit: 1n * 10n ** 18n,
  });
  return g;
}

const rawCbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

/** The wire object of an update, for hand-made malformed variants. */
function wire(u: ChannelUpdate): Record<string, unknown> {
  return rawCbor.decode(encodeChannelUpdate(u)) as Record<string, unknown>;
}

describe("router: ChannelUpdate signature and codec", () => {
  it("digest equals ethers' EIP-712 TypedDataEncoder hash; sign/verify/encode/decode round-trip", () => {
    const u = unsigned(alice, bob);
    const expected = TypedDataEncoder.hash(
      channelUpdateDomain(CHAIN, HUB),
      { ChannelUpdate: [...CHANNEL_UPDATE_EIP712_TYPES.ChannelUpdate] },
      u,
    );
    expect(`0x${Buffer.from(channelUpdateDigest(u)).toString("hex")}`).to.equal(expected);
    const s = signChannelUpdate(u, alice);
    verifyChannelUpdate(s);
    const bytes = encodeChannelUpdate(s);
    expect(bytes.length).to.be.lessThan(MAX_CHANNEL_UPDATE_BYTES);
    expect(decodeChannelUpdate(bytes)).to.deep.equal(s);
    // lower-case addresses are accepted and checksummed
    const lower = { ...wire(s), participant: alice.address.toLowerCase() };
    expect(decodeChannelUpdate(rawCbor.encode(lower)).participant).to.equal(alice.address);
  });

  it("a key that is not the participant's cannot sign", () => {
    expectCode(() => signChannelUpdate(unsigned(alice, bob), bob), "INVALID_ARGUMENT");
    expectCode(() => signChannelUpdate(unsigned(alice, alice), alice), "INVALID_ARGUMENT");
  });

  it("any tampered field breaks the signature", () => {
    const s = signed(alice, bob);
    const tampered: Partial<ChannelUpdate>[] = [
      { chainId: 1n },
      { hub: TOKEN },
      { token: OTHER_TOKEN },
      { channelId: 2n },
      { partner: carol.address },
      { participant: carol.address },
      { nonce: s.nonce + 1n },
      { feeFlat: 0n },
      { feePpm: 249 },
      { expiryDeltaSeconds: 901 },
      { htlcMinimum: 0n },
      { htlcMaximum: 10n ** 23n },
      { capacityHint: 10n ** 30n },
      { disabled: true },
    ];
    for (const t of tampered) {
      const e = expectCode(() => verifyChannelUpdate({ ...s, ...t }), "INVALID_SIGNATURE");
      expect(e.details.field, JSON.stringify(Object.keys(t))).to.equal("signature");
    }
    expectCode(() => verifyChannelUpdate({ ...s, signature: `0x${"11".repeat(65)}` }), "INVALID_SIGNATURE");
  });

  it("malformed wire updates are INVALID_MESSAGE naming the field", () => {
    const w = wire(signed(alice, bob));
    const cases: [Record<string, unknown> | string, string][] = [
      [{ ...w, feeFlat: "01" }, "feeFlat"],
      [{ ...w, feeFlat: "-1" }, "feeFlat"],
      [{ ...w, feeFlat: 5 }, "feeFlat"],
      [{ ...w, channelId: "1e3" }, "channelId"],
      [{ ...w, nonce: (2n ** 64n).toString() }, "nonce"],
      [{ ...w, feePpm: 2 ** 32 }, "feePpm"],
      [{ ...w, feePpm: 1.5 }, "feePpm"],
      [{ ...w, expiryDeltaSeconds: -1 }, "expiryDeltaSeconds"],
      [{ ...w, htlcMinimum: "10", htlcMaximum: "9" }, "htlcMaximum"],
      [{ ...w, disabled: "no" }, "disabled"],
      [{ ...w, hub: "0x1234" }, "hub"],
      // a mixed-case address with a wrong EIP-55 checksum
      [{ ...w, token: TOKEN.replace("E7734", "e7734") }, "token"],
      [{ ...w, partner: w.participant }, "partner"],
      [{ ...w, signature: "0x00" }, "signature"],
      [{ ...w, extra: 1 }, "update"],
      [{ ...w, type: "NodeAnnouncement" }, "type"],
      [(({ capacityHint: _c, ...rest }) => rest)(w), "capacityHint"],
      ["not an object", "update"],
    ];
    for (const [obj, field] of cases) {
      const e = expectCode(() => decodeChannelUpdate(rawCbor.encode(obj)), "INVALID_MESSAGE");
      expect(e.details.field, JSON.stringify(obj).slice(0, 80)).to.equal(field);
    }
    expectCode(() => decodeChannelUpdate(new Uint8Array([0xff, 0x00])), "INVALID_MESSAGE");
    expectCode(() => decodeChannelUpdate(new Uint8Array(MAX_CHANNEL_UPDATE_BYTES + 1)), "INVALID_MESSAGE");
  });

  it("fuzz: the decoder only ever throws INVALID_MESSAGE", () => {
    const valid = encodeChannelUpdate(signed(alice, bob));
    const mutated = fc
      .array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })), {
        minLength: 1,
        maxLength: 8,
      })
      .map((edits) => {
        const b = Uint8Array.from(valid);
        for (const [i, v] of edits) b[i] = v;
        return b;
      });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 1200 }), mutated), (bytes) => {
        try {
          const u = decodeChannelUpdate(bytes);
          expect(u.participant).to.match(/^0x[0-9a-fA-F]{40}$/);
        } catch (e) {
          expect((e as { code?: string }).code).to.equal("INVALID_MESSAGE");
        }
      }),
      { numRuns: 1500, seed: 3 },
    );
  });
});

describe("router: NetworkGraph", () => {
  it("applies a valid update; replayed and older nonces are stale; a newer one replaces", () => {
    const g = graphWithChannel();
    const u = signed(alice, bob, { nonce: 100n });
    expect(g.applyUpdate(u)).to.deep.equal({ status: "applied" });
    expect(g.latestUpdate(1n, alice.address)).to.deep.equal(u);
    expect(g.applyUpdate(u)).to.deep.equal({ status: "stale", storedNonce: 100n });
    expect(g.applyUpdate(signed(alice, bob, { nonce: 99n, feePpm: 1 }))).to.deep.equal({
      status: "stale",
      storedNonce: 100n,
    });
    expect(g.latestUpdate(1n, alice.address)!.feePpm).to.equal(250);
    expect(g.applyUpdate(signed(alice, bob, { nonce: 101n, feePpm: 7 })).status).to.equal("applied");
    expect(g.latestUpdate(1n, alice.address)!.feePpm).to.equal(7);
  });

  it("rejects forged, wrong-chain, wrong-hub, wrong-token and non-participant updates", () => {
    const g = graphWithChannel();
    const reject = (u: ChannelUpdate, field: string) => {
      const r = g.applyUpdate(u);
      expect(r.status, field).to.equal("rejected");
      expect((r as { field: string }).field).to.equal(field);
    };
    reject({ ...signed(alice, bob), feePpm: 0 }, "signature");
    reject(signed(alice, bob, { chainId: 1n }), "chainId");
    reject(signed(alice, bob, { hub: OTHER_TOKEN }), "hub");
    reject(signed(alice, bob, { token: OTHER_TOKEN }), "token");
    reject(signed(carol, bob), "participant");
    reject(signed(alice, carol), "partner");
    reject({ ...signed(alice, bob), feePpm: -1 }, "feePpm");
    expect(g.updates()).to.deep.equal([]);
  });

  it("keeps updates of unknown channels pending (bounded) and applies them when the channel opens", () => {
    const g = new NetworkGraph({ chainId: CHAIN, hub: HUB, maxPendingUpdates: 2 });
    const u1 = signed(alice, bob, { channelId: 1n });
    expect(g.applyUpdate(u1).status).to.equal("pending");
    expect(g.applyUpdate(u1)).to.deep.equal({ status: "stale", storedNonce: u1.nonce });
    expect(g.applyUpdate(signed(alice, bob, { channelId: 2n })).status).to.equal("pending");
    expect(g.applyUpdate(signed(alice, bob, { channelId: 3n })).status).to.equal("pending");
    expect(g.pendingCount).to.equal(2); // channel 1's was evicted
    g.applyEvent({
      type: "ChannelOpened",
      channelId: 3n,
      participant1: bob.address,
      participant2: alice.address,
      token: TOKEN,
      settleTimeoutSeconds: 500n,
    });
    expect(g.pendingCount).to.equal(1);
    expect(g.latestUpdate(3n, alice.address)?.channelId).to.equal(3n);
    // a pending update whose signer turns out not to be a participant is dropped, not applied
    const g2 = new NetworkGraph({ chainId: CHAIN, hub: HUB });
    expect(g2.applyUpdate(signed(carol, bob, { channelId: 9n })).status).to.equal("pending");
    g2.applyEvent({
      type: "ChannelOpened",
      channelId: 9n,
      participant1: alice.address,
      participant2: bob.address,
      token: TOKEN,
      settleTimeoutSeconds: 500n,
    });
    expect(g2.updates()).to.deep.equal([]);
  });

  it("follows deposits, closes and settles; updates of closed channels are ignored", () => {
    const g = graphWithChannel();
    expect(g.channel(1n)).to.deep.include({
      token: TOKEN,
      participant1Deposit: 3n * 10n ** 18n,
      participant2Deposit: 10n ** 18n,
    });
    g.applyUpdate(signed(alice, bob, { capacityHint: 10n ** 30n }));
    // capacity is the hint bounded by the deposits
    expect(g.policy(1n, alice.address)?.capacity).to.equal(4n * 10n ** 18n);
    g.applyEvent({
      type: "ChannelNewDeposit",
      channelId: 1n,
      participant: bob.address,
      totalDeposit: 2n * 10n ** 18n,
    });
    expect(g.policy(1n, alice.address)?.capacity).to.equal(5n * 10n ** 18n);
    expect(g.policy(1n, bob.address)).to.equal(undefined); // bob published nothing
    expectCode(
      () =>
        g.applyEvent({
          type: "ChannelNewDeposit",
          channelId: 1n,
          participant: carol.address,
          totalDeposit: 1n,
        }),
      "INVALID_ARGUMENT",
    );
    expect(
      g.applyEvent({ type: "ChannelNewDeposit", channelId: 7n, participant: bob.address, totalDeposit: 1n }),
    ).to.equal(false);
    expect(g.applyEvent({ type: "ChannelClosed", channelId: 1n })).to.equal(true);
    expect(g.channel(1n)).to.equal(undefined);
    expect(g.latestUpdate(1n, alice.address)).to.equal(undefined);
    expect(g.isClosed(1n)).to.equal(true);
    expect(g.applyUpdate(signed(alice, bob, { nonce: 2n ** 63n })).status).to.equal("closed");
    expect(g.applyEvent({ type: "ChannelSettled", channelId: 1n })).to.equal(false);
    expect(g.channelCount).to.equal(0);
    expectCode(() => g.applyEvent({ type: "Nope", channelId: 1n } as never), "INVALID_ARGUMENT");
  });

  it("a withdraw lowers what the channel holds, and so the capacity, as a deposit raises it", () => {
    const g = graphWithChannel();
    g.applyUpdate(signed(alice, bob, { capacityHint: 10n ** 30n }));
    g.applyUpdate(signed(bob, alice, { capacityHint: 10n ** 30n }));
    expect(g.policy(1n, alice.address)?.capacity).to.equal(4n * 10n ** 18n);
    const version = g.version;
    expect(
      g.applyEvent({
        type: "ChannelWithdraw",
        channelId: 1n,
        participant: alice.address,
        totalWithdraw: 10n ** 18n + 7n,
      }),
    ).to.equal(true);
    expect(g.version).to.be.greaterThan(version);
    expect(g.channel(1n)).to.deep.include({
      participant1Withdraw: 10n ** 18n + 7n,
      participant2Withdraw: 0n,
    });
    // Both directions: the channel holds 4 - (1 + 7 wei) tokens.
    for (const p of [alice, bob]) expect(g.policy(1n, p.address)?.capacity).to.equal(3n * 10n ** 18n - 7n);
    // Totals, not increments: a re-delivered event changes nothing; bob's withdraw adds to alice's.
    g.applyEvent({
      type: "ChannelWithdraw",
      channelId: 1n,
      participant: alice.address,
      totalWithdraw: 10n ** 18n + 7n,
    });
    g.applyEvent({
      type: "ChannelWithdraw",
      channelId: 1n,
      participant: bob.address,
      totalWithdraw: 2n * 10n ** 18n,
    });
    expect(g.policy(1n, alice.address)?.capacity).to.equal(10n ** 18n - 7n);
    // A hint below what the channel holds still bounds the capacity.
    g.applyUpdate(signed(alice, bob, { nonce: 1_700_000_000_001n, capacityHint: 5n }));
    expect(g.policy(1n, alice.address)?.capacity).to.equal(5n);
    // A deposit after the withdraws raises it again.
    g.applyEvent({
      type: "ChannelNewDeposit",
      channelId: 1n,
      participant: bob.address,
      totalDeposit: 3n * 10n ** 18n,
    });
    expect(g.policy(1n, bob.address)?.capacity).to.equal(3n * 10n ** 18n - 7n);
    // Refused: a non-participant, a malformed amount; ignored: an unknown channel.
    const bad = [
      { participant: carol.address, totalWithdraw: 1n, field: "participant" },
      { participant: alice.address, totalWithdraw: -1n, field: "totalWithdraw" },
      { participant: alice.address, totalWithdraw: 1 as unknown as bigint, field: "totalWithdraw" },
    ];
    for (const b of bad) {
      const e = expectCode(
        () =>
          g.applyEvent({
            type: "ChannelWithdraw",
            channelId: 1n,
            participant: b.participant,
            totalWithdraw: b.totalWithdraw,
          }),
        "INVALID_ARGUMENT",
      );
      expect(e.details.field).to.equal(b.field);
    }
    expect(
      g.applyEvent({ type: "ChannelWithdraw", channelId: 7n, participant: bob.address, totalWithdraw: 1n }),
    ).to.equal(false);
  });

  it("a disabled direction is not routable; the payer's local balance overrides its own direction", () => {
    const g = graphWithChannel();
    g.applyUpdate(signed(alice, bob, { disabled: true }));
    g.applyUpdate(signed(bob, alice, { capacityHint: 10n ** 15n, feePpm: 10 }));
    expect(g.policy(1n, alice.address)).to.equal(undefined);
    const local = { address: alice.address, spendable: new Map([[1n, 2n * 10n ** 18n + 1n]]) };
    expect(g.policy(1n, alice.address, local)).to.deep.include({
      capacity: 2n * 10n ** 18n + 1n,
      htlcMinimum: 0n,
    });
    const plain = g.toChannelGraph(TOKEN);
    expect(plain.edges().map((e) => `${e.source}>${e.target}`)).to.deep.equal([
      `${bob.address}>${alice.address}`,
    ]);
    expect(plain.getEdge("1", bob.address)?.capacity).to.equal(10n ** 15n);
    const withLocal = g.toChannelGraph(TOKEN, { local });
    expect(withLocal.getEdge("1", alice.address)?.capacity).to.equal(2n * 10n ** 18n + 1n);
    expect(g.toChannelGraph(TOKEN, { excludeChannels: [1n] }).edgeCount).to.equal(0);
    expect(g.toChannelGraph(OTHER_TOKEN).edgeCount).to.equal(0);
    expect(g.directions(TOKEN).map((d) => d.update?.disabled)).to.deep.equal([true, false]);
  });
});
