/**
 * A node's lanes: connections reserved from its postgres.js pool, each
 * running one routed statement at a time. The router hands a node only what
 * a free lane can run now, and keeps the rest in its own queue, so a
 * statement is on the wire from the moment it is handed over (readTimeout
 * counts from there), and postgres.js's pool queue, which slows down as it
 * ages in 3.4.9, is not on the path of routed statements (BENCHMARKS.md,
 * "The router owns the queue").
 */
import type postgres from 'postgres'
import { CONNECT_TIMEOUT } from './failures.ts'
import { unrefTimer } from './health.ts'
import { onConnection, type PgConnection, type PgQuery, poolHandler } from './postgres-internals.ts'
import { CLEANSE } from './queries.ts'
import { LaneLimit } from './lane-limit.ts'

/** Lanes a node opens at once: a burst of logins (SCRAM costs CPU on both ends) would time out on a busy machine. */
const OPENING_AT_ONCE = 2

export class Lane {
  readonly sql: postgres.ReservedSql
  readonly handler: PgQuery['handler']
  /** Learned from the lane's first statement: to close it, and to hear that it closed. */
  connection: PgConnection | null = null
  /** Statements on its connection and not yet settled (pipelined reads, a session's follow-up). */
  running = 0
  /** A write (or anything on the leader) runs alone on its lane: nothing queues behind it. */
  exclusive = false
  /**
   * An error came on it with nothing behind it. postgres.js 3.4.9 resets its
   * row counter only when a statement completes, so after an error that
   * arrived behind rows the next statement's rows land behind holes: a
   * statement without rows must run before the lane serves again.
   */
  dirty = false
  /** An error came on it with a statement right behind: that statement's rows cannot be trusted. */
  poisonNext = false
  dead = false

  constructor(sql: postgres.ReservedSql) {
    this.sql = sql
    this.handler = poolHandler(sql).handler
  }

  /** Closes the connection now (what runs on it fails); the lane is never used again. */
  kill(): void {
    if (this.dead) return
    this.dead = true
    this.connection?.terminate()
  }

  /**
   * Its connection closed. postgres.js reuses the Connection object for the
   * pool's next login, maybe another lane's: nothing of this lane may touch
   * it again (a late kill would close that lane's connection, a statement
   * would run on it).
   */
  detach(): void {
    this.dead = true
    this.connection = null
  }
}

export interface LaneEvents {
  /** A lane became free (new or done): the router hands it the next statement. */
  free(lane: Lane): void
  /** A lane could not be opened: the node is unreachable. */
  failed(error: unknown): void
}

export class NodeLanes {
  /** Lanes at most: what a write (alone on its lane) may use. */
  readonly limit: number
  /** Lanes reads use: the first `reads.current` of them, adapted to what the node serves best. */
  readonly reads: LaneLimit
  /** Reads completed on the lanes, and reads that found no room: the adaptation's window. */
  completed = 0
  waited = 0
  /** Reads pipelined on one lane at most (a write always runs alone). */
  readonly depth: number
  readonly #pool: postgres.Sql
  readonly #events: LaneEvents
  /** Open lanes, busy or not; a handful, so a scan beats an index. */
  readonly #lanes: Lane[] = []
  readonly #byConnection = new Map<number, Lane>()
  #opening = 0
  readonly #openings = new Set<Promise<unknown>>()
  /** Statements on this node's lanes: its in-flight count. */
  busy = 0
  #ending = false

  readonly #openTimeout: number

  constructor(pool: postgres.Sql, limit: number, depth: number, openTimeout: number, events: LaneEvents) {
    this.#pool = pool
    this.#openTimeout = openTimeout
    this.limit = limit
    this.reads = new LaneLimit(limit)
    this.depth = depth
    this.#events = events
  }

  /**
   * A lane to put a statement on now, or null: an idle one for a statement
   * that runs alone; else the least busy one with room in its pipeline.
   */
  take(alone: boolean): Lane | null {
    let best: Lane | null = null
    const lanes = this.#lanes
    for (let i = 0, n = alone ? lanes.length : Math.min(lanes.length, this.reads.current); i < n; i++) {
      const lane = lanes[i]
      if (lane.dead || lane.exclusive || lane.dirty || lane.running >= (alone ? 1 : this.depth)) continue
      if (!best || lane.running < best.running) best = lane
      if (lane.running === 0) break
    }
    if (best) {
      best.running++
      best.exclusive = alone
      this.busy++
    }
    return best
  }

  /** One more statement on a lane already taken (a session's follow-up, pipelined behind its statement). */
  join(lane: Lane): void {
    lane.running++
    this.busy++
  }

  /** Whether `take(alone)` would find a lane. */
  hasRoom(alone: boolean): boolean {
    const lanes = this.#lanes
    for (let i = 0, n = alone ? lanes.length : Math.min(lanes.length, this.reads.current); i < n; i++) {
      const lane = lanes[i]
      if (!lane.dead && !lane.exclusive && !lane.dirty && lane.running < (alone ? 1 : this.depth)) return true
    }
    return false
  }

  /** Below its limit (for reads: their adapted one): one more may open (now, or once a lane opening finishes). */
  canOpen(alone: boolean): boolean {
    return !this.#ending && this.#lanes.length + this.#opening < (alone ? this.limit : this.reads.current)
  }

  /** One more may open now. */
  canOpenNow(alone: boolean): boolean {
    return this.canOpen(alone) && this.#opening < OPENING_AT_ONCE
  }

  /** The end of a window: reads completed and whether reads waited set the next read limit (`mayStart`: a trial). */
  adapt(mayStart: boolean): void {
    this.reads.observe(this.completed, this.waited > this.completed / 10, mayStart)
    this.completed = this.waited = 0
  }

  /** Lanes open now (busy or idle). */
  get size(): number {
    return this.#lanes.length
  }

  get opening(): number {
    return this.#opening
  }

  /** Resolves once no lane is opening (each attempt is bounded by connect_timeout). */
  opened(): Promise<void> {
    return Promise.allSettled(this.#openings).then(() => {})
  }

  /** Reserves one more connection; `free` is called when it can run statements. */
  open(): void {
    this.#opening++
    // Bounded here too: a reserve() can wait on a connection that never closes (a frozen server holds a
    // half-closed socket open), and a lane that never opens would hold its place for good.
    let given = false
    const giveUp = (error: unknown) => {
      if (given) return
      given = true
      clearTimeout(timer)
      this.#opening--
      if (!this.#ending) this.#events.failed(error)
    }
    const timer = setTimeout(
      () => giveUp(Object.assign(new Error(`no connection for a lane within ${this.#openTimeout} ms`), { code: CONNECT_TIMEOUT })),
      this.#openTimeout,
    )
    unrefTimer(timer)
    // postgres.js 3.4.9's reserve() hangs when it has to open a connection without fetching types (as here after
    // the first lane): the new connection logs in and never hands itself over. A statement through the pool first
    // leaves a logged-in connection idle for the reserve to take, and a dead node fails that statement instead of
    // leaving a reserve queued in the pool for good (each retrying the node with a growing back-off).
    const opening = (this.#pool.unsafe(CLEANSE) as Promise<unknown>).then(() => this.#pool.reserve()).then(async (sql) => {
      const lane = new Lane(sql)
      const probe = sql.unsafe(CLEANSE) as unknown as PgQuery
      onConnection(probe, (connection) => {
        lane.connection = connection
        this.#byConnection.set(connection.id, lane)
      })
      await probe // The first lane fetched the array types into the pool's shared parsers; later connections
       // need not, and a connection that dies while fetching them leaves a rejection nobody can catch.
      ;(this.#pool.options as { fetch_types: boolean }).fetch_types = false
      this.#lanes.push(lane)
      const late = given
      given = true
      clearTimeout(timer)
      if (!late) this.#opening--
      if (this.#ending) return this.#retire(lane)
      // Opened after it was given up on: a lane all the same while there is room, else an idle pool connection
      // (not closed: released, the pool may already have handed it to someone else).
      if (late && this.#lanes.length > this.limit) return (this.#forget(lane), lane.sql.release())
      this.#events.free(lane)
    }).catch(giveUp).finally(() => this.#openings.delete(opening))
    this.#openings.add(opening)
  }

  /** A statement on `lane` settled; the lane has room again (once cleansed, if an error left it dirty). */
  done(lane: Lane): void {
    lane.running--
    this.busy--
    this.completed++
    if (this.busy === 0 && this.#idle.length > 0) { for (const resolve of this.#idle.splice(0)) resolve() }
    if (lane.running === 0) lane.exclusive = false
    if (lane.dead) return lane.running === 0 ? this.#forget(lane) : undefined
    if (this.#ending) return lane.running === 0 ? this.#retire(lane) : undefined
    if (!lane.dirty) return this.#events.free(lane)
    if (lane.running > 0 || lane.exclusive) return
    // Cleanse, not in this tick: an error may come from inside postgres.js's
    // close handling, before it reports the close (onclose); writing to that
    // connection now would throw from a setImmediate, out of anyone's reach.
    lane.running++
    this.busy++
    queueMicrotask(() => {
      if (lane.dead) return this.done(lane)
      ;(lane.sql.unsafe(CLEANSE) as Promise<unknown>).then(() => ((lane.dirty = false), this.done(lane)), () => (lane.kill(), this.done(lane)))
    })
  }

  /** postgres.js closed a connection (the pool's onclose): a lane on it is gone. */
  closed(connectionId: number): void {
    const lane = this.#byConnection.get(connectionId)
    if (!lane) return
    this.#byConnection.delete(connectionId)
    lane.detach()
    if (lane.running === 0) this.#forget(lane)
  }

  #forget(lane: Lane): void {
    if (lane.connection && this.#byConnection.get(lane.connection.id) === lane) this.#byConnection.delete(lane.connection.id)
    lane.dead = true
    const at = this.#lanes.indexOf(lane)
    if (at !== -1) this.#lanes.splice(at, 1)
  }

  /** Gives a lane's connection back to the pool, so the pool's end() can close it. */
  #retire(lane: Lane): void {
    this.#forget(lane)
    lane.sql.release()
    // Released while the pool ends: postgres.js would wait for it until the end timeout.
    lane.connection?.terminate()
  }

  readonly #idle: (() => void)[] = []

  /** Resolves once nothing runs on the lanes. */
  settled(): Promise<void> {
    return this.busy === 0 ? Promise.resolve() : new Promise((resolve) => this.#idle.push(resolve))
  }

  /** No new lanes; idle ones go back to the pool now, busy ones when their statement settles. */
  end(): void {
    this.#ending = true
    for (const lane of [...this.#lanes]) if (lane.running === 0) this.#retire(lane)
  }
}
