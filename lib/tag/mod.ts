/** pgfollow: the replica-aware sql tag and what it is built from. Re-exports only. */
export { connect } from './connect.ts'
export type { CustomTypes } from './connect.ts'
export type { HealthEvent, PgfollowSql, PinnedSql, RoutedSql, SessionSql } from './tag.ts'
export type { NodeStatus } from './router.ts'
export { type Balance, BALANCES, type ConnectOptions } from './options.ts'
export { type Classification, classifyStatement, type StatementKind } from './classify.ts'
export { type ClusterDescriptor, DEFAULT_CLUSTER_DIR, descriptorPath, loadDescriptor, validateDescriptor } from './descriptor.ts'
export {
  ClusterError,
  ConfigError,
  LeaderUnavailableError,
  NoReplicaError,
  PgfollowError,
  redactUrl,
  ReplayTimeoutError,
  WriteOnReplicaError,
} from './errors.ts'
export { formatLsn, lsnDistance, parseLsn } from './lsn.ts'
