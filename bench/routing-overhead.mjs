// Question 1: what does routing cost? A read through the tag against raw
// postgres.js on the SAME replica (the tag is given only that replica), same
// pool size, for `select 1` and the load script's reader query: serial
// latency with mitata, then throughput at 100 concurrent readers.
// Target: the tag costs under 3 %.
import { bench, do_not_optimize, group, summary } from 'mitata'
import postgres from 'postgres'
import { connect } from 'pgfollow'
import { randomPage, readPage, seededRandom } from 'pgfollow/ops'
import { Router } from '../dist/tag/router.js'
import { createRootSql } from '../dist/tag/tag.js'
import { normalizeOptions } from '../dist/tag/options.js'
import { alternate, compareThroughput, isMain, median, mitataRounds, pairedRatio, round, standalone } from './helpers.mjs'

export const id = 'routing-overhead'
export const title = '1. Routing overhead: the tag vs raw postgres.js on the same replica'
const POOL_MAX = 10 // postgres.js's default, given explicitly to both sides
const READERS = 100
const TARGET = 0.03
/** Issue 14: client CPU per statement through the tag within this multiple of raw postgres.js's. */
const CPU_TARGET = 1.1

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

/**
 * The tag plus the very postgres.js pool it sends this replica's reads to
 * (reached through the router, which the package does not export: bench
 * only). Raw calls on that pool and calls through the tag then share one
 * connection, so one backend, and differ only by the tag's own work.
 */
async function openTagAndItsPool(leader, replica) {
  const router = new Router(normalizeOptions({ leader, replicas: [replica], postgres: { max: POOL_MAX } }))
  const sql = createRootSql(router)
  await sql.refresh()
  return { sql, pool: router.nodes.find((node) => node.url === replica).pool }
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
  // own work per call. On this VM a backend's round trip is either about 40
  // or about 120 µs depending on where the scheduler put it, so two pools
  // (two backends) can make either side look 3× slower. Raw calls here go
  // to the tag's own pool for the replica: the same connection, the same
  // backend, alternating call by call. A raw pool of its own ("control")
  // runs alongside and shows what a second connection alone does to the
  // comparison. Rounds with fresh pools; the overhead is the median of the
  // per-round tag/raw p50 ratios.
  const rounds = quick ? 4 : 16
  const alternating = Object.fromEntries(Object.keys(QUERIES).map((query) => [query, []]))
  for (let r = 0; r < rounds; r++) {
    const { sql, pool: raw } = await openTagAndItsPool(leader, replica)
    const control = openRaw(replica)
    try {
      for (const query of Object.keys(QUERIES)) {
        const reads = { raw: QUERIES[query](), control: QUERIES[query](), tag: QUERIES[query]() }
        // One at a time, so the shared pool opens one connection only and both sides use it.
        for (let i = 0; i < 20; i++) await reads.raw(raw), await reads.tag(sql), await reads.control(control)
        const calls = (query === 'select 1' ? 400 : 150) / (quick ? 2 : 1)
        const variants = [
          { name: 'raw', call: () => reads.raw(raw) },
          { name: 'tag', call: () => reads.tag(sql) },
          { name: 'control', call: () => reads.control(control) },
        ]
        alternating[query].push(await alternate(r % 2 ? variants.reverse() : variants, { calls }))
      }
    } finally {
      await Promise.all([control.end({ timeout: 5 }), sql.end({ timeout: 5 })])
    }
    log(
      `  serial round ${r + 1}/${rounds}: ${
        Object.entries(alternating).map(([query, runs]) => {
          const { raw, tag, control } = runs[r]
          return `${query} raw/tag/control p50 ${raw.p50Us.toFixed(1)}/${tag.p50Us.toFixed(1)}/${control.p50Us.toFixed(1)} µs`
        }).join('; ')
      }`,
    )
  }

  // mitata's view, as a second opinion: one pair of pools, rounds with the order flipped.
  const raw = openRaw(replica)
  const sql = await openTag(leader, replica)
  let mitata
  try {
    const statements = Object.fromEntries(Object.keys(QUERIES).map((query) => [query, { raw: QUERIES[query](), tag: QUERIES[query]() }]))
    for (const query of Object.keys(QUERIES)) await Promise.all([statements[query].raw(raw), statements[query].tag(sql)])
    mitata = await mitataRounds(
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
  } finally {
    await Promise.all([raw.end({ timeout: 5 }), sql.end({ timeout: 5 })])
  }
  const latency = Object.keys(QUERIES).map((query) => {
    const runs = alternating[query]
    const base = mitata.stats[`raw postgres.js: ${query}`]
    const cand = mitata.stats[`pgfollow tag: ${query}`]
    const field = (name, key) => median(runs.map((run) => run[name][key]))
    return {
      query,
      rawP50Us: round(field('raw', 'p50Us'), 1),
      tagP50Us: round(field('tag', 'p50Us'), 1),
      rawP99Us: round(field('raw', 'p99Us'), 1),
      tagP99Us: round(field('tag', 'p99Us'), 1),
      overhead: round(median(runs.map((run) => run.tag.p50Us / run.raw.p50Us)) - 1, 4),
      controlP50Us: round(field('control', 'p50Us'), 1),
      controlOverhead: round(median(runs.map((run) => run.control.p50Us / run.raw.p50Us)) - 1, 4),
      controlSpread: {
        min: round(Math.min(...runs.map((run) => run.control.p50Us / run.raw.p50Us)) - 1, 4),
        max: round(Math.max(...runs.map((run) => run.control.p50Us / run.raw.p50Us)) - 1, 4),
      },
      roundsP50Us: {
        raw: runs.map((run) => round(run.raw.p50Us, 1)),
        tag: runs.map((run) => round(run.tag.p50Us, 1)),
        control: runs.map((run) => round(run.control.p50Us, 1)),
      },
      mitata: {
        rawP50Us: round(base.p50Ns / 1e3, 1),
        tagP50Us: round(cand.p50Ns / 1e3, 1),
        overhead: round(pairedRatio(mitata.perRound, `raw postgres.js: ${query}`, `pgfollow tag: ${query}`, 'p50') - 1, 4),
        roundsP50Us: { raw: base.roundsP50Ns.map((ns) => round(ns / 1e3, 1)), tag: cand.roundsP50Ns.map((ns) => round(ns / 1e3, 1)) },
      },
    }
  })

  // Throughput: 100 readers on one replica through each, a fresh process per run.
  const timing = quick ? { repeats: 1, warmupMs: 1000, durationMs: 3000 } : { repeats: 5, warmupMs: 1000, durationMs: 4000 }
  const throughput = []
  for (const query of Object.keys(QUERIES)) {
    log(`throughput, ${query}, ${READERS} readers:`)
    const setup = { leader, replica, query }
    // 'control' is raw postgres.js again: how far two identical variants drift apart in this run.
    const result = await compareThroughput([{ name: 'raw', setup }, { name: 'tag', setup }, { name: 'control', setup }], {
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
      controlOverhead: round(1 - pairedRatio(result.perRound, 'raw', 'control', 'readsPerSecond'), 4),
      rawP50Ms: round(result.raw.p50, 2),
      tagP50Ms: round(result.tag.p50, 2),
      rawP99Ms: round(result.raw.p99, 2),
      tagP99Ms: round(result.tag.p99, 2),
      rawCpuUsPerRead: round(result.raw.cpuUsPerRead, 1),
      tagCpuUsPerRead: round(result.tag.cpuUsPerRead, 1),
      cpuRatio: round(pairedRatio(result.perRound, 'raw', 'tag', 'cpuUsPerRead'), 3),
      samples: { raw: result.raw.samples.readsPerSecond, tag: result.tag.samples.readsPerSecond, control: result.control.samples.readsPerSecond },
      errors: result.raw.errors + result.tag.errors + result.control.errors,
    })
  }

  const worst = Math.max(...latency.map((row) => row.overhead), ...throughput.map((row) => row.overhead))
  const worstCpu = Math.max(...throughput.map((row) => row.cpuRatio))
  return {
    id,
    title,
    setup: {
      poolMax: POOL_MAX,
      replica: 'replica1 only (the tag is connected with replicas: [replica1])',
      readers: READERS,
      serialRounds: rounds,
      mitataRounds: quick ? 1 : 5,
      ...timing,
    },
    latency,
    throughput,
    target: {
      description:
        'the tag costs under 3 % (serial p50 latency: median over rounds of fresh pools of the tag/raw p50 ratio from alternating calls; throughput at 100 readers: median of per-round paired ratios)',
      limit: TARGET,
      worst: round(worst, 4),
      met: worst < TARGET,
    },
    cpuTarget: {
      description: `client CPU per statement through the tag within ${CPU_TARGET}× raw postgres.js's (100 readers, median of paired rounds)`,
      limit: CPU_TARGET,
      worst: round(worstCpu, 3),
      met: worstCpu <= CPU_TARGET,
    },
  }
}

if (isMain(import.meta.url)) await standalone(measure, { cluster: 'any' })
