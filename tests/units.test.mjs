// @deno
// Pure parts of the tag, table-driven: option normalisation, LSNs, session
// tokens, who follows the leader, error classes for routing, balancing and
// descriptor validation.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'

const lib = typeof Deno !== 'undefined' ? '../lib/' : '../dist/'
const ext = typeof Deno !== 'undefined' ? '.ts' : '.js'
const load = (name) => import(`${lib}${name}${ext}`)
const { normalizeOptions } = await load('tag/options')
const { parseLsn, formatLsn, lsnDistance, maxLsn } = await load('tag/lsn')
const { SessionPosition, parseToken, shortClusterId } = await load('tag/session')
const { judgeFollowing, judgeWithoutLeader } = await load('tag/follow')
const { hostAndPort } = await load('tag/node')
const failures = await load('tag/failures')
const { createPicker } = await load('tag/balance')
const { validateDescriptor } = await load('tag/descriptor')
const { ConfigError, LeaderUnavailableError, NoReplicaError, redactUrl } = await load('tag/errors')
const { PendingStatements } = await load('tag/pending')
const { synchronousStandbyNames, serverSettings, hbaLines, primaryConninfo, parsePort, parseSynchronousMode, postgresUrl, nodeNames, defaultPorts } =
  await load('topology')
const { displayPath, stateTone } = await load('ops/cli')

const leader = 'postgres://u:p@127.0.0.1:5432/db'
const replicas = ['postgres://u:p@127.0.0.1:5480/db', 'postgres://u:p@127.0.0.1:5490/db']

// ---
const options = suite('options')

const goodOptions = [
  [{}, (o) => o.balance === 'round-robin' && o.maxLag.bytes === 16 * 1024 * 1024 && o.maxLag.ms === 10_000],
  [{}, (o) => o.monitorInterval === 1000 && o.sessionWait === 100 && o.fallback === true && o.connectTimeout === 2000 && o.ban.max === 5000],
  [{ balance: 'least-busy' }, (o) => o.balance === 'least-busy'],
  [{ weights: [3, 1] }, (o) => o.weights.join() === '3,1'],
  [{ maxLag: { ms: 500 } }, (o) => o.maxLag.ms === 500 && o.maxLag.bytes === 16 * 1024 * 1024],
  [{ sessionWait: 0 }, (o) => o.sessionWait === 0],
  [{ fallback: false }, (o) => o.fallback === false],
  [{ readTimeout: 0 }, (o) => o.readTimeout === 0],
  [{ postgres: { max: 3 } }, (o) => o.postgres.max === 3],
  // postgres.js's connect_timeout (seconds) is the user's: it sets pgfollow's connectTimeout unless that is given too.
  [{ postgres: { connect_timeout: 7 } }, (o) => o.connectTimeout === 7000 && o.postgres.connect_timeout === 7],
  [{ connectTimeout: 500, postgres: { connect_timeout: 7 } }, (o) => o.connectTimeout === 500 && o.postgres.connect_timeout === 7],
]
for (const [input, check] of goodOptions) {
  options(`accepts ${JSON.stringify(input)}`, () => {
    assert.ok(check(normalizeOptions({ leader, replicas, ...input })))
  })
}

const badOptions = [
  [{ balance: 'fastest' }, /balance must be one of/],
  [{ weights: [1] }, /one positive number per replica/],
  [{ weights: [1, 0] }, /one positive number per replica/],
  [{ maxLag: { ms: -1 } }, /maxLag.ms must be a positive number/],
  [{ monitorInterval: 0 }, /monitorInterval must be a positive number/],
  [{ sessionWait: -5 }, /sessionWait must be a number >= 0/],
  [{ connectTimeout: 'soon' }, /connectTimeout must be a positive number/],
  [{ postgres: { connect_timeout: -1 } }, /postgres.connect_timeout must be a positive number/],
  [{ cluster: 'x.json' }, /either `cluster`/],
]
for (const [input, pattern] of badOptions) {
  options(`rejects ${JSON.stringify(input)} with a ConfigError`, () => {
    try {
      normalizeOptions({ leader, replicas, ...input })
      assert.unreachable('accepted')
    } catch (error) {
      assert.instance(error, ConfigError)
      assert.match(error.message, pattern)
    }
  })
}

options('a missing descriptor file says how to make one', () => {
  assert.throws(() => normalizeOptions('/nonexistent/cluster.json'), /No cluster descriptor at \/nonexistent\/cluster.json.*cluster.mjs up/)
})

options.run()

// ---
const descriptors = suite('descriptor validation')

const badDescriptors = [
  [null, /must be an object/],
  [[], /must be an object/],
  [{ replicas: [] }, /"leader" must be a postgres:\/\/ URL/],
  [{ leader: 'not a url' }, /"leader" is not a URL/],
  [{ leader: 'http://h/db' }, /must start with postgres:\/\//],
  [{ leader, replicas: 'x' }, /"replicas" must be an array/],
  [{ leader, replicas: [42] }, /"replicas\[0\]" must be a postgres:\/\/ URL/],
  [{ leader, replicas: [leader] }, /twice/],
  [{ leader, replicas: [replicas[0], replicas[0]] }, /twice/],
]
for (const [value, pattern] of badDescriptors) {
  descriptors(`rejects ${JSON.stringify(value)}`, () => {
    assert.throws(() => validateDescriptor(value, 'test.json'), pattern)
  })
}

descriptors('never quotes a password in its messages', () => {
  try {
    validateDescriptor({ leader: 'postgres://u:hunter2@h:1/db', replicas: ['postgres://u:hunter2@h:1/db'] })
    assert.unreachable()
  } catch (error) {
    assert.not.ok(error.message.includes('hunter2'))
  }
  assert.is(redactUrl('postgres://u:hunter2@h:1/db'), 'postgres://u:***@h:1/db')
})

descriptors.run()

// ---
const positions = suite('LSNs and session tokens')

const lsns = [
  ['0/0', 0n],
  ['0/16B3748', 0x16b3748n],
  ['1/0', 1n << 32n],
  ['FFFFFFFF/FFFFFFFF', (1n << 64n) - 1n],
]
for (const [text, value] of lsns) {
  positions(`parses and formats ${text}`, () => {
    assert.is(parseLsn(text), value)
    assert.is(formatLsn(value), text)
  })
}

positions('distance never goes negative and max ignores null', () => {
  assert.is(lsnDistance(10n, 30n), 20)
  assert.is(lsnDistance(30n, 10n), 0)
  assert.is(lsnDistance(null, 10n), 0)
  assert.is(maxLsn(null, 5n), 5n)
  assert.is(maxLsn(7n, 5n), 7n)
})

positions('a session position only moves forward and its token round-trips', async () => {
  const session = new SessionPosition()
  session.raise(100n)
  session.raise(50n)
  assert.is(session.current, 100n)
  await session.track(Promise.resolve(200n))
  assert.is(await session.settled(), 200n)
  assert.is(new SessionPosition(session.token).current, 200n)
})

positions('tokens: bound ones carry the cluster and timeline, plain LSNs of earlier versions still parse', () => {
  assert.equal(parseToken('0/16B3748'), { lsn: 0x16b3748n, cluster: null, timeline: null })
  assert.equal(parseToken('1/0@5f3a9c1e.2'), { lsn: 1n << 32n, cluster: '5f3a9c1e', timeline: 2 })
  assert.is(shortClusterId('7714479797964563822'), ((7714479797964563822n >> 32n) ^ (7714479797964563822n & 0xffffffffn)).toString(16))
  assert.is(shortClusterId('1'), '00000001', 'always eight digits')
  const home = { leader: { systemId: '7714479797964563822', timeline: 3, inRecovery: false } }
  const session = new SessionPosition(undefined, home)
  session.raise(0x16b3748n)
  assert.is(session.token, `0/16B3748@${shortClusterId('7714479797964563822')}.3`)
  assert.is(new SessionPosition(session.token).current, 0x16b3748n)
  assert.is(new SessionPosition().token, '0/0', 'no leader known: a plain LSN')
})

for (const token of ['', 'abc', '1/2/3', '0/XYZ', '0/1@', '0/1@xyz.1', '0/1@5f3a9c1e', '0/1@5f3a9c1e.x']) {
  positions(`rejects the token ${JSON.stringify(token)}`, () => {
    assert.throws(() => parseToken(token), (error) => error instanceof ConfigError)
  })
}

positions.run()

// ---
const follow = suite('who follows the leader (lib/tag/follow.ts)')

const LEADER = { systemId: '77', timeline: 2, lsn: 1000n, senders: [{ name: 'replica1', state: 'streaming', slot: 'pgfollow_replica1' }] }
const FOLLOWER = {
  systemId: '77',
  timeline: 2,
  replayLsn: 900n,
  receiveLsn: 1000n,
  receiverRunning: true,
  receiverStatus: 'streaming',
  slot: 'pgfollow_replica1',
  applicationName: 'replica1',
  upstream: '127.0.0.1:5432',
}
const followCases = [
  ['streams from the leader, behind it', {}, {}, null],
  ['found by slot alone', { applicationName: null }, {}, null],
  ['found by application_name alone', { slot: null }, {}, null],
  ['without privileges: a running receiver, found by slot', { receiverStatus: null, applicationName: null, upstream: null }, {}, null],
  ['a lower timeline while it streams from the leader: catching up across a promotion', { timeline: 1 }, {}, null],
  ['no slot and no name to look up: the other checks decide', { slot: null, applicationName: null }, { senders: [] }, null],
  ['another system identifier', { systemId: '12' }, {}, 'other-cluster'],
  ['another cluster wins over everything else', { systemId: '12', receiverRunning: false, receiverStatus: null }, {}, 'other-cluster'],
  ['a later timeline than the leader', { timeline: 3 }, {}, 'diverged'],
  ['replayed past the leader', { replayLsn: 1001n, receiveLsn: 1001n }, {}, 'diverged'],
  ['received past the leader', { receiveLsn: 2000n }, {}, 'diverged'],
  [
    'a fenced old leader: no WAL receiver at all',
    { receiverRunning: false, receiverStatus: null, receiveLsn: null, timeline: 1 },
    {},
    'not-following',
  ],
  ['a receiver waiting for its upstream', { receiverStatus: 'waiting' }, {}, 'not-following'],
  ['without privileges: no receiver', { receiverRunning: false, receiverStatus: null }, {}, 'not-following'],
  [
    'streams, but the leader has no sender for it',
    {},
    { senders: [{ name: 'replica2', state: 'streaming', slot: 'pgfollow_replica2' }] },
    'wrong-upstream',
  ],
  ['streams, and the leader has no sender at all', {}, { senders: [] }, 'wrong-upstream'],
  ['unknown identity on either side is not another cluster', { systemId: null }, {}, null],
]
for (const [name, replica, leader, problem] of followCases) {
  follow(name, () => {
    const verdict = judgeFollowing({ ...FOLLOWER, ...replica }, { ...LEADER, ...leader })
    assert.is(verdict.problem, problem, verdict.detail)
    assert.type(verdict.detail, 'string')
  })
}

follow('without the leader: only another cluster and streaming from nobody can be told', () => {
  const cases = [
    [{}, '77', null],
    [{ systemId: '12' }, '77', 'other-cluster'],
    [{ systemId: '12' }, null, null],
    [{ receiverRunning: false, receiverStatus: null }, '77', 'not-following'],
    [{ receiverStatus: 'waiting' }, null, 'not-following'],
    [{ timeline: 9, replayLsn: 1n << 40n }, '77', null],
  ]
  for (const [replica, clusterId, problem] of cases) {
    assert.is(
      judgeWithoutLeader({ ...FOLLOWER, ...replica }, clusterId).problem,
      problem,
      JSON.stringify({ replica, clusterId }, (_, v) => typeof v === 'bigint' ? String(v) : v),
    )
  }
})

follow('nodes are named host:port until they say their cluster_name', () => {
  assert.is(hostAndPort('postgres://u:p@127.0.0.1:5480/db'), '127.0.0.1:5480')
  assert.is(hostAndPort('postgres://u:p@db.example/db'), 'db.example:5432')
  assert.is(hostAndPort('postgres://u:p@[::1]:6000/db'), '[::1]:6000')
  assert.is(hostAndPort('postgres://u@h1:1,h2:2/db'), 'h1:1')
})

follow.run()

// ---
const errors = suite('error classes for routing')

const cases = [
  // code, never connected, lost, read-only, recovery conflict, auth, too many clients
  [{ code: 'ECONNREFUSED' }, [true, false, false, false, false, false]],
  [{ code: 'CONNECT_TIMEOUT' }, [true, false, false, false, false, false]],
  [{ code: 'PGFOLLOW_CHECK_TIMEOUT' }, [true, false, false, false, false, false]],
  [{ code: '57P03' }, [true, false, false, false, false, false]],
  [{ code: '53300' }, [false, false, false, false, false, true]],
  [{ code: 'CONNECTION_CLOSED' }, [false, true, false, false, false, false]],
  [{ code: '57P01' }, [false, true, false, false, false, false]],
  [{ code: '25006' }, [false, false, true, false, false, false]],
  [{ code: '40001', message: 'canceling statement due to conflict with recovery' }, [false, false, false, true, false, false]],
  [{ code: '40001', message: 'could not serialize access' }, [false, false, false, false, false, false]],
  [{ code: '28P01' }, [false, false, false, false, true, false]],
  [{ code: '42P01' }, [false, false, false, false, false, false]],
  [{ code: 'PGFOLLOW_READ_TIMEOUT' }, [false, false, false, false, false, false]],
]
for (const [error, expected] of cases) {
  errors(`classifies ${error.code}${error.message ? ` (${error.message})` : ''}`, () => {
    const got = [
      failures.neverConnected(error),
      failures.connectionLost(error),
      failures.readOnlyRefusal(error),
      failures.recoveryConflict(error),
      failures.authenticationFailure(error),
      failures.tooManyClients(error),
    ]
    assert.equal(got, expected)
  })
}

errors('a pgfollow error that wraps a driver error carries its code, as postgres.js users match on it', () => {
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED', errno: -111, address: '127.0.0.1', port: 1 })
  const wrapped = new LeaderUnavailableError('No leader accepts writes', { cause: refused })
  assert.equal([wrapped.code, wrapped.pgfollowCode, wrapped.errno, wrapped.address, wrapped.port], [
    'ECONNREFUSED',
    'PGFOLLOW_LEADER_UNAVAILABLE',
    -111,
    '127.0.0.1',
    1,
  ])
  assert.is(wrapped.cause, refused)
  const login = new ConfigError('refused the login', {
    cause: Object.assign(new Error('password authentication failed'), { code: '28P01', severity: 'FATAL' }),
  })
  assert.equal([login.code, login.pgfollowCode, login.severity], ['28P01', 'PGFOLLOW_CONFIG', 'FATAL'])
  // Nothing wrapped: pgfollow's own code.
  assert.equal([new NoReplicaError('none').code, new LeaderUnavailableError('down').code], ['PGFOLLOW_NO_REPLICA', 'PGFOLLOW_LEADER_UNAVAILABLE'])
})

errors.run()

// ---
const balance = suite('balancing')

const node = (name, weight = 1, inFlight = 0) => ({ name, weight, inFlight })

balance('round-robin alternates, and weights spread the heavy node out', () => {
  const pick = createPicker('round-robin')
  const [a, b] = [node('a'), node('b')]
  assert.equal(Array.from({ length: 4 }, () => pick([a, b]).name), ['a', 'b', 'a', 'b'])
  const weighted = createPicker('round-robin')
  const [h, l] = [node('h', 3), node('l', 1)]
  const seq = Array.from({ length: 8 }, () => weighted([h, l]).name).join('')
  assert.is(seq, 'hhlhhhlh')
})

balance('least-busy prefers the node with fewer reads in flight', () => {
  const pick = createPicker('least-busy')
  const [idle, busy] = [node('idle', 1, 0), node('busy', 1, 50)]
  for (let i = 0; i < 20; i++) assert.is(pick([idle, busy]).name, 'idle')
})

balance('random stays within the candidates and follows weights', () => {
  const pick = createPicker('random')
  const [h, l] = [node('h', 9), node('l', 1)]
  const counts = { h: 0, l: 0 }
  for (let i = 0; i < 2000; i++) counts[pick([h, l]).name]++
  assert.ok(counts.h > 1600 && counts.l > 100, JSON.stringify(counts))
})

balance.run()

// ---
const replication = suite('replication settings')

replication('synchronous modes name every replica, quoted', () => {
  assert.is(synchronousStandbyNames('off', ['replica1']), '')
  assert.is(synchronousStandbyNames('any', ['replica1', 'replica2']), 'ANY 1 ("replica1", "replica2")')
  assert.is(synchronousStandbyNames('first', ['replica1']), 'FIRST 1 ("replica1")')
  assert.throws(() => synchronousStandbyNames('all', ['replica1']), /synchronous mode is "all": use one of off, any, first/)
})

replication('settings stream, keep slots bounded and leave PostgreSQL 15 without 18-only settings', () => {
  const settings = serverSettings({ listen: '127.0.0.1', replicaNames: ['replica1'], major: 15 })
  assert.is(settings.wal_level, 'replica')
  assert.is(settings.hot_standby_feedback, 'on')
  assert.is(settings.max_slot_wal_keep_size, '1GB')
  assert.is(settings.idle_replication_slot_timeout, undefined)
  assert.is(serverSettings({ listen: '*', replicaNames: [] }).idle_replication_slot_timeout, '1d')
})

replication('pg_hba has no trust and keeps the replicator out of every database', () => {
  const hba = hbaLines('127.0.0.1/32')
  assert.not.match(hba, /trust/)
  assert.match(hba, /host\s+replication\s+replicator\s+127\.0\.0\.1\/32\s+scram-sha-256/)
  assert.match(hba, /host\s+all\s+replicator\s+127\.0\.0\.1\/32\s+reject/)
})

replication('primary_conninfo quotes what it must', () => {
  const conninfo = primaryConninfo({ leaderHost: 'h', leaderPort: 1, replicatorPassword: "it's", applicationName: 'replica1' })
  assert.match(conninfo, /password='it\\'s'/)
  assert.match(conninfo, /application_name='replica1'/)
})

replication.run()

// ---
const pending = suite("pending statements (the sweeper's table)")

/** Sweeps at `now` and lists what is pending: [id, node, waited at least, replica read]. */
const sweepAll = (table, now) => {
  const seen = []
  table.sweep(now, (attempt, node, waited, replicaRead) => seen.push([attempt.id, node.name, waited, replicaRead]))
  return seen
}

pending('keeps what is added until it is removed, and reuses freed slots', () => {
  const table = new PendingStatements()
  const node = { name: 'replica1' }
  const a = table.add({ id: 'a' }, node, true)
  table.add({ id: 'b' }, node, false)
  assert.equal(sweepAll(table, 1000), [['a', 'replica1', 0, true], ['b', 'replica1', 0, false]])
  table.remove(a)
  table.remove(a) // a second remove of a settled statement changes nothing
  assert.equal(sweepAll(table, 1100), [['b', 'replica1', 100, false]])
  assert.is(table.size, 1)
  assert.is(table.add({ id: 'c' }, node, false), a)
  assert.is(table.size, 2)
})

pending('a wait is never counted longer than it was, and at most one sweep shorter', () => {
  const table = new PendingStatements(8)
  const node = { name: 'replica1' }
  table.add({ id: 'before any sweep' }, node, true)
  sweepAll(table, 1000)
  table.add({ id: 'after sweep 1' }, node, true) // came at some time in (1000, 1100)
  assert.equal(sweepAll(table, 1100).map(([id, , waited]) => [id, waited]), [['before any sweep', 100], ['after sweep 1', 0]])
  assert.equal(sweepAll(table, 1350).map(([id, , waited]) => [id, waited]), [['before any sweep', 350], ['after sweep 1', 250]])
})

pending('past the sweeps it keeps, a wait is counted from the oldest one kept (shorter, never longer)', () => {
  const table = new PendingStatements(2)
  const node = { name: 'replica1' }
  sweepAll(table, 0)
  table.add({ id: 'old' }, node, true) // came after 0: waited since 100 at least
  for (const now of [100, 200, 300]) sweepAll(table, now)
  const [[, , waited]] = sweepAll(table, 400)
  assert.is(waited, 100) // the oldest kept sweep ran at 300; the true wait is 300-400
})

pending('grows past its first slots without losing or mixing up statements', () => {
  const table = new PendingStatements()
  const nodes = [{ name: 'leader' }, { name: 'replica1' }]
  const slots = Array.from({ length: 1000 }, (_, i) => table.add({ id: i }, nodes[i % 2], i % 3 === 0))
  assert.is(new Set(slots).size, 1000)
  for (let i = 0; i < 1000; i += 2) table.remove(slots[i])
  const seen = sweepAll(table, 5)
  assert.is(seen.length, 500)
  assert.ok(seen.every(([id, name, , replicaRead]) => id % 2 === 1 && name === 'replica1' && replicaRead === (id % 3 === 0)))
})

pending('a visitor may remove the statement it visits (the sweeper gives up on it)', () => {
  const table = new PendingStatements()
  const node = { name: 'replica1' }
  const slots = new Map()
  for (const id of ['a', 'b', 'c']) slots.set(id, table.add({ id }, node, true))
  const visited = []
  table.sweep(0, (attempt) => {
    visited.push(attempt.id)
    table.remove(slots.get(attempt.id))
  })
  assert.equal(visited, ['a', 'b', 'c'])
  assert.is(table.size, 0)
  assert.equal(sweepAll(table, 1), [])
})

pending.run()

// ---

const topology = suite('topology: one check and one builder for every kind of cluster')

topology('ports: one range, digit strings accepted, the error names the flag or key', () => {
  assert.is(parsePort(5432, '--ports'), 5432)
  assert.is(parsePort('5480', 'replicaPorts[0]'), 5480)
  for (const bad of [80, 0, 70000, 1.5, 'x', true]) {
    assert.throws(() => parsePort(bad, 'leaderPort'), /leaderPort must be a port number from 1024 to 65535/)
  }
})

topology('synchronous modes: the three, else an error listing them', () => {
  for (const mode of ['off', 'any', 'first']) assert.is(parseSynchronousMode(mode, '--synchronous'), mode)
  assert.throws(() => parseSynchronousMode('all', '--synchronous'), /--synchronous is "all": use one of off, any, first/)
})

topology('names, default ports and URLs', () => {
  assert.equal(nodeNames(2), ['leader', 'replica1', 'replica2'])
  assert.equal(defaultPorts(4), [5432, 5480, 5490, 5500, 5510])
  assert.is(
    postgresUrl({ user: 'postgres', password: 'p@ss/w', host: '127.0.0.1', port: 5432 }),
    'postgres://postgres:p%40ss%2Fw@127.0.0.1:5432/pgfollow',
  )
})

topology.run()

// ---

const scriptHelpers = suite('toolkit helpers the scripts share')

scriptHelpers('displayPath: relative inside the working dir, absolute outside', () => {
  assert.is(displayPath('/work/x/.pgfollow', '/work/x'), '.pgfollow')
  assert.is(displayPath('/work/x', '/work/x'), '.')
  assert.is(displayPath('/etc/pgfollow', '/work/x'), '/etc/pgfollow')
})

scriptHelpers('stateTone: one judgement of node states for every script', () => {
  assert.equal(['leader', 'streaming', 'down', 'stopped', 'catchup', 'unknown'].map(stateTone), ['good', 'good', 'bad', 'bad', 'warn', 'warn'])
})

scriptHelpers.run()
