/**
 * The watchtower's public HTTP API (fastify 5, JSON, OpenAPI at `/docs`). No bearer token: appointments
 * authenticate themselves (every signature is checked), and nothing here reveals amounts.
 * - `GET /v1/info`: the tower's identity, chain, hub, confirmation depth, contest window, balance.
 * - `POST /v1/appointments`: an appointment in its JSON form (protocol/appointment.ts) → 201
 *   `{ id, nonce, stored, status }`; refusals are coded (`UNKNOWN_HUB`, `NOT_PARTICIPANT`,
 *   `CHANNEL_NOT_FOUND`, `CHANNEL_STATE`, `STALE_NONCE`, `INVALID_SIGNATURE`, `INVALID_ARGUMENT`) and name the field.
 * - `POST /v1/appointment-batches`: a batch of slots signed once by the client, JSON form
 *   (protocol/appointment-batch.ts; at most 64 slots, 1 MiB) → 200 `{ results, stored, superseded, replayed,
 *   refused }` (one result per slot); a refusal of the whole batch is coded and names the field
 *   (`slots.<index>.<field>` for a slot) and stores nothing.
 * - `GET /v1/appointments/:id`: one slot (blinded: nonce, balance hash, status, contest progress).
 * - `GET /v1/stats`: counts, store size and memory.
 * Requests are checked as written (host/http.ts `STRICT_AJV`): a wrong type or an unknown field (body, query
 * or path) is 400 INVALID_ARGUMENT naming it in `details.field`; nothing is coerced or dropped.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import type { Logger } from "pino";
import {
  MAX_APPOINTMENT_BATCH_JSON_BYTES,
  MAX_APPOINTMENT_BATCH_SLOTS,
  QrwpError,
  appointmentBatchFromJson,
  appointmentFromJson,
} from "../protocol/index.js";
import { STRICT_AJV, errorBody, installErrorHandler, noQuery } from "../host/http.js";
import type { Watchtower } from "./service.js";
import type { StoredAppointment, WatchtowerStore } from "./store.js";

export interface TowerApiInit {
  tower: Watchtower;
  store: WatchtowerStore;
  info: () => Promise<Record<string, unknown>>;
  log: Logger;
}

/** The API view of a stored appointment (no signatures). */
export function appointmentView(a: StoredAppointment) {
  return {
    id: a.id,
    channelId: a.channelId.toString(),
    closingParticipant: a.closingParticipant,
    nonClosingParticipant: a.nonClosingParticipant,
    nonce: a.nonce.toString(),
    balanceHash: a.balanceHash,
    status: a.status,
    contestNotBeforeSeconds: a.contestNotBeforeSeconds,
    contestDeadlineSeconds: a.contestDeadlineSeconds,
    contestTxHash: a.contestTxHash,
    contestAttempts: a.contestAttempts,
    lastError: a.lastError,
    receivedAtMs: a.receivedAtMs,
    updatedAtMs: a.updatedAtMs,
  };
}

const hex = (bytes: number) => ({ type: "string", pattern: `^0x[0-9a-fA-F]{${bytes * 2}}$` }) as const;
const uint = { type: "string", pattern: "^(0|[1-9][0-9]{0,77})$" } as const;
const address = hex(20);
const appointmentBody = {
  type: "object",
  required: [
    "chainId",
    "hub",
    "channelId",
    "closingParticipant",
    "nonClosingParticipant",
    "nonce",
    "balanceHash",
    "closingSignature",
    "closingPqSignature",
    "closingMldsaPublicKey",
    "nonClosingSignature",
    "nonClosingMldsaPublicKey",
    "appointmentSignature",
    "coSignature",
  ],
  additionalProperties: false,
  properties: {
    chainId: uint,
    hub: address,
    channelId: uint,
    closingParticipant: address,
    nonClosingParticipant: address,
    nonce: uint,
    balanceHash: hex(32),
    closingSignature: hex(65),
    closingPqSignature: hex(3309),
    closingMldsaPublicKey: hex(1952),
    nonClosingSignature: hex(65),
    nonClosingMldsaPublicKey: hex(1952),
    appointmentSignature: hex(65),
    coSignature: hex(3309),
  },
} as const;

const batchBody = {
  type: "object",
  required: [
    "chainId",
    "hub",
    "tower",
    "client",
    "clientMldsaPublicKey",
    "slots",
    "batchSignature",
    "coSignature",
  ],
  additionalProperties: false,
  properties: {
    chainId: uint,
    hub: address,
    tower: address,
    client: address,
    clientMldsaPublicKey: hex(1952),
    slots: {
      type: "array",
      minItems: 1,
      maxItems: MAX_APPOINTMENT_BATCH_SLOTS,
      items: {
        type: "object",
        required: [
          "channelId",
          "closingParticipant",
          "nonce",
          "balanceHash",
          "closingSignature",
          "closingPqSignature",
          "closingMldsaPublicKey",
          "nonClosingSignature",
        ],
        additionalProperties: false,
        properties: {
          channelId: uint,
          closingParticipant: address,
          nonce: uint,
          balanceHash: hex(32),
          closingSignature: hex(65),
          closingPqSignature: hex(3309),
          closingMldsaPublicKey: hex(1952),
          nonClosingSignature: hex(65),
        },
      },
    },
    batchSignature: hex(65),
    coSignature: hex(3309),
  },
} as const;

const batchResult = {
  type: "object",
  properties: {
    results: {
      type: "array",
      items: {
        type: "object",
        properties: {
          id: hex(32),
          nonce: uint,
          outcome: { type: "string", enum: ["stored", "replayed", "superseded", "refused"] },
          code: { type: "string" },
          message: { type: "string" },
        },
      },
    },
    stored: { type: "integer" },
    superseded: { type: "integer" },
    replayed: { type: "integer" },
    refused: { type: "integer" },
  },
} as const;

const accepted = {
  type: "object",
  properties: {
    id: hex(32),
    nonce: uint,
    stored: { type: "boolean", description: "false: the tower already held exactly this appointment" },
    status: { type: "string" },
  },
} as const;

/** Builds (does not listen) the tower's API server. */
export async function buildTowerApi(init: TowerApiInit): Promise<FastifyInstance> {
  const { tower, store } = init;
  const app = Fastify({
    loggerInstance: init.log.child({ component: "api" }) as FastifyBaseLogger,
    bodyLimit: 64 * 1024,
    ajv: STRICT_AJV,
  });
  await app.register(swagger, {
    openapi: { info: { title: "QRWP watchtower API", version: "1" } },
  });
  await app.register(swaggerUi, { routePrefix: "/docs" });
  installErrorHandler(app);

  app.get(
    "/v1/info",
    { schema: { summary: "Tower identity, chain, hub and contest policy", querystring: noQuery } },
    init.info,
  );

  app.post(
    "/v1/appointments",
    {
      schema: {
        summary:
          "Hand the tower an appointment (the partner's latest balance proof, blinded, counter-signed)",
        body: appointmentBody,
        querystring: noQuery,
        response: {
          200: accepted,
          201: accepted,
          400: errorBody,
          404: errorBody,
          409: errorBody,
          422: errorBody,
        },
      },
    },
    async (req, reply) => {
      const appointment = appointmentFromJson(req.body);
      const r = await tower.submit(appointment);
      void reply.status(r.stored ? 201 : 200);
      return { id: r.id, nonce: r.nonce.toString(), stored: r.stored, status: r.status };
    },
  );

  app.post(
    "/v1/appointment-batches",
    {
      bodyLimit: MAX_APPOINTMENT_BATCH_JSON_BYTES,
      schema: {
        summary:
          "Hand the tower a batch of appointment slots signed once by the client (one result per slot)",
        body: batchBody,
        querystring: noQuery,
        response: { 200: batchResult, 400: errorBody, 404: errorBody, 409: errorBody, 422: errorBody },
      },
    },
    async (req) => {
      const batch = appointmentBatchFromJson(req.body);
      const r = await tower.submitBatch(batch);
      return {
        ...r,
        results: r.results.map((x) => ({ ...x, nonce: x.nonce.toString() })),
      };
    },
  );

  app.get(
    "/v1/appointments/:id",
    {
      schema: {
        summary: "One appointment slot: nonce, status and contest progress (no amounts)",
        params: {
          type: "object",
          required: ["id"],
          additionalProperties: false,
          properties: { id: hex(32) },
        },
        querystring: noQuery,
        response: { 404: errorBody },
      },
    },
    async (req) => {
      const { id } = req.params as { id: string };
      const a = tower.appointment(id);
      if (!a) throw new QrwpError("NOT_FOUND", "no appointment with this id", { field: "id" });
      return appointmentView(a);
    },
  );

  app.get(
    "/v1/stats",
    { schema: { summary: "Counts, store size and memory", querystring: noQuery } },
    async () => {
      const mem = process.memoryUsage();
      return {
        ...store.stats(),
        lastProcessedBlock: tower.lastProcessedBlock,
        memory: { rssBytes: mem.rss, heapUsedBytes: mem.heapUsed },
      };
    },
  );
  return app;
}
