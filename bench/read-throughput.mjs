// Question 2: read throughput across 2 replicas at 100 concurrent readers,
// the load script's reader query: the tag vs raw postgres.js pools
// round-robin (what the proof of concept did) vs HAProxy (TCP, balance
// roundrobin) vs pgpool-II in streaming-replication mode with
// statement-level load balancing over the same replicas. Every side but
// pgpool's per-reader row holds the same connections per replica.
// Reads/s, p50, p99.
// Targets: the tag makes at least 1.05× raw round-robin's and HAProxy's
// reads/s, and at least 1.5× pgpool-II's.
import postgres from 'postgres'
import { connect } from 'pgfollow'
import { randomPage, readPage, seededRandom } from 'pgfollow/ops'
import { nodeNames } from 'pgfollow/topology'
import { compareThroughput, isMain, pairedRatio, processTreeCpuSeconds, round, standalone } from './helpers.mjs'
import { startHaproxy } from './haproxy.mjs'
import { startPgpool } from './pgpool.mjs'

export const id = 'read-throughput'
export const title = '2. Read throughput over 2 replicas at 100 readers: tag vs raw round-robin vs HAProxy vs pgpool-II'
const READERS = 100
const POOL_MAX = 10 // per replica, for the tag and for raw round-robin: 20 connections to the replicas
const PGPOOL_SHARED = 20 // the same 20 client connections, through pgpool
const PGPOOL_PER_READER = READERS // one connection per reader, as an app with a 100-connection pool would use pgpool

/**
 * A variant, opened in a process of its own (bench/throughput-child.mjs,
 * and memory-child.mjs for question 5b): pages from a seeded generator, the
 * same sequence for every variant.
 */
export async function openVariant(name, { leader, replicas, proxyUrl, max, inFlight, pipeline, seed = 23 }) {
  const random = seededRandom(seed)
  const page = () => randomPage(random)
  if (name.startsWith('tag')) {
    // `inFlight`: statements the router keeps on the wire per node (default: the pool's max).
    const sql = connect({ leader, replicas, inFlight, pipeline, postgres: { max: max ?? POOL_MAX } })
    await sql.refresh()
    return { read: () => readPage(sql, page()), close: () => sql.end({ timeout: 5 }) }
  }
  if (name.startsWith('raw-round-robin')) {
    const pools = replicas.map((url) => postgres(url, { max: max ?? POOL_MAX, onnotice: () => {} }))
    let next = 0
    return {
      read: () => readPage(pools[next++ % pools.length], page()),
      close: () => Promise.all(pools.map((pool) => pool.end({ timeout: 5 }))),
    }
  }
  // Through a proxy (HAProxy or pgpool-II): one pool to the proxy's address.
  const pool = postgres(proxyUrl, { max, onnotice: () => {} })
  return { read: () => readPage(pool, page()), close: () => pool.end({ timeout: 5 }) }
}

export async function measure({ cluster, quick, log }) {
  const { leader, replicas } = cluster.descriptor
  const variants = [
    { name: 'tag', label: `pgfollow tag (max ${POOL_MAX} per replica)`, setup: { leader, replicas } },
    { name: 'raw-round-robin', label: `raw postgres.js round-robin (max ${POOL_MAX} per replica)`, setup: { replicas } },
  ]

  const haproxy = await startHaproxy(cluster.descriptor)
  if (haproxy.skipped) {
    log(`HAProxy skipped: ${haproxy.skipped}`)
  } else {
    // HAProxy hands each client connection to the next replica: max POOL_MAX per replica in all.
    const max = POOL_MAX * replicas.length
    variants.push({
      name: 'haproxy',
      label: `HAProxy ${haproxy.version?.match(/\d+\.\d+\.\d+/)?.[0] ?? ''} roundrobin (postgres.js max ${max} to HAProxy)`,
      setup: { proxyUrl: haproxy.url, max },
    })
  }

  const pgpool = await startPgpool(cluster.descriptor, { children: PGPOOL_PER_READER + 10 })
  if (pgpool.skipped) {
    log(`pgpool-II skipped: ${pgpool.skipped}`)
  } else {
    for (
      const [name, max] of [
        ['pgpool-shared', PGPOOL_SHARED],
        ['pgpool-per-reader', PGPOOL_PER_READER],
      ]
    ) {
      variants.push({
        name,
        label: `pgpool-II ${pgpool.version?.match(/\d+\.\d+\.\d+/)?.[0] ?? ''} (postgres.js max ${max} to pgpool)`,
        setup: { proxyUrl: pgpool.url, max },
      })
    }
  }

  const timing = quick ? { repeats: 1, warmupMs: 1000, durationMs: 3000 } : { repeats: 5, warmupMs: 1000, durationMs: 4000 }
  let result
  try {
    result = await compareThroughput(variants, {
      module: import.meta.url,
      readers: READERS,
      ...timing,
      cpuOf: otherCpu(cluster, pgpool, haproxy),
      log,
    })
  } finally {
    if (!pgpool.skipped) await pgpool.stop()
    if (!haproxy.skipped) await haproxy.stop()
  }

  const rows = variants.map((variant) => ({
    variant: variant.name,
    label: variant.label,
    readsPerSecond: round(result[variant.name].readsPerSecond, 0),
    p50Ms: round(result[variant.name].p50, 2),
    p99Ms: round(result[variant.name].p99, 2),
    maxMs: round(result[variant.name].max, 1),
    clientCpuUsPerRead: round(result[variant.name].cpuUsPerRead, 1),
    serversCpuUsPerRead: round(result[variant.name].serversCpuUsPerRead, 1),
    pgpoolCpuUsPerRead: variant.name.startsWith('pgpool') ? round(result[variant.name].pgpoolCpuUsPerRead, 1) : null,
    haproxyCpuUsPerRead: variant.name === 'haproxy' ? round(result[variant.name].haproxyCpuUsPerRead, 1) : null,
    errors: result[variant.name].errors,
    firstError: result[variant.name].firstError,
    ratioToTag: round(pairedRatio(result.perRound, 'tag', variant.name, 'readsPerSecond'), 3),
    samples: result[variant.name].samples.readsPerSecond,
  }))
  const tagOverRaw = pairedRatio(result.perRound, 'raw-round-robin', 'tag', 'readsPerSecond')
  const tagOverHaproxy = haproxy.skipped ? null : pairedRatio(result.perRound, 'haproxy', 'tag', 'readsPerSecond')
  const pgpoolNames = variants.map((v) => v.name).filter((name) => name.startsWith('pgpool'))
  // Against pgpool's better configuration: the stricter comparison.
  const bestPgpool = pgpoolNames.sort((a, b) => result[b].readsPerSecond - result[a].readsPerSecond)[0]
  const tagOverPgpool = bestPgpool ? pairedRatio(result.perRound, bestPgpool, 'tag', 'readsPerSecond') : null
  return {
    id,
    title,
    setup: {
      readers: READERS,
      poolMaxPerReplica: POOL_MAX,
      pgpool: pgpool.skipped ? { skipped: pgpool.skipped } : { version: pgpool.version, children: pgpool.children },
      haproxy: haproxy.skipped ? { skipped: haproxy.skipped } : { version: haproxy.version },
      ...timing,
    },
    rows,
    targets: [
      { description: 'tag reads/s at least 1.05× raw round-robin', ratio: round(tagOverRaw, 3), limit: 1.05, met: tagOverRaw >= 1.05 },
      tagOverHaproxy === null ? { description: 'tag reads/s at least 1.05× HAProxy', skipped: haproxy.skipped } : {
        description: 'tag reads/s at least 1.05× HAProxy',
        ratio: round(tagOverHaproxy, 3),
        limit: 1.05,
        met: tagOverHaproxy >= 1.05,
      },
      tagOverPgpool === null ? { description: 'tag reads/s at least 1.5× pgpool-II', skipped: pgpool.skipped } : {
        description: `tag reads/s at least 1.5× pgpool-II (best pgpool row: ${bestPgpool})`,
        ratio: round(tagOverPgpool, 3),
        limit: 1.5,
        met: tagOverPgpool >= 1.5,
      },
    ],
  }
}

/**
 * Where the rest of the CPU goes, read from /proc around each run: the three
 * PostgreSQL servers (postmaster and backends), pgpool (all its children)
 * and HAProxy.
 * On two shared cores every µs they use is a µs no other process gets. Only
 * for a cluster this bench started (it knows the servers' pids).
 */
function otherCpu(cluster, pgpool, haproxy) {
  const cpuOf = {}
  if (cluster.pid) {
    const names = nodeNames(cluster.descriptor.replicas.length)
    cpuOf.servers = () => {
      const each = names.map((name) => processTreeCpuSeconds(cluster.pid(name)))
      return each.includes(null) ? null : each.reduce((sum, seconds) => sum + seconds, 0)
    }
  }
  if (!pgpool.skipped && pgpool.pid) cpuOf.pgpool = () => processTreeCpuSeconds(pgpool.pid)
  if (!haproxy.skipped && haproxy.pid) cpuOf.haproxy = () => processTreeCpuSeconds(haproxy.pid)
  return cpuOf
}

if (isMain(import.meta.url)) await standalone(measure, { cluster: 'any' })
