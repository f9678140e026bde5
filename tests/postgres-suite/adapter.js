// What postgres.js's suite imports as `postgres`, per run (PGJS_SUITE_MODE):
//   raw      postgres.js itself
//   tag      connect({ leader, replicas, postgres: options }) taking postgres()'s (url, options)
//   session  the same, then .session(): what a library handed `sql.session()` gets
// A connection aimed at the suite's leader gets the cluster's replicas too
// (same user, database and options, other ports); any other target (a dead
// port, a socket, several hosts) becomes a leader without replicas.
import process from 'node:process'
import postgres from 'postgres'
import { connect } from 'pgfollow'

const mode = process.env.PGJS_SUITE_MODE ?? 'raw'
const cluster = JSON.parse(process.env.PGJS_SUITE_CLUSTER ?? '{"leaderPort":5432,"replicaPorts":[]}')
const LOCAL = new Set(['localhost', '127.0.0.1'])

function routed(first, second) {
  const url = typeof first === 'string' ? first : undefined
  const options = (typeof first === 'string' ? second : first) ?? {}
  // postgres.js decides the target (options > URL > PG* environment > defaults); ask it.
  const { host, port } = postgres(url, options).options
  const toLeader = host.length === 1 && LOCAL.has(host[0]) && port[0] === cluster.leaderPort
  let sql
  if (toLeader) {
    const { host: _h, hostname: _n, port: _p, ...perNode } = options
    const leader = url ? withAuthority(url, `${host[0]}:${port[0]}`) : `postgres://${host[0]}:${port[0]}`
    const replicas = cluster.replicaPorts.map((replicaPort) => withAuthority(leader, `${host[0]}:${replicaPort}`))
    sql = connect({ leader, replicas, postgres: perNode })
  } else {
    const leader = url ?? `postgres://${host.map((h, i) => `${h}:${port[i]}`).join(',')}`
    sql = connect({ leader, replicas: [], postgres: options })
  }
  return mode === 'session' ? sql.session() : sql
}

/** The URL with its host:port part replaced, user, database and query kept. */
function withAuthority(url, authority) {
  return url.replace(/^(postgres(?:ql)?:\/\/(?:[^@/]*@)?)([^/?#]*)/, (_, scheme) => scheme + authority)
}

export default mode === 'raw' ? postgres : Object.assign(routed, postgres)
