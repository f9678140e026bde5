// The peers the benches compare against (pgpool-II, HAProxy) come from
// Debian's packages: found on PATH, or installed with apt-get when we are
// root and may. A peer that cannot be had is skipped with the reason, never
// an error: the bench reports the row as skipped.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import process from 'node:process'
import postgres from 'postgres'
import { onCleanup, sleep } from './helpers.mjs'

/** `{ path, version }` of `binary`, installing Debian's `pkg` when allowed; else `{ skipped }`. */
export function findDebianBinary(binary, pkg, { install = true, versionFlag = '--version' } = {}) {
  const found = which(binary)
  if (found) return { path: found, version: version(found, versionFlag) }
  if (!install) return { skipped: `${binary} is not installed (Debian package ${pkg})` }
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    return { skipped: `${binary} is not installed and we are not root, so \`apt-get install -y ${pkg}\` was not tried` }
  }
  const aptGet = (args) => execFileSync('apt-get', args, { stdio: 'pipe', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  try {
    try {
      aptGet(['install', '-y', '--no-install-recommends', pkg])
    } catch {
      // Stale package lists are the usual cause: refresh them once and retry.
      aptGet(['update'])
      aptGet(['install', '-y', '--no-install-recommends', pkg])
    }
  } catch (error) {
    return { skipped: `apt-get install ${pkg} failed: ${String(error.stderr || error.message).trim().split('\n').pop()}` }
  }
  const installed = which(binary)
  return installed
    ? { path: installed, version: version(installed, versionFlag) }
    : { skipped: `apt-get installed ${pkg} but no ${binary} binary is on PATH` }
}

function which(name) {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/usr/bin'])) {
    try {
      execFileSync('test', ['-x', join(dir, name)])
      return join(dir, name)
    } catch {
      // not here
    }
  }
  return null
}

function version(path, flag) {
  // Some tools print their version on stderr, some on stdout.
  const result = spawnSync(path, [flag], { encoding: 'utf8' })
  return `${result.stdout ?? ''}${result.stderr ?? ''}`.trim().split('\n')[0] || null
}

/**
 * Polls `url` with `select 1` until it answers (null) or `child` exits or
 * 30 s pass (the last error, as a string): a proxy is up once it serves.
 */
export async function waitUntilAnswers(url, child, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs
  let lastError = null
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) break
    const probe = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 2, fetch_types: false })
    try {
      await probe`select 1`
      await probe.end({ timeout: 1 })
      return null
    } catch (error) {
      lastError = error
      await probe.end({ timeout: 1 }).catch(() => {})
      await sleep(200)
    }
  }
  return lastError?.message ?? 'it exited'
}

/**
 * Runs a peer in the foreground with its output in `logFile`, and waits
 * until `url` answers through it. `stop()` sends `stopSignal` (SIGKILL after
 * 10 s) and removes `dir`; it also runs at the bench's cleanup. Resolves
 * with `{ stop, pid }`, or `{ skipped }` (the peer stopped) with the end of its log.
 */
export async function runPeer({ name, command, args, dir, logFile, stopSignal, url }) {
  const log = openSync(logFile, 'a')
  const child = spawn(command, args, { stdio: ['ignore', log, log] })
  closeSync(log)
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  const stop = onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill(stopSignal)
      const done = await Promise.race([exited, sleep(10_000).then(() => null)])
      if (!done) child.kill('SIGKILL')
    }
    rmSync(dir, { recursive: true, force: true })
  })
  const failure = await waitUntilAnswers(url, child)
  if (!failure) return { stop, pid: child.pid }
  const tail = logTail(logFile)
  await stop()
  return { skipped: `${name} did not pass a query (${failure}); its log ends:\n${tail}` }
}

function logTail(file) {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-10).join('\n')
  } catch {
    return '(no log)'
  }
}
