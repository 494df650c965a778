import type { MessageTypes, TypedMessage } from "@metamask/eth-sig-util";
import { SignTypedDataVersion, recoverTypedSignature } from "@metamask/eth-sig-util";
import { bytesToHex } from "@noble/hashes/utils.js";
import { expect } from "chai";
import { Signature, TypedDataEncoder, Wallet, concat, id as keccakId, toBeHex } from "ethers";
import fc from "fast-check";
import type { NodeKeys, WithdrawArgs } from "../../protocol/index.js";
import {
  CHANNEL_HUB_EIP712_TYPES,
  UINT256_MAX,
  WITHDRAW_TYPEHASH,
  channelHubDomain,
  generateNodeKeys,
  recoverWithdrawSigner,
  signWithdraw,
  verifyWithdrawSignature,
  withdrawDigest,
} from "../../protocol/index.js";
import { expectCode } from "./helpers.js";

const HUB = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const OTHER_HUB = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512";
const SECP256K1_N = BigInt("0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");

const withdrawTypes = { Withdraw: [...CHANNEL_HUB_EIP712_TYPES.Withdraw] };

function ethersDigest(args: WithdrawArgs): string {
  const { chainId, hub, ...message } = args;
  return TypedDataEncoder.hash(channelHubDomain(chainId, hub), withdrawTypes, message);
}

describe("protocol/withdraw", () => {
  let alice: NodeKeys;
  let bob: NodeKeys;
  let args: WithdrawArgs;

  before(() => {
    alice = generateNodeKeys();
    bob = generateNodeKeys();
    args = {
      chainId: 31337n,
      hub: HUB,
      channelId: 7n,
      participant: alice.address,
      totalWithdraw: 3_000_000_000_000_000_000n,
      expiryTimestamp: 1_900_000_000n,
    };
  });

  it("WITHDRAW_TYPEHASH is keccak256 of the contract's type string", () => {
    expect(`0x${bytesToHex(WITHDRAW_TYPEHASH)}`).to.equal(
      keccakId(
        "Withdraw(uint256 channelId,address participant,uint256 totalWithdraw,uint256 expiryTimestamp)",
      ),
    );
  });

  it("digest equals ethers TypedDataEncoder.hash; ethers and eth-sig-util recover both signers", async () => {
    expect(`0x${bytesToHex(withdrawDigest(args))}`).to.equal(ethersDigest(args));
    const data: TypedMessage<MessageTypes> = {
      types: {
        EIP712Domain: [
          { name: "name", type: "string" },
          { name: "version", type: "string" },
          { name: "chainId", type: "uint256" },
          { name: "verifyingContract", type: "address" },
        ],
        Withdraw: CHANNEL_HUB_EIP712_TYPES.Withdraw.map((f) => ({ ...f })),
      },
      primaryType: "Withdraw",
      domain: { name: "QRWP ChannelHub", version: "1", chainId: 31337, verifyingContract: HUB },
      message: {
        channelId: "7",
        participant: alice.address,
        totalWithdraw: args.totalWithdraw.toString(),
        expiryTimestamp: args.expiryTimestamp.toString(),
      },
    };
    for (const keys of [alice, bob]) {
      const signature = signWithdraw(args, keys);
      const recovered = recoverTypedSignature({ data, signature, version: SignTypedDataVersion.V4 });
      expect(recovered.toLowerCase()).to.equal(keys.address.toLowerCase());
      expect(recoverWithdrawSigner(args, signature)).to.equal(keys.address);
      // ethers' wallet signs the same typed data to the same bytes (RFC 6979).
      const wallet = new Wallet(`0x${bytesToHex(keys.secp256k1PrivateKey)}`);
      const { chainId, hub, ...message } = args;
      expect(await wallet.signTypedData(channelHubDomain(chainId, hub), withdrawTypes, message)).to.equal(
        signature,
      );
    }
  });

  it("property: digests match ethers for random uint256 fields and addresses", () => {
    const u256 = fc.bigInt({ min: 0n, max: UINT256_MAX });
    const address = fc.uint8Array({ minLength: 20, maxLength: 20 }).map((b) => `0x${bytesToHex(b)}`);
    fc.assert(
      fc.property(u256, u256, u256, u256, address, address, (chainId, channelId, total, expiry, who, hub) => {
        const a: WithdrawArgs = {
          chainId,
          hub,
          channelId,
          participant: who,
          totalWithdraw: total,
          expiryTimestamp: expiry,
        };
        expect(`0x${bytesToHex(withdrawDigest(a))}`).to.equal(ethersDigest(a));
      }),
      { numRuns: 100 },
    );
  });

  it("verifyWithdrawSignature accepts both genuine signatures and refuses each changed field", () => {
    const participantSignature = signWithdraw(args, alice);
    const partnerSignature = signWithdraw(args, bob);
    verifyWithdrawSignature(args, participantSignature, alice.address, "participantSignature");
    verifyWithdrawSignature(args, partnerSignature, bob.address.toLowerCase(), "partnerSignature");
    const changed: Partial<WithdrawArgs>[] = [
      { chainId: 1n },
      { hub: OTHER_HUB },
      { channelId: 8n },
      { participant: bob.address },
      { totalWithdraw: args.totalWithdraw + 1n },
      { expiryTimestamp: args.expiryTimestamp + 1n },
    ];
    for (const c of changed) {
      const e = expectCode(
        () => verifyWithdrawSignature({ ...args, ...c }, partnerSignature, bob.address, "partnerSignature"),
        "INVALID_SIGNATURE",
      );
      expect(e.details.field).to.equal("partnerSignature");
    }
    // Another signer.
    const e = expectCode(
      () => verifyWithdrawSignature(args, participantSignature, bob.address, "partnerSignature"),
      "INVALID_SIGNATURE",
    );
    expect(e.details.recovered).to.equal(alice.address);
  });

  it("refuses malformed and high-s signatures naming the field", () => {
    const sig = Signature.from(signWithdraw(args, bob));
    const highS = concat([sig.r, toBeHex(SECP256K1_N - BigInt(sig.s), 32), sig.v === 27 ? "0x1c" : "0x1b"]);
    for (const bad of [highS, "0x", "0x1234", `${signWithdraw(args, bob)}00`]) {
      const e = expectCode(
        () => verifyWithdrawSignature(args, bad, bob.address, "partnerSignature"),
        "INVALID_SIGNATURE",
      );
      expect(e.details.field).to.equal("partnerSignature");
    }
    expectCode(() => recoverWithdrawSigner(args, highS), "INVALID_SIGNATURE");
  });

  it("validates inputs with INVALID_ARGUMENT naming the field", () => {
    const bad: [Partial<WithdrawArgs>, string][] = [
      [{ chainId: -1n }, "chainId"],
      [{ channelId: UINT256_MAX + 1n }, "channelId"],
      [{ totalWithdraw: 5 as unknown as bigint }, "totalWithdraw"],
      [{ expiryTimestamp: -1n }, "expiryTimestamp"],
      [{ participant: "0x1234" }, "participant"],
      [{ hub: "0x5fbDB2315678afecb367f032d93F642f64180aa3" }, "hub"], // bad EIP-55 checksum
    ];
    for (const [t, field] of bad) {
      const e = expectCode(() => withdrawDigest({ ...args, ...t }), "INVALID_ARGUMENT");
      expect(e.details.field).to.equal(field);
    }
    const zero = expectCode(() => signWithdraw({ ...args, totalWithdraw: 0n }, alice), "INVALID_ARGUMENT");
    expect(zero.details.field).to.equal("totalWithdraw");
    const signer = expectCode(
      () => verifyWithdrawSignature(args, signWithdraw(args, alice), "nobody"),
      "INVALID_ARGUMENT",
    );
    expect(signer.details.field).to.equal("expectedSigner");
  });
});
