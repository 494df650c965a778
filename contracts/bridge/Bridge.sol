// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {LowLevelCall} from "@openzeppelin/contracts/utils/LowLevelCall.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/**
 * @title Bridge
 * @notice Custody of ETH (token == address(0)) and ERC-20 tokens for every QRWP settlement module
 * (ChannelHub now; the rollups and the sidechain later).
 *
 * Funds are accounted per module: `balanceOf(module, token)`. A module can only ever pay out what was
 * deposited into it, so a bug in one module cannot drain the funds of another. Only modules registered
 * by the owner move funds. Unregistering a module freezes its balance (it stays accounted to the module
 * and becomes movable again if the module is registered again).
 *
 * Users approve the Bridge (not the module) for ERC-20 deposits; the module pulls with {depositFrom}.
 * Fee-on-transfer and other tokens whose received amount differs from the requested amount are rejected,
 * so a module's accounting always matches what the Bridge holds for it.
 */
contract Bridge is Ownable, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @dev The caller is not a registered module.
    error BridgeUnauthorizedModule(address caller);
    /// @dev The module address is invalid (zero).
    error BridgeInvalidModule(address module);
    /// @dev The module is already registered.
    error BridgeModuleAlreadyRegistered(address module);
    /// @dev The module is not registered.
    error BridgeModuleNotRegistered(address module);
    /// @dev The module's balance of `token` is `balance`, less than the `needed` payout.
    error BridgeInsufficientModuleBalance(address module, address token, uint256 balance, uint256 needed);
    /// @dev The token address is invalid for the operation (zero for an ERC-20 deposit).
    error BridgeInvalidToken(address token);
    /// @dev The payout receiver is invalid (zero).
    error BridgeInvalidReceiver(address to);
    /// @dev The Bridge received `received` instead of `expected` token units (fee-on-transfer token).
    error BridgeDepositAmountMismatch(address token, uint256 expected, uint256 received);
    /// @dev Sending `amount` wei to `to` failed.
    error BridgeEthTransferFailed(address to, uint256 amount);

    /// @notice `module` may now move funds.
    event ModuleRegistered(address indexed module);
    /// @notice `module` may no longer move funds.
    event ModuleUnregistered(address indexed module);
    /// @notice `amount` of `token` was credited to `module`, paid by `from`.
    event Deposited(address indexed module, address indexed token, address indexed from, uint256 amount);
    /// @notice `amount` of `token` was debited from `module` and sent to `to`.
    event PaidOut(address indexed module, address indexed token, address indexed to, uint256 amount);

    mapping(address module => bool registered) private _modules;
    mapping(address module => mapping(address token => uint256 amount)) private _balances;

    modifier onlyModule() {
        if (!_modules[msg.sender]) revert BridgeUnauthorizedModule(msg.sender);
        _;
    }

    /// @param initialOwner The account allowed to register and unregister modules.
    constructor(address initialOwner) Ownable(initialOwner) {}

    /**
     * @notice Allows `module` to deposit and pay out funds accounted to it.
     * @dev Owner only. Reverts with {BridgeInvalidModule} for the zero address and
     * {BridgeModuleAlreadyRegistered} if already registered. Emits {ModuleRegistered}.
     * @param module The settlement module contract.
     */
    function registerModule(address module) external onlyOwner {
        if (module == address(0)) revert BridgeInvalidModule(module);
        if (_modules[module]) revert BridgeModuleAlreadyRegistered(module);
        _modules[module] = true;
        emit ModuleRegistered(module);
    }

    /**
     * @notice Stops `module` from moving funds; its balances stay accounted to it.
     * @dev Owner only. Reverts with {BridgeModuleNotRegistered} if not registered. Emits {ModuleUnregistered}.
     * @param module The settlement module contract.
     */
    function unregisterModule(address module) external onlyOwner {
        if (!_modules[module]) revert BridgeModuleNotRegistered(module);
        _modules[module] = false;
        emit ModuleUnregistered(module);
    }

    /**
     * @notice Whether `module` is registered.
     * @param module The address to check.
     * @return True if `module` may move funds.
     */
    function isModule(address module) external view returns (bool) {
        return _modules[module];
    }

    /**
     * @notice The amount of `token` (address(0) for ETH) held for `module`, in token base units (wei for ETH).
     * @param module The settlement module.
     * @param token The ERC-20 token, or address(0) for ETH.
     * @return The module's balance.
     */
    function balanceOf(address module, address token) external view returns (uint256) {
        return _balances[module][token];
    }

    /**
     * @notice Pulls `amount` of the ERC-20 `token` from `from` (who approved the Bridge) and credits the
     * calling module.
     * @dev Module only. Reverts with {BridgeInvalidToken} for address(0) (use {depositEth}) and with
     * {BridgeDepositAmountMismatch} if the Bridge's balance did not grow by exactly `amount`.
     * Emits {Deposited}.
     * @param token The ERC-20 token.
     * @param from The payer; must have approved the Bridge for at least `amount`.
     * @param amount Token base units.
     */
    function depositFrom(address token, address from, uint256 amount) external onlyModule nonReentrant {
        if (token == address(0)) revert BridgeInvalidToken(token);
        IERC20 erc20 = IERC20(token);
        uint256 before = erc20.balanceOf(address(this));
        erc20.safeTransferFrom(from, address(this), amount);
        uint256 received = erc20.balanceOf(address(this)) - before;
        if (received != amount) revert BridgeDepositAmountMismatch(token, amount, received);
        _balances[msg.sender][token] += received;
        emit Deposited(msg.sender, token, from, received);
    }

    /**
     * @notice Credits the calling module's ETH balance with `msg.value` wei.
     * @dev Module only. Emits {Deposited} with token address(0) and `from` the module.
     */
    function depositEth() external payable onlyModule {
        _balances[msg.sender][address(0)] += msg.value;
        emit Deposited(msg.sender, address(0), msg.sender, msg.value);
    }

    /**
     * @notice Debits the calling module's balance of `token` by `amount` and sends it to `to`.
     * @dev Module only. Reverts with {BridgeInsufficientModuleBalance} if the module holds less than
     * `amount`, {BridgeInvalidReceiver} for `to` == address(0), {BridgeEthTransferFailed} if an ETH
     * transfer fails. Emits {PaidOut}.
     * @param token The ERC-20 token, or address(0) for ETH.
     * @param to The receiver.
     * @param amount Token base units (wei for ETH).
     */
    function payout(address token, address to, uint256 amount) external onlyModule nonReentrant {
        if (to == address(0)) revert BridgeInvalidReceiver(to);
        uint256 balance = _balances[msg.sender][token];
        if (balance < amount) revert BridgeInsufficientModuleBalance(msg.sender, token, balance, amount);
        unchecked {
            // Cannot underflow: checked just above.
            _balances[msg.sender][token] = balance - amount;
        }
        emit PaidOut(msg.sender, token, to, amount);
        if (token == address(0)) {
            // Ignore return data: a receiver cannot make the Bridge copy a huge revert reason.
            if (!LowLevelCall.callNoReturn(to, amount, "")) revert BridgeEthTransferFailed(to, amount);
        } else {
            IERC20(token).safeTransfer(to, amount);
        }
    }
}
