// scripts/lagcheck.mjs against a real cluster: the JSON shape, no lag on an
// idle cluster, lag and exit 2 with a replica delayed on purpose, exit 1 with
// a replica stopped; and the flag/format helpers of lib/cli.ts, table-driven.
// Node only: the script under test is spawned with Node.
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import postgres from 'postgres'
import { formatBytes, formatMs, judgeLag, parseDuration, percentile, scriptArgs, sparkline } from 'pgfollow/ops'
import { stopServer } from 'pgfollow/cluster'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { startCluster } from './helpers/cluster.mjs'
import { sleep } from './helpers/wait.mjs'

const SCRIPT = fileURLToPath(new URL('../scripts/lagcheck.mjs', import.meta.url))
const LSN = /^[0-9A-F]+\/[0-9A-F]+$/

/** Runs lagcheck; resolves with its exit code and output (never rejects on a non-zero exit). */
function lagcheck(args, env = {}) {
  return new Promise((resolve) => {
    execFile(process.execPath, [SCRIPT, ...args], { env: { ...process.env, NO_COLOR: '1', ...env }, timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? error.code : 0, stdout, stderr })
    })
  })
}

// One cluster for the file, started before any suite is queued; the last suite stops it.
const cluster = await startCluster()
const descriptorFile = join(cluster.dir, 'cluster.json')
const leader = postgres(cluster.descriptor.leader, { max: 1, onnotice: () => {} })
const replica2 = postgres(cluster.descriptor.replicas[1], { max: 1, onnotice: () => {} })

// ---
const flags = suite('lib/cli.ts helpers')

flags('durations: units, bare seconds, and errors that name the flag', () => {
  const cases = [
    ['1s', 1000],
    ['500ms', 500],
    ['1.5s', 1500],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['30', 30_000],
    [2, 2000],
  ]
  for (const [input, ms] of cases) assert.is(parseDuration(input, '--interval'), ms, `parseDuration(${input})`)
  for (const bad of ['', 'soon', '-1s', '0', '1d', true]) {
    assert.throws(() => parseDuration(bad, '--interval'), /--interval takes a duration/, `parseDuration(${bad}) must fail`)
  }
})

flags('the arguments are the same under node and npx zx', () => {
  const url = new URL('../scripts/lagcheck.mjs', import.meta.url).href
  assert.equal(scriptArgs(url, [process.execPath, SCRIPT, '--once', 'x']), ['--once', 'x'])
  assert.equal(scriptArgs(url, [process.execPath, '/somewhere/node_modules/.bin/zx', SCRIPT, '--once']), ['--once'])
  assert.equal(scriptArgs(url, [process.execPath, 'elsewhere.mjs', '--json']), ['--json'], 'not found: after argv[1]')
})

flags('units and sparklines read as people expect', () => {
  const bytes = [[0, '0 B'], [840, '840 B'], [2048, '2.0 kB'], [5 * 1024 * 1024, '5.0 MB'], [null, '-']]
  for (const [input, text] of bytes) assert.is(formatBytes(input), text)
  const ms = [[0, '0 ms'], [3.25, '3.3 ms'], [850, '850 ms'], [2400, '2.4 s'], [null, '-']]
  for (const [input, text] of ms) assert.is(formatMs(input), text)
  assert.is(sparkline([0, 0, 0]), '▁▁▁', 'no lag is a flat floor')
  assert.is(sparkline([0, 50, 100]), '▁▅█')
  assert.is(sparkline([1, 2, 3, 4], 2), '▇█', 'only the last values, scaled to them')
  assert.is(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 50), 5)
  assert.is(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 99), 10)
  assert.is(percentile([], 99), 0)
})

flags('the verdict: down wins over lag, lag beyond a limit is 2', () => {
  const replica = (name, state, lagBytes, lagMs) => ({ name, state, lagBytes, lagMs, error: state === 'down' ? 'connect ECONNREFUSED' : null })
  const snapshot = (...replicas) => ({ time: '', leader: { name: 'leader', state: 'leader' }, replicas, orphanSlots: [] })
  const cases = [
    [snapshot(replica('r1', 'streaming', 0, 0)), { maxLagMs: 500 }, 0],
    [snapshot(replica('r1', 'streaming', 100, 900)), { maxLagMs: 500 }, 2],
    [snapshot(replica('r1', 'streaming', 100, 900)), { maxLagBytes: 100 }, 0],
    [snapshot(replica('r1', 'catchup', 101, 0)), { maxLagBytes: 100 }, 2],
    [snapshot(replica('r1', 'down', null, null)), {}, 1],
    [snapshot(replica('r1', 'stopped', null, null)), {}, 1],
    // A replica that answers but does not follow the leader (lib/tag/follow.ts) must not serve reads: exit 1, over lag.
    [snapshot(replica('r1', 'not-following', null, null)), {}, 1],
    [snapshot(replica('r1', 'diverged', 0, 0)), { maxLagMs: 500 }, 1],
    [snapshot(replica('r1', 'wrong-upstream', 0, 0)), {}, 1],
    [snapshot(replica('r1', 'other-cluster', null, null), replica('r2', 'streaming', 0, 900)), { maxLagMs: 500 }, 1],
    [snapshot(replica('r1', 'down', null, null), replica('r2', 'streaming', 0, 900)), { maxLagMs: 500 }, 1],
    [{ ...snapshot(), leader: { name: 'leader', state: 'down', error: 'gone' } }, {}, 1],
  ]
  cases.forEach(([input, limits, code], i) => assert.is(judgeLag(input, limits).exitCode, code, `case ${i}`))
})

flags.run()

// ---
const live = suite('lagcheck.mjs on a real cluster')

live.after(async () => {
  await Promise.all([leader.end({ timeout: 1 }), replica2.end({ timeout: 1 })])
  await cluster.stop()
})

live('--json prints one document per look, of the documented shape', async () => {
  const { code, stdout, stderr } = await lagcheck(['--cluster', descriptorFile, '--json', '--count', '2', '--interval', '200ms'])
  assert.is(code, 0, stderr)
  const lines = stdout.trim().split('\n')
  assert.is(lines.length, 2, 'NDJSON: one line per look')
  for (const line of lines) {
    const doc = JSON.parse(line)
    assert.ok(!Number.isNaN(Date.parse(doc.time)) && doc.time.endsWith('Z'), `time is ISO: ${doc.time}`)
    assert.is(doc.leader.name, 'leader')
    assert.match(doc.leader.lsn, LSN)
    assert.is(doc.leader.connectedReplicas, 2)
    assert.equal(doc.replicas.map((r) => r.name), ['replica1', 'replica2'])
    for (const replica of doc.replicas) {
      assert.is(replica.state, 'streaming')
      assert.type(replica.lagBytes, 'number')
      assert.type(replica.lagMs, 'number')
      assert.type(replica.sentLagBytes, 'number')
      assert.type(replica.flushLagBytes, 'number')
      assert.type(replica.retainedBytes, 'number')
      assert.is(replica.slot, `pgfollow_${replica.name}`)
      assert.not.match(replica.url, /:[^:*@/]+@/, 'no password in the output')
    }
    assert.is(doc.status, 0)
  }
})

live('a cluster idle for 5 s shows no lag: an idle leader is not lag', async () => {
  await sleep(5_000)
  const { code, stdout, stderr } = await lagcheck(['--cluster', descriptorFile, '--once', '--json', '--max-lag-ms', '100'])
  assert.is(code, 0, stderr + stdout)
  const doc = JSON.parse(stdout)
  for (const replica of doc.replicas) {
    // now() - pg_last_xact_replay_timestamp() would say 5000 ms or more here.
    assert.ok(replica.lagMs < 100, `${replica.name} lag ${replica.lagMs} ms on an idle cluster`)
    assert.ok(replica.lagBytes < 16 * 1024, `${replica.name} ${replica.lagBytes} bytes behind on an idle cluster`)
  }
})

live('a replica with a 2 s apply delay shows lag, and --max-lag-ms 500 exits 2', async () => {
  await replica2`alter system set recovery_min_apply_delay = '2s'`
  await replica2`select pg_reload_conf()`
  let writing = true
  const writer = (async () => {
    while (writing) {
      await leader`insert into blogs (url) values ('https://lag.example')`
      await sleep(50)
    }
  })()
  try {
    await sleep(2_800) // past the delay, so the leader has measured it
    const { code, stdout, stderr } = await lagcheck(['--cluster', descriptorFile, '--once', '--json', '--max-lag-ms', '500'])
    assert.is(code, 2, `exit 2 expected: ${stderr}${stdout}`)
    const doc = JSON.parse(stdout)
    const [one, two] = doc.replicas
    assert.ok(two.lagMs >= 1000, `replica2 lag ${two.lagMs} ms with a 2 s apply delay`)
    assert.ok(two.lagBytes > 0, 'replica2 has WAL left to replay')
    assert.ok(one.lagMs < 500, `replica1 is not delayed (${one.lagMs} ms)`)
    assert.ok(doc.problems.some((problem) => problem.startsWith('replica2 is')), doc.problems.join('; '))

    const table = await lagcheck(['--cluster', descriptorFile, '--once', '--max-lag-ms', '500'])
    assert.is(table.code, 2)
    assert.match(table.stdout, /replica2 is [\d.]+ ms behind \(limit 500\)/)
  } finally {
    writing = false
    await writer
    await replica2`alter system reset recovery_min_apply_delay`
    await replica2`select pg_reload_conf()`
  }
})

live('a stopped replica makes the check exit 1 and shows it down', async () => {
  await stopServer(cluster.dataDir('replica2'), 'fast')
  const { code, stdout } = await lagcheck(['--cluster', descriptorFile, '--once', '--json'])
  assert.is(code, 1)
  const doc = JSON.parse(stdout)
  const two = doc.replicas.find((replica) => replica.name === 'replica2')
  assert.ok(two, 'the down replica keeps its name (from its slot)')
  assert.is(two.state, 'down')
  assert.is(two.lagMs, null)
  assert.is(doc.replicas.find((replica) => replica.name === 'replica1').state, 'streaming')
  assert.is(doc.leader.connectedReplicas, 1)

  const table = await lagcheck(['--once'], { PGFOLLOW_CLUSTER: descriptorFile })
  assert.is(table.code, 1, 'PGFOLLOW_CLUSTER finds the cluster too')
  assert.match(table.stdout, /replica2\s+replica\s+down/)
})

live('a bad flag or a missing descriptor is exit 3 with a message that says what to do', async () => {
  const bad = await lagcheck(['--cluster', descriptorFile, '--once', '--max-lag-ms', 'soon'])
  assert.is(bad.code, 3)
  assert.match(bad.stderr, /--max-lag-ms takes a whole number/)
  const missing = await lagcheck(['--once', '--cluster', join(cluster.dir, 'nope.json')])
  assert.is(missing.code, 3)
  assert.match(missing.stderr, /No cluster descriptor at .*nope\.json/)
})

live.run()
