/**
 * chain/: what the node and the watchtower share to talk to the chain.
 *
 * Owns the deployment record (addresses, chain id, deploy block; JSON with runtime validation), the
 * deployer of Bridge + SecretRegistry + ChannelHub (+ TestToken on devnets), {@link HubClient}, the typed,
 * nonce-safe, serialised client of the ChannelHub and SecretRegistry, and {@link ChainEventFollower},
 * which polls their logs in confirmed block ranges for the node and the watchtower. Contract bindings
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
export { HubCallError, HubClient } from "./hub-client.js";
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
export { CHAIN_EVENT_TYPES, ChainEventFollower } from "./events.js";
