// Question 5b: memory of the tag vs raw postgres.js pools at 100 readers.
// Each variant runs in a child process of its own (memory-child.mjs), so
// one variant's heap does not count against the other: RSS growth from
// before any pool exists to the peak under load, and what stays after a GC
// with the pools still open. Median of repeated children, alternating.
import { fileURLToPath } from 'node:url'
import { isMain, median, round, runNodeJson, standalone } from './helpers.mjs'

export const id = 'memory'
export const title = '5b. Memory (RSS) of the tag vs raw pools at 100 readers'
const READERS = 100
const CHILD = fileURLToPath(new URL('./memory-child.mjs', import.meta.url))

export async function measure({ cluster, quick, log }) {
  const repeats = quick ? 1 : 3
  const seconds = quick ? 3 : 5
  const variants = ['raw-round-robin', 'tag']
  const runs = Object.fromEntries(variants.map((variant) => [variant, []]))
  for (let r = 0; r < repeats; r++) {
    for (const variant of r % 2 ? [...variants].reverse() : variants) {
      const result = await runNodeJson(CHILD, [variant, String(READERS), String(seconds)], {
        env: { PGFOLLOW_BENCH_DESCRIPTOR: JSON.stringify(cluster.descriptor) },
      })
      log(`  ${variant} run ${r + 1}/${repeats}: peak +${result.peakDeltaMiB} MiB, after GC +${result.retainedDeltaMiB} MiB (${result.reads} reads)`)
      runs[variant].push(result)
    }
  }
  const fields = ['rssBeforeMiB', 'peakDeltaMiB', 'retainedDeltaMiB', 'heapUsedDeltaMiB']
  const rows = variants.map((variant) => ({
    variant,
    ...Object.fromEntries(fields.map((field) => [field, round(median(runs[variant].map((run) => run[field])), 1)])),
    samples: runs[variant].map((run) => ({ peakDeltaMiB: run.peakDeltaMiB, retainedDeltaMiB: run.retainedDeltaMiB })),
  }))
  const [raw, tag] = rows
  return {
    id,
    title,
    setup: {
      readers: READERS,
      poolMaxPerReplica: 10,
      seconds,
      repeats,
      note: 'the tag also holds a one-connection monitor pool per node and an (idle) leader pool',
    },
    rows,
    tagMinusRaw: { peakMiB: round(tag.peakDeltaMiB - raw.peakDeltaMiB, 1), retainedMiB: round(tag.retainedDeltaMiB - raw.retainedDeltaMiB, 1) },
  }
}

if (isMain(import.meta.url)) await standalone(measure, { cluster: 'any' })
