/**
 * The `Processed` acknowledgement of x402 direct streaming (protocol/balance-proof.ts `processedDigest`): the
 * EIP-712 digest equals ethers' and eth-sig-util's, the receiver's secp256k1 signature round-trips through
 * `recoverDigestSigner`, and an acknowledgement does not carry over to any other proof, domain or signer.
 */
import { SignTypedDataVersion, recoverTypedSignature } from "@metamask/eth-sig-util";
import { bytesToHex } from "@noble/hashes/utils.js";
import { expect } from "chai";
import { TypedDataEncoder, keccak256 } from "ethers";
import {
  CHANNEL_HUB_EIP712_TYPES,
  EMPTY_LOCKS_ROOT,
  balanceHash,
  balanceProofDigest,
  channelHubDomain,
  generateNodeKeys,
  processedDigest,
  recoverDigestSigner,
  signDigest,
  type BalanceProof,
  type NodeKeys,
} from "../../protocol/index.js";
import { expectCode } from "./helpers.js";

const HUB = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const OTHER_HUB = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512";

describe("protocol/balance-proof: Processed acknowledgement", () => {
  let receiver: NodeKeys;
  let other: NodeKeys;
  const proof: BalanceProof = {
    chainId: 31337n,
    hub: HUB,
    channelId: 12n,
    nonce: 5n,
    transferredAmount: 10_000_000_000_000_000n,
    lockedAmount: 0n,
    locksRoot: EMPTY_LOCKS_ROOT,
  };

  before(() => {
    receiver = generateNodeKeys();
    other = generateNodeKeys();
  });

  it("the digest is EIP-712 Processed(channelId, nonce, balanceHash) under the hub's domain (ethers, eth-sig-util)", () => {
    const message = { channelId: proof.channelId, nonce: proof.nonce, balanceHash: balanceHash(proof) };
    const ethersDigest = TypedDataEncoder.hash(
      channelHubDomain(proof.chainId, proof.hub),
      { Processed: [...CHANNEL_HUB_EIP712_TYPES.Processed] },
      message,
    );
    expect(`0x${bytesToHex(processedDigest(proof))}`).to.equal(ethersDigest);
    // Same fields as BalanceProof, another type hash: an acknowledgement is never a balance-proof signature.
    expect(bytesToHex(processedDigest(proof))).to.not.equal(bytesToHex(balanceProofDigest(proof)));
    const signature = signDigest(processedDigest(proof), receiver.secp256k1PrivateKey);
    const recovered = recoverTypedSignature({
      data: {
        types: {
          EIP712Domain: [
            { name: "name", type: "string" },
            { name: "version", type: "string" },
            { name: "chainId", type: "uint256" },
            { name: "verifyingContract", type: "address" },
          ],
          Processed: CHANNEL_HUB_EIP712_TYPES.Processed.map((f) => ({ ...f })),
        },
        primaryType: "Processed",
        domain: { name: "QRWP ChannelHub", version: "1", chainId: 31337, verifyingContract: HUB },
        message: { channelId: "12", nonce: "5", balanceHash: balanceHash(proof) },
      },
      signature,
      version: SignTypedDataVersion.V4,
    });
    expect(recovered.toLowerCase()).to.equal(receiver.address.toLowerCase());
  });

  it("round trip: the receiver's signature recovers the receiver", () => {
    const signature = signDigest(processedDigest(proof), receiver.secp256k1PrivateKey);
    expect(recoverDigestSigner(processedDigest({ ...proof }), signature)).to.equal(receiver.address);
    // RFC 6979: signing the same acknowledgement twice gives the same bytes (an idempotent HTTP answer).
    expect(signDigest(processedDigest(proof), receiver.secp256k1PrivateKey)).to.equal(signature);
  });

  it("a tampered field (channel, nonce, any balance datum, chain, hub) or another signer does not verify", () => {
    const signature = signDigest(processedDigest(proof), receiver.secp256k1PrivateKey);
    const tampered: Partial<BalanceProof>[] = [
      { channelId: 13n },
      { nonce: 6n },
      { transferredAmount: proof.transferredAmount + 1n },
      { lockedAmount: 1n },
      { locksRoot: keccak256("0x01") },
      { chainId: 1n },
      { hub: OTHER_HUB },
    ];
    for (const t of tampered) {
      expect(
        recoverDigestSigner(processedDigest({ ...proof, ...t }), signature),
        Object.keys(t).join(),
      ).to.not.equal(receiver.address);
    }
    const forged = signDigest(processedDigest(proof), other.secp256k1PrivateKey);
    expect(recoverDigestSigner(processedDigest(proof), forged)).to.not.equal(receiver.address);
    const flipped = `${signature.slice(0, 10)}${signature[10] === "0" ? "1" : "0"}${signature.slice(11)}`;
    let ok = false;
    try {
      ok = recoverDigestSigner(processedDigest(proof), flipped) === receiver.address;
    } catch (err) {
      expect((err as { code?: string }).code).to.equal("INVALID_SIGNATURE");
    }
    expect(ok).to.equal(false);
  });

  it("malformed fields are INVALID_ARGUMENT naming the field", () => {
    expect(
      expectCode(() => processedDigest({ ...proof, nonce: -1n }), "INVALID_ARGUMENT").details.field,
    ).to.equal("nonce");
    expect(
      expectCode(() => processedDigest({ ...proof, hub: "0x12" }), "INVALID_ARGUMENT").details.field,
    ).to.equal("hub");
  });
});
