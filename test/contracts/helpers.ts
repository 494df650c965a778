/**
 * Test helpers for the contract suites: custom-error revert assertions (no hardhat-chai-matchers),
 * an independent EIP-712 signer for balance proofs (ethers TypedDataEncoder, not protocol/), an independent
 * lock packer (ethers solidityPacked/keccak256/sha256), and fixtures.
 */
import hre from "hardhat";
import { expect } from "chai";
import { ethers } from "ethers";
import { deployQrwp } from "../../chain/index.js";
import type { Deployment } from "../../chain/index.js";
import {
  Bridge__factory,
  ChannelHub__factory,
  SecretRegistry__factory,
  TestToken__factory,
} from "../../typechain-types/index.js";
import type { Bridge, ChannelHub, SecretRegistry, TestToken } from "../../typechain-types/index.js";

/** Every hex string in an error that may be revert data (ethers and Hardhat nest it differently). */
export function revertData(error: unknown, depth = 0, out: string[] = []): string[] {
  if (depth > 6 || error === null || typeof error !== "object") return out;
  const record = error as Record<string, unknown>;
  for (const key of ["data", "error", "info", "cause", "originalError"]) {
    const value = record[key];
    if (typeof value === "string" && /^0x[0-9a-fA-F]{8}/.test(value)) out.push(value);
    else if (value !== null && typeof value === "object") revertData(value, depth + 1, out);
  }
  return out;
}

/**
 * Asserts that `action` reverts with the custom error `errorName` of `iface`, optionally with `args`
 * (compared after String() so bigints and addresses compare simply; addresses case-insensitively).
 */
export async function expectRevert(
  action: Promise<unknown>,
  iface: ethers.Interface,
  errorName: string,
  args?: readonly unknown[],
): Promise<void> {
  let caught: unknown;
  try {
    await action;
  } catch (error) {
    caught = error;
  }
  if (caught === undefined) expect.fail(`expected revert ${errorName}, but the call succeeded`);
  const decoded = revertData(caught)
    .map((data) => {
      try {
        return iface.parseError(data);
      } catch {
        return null;
      }
    })
    .find((d) => d !== null && d !== undefined);
  if (!decoded) expect.fail(`expected revert ${errorName}, got: ${(caught as Error).message}`);
  expect(decoded.name).to.equal(errorName);
  if (args !== undefined) {
    const norm = (v: unknown) => String(v).toLowerCase();
    expect([...decoded.args].map(norm)).to.deep.equal(args.map(norm));
  }
}

export const BALANCE_PROOF_TYPES = {
  BalanceProof: [
    { name: "channelId", type: "uint256" },
    { name: "nonce", type: "uint256" },
    { name: "balanceHash", type: "bytes32" },
  ],
};
export const BALANCE_PROOF_UPDATE_TYPES = {
  BalanceProofUpdate: [
    { name: "channelId", type: "uint256" },
    { name: "nonce", type: "uint256" },
    { name: "balanceHash", type: "bytes32" },
    { name: "closingSignature", type: "bytes" },
  ],
};
export const COOPERATIVE_SETTLE_TYPES = {
  CooperativeSettle: [
    { name: "channelId", type: "uint256" },
    { name: "participant1", type: "address" },
    { name: "participant1Amount", type: "uint256" },
    { name: "participant2", type: "address" },
    { name: "participant2Amount", type: "uint256" },
  ],
};

export const WITHDRAW_TYPES = {
  Withdraw: [
    { name: "channelId", type: "uint256" },
    { name: "participant", type: "address" },
    { name: "totalWithdraw", type: "uint256" },
    { name: "expiryTimestamp", type: "uint256" },
  ],
};

/** The hub's EIP-712 domain. */
export function hubDomain(hub: string, chainId: bigint = 31337n): ethers.TypedDataDomain {
  return { name: "QRWP ChannelHub", version: "1", chainId, verifyingContract: hub };
}

/** keccak256(abi.encode(uint256 transferredAmount, uint256 lockedAmount, bytes32 locksRoot)). */
export function balanceHash(transferred: bigint, locked = 0n, locksRoot: string = ethers.ZeroHash): string {
  return ethers.keccak256(
    ethers.AbiCoder.defaultAbiCoder().encode(
      ["uint256", "uint256", "bytes32"],
      [transferred, locked, locksRoot],
    ),
  );
}

/** A balance proof signed by `sender` plus the data behind it. */
export interface TestProof {
  nonce: bigint;
  balanceHash: string;
  signature: string;
  transferredAmount: bigint;
  lockedAmount: bigint;
  locksRoot: string;
}

export async function signBalanceProof(
  sender: ethers.Wallet,
  domain: ethers.TypedDataDomain,
  channelId: bigint,
  nonce: bigint,
  transferredAmount: bigint,
  lockedAmount = 0n,
  locksRoot: string = ethers.ZeroHash,
): Promise<TestProof> {
  const hash = balanceHash(transferredAmount, lockedAmount, locksRoot);
  const signature = await sender.signTypedData(domain, BALANCE_PROOF_TYPES, {
    channelId,
    nonce,
    balanceHash: hash,
  });
  return { nonce, balanceHash: hash, signature, transferredAmount, lockedAmount, locksRoot };
}

/** The non-closer's counter-signature authorising a contest with the closer's `proof`. */
export async function signUpdate(
  nonCloser: ethers.Wallet,
  domain: ethers.TypedDataDomain,
  channelId: bigint,
  proof: TestProof,
): Promise<string> {
  return nonCloser.signTypedData(domain, BALANCE_PROOF_UPDATE_TYPES, {
    channelId,
    nonce: proof.nonce,
    balanceHash: proof.balanceHash,
    closingSignature: proof.signature,
  });
}

export async function signCooperativeSettle(
  signer: ethers.Wallet,
  domain: ethers.TypedDataDomain,
  channelId: bigint,
  participant1: string,
  participant1Amount: bigint,
  participant2: string,
  participant2Amount: bigint,
): Promise<string> {
  return signer.signTypedData(domain, COOPERATIVE_SETTLE_TYPES, {
    channelId,
    participant1,
    participant1Amount,
    participant2,
    participant2Amount,
  });
}

/** `signer`'s EIP-712 `Withdraw` signature (the participant and the partner sign the same message). */
export async function signWithdraw(
  signer: ethers.Wallet,
  domain: ethers.TypedDataDomain,
  channelId: bigint,
  participant: string,
  totalWithdraw: bigint,
  expiryTimestamp: bigint,
): Promise<string> {
  return signer.signTypedData(domain, WITHDRAW_TYPES, {
    channelId,
    participant,
    totalWithdraw,
    expiryTimestamp,
  });
}

/** A withdraw message signed by both participants, ready for `setTotalWithdraw`. */
export interface TestWithdraw {
  channelId: bigint;
  participant: string;
  totalWithdraw: bigint;
  expiryTimestamp: bigint;
  participantSignature: string;
  partnerSignature: string;
}

/** `participant` and `partner` both sign `Withdraw(channelId, participant, totalWithdraw, expiryTimestamp)`. */
export async function signWithdrawBoth(
  participant: ethers.Wallet,
  partner: ethers.Wallet,
  domain: ethers.TypedDataDomain,
  channelId: bigint,
  totalWithdraw: bigint,
  expiryTimestamp: bigint,
): Promise<TestWithdraw> {
  const args = [domain, channelId, participant.address, totalWithdraw, expiryTimestamp] as const;
  return {
    channelId,
    participant: participant.address,
    totalWithdraw,
    expiryTimestamp,
    participantSignature: await signWithdraw(participant, ...args),
    partnerSignature: await signWithdraw(partner, ...args),
  };
}

/** Sends `hub.setTotalWithdraw` with `w` (from whoever `hub` is connected as). */
export function submitWithdraw(hub: ChannelHub, w: TestWithdraw) {
  return hub.setTotalWithdraw(
    w.channelId,
    w.participant,
    w.totalWithdraw,
    w.expiryTimestamp,
    w.participantSignature,
    w.partnerSignature,
  );
}

/** A funded random wallet connected to the in-process Hardhat provider. */
export async function fundedWallet(balanceWei: bigint = ethers.parseEther("1000")): Promise<ethers.Wallet> {
  const wallet = ethers.Wallet.createRandom().connect(hre.ethers.provider) as unknown as ethers.Wallet;
  await hre.network.provider.send("hardhat_setBalance", [wallet.address, ethers.toQuantity(balanceWei)]);
  return wallet;
}

export interface Fixture {
  deployment: Deployment;
  deployer: ethers.Signer;
  bridge: Bridge;
  hub: ChannelHub;
  registry: SecretRegistry;
  token: TestToken;
  alice: ethers.Wallet;
  bob: ethers.Wallet;
  /** A third party (e.g. a watchtower). */
  carol: ethers.Wallet;
  domain: ethers.TypedDataDomain;
}

/** Deploys a fresh Bridge + ChannelHub + TestToken and funds alice, bob and carol with ETH and tokens. */
export async function deployFixture(): Promise<Fixture> {
  const [deployer] = await hre.ethers.getSigners();
  if (!deployer) throw new Error("no Hardhat signer");
  const deployment = await deployQrwp(deployer, { testToken: true });
  const bridge = Bridge__factory.connect(deployment.bridge, deployer);
  const hub = ChannelHub__factory.connect(deployment.hub, deployer);
  const registry = SecretRegistry__factory.connect(deployment.secretRegistry, deployer);
  const token = TestToken__factory.connect(deployment.token ?? ethers.ZeroAddress, deployer);
  const alice = await fundedWallet();
  const bob = await fundedWallet();
  const carol = await fundedWallet();
  for (const w of [alice, bob, carol]) await (await token.mint(w.address, ethers.parseEther("1000"))).wait();
  return {
    deployment,
    deployer,
    bridge,
    hub,
    registry,
    token,
    alice,
    bob,
    carol,
    domain: hubDomain(deployment.hub, BigInt(deployment.chainId)),
  };
}

/** Opens a channel and returns its id (read back from the counter). */
export async function openChannel(
  hub: ChannelHub,
  a: string,
  b: string,
  token: string,
  settleTimeoutSeconds = 60n,
): Promise<bigint> {
  await (await hub.openChannel(a, b, token, settleTimeoutSeconds)).wait();
  return hub.channelCounter();
}

/** `who` approves the bridge and deposits `total` for itself in an ERC-20 channel. */
export async function depositToken(f: Fixture, who: ethers.Wallet, channelId: bigint, total: bigint) {
  const current = (await f.hub.getParticipant(channelId, who.address)).totalDeposit;
  await (await f.token.connect(who).approve(f.deployment.bridge, total - current)).wait();
  await (await f.hub.connect(who).setTotalDeposit(channelId, who.address, total)).wait();
}

export const hubErrors = ChannelHub__factory.createInterface();
export const bridgeErrors = Bridge__factory.createInterface();

/** A pending hash-time lock, as the hub packs it. */
export interface TestLock {
  amount: bigint;
  expiration: bigint;
  secretHash: string;
}

/** A random 32-byte secret, 0x-hex. */
export function newSecret(): string {
  return ethers.hexlify(ethers.randomBytes(32));
}

/** A lock of `amount` expiring at `expiration` for `secret` (secretHash = sha256(secret)). */
export function lockFor(amount: bigint, expiration: bigint, secret: string): TestLock {
  return { amount, expiration, secretHash: ethers.sha256(secret) };
}

/** concat(abi.encodePacked(amount, expiration, secretHash)), 96 bytes per lock. */
export function packLocks(locks: readonly TestLock[]): string {
  return ethers.concat(
    locks.map((l) =>
      ethers.solidityPacked(["uint256", "uint256", "bytes32"], [l.amount, l.expiration, l.secretHash]),
    ),
  );
}

/** keccak256(packed locks), bytes32(0) for none. */
export function locksRootOf(locks: readonly TestLock[]): string {
  return locks.length === 0 ? ethers.ZeroHash : ethers.keccak256(packLocks(locks));
}

/** Sum of the lock amounts (a balance proof's lockedAmount). */
export function lockedAmountOf(locks: readonly TestLock[]): bigint {
  return locks.reduce((sum, l) => sum + l.amount, 0n);
}

/** The events of `iface` in a receipt, decoded (others skipped). */
export function eventsOf(
  receipt: ethers.TransactionReceipt | null,
  iface: ethers.Interface,
  name: string,
): ethers.LogDescription[] {
  const out: ethers.LogDescription[] = [];
  for (const log of receipt?.logs ?? []) {
    const parsed = (() => {
      try {
        return iface.parseLog(log);
      } catch {
        return null;
      }
    })();
    if (parsed?.name === name) out.push(parsed);
  }
  return out;
}

export const registryInterface = SecretRegistry__factory.createInterface();
