#!/usr/bin/env node
// Runs the TypeScript CLI through tsx (no build step). See node/cli.ts.
import { register } from "tsx/esm/api";
register();
await import("../node/cli.ts");
