/** The local cluster API (`pgfollow/cluster`): what scripts/cluster.mjs, tests and benchmarks use. */
export { type Binaries, findBinaries } from './binaries.ts'
export {
  cloneReplica,
  type ClusterState,
  DEFAULT_PORTS,
  descriptorOf,
  destroy,
  down,
  type HaState,
  isRunning,
  leaderOf,
  type LocalNode,
  nodePaths,
  nodePid,
  nodeUrl,
  planPorts,
  readState,
  requireState,
  STATE_FILE,
  up,
  type UpOptions,
  type UpResult,
  waitForStreaming,
  writeStandbyConfig,
  writeState,
} from './local.ts'
export { freePort, freePorts, isPortFree } from './ports.ts'
export { isAlive, readPid, runningPid, startServer, stopServer } from './process.ts'
export { type ClusterStatus, type ServerStatus, status } from './status.ts'
export { reachableBinaries, SERVER_ROOT } from './reachable.ts'
export { serverUser } from './user.ts'
export { failover, type FailoverOptions, type FailoverResult, fence } from './failover.ts'
export { DEFAULT_ETCD_PORTS, DEFAULT_REST_PORTS, findHaBinaries, type HaUpOptions, recordPatroniRoles, restEndpoints, upHa } from './ha/run.ts'
export { clusterView, leaderMember, patroniSwitchover, type SwitchoverResult } from './ha/rest.ts'
export { HA_SCOPE, HA_TIMING, patroniConfig, type PatroniNodeOptions, patroniYaml } from '../topology.ts'
