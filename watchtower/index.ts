/**
 * watchtower/: the watchtower process. Owns its SQLite store (store.ts), chain access over several RPC
 * URLs (chain.ts), the appointment/watch/contest logic (service.ts), the HTTP API (api.ts), process wiring
 * (runtime.ts) and its CLI command (cli.ts). Imports protocol/, chain/ and host/, never node/.
 */
export { startWatchtower, type WatchtowerConfig, type RunningWatchtower } from "./runtime.js";
export { Watchtower, type SubmitResult, type WatchtowerInit } from "./service.js";
export { WatchtowerStore, type StoredAppointment, type AppointmentStatus } from "./store.js";
export { TowerChain } from "./chain.js";
