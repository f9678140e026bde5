// @deno
// lib/migrate.ts against a real leader and replica: the ledger and its
// checksums, rollback of a failing file, the advisory lock that keeps two
// runners apart, and the wait for replicas to replay what was applied.
// Each test writes its own migration folder with names of its own: the
// ledger is per database, and files that are not in a folder are ignored.
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { ConfigError, ReplayTimeoutError } from 'pgfollow'
import { migrate } from 'pgfollow/ops'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { startCluster } from './helpers/cluster.mjs'

const LOCK = 'pgfollow.migrate'

const migrations = suite('migrate')
let c
let leader
let replica
const folders = []

/** A folder of migration files: { '001_x.sql': 'create table ...' }. */
function folder(files) {
  const dir = mkdtempSync(join(tmpdir(), 'pgfollow-migrations-'))
  folders.push(dir)
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text)
  return dir
}

const sha256 = (text) => createHash('sha256').update(text).digest('hex')
const exists = async (sql, table) => (await sql`select to_regclass(${table}) is not null as found`)[0].found
const ledger = async (names) => await leader`select name, checksum from pgfollow_migrations where name in ${leader(names)} order by name`
const settle = (promise) => promise.then(() => 'resolved', () => 'rejected')

migrations.before(async () => {
  try {
    c = await startCluster({ replicas: 1, migrate: false })
    leader = postgres(c.descriptor.leader, { max: 2, onnotice: () => {} })
    replica = postgres(c.descriptor.replicas[0], { max: 1, onnotice: () => {} })
  } catch (error) {
    console.error(error) // uvu swallows errors thrown by `before`
    throw error
  }
})

migrations.after(async () => {
  await Promise.all([leader?.end({ timeout: 1 }), replica?.end({ timeout: 1 })])
  await c?.stop()
  for (const dir of folders) rmSync(dir, { recursive: true, force: true })
})

migrations('applies files in name order, records their sha256, and returns once the replica replayed them', async () => {
  const files = {
    '002_ledger_b.sql': "insert into ledger_a (note) values ('from b');",
    '001_ledger_a.sql': 'create table ledger_a (note text);',
    'README.md': 'not a migration',
  }
  const result = await migrate({ leader: c.descriptor.leader, replicas: c.descriptor.replicas, directory: folder(files) })
  assert.equal(result, { applied: ['001_ledger_a.sql', '002_ledger_b.sql'], alreadyApplied: [] })
  assert.equal(
    (await ledger(['001_ledger_a.sql', '002_ledger_b.sql'])).map((row) => [row.name, row.checksum]),
    [['001_ledger_a.sql', sha256(files['001_ledger_a.sql'])], ['002_ledger_b.sql', sha256(files['002_ledger_b.sql'])]],
  )
  // No poll: migrate only returns after the replica has replayed.
  assert.equal((await replica`select note from ledger_a`).map((row) => row.note), ['from b'])
})

migrations('a second run applies nothing, and a new file is applied alone', async () => {
  const files = { '001_rerun.sql': 'create table rerun (id int);' }
  const directory = folder(files)
  await migrate({ leader: c.descriptor.leader, directory })
  const again = await migrate({ leader: c.descriptor.leader, directory })
  assert.equal(again, { applied: [], alreadyApplied: ['001_rerun.sql'] })
  writeFileSync(join(directory, '002_rerun.sql'), 'alter table rerun add column note text;')
  const third = await migrate({ leader: c.descriptor.leader, directory })
  assert.equal(third, { applied: ['002_rerun.sql'], alreadyApplied: ['001_rerun.sql'] })
})

migrations('a file changed after it was applied is refused by name, and nothing after it runs', async () => {
  const directory = folder({ '001_changed.sql': 'create table changed (id int);' })
  await migrate({ leader: c.descriptor.leader, directory })
  writeFileSync(join(directory, '001_changed.sql'), 'create table changed (id bigint);')
  writeFileSync(join(directory, '002_changed.sql'), 'create table changed_later (id int);')
  try {
    await migrate({ leader: c.descriptor.leader, directory })
    assert.unreachable('a changed migration was accepted')
  } catch (error) {
    assert.instance(error, ConfigError)
    assert.match(error.message, 'Migration 001_changed.sql was changed after it was applied')
  }
  assert.is(await exists(leader, 'changed_later'), false)
  assert.equal((await ledger(['001_changed.sql', '002_changed.sql'])).map((row) => row.name), ['001_changed.sql'])
})

migrations('a failing file is rolled back with its ledger row; the files before it stay applied', async () => {
  const directory = folder({
    '001_partial.sql': 'create table partial_ok (id int);',
    '002_partial.sql': 'create table partial_bad (id int); select 1/0;',
  })
  try {
    await migrate({ leader: c.descriptor.leader, directory })
    assert.unreachable('a failing migration passed')
  } catch (error) {
    assert.instance(error, ConfigError)
    assert.match(error.message, 'Migration 002_partial.sql failed and was rolled back')
    assert.match(error.message, 'division by zero')
  }
  assert.is(await exists(leader, 'partial_ok'), true)
  assert.is(await exists(leader, 'partial_bad'), false)
  assert.equal((await ledger(['001_partial.sql', '002_partial.sql'])).map((row) => row.name), ['001_partial.sql'])
})

migrations('waits while another session holds the migration lock, and runs when it is released', async () => {
  const directory = folder({ '001_locked.sql': 'create table locked (id int);' })
  const holder = await leader.reserve()
  try {
    await holder`select pg_advisory_lock(hashtext(${LOCK}))`
    const running = migrate({ leader: c.descriptor.leader, directory })
    const outcome = settle(running)
    // The runner is queued on the lock (bounded poll), and stays queued.
    const deadline = Date.now() + 5_000
    for (;;) {
      const [{ waiting }] = await leader`select count(*)::int as waiting from pg_locks where locktype = 'advisory' and not granted`
      if (waiting === 1) break
      if (Date.now() > deadline) assert.unreachable('migrate never waited for the advisory lock')
      await new Promise((r) => setTimeout(r, 10))
    }
    await new Promise((r) => setTimeout(r, 300))
    assert.is(await Promise.race([outcome, new Promise((r) => setTimeout(() => r('pending'), 0))]), 'pending')
    assert.is(await exists(leader, 'locked'), false)
    await holder`select pg_advisory_unlock(hashtext(${LOCK}))`
    assert.equal(await running, { applied: ['001_locked.sql'], alreadyApplied: [] })
    assert.is(await exists(leader, 'locked'), true)
  } finally {
    holder.release()
  }
})

migrations('two runners at once apply each file exactly once', async () => {
  const directory = folder({ '001_race.sql': 'create table race (id int);', '002_race.sql': 'insert into race values (1);' })
  const options = { leader: c.descriptor.leader, directory }
  const results = await Promise.all([migrate(options), migrate(options)])
  assert.equal(results.map((result) => result.applied.length).sort(), [0, 2])
  assert.equal(results.map((result) => result.alreadyApplied.length).sort(), [0, 2])
  assert.equal(await leader`select id from race`.then((rows) => rows.map((row) => row.id)), [1])
})

migrations('waits for a delayed replica to replay, and says so when it takes too long', async () => {
  // recovery_min_apply_delay makes the replica hold commits back by 1 s.
  await replica`alter system set recovery_min_apply_delay = '1s'`
  await replica`select pg_reload_conf()`
  try {
    await new Promise((r) => setTimeout(r, 100))
    const started = Date.now()
    const result = await migrate({
      leader: c.descriptor.leader,
      replicas: c.descriptor.replicas,
      directory: folder({ '001_delayed.sql': 'create table delayed (id int);' }),
    })
    assert.equal(result.applied, ['001_delayed.sql'])
    assert.ok(Date.now() - started >= 900, `returned after ${Date.now() - started} ms, before the delayed replay`)
    assert.is(await exists(replica, 'delayed'), true)
    try {
      await migrate({
        leader: c.descriptor.leader,
        replicas: c.descriptor.replicas,
        directory: folder({ '001_too_slow.sql': 'create table too_slow (id int);' }),
        replayTimeoutMs: 200,
      })
      assert.unreachable('migrate did not time out on a replica 1 s behind')
    } catch (error) {
      assert.instance(error, ReplayTimeoutError)
      assert.match(error.message, 'has not replayed the migrations within 200 ms')
      assert.not.match(error.message, new URL(c.descriptor.replicas[0]).password, 'no password in the message')
    }
  } finally {
    await replica`alter system reset recovery_min_apply_delay`
    await replica`select pg_reload_conf()`
  }
})

migrations('the default folder holds the blog model, applied to the leader and replayed by the replica', async () => {
  const result = await migrate({ leader: c.descriptor.leader, replicas: c.descriptor.replicas })
  assert.equal(result, { applied: ['001_blog_model.sql'], alreadyApplied: [] })
  for (const table of ['blogs', 'posts', 'comments']) assert.is(await exists(replica, table), true, table)
})

migrations.run()
