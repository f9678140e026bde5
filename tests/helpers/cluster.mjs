// A real local cluster for a test file: free ports, a temp dir, and a
// stop() that ends every server by pid and removes the dir.
import { execFileSync } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import process from 'node:process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { destroy, findHaBinaries, freePorts, nodePaths, nodePid, readState, up, upHa } from 'pgfollow/cluster'

/**
 * Starts a leader and `replicas` streaming replicas (migrated unless
 * `migrate: false`). Returns the descriptor plus helpers to poke at nodes.
 */
export function startCluster({ replicas = 2, migrate = true, synchronous, settings } = {}) {
  return inTempDir('pgfollow-test-', async (dir) => {
    const ports = await freePorts(replicas + 1)
    const result = await up({ dir, ports, replicas, migrate, synchronous, settings: { fsync: 'off', ...settings } })
    return { ports, descriptor: result.descriptor }
  })
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
export function startHaCluster({ replicas = 2, migrate = false, synchronous, settings } = {}) {
  return inTempDir('pgfollow-ha-test-', async (dir) => {
    const all = await freePorts(2 * (replicas + 1) + 2)
    const ports = all.slice(0, replicas + 1)
    const restPorts = all.slice(replicas + 1, 2 * (replicas + 1))
    const etcdPorts = all.slice(2 * (replicas + 1))
    const started = Date.now()
    const result = await upHa({ dir, ports, replicas, migrate, synchronous, restPorts, etcdPorts, settings: { fsync: 'off', ...settings } })
    return {
      ports,
      seconds: (Date.now() - started) / 1000,
      descriptor: result.descriptor,
      patroni: result.descriptor.patroni,
      /** The member name of the node on `port`. */
      nameOf: (port) => readState(dir).nodes.find((node) => node.port === port)?.name,
    }
  })
}

/**
 * Runs `bringUp(dir)` on a cluster dir inside a fresh temp dir and returns
 * what it returns plus the helpers every test cluster has. stop(), or a
 * failed bring-up, destroys the cluster and removes the temp dir.
 */
async function inTempDir(prefix, bringUp) {
  const parent = mkdtempSync(join(tmpdir(), prefix))
  // The servers run as an unprivileged user when we are root: let it pass.
  chmodSync(parent, 0o755)
  const dir = join(parent, 'cluster')
  const removeParent = () => rmSync(parent, { recursive: true, force: true })
  try {
    const specific = await bringUp(dir)
    return {
      dir,
      state: () => readState(dir),
      pid: (name) => nodePid(dir, name),
      dataDir: (name) => nodePaths(dir, name).dataDir,
      /** Signals a node's postmaster and its backends, by pid: a crash as a whole machine would. */
      kill: (name, signal = 'SIGKILL') => killTree(nodePid(dir, name), signal),
      async stop() {
        await destroy(dir)
        removeParent()
      },
      ...specific,
    }
  } catch (error) {
    await destroy(dir).catch(() => {})
    removeParent()
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
