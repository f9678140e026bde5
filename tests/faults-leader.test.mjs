// @exclusive
// The leader SIGKILLed under load, on a real cluster: reads go on from the
// replicas, writes fail fast with LeaderUnavailableError (no hang), and
// after scripts/failover.mjs the same process writes again, with no restart.
import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { connect, LeaderUnavailableError } from 'pgfollow'
import { startCluster } from './helpers/cluster.mjs'
import { describeErrors, loops, measured, ms, percentile } from './helpers/faults.mjs'
import { sleep, until } from './helpers/wait.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const cluster = await startCluster()
const connectTimeout = 500
const sql = connect({ ...cluster.descriptor, monitorInterval: 200, maxLag: { ms: 1000 }, connectTimeout, ban: { base: 100, max: 1000 } })
const leaderEvents = []
sql.on('leader', (event) => leaderEvents.push({ ...event, at: Date.now() }))

/** node scripts/failover.mjs ARGS: exit code, stdout, stderr and how long it took. */
function runFailover(args) {
  const started = performance.now()
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(root, 'scripts/failover.mjs'), ...args], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, FORCE_COLOR: '0' },
    })
    let stdout = ''
    let stderr = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.stdout.on('data', (chunk) => (stdout += chunk))
    child.stderr.on('data', (chunk) => (stderr += chunk))
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr, ms: performance.now() - started })
    })
  })
}

const leader = suite('leader SIGKILL')

leader.after(async () => {
  await sql.end({ timeout: 1 })
  await cluster.stop()
})

leader('reads go on, writes fail fast, and failover.mjs brings writes back in the same process', async () => {
  await sql.refresh()
  let phase = 'before'
  let attempts = 0
  const readers = loops(
    20,
    async () => {
      const [row] = await sql`select count(*)::int as n, inet_server_port() as port from blogs`
      return { phase, port: row.port }
    },
    { maxMs: 60_000 },
  )
  const writers = loops(
    2,
    async (worker) => {
      const at = phase
      const url = `fault-leader writer ${worker} #${++attempts}`
      const started = performance.now()
      try {
        const [row] = await sql`insert into blogs (url) values (${url}) returning inet_server_port() as port`
        return { phase: at, ok: true, port: row.port, url }
      } catch (error) {
        return { phase: at, ok: false, error, url, ms: performance.now() - started }
      }
    },
    { maxMs: 60_000, pauseMs: 10 },
  )
  try {
    await sleep(700)
    phase = 'down'
    cluster.kill('leader', 'SIGKILL')
    await sleep(2000)

    // What a writer saw while there was no leader.
    const down = writers.samples.filter((s) => s.value.phase === 'down').map((s) => s.value)
    const failures = down.filter((w) => !w.ok)
    const wrongType = failures.filter((w) => !(w.error instanceof LeaderUnavailableError))
    const slowest = Math.max(0, ...failures.map((w) => w.ms))
    const writeMs = failures.map((w) => w.ms)

    phase = 'failover'
    const failover = await runFailover(['--dir', cluster.dir, '--json'])
    assert.is(failover.code, 0, `failover.mjs succeeded: ${failover.stderr.slice(-800)}`)
    const result = JSON.parse(failover.stdout)
    const promotedPort = cluster.ports[Number(result.promoted.replace('replica', ''))]
    const state = cluster.state()
    for (const secret of [state.password, state.replicatorPassword]) {
      assert.not.ok((failover.stdout + failover.stderr).includes(secret), 'failover.mjs prints no password')
    }

    phase = 'after'
    const doneAt = Date.now()
    await until(() => writers.samples.some((s) => s.value.phase === 'after' && s.value.ok), 10_000, 'a write to succeed after failover')
    const firstWriteAfter = Math.max(
      0,
      Math.min(...writers.samples.filter((s) => s.value.phase === 'after' && s.value.ok).map((s) => s.at + s.ms)) - doneAt,
    )
    await sleep(1000)
    await Promise.all([readers.stop(), writers.stop()])

    const after = writers.samples.filter((s) => s.value.phase === 'after').map((s) => s.value)
    const during = writers.samples.filter((s) => s.value.phase === 'failover').map((s) => s.value)
    const lastSecond = writers.samples.filter((s) => s.at > doneAt + firstWriteAfter + 50).map((s) => s.value)
    const readsDown = readers.samples.filter((s) => s.value.phase !== 'before')
    measured(
      `leader SIGKILL: ${readers.errors.length} read errors / ${
        readers.samples.length + readers.errors.length
      } reads (${readsDown.length} while down or failing over); ` +
        `${failures.length} writes refused while down (${wrongType.length} not LeaderUnavailableError, ${
          failures.filter((w) => /may or may not/.test(w.error.message)).length
        } broke in flight), slowest refusal ${ms(slowest)}, p50 ${ms(percentile(writeMs, 50))}; ` +
        `failover.mjs ${ms(failover.ms)} (promoted ${result.promoted}); first write on the new leader ${ms(firstWriteAfter)} after it returned (${
          during.filter((w) => w.ok).length
        }/${during.length} writes ok while it ran), ` +
        `${after.filter((w) => w.ok).length}/${after.length} writes ok after failover`,
    )
    assert.equal(describeErrors(readers.errors), [], 'every read succeeded, before, during and after')
    assert.ok(readsDown.length > 50, `reads went on while the leader was down (${readsDown.length})`)
    assert.ok(failures.length > 0 && down.every((w) => !w.ok), 'no write succeeded without a leader')
    assert.equal(wrongType.map((w) => `${w.error.name}: ${w.error.message}`).slice(0, 3), [], 'every refused write is a LeaderUnavailableError')
    assert.ok(slowest <= connectTimeout + 500, `every write failed within ${ms(slowest)} (limit connectTimeout ${connectTimeout} + 500 ms)`)
    assert.ok(firstWriteAfter < 3000, `writes came back ${ms(firstWriteAfter)} after failover, no restart`)
    assert.ok(
      lastSecond.length > 0 && lastSecond.every((w) => w.ok && w.port === promotedPort),
      'once back, every write succeeds on the promoted node',
    )
    // A write refused as never sent did not happen; only one that broke in flight may have.
    const refusedUrls = failures.filter((w) => !/may or may not/.test(w.error.message)).map((w) => w.url)
    const [{ applied }] = await sql.leader`select count(*)::int as applied from blogs where url in ${sql(refusedUrls.length ? refusedUrls : ['-'])}`
    assert.is(applied, 0, `none of the ${refusedUrls.length} writes refused before they were sent is on the new leader`)
    assert.ok(leaderEvents.some((event) => event.name === result.promoted), `a leader event named ${result.promoted}`)
    assert.is(sql.status().find((node) => node.role === 'leader').name, result.promoted)
  } finally {
    await Promise.all([readers.stop(), writers.stop()])
  }
})

leader.run()
