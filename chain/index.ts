/**
 * chain/: what the node and the watchtower share to talk to the chain.
 *
 * Owns the deployment record (addresses, chain id, deploy block; JSON with runtime validation), the
 * deployer of Bridge + SecretRegistry + ChannelHub (+ TestToken on devnets), {@link HubClient}, the typed,
 * nonce-safe, serialised client of the ChannelHub and SecretRegistry for one signer (tests, benchmarks),
 * {@link PooledHubClient} (the same methods over an RpcPool and one TxSender: what the node uses), {@link ChainEventFollower},
 * which polls their logs in confirmed block ranges for the node and the watchtower, {@link RpcPool}
 * (several JSON-RPC URLs: timeouts, failover, chain-id check) and {@link TxSender} (simulated, signed
 * once, same bytes on failover, fee-bumped replacement, confirmation depth, one queue per account) with
 * the typed call builders of `hub-calls.ts`. Contract bindings
 * come from TypeChain (`typechain-types/`). Imports protocol/ only (never node/, watchtower/ or devnet/).
 */
export type { Deployment, DeployOptions } from "./deployment.js";
export {
  deployQrwp,
  deploymentSchema,
  parseDeployment,
  readDeployment,
  writeDeployment,
} from "./deployment.js";
export type {
  ChannelState,
  ChannelView,
  DepositResult,
  LockedBalanceView,
  OpenChannelResult,
  ParticipantView,
  PendingLock,
  RegisterSecretBatchResult,
  RegisterSecretResult,
  SettleBalanceData,
  SignedBalanceProof,
  TxResult,
  UnlockResult,
  WithdrawResult,
} from "./hub-client.js";
export { HubCallError, HubClient, decodeHubError, packLocks } from "./hub-client.js";
export type {
  ChainEvent,
  ChainEventBatch,
  ChainEventFollowerInit,
  ChainEventLogger,
  ChainEventMeta,
  ChannelClosedEvent,
  ChannelNewDepositEvent,
  ChannelOpenedEvent,
  ChannelSettledEvent,
  ChannelUnlockedEvent,
  ChannelWithdrawEvent,
  NonClosingBalanceProofUpdatedEvent,
  SecretRevealedEvent,
} from "./events.js";
export { CHAIN_EVENT_TYPES, ChainEventFollower, decodeChainEvents } from "./events.js";
export type { ChainLogger, RpcEndpoint, RpcPoolInit, RpcRunOptions } from "./rpc-pool.js";
export { JsonRpcError, RpcPool, urlLabel } from "./rpc-pool.js";
export type { ContestCallArgs, CooperativeSettleCallArgs, TxCall, WithdrawCallArgs } from "./hub-calls.js";
export {
  approveCall,
  claimDeferredPayoutCall,
  closeChannelCall,
  contestCall,
  cooperativeSettleCall,
  openChannelCall,
  setTotalDepositCall,
  setTotalWithdrawCall,
  registerSecretBatchCall,
  registerSecretCall,
  settleChannelCall,
  unlockCall,
} from "./hub-calls.js";
export type {
  ConfirmedTx,
  SendTxOptions,
  SentTx,
  SubmitTxOptions,
  TxFeeParams,
  TxReceiptView,
  TxSenderInit,
} from "./tx-sender.js";
export { NonceUsedError, TxRevertedError, TxSender } from "./tx-sender.js";
export type { PooledHubClientInit } from "./pooled-hub-client.js";
export { PooledHubClient } from "./pooled-hub-client.js";
