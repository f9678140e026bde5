// One throughput run in a Node process of its own (spawned by
// compareThroughput in helpers.mjs). Every variant gets a fresh process
// because V8 carries what it learned from one variant into the next: with
// one shared reader loop, whichever variant ran second lost 15–35 % of its
// reads/s (raw postgres.js after the tag as much as the tag after raw
// postgres.js; see BENCHMARKS.md, Method, "Every run is a Node process of its own").
//   PGFOLLOW_BENCH_RUN='{"module":URL,"variant":NAME,"setup":{…},"readers":N,"warmupMs":N,"durationMs":N}' node bench/throughput-child.mjs
// The module exports `openVariant(name, setup)` → { read, close }; what
// close() resolves with comes back as `extra`. Prints one JSON line.
import process from 'node:process'
import { cleanupAll, throughput } from './helpers.mjs'

const spec = JSON.parse(process.env.PGFOLLOW_BENCH_RUN ?? 'null')
if (!spec) throw new Error('throughput-child.mjs is started by compareThroughput (bench/helpers.mjs) with PGFOLLOW_BENCH_RUN set.')

const { openVariant } = await import(spec.module)
const { read, close } = await openVariant(spec.variant, spec.setup)
let result
let extra
try {
  // Open every connection first (one read per reader at once): connecting is not what we measure.
  await Promise.all(Array.from({ length: spec.readers }, read))
  result = await throughput({ readers: spec.readers, warmupMs: spec.warmupMs, durationMs: spec.durationMs, windowMs: spec.windowMs, read })
} finally {
  extra = await close()
  await cleanupAll()
}
console.log(JSON.stringify({ ...result, extra: extra ?? null }))
