// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/**
 * @title BlockingToken
 * @notice TEST ONLY: an ERC-20 anyone can mint whose transfers to a blocked address revert (as a token with a
 * blocklist would), used to check that a failing payout to an EOA is deferred. Never deploy to a real network.
 */
contract BlockingToken is ERC20 {
    error BlockingTokenBlocked(address to);

    mapping(address account => bool) public blocked;

    constructor() ERC20("QRWP Blocking Token", "QBT") {}

    /**
     * @notice Mints `amount` base units to `to`. Open to anyone (test token).
     * @param to The receiver.
     * @param amount Token base units.
     */
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /**
     * @notice Blocks or unblocks transfers to `account`.
     * @param account The receiver.
     * @param value True to make transfers to `account` revert.
     */
    function setBlocked(address account, bool value) external {
        blocked[account] = value;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (blocked[to]) revert BlockingTokenBlocked(to);
        super._update(from, to, value);
    }
}
