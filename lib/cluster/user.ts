/**
 * PostgreSQL refuses to run as root. As root we run every server as an
 * unprivileged user (the existing `postgres` user, else a `pgfollow` system
 * user we create), and that user must reach the binaries and the data dirs.
 */
import { execFileSync } from 'node:child_process'
import { statSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import process from 'node:process'
import { ClusterError } from '../tag/errors.ts'

export interface ServerUser {
  name: string
  uid: number
  gid: number
}

const CANDIDATES = ['postgres', 'pgfollow']

/** The user servers run as: null means "ourselves" (we are not root). */
export function serverUser(): ServerUser | null {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return null
  for (const name of CANDIDATES) {
    const user = lookupUser(name)
    if (user) return user
  }
  try {
    execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', 'pgfollow'], {
      stdio: 'pipe',
    })
  } catch (error) {
    throw new ClusterError(
      'Running as root, and PostgreSQL refuses root: could not create the unprivileged user "pgfollow" ' +
        `(${(error as Error).message.split('\n')[0]}). Create a user named postgres or pgfollow, or run as a normal user.`,
    )
  }
  const created = lookupUser('pgfollow')
  if (!created) throw new ClusterError('Created the user "pgfollow" but cannot find it in the user database.')
  return created
}

function lookupUser(name: string): ServerUser | null {
  try {
    const [uid, gid] = ['-u', '-g'].map((flag) => Number(execFileSync('id', [flag, name], { stdio: 'pipe' }).toString().trim()))
    return { name, uid, gid }
  } catch {
    return null
  }
}

/** The command prefix that runs a program as the server user. */
export function asUser(user: ServerUser | null, command: string, args: string[]): [string, string[]] {
  if (!user) return [command, args]
  return ['setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--', command, ...args]]
}

/**
 * The first directory from / down to `path` that the server user cannot
 * pass (no execute bit for it as owner, group or other), or null. Parts
 * that do not exist yet count as open: we create them with the right owner.
 */
export function closedDir(user: ServerUser, path: string): string | null {
  const chain: string[] = []
  for (let current = resolve(path);; current = dirname(current)) {
    chain.push(current)
    if (dirname(current) === current) break
  }
  for (const dir of chain.reverse()) {
    let stat
    try {
      stat = statSync(dir)
    } catch {
      return null
    }
    if (!stat.isDirectory()) continue
    const mode = stat.mode
    const passes = stat.uid === user.uid ? mode & 0o100 : stat.gid === user.gid ? mode & 0o010 : mode & 0o001
    if (!passes) return dir
  }
  return null
}

/** Throws a ClusterError naming the first directory on the way to `path` that the server user cannot enter. */
export function assertReachable(user: ServerUser | null, path: string, what: string): void {
  if (!user) return
  const dir = closedDir(user, path)
  if (dir !== null) {
    throw new ClusterError(
      `The PostgreSQL servers run as the user "${user.name}" (PostgreSQL refuses root), and it cannot enter ${dir}, ` +
        `which holds the ${what}. Run \`chmod o+x ${dir}\` or choose a --dir outside it.`,
    )
  }
}

/** Gives a file or directory tree to the server user. */
export function giveTo(user: ServerUser | null, path: string): void {
  if (!user) return
  execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, path], { stdio: 'pipe' })
}
