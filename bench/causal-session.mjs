// Question 3: what does a causal session cost? Write latency through a
// session vs the plain tag (mitata, serial), and the first read after a
// write: its latency, how often it misses the write, and where it ran,
// against the floor no client can beat: how long a committed write takes
// to become visible on a replica (raw connections, polled).
import { bench, do_not_optimize, group, summary } from 'mitata'
import postgres from 'postgres'
import { connect } from 'pgfollow'
import { alternate, isMain, latencySummary, mitataRounds, pairedRatio, round, standalone } from './helpers.mjs'

export const id = 'causal-session'
export const title = '3. Causal session cost: write latency and the first read after a write'
const POOL_MAX = 10
/** Issue 14's target: a session's first read after a write, p90, within this multiple of the visibility floor's p90. */
const FLOOR_TARGET = 1.5

export async function measure({ cluster, quick, log }) {
  const { leader, replicas } = cluster.descriptor
  const sql = connect({ leader, replicas, postgres: { max: POOL_MAX } })
  try {
    await sql.refresh()
    const session = sql.session()
    const url = 'https://bench.example/session'
    await sql`insert into blogs (url) values (${url}) returning id`
    await session`insert into blogs (url) values (${url}) returning id`

    // Write latency: the session pipelines "where is the leader now?" behind each write.
    const { stats, perRound } = await mitataRounds(
      quick ? 1 : 3,
      (r) => {
        group('write (insert … returning id)', () =>
          summary(() => {
            const baseline = () =>
              bench('plain tag: write', async () => do_not_optimize(await sql`insert into blogs (url) values (${url}) returning id`)).baseline()
            const candidate = () =>
              bench('session: write', async () => do_not_optimize(await session`insert into blogs (url) values (${url}) returning id`))
            if (r % 2) candidate(), baseline()
            else baseline(), candidate()
          }))
      },
      { log },
    )
    // The headline ratio from strictly alternating writes (see helpers.alternate).
    const alt = await alternate(
      [
        { name: 'plain', call: () => sql`insert into blogs (url) values (${url}) returning id` },
        { name: 'session', call: () => session`insert into blogs (url) values (${url}) returning id` },
      ],
      { calls: quick ? 150 : 600 },
    )
    const write = {
      plainP50Us: round(alt.plain.p50Us, 1),
      sessionP50Us: round(alt.session.p50Us, 1),
      plainP99Us: round(alt.plain.p99Us, 1),
      sessionP99Us: round(alt.session.p99Us, 1),
      ratio: round(alt.session.p50Us / alt.plain.p50Us, 3),
      mitata: {
        plainP50Us: round(stats['plain tag: write'].p50Ns / 1e3, 1),
        sessionP50Us: round(stats['session: write'].p50Ns / 1e3, 1),
        ratio: round(pairedRatio(perRound, 'plain tag: write', 'session: write', 'p50'), 3),
      },
    }

    // First read after a write: write (not timed), then read the row back (timed).
    // Blocks of plain and session alternate; each session is fresh, so its
    // position is exactly the write it just made.
    const blocks = quick ? 4 : 12
    const perBlock = 25
    const results = { plain: { latencies: [], stale: 0, reads: 0, byNode: {} }, session: { latencies: [], stale: 0, reads: 0, byNode: {} } }
    for (let block = 0; block < blocks; block++) {
      const kind = block % 2 ? 'session' : 'plain'
      const before = served(sql)
      for (let i = 0; i < perBlock; i++) {
        const tag = kind === 'session' ? sql.session() : sql
        const [row] = await tag`insert into blogs (url) values (${url}) returning id`
        const started = performance.now()
        const found = await tag`select id from blogs where id = ${row.id}`
        results[kind].latencies.push(performance.now() - started)
        results[kind].reads++
        if (found.length === 0) results[kind].stale++
      }
      const after = served(sql)
      // Served counts include the writes (all on the leader): subtract them.
      after.leader -= perBlock
      for (const name of Object.keys(after)) results[kind].byNode[name] = (results[kind].byNode[name] ?? 0) + after[name] - (before[name] ?? 0)
    }
    const firstRead = Object.fromEntries(
      Object.entries(results).map(([kind, r]) => {
        const l = latencySummary(r.latencies)
        return [kind, {
          p50Ms: round(l.p50, 3),
          p90Ms: round(l.p90, 3),
          p99Ms: round(l.p99, 3),
          reads: r.reads,
          staleReads: r.stale,
          staleShare: round(r.stale / r.reads, 3),
          byNode: r.byNode,
        }]
      }),
    )
    const floor = await visibilityFloor(leader, replicas, quick ? 100 : 300)
    const floorRatio = firstRead.session.p90Ms / floor.p90Ms
    return {
      id,
      title,
      setup: {
        poolMax: POOL_MAX,
        replicas: replicas.length,
        sessionWaitMs: 100,
        readAfterWrite: `${blocks} alternating blocks of ${perBlock} write-then-read pairs`,
      },
      write,
      firstRead,
      floor,
      target: {
        description: `session's first read after a write, p90, within ${FLOOR_TARGET}× the write-visible-on-replica floor's p90`,
        ratio: round(floorRatio, 3),
        limit: FLOOR_TARGET,
        met: floorRatio <= FLOOR_TARGET,
      },
    }
  } finally {
    await sql.end({ timeout: 5 })
  }
}

/**
 * The replication delay floor: a write committed on the leader, then the
 * replicas (taken in turn) asked for the row back-to-back until it shows.
 * Time from the commit's answer to the first read that sees the row; no
 * router, no session, nothing a client could skip.
 */
async function visibilityFloor(leader, replicas, writes) {
  const options = { max: 1, onnotice: () => {} }
  const writer = postgres(leader, options)
  const readers = replicas.map((url) => postgres(url, options))
  const url = 'https://bench.example/floor'
  const latencies = []
  try {
    for (let i = 0; i < writes; i++) {
      const [row] = await writer`insert into blogs (url) values (${url}) returning id`
      const started = performance.now()
      const reader = readers[i % readers.length]
      while ((await reader`select id from blogs where id = ${row.id}`).length === 0);
      latencies.push(performance.now() - started)
    }
  } finally {
    await Promise.all([writer, ...readers].map((pool) => pool.end({ timeout: 5 })))
  }
  const l = latencySummary(latencies)
  return { writes, p50Ms: round(l.p50, 3), p90Ms: round(l.p90, 3), p99Ms: round(l.p99, 3) }
}

function served(sql) {
  return Object.fromEntries(sql.status().map((node) => [node.role === 'leader' ? 'leader' : node.name, node.served]))
}

if (isMain(import.meta.url)) await standalone(measure)
