// A real local cluster for a test file: free ports, a temp dir, and a
// stop() that ends every server by pid and removes the dir.
import { execFileSync } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import process from 'node:process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { destroy, findHaBinaries, freePort, nodePaths, nodePid, readState, up, upHa } from 'pgfollow/cluster'

/**
 * Starts a leader and `replicas` streaming replicas (migrated unless
 * `migrate: false`). Returns the descriptor plus helpers to poke at nodes.
 */
export async function startCluster({ replicas = 2, migrate = true, synchronous, settings } = {}) {
  const parent = mkdtempSync(join(tmpdir(), 'pgfollow-test-'))
  // The servers run as an unprivileged user when we are root: let it pass.
  chmodSync(parent, 0o755)
  const dir = join(parent, 'cluster')
  const ports = []
  for (let i = 0; i <= replicas; i++) ports.push(await freePort())
  try {
    const result = await up({ dir, ports, replicas, migrate, synchronous, settings: { fsync: 'off', ...settings } })
    return {
      dir,
      ports,
      descriptor: result.descriptor,
      state: () => readState(dir),
      pid: (name) => nodePid(dir, name),
      dataDir: (name) => nodePaths(dir, name).dataDir,
      /** Signals a node's postmaster and its backends, by pid: a crash as a whole machine would. */
      kill: (name, signal = 'SIGKILL') => killTree(nodePid(dir, name), signal),
      async stop() {
        await destroy(dir)
        rmSync(parent, { recursive: true, force: true })
      },
    }
  } catch (error) {
    await destroy(dir).catch(() => {})
    rmSync(parent, { recursive: true, force: true })
    throw error
  }
}

/**
 * Why Patroni's HA cluster cannot run on this machine (a missing Debian
 * package), or null when it can: HA tests print it and register no failing test.
 */
export function haUnavailable() {
  try {
    findHaBinaries()
    return null
  } catch (error) {
    return error.message
  }
}

/**
 * A Patroni + etcd cluster (`up --ha`) on free ports in a temp dir; the
 * same helpers as startCluster, plus the Patroni REST endpoints.
 */
export async function startHaCluster({ replicas = 2, migrate = false, synchronous, settings } = {}) {
  const parent = mkdtempSync(join(tmpdir(), 'pgfollow-ha-test-'))
  chmodSync(parent, 0o755)
  const dir = join(parent, 'cluster')
  const free = async (count) => {
    const ports = []
    while (ports.length < count) {
      const port = await freePort()
      if (!ports.includes(port)) ports.push(port)
    }
    return ports
  }
  const all = await free(2 * (replicas + 1) + 2)
  const ports = all.slice(0, replicas + 1)
  const restPorts = all.slice(replicas + 1, 2 * (replicas + 1))
  const etcdPorts = all.slice(2 * (replicas + 1))
  const started = Date.now()
  try {
    const result = await upHa({ dir, ports, replicas, migrate, synchronous, restPorts, etcdPorts, settings: { fsync: 'off', ...settings } })
    return {
      dir,
      ports,
      seconds: (Date.now() - started) / 1000,
      descriptor: result.descriptor,
      patroni: result.descriptor.patroni,
      pid: (name) => nodePid(dir, name),
      /** The member name of the node on `port`. */
      nameOf: (port) => readState(dir).nodes.find((node) => node.port === port)?.name,
      kill: (name, signal = 'SIGKILL') => killTree(nodePid(dir, name), signal),
      async stop() {
        await destroy(dir)
        rmSync(parent, { recursive: true, force: true })
      },
    }
  } catch (error) {
    await destroy(dir).catch(() => {})
    rmSync(parent, { recursive: true, force: true })
    throw error
  }
}

/** The postmaster and its children (backends, walsender...), listed before any is signalled. */
function killTree(pid, signal) {
  if (!pid) throw new Error('that node is not running')
  let children = []
  try {
    children = execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)]).toString().split(/\s+/).filter(Boolean).map(Number)
  } catch {
    // ps exits 1 when there are no children
  }
  for (const target of [pid, ...children]) {
    try {
      process.kill(target, signal)
    } catch {
      // already gone
    }
  }
}
