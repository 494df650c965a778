import hre from "hardhat";
import { expect } from "chai";
import { ethers } from "ethers";
import { Ownable__factory } from "../../typechain-types/index.js";
import { bridgeErrors, deployFixture, expectRevert } from "./helpers.js";
import type { Fixture } from "./helpers.js";

const E = (n: string) => ethers.parseEther(n);

describe("Bridge", function () {
  let f: Fixture;

  beforeEach(async function () {
    f = await deployFixture();
  });

  it("registers the hub at deployment; only the owner (un)registers modules", async function () {
    const { bridge, alice, carol } = f;
    expect(await bridge.isModule(f.deployment.hub)).to.equal(true);
    await expectRevert(
      bridge.connect(alice).registerModule(carol.address),
      Ownable__factory.createInterface(),
      "OwnableUnauthorizedAccount",
      [alice.address],
    );
    await expectRevert(
      bridge.registerModule(f.deployment.hub),
      bridgeErrors,
      "BridgeModuleAlreadyRegistered",
    );
    await expectRevert(bridge.registerModule(ethers.ZeroAddress), bridgeErrors, "BridgeInvalidModule");
    await expectRevert(bridge.unregisterModule(carol.address), bridgeErrors, "BridgeModuleNotRegistered");
  });

  it("a module can only pay out what was deposited into it", async function () {
    const { bridge, alice, bob, carol, token } = f;
    const tokenAddress = await token.getAddress();
    // alice acts as a module (an EOA registered by the owner).
    await (await bridge.registerModule(alice.address)).wait();
    await (await bridge.connect(alice).depositEth({ value: E("1") })).wait();
    expect(await bridge.balanceOf(alice.address, ethers.ZeroAddress)).to.equal(E("1"));
    await expectRevert(
      bridge.connect(alice).payout(ethers.ZeroAddress, carol.address, E("1") + 1n),
      bridgeErrors,
      "BridgeInsufficientModuleBalance",
      [alice.address, ethers.ZeroAddress, E("1"), E("1") + 1n],
    );
    // ERC-20: the payer approves the BRIDGE; the module pulls.
    await (await token.connect(bob).approve(f.deployment.bridge, E("5"))).wait();
    await (await bridge.connect(alice).depositFrom(tokenAddress, bob.address, E("5"))).wait();
    expect(await bridge.balanceOf(alice.address, tokenAddress)).to.equal(E("5"));
    await expectRevert(
      bridge.connect(alice).payout(tokenAddress, carol.address, E("6")),
      bridgeErrors,
      "BridgeInsufficientModuleBalance",
    );
    // Funds of another module (the hub) are out of reach even though the Bridge holds them.
    await (await f.hub.openChannel(bob.address, carol.address, ethers.ZeroAddress, 60n)).wait();
    await (await f.hub.connect(bob).setTotalDeposit(1n, bob.address, E("3"), { value: E("3") })).wait();
    expect(await hre.ethers.provider.getBalance(f.deployment.bridge)).to.equal(E("4"));
    await expectRevert(
      bridge.connect(alice).payout(ethers.ZeroAddress, alice.address, E("2")),
      bridgeErrors,
      "BridgeInsufficientModuleBalance",
      [alice.address, ethers.ZeroAddress, E("1"), E("2")],
    );
    const carolBefore = await hre.ethers.provider.getBalance(carol.address);
    await (await bridge.connect(alice).payout(ethers.ZeroAddress, carol.address, E("0.4"))).wait();
    await (await bridge.connect(alice).payout(tokenAddress, carol.address, E("5"))).wait();
    expect((await hre.ethers.provider.getBalance(carol.address)) - carolBefore).to.equal(E("0.4"));
    expect(await token.balanceOf(carol.address)).to.equal(E("1005"));
    expect(await bridge.balanceOf(alice.address, ethers.ZeroAddress)).to.equal(E("0.6"));
    expect(await bridge.balanceOf(alice.address, tokenAddress)).to.equal(0n);
    await expectRevert(
      bridge.connect(alice).payout(tokenAddress, carol.address, 1n),
      bridgeErrors,
      "BridgeInsufficientModuleBalance",
      [alice.address, tokenAddress, 0n, 1n],
    );
    await expectRevert(
      bridge.connect(alice).payout(ethers.ZeroAddress, ethers.ZeroAddress, 1n),
      bridgeErrors,
      "BridgeInvalidReceiver",
    );
    await expectRevert(
      bridge.connect(alice).depositFrom(ethers.ZeroAddress, bob.address, 1n),
      bridgeErrors,
      "BridgeInvalidToken",
    );
  });

  it("an unregistered module cannot move funds; its balance stays accounted to it", async function () {
    const { bridge, alice, bob, token } = f;
    const tokenAddress = await token.getAddress();
    await expectRevert(
      bridge.connect(alice).depositEth({ value: 1n }),
      bridgeErrors,
      "BridgeUnauthorizedModule",
      [alice.address],
    );
    await expectRevert(
      bridge.connect(alice).payout(ethers.ZeroAddress, alice.address, 0n),
      bridgeErrors,
      "BridgeUnauthorizedModule",
    );
    await (await token.connect(bob).approve(f.deployment.bridge, E("1"))).wait();
    await expectRevert(
      bridge.connect(alice).depositFrom(tokenAddress, bob.address, E("1")),
      bridgeErrors,
      "BridgeUnauthorizedModule",
    );
    await (await bridge.registerModule(alice.address)).wait();
    await (await bridge.connect(alice).depositEth({ value: E("1") })).wait();
    await (await bridge.unregisterModule(alice.address)).wait();
    expect(await bridge.isModule(alice.address)).to.equal(false);
    await expectRevert(
      bridge.connect(alice).payout(ethers.ZeroAddress, alice.address, E("1")),
      bridgeErrors,
      "BridgeUnauthorizedModule",
    );
    expect(await bridge.balanceOf(alice.address, ethers.ZeroAddress)).to.equal(E("1"));
    // Plain ETH transfers to the Bridge are rejected (no receive function).
    let rejected = false;
    try {
      await (await bob.sendTransaction({ to: f.deployment.bridge, value: 1n })).wait();
    } catch {
      rejected = true;
    }
    expect(rejected).to.equal(true);
  });
});
