// @deno
// The pure parts of following Patroni, table-driven, and the follower
// against a fake Patroni REST server: the descriptor's "patroni" key, which
// member may serve reads, URLs of members the descriptor does not list,
// the one Patroni configuration, and what one follow() does to the router.
import { createServer } from 'node:http'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'

const lib = typeof Deno !== 'undefined' ? '../lib/' : '../dist/'
const ext = typeof Deno !== 'undefined' ? '.ts' : '.js'
const load = (name) => import(`${lib}${name}${ext}`)
const { validateDescriptor } = await load('tag/descriptor')
const { ConfigError } = await load('tag/errors')
const { endpointKey, memberKey, memberUrl, nodeKey, PatroniFollower, readExclusion } = await load('tag/patroni')
const { patroniConfig, HA_TIMING } = await load('topology')

const leaderUrl = 'postgres://postgres:s%3Acret@127.0.0.1:5432/pgfollow'

// ---
const descriptor = suite('descriptor: patroni endpoints')

descriptor('an array of http(s) URLs is kept; without the key nothing changes', () => {
  const patroni = ['http://127.0.0.1:8008', 'https://db1.internal:8008']
  assert.equal(validateDescriptor({ leader: leaderUrl, replicas: [], patroni }).patroni, patroni)
  assert.not.ok('patroni' in validateDescriptor({ leader: leaderUrl, replicas: [] }))
})

for (
  const [patroni, why] of [['http://127.0.0.1:8008', 'not an array'], [['postgres://x:y@h/db'], 'not http'], [[8008], 'not a string'], [[
    'http://',
  ], 'no host']]
) {
  descriptor(`"patroni" ${why} is a ConfigError naming the field`, () => {
    const error = assert.throws(
      () => validateDescriptor({ leader: leaderUrl, replicas: [], patroni }),
      (e) => e instanceof ConfigError && /patroni/.test(e.message),
    )
    return error
  })
}

descriptor.run()

// ---
const members = suite('Patroni members')

const leader = { name: 'node1', role: 'leader', state: 'running', host: '127.0.0.1', port: 5432, timeline: 2 }
const exclusions = [
  [{ name: 'n', role: 'replica', state: 'running', host: 'h', port: 1, timeline: 2, lag: 0 }, null],
  [{ name: 'n', role: 'sync_standby', state: 'streaming', host: 'h', port: 1, timeline: 2, lag: 0 }, null],
  [{ name: 'n', role: 'replica', state: 'stopped', host: 'h', port: 1, lag: 'unknown' }, /stopped/],
  [{ name: 'n', role: 'replica', state: 'starting', host: 'h', port: 1 }, /starting/],
  [{ name: 'n', role: 'replica', state: 'running', host: 'h', port: 1, timeline: 1, lag: 0 }, /timeline 1/],
  [{ name: 'n', role: 'replica', state: 'running', host: 'h', port: 1, timeline: 2, lag: 'unknown' }, /position/],
  [{ name: 'n', role: 'replica', state: 'running', host: 'h', port: 1, timeline: 2, lag: 0, tags: { noloadbalance: true } }, /noloadbalance/],
  [undefined, /not a member/],
]
for (const [member, expected] of exclusions) {
  members(`readExclusion ${JSON.stringify(member)}`, () => {
    const reason = readExclusion(member, leader)
    if (expected === null) assert.is(reason, null)
    else assert.match(reason, expected)
  })
}

members('a member the descriptor lacks gets the leader URL with its own host and port', () => {
  const url = memberUrl(leaderUrl, { name: 'node4', host: '10.0.0.4', port: 5433 })
  assert.is(url, 'postgres://postgres:s%3Acret@10.0.0.4:5433/pgfollow')
  assert.is(nodeKey(url), '10.0.0.4:5433')
  assert.is(endpointKey('localhost', 5432), nodeKey(leaderUrl))
})

members('a member tagged pgfollow_address (a container behind a published port) is reached there', () => {
  const member = { name: 'leader', host: 'pg-leader', port: 5432, tags: { pgfollow_address: '127.0.0.1:5480' } }
  assert.is(memberUrl(leaderUrl, member), 'postgres://postgres:s%3Acret@127.0.0.1:5480/pgfollow')
  assert.is(memberKey(member), '127.0.0.1:5480')
  assert.is(memberKey({ ...member, tags: {} }), 'pg-leader:5432')
})

members.run()

// ---
const config = suite('patroniConfig')

const base = {
  name: 'node2',
  restListen: '127.0.0.1:8009',
  restConnect: '127.0.0.1:8009',
  pgListen: '127.0.0.1:5480',
  pgConnect: '127.0.0.1:5480',
  dataDir: '/d',
  binDir: '/usr/lib/postgresql/15/bin',
  pgpass: '/p',
  etcdHosts: ['127.0.0.1:2379'],
  superuser: 'postgres',
  superuserPassword: 'a',
  replicatorPassword: 'b',
  networks: ['127.0.0.1/32'],
  synchronous: 'off',
  major: 15,
}

config('test-sized timing, pg_rewind, scram, the replicator; Patroni owns listen and port', () => {
  const yml = patroniConfig(base)
  const dcs = yml.bootstrap.dcs
  assert.equal([dcs.ttl, dcs.loop_wait, dcs.retry_timeout], [HA_TIMING.ttl, HA_TIMING.loopWait, HA_TIMING.retryTimeout])
  assert.is(dcs.postgresql.use_pg_rewind, true)
  assert.is(dcs.synchronous_mode, false)
  assert.is(dcs.postgresql.parameters.wal_log_hints, 'on')
  assert.not.ok('listen_addresses' in dcs.postgresql.parameters)
  assert.not.ok('idle_replication_slot_timeout' in dcs.postgresql.parameters, 'a PostgreSQL 18 setting on 15')
  assert.is(yml.postgresql.authentication.replication.username, 'replicator')
  assert.ok(yml.postgresql.pg_hba.some((line) => /replication\s+replicator\s+127\.0\.0\.1\/32\s+scram-sha-256/.test(line)))
  assert.not.ok(yml.postgresql.pg_hba.some((line) => /trust/.test(line)))
})

config('--synchronous any and first turn on synchronous_mode', () => {
  assert.is(patroniConfig({ ...base, synchronous: 'any' }).bootstrap.dcs.synchronous_mode, true)
  assert.is(patroniConfig({ ...base, synchronous: 'first' }).bootstrap.dcs.synchronous_mode, true)
})

config.run()

// ---
const follower = suite('PatroniFollower against a fake /cluster')

/** A node as the follower sees it: a URL, a health flag and a monitor connection that answers pg_is_in_recovery(). */
function fakeNode(name, port, inRecovery) {
  const node = {
    name,
    url: `postgres://postgres:x@127.0.0.1:${port}/pgfollow`,
    safeUrl: `127.0.0.1:${port}`,
    heldOut: null,
    failures: 0,
    retired: false,
    inRecovery,
    get available() {
      return !this.retired && this.heldOut === null && this.failures === 0
    },
    succeed() {
      this.failures = 0
    },
  }
  node.monitor = () => Promise.resolve([{ in_recovery: node.recovering }])
  node.recovering = inRecovery
  return node
}

async function fakePatroni(members, onRequest = () => {}) {
  const server = createServer((_, response) => {
    onRequest()
    response.setHeader('content-type', 'application/json')
    response.end(JSON.stringify({ members: members() }))
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  // Node loads its fetch lazily (a few hundred ms the first time): not what these tests time.
  await (await fetch(`http://127.0.0.1:${server.address().port}/`)).text()
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((resolve) => server.close(resolve)) }
}

follower('writes move to the leader Patroni names, a stopped member leaves the reads, a new member joins', async () => {
  const nodes = [fakeNode('leader', 5432, false), fakeNode('replica1', 5480, true)]
  let view = [
    { name: 'a', role: 'replica', state: 'stopped', host: '127.0.0.1', port: 5432 },
    { name: 'b', role: 'leader', state: 'running', host: '127.0.0.1', port: 5480, timeline: 2 },
    { name: 'c', role: 'replica', state: 'running', host: '127.0.0.1', port: 5490, timeline: 2, lag: 0 },
  ]
  const patroni = await fakePatroni(() => view)
  const events = []
  const cluster = {
    nodes,
    leader: nodes[0],
    options: { leader: nodes[0].url, connectTimeout: 500, monitorInterval: 200, patroni: ['http://127.0.0.1:1', patroni.url] },
    electLeader(writable) {
      this.leader = writable[0]
      events.push(['leader', writable[0].name])
    },
    addNode(url, name) {
      const node = fakeNode(name, Number(new URL(url).port), true)
      nodes.push(node)
      events.push(['add', name, url])
      return node
    },
    emit: (event, payload) => events.push([event, payload.name, payload.reason]),
  }
  try {
    const follow = new PatroniFollower(cluster)
    // replica1 is still finishing its promotion: writes stay until it accepts them.
    assert.is(await follow.follow(), true)
    assert.is(cluster.leader, nodes[0])
    assert.equal(events.find((event) => event[0] === 'add'), ['add', 'c', 'postgres://postgres:x@127.0.0.1:5490/pgfollow'])
    assert.match(nodes[0].heldOut, /stopped/)
    assert.is(nodes[2].heldOut, null)
    assert.equal(nodes.map((node) => node.name), ['a', 'b', 'c'], "the descriptor's nodes take their member names")
    nodes[1].recovering = false
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.is(cluster.leader, nodes[1], 'the promoted node takes the writes')
    // The old leader rejoins on the leader's timeline: back in the reads.
    view = view.map((member) => (member.name === 'a' ? { ...member, state: 'running', timeline: 2, lag: 0 } : member))
    await new Promise((resolve) => setTimeout(resolve, 60))
    await follow.follow()
    assert.is(nodes[0].heldOut, null)
    assert.ok(events.some((event) => event[0] === 'restore' && event[1] === 'a'))
  } finally {
    await patroni.close()
  }
})

follower('hunt(): while no leader takes writes Patroni is asked every few tens of ms, not once per monitor round', async () => {
  const nodes = [fakeNode('node1', 5432, false), fakeNode('node2', 5480, true)]
  nodes[0].failures = 1 // the leader died
  let view = [{ name: 'node1', role: 'leader', state: 'running', host: '127.0.0.1', port: 5432 }, {
    name: 'node2',
    role: 'replica',
    state: 'running',
    host: '127.0.0.1',
    port: 5480,
  }]
  let asked = 0
  const patroni = await fakePatroni(() => view, () => asked++)
  const cluster = {
    nodes,
    leader: nodes[0],
    get leaderUsable() {
      return this.leader.failures === 0 && this.leader.inRecovery !== true
    },
    // A monitor round every 5 s, and discovery waiting on the dead node for as long: neither may set the pace.
    options: { leader: nodes[0].url, connectTimeout: 5_000, monitorInterval: 5_000, patroni: [patroni.url] },
    electLeader(writable) {
      this.leader = writable[0]
      electedAt = Date.now()
    },
    addNode: () => assert.unreachable('no node added'),
    emit: () => true,
  }
  let electedAt = 0
  const follow = new PatroniFollower(cluster)
  try {
    await follow.hunt()
    follow.hunt() // a second caller joins the hunt under way
    await new Promise((resolve) => setTimeout(resolve, 300))
    assert.ok(asked >= 4, `asked ${asked} times in 300 ms`)
    // Patroni names node2 (promoted at once here): writes move within a look or two.
    const namedAt = Date.now()
    view = [{ ...view[0], role: 'replica', state: 'stopped' }, { ...view[1], role: 'leader' }]
    nodes[1].recovering = false
    while (!electedAt && Date.now() - namedAt < 2_000) await new Promise((resolve) => setTimeout(resolve, 5))
    assert.is(cluster.leader, nodes[1])
    assert.ok(electedAt - namedAt < 250, `elected ${electedAt - namedAt} ms after Patroni named it`)
    // A leader takes writes: the hunt ends.
    await new Promise((resolve) => setTimeout(resolve, 100))
    const after = asked
    await new Promise((resolve) => setTimeout(resolve, 200))
    assert.ok(asked - after <= 1, `asked ${asked - after} more times once a leader took writes`)
  } finally {
    follow.stop()
    await patroni.close()
  }
})

follower('no endpoint answers: follow() says so and changes nothing', async () => {
  const nodes = [fakeNode('leader', 5432, false)]
  const cluster = {
    nodes,
    leader: nodes[0],
    options: { leader: nodes[0].url, connectTimeout: 200, monitorInterval: 200, patroni: ['http://127.0.0.1:1'] },
    electLeader: () => assert.unreachable('no leader change'),
    addNode: () => assert.unreachable('no node added'),
    emit: () => true,
  }
  assert.is(await new PatroniFollower(cluster).follow(), false)
  assert.is(nodes[0].heldOut, null)
})

follower.run()
