#!/usr/bin/env node
// Runs the TypeScript CLI through tsx (no build step). See cli/qrwp.ts.
import { register } from "tsx/esm/api";
register();
await import("../cli/qrwp.ts");
