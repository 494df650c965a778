/**
 * devnet/: one command (`npm run devnet`, main.ts) that starts a local chain, deploys, runs nodes as real
 * processes and drives a scenario; harness.ts holds the reusable pieces for tests and benchmarks.
 * It may import every other folder; nothing imports devnet/ but tests and benchmarks.
 */
export {
  ApiClient,
  Devnet,
  freePort,
  runCli,
  startLocalChain,
  type LocalChain,
  type MerchantProcess,
  type NodeProcess,
  type ReceiptJson,
} from "./harness.js";
