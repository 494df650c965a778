// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/**
 * @title SecretRegistry
 * @notice On-chain record of when HTLC secrets were revealed (Raiden spec "SecretRegistry").
 *
 * A hash-time lock `(amount, expiration, secretHash)` with `secretHash = sha256(secret)` and a 32-byte
 * `secret` pays its receiver at {ChannelHub-unlock} only if its secret was registered here strictly
 * before `expiration` (seconds of `block.timestamp`). Anyone may register any secret; registering
 * proves that the secret was public at that time, which is all the hub needs.
 *
 * The zero secret is never registered, and a secret hash keeps its first registration time.
 */
contract SecretRegistry {
    /// @notice `secret` was registered; its hash `secretHash = sha256(secret)` is now revealed.
    event SecretRevealed(bytes32 indexed secretHash, bytes32 secret);

    mapping(bytes32 secretHash => uint256 timestamp) private _revealedAt;

    /**
     * @notice Registers `secret`: stores `sha256(secret) -> block.timestamp`.
     * @dev No-op returning false for the zero secret or a hash that is already registered (the first
     * registration time is kept). Emits {SecretRevealed} when it registers.
     * @param secret The 32-byte secret (HTLC preimage).
     * @return True if the secret was newly registered by this call.
     */
    function registerSecret(bytes32 secret) external returns (bool) {
        return _registerSecret(secret);
    }

    /**
     * @notice Registers every secret of `secrets` (see {registerSecret}); zero or already registered
     * secrets are skipped, the others are still registered.
     * @dev Emits one {SecretRevealed} per newly registered secret.
     * @param secrets The 32-byte secrets.
     * @return True if every secret was newly registered by this call (true for an empty array).
     */
    function registerSecretBatch(bytes32[] calldata secrets) external returns (bool) {
        bool allRegistered = true;
        uint256 count = secrets.length;
        for (uint256 i = 0; i < count; ++i) {
            if (!_registerSecret(secrets[i])) allRegistered = false;
        }
        return allRegistered;
    }

    /**
     * @notice When the secret of `secretHash` was registered.
     * @param secretHash sha256 of the secret.
     * @return The `block.timestamp` of the registration, 0 if it was never registered.
     */
    function getSecretRevealTimestamp(bytes32 secretHash) external view returns (uint256) {
        return _revealedAt[secretHash];
    }

    function _registerSecret(bytes32 secret) private returns (bool) {
        if (secret == bytes32(0)) return false;
        bytes32 secretHash = sha256(abi.encodePacked(secret));
        if (_revealedAt[secretHash] != 0) return false;
        _revealedAt[secretHash] = block.timestamp;
        emit SecretRevealed(secretHash, secret);
        return true;
    }
}
