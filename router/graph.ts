/**
 * Directed channel graph. Each payment channel appears as up to two directed edges (one per direction),
 * each carrying the forwarding policy of its `source` node. Node ids are interned to small integers and
 * the numeric policy fields are mirrored in plain number arrays so the route search never touches
 * bigints or strings in its inner loop (compact enough for the ~37k-channel / ~74k-edge public LN graph).
 */
import { assertArgument } from "../protocol/index.js";

/** One direction of a channel, with the forwarding policy set by `source`. Amounts are in base units. */
export interface ChannelEdge {
  /** Channel id (for imported LN graphs, the short channel id). Shared by both directions. */
  channelId: string;
  /** Node that forwards over this edge and sets its policy. */
  source: string;
  /** Node that receives over this edge. */
  target: string;
  /** Total channel capacity in base units (msat for imported LN graphs). */
  capacity: bigint;
  /** Flat fee charged by `source` per forwarded payment, base units. */
  feeBaseAmount: bigint;
  /** Proportional fee in parts per million of the forwarded amount. */
  feePpm: number;
  /** Extra lock time `source` requires between its incoming and outgoing locks, in seconds. */
  lockTimeoutSeconds: number;
  /** Edge is disabled by its source and must not be used. */
  disabled: boolean;
  /** Smallest amount `source` forwards over this edge. */
  htlcMinimum: bigint;
  /** Largest amount `source` forwards over this edge; `null` = only bounded by capacity. */
  htlcMaximum: bigint | null;
}

/** Internal numeric mirror of the graph used by the search (index = edge index). */
export interface EdgeArrays {
  readonly src: number[];
  readonly dst: number[];
  readonly capacity: number[];
  readonly feeBase: number[];
  readonly feePpm: number[];
  readonly lock: number[];
  readonly htlcMin: number[];
  /** `Infinity` when the edge has no htlcMaximum. */
  readonly htlcMax: number[];
  readonly disabled: boolean[];
}

function validateEdge(e: ChannelEdge): void {
  assertArgument(
    typeof e.channelId === "string" && e.channelId.length > 0,
    "channelId required",
    "channelId",
  );
  assertArgument(typeof e.source === "string" && e.source.length > 0, "source required", "source");
  assertArgument(typeof e.target === "string" && e.target.length > 0, "target required", "target");
  assertArgument(e.source !== e.target, "self-loop edge", "target", e.target);
  assertArgument(typeof e.capacity === "bigint" && e.capacity >= 0n, "capacity must be >= 0", "capacity");
  assertArgument(
    typeof e.feeBaseAmount === "bigint" && e.feeBaseAmount >= 0n,
    "feeBaseAmount >= 0",
    "feeBaseAmount",
  );
  assertArgument(
    Number.isSafeInteger(e.feePpm) && e.feePpm >= 0,
    "feePpm must be a uint",
    "feePpm",
    e.feePpm,
  );
  assertArgument(
    Number.isSafeInteger(e.lockTimeoutSeconds) && e.lockTimeoutSeconds >= 0,
    "lockTimeoutSeconds must be a uint",
    "lockTimeoutSeconds",
    e.lockTimeoutSeconds,
  );
  assertArgument(typeof e.htlcMinimum === "bigint" && e.htlcMinimum >= 0n, "htlcMinimum >= 0", "htlcMinimum");
  assertArgument(
    e.htlcMaximum === null || (typeof e.htlcMaximum === "bigint" && e.htlcMaximum >= 0n),
    "htlcMaximum must be null or >= 0",
    "htlcMaximum",
  );
}

/** Directed channel graph with interned node ids and adjacency lists in both directions. */
export class ChannelGraph {
  private readonly nodeIds: string[] = [];
  private readonly nodeIndexById = new Map<string, number>();
  private readonly out: number[][] = [];
  private readonly in: number[][] = [];
  private readonly edgeList: (ChannelEdge | undefined)[] = [];
  /** channelId -> edge indices (one per direction). */
  private readonly byChannel = new Map<string, number[]>();
  private liveEdges = 0;
  /** Numeric mirror of each edge, read by the path finder. */
  readonly arrays: EdgeArrays = {
    src: [],
    dst: [],
    capacity: [],
    feeBase: [],
    feePpm: [],
    lock: [],
    htlcMin: [],
    htlcMax: [],
    disabled: [],
  };

  /** Number of nodes ever seen (nodes are kept after their channels are removed). */
  get nodeCount(): number {
    return this.nodeIds.length;
  }

  /** Number of directed edges currently in the graph. */
  get edgeCount(): number {
    return this.liveEdges;
  }

  /** Number of distinct channels currently in the graph. */
  get channelCount(): number {
    return this.byChannel.size;
  }

  /** Interns a node id, returning its index. */
  internNode(id: string): number {
    let i = this.nodeIndexById.get(id);
    if (i === undefined) {
      i = this.nodeIds.length;
      this.nodeIds.push(id);
      this.nodeIndexById.set(id, i);
      this.out.push([]);
      this.in.push([]);
    }
    return i;
  }

  /** Index of a node id, or undefined. */
  nodeIndex(id: string): number | undefined {
    return this.nodeIndexById.get(id);
  }

  /** Node id of an index. */
  nodeId(index: number): string {
    const id = this.nodeIds[index];
    assertArgument(id !== undefined, "unknown node index", "index", index);
    return id;
  }

  /** All node ids. */
  nodes(): string[] {
    return [...this.nodeIds];
  }

  /**
   * Adds a directed edge, or replaces the existing edge of the same channel and direction (a policy update).
   * @throws QrwpError INVALID_ARGUMENT on a malformed edge.
   */
  addEdge(edge: ChannelEdge): void {
    validateEdge(edge);
    const e: ChannelEdge = { ...edge };
    const s = this.internNode(e.source);
    const t = this.internNode(e.target);
    const a = this.arrays;
    const existing = this.byChannel.get(e.channelId);
    let idx: number | undefined;
    if (existing) {
      for (const j of existing) if (this.edgeList[j]?.source === e.source) idx = j;
      if (idx !== undefined && this.edgeList[idx]?.target !== e.target) {
        assertArgument(false, "channel direction changed target", "target", e.target);
      }
    }
    if (idx === undefined) {
      idx = this.edgeList.length;
      this.edgeList.push(e);
      this.out[s]!.push(idx);
      this.in[t]!.push(idx);
      if (existing) existing.push(idx);
      else this.byChannel.set(e.channelId, [idx]);
      this.liveEdges++;
    } else {
      this.edgeList[idx] = e;
    }
    a.src[idx] = s;
    a.dst[idx] = t;
    a.capacity[idx] = Number(e.capacity);
    a.feeBase[idx] = Number(e.feeBaseAmount);
    a.feePpm[idx] = e.feePpm;
    a.lock[idx] = e.lockTimeoutSeconds;
    a.htlcMin[idx] = Number(e.htlcMinimum);
    a.htlcMax[idx] = e.htlcMaximum === null ? Infinity : Number(e.htlcMaximum);
    a.disabled[idx] = e.disabled;
  }

  /** Removes both directions of a channel. Returns whether it existed. */
  removeChannel(channelId: string): boolean {
    const idxs = this.byChannel.get(channelId);
    if (!idxs) return false;
    for (const idx of idxs) {
      const s = this.arrays.src[idx]!;
      const t = this.arrays.dst[idx]!;
      this.out[s] = this.out[s]!.filter((j) => j !== idx);
      this.in[t] = this.in[t]!.filter((j) => j !== idx);
      this.edgeList[idx] = undefined;
      this.arrays.disabled[idx] = true;
      this.liveEdges--;
    }
    this.byChannel.delete(channelId);
    return true;
  }

  /** Directed edges leaving `node` (copies). */
  edgesFrom(node: string): ChannelEdge[] {
    const i = this.nodeIndexById.get(node);
    if (i === undefined) return [];
    return this.out[i]!.map((j) => ({ ...this.edgeList[j]! }));
  }

  /** Directed edges entering `node` (copies). */
  edgesTo(node: string): ChannelEdge[] {
    const i = this.nodeIndexById.get(node);
    if (i === undefined) return [];
    return this.in[i]!.map((j) => ({ ...this.edgeList[j]! }));
  }

  /** The edge of `channelId` whose source is `source`, if any (a copy). */
  getEdge(channelId: string, source: string): ChannelEdge | undefined {
    for (const j of this.byChannel.get(channelId) ?? []) {
      const e = this.edgeList[j];
      if (e?.source === source) return { ...e };
    }
    return undefined;
  }

  /** Every directed edge (copies). */
  edges(): ChannelEdge[] {
    const r: ChannelEdge[] = [];
    for (const e of this.edgeList) if (e) r.push({ ...e });
    return r;
  }

  /** @internal edge indices entering node index `i` (not copied; do not mutate). */
  inEdgeIndices(i: number): readonly number[] {
    return this.in[i] ?? [];
  }

  /** @internal the stored edge object of an index (not copied; do not mutate). */
  edgeAt(idx: number): ChannelEdge | undefined {
    return this.edgeList[idx];
  }
}
