/** The local cluster API (`pgfollow/cluster`): what scripts/cluster.mjs, tests and benchmarks use. */
export { findBinaries, type Binaries } from './binaries.ts'
export {
  cloneReplica,
  DEFAULT_PORTS,
  descriptorOf,
  destroy,
  down,
  isRunning,
  leaderOf,
  nodePaths,
  nodePid,
  nodeUrl,
  planPorts,
  readState,
  requireState,
  STATE_FILE,
  up,
  waitForStreaming,
  writeStandbyConfig,
  writeState,
  type ClusterState,
  type NodeState,
  type UpOptions,
  type UpResult,
} from './local.ts'
export { freePort, isPortFree } from './ports.ts'
export { isAlive, readPid, runningPid, startServer, stopServer } from './process.ts'
export { status, type ClusterStatus, type NodeStatus } from './status.ts'
export { serverUser } from './user.ts'
export { failover, fence, type FailoverOptions, type FailoverResult } from './failover.ts'
