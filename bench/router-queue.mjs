// Question: with the router holding statements and handing each node only
// what its lanes can run now, (a) does the tag keep its reads/s over 60 s on
// unpatched postgres.js 3.4.9, whose pool queue slows down as it ages, and
// (b) which in-flight limit per replica reads fastest? 100 readers, the
// load script's reader query, every variant in a fresh process
// (throughput-child.mjs), raw postgres.js round-robin pools beside it.
// Target (a): the last 10 s within 5 % of the first 10 s.
import { compareThroughput, isMain, pairedRatio, round, standalone } from './helpers.mjs'

export const id = 'router-queue'
export const title = 'The router owns the queue: no decay over 60 s, and the best in-flight limit per replica'
const READERS = 100
const READ_THROUGHPUT = new URL('./read-throughput.mjs', import.meta.url).href

export async function measure({ cluster, quick, log }) {
  const { leader, replicas } = cluster.descriptor
  const decayMs = quick ? 20_000 : 60_000
  const windowMs = quick ? 5_000 : 10_000
  log(`  decay: tag and raw round-robin, ${decayMs / 1000} s each, reads/s per ${windowMs / 1000} s window`)
  const decay = await compareThroughput(
    [
      { name: 'tag', setup: { leader, replicas } },
      { name: 'raw-round-robin', setup: { replicas } },
    ],
    { module: READ_THROUGHPUT, readers: READERS, repeats: 1, warmupMs: 1000, durationMs: decayMs, windowMs, log },
  )
  const decayRows = ['tag', 'raw-round-robin'].map((name) => {
    const windows = decay[name].windows[0]
    return { variant: name, windows, lastOverFirst: round(windows.at(-1) / windows[0], 3), readsPerSecond: round(decay[name].readsPerSecond, 0) }
  })

  const limits = [1, 2, 4, 10]
  const variants = [
    ...limits.map((n) => ({ name: `tag-${n}`, setup: { leader, replicas, inFlight: n, max: 10 } })),
    { name: 'raw-round-robin-10', setup: { replicas, max: 10 } },
    { name: 'raw-round-robin-2', setup: { replicas, max: 2 } },
  ]
  const timing = quick ? { repeats: 1, warmupMs: 1000, durationMs: 3000 } : { repeats: 3, warmupMs: 1000, durationMs: 4000 }
  log(`  in-flight limits ${limits.join(', ')} per replica against raw round-robin (max 10 and max 2)`)
  const limitsResult = await compareThroughput(variants, { module: READ_THROUGHPUT, readers: READERS, ...timing, log })
  const limitRows = variants.map((variant) => ({
    variant: variant.name,
    readsPerSecond: round(limitsResult[variant.name].readsPerSecond, 0),
    p50Ms: round(limitsResult[variant.name].p50, 2),
    p99Ms: round(limitsResult[variant.name].p99, 2),
    clientCpuUsPerRead: round(limitsResult[variant.name].cpuUsPerRead, 1),
    overRawMax10: round(pairedRatio(limitsResult.perRound, 'raw-round-robin-10', variant.name, 'readsPerSecond'), 3),
  }))
  const tagDecay = decayRows[0].lastOverFirst
  return {
    id,
    title,
    setup: { readers: READERS, decaySeconds: decayMs / 1000, windowSeconds: windowMs / 1000, ...timing },
    decay: decayRows,
    limits: limitRows,
    targets: [{ description: 'tag: last window within 5 % of the first', ratio: tagDecay, limit: 0.95, met: tagDecay >= 0.95 }],
  }
}

if (isMain(import.meta.url)) await standalone(measure, { cluster: 'any' })
