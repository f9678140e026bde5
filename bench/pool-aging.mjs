// Finding behind the method: does a postgres.js pool slow down as it ages?
// postgres.js 3.4.9 keeps its connections in queues (src/queue.js) whose
// shift() leaves a hole and only resets when the queue empties, while
// remove() scans the whole array with indexOf. A pool whose connections
// are never all idle at once grows those arrays by one slot per query, so
// every query costs more than the one before. This measures it on raw
// postgres.js (the tag's pools are postgres.js pools too): reads/s of
// `select 1` per 2 s window with 100 readers, and serial latency per
// window once the pool has all its 10 connections open.
import postgres from 'postgres'
import { isMain, median, packageVersion, round, sleep, standalone } from './helpers.mjs'

export const id = 'pool-aging'
export const title = 'Finding: a saturated postgres.js pool slows down as it ages'
const POOL_MAX = 10

export async function measure({ cluster, quick, log }) {
  const url = cluster.descriptor.replicas[0]
  const windows = quick ? 3 : 6
  const windowMs = 2000

  // 100 readers, reads/s per window.
  const concurrent = []
  {
    const pool = postgres(url, { max: POOL_MAX, onnotice: () => {} })
    let reads = 0
    let running = true
    const loops = Array.from({ length: 100 }, async () => {
      while (running) {
        await pool`select 1`
        reads++
      }
    })
    for (let w = 0; w < windows; w++) {
      const start = reads
      await sleep(windowMs)
      concurrent.push(round((reads - start) / (windowMs / 1000), 0))
    }
    running = false
    await Promise.all(loops)
    await pool.end({ timeout: 5 })
  }
  log(`  100 readers, reads/s per ${windowMs / 1000} s window: ${concurrent.join(', ')}`)

  // One reader after all 10 connections were opened: µs per query per window.
  const serial = []
  {
    const pool = postgres(url, { max: POOL_MAX, onnotice: () => {} })
    await Promise.all(Array.from({ length: POOL_MAX * 3 }, () => pool`select 1`))
    for (let w = 0; w < windows; w++) {
      const latencies = []
      const end = performance.now() + windowMs
      while (performance.now() < end) {
        const started = performance.now()
        await pool`select 1`
        latencies.push((performance.now() - started) * 1000)
      }
      serial.push(round(median(latencies), 1))
    }
    await pool.end({ timeout: 5 })
  }
  log(`  serial, median µs per query per window: ${serial.join(', ')}`)

  return {
    id,
    title,
    setup: { poolMax: POOL_MAX, windowSeconds: windowMs / 1000, windows, statement: 'select 1', postgresJs: packageVersion('postgres') },
    concurrentReadsPerSecond: concurrent,
    serialMedianUs: serial,
    lastOverFirst: { concurrent: round(concurrent.at(-1) / concurrent[0], 2), serial: round(serial.at(-1) / serial[0], 2) },
  }
}

if (isMain(import.meta.url)) await standalone(measure, { cluster: 'any' })
