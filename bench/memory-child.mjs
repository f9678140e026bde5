// One variant of question 5b in a process of its own (spawned by
// memory.mjs): RSS before any pool exists, at its peak while 100 readers
// run, and after a GC with the pools still open. Prints one JSON line.
//   node --expose-gc bench/memory-child.mjs tag|raw-round-robin READERS SECONDS  (descriptor in PGFOLLOW_BENCH_DESCRIPTOR)
import process from 'node:process'
import { openVariant } from './read-throughput.mjs'

const [variant, readersArg, secondsArg] = process.argv.slice(2)
const readers = Number(readersArg)
const seconds = Number(secondsArg)
const { leader, replicas } = JSON.parse(process.env.PGFOLLOW_BENCH_DESCRIPTOR)
const settle = async () => {
  for (let i = 0; i < 3; i++) {
    globalThis.gc()
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
const mb = (bytes) => Math.round((bytes / 2 ** 20) * 10) / 10

await settle()
const before = process.memoryUsage()
// The same variants as question 2 (pool max 10 per replica), with pages of their own seed.
const { read, close } = await openVariant(variant, { leader, replicas, seed: 5 })

let peak = 0
const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 100)
let running = true
let reads = 0
const loops = Array.from({ length: readers }, async () => {
  while (running) {
    await read()
    reads++
  }
})
await new Promise((resolve) => setTimeout(resolve, seconds * 1000))
running = false
await Promise.all(loops)
clearInterval(sampler)
await settle()
const after = process.memoryUsage()
await close()
console.log(
  JSON.stringify({
    variant,
    reads,
    rssBeforeMiB: mb(before.rss),
    rssPeakMiB: mb(peak),
    rssAfterGcMiB: mb(after.rss),
    peakDeltaMiB: mb(peak - before.rss),
    retainedDeltaMiB: mb(after.rss - before.rss),
    heapUsedDeltaMiB: mb(after.heapUsed - before.heapUsed),
  }),
)
