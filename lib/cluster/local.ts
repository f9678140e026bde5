/**
 * The local cluster: a leader and streaming replicas as PostgreSQL processes
 * on 127.0.0.1, in one directory that records what it holds (pgfollow.json)
 * and the descriptor clients use (cluster.json, mode 0600).
 */
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import postgres from 'postgres'
import { type ClusterDescriptor, DEFAULT_CLUSTER_DIR, DESCRIPTOR_FILE, readEnv } from '../tag/descriptor.ts'
import { ClusterError, ConfigError } from '../tag/errors.ts'
import { migrate } from '../ops/migrate.ts'
import {
  DATABASE,
  defaultPorts,
  generatePassword,
  hbaLines,
  nodeNames,
  parsePort,
  parseSynchronousMode,
  postgresUrl,
  REPLICATOR_ROLE,
  scramVerifier,
  serverSettings,
  slotName,
  standbySettings,
  SUPERUSER,
  type SynchronousMode,
  toConfLines,
} from '../topology.ts'
import { renderPsqlVariables, sqlText } from '../ops/sqlfiles.ts'
import type { Binaries } from './binaries.ts'
import { cloneDataDir, createSlot } from './clone.ts'
import { assertPortsFree } from './ports.ts'
import { runAs, runningPid, startServer, stopServer } from './process.ts'
import { placeNodes, reachableBinaries } from './reachable.ts'
import { giveTo, type ServerUser, serverUser } from './user.ts'
import { downHa, stopHa, upHa } from './ha/run.ts'

export const STATE_FILE = 'pgfollow.json'
export { DEFAULT_PORTS } from '../topology.ts'
export const HOST = '127.0.0.1'

export interface LocalNode {
  name: string
  role: 'leader' | 'replica'
  port: number
  /** Set by failover: this old leader must not start until it is rejoined as a replica. */
  fenced?: boolean
}

/** Set on a cluster Patroni manages (`up --ha`, lib/cluster/ha): what the embedded one does not have. */
export interface HaState {
  /** etcd's client and peer ports. */
  etcd: { client: number; peer: number }
  /** Patroni REST port per node, in the order of `nodes`. */
  rest: number[]
  /** The PostgreSQL bin directory Patroni runs (with pg_rewind and pg_basebackup). */
  pgBin: string
}

export interface ClusterState {
  tool: 'pgfollow'
  version: 1
  database: string
  superuser: string
  password: string
  replicatorPassword: string
  synchronous: SynchronousMode
  nodes: LocalNode[]
  /** Where the node dirs are when the server user cannot reach this cluster dir (reachable.ts); else the cluster dir. */
  nodesDir?: string
  ha?: HaState
}

export interface UpOptions {
  dir?: string
  ports?: number[]
  replicas?: number
  migrate?: boolean
  synchronous?: SynchronousMode
  /** Extra server settings for every node (e.g. tuned for tests). */
  settings?: Record<string, string>
  onProgress?: (message: string) => void
}

export interface UpResult {
  dir: string
  descriptor: ClusterDescriptor
  nodes: LocalNode[]
  /** What `up` did: created the cluster, started stopped nodes, or nothing. */
  action: 'created' | 'started' | 'already-running'
  started: string[]
}

/** Where one node keeps its files inside the cluster dir. */
export interface NodePaths {
  home: string
  dataDir: string
  logFile: string
}

/** The paths of one node inside the cluster dir. */
export function nodePaths(dir: string, name: string): NodePaths {
  const home = join(readState(dir)?.nodesDir ?? dir, name)
  return { home, dataDir: join(home, 'data'), logFile: join(home, 'postgres.log') }
}

/** postgres:// URL of a node for the superuser. */
export function nodeUrl(state: ClusterState, node: LocalNode, database: string = state.database): string {
  return postgresUrl({ user: state.superuser, password: state.password, host: HOST, port: node.port, database })
}

export function leaderOf(state: ClusterState): LocalNode {
  const leader = state.nodes.find((node) => node.role === 'leader')
  if (!leader) throw new ClusterError('The cluster state names no leader: run failover, or destroy and recreate the cluster.')
  return leader
}

/** The descriptor of the cluster, as clients read it. */
export function descriptorOf(state: ClusterState): ClusterDescriptor {
  return {
    leader: nodeUrl(state, leaderOf(state)),
    replicas: state.nodes.filter((node) => node.role === 'replica').map((node) => nodeUrl(state, node)),
    ...(state.ha ? { patroni: state.ha.rest.map((port) => `http://${HOST}:${port}`) } : {}),
  }
}

/** Reads pgfollow.json; null when the dir holds no cluster. */
export function readState(dir: string): ClusterState | null {
  const file = join(dir, STATE_FILE)
  if (!existsSync(file)) return null
  let state: ClusterState
  try {
    state = JSON.parse(readFileSync(file, 'utf8')) as ClusterState
  } catch (error) {
    throw new ClusterError(`${file} is not valid JSON, so it was not written by pgfollow: choose another --dir.`, { cause: error })
  }
  if (state?.tool !== 'pgfollow') throw new ClusterError(`${file} was not written by pgfollow: choose another --dir.`)
  return state
}

/** Writes the state and the descriptor, both readable only by their owner. */
export function writeState(dir: string, state: ClusterState): void {
  writeFileSync(join(dir, STATE_FILE), JSON.stringify(state, null, 2) + '\n', { mode: 0o600 })
  writeFileSync(join(dir, DESCRIPTOR_FILE), JSON.stringify(descriptorOf(state), null, 2) + '\n', { mode: 0o600 })
  // writeFileSync keeps the mode of an existing file: make sure.
  chmodSync(join(dir, STATE_FILE), 0o600)
  chmodSync(join(dir, DESCRIPTOR_FILE), 0o600)
}

/** Whether the server of a node runs now. */
export function isRunning(dir: string, name: string): boolean {
  return runningPid(nodePaths(dir, name).dataDir) !== null
}

/** The postmaster pid of a node, or null when it is down. */
export function nodePid(dir: string, name: string): number | null {
  return runningPid(nodePaths(dir, name).dataDir)
}

/**
 * Brings the cluster up: creates it when the dir is new, starts the nodes
 * that are stopped, or says it is already running and changes nothing.
 */
// deno-lint-ignore require-await -- async so that a bad dir or state rejects instead of throwing
export async function up(options: UpOptions = {}): Promise<UpResult> {
  const dir = resolve(options.dir ?? DEFAULT_CLUSTER_DIR)
  const progress = options.onProgress ?? (() => {})
  const existing = readState(dir)
  if (existing?.ha) return upHa({ ...options, dir })
  if (existing) {
    assertSameShape(existing, options, dir)
    return startExisting(dir, existing, options, progress)
  }
  return create(dir, options, progress)
}

/** Flags that contradict an existing cluster are an error, not a silent rebuild. */
function assertSameShape(state: ClusterState, options: UpOptions, dir: string): void {
  const ports = state.nodes.map((node) => node.port)
  if (options.ports && options.ports.join(',') !== ports.join(',')) {
    throw new ConfigError(
      `The cluster in ${dir} uses ports ${ports.join(',')}, not ${options.ports.join(',')}. ` +
        'Omit --ports to start it, or `destroy` it first to recreate it with other ports.',
    )
  }
  if (options.replicas !== undefined && options.replicas !== state.nodes.length - 1) {
    throw new ConfigError(
      `The cluster in ${dir} has ${state.nodes.length - 1} replica(s), not ${options.replicas}. ` +
        'Omit --replicas to start it, or `destroy` it first to recreate it.',
    )
  }
}

/** Validates --ports / --replicas and fills in the proof of concept's defaults. */
export function planPorts(ports: number[] | undefined, replicas: number | undefined): number[] {
  if (replicas !== undefined && (!Number.isInteger(replicas) || replicas < 0 || replicas > 20)) {
    throw new ConfigError(`--replicas must be a whole number from 0 to 20, not ${replicas}.`)
  }
  const count = replicas ?? (ports ? ports.length - 1 : 2)
  const planned = ports ?? defaultPorts(count)
  if (planned.length !== count + 1) {
    throw new ConfigError(
      `--ports lists ${planned.length} port(s) but the cluster has ${count + 1} nodes (a leader and ${count} replica(s)): give one port per node.`,
    )
  }
  for (const port of planned) parsePort(port, '--ports')
  if (new Set(planned).size !== planned.length) throw new ConfigError(`--ports has a port twice (${planned.join(',')}): each node needs its own.`)
  return planned
}

/**
 * The state of a cluster about to be created, embedded or HA: fresh
 * passwords (the superuser's from PGFOLLOW_PASSWORD when set), the
 * application database and superuser, and where its node dirs go.
 */
export function newClusterState(
  { nodes, synchronous, nodesDir, ha }: { nodes: LocalNode[]; synchronous: SynchronousMode; nodesDir?: string; ha?: HaState },
): ClusterState {
  return {
    tool: 'pgfollow',
    version: 1,
    database: DATABASE,
    superuser: SUPERUSER,
    password: readEnv().password ?? generatePassword(),
    replicatorPassword: generatePassword(),
    synchronous,
    nodes,
    ...(nodesDir ? { nodesDir } : {}),
    ...(ha ? { ha } : {}),
  }
}

async function create(dir: string, options: UpOptions, progress: (message: string) => void): Promise<UpResult> {
  const ports = planPorts(options.ports, options.replicas)
  const synchronous = parseSynchronousMode(options.synchronous ?? 'off', '--synchronous')
  const names = nodeNames(ports.length - 1)
  const nodes: LocalNode[] = ports.map((port, i) => ({ name: names[i], role: i === 0 ? 'leader' : 'replica', port }))
  await assertPortsFree(nodes.map((node) => ({ port: node.port, node: node.name })))
  const user = serverUser()
  const binaries = reachableBinaries(user)
  prepareDir(dir)
  const nodesDir = placeNodes(dir, user)

  const state = newClusterState({ nodes, synchronous, nodesDir })
  // Written first, so a cluster that fails half-way can still be destroyed.
  writeState(dir, state)

  const [leader, ...replicas] = nodes
  progress(`initialising the leader in ${nodePaths(dir, leader.name).dataDir}`)
  await initLeader(dir, state, binaries, user, options.settings ?? {})
  await startNode(dir, leader, binaries, user)
  await setUpLeader(state, leader)

  for (const replica of replicas) {
    progress(`cloning ${replica.name} from the leader`)
    await cloneReplica(dir, state, replica, user)
    progress(`starting ${replica.name} on port ${replica.port}`)
    await startNode(dir, replica, binaries, user)
  }
  await finishUp(dir, state, options, progress)
  return { dir, descriptor: descriptorOf(state), nodes: state.nodes, action: 'created', started: nodes.map((node) => node.name) }
}

async function startExisting(dir: string, state: ClusterState, options: UpOptions, progress: (message: string) => void): Promise<UpResult> {
  // A fenced node was the leader before a failover: it comes back only as a fresh clone of the new leader.
  const fenced = state.nodes.filter((node) => node.fenced)
  const stopped = state.nodes.filter((node) => !node.fenced && !isRunning(dir, node.name))
  const leader = leaderOf(state)
  if (stopped.length === 0 && fenced.length === 0 && (await unservedReplicas(dir, state)).length === 0) {
    return { dir, descriptor: descriptorOf(state), nodes: state.nodes, action: 'already-running', started: [] }
  }
  await assertPortsFree([...stopped, ...fenced.filter((node) => !isRunning(dir, node.name))].map((node) => ({ port: node.port, node: node.name })))
  const user = serverUser()
  const binaries = reachableBinaries(user)
  // The leader first: replicas connect to it as they start, and it says which slots still serve them.
  if (stopped.includes(leader)) {
    progress(`starting ${leader.name} on port ${leader.port}`)
    await startNode(dir, leader, binaries, user)
  }
  const unserved = await unservedReplicas(dir, state)
  const recloned = unserved.map(({ node }) => node)
  const ordered = stopped.filter((node) => node !== leader && !recloned.includes(node))
  for (const node of ordered) {
    progress(`starting ${node.name} on port ${node.port}`)
    await startNode(dir, node, binaries, user)
  }
  for (const { node, why } of unserved) {
    // Its WAL is gone from the leader: following on would never catch up.
    await stopServer(nodePaths(dir, node.name).dataDir, 'fast')
    progress(`re-cloning ${node.name}: its slot on the leader ${why}, so the WAL it needs is gone`)
    await dropSlot(state, slotName(node.name))
    await cloneReplica(dir, state, node, user)
    progress(`starting ${node.name} on port ${node.port}`)
    await startNode(dir, node, binaries, user)
  }
  for (const node of fenced) {
    // No pg_rewind in these binaries, and its WAL may have diverged: re-clone rather than follow.
    await stopServer(nodePaths(dir, node.name).dataDir, 'fast')
    progress(`re-cloning ${node.name} from ${leaderOf(state).name}, the leader since a failover fenced ${node.name}`)
    await cloneReplica(dir, state, node, user)
    delete node.fenced
    writeState(dir, state)
    progress(`starting ${node.name} on port ${node.port} as a replica`)
    await startNode(dir, node, binaries, user)
  }
  await finishUp(dir, state, options, progress)
  const started = [...(stopped.includes(leader) ? [leader] : []), ...ordered, ...recloned, ...fenced].map((node) => node.name)
  return { dir, descriptor: descriptorOf(state), nodes: state.nodes, action: 'started', started }
}

/**
 * Replicas (not fenced) whose slot on the leader can no longer serve them:
 * invalidated by PostgreSQL, or gone. Such a replica cannot stream again;
 * `up` clones it afresh, as the Docker replicas' entrypoint does. Empty when
 * the leader is down (then nothing can be said, and `up` starts it first).
 */
async function unservedReplicas(dir: string, state: ClusterState): Promise<{ node: LocalNode; why: string }[]> {
  const replicas = state.nodes.filter((node) => node.role === 'replica' && !node.fenced)
  if (replicas.length === 0 || !isRunning(dir, leaderOf(state).name)) return []
  const admin = postgres(nodeUrl(state, leaderOf(state)), { max: 1, onnotice: () => {} })
  try {
    const rows = await admin.unsafe(sqlText('replication/slot-state.sql'), [replicas.map((node) => slotName(node.name))])
    const bySlot = new Map(rows.map((row) => [row.slot_name as string, row]))
    return replicas.flatMap((node) => {
      const slot = bySlot.get(slotName(node.name))
      if (!slot) return [{ node, why: `(${slotName(node.name)}) is gone` }]
      if (slot.invalidation_reason) return [{ node, why: `was invalidated (${slot.invalidation_reason})` }]
      if (slot.wal_status === 'lost') return [{ node, why: 'was invalidated (wal_status lost)' }]
      return []
    })
  } finally {
    await admin.end({ timeout: 5 })
  }
}

/** Drops a slot (an invalidated one cannot be reused), waiting briefly for a walsender that still holds it. */
async function dropSlot(state: ClusterState, slot: string): Promise<void> {
  const admin = postgres(nodeUrl(state, leaderOf(state)), { max: 1, onnotice: () => {} })
  try {
    for (let attempt = 0;; attempt++) {
      try {
        await admin`select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = ${slot}`
        return
      } catch (error) {
        // 55006: the slot is active; its walsender ends once the replica is gone.
        if ((error as { code?: string }).code !== '55006' || attempt >= 50) throw error
        await new Promise((r) => setTimeout(r, 100))
      }
    }
  } finally {
    await admin.end({ timeout: 5 })
  }
}

/** Common end of `up`: replicas streaming, migrations applied, descriptor written. */
export async function finishUp(dir: string, state: ClusterState, options: UpOptions, progress: (message: string) => void): Promise<void> {
  const replicaNames = state.nodes.filter((node) => node.role === 'replica').map((node) => node.name)
  if (replicaNames.length > 0) {
    progress(`waiting for ${replicaNames.join(', ')} to stream`)
    await waitForStreaming(nodeUrl(state, leaderOf(state)), replicaNames)
  }
  if (options.migrate !== false) {
    const descriptor = descriptorOf(state)
    const result = await migrate({ leader: descriptor.leader, replicas: descriptor.replicas, onProgress: progress })
    if (result.applied.length > 0) progress(`applied ${result.applied.join(', ')}`)
  }
  writeState(dir, state)
}

/**
 * The cluster dir: ours when it holds pgfollow.json, free when missing or
 * empty, else it belongs to something else and we refuse to touch it.
 */
export function prepareDir(dir: string): void {
  if (existsSync(dir)) {
    if (!statSync(dir).isDirectory()) throw new ClusterError(`${dir} exists and is not a directory: choose another --dir.`)
    if (readdirSync(dir).length > 0) {
      throw new ClusterError(`${dir} is not empty and holds no pgfollow cluster (no ${STATE_FILE}): choose another --dir, or empty it yourself.`)
    }
  }
  mkdirSync(dir, { recursive: true })
  // Others may pass through (the server user must reach its node dirs) but not list it.
  chmodSync(dir, 0o711)
}

async function initLeader(
  dir: string,
  state: ClusterState,
  binaries: Binaries,
  user: ServerUser | null,
  extra: Record<string, string>,
): Promise<void> {
  const leader = leaderOf(state)
  const { home, dataDir } = makeNodeHome(dir, leader.name, user)
  const passwordFile = join(home, 'initdb.pw')
  writeFileSync(passwordFile, state.password + '\n', { mode: 0o600 })
  giveTo(user, passwordFile)
  try {
    const result = await runAs(user, binaries.initdb, [
      '-D',
      dataDir,
      '-U',
      state.superuser,
      `--pwfile=${passwordFile}`,
      '--auth=scram-sha-256',
      '--encoding=UTF8',
      '--locale=C',
    ])
    if (result.code !== 0) throw new ClusterError(`initdb failed for the leader:\n${result.stderr.trim() || result.stdout.trim()}`)
  } finally {
    rmSync(passwordFile, { force: true })
  }
  const replicaNames = state.nodes.filter((node) => node.role === 'replica').map((node) => node.name)
  const settings = {
    ...serverSettings({ listen: HOST, replicaNames, synchronous: state.synchronous }),
    // TCP on loopback only: no unix socket, so pg_hba needs no `local` line at all.
    unix_socket_directories: '',
    ...extra,
  }
  writeFileSync(join(dataDir, 'pgfollow.conf'), '# Written by pgfollow; shared by every node.\n' + toConfLines(settings))
  const conf = readFileSync(join(dataDir, 'postgresql.conf'), 'utf8')
  writeFileSync(join(dataDir, 'postgresql.conf'), conf + "\ninclude = 'pgfollow.conf'\n")
  writeFileSync(join(dataDir, 'pg_hba.conf'), hbaLines(`${HOST}/32`))
  writeFileSync(join(dataDir, 'postgresql.auto.conf'), toConfLines({ port: String(leader.port), cluster_name: leader.name }))
  giveTo(user, dataDir)
}

export function makeNodeHome(dir: string, name: string, user: ServerUser | null) {
  const paths = nodePaths(dir, name)
  mkdirSync(paths.home, { recursive: true, mode: 0o700 })
  giveTo(user, paths.home)
  return paths
}

/** Replicator role and database, once, on a fresh leader. */
async function setUpLeader(state: ClusterState, leader: LocalNode): Promise<void> {
  // With --synchronous any|first the leader already lists its standbys, but
  // none exists yet: a commit that waited for one would wait forever.
  const admin = postgres(nodeUrl(state, leader, 'postgres'), { max: 1, onnotice: () => {}, connection: { synchronous_commit: 'local' } })
  try {
    await admin.unsafe(
      renderPsqlVariables(sqlText('replication/replicator.sql'), {
        replicator: REPLICATOR_ROLE,
        replicator_password: scramVerifier(state.replicatorPassword),
      }),
    )
    await admin.unsafe(`create database ${state.database}`)
  } finally {
    await admin.end({ timeout: 5 })
  }
}

/** Slot, base copy and standby settings for one replica (used by up and by rejoin). */
export async function cloneReplica(dir: string, state: ClusterState, replica: LocalNode, user: ServerUser | null = serverUser()): Promise<void> {
  const leader = leaderOf(state)
  const leaderUrl = nodeUrl(state, leader)
  const admin = postgres(leaderUrl, { max: 1, onnotice: () => {} })
  try {
    await createSlot(admin, slotName(replica.name))
  } finally {
    await admin.end({ timeout: 5 })
  }
  const { home, dataDir } = nodePaths(dir, replica.name)
  rmSync(dataDir, { recursive: true, force: true })
  makeNodeHome(dir, replica.name, user)
  await cloneDataDir(leaderUrl, nodePaths(dir, leader.name).dataDir, dataDir, `pgfollow clone of ${replica.name}`)
  writeStandbyConfig(dataDir, state, replica, leader)
  giveTo(user, home)
}

/** postgresql.auto.conf and standby.signal: this data dir follows `leader`. */
export function writeStandbyConfig(dataDir: string, state: ClusterState, replica: LocalNode, leader: LocalNode): void {
  const standby = standbySettings({
    leaderHost: HOST,
    leaderPort: leader.port,
    replicatorPassword: state.replicatorPassword,
    applicationName: replica.name,
  })
  const autoConf = join(dataDir, 'postgresql.auto.conf')
  const own = new Set(['port', 'cluster_name', 'primary_conninfo', 'primary_slot_name'])
  // Keep what ALTER SYSTEM put there (e.g. recovery_min_apply_delay), replace what is ours.
  const kept = existsSync(autoConf)
    ? readFileSync(autoConf, 'utf8').split('\n').filter((line) => line.trim() && !own.has(line.split('=')[0].trim()))
    : []
  const lines = toConfLines({ port: String(replica.port), cluster_name: replica.name, ...standby })
  writeFileSync(autoConf, [...kept, lines].join('\n'), { mode: 0o600 })
  writeFileSync(join(dataDir, 'standby.signal'), '', { mode: 0o600 })
}

function startNode(dir: string, node: LocalNode, binaries: Binaries, user: ServerUser | null): Promise<number> {
  const { dataDir, logFile } = nodePaths(dir, node.name)
  return startServer({ binaries, user, dataDir, logFile, name: node.name })
}

/** Polls pg_stat_replication until every named replica streams. */
export async function waitForStreaming(leaderUrl: string, names: string[], timeoutMs = 60_000): Promise<void> {
  const leader = postgres(leaderUrl, { max: 1, onnotice: () => {} })
  const deadline = Date.now() + timeoutMs
  try {
    for (;;) {
      const rows = await leader`select application_name, state from pg_stat_replication`
      const streaming = new Set(rows.filter((row) => row.state === 'streaming').map((row) => row.application_name))
      const missing = names.filter((name) => !streaming.has(name))
      if (missing.length === 0) return
      if (Date.now() > deadline) {
        throw new ClusterError(
          `${missing.join(', ')} did not reach "streaming" within ${timeoutMs / 1000} s: see its postgres.log in the cluster dir.`,
        )
      }
      await new Promise((r) => setTimeout(r, 50))
    }
  } finally {
    await leader.end({ timeout: 5 })
  }
}

/** Fast shutdown of every node, leader first so replicas receive its last WAL; data is kept. */
export async function down(dirOption?: string): Promise<string[]> {
  const dir = resolve(dirOption ?? DEFAULT_CLUSTER_DIR)
  const state = requireState(dir)
  if (state.ha) return downHa(dir, state)
  const ordered = [...state.nodes].sort((a, b) => (a.role === 'leader' ? -1 : b.role === 'leader' ? 1 : 0))
  const stopped: string[] = []
  for (const node of ordered) {
    if (await stopServer(nodePaths(dir, node.name).dataDir, 'fast')) stopped.push(node.name)
  }
  return stopped
}

/** down, then remove the dir. Refuses a dir that is not a pgfollow cluster. */
export async function destroy(dirOption?: string): Promise<void> {
  const dir = resolve(dirOption ?? DEFAULT_CLUSTER_DIR)
  if (!existsSync(dir)) return
  const state = requireState(dir)
  if (state.ha) await stopHa(dir, state, 'now')
  for (const node of state.nodes) await stopServer(nodePaths(dir, node.name).dataDir, 'immediate')
  if (state.nodesDir) rmSync(state.nodesDir, { recursive: true, force: true })
  rmSync(dir, { recursive: true, force: true })
}

export function requireState(dir: string): ClusterState {
  const state = readState(dir)
  if (!state) {
    throw new ClusterError(`No pgfollow cluster in ${dir} (no ${STATE_FILE}). Create one with \`npx zx scripts/cluster.mjs up --dir ${dir}\`.`)
  }
  return state
}
