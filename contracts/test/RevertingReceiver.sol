// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

interface IChannelHubCalls {
    function closeChannel(
        uint256 channelId,
        address nonClosingParticipant,
        uint256 nonce,
        bytes32 balanceHash,
        bytes calldata nonClosingSignature
    ) external;

    function claimDeferredPayout(address token, address to) external;
}

/**
 * @title RevertingReceiver
 * @notice TEST ONLY: a channel participant contract that rejects ETH while `rejecting` is set, used to check
 * that a failing payout cannot block the partner's settlement.
 */
contract RevertingReceiver {
    error RevertingReceiverRejected();

    bool public rejecting = true;

    /// @notice Toggles whether incoming ETH is rejected.
    /// @param value True to reject ETH.
    function setRejecting(bool value) external {
        rejecting = value;
    }

    /// @notice Closes `channelId` as a participant with no partner balance proof.
    /// @param hub The ChannelHub.
    /// @param channelId The channel id.
    /// @param partner The other participant.
    function close(address hub, uint256 channelId, address partner) external {
        IChannelHubCalls(hub).closeChannel(channelId, partner, 0, bytes32(0), "");
    }

    /// @notice Claims this contract's deferred payout of `token` from `hub`, sent to `to`.
    /// @param hub The ChannelHub.
    /// @param token The token, address(0) for ETH.
    /// @param to The receiver.
    function claim(address hub, address token, address to) external {
        IChannelHubCalls(hub).claimDeferredPayout(token, to);
    }

    receive() external payable {
        if (rejecting) revert RevertingReceiverRejected();
    }
}
