/** pgfollow: the replica-aware sql tag and what it is built from. Re-exports only. */
export { DEFAULT_CLUSTER_DIR, descriptorPath, loadDescriptor, validateDescriptor, type ClusterDescriptor } from './config.ts'
export { ClusterError, ConfigError, LeaderUnavailableError, NoReplicaError, PgfollowError, redactUrl, ReplayTimeoutError } from './errors.ts'
export { formatLsn, lsnDistance, parseLsn } from './lsn.ts'
export { migrate, readMigrations, waitForReplay, type MigrateOptions, type MigrateResult } from './migrate.ts'
