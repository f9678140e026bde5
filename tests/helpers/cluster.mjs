// A real local cluster for a test file: free ports, a temp dir, and a
// stop() that ends every server by pid and removes the dir.
import { execFileSync } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import process from 'node:process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { destroy, freePort, nodePaths, nodePid, readState, up } from 'pgfollow/cluster'

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
