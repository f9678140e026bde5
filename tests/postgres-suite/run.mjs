#!/usr/bin/env node
// Runs postgres.js's own test suite (its tests/index.js) three times against
// a local pgfollow cluster: on raw postgres.js, through the tag, and through
// a session, then lists every test that passes raw but not routed.
//   node tests/postgres-suite/run.mjs --postgres-repo DIR [--ref v3.4.9] [--modes raw,tag,session] [--json FILE]
//     [--only REGEXP]   run only the tests whose name matches (the rest are skipped)
// DIR is a clone of github.com/porsager/postgres (or its .git dir). Nothing
// of postgres.js is kept in this repository: its tests are read from DIR at
// run time; runner.js, bootstrap.js and adapter.js stand in for the files
// they import. A maintainer's tool, not part of `npm test` (CI has no clone).
import { execFileSync, spawn } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import process from 'node:process'
import { parseArgs } from 'node:util'
import postgres from 'postgres'
import { destroy, freePort, isPortFree, nodePaths, up } from 'pgfollow/cluster'

const here = new URL('.', import.meta.url)
const { values: args } = parseArgs({
  options: {
    'postgres-repo': { type: 'string' },
    ref: { type: 'string', default: 'v3.4.9' },
    modes: { type: 'string', default: 'raw,tag,session' },
    json: { type: 'string' },
    timeout: { type: 'string', default: '900' },
    only: { type: 'string' },
  },
})
if (!args['postgres-repo']) {
  console.error('Give --postgres-repo DIR: a clone of https://github.com/porsager/postgres (git clone it first).')
  process.exit(2)
}
const modes = args.modes.split(',')
for (const mode of modes) {
  if (!['raw', 'tag', 'session'].includes(mode)) throw new Error(`--modes takes raw, tag and session, not "${mode}".`)
}

const work = mkdtempSync(join(tmpdir(), 'pgjs-suite-'))
chmodSync(work, 0o755)
const clusterDir = join(work, 'cluster')
let cleaned = false
async function cleanUp() {
  if (cleaned) return
  cleaned = true
  await destroy(clusterDir).catch(() => {})
  rmSync(work, { recursive: true, force: true })
}
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => cleanUp().then(() => process.exit(130)))

try {
  extractSuite(args['postgres-repo'], args.ref, join(work, 'tests'))
  const cluster = await startCluster()
  const results = {}
  for (const mode of modes) {
    await resetDatabase(cluster)
    process.stdout.write(`${mode}: running postgres.js's suite... `)
    results[mode] = await runSuite(mode, cluster, Number(args.timeout) * 1000)
    const passed = results[mode].tests.filter((test) => test.status === 'passed').length
    console.log(`${passed} of ${results[mode].tests.length} passed`)
  }
  report(results)
  if (args.json) writeFileSync(args.json, JSON.stringify(results, null, 2))
} finally {
  await cleanUp()
}

/** postgres.js's tests/index.js and its data files at `ref`, imports pointed at our stand-ins. */
function extractSuite(repo, ref, into) {
  const gitDir = existsSync(join(repo, '.git')) ? join(repo, '.git') : repo
  const git = (...rest) => execFileSync('git', ['--git-dir', gitDir, ...rest], { encoding: 'utf8', maxBuffer: 64 << 20 })
  try {
    git('rev-parse', '--verify', `${ref}^{commit}`)
  } catch {
    throw new Error(`${repo} has no ${ref}: fetch its tags (git fetch --tags) or pass --ref with a commit.`)
  }
  const version = JSON.parse(git('show', `${ref}:package.json`)).version
  const installed = JSON.parse(readFileSync(new URL('../package.json', import.meta.resolve('postgres')))).version
  if (version !== installed) console.warn(`Note: the suite is postgres.js ${version}, the installed postgres.js is ${installed}.`)
  execFileSync('mkdir', ['-p', into])
  for (const file of ['select.sql', 'select-param.sql', 'copy.csv']) writeFileSync(join(into, file), git('show', `${ref}:tests/${file}`))
  let index = git('show', `${ref}:tests/index.js`)
  for (const [from, to] of [['./bootstrap.js', 'bootstrap.js'], ['./test.js', 'runner.js'], ['../src/index.js', 'adapter.js']]) {
    if (!index.includes(`'${from}'`)) throw new Error(`tests/index.js at ${ref} does not import '${from}': this harness fits postgres.js 3.4.x.`)
    index = index.replace(`'${from}'`, `'${new URL(to, here).href}'`)
  }
  if (args.only) {
    const only = new RegExp(args.only)
    index = index.replace(/^t\('([^']*)'/gm, (all, name) => (only.test(name) ? `ot('${name}'` : all))
  }
  writeFileSync(join(into, 'index.js'), index)
}

/** A leader and two replicas set up as postgres.js's CI sets up its server. */
async function startCluster() {
  // The suite names port 5432 in two tests: use it when it is free.
  const leaderPort = (await isPortFree(5432)) ? 5432 : await freePort()
  const ports = [leaderPort, await freePort(), await freePort()]
  const settings = { fsync: 'off', wal_level: 'logical', max_prepared_transactions: '100', max_connections: '500' }
  const { descriptor } = await up({ dir: clusterDir, ports, replicas: 2, migrate: false, settings })
  const superuser = new URL(descriptor.leader)
  const admin = (url) => postgres(url, { max: 1, onnotice: () => {} })
  const leader = admin(descriptor.leader.replace(/\/[^/]*$/, '/postgres'))
  try {
    await leader.unsafe(`
      create user postgres_js_test;
      set password_encryption = md5;
      create user postgres_js_test_md5 with password 'postgres_js_test_md5';
      set password_encryption = 'scram-sha-256';
      create user postgres_js_test_scram with password 'postgres_js_test_scram';
    `)
  } finally {
    await leader.end()
  }
  const names = ['leader', ...descriptor.replicas.map((_, i) => `replica${i + 1}`)]
  const urls = [descriptor.leader, ...descriptor.replicas]
  const cert = makeCertificate()
  for (const [i, url] of urls.entries()) {
    const dataDir = nodePaths(clusterDir, names[i]).dataDir
    const { uid, gid } = statSync(dataDir)
    // As the suite's CI: the test roles by trust, md5 and scram, the superuser by password.
    const hba = join(dataDir, 'pg_hba.conf')
    writeFileSync(
      hba,
      [
        'host all postgres_js_test 127.0.0.1/32 trust',
        'host all postgres_js_test_md5 127.0.0.1/32 md5',
        'host all postgres_js_test_scram 127.0.0.1/32 scram-sha-256',
        readFileSync(hba, 'utf8'),
      ].join('\n'),
    )
    if (cert) {
      for (const file of ['server.crt', 'server.key']) {
        writeFileSync(join(dataDir, file), readFileSync(join(cert, file)), { mode: 0o600 })
        chownSync(join(dataDir, file), uid, gid)
      }
    }
    const node = admin(url)
    try {
      if (cert) await node`alter system set ssl = on`
      await node`select pg_reload_conf()`
    } finally {
      await node.end()
    }
  }
  return {
    descriptor,
    leaderPort,
    replicaPorts: ports.slice(1),
    env: { PGUSER: superuser.username, PGPASSWORD: decodeURIComponent(superuser.password), PGPORT: String(leaderPort), PGHOST: 'localhost' },
  }
}

/** A self-signed certificate for localhost, as the suite's CI makes one; null without openssl. */
function makeCertificate() {
  const dir = join(work, 'cert')
  try {
    execFileSync('mkdir', ['-p', dir])
    execFileSync('openssl', [
      'req',
      '-new',
      '-x509',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost',
      '-keyout',
      join(dir, 'server.key'),
      '-out',
      join(dir, 'server.crt'),
    ], { stdio: 'pipe' })
    return dir
  } catch {
    console.warn("Note: no openssl, so the server has no TLS and the suite's ssl tests fail in every run.")
    return null
  }
}

/** Each run starts from the database the suite's bootstrap makes. */
async function resetDatabase(cluster) {
  const leader = postgres(cluster.descriptor.leader.replace(/\/[^/]*$/, '/postgres'), { max: 1, onnotice: () => {} })
  let oid
  try {
    await leader`drop database if exists postgres_js_test with (force)`
    await leader`create database postgres_js_test owner postgres_js_test`
    const [created] = await leader`select oid from pg_database where datname = 'postgres_js_test'`
    oid = created.oid
    await leader`alter system set ssl = on`
    await leader`select pg_reload_conf()`
  } finally {
    await leader.end()
  }
  // The suite's first reads may go to a replica: it must have the new database by then (not the dropped one).
  for (const url of cluster.descriptor.replicas) {
    const replica = postgres(url.replace(/\/[^/]*$/, '/postgres'), { max: 1, onnotice: () => {} })
    try {
      while ((await replica`select 1 from pg_database where oid = ${oid}`).length === 0) {
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    } finally {
      await replica.end()
    }
  }
}

function runSuite(mode, cluster, timeoutMs) {
  const result = join(work, `${mode}.json`)
  const child = spawn(process.execPath, [join(work, 'tests', 'index.js')], {
    cwd: join(work, 'tests'),
    stdio: ['ignore', 'ignore', 'pipe'],
    env: {
      ...process.env,
      ...cluster.env,
      PGJS_SUITE_MODE: mode,
      PGJS_SUITE_RESULT: result,
      PGJS_SUITE_CLUSTER: JSON.stringify({ leaderPort: cluster.leaderPort, replicaPorts: cluster.replicaPorts }),
    },
  })
  let stderr = ''
  child.stderr.on('data', (chunk) => (stderr = (stderr + chunk).slice(-4000)))
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  return new Promise((resolve, reject) => {
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      if (existsSync(result)) return resolve(JSON.parse(readFileSync(result, 'utf8')))
      reject(new Error(`The ${mode} run ended (${signal ?? code}) before every test finished:\n${stderr}`))
    })
  })
}

/** Counts per run, then each test that passes raw but not routed, with its error. */
function report(results) {
  const raw = results.raw
  const passedRaw = new Set(raw ? raw.tests.filter((test) => test.status === 'passed').map((test) => test.name) : [])
  console.log('\nrun      passed  failed  of')
  for (const [mode, { tests }] of Object.entries(results)) {
    const passed = tests.filter((test) => test.status === 'passed').length
    console.log(`${mode.padEnd(8)} ${String(passed).padStart(6)}  ${String(tests.length - passed).padStart(6)}  ${tests.length}`)
  }
  if (!raw) return
  for (const [mode, { tests }] of Object.entries(results)) {
    if (mode === 'raw') continue
    const lost = tests.filter((test) => passedRaw.has(test.name) && test.status !== 'passed')
    const gained = tests.filter((test) => !passedRaw.has(test.name) && test.status === 'passed')
    console.log(`\n${mode}: ${lost.length} pass raw but not here${gained.length ? `, ${gained.length} pass here only` : ''}`)
    for (const test of lost) console.log(`  - ${test.name}: ${test.status}${test.error ? ` — ${test.error.split('\n')[0]}` : ''}`)
  }
}
