// HAProxy in front of the bench cluster's replicas, for question 2: found
// (or installed with apt-get when we may), configured from
// haproxy.cfg.template in a temp dir, run in the foreground (-db), and
// stopped by its pid. When it cannot run, `startHaproxy` says why instead
// of throwing, so the bench skips that row and reports the reason.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { freePort } from 'pgfollow/cluster'
import { findDebianBinary, runPeer } from './peers.mjs'

const TEMPLATE = new URL('./haproxy.cfg.template', import.meta.url)

/** The haproxy binary, installing Debian's haproxy when it is missing and we are root. */
export function findHaproxy({ install = true } = {}) {
  const found = findDebianBinary('haproxy', 'haproxy', { install, versionFlag: '-v' })
  // "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/": the name and version are enough.
  return found.version ? { ...found, version: found.version.split(' - ')[0] } : found
}

/**
 * Starts HAProxy (TCP mode, `balance roundrobin`) in front of the replicas
 * of `descriptor`. Clients log in through it with the leader's user and
 * database (the proxy does not speak the protocol). Resolves with
 * `{ url, stop, version, pid }` once a query passes, or `{ skipped }`.
 */
export async function startHaproxy(descriptor) {
  const binary = findHaproxy()
  if (binary.skipped) return binary
  const dir = mkdtempSync(join(os.tmpdir(), 'pgfollow-haproxy-'))
  const port = await freePort()
  const servers = descriptor.replicas
    .map((replica) => new URL(replica))
    .map((url, i) => `  server replica${i + 1} ${url.hostname}:${url.port}`)
    .join('\n')
  const values = { dir, port, servers }
  const config = readFileSync(TEMPLATE, 'utf8').replace(/\{\{(\w+)\}\}/g, (_, key) => String(values[key]))
  writeFileSync(join(dir, 'haproxy.cfg'), config, { mode: 0o600 })

  const leader = new URL(descriptor.leader)
  const url = `postgres://${leader.username}:${leader.password}@127.0.0.1:${port}${leader.pathname}`
  const peer = await runPeer({
    name: 'HAProxy',
    command: binary.path,
    args: ['-db', '-f', join(dir, 'haproxy.cfg')],
    dir,
    logFile: join(dir, 'haproxy.log'),
    // SIGTERM: HAProxy's hard stop, which closes every proxied connection at once.
    stopSignal: 'SIGTERM',
    url,
  })
  return peer.skipped ? peer : { ...peer, url, version: binary.version }
}
