/**
 * The channel engine's modules in-process (node/channels/*), with no node process around them: two
 * `ChannelService`s with real SQLite stores, real libp2p hosts over TCP on 127.0.0.1 and real keys, against
 * the in-process Hardhat chain (real ChannelHub, Bridge and TestToken). Open and announce, direct payments
 * both ways, a withdraw (the partner's reservation before it is mined), a cooperative settle refused while a
 * withdraw is in flight and paid to the wei once it is mined. The chain-following half (the monitor) is
 * covered by the process tests; here its one call, `applyMined`, is made as the monitor makes it.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { ethers } from "ethers";
import { dialableMultiaddrs } from "../../host/libp2p.js";
import { isQrwpError } from "../../protocol/index.js";
import { deployFixture, type Fixture } from "./helpers.js";
import { codeOf, startEngine, stopEngines, type Engine } from "./engine-helpers.js";

const E = (n: string) => ethers.parseEther(n);

describe("node/channels in-process: the engine's modules against a real store, libp2p and chain", function () {
  this.timeout(120_000);
  let f: Fixture;
  let alice: Engine;
  let bob: Engine;
  let channelId: bigint;
  const dir = mkdtempSync(join(tmpdir(), "qrwp-engine-"));

  before(async () => {
    f = await deployFixture();
    alice = await startEngine(f, dir, "alice");
    bob = await startEngine(f, dir, "bob");
  });

  after(() => stopEngines([alice, bob]));

  it("opens and announces: both registries hold the channel with the on-chain deposit", async () => {
    const view = await alice.service.openChannel({
      partner: bob.keys.address,
      partnerMultiaddr: dialableMultiaddrs(bob.libp2p)[0] as string,
      token: f.deployment.token as string,
      depositAmount: E("100"),
      settleTimeoutSeconds: 600,
    });
    channelId = view.channelId;
    expect(view.ourDeposit).to.equal(E("100"));
    const b = bob.service.getChannel(channelId);
    expect(b.state).to.equal("opened");
    expect(b.partnerDeposit).to.equal(E("100"));
    expect(b.partnerBalance).to.equal(E("100"));
  });

  it("pays both ways through the outgoing and incoming paths; both views agree and survive a reload", async () => {
    const p1 = await alice.service.pay({
      target: bob.keys.address,
      token: f.deployment.token as string,
      amount: E("30"),
    });
    expect(p1.status).to.equal("completed");
    const p2 = await bob.service.pay({
      target: alice.keys.address,
      token: f.deployment.token as string,
      amount: E("5"),
    });
    expect(p2.status).to.equal("completed");
    const a = alice.service.getChannel(channelId);
    const b = bob.service.getChannel(channelId);
    expect(a.ourBalance).to.equal(E("75"));
    expect(b.ourBalance).to.equal(E("25"));
    expect(a.ourNonce).to.equal(b.partnerNonce);
    expect(a.partnerNonce).to.equal(b.ourNonce);
    // What the registry holds is what the store holds: a reload from the SQLite rows gives the same view.
    const reloaded = bob.service.registry.load(bob.store.getChannel(channelId)!);
    expect(bob.service.registry.summary(reloaded)).to.deep.equal(bob.service.channelSummaries()[0]);
  });

  it("withdraws: the hub pays alice; bob counts it from his co-signature", async () => {
    const walletBefore = await f.token.balanceOf(alice.keys.address);
    const view = await alice.service.withdraw(channelId, E("20"));
    expect(view.ourWithdraw).to.equal(E("20"));
    expect(view.ourBalance).to.equal(E("55"));
    expect((await f.token.balanceOf(alice.keys.address)) - walletBefore).to.equal(E("20"));
    const b = bob.service.getChannel(channelId);
    expect(b.pendingWithdraw.partner).to.equal(E("20"));
    expect(b.partnerBalance).to.equal(E("55"));
  });

  it("refuses a withdraw above the balance and a second pay beyond it, naming the field", async () => {
    const tooMuch = alice.service.withdraw(channelId, E("56"));
    let field: unknown;
    try {
      await tooMuch;
    } catch (err) {
      expect(isQrwpError(err) && err.code).to.equal("INSUFFICIENT_CAPACITY");
      field = isQrwpError(err) ? err.details.field : undefined;
    }
    expect(field).to.equal("amount");
    expect(alice.service.getChannel(channelId).pendingWithdraw.ours).to.equal(null);
    const pay = alice.service.pay({
      target: bob.keys.address,
      token: f.deployment.token as string,
      amount: E("56"),
    });
    expect(await codeOf(pay)).to.equal("INSUFFICIENT_CAPACITY");
    expect(alice.service.getChannel(channelId).ourBalance).to.equal(E("55"));
  });

  it("settles cooperatively once no withdraw is in flight; the hub pays deposits minus withdraws to the wei", async () => {
    // bob has not seen alice's withdraw mined yet (no monitor here): he refuses to co-sign a settle. Alice's
    // request may have left, so her channel stays closing (no transfers) until it settles or she closes alone.
    expect(await codeOf(alice.service.close(channelId, { cooperative: true }))).to.equal("PEER_REJECTED");
    expect(alice.service.getChannel(channelId).state).to.equal("opened");
    const frozen = alice.service.pay({
      target: bob.keys.address,
      token: f.deployment.token as string,
      amount: 1n,
    });
    expect(await codeOf(frozen)).to.equal("CHANNEL_STATE");
    // What bob's monitor does on the hub's ChannelWithdraw event.
    bob.service.withdraws.applyMined(bob.service.registry.get(channelId), alice.keys.address, E("20"));
    const mined = bob.service.getChannel(channelId);
    expect(mined.partnerWithdraw).to.equal(E("20"));
    expect(mined.pendingWithdraw.partner).to.equal(null);
    expect(bob.store.getWithdraw(channelId, alice.keys.address)).to.equal(null);
    const [a0, b0] = await Promise.all([
      f.token.balanceOf(alice.keys.address),
      f.token.balanceOf(bob.keys.address),
    ]);
    const view = await alice.service.close(channelId, { cooperative: true });
    expect(view.state).to.equal("settled");
    expect((await f.token.balanceOf(alice.keys.address)) - a0).to.equal(E("55"));
    expect((await f.token.balanceOf(bob.keys.address)) - b0).to.equal(E("25"));
  });
});
