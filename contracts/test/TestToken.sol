// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/**
 * @title TestToken
 * @notice TEST ONLY: an 18-decimal ERC-20 anyone can mint. Never deploy to a real network.
 */
contract TestToken is ERC20 {
    constructor() ERC20("QRWP Test Token", "QTT") {}

    /**
     * @notice Mints `amount` base units to `to`. Open to anyone (test token).
     * @param to The receiver.
     * @param amount Token base units.
     */
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
