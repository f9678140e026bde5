/**
 * The load experiment (scripts/load.mjs, npm start): the proof of concept's
 * workload through the sql tag, measured. Writers create a blog with posts
 * and comments in one transaction, read it back, and sleep 100-2000 ms;
 * readers page posts with their comments in a loop. Every second a tick
 * records reads and writes per node, latency percentiles, errors and each
 * replica's lag as the tag sees it; the summary and the SVG report are
 * built from the ticks.
 *
 * Where a read ran is taken from the tag itself (`sql.status()` served
 * counts, per tick), so the load must have the tag to itself. With a
 * LagProbe, lag is the leader's replay lag per replica (as lagcheck shows
 * it, to the millisecond) and nodes carry their own names (cluster_name),
 * which stay right after a failover; without one, the tag's names
 * (descriptor positions) and its monitor's lag, which has a resolution of
 * its monitor interval.
 */
import { percentile } from './cli.ts'
import type { LagProbe, LagSnapshot } from './lag.ts'
import type { PgfollowSql, RoutedSql } from '../tag/tag.ts'
import { randomPage, readPage, seededRandom, writeBlog } from './workload.ts'

export type Consistency = 'eventual' | 'session'
export const CONSISTENCIES: readonly Consistency[] = ['eventual', 'session']

export interface LoadOptions {
  sql: PgfollowSql
  writers?: number
  readers?: number
  /** Stop after this long; without it the load runs until `stop()`. */
  durationMs?: number
  /** `session`: every worker holds a causal session (read-your-writes, monotonic reads). */
  consistency?: Consistency
  /** Writers sleep between these bounds after each blog (the proof of concept: 100-2000 ms). */
  writerPauseMs?: [number, number]
  tickMs?: number
  /** Seeds the workers' random sources, for repeatable runs. */
  seed?: number
  /** Measures lag and names nodes (see above). */
  probe?: LagProbe
  onTick?: (tick: LoadTick, run: LoadRun) => void
}

/** One interval of the run. Rates are per second; counts are for the interval. */
export interface LoadTick {
  /** Seconds since the start, at the end of the interval. */
  t: number
  seconds: number
  reads: number
  writes: number
  errors: number
  readsByNode: Record<string, number>
  /** Role of every node at the end of the interval (a failover changes it). */
  roles: Record<string, 'leader' | 'replica'>
  /** Lag per replica: replay lag from the leader's view with a probe, else the tag monitor's. */
  lagMs: Record<string, number>
  lagBytes: Record<string, number>
  p50Ms: number
  p99Ms: number
}

export interface LoadSummary {
  /** Read statements that succeeded: pages, and each writer's read-back of its blog. */
  reads: number
  /** Blogs written (each one transaction on the leader). */
  writes: number
  posts: number
  comments: number
  errors: number
  /** Read-backs that did not see the blog just written (a lagging replica; 0 with sessions). */
  staleReads: number
  byNode: Record<string, number>
  /** Transactions per node that was the leader when they committed. */
  writesByNode: Record<string, number>
  roles: Record<string, 'leader' | 'replica'>
  p50Ms: number
  p99Ms: number
  writeP50Ms: number
  writeP99Ms: number
  maxLagMs: number
  maxLagBytes: number
  durationS: number
  readers: number
  writers: number
  consistency: Consistency
  /** The first few distinct error messages. */
  errorSamples: string[]
  ticks: LoadTick[]
}

export interface LoadRun {
  /** Ends the run: workers finish their statement in flight, then `done` resolves. */
  stop(): void
  readonly done: Promise<LoadSummary>
  /** Counts so far (for a live line between ticks). */
  readonly totals: { reads: number; writes: number; errors: number }
}

const READ_BACK = 'select count(*)::int as posts from posts where blog_id = $1'

/** Grows as needed; latency samples of a long run do not fit a fixed array. */
class Samples {
  #data = new Float64Array(1024)
  length = 0
  push(value: number): void {
    if (this.length === this.#data.length) {
      const bigger = new Float64Array(this.#data.length * 2)
      bigger.set(this.#data)
      this.#data = bigger
    }
    this.#data[this.length++] = value
  }
  sorted(from = 0): Float64Array {
    return this.#data.slice(from, this.length).sort()
  }
}

/** Starts the workload; resolve `done` for the summary. */
export function runLoad(options: LoadOptions): LoadRun {
  const { sql, writers = 2, readers = 100, consistency = 'eventual', tickMs = 1_000, writerPauseMs = [100, 2000] } = options
  const seed = options.seed ?? Date.now()
  const started = performance.now()
  let running = true
  let wake: () => void = () => {}
  const stopped = new Promise<void>((resolve) => (wake = resolve))
  const stop = () => {
    running = false
    wake()
  }

  const totals = { reads: 0, writes: 0, errors: 0 }
  let posts = 0
  let comments = 0
  let staleReads = 0
  const readLatency = new Samples()
  const writeLatency = new Samples()
  /** Transactions per node by the tag's node name, at the node that was the leader when each committed. */
  const writesByTagNode: Record<string, number> = {}
  const errorSamples: string[] = []
  const ticks: LoadTick[] = []

  const failed = (error: unknown) => {
    totals.errors++
    const message = error instanceof Error ? error.message : String(error)
    if (errorSamples.length < 5 && !errorSamples.includes(message)) errorSamples.push(message)
  }
  /** Resolves after `ms`, or at once when the run stops. */
  const pause = (ms: number) => Promise.race([new Promise((resolve) => setTimeout(resolve, ms)), stopped])
  const tagFor = (): RoutedSql => (consistency === 'session' ? sql.session() : sql)

  async function reader(index: number): Promise<void> {
    const random = seededRandom(seed + 7919 * (index + 1))
    const tag = tagFor()
    while (running) {
      const begun = performance.now()
      try {
        await readPage(tag, randomPage(random))
        readLatency.push(performance.now() - begun)
        totals.reads++
      } catch (error) {
        failed(error)
        await pause(100) // a failing cluster should not be hammered in a tight loop
      }
    }
  }

  async function writer(index: number): Promise<void> {
    const random = seededRandom(seed + 104729 * (index + 1))
    const tag = tagFor()
    while (running) {
      const begun = performance.now()
      try {
        const blog = await writeBlog(tag, random)
        writeLatency.push(performance.now() - begun)
        const leader = sql.status().find((node) => node.role === 'leader')?.name ?? 'leader'
        writesByTagNode[leader] = (writesByTagNode[leader] ?? 0) + 1
        totals.writes++
        posts += blog.posts
        comments += blog.comments
        // Read your own write: with eventual consistency a replica may not have it yet.
        const readBegun = performance.now()
        const [row] = await tag.unsafe(READ_BACK, [blog.blogId], { prepare: true })
        readLatency.push(performance.now() - readBegun)
        totals.reads++
        if (row.posts < blog.posts) staleReads++
      } catch (error) {
        failed(error)
      }
      const [low, high] = writerPauseMs
      await pause(low + Math.floor(random() * (high - low + 1)))
    }
  }

  /** Node names by (redacted) URL, learned from the probe; kept when a node goes down. */
  const names = new Map<string, string>()
  const nameOf = (node: { name: string; url: string }) => names.get(node.url) ?? node.name
  /** Reads served so far per node (tag names): the tag counts statements (`served`) apart from transactions (our writes). */
  const readsSoFar = () => Object.fromEntries(sql.status().map((node) => [node.name, node.served]))
  const byName = (counts: Record<string, number>) => {
    const named: Record<string, number> = {}
    for (const node of sql.status()) named[nameOf(node)] = (named[nameOf(node)] ?? 0) + (counts[node.name] ?? 0)
    return named
  }
  const firstReads = readsSoFar()

  let lastReads = firstReads
  let lastTickAt = started
  let lastCounts = { ...totals }
  let lastReadSample = 0
  let ticking: Promise<void> | null = null
  /**
   * The probe's look, if it comes within half a tick; else the last one. A
   * node that hangs (a failover in progress) must not stretch the ticks,
   * or the chart would place events late.
   */
  let probing: Promise<LagSnapshot | null> | null = null
  let lastSnapshot: LagSnapshot | null = null
  const freshSnapshot = async (): Promise<LagSnapshot | null> => {
    if (!options.probe) return null
    probing ??= options.probe
      .snapshot()
      .then((snapshot) => (lastSnapshot = snapshot))
      .catch(() => lastSnapshot)
      .finally(() => (probing = null))
    let timer: ReturnType<typeof setTimeout> | undefined
    const late = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), tickMs / 2)))
    const snapshot = await Promise.race([probing, late])
    clearTimeout(timer)
    return snapshot ?? lastSnapshot
  }
  const tick = () => (ticking ??= takeTick().finally(() => (ticking = null)))
  const takeTick = async () => {
    const snapshot = await freshSnapshot()
    if (snapshot) { for (const node of [snapshot.leader, ...snapshot.replicas]) names.set(node.url, node.name) }
    const now = performance.now()
    const status = sql.status()
    const reads = readsSoFar()
    // A transaction is counted by the tag a moment before the writer counts it: never show a negative rate.
    const delta = Object.fromEntries(Object.keys(reads).map((name) => [name, Math.max(0, reads[name] - (lastReads[name] ?? 0))]))
    const readsByNode = byName(delta)
    const replicas = status.filter((node) => node.role === 'replica')
    const measured = snapshot?.replicas.filter((replica) => replica.lagMs !== null) ?? []
    const window = readLatency.sorted(lastReadSample)
    const entry: LoadTick = {
      t: round((now - started) / 1000, 3),
      seconds: round((now - lastTickAt) / 1000, 3),
      reads: totals.reads - lastCounts.reads,
      writes: totals.writes - lastCounts.writes,
      errors: totals.errors - lastCounts.errors,
      readsByNode,
      roles: Object.fromEntries(status.map((node) => [nameOf(node), node.role])),
      lagMs: snapshot
        ? Object.fromEntries(measured.map((replica) => [replica.name, replica.lagMs!]))
        : Object.fromEntries(replicas.map((node) => [nameOf(node), node.lagMs])),
      lagBytes: snapshot
        ? Object.fromEntries(measured.map((replica) => [replica.name, replica.lagBytes ?? 0]))
        : Object.fromEntries(replicas.map((node) => [nameOf(node), node.lagBytes])),
      p50Ms: round(percentile(window, 50), 2),
      p99Ms: round(percentile(window, 99), 2),
    }
    ticks.push(entry)
    lastReads = reads
    lastTickAt = now
    lastCounts = { ...totals }
    lastReadSample = readLatency.length
    options.onTick?.(entry, run)
  }

  const timer = setInterval(() => void tick(), tickMs)
  const deadline = options.durationMs === undefined ? null : setTimeout(stop, options.durationMs)
  const workers = [
    ...Array.from({ length: writers }, (_, i) => writer(i)),
    ...Array.from({ length: readers }, (_, i) => reader(i)),
  ]

  const done = (async (): Promise<LoadSummary> => {
    await Promise.all(workers)
    clearInterval(timer)
    if (deadline) clearTimeout(deadline)
    await ticking
    await probing
    // The last, partial interval counts too, unless it is too short to say anything.
    if (performance.now() - lastTickAt > tickMs / 4 || ticks.length === 0) await tick()
    // From the counters, not the sum of ticks: exact once every statement has settled.
    const finalReads = readsSoFar()
    const byNode = byName(Object.fromEntries(Object.keys(finalReads).map((name) => [name, finalReads[name] - (firstReads[name] ?? 0)])))
    const reads = readLatency.sorted()
    const writes = writeLatency.sorted()
    const lags = ticks.flatMap((entry) => Object.values(entry.lagMs))
    const lagBytes = ticks.flatMap((entry) => Object.values(entry.lagBytes))
    return {
      reads: totals.reads,
      writes: totals.writes,
      posts,
      comments,
      errors: totals.errors,
      staleReads,
      byNode,
      writesByNode: byName(writesByTagNode),
      roles: ticks[ticks.length - 1]?.roles ?? {},
      p50Ms: round(percentile(reads, 50), 2),
      p99Ms: round(percentile(reads, 99), 2),
      writeP50Ms: round(percentile(writes, 50), 2),
      writeP99Ms: round(percentile(writes, 99), 2),
      maxLagMs: lags.reduce((max, lag) => Math.max(max, lag), 0),
      maxLagBytes: lagBytes.reduce((max, lag) => Math.max(max, lag), 0),
      durationS: round((performance.now() - started) / 1000, 2),
      readers,
      writers,
      consistency,
      errorSamples,
      ticks,
    }
  })()

  const run: LoadRun = { stop, done, totals }
  return run
}

function round(value: number, digits: number): number {
  const factor = 10 ** digits
  return Math.round(value * factor) / factor
}
