// Question 1: what does routing cost? A read through the tag against raw
// postgres.js on the SAME replica (the tag is given only that replica), same
// pool size, for `select 1` and the load script's reader query: serial
// latency with mitata, then throughput at 100 concurrent readers.
// Target: the tag costs under 3 %.
import { bench, do_not_optimize, group, summary } from 'mitata'
import postgres from 'postgres'
import { connect, randomPage, readPage, seededRandom } from 'pgfollow'
import { alternate, compareThroughput, isMain, mitataRounds, pairedRatio, round, standalone } from './helpers.mjs'

export const id = 'routing-overhead'
export const title = '1. Routing overhead: the tag vs raw postgres.js on the same replica'
const POOL_MAX = 10 // postgres.js's default, given explicitly to both sides
const READERS = 100
const TARGET = 0.03

const QUERIES = {
  'select 1': () => (sql) => sql`select 1`,
  // Each side gets its own copy of the same page sequence.
  'reader query': () => {
    const random = seededRandom(11)
    return (sql) => readPage(sql, randomPage(random))
  },
}

const openRaw = (replica) => postgres(replica, { max: POOL_MAX, onnotice: () => {} })
const openTag = async (leader, replica) => {
  const sql = connect({ leader, replicas: [replica], postgres: { max: POOL_MAX } })
  await sql.refresh()
  return sql
}

/** A throughput variant, opened in a process of its own (bench/throughput-child.mjs). */
export async function openVariant(name, { leader, replica, query }) {
  const pool = name === 'tag' ? await openTag(leader, replica) : openRaw(replica)
  const read = QUERIES[query]()
  return { read: () => read(pool), close: () => pool.end({ timeout: 5 }) }
}

export async function measure({ cluster, quick, log }) {
  const { leader, replicas } = cluster.descriptor
  const replica = replicas[0]

  // Serial latency: one statement at a time, so the difference is the tag's
  // own work per call. Serial use keeps each pool on one connection, which
  // also keeps postgres.js's queues from ageing (see pool-aging.mjs).
  const raw = openRaw(replica)
  const sql = await openTag(leader, replica)
  let latency
  try {
    for (const tag of [raw, sql]) {
      await tag`select 1`
      await readPage(tag, { offset: 1, limit: 5 })
    }
    const statements = Object.fromEntries(Object.keys(QUERIES).map((query) => [query, { raw: QUERIES[query](), tag: QUERIES[query]() }]))
    const { stats, perRound } = await mitataRounds(
      quick ? 1 : 5,
      (r) => {
        for (const query of Object.keys(QUERIES)) {
          const { raw: rawRead, tag: tagRead } = statements[query]
          group(query, () =>
            summary(() => {
              const baseline = () => bench(`raw postgres.js: ${query}`, async () => do_not_optimize(await rawRead(raw))).baseline()
              const candidate = () => bench(`pgfollow tag: ${query}`, async () => do_not_optimize(await tagRead(sql)))
              // Flip the order every round: neither side always runs second.
              if (r % 2) candidate(), baseline()
              else baseline(), candidate()
            }))
        }
      },
      { log },
    )
    // The same comparison by strict alternation of calls: the headline ratio.
    const alternating = {}
    for (const query of Object.keys(QUERIES)) {
      const { raw: rawRead, tag: tagRead } = statements[query]
      const calls = (query === 'select 1' ? 4000 : 1500) / (quick ? 4 : 1)
      alternating[query] = await alternate(
        [
          { name: 'raw', call: () => rawRead(raw) },
          { name: 'tag', call: () => tagRead(sql) },
        ],
        { calls },
      )
      log(
        `  alternating ${query}: raw p50 ${alternating[query].raw.p50Us.toFixed(1)} µs, tag p50 ${
          alternating[query].tag.p50Us.toFixed(1)
        } µs (${calls} calls each)`,
      )
    }
    latency = Object.keys(QUERIES).map((query) => {
      const base = stats[`raw postgres.js: ${query}`]
      const cand = stats[`pgfollow tag: ${query}`]
      const alt = alternating[query]
      return {
        query,
        rawP50Us: round(alt.raw.p50Us, 1),
        tagP50Us: round(alt.tag.p50Us, 1),
        rawP99Us: round(alt.raw.p99Us, 1),
        tagP99Us: round(alt.tag.p99Us, 1),
        overhead: round(alt.tag.p50Us / alt.raw.p50Us - 1, 4),
        mitata: {
          rawP50Us: round(base.p50Ns / 1e3, 1),
          tagP50Us: round(cand.p50Ns / 1e3, 1),
          overhead: round(pairedRatio(perRound, `raw postgres.js: ${query}`, `pgfollow tag: ${query}`, 'p50') - 1, 4),
          roundsP50Us: { raw: base.roundsP50Ns.map((ns) => round(ns / 1e3, 1)), tag: cand.roundsP50Ns.map((ns) => round(ns / 1e3, 1)) },
        },
      }
    })
  } finally {
    await Promise.all([raw.end({ timeout: 5 }), sql.end({ timeout: 5 })])
  }

  // Throughput: 100 readers on one replica through each, a fresh process per run.
  const timing = quick ? { repeats: 1, warmupMs: 1000, durationMs: 3000 } : { repeats: 5, warmupMs: 1000, durationMs: 4000 }
  const throughput = []
  for (const query of Object.keys(QUERIES)) {
    log(`throughput, ${query}, ${READERS} readers:`)
    const setup = { leader, replica, query }
    const result = await compareThroughput([{ name: 'raw', setup }, { name: 'tag', setup }], {
      module: import.meta.url,
      readers: READERS,
      ...timing,
      log,
    })
    throughput.push({
      query,
      rawReadsPerSecond: round(result.raw.readsPerSecond, 0),
      tagReadsPerSecond: round(result.tag.readsPerSecond, 0),
      overhead: round(1 - pairedRatio(result.perRound, 'raw', 'tag', 'readsPerSecond'), 4),
      rawP50Ms: round(result.raw.p50, 2),
      tagP50Ms: round(result.tag.p50, 2),
      rawP99Ms: round(result.raw.p99, 2),
      tagP99Ms: round(result.tag.p99, 2),
      rawCpuUsPerRead: round(result.raw.cpuUsPerRead, 1),
      tagCpuUsPerRead: round(result.tag.cpuUsPerRead, 1),
      cpuRatio: round(pairedRatio(result.perRound, 'raw', 'tag', 'cpuUsPerRead'), 3),
      samples: { raw: result.raw.samples.readsPerSecond, tag: result.tag.samples.readsPerSecond },
      errors: result.raw.errors + result.tag.errors,
    })
  }

  const worst = Math.max(...latency.map((row) => row.overhead), ...throughput.map((row) => row.overhead))
  return {
    id,
    title,
    setup: {
      poolMax: POOL_MAX,
      replica: 'replica1 only (the tag is connected with replicas: [replica1])',
      readers: READERS,
      latencyRounds: quick ? 1 : 5,
      ...timing,
    },
    latency,
    throughput,
    target: {
      description: 'the tag costs under 3 % (serial p50 latency by alternating calls; throughput at 100 readers, median of per-round paired ratios)',
      limit: TARGET,
      worst: round(worst, 4),
      met: worst < TARGET,
    },
  }
}

if (isMain(import.meta.url)) await standalone(measure, { cluster: 'any' })
