/**
 * Gas benchmark of the ChannelHub lifecycle (incl. withdraws from an open channel), the SecretRegistry and unlocks of pending HTLC locks on the
 * in-process Hardhat network (cancun, optimizer 200 runs).
 * Prints a table and writes bench/results/gas.json. Run with `npm run bench:gas`.
 */
import "core-js/actual/promise/with-resolvers.js";
import hre from "hardhat";
import { mkdir, writeFile } from "node:fs/promises";
import { ethers } from "ethers";
import { deployQrwp, HubClient } from "../chain/index.js";
import { TestToken__factory } from "../typechain-types/index.js";
import { CHANNEL_HUB_EIP712_TYPES, EIP712_DOMAIN_NAME, EIP712_DOMAIN_VERSION } from "../protocol/index.js";

const TIMEOUT_SECONDS = 30;

interface Row {
  operation: string;
  gasUsed: bigint;
  note: string;
}

async function main(): Promise<void> {
  const [deployer] = await hre.ethers.getSigners();
  if (!deployer) throw new Error("no Hardhat signer");
  const provider = hre.ethers.provider;
  const deployment = await deployQrwp(deployer, { testToken: true });
  const token = deployment.token ?? "";
  const wallets = [0, 1, 2].map(
    () => ethers.Wallet.createRandom().connect(provider) as unknown as ethers.Wallet,
  );
  const testToken = TestToken__factory.connect(token, deployer);
  for (const w of wallets) {
    await provider.send("hardhat_setBalance", [w.address, ethers.toQuantity(ethers.parseEther("100"))]);
    await (await testToken.mint(w.address, ethers.parseEther("1000"))).wait();
  }
  const [alice, bob, tower] = wallets as [ethers.Wallet, ethers.Wallet, ethers.Wallet];
  const a = new HubClient(alice, deployment);
  const b = new HubClient(bob, deployment);
  const t = new HubClient(tower, deployment);
  const domain = {
    name: EIP712_DOMAIN_NAME,
    version: EIP712_DOMAIN_VERSION,
    chainId: BigInt(deployment.chainId),
    verifyingContract: deployment.hub,
  };
  const rows: Row[] = [];
  const E = (n: string) => ethers.parseEther(n);

  // The typed-data definitions the contract uses, from protocol/ (one source of truth).
  const { BalanceProof, BalanceProofUpdate, CooperativeSettle, Withdraw } = CHANNEL_HUB_EIP712_TYPES;
  // ethers wants mutable arrays; the protocol constants are readonly.
  const bpTypes = { BalanceProof: [...BalanceProof] };
  const updTypes = { BalanceProofUpdate: [...BalanceProofUpdate] };
  const coopTypes = { CooperativeSettle: [...CooperativeSettle] };
  const withdrawTypes = { Withdraw: [...Withdraw] };
  const hashOf = (transferred: bigint, locked = 0n, locksRoot = ethers.ZeroHash) =>
    ethers.keccak256(
      ethers.AbiCoder.defaultAbiCoder().encode(
        ["uint256", "uint256", "bytes32"],
        [transferred, locked, locksRoot],
      ),
    );
  const proof = async (
    signer: ethers.Wallet,
    channelId: bigint,
    nonce: bigint,
    transferred: bigint,
    locked = 0n,
    locksRoot = ethers.ZeroHash,
  ) => {
    const balanceHash = hashOf(transferred, locked, locksRoot);
    const signature = await signer.signTypedData(domain, bpTypes, { channelId, nonce, balanceHash });
    return { nonce, balanceHash, signature };
  };

  // Channel 1 (ERC-20): open, deposits, cooperative settle.
  const open1 = await a.openChannel(bob.address, token, TIMEOUT_SECONDS);
  rows.push({ operation: "openChannel", gasUsed: open1.gasUsed, note: "ERC-20 channel" });
  const dep1 = await a.setTotalDeposit(open1.channelId, E("10"));
  if (dep1.approve)
    rows.push({ operation: "approve (Bridge)", gasUsed: dep1.approve.gasUsed, note: "ERC-20 approve" });
  rows.push({ operation: "setTotalDeposit", gasUsed: dep1.gasUsed, note: "first ERC-20 deposit" });
  const dep2 = await b.setTotalDeposit(open1.channelId, E("10"));
  rows.push({ operation: "setTotalDeposit", gasUsed: dep2.gasUsed, note: "partner's first ERC-20 deposit" });
  const dep3 = await a.setTotalDeposit(open1.channelId, E("15"));
  rows.push({ operation: "setTotalDeposit", gasUsed: dep3.gasUsed, note: "top-up ERC-20 deposit" });
  const coop = [open1.channelId, alice.address, E("12"), bob.address, E("13")] as const;
  const coopMsg = {
    channelId: coop[0],
    participant1: coop[1],
    participant1Amount: coop[2],
    participant2: coop[3],
    participant2Amount: coop[4],
  };
  const coopResult = await t.cooperativeSettle(
    ...coop,
    await alice.signTypedData(domain, coopTypes, coopMsg),
    await bob.signTypedData(domain, coopTypes, coopMsg),
  );
  rows.push({ operation: "cooperativeSettle", gasUsed: coopResult.gasUsed, note: "two ERC-20 payouts" });

  // Channel 2 (ERC-20): close, contest, settle.
  const open2 = await a.openChannel(bob.address, token, TIMEOUT_SECONDS);
  const id = open2.channelId;
  await a.setTotalDeposit(id, E("10"));
  await b.setTotalDeposit(id, E("10"));
  const bobProof = await proof(bob, id, 3n, E("2"));
  const close = await a.closeChannel(id, bob.address, bobProof);
  rows.push({ operation: "closeChannel", gasUsed: close.gasUsed, note: "with partner's balance proof" });
  const aliceProof = await proof(alice, id, 5n, E("4"));
  const counter = await bob.signTypedData(domain, updTypes, {
    channelId: id,
    nonce: aliceProof.nonce,
    balanceHash: aliceProof.balanceHash,
    closingSignature: aliceProof.signature,
  });
  const update = await t.updateNonClosingBalanceProof(id, alice.address, bob.address, aliceProof, counter);
  rows.push({ operation: "updateNonClosingBalanceProof", gasUsed: update.gasUsed, note: "by a watchtower" });
  await provider.send("evm_increaseTime", [TIMEOUT_SECONDS + 1]);
  await provider.send("evm_mine", []);
  const settle = await t.settleChannel(
    id,
    { participant: alice.address, transferredAmount: E("4"), lockedAmount: 0n, locksRoot: ethers.ZeroHash },
    { participant: bob.address, transferredAmount: E("2"), lockedAmount: 0n, locksRoot: ethers.ZeroHash },
  );
  rows.push({ operation: "settleChannel", gasUsed: settle.gasUsed, note: "two ERC-20 payouts, no locks" });

  // Channel 3 (ETH): open, deposit, close without proof.
  const open3 = await a.openChannel(bob.address, ethers.ZeroAddress, TIMEOUT_SECONDS);
  const ethDep = await a.setTotalDeposit(open3.channelId, E("1"));
  rows.push({ operation: "setTotalDeposit", gasUsed: ethDep.gasUsed, note: "first ETH deposit" });
  const ethClose = await b.closeChannel(open3.channelId, alice.address, null);
  rows.push({ operation: "closeChannel", gasUsed: ethClose.gasUsed, note: "no partner proof (nonce 0)" });

  // Channel 4 (ERC-20): withdraws from the open channel, both signatures, sent by the participant.
  const open4 = await a.openChannel(bob.address, token, TIMEOUT_SECONDS);
  await a.setTotalDeposit(open4.channelId, E("10"));
  await b.setTotalDeposit(open4.channelId, E("10"));
  const withdraw = async (
    client: HubClient,
    participant: ethers.Wallet,
    partner: ethers.Wallet,
    total: bigint,
  ) => {
    const message = {
      channelId: open4.channelId,
      participant: participant.address,
      totalWithdraw: total,
      expiryTimestamp: BigInt(await client.latestTimestamp()) + 600n,
    };
    return client.setTotalWithdraw(
      message.channelId,
      message.participant,
      message.totalWithdraw,
      message.expiryTimestamp,
      await participant.signTypedData(domain, withdrawTypes, message),
      await partner.signTypedData(domain, withdrawTypes, message),
    );
  };
  const w1 = await withdraw(a, alice, bob, E("3"));
  rows.push({ operation: "setTotalWithdraw", gasUsed: w1.gasUsed, note: "first ERC-20 withdraw" });
  const w2 = await withdraw(a, alice, bob, E("5"));
  rows.push({ operation: "setTotalWithdraw", gasUsed: w2.gasUsed, note: "top-up ERC-20 withdraw" });
  // What is left after the withdraws (20 - 5) is settled cooperatively, which also frees the pair.
  const coop4 = {
    channelId: open4.channelId,
    participant1: alice.address,
    participant1Amount: E("5"),
    participant2: bob.address,
    participant2Amount: E("10"),
  };
  const coop4Result = await t.cooperativeSettle(
    coop4.channelId,
    coop4.participant1,
    coop4.participant1Amount,
    coop4.participant2,
    coop4.participant2Amount,
    await alice.signTypedData(domain, coopTypes, coop4),
    await bob.signTypedData(domain, coopTypes, coop4),
  );
  rows.push({
    operation: "cooperativeSettle",
    gasUsed: coop4Result.gasUsed,
    note: "two ERC-20 payouts, after a withdraw",
  });

  // SecretRegistry.
  const secret = () => ethers.hexlify(ethers.randomBytes(32));
  const reg1 = await t.registerSecret(secret());
  rows.push({ operation: "registerSecret", gasUsed: reg1.gasUsed, note: "one new secret" });
  const reg10 = await t.registerSecretBatch(Array.from({ length: 10 }, secret));
  rows.push({ operation: "registerSecretBatch", gasUsed: reg10.gasUsed, note: "10 new secrets" });

  // Channels 5-7 (ERC-20): alice's proof carries N pending locks; bob closes with it, settle keeps the
  // locked amount, then a watchtower unlocks. All secrets but the last one (for N > 1) are registered in time.
  for (const count of [1, 10, 160]) {
    const { channelId } = await a.openChannel(bob.address, token, TIMEOUT_SECONDS);
    await a.setTotalDeposit(channelId, E("10"));
    await b.setTotalDeposit(channelId, E("10"));
    const expiration = BigInt(await t.latestTimestamp()) + 3600n;
    const secrets = Array.from({ length: count }, secret);
    const locks = secrets.map((s, i) => ({
      amount: ethers.parseUnits(String(i + 1), "gwei"),
      expiration,
      secretHash: ethers.sha256(s),
    }));
    const locked = locks.reduce((sum, l) => sum + l.amount, 0n);
    const locksRoot = ethers.keccak256(
      ethers.concat(
        locks.map((l) =>
          ethers.solidityPacked(["uint256", "uint256", "bytes32"], [l.amount, l.expiration, l.secretHash]),
        ),
      ),
    );
    const aliceLocked = await proof(alice, channelId, 1n, E("1"), locked, locksRoot);
    await b.closeChannel(channelId, alice.address, aliceLocked);
    await provider.send("evm_increaseTime", [TIMEOUT_SECONDS + 1]);
    await provider.send("evm_mine", []);
    const settled = await t.settleChannel(
      channelId,
      { participant: alice.address, transferredAmount: E("1"), lockedAmount: locked, locksRoot },
      { participant: bob.address, transferredAmount: 0n, lockedAmount: 0n, locksRoot: ethers.ZeroHash },
    );
    if (count === 1) {
      rows.push({
        operation: "settleChannel",
        gasUsed: settled.gasUsed,
        note: "two ERC-20 payouts, one side's pending locks kept",
      });
    }
    await t.registerSecretBatch(count === 1 ? secrets : secrets.slice(0, -1));
    const unlocked = await t.unlock(channelId, alice.address, bob.address, locks);
    rows.push({
      operation: "unlock",
      gasUsed: unlocked.gasUsed,
      note:
        count === 1
          ? "1 lock, secret registered, one payout"
          : `${count} locks, ${count - 1} secrets registered, two payouts`,
    });
  }

  const table = rows.map((r) => ({ operation: r.operation, gasUsed: Number(r.gasUsed), note: r.note }));
  console.table(table);
  await mkdir("bench/results", { recursive: true });
  const network = await provider.getNetwork();
  await writeFile(
    "bench/results/gas.json",
    `${JSON.stringify(
      {
        benchmark: "gas",
        network: `hardhat in-process (chainId ${network.chainId})`,
        solc: "0.8.30, optimizer 200 runs, evm cancun",
        date: new Date().toISOString(),
        results: table,
      },
      null,
      2,
    )}\n`,
  );
  console.log("wrote bench/results/gas.json");
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
