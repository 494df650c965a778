// Hardhat 2 configuration. It is a .cts file because the package is ESM ("type": "module")
// and Hardhat 2 loads its config with require(). See docs/DECISIONS.md.
import { subtask } from "hardhat/config";
import { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } from "hardhat/builtin-tasks/task-names";
import type { HardhatUserConfig } from "hardhat/types";
import "@nomicfoundation/hardhat-ethers";
import "@typechain/hardhat";

const SOLC_VERSION = "0.8.30";

// Compile offline with the solcjs build shipped in the npm `solc` package instead of
// downloading a native compiler (no network access on build machines and behind firewalls).
subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args: { solcVersion: string }, _hre, runSuper) => {
  if (args.solcVersion !== SOLC_VERSION) return runSuper();
  const compilerPath = require.resolve("solc/soljson.js");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const solc = require("solc") as { version(): string };
  return { compilerPath, isSolcJs: true, version: args.solcVersion, longVersion: solc.version() };
});

const config: HardhatUserConfig = {
  solidity: {
    version: SOLC_VERSION,
    settings: { optimizer: { enabled: true, runs: 200 }, evmVersion: "cancun" },
  },
  paths: { sources: "./contracts", tests: "./test", cache: "./cache", artifacts: "./artifacts" },
  typechain: { outDir: "typechain-types", target: "ethers-v6", node16Modules: true },
  networks: {
    hardhat: { chainId: 31337 },
  },
  mocha: { timeout: 120_000 },
};

export default config;
