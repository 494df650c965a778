// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Bridge} from "../bridge/Bridge.sol";
import {SecretRegistry} from "./SecretRegistry.sol";

/**
 * @title ChannelHub
 * @notice Raiden-style bidirectional payment channels (ETH and any ERC-20) settling through the {Bridge}.
 *
 * Lifecycle: {openChannel} -> {setTotalDeposit} -> (off-chain transfers, {setTotalWithdraw} while open)
 * -> {cooperativeSettle}, or {closeChannel} -> contest window ({updateNonClosingBalanceProof}) ->
 * {settleChannel} -> {unlock} of the pending locks kept at settlement.
 *
 * Balance proofs are per direction: the SENDER signs, as EIP-712 typed data on this contract's domain
 * (name "QRWP ChannelHub", version "1", chainId, this address),
 * `BalanceProof(uint256 channelId,uint256 nonce,bytes32 balanceHash)` with
 * `balanceHash = keccak256(abi.encode(uint256 transferredAmount, uint256 lockedAmount, bytes32 locksRoot))`.
 * The blinded balance hash lets watchtowers check proofs without learning amounts (Raiden spec).
 * A balance proof with nonce 0 means "nothing transferred": balanceHash 0 and no signature.
 *
 * Withdraws (Raiden's `setTotalWithdraw`): both participants sign
 * `Withdraw(uint256 channelId,address participant,uint256 totalWithdraw,uint256 expiryTimestamp)` on the
 * same domain; the total withdraw per participant is monotonic, and what a channel holds is always
 * `deposit1 + deposit2 - withdraw1 - withdraw2` (settlement and cooperative settle pay exactly that).
 *
 * Pending hash-time locks (HTLCs): a lock is `(uint256 amount, uint256 expiration, bytes32 secretHash)`,
 * packed as `abi.encodePacked(amount, expiration, secretHash)` (96 bytes); a direction's
 * `locksRoot = keccak256(concat(packed locks))`, or bytes32(0) with no locks; at most {MAX_PENDING_LOCKS}.
 * A lock pays its receiver iff its secret was registered in the {SecretRegistry} at a time
 * `0 < registeredAt < expiration` (seconds); otherwise it goes back to its sender.
 *
 * Channel ids come from a counter starting at 1. At most one unsettled channel exists per
 * (participant pair, token); a new one can be opened once the previous one is settled.
 *
 * Settle timeouts are seconds of `block.timestamp`, bounded by {MIN_SETTLE_TIMEOUT} and {MAX_SETTLE_TIMEOUT}.
 *
 * Payouts that fail (an ETH receiver that reverts, a token that blocks the receiver) do not block
 * settlement for the partner: the amount is kept as a deferred payout the receiver claims later with
 * {claimDeferredPayout}.
 */
contract ChannelHub is EIP712, ReentrancyGuard {
    /// @notice Channel state. `None` means the channel id was never used.
    enum ChannelState {
        None,
        Opened,
        Closed,
        Settled
    }

    /// @notice Everything known about a channel (see {getChannel}).
    struct ChannelInfo {
        address participant1;
        address participant2;
        address token;
        uint256 settleTimeoutSeconds;
        ChannelState state;
        address closingParticipant;
        uint256 closedAt;
    }

    /// @notice A participant's deposit, total withdraw and the balance proof stored for them (what THEY
    /// transferred). Amounts in token base units.
    struct ParticipantInfo {
        uint256 totalDeposit;
        uint256 totalWithdraw;
        uint256 nonce;
        bytes32 balanceHash;
    }

    /// @notice Pending locks of a participant kept by the hub at settlement, for a later unlock.
    struct LockedBalance {
        uint256 lockedAmount;
        bytes32 locksRoot;
    }

    /// @dev Storage layout of a channel (3 slots plus the token slot).
    struct Channel {
        address participant1;
        uint64 settleTimeoutSeconds;
        ChannelState state;
        address participant2;
        uint64 closedAt;
        address token;
        address closingParticipant;
    }

    /// @dev Balance data revealed at settlement for one participant (what THAT participant transferred).
    struct BalanceData {
        address participant;
        uint256 transferredAmount;
        uint256 lockedAmount;
        bytes32 locksRoot;
    }

    /// @dev Deposit and total withdraw of both participants (channel order), read at settlement.
    struct Funds {
        uint256 deposit1;
        uint256 withdrawn1;
        uint256 deposit2;
        uint256 withdrawn2;
    }

    /// @dev Result of {_settlementAmounts}: payouts and locked amounts per participant (channel order).
    struct Settlement {
        uint256 amount1;
        uint256 amount2;
        uint256 locked1;
        uint256 locked2;
    }

    /// @notice Shortest settle timeout accepted by {openChannel}: 10 seconds (devnets and tests).
    uint256 public constant MIN_SETTLE_TIMEOUT = 10;
    /// @notice Longest settle timeout accepted by {openChannel}: 365 days.
    uint256 public constant MAX_SETTLE_TIMEOUT = 365 days;
    /// @notice Most pending locks per direction accepted by {unlock} (bounds its gas).
    uint256 public constant MAX_PENDING_LOCKS = 160;
    /// @dev Size of one packed lock: amount, expiration, secretHash.
    uint256 private constant _PACKED_LOCK_BYTES = 96;

    /// @notice EIP-712 type hash of `BalanceProof(uint256 channelId,uint256 nonce,bytes32 balanceHash)`.
    bytes32 public constant BALANCE_PROOF_TYPEHASH =
        keccak256("BalanceProof(uint256 channelId,uint256 nonce,bytes32 balanceHash)");
    /// @notice EIP-712 type hash of the non-closer's counter-signature authorising a contest.
    bytes32 public constant BALANCE_PROOF_UPDATE_TYPEHASH =
        keccak256(
            "BalanceProofUpdate(uint256 channelId,uint256 nonce,bytes32 balanceHash,bytes closingSignature)"
        );
    /// @notice EIP-712 type hash of the cooperative settle message signed by both participants.
    bytes32 public constant COOPERATIVE_SETTLE_TYPEHASH =
        keccak256(
            "CooperativeSettle(uint256 channelId,address participant1,uint256 participant1Amount,address participant2,uint256 participant2Amount)"
        );
    /// @notice EIP-712 type hash of the withdraw message signed by both participants ({setTotalWithdraw}).
    bytes32 public constant WITHDRAW_TYPEHASH =
        keccak256("Withdraw(uint256 channelId,address participant,uint256 totalWithdraw,uint256 expiryTimestamp)");

    /// @dev A participant address is zero, or both participants are the same.
    error ChannelHubInvalidParticipants(address participant1, address participant2);
    /// @dev The settle timeout is outside [MIN_SETTLE_TIMEOUT, MAX_SETTLE_TIMEOUT].
    error ChannelHubInvalidSettleTimeout(uint256 settleTimeoutSeconds);
    /// @dev The token is not a contract (and not address(0) for ETH).
    error ChannelHubInvalidToken(address token);
    /// @dev An unsettled channel already exists for this pair and token.
    error ChannelHubChannelAlreadyOpen(uint256 channelId);
    /// @dev The channel is in `state`, which does not allow the operation.
    error ChannelHubInvalidChannelState(uint256 channelId, ChannelState state);
    /// @dev `account` is not a participant of the channel (or not the expected one).
    error ChannelHubNotParticipant(uint256 channelId, address account);
    /// @dev The requested total deposit does not exceed the current one.
    error ChannelHubDepositNotIncreasing(
        uint256 channelId,
        address participant,
        uint256 currentTotalDeposit,
        uint256 requestedTotalDeposit
    );
    /// @dev The channel's total deposit would overflow uint256.
    error ChannelHubDepositOverflow(uint256 channelId);
    /// @dev `msg.value` does not match the deposit increase (ETH) or is not zero (ERC-20).
    error ChannelHubInvalidDepositValue(uint256 expectedValue, uint256 value);
    /// @dev A signature did not recover to `expectedSigner`.
    error ChannelHubInvalidSignature(uint256 channelId, address expectedSigner);
    /// @dev A nonce-0 balance proof with a balance hash or signature, or a nonce > 0 with a zero balance hash.
    error ChannelHubInvalidBalanceProof(uint256 channelId, uint256 nonce, bytes32 balanceHash);
    /// @dev The contest nonce does not exceed the stored nonce.
    error ChannelHubStaleNonce(uint256 channelId, uint256 storedNonce, uint256 nonce);
    /// @dev `account` is not the participant who closed the channel.
    error ChannelHubNotClosingParticipant(uint256 channelId, address account);
    /// @dev The contest window ended at `deadline` (inclusive).
    error ChannelHubContestWindowExpired(uint256 channelId, uint256 deadline);
    /// @dev The channel can be settled only after `deadline` (exclusive).
    error ChannelHubSettleTimeoutNotExpired(uint256 channelId, uint256 deadline);
    /// @dev The balance data given for `participant` does not hash to the stored balance hash.
    error ChannelHubInvalidBalanceData(uint256 channelId, address participant);
    /// @dev Cooperative settle amounts do not sum to what the channel holds (deposits minus withdraws).
    error ChannelHubInvalidSettleAmounts(
        uint256 channelId,
        uint256 channelFunds,
        uint256 participant1Amount,
        uint256 participant2Amount
    );
    /// @dev There is no deferred payout for the caller in `token`.
    error ChannelHubNoDeferredPayout(address account, address token);
    /// @dev No locked amount of `sender` is kept for the channel (not settled with locks, or already unlocked).
    error ChannelHubNothingToUnlock(uint256 channelId, address sender);
    /// @dev The packed locks are malformed (length), too many, or do not hash to the kept `locksRoot`.
    error ChannelHubInvalidLocks(uint256 channelId, address sender, bytes32 locksRoot);
    /// @dev The withdraw message expired: `block.timestamp` is past `expiryTimestamp` (seconds).
    error ChannelHubWithdrawExpired(uint256 channelId, uint256 expiryTimestamp);
    /// @dev The requested total withdraw does not exceed the stored one (also: a replayed withdraw message).
    error ChannelHubWithdrawNotIncreasing(
        uint256 channelId,
        address participant,
        uint256 currentTotalWithdraw,
        uint256 requestedTotalWithdraw
    );
    /// @dev Both total withdraws together would exceed both total deposits together: `participant` may
    /// withdraw at most `maxTotalWithdraw` (deposit1 + deposit2 - the partner's total withdraw).
    error ChannelHubWithdrawExceedsDeposits(
        uint256 channelId,
        address participant,
        uint256 maxTotalWithdraw,
        uint256 requestedTotalWithdraw
    );

    /// @notice Channel `channelId` was opened.
    event ChannelOpened(
        uint256 indexed channelId,
        address indexed participant1,
        address indexed participant2,
        address token,
        uint256 settleTimeoutSeconds
    );
    /// @notice `participant`'s total deposit in `channelId` is now `totalDeposit`.
    event ChannelNewDeposit(uint256 indexed channelId, address indexed participant, uint256 totalDeposit);
    /// @notice `participant`'s total withdraw in `channelId` is now `totalWithdraw` (base units); the increase
    /// over the previous total was paid out to `participant` (or deferred, see {PayoutDeferred}).
    event ChannelWithdraw(uint256 indexed channelId, address indexed participant, uint256 totalWithdraw);
    /// @notice `closingParticipant` closed the channel with the partner's balance proof (`nonce`, `balanceHash`).
    event ChannelClosed(
        uint256 indexed channelId,
        address indexed closingParticipant,
        uint256 nonce,
        bytes32 balanceHash
    );
    /// @notice The closer's balance proof was replaced by a newer one (`nonce`, `balanceHash`).
    event NonClosingBalanceProofUpdated(
        uint256 indexed channelId,
        address indexed closingParticipant,
        uint256 nonce,
        bytes32 balanceHash
    );
    /// @notice The channel was settled. Amounts are for the channel's participant1 and participant2
    /// (the order of {getChannel}); `cooperative` is true for {cooperativeSettle}.
    event ChannelSettled(
        uint256 indexed channelId,
        uint256 participant1Amount,
        uint256 participant2Amount,
        bool cooperative
    );
    /// @notice `sender`'s pending locks kept at settlement were unlocked: `unlockedAmount` went to
    /// `receiver` (locks whose secret was registered in time), `returnedAmount` back to `sender`.
    event ChannelUnlocked(
        uint256 indexed channelId,
        address indexed sender,
        address receiver,
        bytes32 locksRoot,
        uint256 unlockedAmount,
        uint256 returnedAmount
    );
    /// @notice A payout to `account` failed and is kept for {claimDeferredPayout}.
    event PayoutDeferred(address indexed account, address indexed token, uint256 amount);
    /// @notice `account` claimed a deferred payout, sent to `to`.
    event DeferredPayoutClaimed(address indexed account, address indexed token, address to, uint256 amount);

    Bridge private immutable _bridge;
    SecretRegistry private immutable _secretRegistry;
    uint256 private _channelCounter;
    mapping(uint256 channelId => Channel) private _channels;
    mapping(uint256 channelId => mapping(address participant => ParticipantInfo)) private _participants;
    mapping(uint256 channelId => mapping(address participant => LockedBalance)) private _lockedBalances;
    mapping(bytes32 pairKey => uint256 channelId) private _openChannelIds;
    mapping(address account => mapping(address token => uint256 amount)) private _deferredPayouts;

    /// @param bridge_ The {Bridge} holding the funds; this hub must be registered there as a module.
    /// @param secretRegistry_ The {SecretRegistry} that {unlock} reads secret reveal times from.
    constructor(address bridge_, address secretRegistry_) EIP712("QRWP ChannelHub", "1") {
        _bridge = Bridge(payable(bridge_));
        _secretRegistry = SecretRegistry(secretRegistry_);
    }

    // ----------------------------------------------------------------------------------------------
    // Views
    // ----------------------------------------------------------------------------------------------

    /// @notice The {Bridge} holding this hub's funds.
    /// @return The Bridge address.
    function bridge() external view returns (address) {
        return address(_bridge);
    }

    /// @notice The {SecretRegistry} that decides which pending locks {unlock} pays to their receiver.
    /// @return The SecretRegistry address.
    function secretRegistry() external view returns (address) {
        return address(_secretRegistry);
    }

    /// @notice The last channel id handed out (0 before the first channel).
    /// @return The channel counter.
    function channelCounter() external view returns (uint256) {
        return _channelCounter;
    }

    /// @notice The EIP-712 domain separator (binds name, version, chainId and this hub's address).
    /// @return The domain separator.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /**
     * @notice The unsettled channel of the pair (`a`, `b`) (either order) for `token`, or 0 if none.
     * @param a One participant.
     * @param b The other participant.
     * @param token The ERC-20 token, or address(0) for ETH.
     * @return The channel id, 0 if there is none.
     */
    function openChannelIdOf(address a, address b, address token) external view returns (uint256) {
        return _openChannelIds[_pairKey(a, b, token)];
    }

    /**
     * @notice Everything about channel `channelId` (state None and zero fields if it does not exist).
     * @param channelId The channel id.
     * @return info Participants, token, settle timeout (seconds), state, closer, close time (seconds).
     */
    function getChannel(uint256 channelId) external view returns (ChannelInfo memory info) {
        Channel storage channel = _channels[channelId];
        info = ChannelInfo({
            participant1: channel.participant1,
            participant2: channel.participant2,
            token: channel.token,
            settleTimeoutSeconds: channel.settleTimeoutSeconds,
            state: channel.state,
            closingParticipant: channel.closingParticipant,
            closedAt: channel.closedAt
        });
    }

    /**
     * @notice A participant's total deposit and total withdraw (token base units) and the balance proof
     * stored for them.
     * @param channelId The channel id.
     * @param participant The participant.
     * @return The participant's deposit, total withdraw, stored nonce and balance hash.
     */
    function getParticipant(
        uint256 channelId,
        address participant
    ) external view returns (ParticipantInfo memory) {
        return _participants[channelId][participant];
    }

    /**
     * @notice Pending locks of `participant` kept by the hub when the channel settled (for a later unlock).
     * @param channelId The channel id.
     * @param participant The participant who had sent the locked transfers.
     * @return The locked amount (token base units) and its locksroot.
     */
    function getLockedBalance(
        uint256 channelId,
        address participant
    ) external view returns (LockedBalance memory) {
        return _lockedBalances[channelId][participant];
    }

    /**
     * @notice The amount of `token` owed to `account` after a failed payout.
     * @param account The receiver of the failed payout.
     * @param token The ERC-20 token, or address(0) for ETH.
     * @return The deferred amount in token base units.
     */
    function deferredPayoutOf(address account, address token) external view returns (uint256) {
        return _deferredPayouts[account][token];
    }

    // ----------------------------------------------------------------------------------------------
    // Lifecycle
    // ----------------------------------------------------------------------------------------------

    /**
     * @notice Opens a channel between `participant1` and `participant2` for `token`. Anyone may call.
     * @dev Reverts with {ChannelHubInvalidParticipants} (zero or equal participants),
     * {ChannelHubInvalidToken} (non-contract token other than address(0)), {ChannelHubInvalidSettleTimeout}
     * and {ChannelHubChannelAlreadyOpen} (an unsettled channel exists for the pair and token).
     * Emits {ChannelOpened}.
     * @param participant1 One participant.
     * @param participant2 The other participant.
     * @param token The ERC-20 token, or address(0) for ETH.
     * @param settleTimeoutSeconds Contest window after a close, in seconds.
     * @return channelId The new channel's id.
     */
    function openChannel(
        address participant1,
        address participant2,
        address token,
        uint256 settleTimeoutSeconds
    ) external returns (uint256 channelId) {
        if (participant1 == address(0) || participant2 == address(0) || participant1 == participant2) {
            revert ChannelHubInvalidParticipants(participant1, participant2);
        }
        if (token != address(0) && token.code.length == 0) revert ChannelHubInvalidToken(token);
        if (settleTimeoutSeconds < MIN_SETTLE_TIMEOUT || settleTimeoutSeconds > MAX_SETTLE_TIMEOUT) {
            revert ChannelHubInvalidSettleTimeout(settleTimeoutSeconds);
        }
        bytes32 key = _pairKey(participant1, participant2, token);
        uint256 existing = _openChannelIds[key];
        if (existing != 0) revert ChannelHubChannelAlreadyOpen(existing);

        channelId = ++_channelCounter;
        _openChannelIds[key] = channelId;
        _channels[channelId] = Channel({
            participant1: participant1,
            // Cannot truncate: bounded by MAX_SETTLE_TIMEOUT above.
            settleTimeoutSeconds: uint64(settleTimeoutSeconds),
            state: ChannelState.Opened,
            participant2: participant2,
            closedAt: 0,
            token: token,
            closingParticipant: address(0)
        });
        emit ChannelOpened(channelId, participant1, participant2, token, settleTimeoutSeconds);
    }

    /**
     * @notice Raises `participant`'s total deposit to `totalDeposit` (monotonic, so retries are idempotent).
     * The caller pays the increase `totalDeposit - current` and may deposit for either participant.
     * @dev ERC-20: the caller must have approved the BRIDGE for the increase, and `msg.value` must be 0.
     * ETH: `msg.value` must equal the increase. Opened channels only.
     * Reverts with {ChannelHubInvalidChannelState}, {ChannelHubNotParticipant},
     * {ChannelHubDepositNotIncreasing}, {ChannelHubInvalidDepositValue}. Emits {ChannelNewDeposit}.
     * @param channelId The channel id.
     * @param participant The participant credited.
     * @param totalDeposit The new total deposit, token base units (wei for ETH).
     */
    function setTotalDeposit(
        uint256 channelId,
        address participant,
        uint256 totalDeposit
    ) external payable nonReentrant {
        Channel storage channel = _requireState(channelId, ChannelState.Opened);
        address partner = _partnerOf(channelId, channel, participant);
        ParticipantInfo storage info = _participants[channelId][participant];
        uint256 current = info.totalDeposit;
        if (totalDeposit <= current) {
            revert ChannelHubDepositNotIncreasing(channelId, participant, current, totalDeposit);
        }
        uint256 increase;
        unchecked {
            // Cannot underflow: totalDeposit > current.
            increase = totalDeposit - current;
        }
        address token = channel.token;
        uint256 expectedValue = token == address(0) ? increase : 0;
        if (msg.value != expectedValue) revert ChannelHubInvalidDepositValue(expectedValue, msg.value);
        // The channel's total deposit must fit in uint256 so settlement arithmetic cannot overflow.
        if (totalDeposit > type(uint256).max - _participants[channelId][partner].totalDeposit) {
            revert ChannelHubDepositOverflow(channelId);
        }

        info.totalDeposit = totalDeposit;
        emit ChannelNewDeposit(channelId, participant, totalDeposit);

        if (token == address(0)) {
            _bridge.depositEth{value: increase}();
        } else {
            _bridge.depositFrom(token, msg.sender, increase);
        }
    }

    /**
     * @notice Raises `participant`'s total withdraw to `totalWithdraw` and pays the increase out to
     * `participant`, without closing the channel. Both participants sign the same EIP-712
     * `Withdraw(uint256 channelId,address participant,uint256 totalWithdraw,uint256 expiryTimestamp)`;
     * anyone may submit. The total is monotonic, so a message is used at most once (Raiden spec,
     * `setTotalWithdraw`).
     * @dev Opened channels only (a withdraw racing a close is refused); `block.timestamp <= expiryTimestamp`;
     * `totalWithdraw` > the stored total withdraw; `totalWithdraw + partner's total withdraw <=
     * deposit1 + deposit2`. Whether the participant's off-chain balance covers the withdraw is for the partner
     * to check before signing. A failed payout is deferred ({claimDeferredPayout}).
     * Reverts with {ChannelHubInvalidChannelState}, {ChannelHubNotParticipant}, {ChannelHubWithdrawExpired},
     * {ChannelHubWithdrawNotIncreasing}, {ChannelHubWithdrawExceedsDeposits}, {ChannelHubInvalidSignature}.
     * Emits {ChannelWithdraw}.
     * @param channelId The channel id.
     * @param participant The participant whose total withdraw is raised and who is paid.
     * @param totalWithdraw The new total withdraw, token base units (wei for ETH).
     * @param expiryTimestamp Last `block.timestamp` (seconds) at which the message is accepted.
     * @param participantSignature `participant`'s 65-byte signature (r || s || v).
     * @param partnerSignature The partner's 65-byte signature (r || s || v) over the same digest.
     */
    function setTotalWithdraw(
        uint256 channelId,
        address participant,
        uint256 totalWithdraw,
        uint256 expiryTimestamp,
        bytes calldata participantSignature,
        bytes calldata partnerSignature
    ) external nonReentrant {
        Channel storage channel = _requireState(channelId, ChannelState.Opened);
        address partner = _partnerOf(channelId, channel, participant);
        if (block.timestamp > expiryTimestamp) revert ChannelHubWithdrawExpired(channelId, expiryTimestamp);
        uint256 increase = _withdrawIncrease(channelId, participant, partner, totalWithdraw);
        bytes32 digest = _hashTypedDataV4(
            keccak256(abi.encode(WITHDRAW_TYPEHASH, channelId, participant, totalWithdraw, expiryTimestamp))
        );
        _requireSigner(channelId, digest, participantSignature, participant);
        _requireSigner(channelId, digest, partnerSignature, partner);

        _participants[channelId][participant].totalWithdraw = totalWithdraw;
        emit ChannelWithdraw(channelId, participant, totalWithdraw);

        _payout(channel.token, participant, increase);
    }

    /**
     * @notice Settles an opened channel at once with amounts both participants signed
     * (EIP-712 `CooperativeSettle`). Anyone may submit. Participants may be given in either order;
     * the signatures cover the order given.
     * @dev Amounts must sum exactly to what the channel holds: deposit1 + deposit2 - withdraw1 - withdraw2
     * (the participants' amounts are what is left to each after their withdraws). Reverts with
     * {ChannelHubInvalidChannelState}, {ChannelHubNotParticipant}, {ChannelHubInvalidSettleAmounts},
     * {ChannelHubInvalidSignature}. Emits {ChannelSettled} with `cooperative` true.
     * @param channelId The channel id.
     * @param participant1 A participant.
     * @param participant1Amount What `participant1` receives, token base units.
     * @param participant2 The other participant.
     * @param participant2Amount What `participant2` receives, token base units.
     * @param participant1Signature `participant1`'s 65-byte signature (r || s || v).
     * @param participant2Signature `participant2`'s 65-byte signature (r || s || v).
     */
    function cooperativeSettle(
        uint256 channelId,
        address participant1,
        uint256 participant1Amount,
        address participant2,
        uint256 participant2Amount,
        bytes calldata participant1Signature,
        bytes calldata participant2Signature
    ) external nonReentrant {
        Channel storage channel = _requireState(channelId, ChannelState.Opened);
        if (_partnerOf(channelId, channel, participant1) != participant2) {
            revert ChannelHubNotParticipant(channelId, participant2);
        }
        uint256 total = _channelFunds(
            _participants[channelId][participant1],
            _participants[channelId][participant2]
        );
        if (participant1Amount > total || participant2Amount != total - participant1Amount) {
            revert ChannelHubInvalidSettleAmounts(channelId, total, participant1Amount, participant2Amount);
        }
        bytes32 digest = _hashTypedDataV4(
            keccak256(
                abi.encode(
                    COOPERATIVE_SETTLE_TYPEHASH,
                    channelId,
                    participant1,
                    participant1Amount,
                    participant2,
                    participant2Amount
                )
            )
        );
        _requireSigner(channelId, digest, participant1Signature, participant1);
        _requireSigner(channelId, digest, participant2Signature, participant2);

        _markSettled(channel);
        if (participant1 == channel.participant1) {
            emit ChannelSettled(channelId, participant1Amount, participant2Amount, true);
        } else {
            emit ChannelSettled(channelId, participant2Amount, participant1Amount, true);
        }

        address token = channel.token;
        _payout(token, participant1, participant1Amount);
        _payout(token, participant2, participant2Amount);
    }

    /**
     * @notice Closes an opened channel. The caller (a participant) submits the PARTNER's latest balance
     * proof, signed by the partner; nonce 0 with balanceHash 0 and an empty signature means the partner
     * transferred nothing. Starts the contest window of `settleTimeoutSeconds`.
     * @dev Reverts with {ChannelHubInvalidChannelState} (e.g. double close), {ChannelHubNotParticipant}
     * (caller not a participant, or `nonClosingParticipant` not the partner),
     * {ChannelHubInvalidBalanceProof}, {ChannelHubInvalidSignature}. Emits {ChannelClosed}.
     * @param channelId The channel id.
     * @param nonClosingParticipant The partner, signer of the balance proof.
     * @param nonce The balance proof's nonce (0 for none).
     * @param balanceHash keccak256(abi.encode(transferredAmount, lockedAmount, locksRoot)), 0 for none.
     * @param nonClosingSignature The partner's EIP-712 `BalanceProof` signature, empty for none.
     */
    function closeChannel(
        uint256 channelId,
        address nonClosingParticipant,
        uint256 nonce,
        bytes32 balanceHash,
        bytes calldata nonClosingSignature
    ) external {
        Channel storage channel = _requireState(channelId, ChannelState.Opened);
        if (_partnerOf(channelId, channel, msg.sender) != nonClosingParticipant) {
            revert ChannelHubNotParticipant(channelId, nonClosingParticipant);
        }
        if (nonce == 0) {
            if (balanceHash != bytes32(0) || nonClosingSignature.length != 0) {
                revert ChannelHubInvalidBalanceProof(channelId, nonce, balanceHash);
            }
        } else {
            if (balanceHash == bytes32(0)) revert ChannelHubInvalidBalanceProof(channelId, nonce, balanceHash);
            _requireSigner(
                channelId,
                _balanceProofDigest(channelId, nonce, balanceHash),
                nonClosingSignature,
                nonClosingParticipant
            );
        }

        channel.state = ChannelState.Closed;
        channel.closingParticipant = msg.sender;
        // Cannot truncate before the year 2^64 s.
        channel.closedAt = uint64(block.timestamp);
        ParticipantInfo storage partner = _participants[channelId][nonClosingParticipant];
        partner.nonce = nonce;
        partner.balanceHash = balanceHash;
        emit ChannelClosed(channelId, msg.sender, nonce, balanceHash);
    }

    /**
     * @notice Contest: replaces the closer's stored balance proof with a newer one during the contest
     * window. Callable by ANYONE (watchtowers) holding the closer's balance proof and the non-closer's
     * EIP-712 `BalanceProofUpdate` counter-signature over it.
     * @dev Window: block.timestamp <= closedAt + settleTimeoutSeconds. Only a strictly higher nonce than
     * the stored one replaces. Reverts with {ChannelHubInvalidChannelState}, {ChannelHubContestWindowExpired},
     * {ChannelHubNotClosingParticipant}, {ChannelHubNotParticipant}, {ChannelHubStaleNonce},
     * {ChannelHubInvalidBalanceProof}, {ChannelHubInvalidSignature}. Emits {NonClosingBalanceProofUpdated}.
     * @param channelId The channel id.
     * @param closingParticipant The closer, signer of the balance proof.
     * @param nonClosingParticipant The non-closer, signer of the counter-signature.
     * @param nonce The closer's balance proof nonce.
     * @param balanceHash The closer's balance hash.
     * @param closingSignature The closer's EIP-712 `BalanceProof` signature.
     * @param nonClosingSignature The non-closer's EIP-712 `BalanceProofUpdate` signature.
     */
    function updateNonClosingBalanceProof(
        uint256 channelId,
        address closingParticipant,
        address nonClosingParticipant,
        uint256 nonce,
        bytes32 balanceHash,
        bytes calldata closingSignature,
        bytes calldata nonClosingSignature
    ) external {
        Channel storage channel = _requireState(channelId, ChannelState.Closed);
        uint256 deadline = uint256(channel.closedAt) + channel.settleTimeoutSeconds;
        if (block.timestamp > deadline) revert ChannelHubContestWindowExpired(channelId, deadline);
        if (closingParticipant != channel.closingParticipant) {
            revert ChannelHubNotClosingParticipant(channelId, closingParticipant);
        }
        if (_partnerOf(channelId, channel, closingParticipant) != nonClosingParticipant) {
            revert ChannelHubNotParticipant(channelId, nonClosingParticipant);
        }
        ParticipantInfo storage closer = _participants[channelId][closingParticipant];
        if (nonce <= closer.nonce) revert ChannelHubStaleNonce(channelId, closer.nonce, nonce);
        if (balanceHash == bytes32(0)) revert ChannelHubInvalidBalanceProof(channelId, nonce, balanceHash);
        _requireSigner(
            channelId,
            _balanceProofDigest(channelId, nonce, balanceHash),
            closingSignature,
            closingParticipant
        );
        _requireSigner(
            channelId,
            _hashTypedDataV4(
                keccak256(
                    abi.encode(
                        BALANCE_PROOF_UPDATE_TYPEHASH,
                        channelId,
                        nonce,
                        balanceHash,
                        keccak256(closingSignature)
                    )
                )
            ),
            nonClosingSignature,
            nonClosingParticipant
        );

        closer.nonce = nonce;
        closer.balanceHash = balanceHash;
        emit NonClosingBalanceProofUpdated(channelId, closingParticipant, nonce, balanceHash);
    }

    /**
     * @notice Settles a closed channel after the contest window. Anyone may call with the balance data
     * behind each stored balance hash (what THAT participant transferred to the other); participants may
     * be given in either order. All-zero data for a participant whose stored nonce is 0.
     * @dev Callable when block.timestamp > closedAt + settleTimeoutSeconds. Amounts (Raiden spec, clamped
     * so nobody takes more than the channel holds), with R = deposit1 + deposit2 - withdraw1 - withdraw2
     * (what the channel still holds after the withdraws):
     * net1 = clamp(deposit1 - withdraw1 + transferred2 - transferred1, 0, R), net2 = R - net1;
     * locked_i = min(lockedAmount_i, net_i) stays in the hub with locksRoot_i for a later {unlock}
     * (see {getLockedBalance}); the locked amount comes out of the SENDER's own net balance;
     * amount_i = net_i - locked_i. So amount1 + amount2 + locked1 + locked2 == R exactly.
     * Reverts with {ChannelHubInvalidChannelState}, {ChannelHubSettleTimeoutNotExpired},
     * {ChannelHubNotParticipant}, {ChannelHubInvalidBalanceData}. Emits {ChannelSettled} (`cooperative` false).
     * @param channelId The channel id.
     * @param participant1 A participant.
     * @param participant1TransferredAmount What `participant1` transferred to the partner (base units).
     * @param participant1LockedAmount What `participant1` has locked in pending transfers (base units).
     * @param participant1LocksRoot The locksroot of `participant1`'s pending locks.
     * @param participant2 The other participant.
     * @param participant2TransferredAmount What `participant2` transferred to the partner (base units).
     * @param participant2LockedAmount What `participant2` has locked in pending transfers (base units).
     * @param participant2LocksRoot The locksroot of `participant2`'s pending locks.
     */
    function settleChannel(
        uint256 channelId,
        address participant1,
        uint256 participant1TransferredAmount,
        uint256 participant1LockedAmount,
        bytes32 participant1LocksRoot,
        address participant2,
        uint256 participant2TransferredAmount,
        uint256 participant2LockedAmount,
        bytes32 participant2LocksRoot
    ) external nonReentrant {
        BalanceData memory a = BalanceData(
            participant1,
            participant1TransferredAmount,
            participant1LockedAmount,
            participant1LocksRoot
        );
        BalanceData memory b = BalanceData(
            participant2,
            participant2TransferredAmount,
            participant2LockedAmount,
            participant2LocksRoot
        );
        _settle(channelId, a, b);
    }

    /**
     * @notice Pays out the pending locks `sender` had towards `receiver` when the channel settled. Anyone may
     * call, once. `locks` is the concatenation of the packed locks behind the kept locksroot, in its order:
     * `abi.encodePacked(uint256 amount, uint256 expiration, bytes32 secretHash)` per lock (96 bytes).
     * @dev A lock is unlockable iff the {SecretRegistry} recorded its secret at `0 < registeredAt < expiration`.
     * The receiver gets `min(sum of unlockable amounts, lockedAmount)`, the sender the rest of the kept
     * `lockedAmount`; the record is deleted first. No locks (empty `locks`) match a zero locksroot, so a
     * locked amount kept with locksroot 0 goes back to the sender. Failed payouts are deferred.
     * Reverts with {ChannelHubNotParticipant} (`receiver` is not `sender`'s partner),
     * {ChannelHubNothingToUnlock}, {ChannelHubInvalidLocks} (length not a multiple of 96, more than
     * {MAX_PENDING_LOCKS} locks, or keccak256(locks) != locksroot). Emits {ChannelUnlocked}.
     * @param channelId The settled channel's id.
     * @param sender The participant who sent the locked transfers (whose locked amount was kept).
     * @param receiver The other participant, paid for the locks whose secret was registered in time.
     * @param locks The packed locks, `96 * n` bytes with `n <= MAX_PENDING_LOCKS`.
     */
    function unlock(
        uint256 channelId,
        address sender,
        address receiver,
        bytes calldata locks
    ) external nonReentrant {
        Channel storage channel = _channels[channelId];
        if (_partnerOf(channelId, channel, sender) != receiver) {
            revert ChannelHubNotParticipant(channelId, receiver);
        }
        LockedBalance storage kept = _lockedBalances[channelId][sender];
        uint256 lockedAmount = kept.lockedAmount;
        if (lockedAmount == 0) revert ChannelHubNothingToUnlock(channelId, sender);
        bytes32 locksRoot = kept.locksRoot;
        uint256 length = locks.length;
        if (
            length % _PACKED_LOCK_BYTES != 0 ||
            length > MAX_PENDING_LOCKS * _PACKED_LOCK_BYTES ||
            (length == 0 ? bytes32(0) : keccak256(locks)) != locksRoot
        ) {
            revert ChannelHubInvalidLocks(channelId, sender, locksRoot);
        }

        uint256 unlockedAmount = _unlockableAmount(locks, lockedAmount);
        uint256 returnedAmount;
        unchecked {
            // Cannot underflow: _unlockableAmount returns at most lockedAmount.
            returnedAmount = lockedAmount - unlockedAmount;
        }
        delete _lockedBalances[channelId][sender];
        emit ChannelUnlocked(channelId, sender, receiver, locksRoot, unlockedAmount, returnedAmount);

        address token = channel.token;
        _payout(token, receiver, unlockedAmount);
        _payout(token, sender, returnedAmount);
    }

    /**
     * @notice Sends the caller's deferred payout of `token` (see {PayoutDeferred}) to `to`.
     * @dev Reverts with {ChannelHubNoDeferredPayout} if there is none; bubbles Bridge errors.
     * Emits {DeferredPayoutClaimed}.
     * @param token The ERC-20 token, or address(0) for ETH.
     * @param to The receiver.
     */
    function claimDeferredPayout(address token, address to) external nonReentrant {
        uint256 amount = _deferredPayouts[msg.sender][token];
        if (amount == 0) revert ChannelHubNoDeferredPayout(msg.sender, token);
        _deferredPayouts[msg.sender][token] = 0;
        emit DeferredPayoutClaimed(msg.sender, token, to, amount);
        _bridge.payout(token, to, amount);
    }

    // ----------------------------------------------------------------------------------------------
    // Internals
    // ----------------------------------------------------------------------------------------------

    function _settle(uint256 channelId, BalanceData memory a, BalanceData memory b) private {
        Channel storage channel = _requireState(channelId, ChannelState.Closed);
        uint256 deadline = uint256(channel.closedAt) + channel.settleTimeoutSeconds;
        if (block.timestamp <= deadline) revert ChannelHubSettleTimeoutNotExpired(channelId, deadline);
        if (a.participant != channel.participant1) (a, b) = (b, a);
        if (a.participant != channel.participant1) revert ChannelHubNotParticipant(channelId, a.participant);
        if (b.participant != channel.participant2) revert ChannelHubNotParticipant(channelId, b.participant);

        ParticipantInfo storage info1 = _verifyBalanceData(channelId, a);
        ParticipantInfo storage info2 = _verifyBalanceData(channelId, b);
        Settlement memory result = _settlementAmounts(
            Funds(info1.totalDeposit, info1.totalWithdraw, info2.totalDeposit, info2.totalWithdraw),
            a,
            b
        );

        _markSettled(channel);
        if (result.locked1 != 0) {
            _lockedBalances[channelId][a.participant] = LockedBalance(result.locked1, a.locksRoot);
        }
        if (result.locked2 != 0) {
            _lockedBalances[channelId][b.participant] = LockedBalance(result.locked2, b.locksRoot);
        }
        emit ChannelSettled(channelId, result.amount1, result.amount2, false);

        address token = channel.token;
        _payout(token, a.participant, result.amount1);
        _payout(token, b.participant, result.amount2);
    }

    /**
     * @dev Final amounts of a unilateral settlement (see {settleChannel}); they sum to
     * R = deposit1 + deposit2 - withdrawn1 - withdrawn2 (no overflow: the deposits' sum fits in uint256 and
     * the withdraws' sum never exceeds it).
     * net1 = clamp(deposit1 - withdrawn1 + transferred2 - transferred1, 0, R) is computed as credit - debit
     * with credit = deposit1 (+ transferred2 - transferred1 if positive) and debit = withdrawn1
     * (+ transferred1 - transferred2 if positive), both saturating at 2^256 - 1. Only one of them can
     * saturate, and then the exact result is clamped anyway: a saturated credit gives
     * 2^256 - 1 - withdrawn1 >= R (so R); a saturated debit is >= deposit1 (so 0).
     */
    function _settlementAmounts(
        Funds memory funds,
        BalanceData memory a,
        BalanceData memory b
    ) private pure returns (Settlement memory result) {
        uint256 total = funds.deposit1 + funds.deposit2 - funds.withdrawn1 - funds.withdrawn2;
        uint256 credit = funds.deposit1;
        uint256 debit = funds.withdrawn1;
        if (b.transferredAmount >= a.transferredAmount) {
            credit = _saturatingAdd(credit, b.transferredAmount - a.transferredAmount);
        } else {
            debit = _saturatingAdd(debit, a.transferredAmount - b.transferredAmount);
        }
        uint256 net1 = credit <= debit ? 0 : credit - debit;
        if (net1 > total) net1 = total;
        uint256 net2 = total - net1;
        result.locked1 = a.lockedAmount < net1 ? a.lockedAmount : net1;
        result.locked2 = b.lockedAmount < net2 ? b.lockedAmount : net2;
        result.amount1 = net1 - result.locked1;
        result.amount2 = net2 - result.locked2;
    }

    /**
     * @dev Checks `totalWithdraw` for `participant` (monotonic, and both total withdraws together at most
     * both deposits together) and returns the amount to pay out, `totalWithdraw - current`.
     */
    function _withdrawIncrease(
        uint256 channelId,
        address participant,
        address partner,
        uint256 totalWithdraw
    ) private view returns (uint256 increase) {
        ParticipantInfo storage info = _participants[channelId][participant];
        ParticipantInfo storage partnerInfo = _participants[channelId][partner];
        uint256 current = info.totalWithdraw;
        if (totalWithdraw <= current) {
            revert ChannelHubWithdrawNotIncreasing(channelId, participant, current, totalWithdraw);
        }
        // Cannot overflow (setTotalDeposit keeps the deposits' sum in uint256) nor underflow (the partner's
        // total withdraw passed this same bound, and deposits only grow).
        uint256 maxTotalWithdraw = info.totalDeposit + partnerInfo.totalDeposit - partnerInfo.totalWithdraw;
        if (totalWithdraw > maxTotalWithdraw) {
            revert ChannelHubWithdrawExceedsDeposits(channelId, participant, maxTotalWithdraw, totalWithdraw);
        }
        unchecked {
            // Cannot underflow: totalWithdraw > current.
            increase = totalWithdraw - current;
        }
    }

    /// @dev `a + b`, or 2^256 - 1 when the sum does not fit.
    function _saturatingAdd(uint256 a, uint256 b) private pure returns (uint256) {
        unchecked {
            uint256 sum = a + b;
            return sum < a ? type(uint256).max : sum;
        }
    }

    /// @dev What a channel holds: both deposits minus both total withdraws (never negative, see {setTotalWithdraw}).
    function _channelFunds(
        ParticipantInfo storage info1,
        ParticipantInfo storage info2
    ) private view returns (uint256) {
        return info1.totalDeposit + info2.totalDeposit - info1.totalWithdraw - info2.totalWithdraw;
    }

    /// @dev Checks `data` against the stored balance hash and returns the participant's stored info.
    function _verifyBalanceData(
        uint256 channelId,
        BalanceData memory data
    ) private view returns (ParticipantInfo storage info) {
        info = _participants[channelId][data.participant];
        bool valid = info.nonce == 0
            ? data.transferredAmount == 0 && data.lockedAmount == 0 && data.locksRoot == bytes32(0)
            : keccak256(abi.encode(data.transferredAmount, data.lockedAmount, data.locksRoot)) ==
                info.balanceHash;
        if (!valid) revert ChannelHubInvalidBalanceData(channelId, data.participant);
    }

    /**
     * @dev Sum of the amounts of the unlockable locks in `locks` (length already checked to be a multiple of
     * 96), capped at `cap`: it stops reading as soon as the cap is reached, so the sum cannot overflow.
     */
    function _unlockableAmount(bytes calldata locks, uint256 cap) private view returns (uint256 total) {
        SecretRegistry registry = _secretRegistry;
        uint256 end = locks.length;
        for (uint256 offset = 0; offset < end; offset += _PACKED_LOCK_BYTES) {
            uint256 amount;
            uint256 expiration;
            bytes32 secretHash;
            // Reads the three words of lock `offset / 96`; in bounds because end % 96 == 0.
            assembly ("memory-safe") {
                let p := add(locks.offset, offset)
                amount := calldataload(p)
                expiration := calldataload(add(p, 32))
                secretHash := calldataload(add(p, 64))
            }
            uint256 registeredAt = registry.getSecretRevealTimestamp(secretHash);
            if (registeredAt == 0 || registeredAt >= expiration) continue;
            // Cannot underflow: total <= cap is kept by the early return below.
            if (amount >= cap - total) return cap;
            total += amount;
        }
    }

    function _markSettled(Channel storage channel) private {
        channel.state = ChannelState.Settled;
        delete _openChannelIds[_pairKey(channel.participant1, channel.participant2, channel.token)];
    }

    /// @dev Pays through the Bridge; a failing payout is deferred so it cannot block the partner's.
    function _payout(address token, address to, uint256 amount) private {
        if (amount == 0) return;
        try _bridge.payout(token, to, amount) {} catch {
            _deferredPayouts[to][token] += amount;
            emit PayoutDeferred(to, token, amount);
        }
    }

    function _requireState(uint256 channelId, ChannelState expected) private view returns (Channel storage) {
        Channel storage channel = _channels[channelId];
        if (channel.state != expected) revert ChannelHubInvalidChannelState(channelId, channel.state);
        return channel;
    }

    /// @dev Returns the partner of `participant`, reverting if `participant` is not in the channel.
    function _partnerOf(
        uint256 channelId,
        Channel storage channel,
        address participant
    ) private view returns (address) {
        if (participant == channel.participant1) return channel.participant2;
        if (participant == channel.participant2) return channel.participant1;
        revert ChannelHubNotParticipant(channelId, participant);
    }

    function _balanceProofDigest(
        uint256 channelId,
        uint256 nonce,
        bytes32 balanceHash
    ) private view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(BALANCE_PROOF_TYPEHASH, channelId, nonce, balanceHash)));
    }

    function _requireSigner(
        uint256 channelId,
        bytes32 digest,
        bytes calldata signature,
        address expectedSigner
    ) private pure {
        (address recovered, ECDSA.RecoverError err, ) = ECDSA.tryRecoverCalldata(digest, signature);
        if (err != ECDSA.RecoverError.NoError || recovered != expectedSigner) {
            revert ChannelHubInvalidSignature(channelId, expectedSigner);
        }
    }

    function _pairKey(address a, address b, address token) private pure returns (bytes32) {
        (address low, address high) = a < b ? (a, b) : (b, a);
        return keccak256(abi.encode(low, high, token));
    }
}
