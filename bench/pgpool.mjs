// pgpool-II in front of the bench cluster, for question 2: found (or
// installed with apt-get when we may), configured from pgpool.conf.template
// in a temp dir, run in the foreground (-n) as the servers' user, and
// stopped by its pid. When it cannot run, `startPgpool` says why instead of
// throwing, so the bench skips that row and reports the reason.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { chmodSync, chownSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import process from 'node:process'
import postgres from 'postgres'
import { freePort, serverUser } from 'pgfollow/cluster'
import { onCleanup, sleep } from './helpers.mjs'

const TEMPLATE = new URL('./pgpool.conf.template', import.meta.url)

/** The pgpool binary, installing Debian's pgpool2 when it is missing and we are root. */
export function findPgpool({ install = true } = {}) {
  const found = which('pgpool')
  if (found) return { path: found, version: version(found) }
  if (!install) return { skipped: 'pgpool is not installed (Debian package pgpool2)' }
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    return { skipped: 'pgpool is not installed and we are not root, so `apt-get install -y pgpool2` was not tried' }
  }
  const aptGet = (args) => execFileSync('apt-get', args, { stdio: 'pipe', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  try {
    try {
      aptGet(['install', '-y', '--no-install-recommends', 'pgpool2'])
    } catch {
      // Stale package lists are the usual cause: refresh them once and retry.
      aptGet(['update'])
      aptGet(['install', '-y', '--no-install-recommends', 'pgpool2'])
    }
  } catch (error) {
    return { skipped: `apt-get install pgpool2 failed: ${String(error.stderr || error.message).trim().split('\n').pop()}` }
  }
  const installed = which('pgpool')
  return installed ? { path: installed, version: version(installed) } : { skipped: 'apt-get installed pgpool2 but no pgpool binary is on PATH' }
}

/**
 * Starts pgpool in front of `descriptor` (leader = backend 0 with weight 0,
 * replicas = backends 1.. with weight 1). Resolves with `{ url, stop, version }`
 * once it answers a query, or `{ skipped }` with the reason.
 */
export async function startPgpool(descriptor, { children = 110 } = {}) {
  const binary = findPgpool()
  if (binary.skipped) return binary
  const leader = new URL(descriptor.leader)
  const user = decodeURIComponent(leader.username)
  const password = decodeURIComponent(leader.password)
  const database = leader.pathname.slice(1)
  const dir = mkdtempSync(join(os.tmpdir(), 'pgfollow-pgpool-'))
  const owner = serverUser()
  const [port, pcpPort] = [await freePort(), await freePort()]
  const nodes = [descriptor.leader, ...descriptor.replicas].map((url) => new URL(url))
  const backends = nodes
    .map((url, i) =>
      [
        `backend_hostname${i} = '${url.hostname}'`,
        `backend_port${i} = ${url.port}`,
        `backend_weight${i} = ${i === 0 ? 0 : 1}`,
        `backend_flag${i} = 'DISALLOW_TO_FAILOVER'`,
      ].join('\n')
    )
    .join('\n')
  const values = { port, pcpPort, dir, backends, children, user, password: password.replace(/'/g, "''"), database }
  const conf = readFileSync(TEMPLATE, 'utf8').replace(/\{\{(\w+)\}\}/g, (_, key) => String(values[key]))
  const files = {
    'pgpool.conf': conf,
    'pool_passwd': `${user}:TEXT${password}\n`,
    'pool_hba.conf': 'host all all 127.0.0.1/32 scram-sha-256\nlocal all all scram-sha-256\n',
    'pcp.conf': '',
  }
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text, { mode: 0o600 })
  chmodSync(dir, 0o700)
  if (owner) {
    chownSync(dir, owner.uid, owner.gid)
    for (const name of Object.keys(files)) chownSync(join(dir, name), owner.uid, owner.gid)
  }

  const log = openSync(join(dir, 'pgpool.log'), 'a')
  const args = ['-n', '-D', '-f', join(dir, 'pgpool.conf'), '-F', join(dir, 'pcp.conf'), '-a', join(dir, 'pool_hba.conf')]
  const [command, argv] = owner
    ? ['setpriv', [`--reuid=${owner.uid}`, `--regid=${owner.gid}`, '--clear-groups', '--', binary.path, ...args]]
    : [binary.path, args]
  const child = spawn(command, argv, { stdio: ['ignore', log, log] })
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  const stop = onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      // SIGINT: pgpool's fast shutdown; it ends its children itself.
      child.kill('SIGINT')
      const done = await Promise.race([exited, sleep(10_000).then(() => null)])
      if (!done) child.kill('SIGKILL')
    }
    rmSync(dir, { recursive: true, force: true })
  })

  const url = `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`
  const deadline = Date.now() + 30_000
  let lastError = null
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) break
    const probe = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 2, fetch_types: false })
    try {
      await probe`select 1`
      await probe.end({ timeout: 1 })
      return { url, stop, version: binary.version, dir, children, pid: child.pid }
    } catch (error) {
      lastError = error
      await probe.end({ timeout: 1 }).catch(() => {})
      await sleep(200)
    }
  }
  const tail = readLog(dir)
  await stop()
  return { skipped: `pgpool did not accept connections (${lastError?.message ?? 'it exited'}); its log ends:\n${tail}` }
}

function readLog(dir) {
  try {
    return readFileSync(join(dir, 'pgpool.log'), 'utf8').trim().split('\n').slice(-10).join('\n')
  } catch {
    return '(no log)'
  }
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

function version(path) {
  // pgpool prints its version on stderr or stdout depending on the build.
  const result = spawnSync(path, ['--version'], { encoding: 'utf8' })
  return `${result.stdout ?? ''}${result.stderr ?? ''}`.trim() || null
}
