/** pgfollow: the replica-aware sql tag and what it is built from. Re-exports only. */
export { connect } from './connect.ts'
export type { HealthEvent, PgfollowSql, RoutedSql, SessionSql } from './tag.ts'
export type { NodeStatus } from './router.ts'
export type { Balance, ConnectOptions } from './options.ts'
export { type Classification, classifyStatement, type StatementKind } from './classify.ts'
export { type ClusterDescriptor, DEFAULT_CLUSTER_DIR, descriptorPath, loadDescriptor, validateDescriptor } from './config.ts'
export { ClusterError, ConfigError, LeaderUnavailableError, NoReplicaError, PgfollowError, redactUrl, ReplayTimeoutError } from './errors.ts'
export { formatLsn, lsnDistance, parseLsn } from './lsn.ts'
export { migrate, type MigrateOptions, type MigrateResult, readMigrations, waitForReplay } from './migrate.ts'
export { randomPage, readPage, seededRandom, type WorkloadSql, writeBlog, type WrittenBlog } from './workload.ts'
export { judgeLag, type LagLimits, LagProbe, type LagSnapshot, lagSnapshot, type LagVerdict, type LeaderLag, type ReplicaLag } from './lag.ts'
export {
  assertKnownFlags,
  assertOnlyKnownFlags,
  formatBytes,
  formatMs,
  formatTable,
  parseChoice,
  parseCount,
  parseDuration,
  percentile,
  scriptArgs,
  sparkline,
  stripAnsi,
} from './cli.ts'
export { CONSISTENCIES, type Consistency, type LoadOptions, type LoadRun, type LoadSummary, type LoadTick, runLoad } from './load.ts'
export { renderLoadReportHtml, renderLoadReportSvg } from './report.ts'
