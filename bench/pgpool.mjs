// pgpool-II in front of the bench cluster, for question 2: found (or
// installed with apt-get when we may), configured from pgpool.conf.template
// in a temp dir, run in the foreground (-n) as the servers' user, and
// stopped by its pid. When it cannot run, `startPgpool` says why instead of
// throwing, so the bench skips that row and reports the reason.
import { chmodSync, chownSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { freePorts, serverUser } from 'pgfollow/cluster'
import { findDebianBinary, runPeer } from './peers.mjs'

const TEMPLATE = new URL('./pgpool.conf.template', import.meta.url)

/** The pgpool binary, installing Debian's pgpool2 when it is missing and we are root. */
export function findPgpool({ install = true } = {}) {
  return findDebianBinary('pgpool', 'pgpool2', { install })
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
  const [port, pcpPort] = await freePorts(2)
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

  const args = ['-n', '-D', '-f', join(dir, 'pgpool.conf'), '-F', join(dir, 'pcp.conf'), '-a', join(dir, 'pool_hba.conf')]
  const [command, argv] = owner
    ? ['setpriv', [`--reuid=${owner.uid}`, `--regid=${owner.gid}`, '--clear-groups', '--', binary.path, ...args]]
    : [binary.path, args]
  const url = `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`
  const peer = await runPeer({
    name: 'pgpool',
    command,
    args: argv,
    dir,
    logFile: join(dir, 'pgpool.log'),
    // SIGINT: pgpool's fast shutdown; it ends its children itself.
    stopSignal: 'SIGINT',
    url,
  })
  return peer.skipped ? peer : { ...peer, url, version: binary.version, dir, children }
}
