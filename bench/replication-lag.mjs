// Question 7: how far behind are the replicas under the proof of concept's
// load? lib/load.ts's workload (what scripts/load.mjs runs: 2 writers
// pausing 100-2000 ms between blogs, 100 readers through the tag) while a
// LagProbe asks the leader every 100 ms for each replica's replay lag, in
// bytes and in ms (pg_stat_replication, as lagcheck shows it). A second row
// runs the writers without pauses, to see what a write-heavy leader does.
import { connect } from 'pgfollow'
import { LagProbe, runLoad } from 'pgfollow/ops'
import { isMain, latencySummary, round, sleep, standalone } from './helpers.mjs'

export const id = 'replication-lag'
export const title = "7. Replication lag under the proof of concept's load"
const SAMPLE_MS = 100

export async function measure({ cluster, quick, log }) {
  const durationMs = quick ? 5_000 : 15_000
  const rows = []
  for (
    const [load, writerPauseMs] of [
      ['proof of concept: 2 writers pausing 100-2000 ms, 100 readers', [100, 2000]],
      ['2 writers without pauses, 100 readers', [0, 0]],
    ]
  ) {
    const sql = connect({ ...cluster.descriptor, postgres: { max: 10 } })
    const probe = new LagProbe(cluster.descriptor)
    const samples = { bytes: [], ms: [] }
    try {
      await sql.refresh()
      const run = runLoad({ sql, writers: 2, readers: 100, durationMs, writerPauseMs, seed: 17 })
      let sampling = true
      const sampler = (async () => {
        while (sampling) {
          const started = performance.now()
          const snapshot = await probe.snapshot()
          for (const replica of snapshot.replicas) {
            if (replica.lagBytes !== null) samples.bytes.push(replica.lagBytes)
            if (replica.lagMs !== null) samples.ms.push(replica.lagMs)
          }
          await sleep(Math.max(0, SAMPLE_MS - (performance.now() - started)))
        }
      })()
      const summary = await run.done
      sampling = false
      await sampler
      const bytes = latencySummary(samples.bytes)
      const ms = latencySummary(samples.ms)
      const row = {
        load,
        seconds: round(summary.durationS, 1),
        writesPerSecond: round(summary.writes / summary.durationS, 1),
        readsPerSecond: round(summary.reads / summary.durationS, 0),
        staleReadBacks: summary.staleReads,
        samples: bytes.count,
        lagBytes: { p50: bytes.p50, p99: bytes.p99, max: bytes.max },
        lagMs: { p50: round(ms.p50, 1), p99: round(ms.p99, 1), max: round(ms.max, 1) },
      }
      log(
        `  ${load}: lag p50 ${row.lagBytes.p50} B / ${row.lagMs.p50} ms, p99 ${row.lagBytes.p99} B / ${row.lagMs.p99} ms, max ${row.lagBytes.max} B / ${row.lagMs.max} ms; ${row.writesPerSecond} writes/s`,
      )
      rows.push(row)
    } finally {
      await probe.end()
      await sql.end({ timeout: 5 })
    }
  }
  return {
    id,
    title,
    setup: {
      durationSeconds: durationMs / 1000,
      sampleEveryMs: SAMPLE_MS,
      source: 'leader pg_stat_replication replay lag (bytes against pg_current_wal_lsn, ms from replay_lag; 0 when caught up)',
    },
    rows,
  }
}

if (isMain(import.meta.url)) await standalone(measure)
