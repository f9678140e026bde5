// Question 4: balancing under skew. Two replicas, one of them made worse,
// 100 readers on the reader query: raw postgres.js round-robin pools (what
// the proof of concept does) against the tag with each balance; reads/s,
// p50, p99 and each replica's share of the reads.
//  - CPU-starved: the client backends of replica2 are stopped and continued
//    in a duty cycle (SIGSTOP 7 ms / SIGCONT 3 ms, bench/starve.mjs), so
//    they get about 30 % of the time the others get.
//  - paused: the same backends stop for 200 ms every second (a GC pause,
//    a noisy neighbour, a stalled disk).
//  - apply-delayed: replica2 runs with recovery_min_apply_delay = 2s while
//    a writer keeps the leader busy; the tag runs with maxLag.ms = 1000 so
//    it retires replica2 (with the default maxLag of 10 s it would keep
//    serving reads 2 s stale). A tag measures time lag against the leader
//    positions it has seen since it started, so each variant waits past
//    maxLag before it is measured.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import postgres from 'postgres'
import { connect } from 'pgfollow'
import { randomPage, readPage, seededRandom, writeBlog } from 'pgfollow/ops'
import { compareThroughput, isMain, onCleanup, pairedRatio, round, sleep, standalone } from './helpers.mjs'

export const id = 'skew'
export const title = '4. Balancing under skew: the tag vs raw round-robin with one replica starved, paused or delayed'
const READERS = 100
const POOL_MAX = 10
const STARVE = { stopMs: 7, runMs: 3 }
const PAUSE = { stopMs: 200, runMs: 800 }
/** Issue 14's target: the tag's p99 at most this share of raw round-robin's, with no fewer reads/s. */
const P99_TARGET = 0.7
const APPLY_DELAY = '2s'
const MAX_LAG_MS = 1000

/**
 * One variant in a process of its own (bench/throughput-child.mjs):
 * `raw-round-robin`, or the tag with the balance named. close() reports
 * each node's share of the reads.
 */
export async function openVariant(name, { scenario, leader, replicas }) {
  const duty = { 'cpu-starved': STARVE, paused: PAUSE }[scenario]
  if (duty) {
    const reader = name === 'raw-round-robin'
      ? rawRoundRobin(replicas)
      : await tagReader(connect({ leader, replicas, balance: name, postgres: { max: POOL_MAX } }), replicas)
    const random = seededRandom(31)
    const read = () => reader.read(randomPage(random))
    // Open every connection, then starve replica2's backends (they exist only now).
    await Promise.all(Array.from({ length: READERS }, read))
    const stopStarving = await starve(replicas[1], duty)
    const before = reader.served()
    return {
      read,
      close: async () => {
        const share = shares(before, reader.served())
        await stopStarving()
        await reader.close()
        return share
      },
    }
  }
  const sql = connect({ leader, replicas, balance: name, maxLag: { ms: MAX_LAG_MS }, monitorInterval: 250, postgres: { max: POOL_MAX } })
  // A new tag knows the leader's positions only from its own start, so
  // it can see a time lag of at most its own age: wait past maxLag.
  await sleep(MAX_LAG_MS + 500)
  await sql.refresh()
  const random = seededRandom(41)
  const reader = await tagReader(sql, replicas)
  const before = reader.served()
  return {
    read: () => reader.read(randomPage(random)),
    close: async () => {
      const replica2 = sql.status().find((node) => node.url === redactedUrl(replicas[1]))
      const share = { ...shares(before, reader.served()), replica2State: replica2?.state, replica2LagMs: replica2?.lagMs }
      await reader.close()
      return share
    },
  }
}

/** The proof of concept's balancing: one pool per replica, taken in turn; reads counted per replica. */
function rawRoundRobin(replicas) {
  const pools = replicas.map((url) => postgres(url, { max: POOL_MAX, onnotice: () => {} }))
  const counts = { leader: 0, replica1: 0, replica2: 0 }
  let next = 0
  return {
    read: (page) => {
      const i = next++ % pools.length
      counts[`replica${i + 1}`]++
      return readPage(pools[i], page)
    },
    served: () => ({ ...counts }),
    close: () => Promise.all(pools.map((pool) => pool.end({ timeout: 5 }))),
  }
}

/** The tag as a reader; its reads per node come from status(), matched to the descriptor by URL (names may be the servers' own). */
async function tagReader(sql, replicas) {
  await sql.refresh()
  const roleOf = new Map(replicas.map((url, i) => [redactedUrl(url), `replica${i + 1}`]))
  return {
    read: (page) => readPage(sql, page),
    served: () => {
      const counts = { leader: 0, replica1: 0, replica2: 0 }
      for (const node of sql.status()) counts[roleOf.get(node.url) ?? 'leader'] += node.served
      return counts
    },
    close: () => sql.end({ timeout: 5 }),
  }
}

/** A URL as status() prints it (password hidden). */
function redactedUrl(url) {
  const parsed = new URL(url)
  if (parsed.password) parsed.password = '***'
  return parsed.toString()
}

const BALANCES = ['round-robin', 'least-busy']
const WITH_RAW = ['raw-round-robin', ...BALANCES]

export async function measure({ cluster, quick, log }) {
  const { leader, replicas } = cluster.descriptor
  const timing = quick ? { repeats: 1, warmupMs: 1000, durationMs: 3000 } : { repeats: 3, warmupMs: 1500, durationMs: 5000 }
  const compare = (scenario, names = WITH_RAW) =>
    compareThroughput(names.map((name) => ({ name, setup: { scenario, leader, replicas } })), {
      module: import.meta.url,
      readers: READERS,
      ...timing,
      log,
    })
  const scenarios = []

  // CPU-starved replica2.
  log('skew: replica2 CPU-starved')
  scenarios.push(
    summarize(
      'cpu-starved replica2',
      `client backends of replica2 SIGSTOP ${STARVE.stopMs} ms / SIGCONT ${STARVE.runMs} ms`,
      await compare('cpu-starved'),
    ),
  )

  // replica2 paused for 200 ms every second.
  log('skew: replica2 paused 200 ms every second')
  scenarios.push(
    summarize(
      'paused replica2',
      `client backends of replica2 SIGSTOP ${PAUSE.stopMs} ms / SIGCONT ${PAUSE.runMs} ms`,
      await compare('paused'),
    ),
  )

  // Apply-delayed replica2, with a writer making WAL.
  {
    const admin = postgres(replicas[1], { max: 1, onnotice: () => {} })
    const writerSql = postgres(leader, { max: 1, onnotice: () => {} })
    let writing = true
    const writer = (async () => {
      const random = seededRandom(37)
      while (writing) await writeBlog(writerSql, random).catch(() => sleep(50))
    })()
    const undo = onCleanup(async () => {
      await admin.unsafe('alter system reset recovery_min_apply_delay')
      await admin`select pg_reload_conf()`
    })
    try {
      await admin.unsafe(`alter system set recovery_min_apply_delay = '${APPLY_DELAY}'`)
      await admin`select pg_reload_conf()`
      await sleep(2500) // let the delay build up
      log(`skew: replica2 apply-delayed by ${APPLY_DELAY}, tag maxLag.ms = ${MAX_LAG_MS}`)
      scenarios.push(
        summarize(
          'apply-delayed replica2',
          `recovery_min_apply_delay = ${APPLY_DELAY} on replica2, a writer on the leader, tag maxLag.ms = ${MAX_LAG_MS}`,
          // Raw round-robin cannot see lag at all: it would serve reads 2 s stale, so only the tag's balances run here.
          await compare('apply-delayed', BALANCES),
        ),
      )
    } finally {
      writing = false
      await writer
      await undo()
      await Promise.all([admin.end({ timeout: 5 }), writerSql.end({ timeout: 5 })])
    }
  }

  return { id, title, setup: { readers: READERS, poolMaxPerReplica: POOL_MAX, ...timing }, scenarios }
}

function summarize(scenario, how, result) {
  const names = WITH_RAW.filter((name) => result[name])
  const row = (balance) => {
    const shareList = result[balance].extras
    return {
      balance,
      readsPerSecond: round(result[balance].readsPerSecond, 0),
      p50Ms: round(result[balance].p50, 2),
      p99Ms: round(result[balance].p99, 2),
      maxMs: round(result[balance].max, 1),
      replica2Share: round(shareList.reduce((sum, s) => sum + s.replica2, 0) / shareList.length, 3),
      errors: result[balance].errors,
      ...(shareList[0]?.replica2State
        ? { replica2State: shareList.map((s) => s.replica2State), replica2LagMs: shareList.map((s) => s.replica2LagMs) }
        : {}),
      samples: result[balance].samples,
    }
  }
  const ratio = (baseline, candidate, field) => round(pairedRatio(result.perRound, baseline, candidate, field), 3)
  const target = result['raw-round-robin']
    ? (() => {
      // The tag as configured by default (round-robin) against the proof of concept's pools.
      const p99 = ratio('raw-round-robin', 'round-robin', 'p99')
      const readsPerSecond = ratio('raw-round-robin', 'round-robin', 'readsPerSecond')
      return {
        description: `tag p99 at most ${P99_TARGET}× raw round-robin's, with no loss of reads/s`,
        p99,
        readsPerSecond,
        met: p99 <= P99_TARGET && readsPerSecond >= 1,
      }
    })()
    : null
  return {
    scenario,
    how,
    rows: names.map(row),
    leastBusyOverRoundRobin: { readsPerSecond: ratio('round-robin', 'least-busy', 'readsPerSecond'), p99: ratio('round-robin', 'least-busy', 'p99') },
    target,
  }
}

function shares(before, after) {
  const delta = Object.fromEntries(Object.keys(after).map((name) => [name, after[name] - (before[name] ?? 0)]))
  const total = Object.values(delta).reduce((sum, n) => sum + n, 0) || 1
  return { replica1: delta.replica1 / total, replica2: delta.replica2 / total, leader: delta.leader / total }
}

/** Starts starving the client backends of a replica; resolves with a function that stops it (and continues them). */
async function starve(replicaUrl, { stopMs, runMs }) {
  const admin = postgres(replicaUrl, { max: 1, onnotice: () => {}, connection: { application_name: 'pgfollow-bench-admin' } })
  let pids
  try {
    pids = (await admin`select pid from pg_stat_activity where backend_type = 'client backend' and application_name = 'postgres.js'`).map((row) =>
      row.pid
    )
  } finally {
    await admin.end({ timeout: 5 })
  }
  const script = fileURLToPath(new URL('./starve.mjs', import.meta.url))
  const child = spawn(process.execPath, [script, String(stopMs), String(runMs), ...pids.map(String)], { stdio: ['pipe', 'ignore', 'inherit'] })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  return onCleanup(async () => {
    child.kill('SIGTERM')
    await Promise.race([exited, sleep(2000)])
    // Whatever happened to the starver, leave no backend stopped.
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGCONT')
      } catch {
        // already gone
      }
    }
  })
}

if (isMain(import.meta.url)) await standalone(measure)
