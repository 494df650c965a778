/**
 * The transfers of the payments layer: each role's state machine (protocol/transfers.ts) with the actions it
 * still has to run (its outbox), stored in the node store's `transfers` table as one document and kept in
 * memory while the transfer is open, so a step reads the state without parsing the stored JSON. The store
 * stays the truth: a write inside a transaction that rolls back reloads the memory copy from the store.
 */
import { isTransferDone, type TransferAction, type TransferState } from "../../protocol/index.js";
import type { NodeStore, TransferRecord } from "../store/store.js";

/** Stored form of a transfer: the role's state and the actions still to run, in order. */
export interface TransferDoc {
  machine: TransferState;
  outbox: TransferAction[];
}

/** See the module doc. Every write is durable with the store's next barrier (it is in its transaction). */
export class TransferBook {
  readonly #store: NodeStore;
  /** Every transfer that is not done, as stored (loaded by {@link load}, kept by {@link put}). */
  readonly #open = new Map<string, TransferRecord>();

  constructor(store: NodeStore) {
    this.#store = store;
  }

  /** Loads the transfers that are not done (at start-up). @returns their ids. */
  load(): string[] {
    for (const t of this.#store.openTransfers()) this.#open.set(t.id, t);
    return [...this.#open.keys()];
  }

  /** The transfers that are not done (a copy: stepping them while iterating is safe). */
  openTransfers(): TransferRecord[] {
    return [...this.#open.values()];
  }

  /**
   * Stores a transfer's state and outbox, and keeps them in memory while not done. Inside a transaction that
   * later rolls back, the copy is reloaded from the store after the rollback.
   */
  put(id: string, machine: TransferState, outbox: TransferAction[]): void {
    const doc: TransferDoc = { machine, outbox };
    const t: TransferRecord = {
      id,
      role: machine.role,
      secretHash: machine.transfer.secretHash,
      paymentId: machine.transfer.paymentId,
      state: doc,
      done: isTransferDone(machine) && outbox.length === 0,
    };
    this.#store.putTransfer(t);
    this.#remember(t);
    this.#store.onRollback(() => {
      try {
        this.#remember(this.#store.getTransfer(id), id);
      } catch {
        this.#open.delete(id); // unreadable now: reads go to the store (and fail there, coded)
      }
    });
  }

  /** Keeps `t` in memory if it is open, else forgets `id`. */
  #remember(t: TransferRecord | null, id = t?.id): void {
    if (t && !t.done) this.#open.set(t.id, t);
    else if (id !== undefined) this.#open.delete(id);
  }

  /** A transfer by id: the in-memory copy of an open one, else the store (a done one). */
  record(id: string): TransferRecord | null {
    return this.#open.get(id) ?? this.#store.getTransfer(id);
  }

  /** A transfer's state and outbox by id, or null. */
  doc(id: string): TransferDoc | null {
    const t = this.record(id);
    return t ? (t.state as TransferDoc) : null;
  }

  /** Transfers with this secret hash, oldest first (ids from the store, open ones from memory). */
  byHash(secretHash: string): TransferRecord[] {
    return this.#store
      .transferIdsByHash(secretHash)
      .map((id) => this.record(id))
      .filter((t): t is TransferRecord => t !== null);
  }

  /** Applies an event to a stored transfer: new state + appended actions, stored atomically. */
  step(
    id: string,
    fn: (machine: TransferState) => { state: TransferState; actions: TransferAction[] },
  ): void {
    const doc = this.doc(id);
    if (!doc) return;
    const { state, actions } = fn(doc.machine);
    this.put(id, state, [...doc.outbox, ...actions]);
  }
}
