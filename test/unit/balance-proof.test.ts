import type { MessageTypes, TypedMessage } from "@metamask/eth-sig-util";
import { SignTypedDataVersion, recoverTypedSignature, signTypedData } from "@metamask/eth-sig-util";
import { bytesToHex } from "@noble/hashes/utils.js";
import { expect } from "chai";
import { AbiCoder, TypedDataEncoder, hexlify, keccak256 } from "ethers";
import fc from "fast-check";
import type { BalanceProof, NodeKeys, SignedBalanceProof } from "../../protocol/index.js";
import { expectCode } from "./helpers.js";
import {
  CHANNEL_HUB_EIP712_TYPES,
  EMPTY_LOCKS_ROOT,
  UINT256_MAX,
  balanceHash,
  balanceProofDigest,
  balanceProofUpdateDigest,
  channelHubDomain,
  cooperativeSettleDigest,
  generateNodeKeys,
  recoverDigestSigner,
  signBalanceProof,
  signBalanceProofUpdate,
  signDigest,
} from "../../protocol/index.js";
import { verifyBalanceProof } from "../../protocol/index.js";

const HUB = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const OTHER_HUB = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512";

const eip712Domain = [
  { name: "name", type: "string" },
  { name: "version", type: "string" },
  { name: "chainId", type: "uint256" },
  { name: "verifyingContract", type: "address" },
];

function metamaskData(
  primaryType: keyof typeof CHANNEL_HUB_EIP712_TYPES,
  chainId: bigint,
  hub: string,
  message: Record<string, unknown>,
): TypedMessage<MessageTypes> {
  return {
    types: {
      EIP712Domain: eip712Domain,
      [primaryType]: CHANNEL_HUB_EIP712_TYPES[primaryType].map((f) => ({ ...f })),
    },
    primaryType,
    domain: { name: "QRWP ChannelHub", version: "1", chainId: Number(chainId), verifyingContract: hub },
    message,
  };
}

describe("protocol/balance-proof", () => {
  let alice: NodeKeys;
  let bob: NodeKeys;
  let proof: BalanceProof;
  let signed: SignedBalanceProof;

  before(() => {
    alice = generateNodeKeys();
    bob = generateNodeKeys();
    proof = {
      chainId: 31337n,
      hub: HUB,
      channelId: 7n,
      nonce: 3n,
      transferredAmount: 1_000_000_000_000_000_000n,
      lockedAmount: 25n,
      locksRoot: keccak256("0x1234"),
    };
    signed = signBalanceProof(proof, alice);
  });

  it("balanceHash is keccak256(abi.encode(uint256,uint256,bytes32))", () => {
    const expected = keccak256(
      AbiCoder.defaultAbiCoder().encode(
        ["uint256", "uint256", "bytes32"],
        [proof.transferredAmount, proof.lockedAmount, proof.locksRoot],
      ),
    );
    expect(balanceHash(proof)).to.equal(expected);
  });

  it("BalanceProof digest equals ethers TypedDataEncoder.hash; eth-sig-util recovers the signer", () => {
    const message = { channelId: proof.channelId, nonce: proof.nonce, balanceHash: balanceHash(proof) };
    const ethersDigest = TypedDataEncoder.hash(
      channelHubDomain(proof.chainId, proof.hub),
      { BalanceProof: [...CHANNEL_HUB_EIP712_TYPES.BalanceProof] },
      message,
    );
    expect(`0x${bytesToHex(balanceProofDigest(proof))}`).to.equal(ethersDigest);
    const data = metamaskData("BalanceProof", proof.chainId, proof.hub, {
      channelId: proof.channelId.toString(),
      nonce: proof.nonce.toString(),
      balanceHash: balanceHash(proof),
    });
    const recovered = recoverTypedSignature({
      data,
      signature: signed.signature,
      version: SignTypedDataVersion.V4,
    });
    expect(recovered.toLowerCase()).to.equal(alice.address.toLowerCase());
    // eth-sig-util signs with RFC 6979 too: byte-identical signatures.
    const theirs = signTypedData({
      privateKey: Buffer.from(alice.secp256k1PrivateKey),
      data,
      version: SignTypedDataVersion.V4,
    });
    expect(theirs).to.equal(signed.signature);
  });

  it("property: digests match ethers for random uint256 fields", () => {
    const u256 = fc.bigInt({ min: 0n, max: UINT256_MAX });
    fc.assert(
      fc.property(
        u256,
        u256,
        u256,
        fc.bigInt({ min: 0n, max: UINT256_MAX / 2n }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        (chainId, channelId, nonce, amount, root) => {
          const p: BalanceProof = {
            chainId,
            hub: HUB,
            channelId,
            nonce,
            transferredAmount: amount,
            lockedAmount: amount,
            locksRoot: hexlify(root),
          };
          const ethersDigest = TypedDataEncoder.hash(
            channelHubDomain(chainId, HUB),
            { BalanceProof: [...CHANNEL_HUB_EIP712_TYPES.BalanceProof] },
            { channelId, nonce, balanceHash: balanceHash(p) },
          );
          expect(`0x${bytesToHex(balanceProofDigest(p))}`).to.equal(ethersDigest);
        },
      ),
      { numRuns: 100 },
    );
  });

  it("BalanceProofUpdate: digest equals ethers, eth-sig-util recovers the non-closer", () => {
    const sig = signBalanceProofUpdate(proof, signed.signature, bob);
    const message = {
      channelId: proof.channelId,
      nonce: proof.nonce,
      balanceHash: balanceHash(proof),
      closingSignature: signed.signature,
    };
    const ethersDigest = TypedDataEncoder.hash(
      channelHubDomain(proof.chainId, proof.hub),
      { BalanceProofUpdate: [...CHANNEL_HUB_EIP712_TYPES.BalanceProofUpdate] },
      message,
    );
    expect(`0x${bytesToHex(balanceProofUpdateDigest(proof, signed.signature))}`).to.equal(ethersDigest);
    const data = metamaskData("BalanceProofUpdate", proof.chainId, proof.hub, {
      ...message,
      channelId: proof.channelId.toString(),
      nonce: proof.nonce.toString(),
    });
    const recovered = recoverTypedSignature({ data, signature: sig, version: SignTypedDataVersion.V4 });
    expect(recovered.toLowerCase()).to.equal(bob.address.toLowerCase());
    expect(recoverDigestSigner(balanceProofUpdateDigest(proof, signed.signature), sig)).to.equal(bob.address);
    expectCode(() => balanceProofUpdateDigest(proof, "0x1234"), "INVALID_ARGUMENT");
  });

  it("CooperativeSettle: digest equals ethers, eth-sig-util recovers both participants", () => {
    const args = {
      chainId: 1n,
      hub: HUB,
      channelId: 99n,
      participant1: alice.address,
      participant1Amount: 70n,
      participant2: bob.address.toLowerCase(),
      participant2Amount: 30n,
    };
    const digest = cooperativeSettleDigest(args);
    const { chainId: _c, hub: _h, ...message } = args;
    expect(`0x${bytesToHex(digest)}`).to.equal(
      TypedDataEncoder.hash(
        channelHubDomain(args.chainId, args.hub),
        { CooperativeSettle: [...CHANNEL_HUB_EIP712_TYPES.CooperativeSettle] },
        message,
      ),
    );
    const data = metamaskData("CooperativeSettle", args.chainId, args.hub, {
      ...message,
      channelId: "99",
      participant1Amount: "70",
      participant2Amount: "30",
    });
    for (const keys of [alice, bob]) {
      const sig = signDigest(digest, keys.secp256k1PrivateKey);
      const recovered = recoverTypedSignature({ data, signature: sig, version: SignTypedDataVersion.V4 });
      expect(recovered.toLowerCase()).to.equal(keys.address.toLowerCase());
    }
    expectCode(() => cooperativeSettleDigest({ ...args, participant2: "0x1234" }), "INVALID_ARGUMENT");
  });

  it("verifyBalanceProof accepts a genuine proof (any address spelling)", () => {
    verifyBalanceProof(signed, alice.address, alice.mldsaPublicKey);
    verifyBalanceProof(signed, alice.address.toLowerCase(), alice.mldsaPublicKey);
  });

  it("rejects a wrong signer", () => {
    const e = expectCode(
      () => verifyBalanceProof(signed, bob.address, alice.mldsaPublicKey),
      "INVALID_SIGNATURE",
    );
    expect(e.details.field).to.equal("signature");
  });

  it("rejects tampered fields", () => {
    const tampers: Partial<BalanceProof>[] = [
      { nonce: proof.nonce + 1n },
      { transferredAmount: proof.transferredAmount + 1n },
      { lockedAmount: 0n },
      { locksRoot: EMPTY_LOCKS_ROOT },
    ];
    for (const t of tampers) {
      const e = expectCode(
        () =>
          verifyBalanceProof({ ...signed, proof: { ...proof, ...t } }, alice.address, alice.mldsaPublicKey),
        "INVALID_SIGNATURE",
      );
      expect(e.details.field).to.equal("signature");
    }
  });

  it("rejects replay on another channelId, chainId or hub", () => {
    for (const t of [{ channelId: 8n }, { chainId: 1n }, { hub: OTHER_HUB }]) {
      expectCode(
        () =>
          verifyBalanceProof({ ...signed, proof: { ...proof, ...t } }, alice.address, alice.mldsaPublicKey),
        "INVALID_SIGNATURE",
      );
    }
  });

  it("rejects a bad ML-DSA signature even when the ECDSA one is valid", () => {
    const flipped = Uint8Array.from(signed.pqSignature);
    flipped[100]! ^= 1;
    const cases = [
      flipped,
      signed.pqSignature.subarray(1),
      new Uint8Array(0),
      signBalanceProof({ ...proof, nonce: 4n }, alice).pqSignature, // valid signature over another digest
    ];
    for (const pqSignature of cases) {
      const e = expectCode(
        () => verifyBalanceProof({ ...signed, pqSignature }, alice.address, alice.mldsaPublicKey),
        "INVALID_SIGNATURE",
      );
      expect(e.details.field).to.equal("pqSignature");
    }
    // wrong ML-DSA key for the signer
    const e = expectCode(
      () => verifyBalanceProof(signed, alice.address, bob.mldsaPublicKey),
      "INVALID_SIGNATURE",
    );
    expect(e.details.field).to.equal("pqSignature");
  });

  it("rejects a proof whose secp256k1 signature is malformed", () => {
    const e = expectCode(
      () =>
        verifyBalanceProof(
          { ...signed, signature: signed.signature.slice(0, -2) },
          alice.address,
          alice.mldsaPublicKey,
        ),
      "INVALID_SIGNATURE",
    );
    expect(e.details.field).to.equal("signature");
  });

  it("validates inputs with INVALID_ARGUMENT naming the field", () => {
    const bad: [Partial<BalanceProof>, string][] = [
      [{ nonce: -1n }, "nonce"],
      [{ channelId: UINT256_MAX + 1n }, "channelId"],
      [{ transferredAmount: 5 as unknown as bigint }, "transferredAmount"],
      [{ locksRoot: "0x12" }, "locksRoot"],
      [{ hub: "0x1234" }, "hub"],
      [{ hub: "0x5fbDB2315678afecb367f032d93F642f64180aa3" }, "hub"], // bad EIP-55 checksum
      [{ transferredAmount: UINT256_MAX, lockedAmount: 1n }, "lockedAmount"],
    ];
    for (const [t, field] of bad) {
      const e = expectCode(() => balanceProofDigest({ ...proof, ...t }), "INVALID_ARGUMENT");
      expect(e.details.field).to.equal(field);
    }
    expectCode(() => signBalanceProof({ ...proof, nonce: 0n }, alice), "INVALID_ARGUMENT");
    expectCode(() => verifyBalanceProof(signed, "not-an-address", alice.mldsaPublicKey), "INVALID_ARGUMENT");
  });
});
