// Question 6: how long does a cluster take to come up from nothing? A
// leader and 2 streaming replicas in an empty dir, migrated: the whole of
// `up()` (what `npm start` / `cluster.mjs up` waits for), median of 5, with
// the time of each phase from its progress messages. Destroying a cluster
// is not timed.
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { destroy, freePorts, up } from 'pgfollow/cluster'
import { isMain, median, onCleanup, round, standalone } from './helpers.mjs'

export const id = 'bring-up'
export const title = '6. Cluster bring-up from nothing (leader + 2 replicas, migrated)'

export async function measure({ quick, log }) {
  const runs = []
  const count = quick ? 2 : 5
  for (let i = 0; i < count; i++) {
    const parent = mkdtempSync(join(os.tmpdir(), 'pgfollow-bench-up-'))
    chmodSync(parent, 0o755)
    const dir = join(parent, 'cluster')
    const stop = onCleanup(async () => {
      await destroy(dir).catch(() => {})
      rmSync(parent, { recursive: true, force: true })
    })
    try {
      const ports = await freePorts(3)
      const marks = []
      const started = performance.now()
      await up({ dir, ports, replicas: 2, onProgress: (message) => marks.push({ message, at: performance.now() - started }) })
      const totalMs = performance.now() - started
      runs.push({ totalMs, phases: phases(marks, totalMs) })
      log(`  run ${i + 1}/${count}: ${(totalMs / 1000).toFixed(2)} s`)
    } finally {
      await stop()
    }
  }
  const phaseNames = [...new Set(runs.flatMap((run) => Object.keys(run.phases)))]
  return {
    id,
    title,
    setup: { runs: count, settings: 'defaults (fsync on), as `npm start` creates it' },
    medianSeconds: round(median(runs.map((run) => run.totalMs)) / 1000, 2),
    minSeconds: round(Math.min(...runs.map((run) => run.totalMs)) / 1000, 2),
    maxSeconds: round(Math.max(...runs.map((run) => run.totalMs)) / 1000, 2),
    phasesMedianSeconds: Object.fromEntries(phaseNames.map((name) => [name, round(median(runs.map((run) => run.phases[name] ?? NaN)) / 1000, 2)])),
    samplesSeconds: runs.map((run) => round(run.totalMs / 1000, 2)),
  }
}

/** Time from each progress message to the next, by the message's first words (node names and paths dropped). */
function phases(marks, totalMs) {
  const out = {}
  marks.forEach((mark, i) => {
    const end = i + 1 < marks.length ? marks[i + 1].at : totalMs
    const name = mark.message
      .replace(/ in \/.*$/, '')
      .replace(/ on port \d+$/, '')
      .replace(/replica\d+(, replica\d+)*/g, 'replica')
      .replace(/applied .*/, 'applied migrations')
      .replace(/ to replay .*/, ' to replay the migrations')
    out[name] = (out[name] ?? 0) + (end - mark.at)
  })
  return out
}

if (isMain(import.meta.url)) await standalone(measure, { cluster: 'none' })
