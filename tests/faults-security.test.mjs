// @exclusive
// Security, checked on a real cluster where it can be: no hard-coded or
// default passwords, secrets in 0600 files, servers on 127.0.0.1 only, a
// replicator that can replicate and nothing else, no `trust` in pg_hba, and
// no password in logs, status output, error messages or the process list.
import { execFileSync, spawn } from 'node:child_process'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { createConnection } from 'node:net'
import { networkInterfaces } from 'node:os'
import { dirname, join, relative } from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { inspect } from 'node:util'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import postgres from 'postgres'
import { connect } from 'pgfollow'
import { freePort } from 'pgfollow/cluster'
import { startCluster } from './helpers/cluster.mjs'
import { measured } from './helpers/faults.mjs'
import { sleep } from './helpers/wait.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
// A password from the environment would make the "generated" checks meaningless.
delete process.env.PGFOLLOW_PASSWORD

const cluster = await startCluster()
const state = cluster.state()
const secrets = { superuser: state.password, replicator: state.replicatorPassword }
const nodes = state.nodes.map((node) => node.name)
const leader = postgres(cluster.descriptor.leader, { max: 1, onnotice: () => {} })

/** Which of our secrets `text` contains, by name. */
function leaked(text) {
  return Object.entries(secrets)
    .filter(([, secret]) => text.includes(secret))
    .map(([name]) => name)
}

// ---

const passwords = suite('no hard-coded or default passwords')

passwords('the shipped code holds no literal password (lib, scripts, infra, sql, .ci, package files)', () => {
  const files = execFileSync('git', ['ls-files', 'lib', 'scripts', 'infra', 'sql', '.ci', 'bench', 'package.json', 'deno.json'], { cwd: root })
    .toString()
    .split('\n')
    .filter(Boolean)
  // A literal assigned to something named password/secret, a URL with a literal
  // password, a literal in a shell/env assignment, a literal in SQL. Paths,
  // shell variables, the *** mask and documentation placeholders are not passwords.
  const literalAssignment = /\b(\w*(?:password|passwd|secret)\w*)["']?\s*[:=]\s*(["'`])([^"'`\s]{3,})\2/gi
  const urlWithPassword = /postgres(?:ql)?:\/\/[^:/@\s"'`]+:([^@\s"'`]+)@/g
  const envLiteral = /\b(PGPASSWORD|POSTGRES_PASSWORD|PGADMIN_DEFAULT_PASSWORD|PGFOLLOW_PASSWORD)=(?![$"'\s]|$)/
  const sqlLiteral = /\bPASSWORD\s+(E?'|\$\$)/i
  const placeholder = /^(password|pass|\*\*\*|…|\.\.\.|<[^>]*>|\$\{.*\}|\$\w+)$/i
  // pgpool's pool_passwd names a file; {{password}} is a template slot filled at run time.
  const notAPassword = (key, value) =>
    ['password_encryption', 'pool_passwd'].includes(key.toLowerCase()) || /^(\/|\$|\*\*\*)/.test(value) || /^\{\{\w+\}\}$/.test(value)
  const suspicious = (file, line) => {
    if (file.endsWith('.sql')) return sqlLiteral.test(line) || [...line.matchAll(urlWithPassword)].some((m) => !placeholder.test(m[1]))
    return (
      [...line.matchAll(literalAssignment)].some((m) => !notAPassword(m[1], m[3])) ||
      [...line.matchAll(urlWithPassword)].some((m) => !placeholder.test(m[1])) ||
      envLiteral.test(line)
    )
  }
  const hits = []
  for (const file of files) {
    const text = readFileSync(join(root, file), 'utf8')
    text.split('\n').forEach((line, index) => {
      if (suspicious(file, line)) hits.push(`${file}:${index + 1}: ${line.trim()}`)
    })
  }
  // The scan must catch what it is for.
  for (
    const [file, line] of [
      ['lib/x.ts', "const options = { password: 'hunter2' }"],
      ['scripts/x.mjs', "const url = 'postgres://postgres:postgres@127.0.0.1:5432/db'"],
      ['infra/x.sh', 'export PGPASSWORD=secret'],
      ['sql/x.sql', "CREATE ROLE app LOGIN PASSWORD 'app';"],
    ]
  ) {
    assert.ok(suspicious(file, line), `the scan flags ${line}`)
  }
  measured(`static scan for hard-coded passwords: ${files.length} tracked files, ${hits.length} hits`)
  assert.equal(hits, [], 'no literal password in the shipped code')
  assert.ok(files.length > 20, `scanned ${files.length} files`)
})

passwords('the infra program generates its passwords and declares them secret', () => {
  const yaml = readFileSync(join(root, 'infra/Pulumi.yaml'), 'utf8')
  for (const key of ['postgresPassword', 'replicatorPassword']) {
    const block = yaml.slice(yaml.indexOf(`  ${key}:`)).split(/\n {2}\S/)[0]
    assert.ok(/default:\s*(""|'')/.test(block), `${key} defaults to "" (= generated), not to a password`)
  }
  const component = readFileSync(join(root, 'infra/cluster.ts'), 'utf8')
  assert.ok(/random\.RandomPassword/.test(component), 'infra/cluster.ts generates passwords with @pulumi/random')
  assert.ok(/pulumi\.secret\(/.test(component), 'and marks them secret')
})

passwords('every local cluster gets its own random passwords', async () => {
  const other = await startCluster({ replicas: 0, migrate: false })
  try {
    const otherState = other.state()
    for (const [name, value] of Object.entries({ ...secrets, otherSuperuser: otherState.password, otherReplicator: otherState.replicatorPassword })) {
      assert.ok(value.length >= 24, `${name} has ${value.length} characters`)
      assert.ok(/^[A-Za-z0-9_-]+$/.test(value), `${name} is URL-safe`)
    }
    const all = [secrets.superuser, secrets.replicator, otherState.password, otherState.replicatorPassword]
    assert.is(new Set(all).size, 4, 'four different passwords across two clusters and two roles')
    measured(`generated passwords: ${secrets.superuser.length} characters, all four different across two clusters`)
  } finally {
    await other.stop()
  }
})

passwords.run()

// ---

const files = suite('secret files and listening addresses')

files('the descriptor, the state file and the standby settings are 0600; data dirs 0700', () => {
  const mode = (path) => (statSync(path).mode & 0o777).toString(8)
  assert.is(mode(join(cluster.dir, 'cluster.json')), '600', 'cluster.json')
  assert.is(mode(join(cluster.dir, 'pgfollow.json')), '600', 'pgfollow.json')
  assert.not.ok(statSync(cluster.dir).mode & 0o044, 'the cluster dir is not readable by group or others')
  for (const name of nodes) {
    assert.is(mode(cluster.dataDir(name)), '700', `${name} data dir`)
    const autoConf = join(cluster.dataDir(name), 'postgresql.auto.conf')
    assert.not.ok(
      statSync(autoConf).mode & 0o077,
      `${name} postgresql.auto.conf (primary_conninfo holds the replicator password) is ${mode(autoConf)}`,
    )
  }
})

files('every node listens on 127.0.0.1 only, with no unix socket', async () => {
  for (const [index, name] of nodes.entries()) {
    const client = postgres(name === 'leader' ? cluster.descriptor.leader : cluster.descriptor.replicas[index - 1], { max: 1, onnotice: () => {} })
    const [row] = await client`select current_setting('listen_addresses') as listen, current_setting('unix_socket_directories') as sockets`
    await client.end({ timeout: 1 })
    assert.is(row.listen, '127.0.0.1', `${name} listen_addresses`)
    assert.is(row.sockets, '', `${name} unix_socket_directories`)
  }
  // What the kernel says: the listening sockets on our ports, from /proc/net/tcp{,6}.
  const listening = []
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = ''
    try {
      text = readFileSync(file, 'utf8')
    } catch {
      continue
    }
    for (const line of text.trim().split('\n').slice(1)) {
      const [, local, , st] = line.trim().split(/\s+/)
      const [address, portHex] = local.split(':')
      if (st === '0A' && cluster.ports.includes(parseInt(portHex, 16))) {
        listening.push(`${file.endsWith('6') ? 'v6' : 'v4'} ${address}:${parseInt(portHex, 16)}`)
      }
    }
  }
  assert.equal(listening.sort(), cluster.ports.map((port) => `v4 0100007F:${port}`).sort(), 'one listening socket per node, each on 127.0.0.1')

  const external = Object.values(networkInterfaces()).flat().find((address) => address && !address.internal && address.family === 'IPv4')
  if (!external) {
    console.log('skipped: no non-loopback IPv4 address on this machine to try the ports from')
    return
  }
  const results = await Promise.all(cluster.ports.map((port) => tryConnect(external.address, port)))
  measured(
    `listening: ${listening.length} sockets, all 127.0.0.1; connecting to ${external.address} on the node ports: ${[...new Set(results)].join(', ')}`,
  )
  for (const [i, result] of results.entries()) assert.is.not(result, 'connected', `port ${cluster.ports[i]} answers on ${external.address}`)
})

/** 'connected', or the error code of a TCP connect (bounded to 2 s). */
function tryConnect(host, port) {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port })
    const done = (result) => {
      socket.destroy()
      resolve(result)
    }
    socket.setTimeout(2000, () => done('timeout'))
    socket.once('connect', () => done('connected'))
    socket.once('error', (error) => done(error.code))
  })
}

files.run()

// ---

const roles = suite('the replicator role and pg_hba')

roles('the replicator is LOGIN REPLICATION and nothing else: no superuser, no memberships, owns nothing', async () => {
  const [role] = await leader`select * from pg_roles where rolname = 'replicator'`
  assert.equal(
    {
      super: role.rolsuper,
      inherit: role.rolinherit,
      createrole: role.rolcreaterole,
      createdb: role.rolcreatedb,
      login: role.rolcanlogin,
      replication: role.rolreplication,
      bypassrls: role.rolbypassrls,
    },
    { super: false, inherit: false, createrole: false, createdb: false, login: true, replication: true, bypassrls: false },
  )
  const [counts] = await leader`
    select (select count(*)::int from pg_auth_members where member = ${role.oid} or roleid = ${role.oid}) as memberships,
           (select count(*)::int from pg_class where relowner = ${role.oid}) as relations,
           (select count(*)::int from pg_database where datdba = ${role.oid}) as databases,
           (select count(*)::int from pg_namespace where nspowner = ${role.oid}) as schemas`
  assert.equal(counts, { memberships: 0, relations: 0, databases: 0, schemas: 0 })
  const [secret] = await leader`select rolpassword from pg_authid where rolname = 'replicator'`
  assert.ok(secret.rolpassword.startsWith('SCRAM-SHA-256$'), 'stored as a SCRAM verifier')
  const streaming = await leader`select distinct usename from pg_stat_replication`
  assert.equal(streaming.map((row) => row.usename), ['replicator'], 'the replicas stream as replicator')
})

roles('the replicator can open a replication connection, but no database and no SQL', async () => {
  const base = {
    host: '127.0.0.1',
    port: cluster.ports[0],
    user: 'replicator',
    password: secrets.replicator,
    max: 1,
    onnotice: () => {},
    fetch_types: false,
    connect_timeout: 3,
  }
  const physical = postgres({ ...base, database: 'postgres', connection: { replication: 'true' } })
  try {
    const [system] = await physical.unsafe('IDENTIFY_SYSTEM').simple()
    assert.ok(system.systemid, 'IDENTIFY_SYSTEM answers: it can replicate')
    const sqlError = await physical.unsafe('select 1').simple().then(() => null, (error) => error)
    assert.is(sqlError?.code, '0A000', `no SQL on a physical replication connection: ${sqlError?.message}`)
  } finally {
    await physical.end({ timeout: 1 })
  }
  const refused = []
  for (const [database, replication] of [['pgfollow', undefined], ['postgres', undefined], ['template1', undefined], ['pgfollow', 'database']]) {
    const client = postgres({ ...base, database, ...(replication ? { connection: { replication } } : {}) })
    const error = await client`select 1`.then(() => null, (caught) => caught)
    await client.end({ timeout: 1 })
    assert.is(
      error?.code,
      '28000',
      `replicator into ${database}${replication ? ' (logical replication)' : ''} is rejected by pg_hba: ${error?.message}`,
    )
    refused.push(database + (replication ? ' (logical)' : ''))
  }
  measured(`replicator: IDENTIFY_SYSTEM ok, SQL refused (0A000), logins refused (28000) to ${refused.join(', ')}`)
})

roles('no node has `trust` (or any method but scram-sha-256 and reject) in pg_hba.conf, and passwords are SCRAM', async () => {
  for (const name of nodes) {
    const lines = readFileSync(join(cluster.dataDir(name), 'pg_hba.conf'), 'utf8')
      .split('\n')
      .map((line) => line.replace(/#.*/, '').trim())
      .filter(Boolean)
    assert.ok(lines.length > 0, `${name} has pg_hba rules`)
    for (const line of lines) {
      const fields = line.split(/\s+/)
      assert.not.ok(/\btrust\b/i.test(line), `${name}: ${line}`)
      assert.is(fields[0], 'host', `${name}: TCP rules only (no local socket): ${line}`)
      assert.ok(['scram-sha-256', 'reject'].includes(fields[4]), `${name}: method ${fields[4]} in ${line}`)
      assert.is(fields[3], '127.0.0.1/32', `${name}: loopback only: ${line}`)
    }
  }
  const rules = await leader`select type, database, user_name, address, auth_method from pg_hba_file_rules`
  assert.not.ok(rules.some((rule) => rule.auth_method === 'trust'), 'the loaded rules have no trust either')
  const [{ md5 }] = await leader`select count(*)::int as md5 from pg_authid where rolpassword is not null and rolpassword not like 'SCRAM-SHA-256$%'`
  assert.is(md5, 0, 'every stored password is a SCRAM verifier')
})

roles.run()

// ---

const leaks = suite('passwords never leak')

leaks.after(async () => {
  await leader.end({ timeout: 1 })
  await cluster.stop()
})

leaks('not in status output, error messages, process lists, logs or any file of the cluster but the descriptor and state', async () => {
  const closedPort = await freePort()
  const [replica1, replica2] = cluster.descriptor.replicas
  const wrongPassword = new URL(replica2)
  wrongPassword.password = 'not-' + secrets.superuser.slice(4)
  const closed = new URL(replica1)
  closed.port = String(closedPort)
  // A tag with one good replica, one with a wrong password and one on a closed port (the real password).
  const sql = connect({
    leader: cluster.descriptor.leader,
    replicas: [replica1, wrongPassword.toString(), closed.toString()],
    monitorInterval: 100,
    connectTimeout: 500,
  })
  const dead = connect({ leader: closed.toString(), replicas: [], monitorInterval: 100, connectTimeout: 500 })
  const texts = {}
  try {
    for (let i = 0; i < 20; i++) await sql`select 1`
    await sleep(300)
    texts['sql.status()'] = JSON.stringify(sql.status())
    texts['sql.status() inspected'] = inspect(sql.status(), { depth: 10 })
    const errors = []
    for (const attempt of [() => dead`insert into blogs (url) values ('x')`, () => dead`select 1`, () => dead.begin((tx) => tx`select 1`)]) {
      try {
        await attempt()
      } catch (error) {
        errors.push(error)
      }
    }
    assert.is(errors.length, 3, 'the dead leader fails every statement')
    texts['error messages'] = errors.map((error) =>
      `${error.name}: ${error.message}\n${error.stack}\n${JSON.stringify(error)}\n${inspect(error, { depth: 10 })}`
    ).join('\n')
    texts['dead status'] = JSON.stringify(dead.status())
    // The process list while the cluster, two tags and their connections are up.
    texts['ps -eo args'] = execFileSync('ps', ['-eo', 'args']).toString()
    for (
      const [label, args] of Object.entries({
        'cluster.mjs status': ['scripts/cluster.mjs', 'status', '--dir', cluster.dir],
        'cluster.mjs status --json': ['scripts/cluster.mjs', 'status', '--json', '--dir', cluster.dir],
        'lagcheck.mjs --once': ['scripts/lagcheck.mjs', '--once', '--cluster', join(cluster.dir, 'cluster.json')],
        'lagcheck.mjs --once --json': ['scripts/lagcheck.mjs', '--once', '--json', '--cluster', join(cluster.dir, 'cluster.json')],
      })
    ) {
      texts[label] = await runScript(args)
    }
  } finally {
    await sql.end({ timeout: 1 })
    await dead.end({ timeout: 1 })
  }
  assert.ok(texts['sql.status()'].includes('password authentication failed'), 'the status did record the failed login')
  assert.ok(/ECONNREFUSED|CONNECT/.test(texts['sql.status()']), 'and the refused connection')
  assert.ok(texts['ps -eo args'].includes('walreceiver'), 'the process list shows the servers')
  assert.ok(texts['cluster.mjs status'].includes('streaming'), `cluster.mjs status ran: ${texts['cluster.mjs status'].slice(0, 300)}`)

  // Every file in the cluster dir; the passwords belong only in the state, the descriptor and a standby's primary_conninfo.
  const allowed = {
    superuser: new Set(['pgfollow.json', 'cluster.json']),
    replicator: new Set(['pgfollow.json', ...nodes.filter((n) => n !== 'leader').map((n) => `${n}/data/postgresql.auto.conf`)]),
  }
  let scanned = 0
  let bytes = 0
  const fileHits = []
  for (const file of walk(cluster.dir)) {
    const content = readFileSync(file)
    scanned++
    bytes += content.length
    const name = relative(cluster.dir, file)
    for (const [kind, secret] of Object.entries(secrets)) {
      if (content.includes(secret) && !allowed[kind].has(name)) fileHits.push(`${kind} password in ${name}`)
    }
  }
  const logs = nodes.map((name) => readFileSync(join(cluster.dir, name, 'postgres.log'), 'utf8')).join('\n')
  assert.ok(/password authentication failed/.test(logs), 'the servers did log the failed logins (and only that)')
  texts['postgres.log of every node'] = logs

  const textHits = Object.entries(texts).flatMap(([label, text]) => leaked(text).map((kind) => `${kind} password in ${label}`))
  measured(
    `password leaks: ${textHits.length + fileHits.length} (checked ${Object.keys(texts).join(', ')}; ` +
      `${scanned} files, ${(bytes / 1024 / 1024).toFixed(0)} MB in the cluster dir, including WAL)`,
  )
  assert.equal(textHits, [], 'no password in any output')
  assert.equal(fileHits, [], 'no password in any file but the allowed ones')
})

function* walk(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) yield* walk(path)
    else if (entry.isFile()) yield path
  }
}

/** stdout + stderr of a script run with node from the repo root (bounded to 30 s). */
function runScript(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: '0' } })
    let output = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.stdout.on('data', (chunk) => (output += chunk))
    child.stderr.on('data', (chunk) => (output += chunk))
    child.on('error', reject)
    child.on('close', () => {
      clearTimeout(timer)
      resolve(output)
    })
  })
}

leaks.run()
