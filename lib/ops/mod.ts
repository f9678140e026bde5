/** The operator toolkit (`pgfollow/ops`): lag, load, migrations, reports and CLI helpers the scripts share. Re-exports only. */
export { migrate, type MigrateOptions, type MigrateResult, readMigrations, waitForReplay } from './migrate.ts'
export { randomPage, readPage, seededRandom, type WorkloadSql, writeBlog, type WrittenBlog } from './workload.ts'
export { type NodeReading, type ReplicaReading, ReplicationReader, type ReplicationReading, type SlotRow } from './replication.ts'
/** The states of a replica that answers but does not follow the leader (the tag's verdict, lib/tag/follow.ts). */
export { FOLLOW_PROBLEMS, type FollowProblem } from '../tag/follow.ts'
export { judgeLag, type LagLimits, LagProbe, type LagSnapshot, lagSnapshot, type LagVerdict, type LeaderLag, type ReplicaLag } from './lag.ts'
export {
  assertKnownFlags,
  assertOnlyKnownFlags,
  displayPath,
  formatBytes,
  formatMs,
  formatTable,
  parseChoice,
  parseCount,
  parseDuration,
  percentile,
  scriptArgs,
  sparkline,
  type StateTone,
  stateTone,
  stripAnsi,
} from './cli.ts'
export { CONSISTENCIES, type Consistency, type LoadOptions, type LoadRun, type LoadSummary, type LoadTick, runLoad } from './load.ts'
export { renderLoadReportHtml, renderLoadReportSvg } from './report.ts'
