// A real local cluster for a test file: free ports, a temp dir, and a
// stop() that ends every server by pid and removes the dir.
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
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
