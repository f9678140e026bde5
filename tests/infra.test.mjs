// The Pulumi program in infra/, against Pulumi's mocks (no engine, no CLI,
// no Docker here): which resources each config makes, how they depend on one
// another, ports, validation, secret outputs, and that the nodes run the
// shared replication settings and SQL. Run: node tests/infra.test.mjs
import { execFileSync, spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as pulumi from '@pulumi/pulumi'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { build, envOf, flagsToSettings, generatedPassword, infra, plainPart, setConfig, unwrap, uploadsOf, valueOf } from './fixtures/infra-mocks.mjs'

const infraDir = fileURLToPath(new URL('../infra/', import.meta.url))
let counter = 0
/** A fresh component name per cluster, so records never mix. */
const fresh = (label) => `${label}${++counter}`

const containerNames = (built) => built.ofType('container:Container').map((record) => record.name)

// ---
const resources = suite('resources per config')

resources('the defaults make a leader, two replicas, pgAdmin, one network, three volumes and two images', async () => {
  const name = fresh('defaults')
  const built = await build(name)
  assert.equal(containerNames(built).sort(), [`${name}-leader`, `${name}-pgadmin`, `${name}-replica1`, `${name}-replica2`])
  assert.is(built.ofType('network:Network').length, 1)
  assert.equal(built.ofType('volume:Volume').map((record) => record.inputs.name).sort(), [
    `${name}-leader-data`,
    `${name}-replica1-data`,
    `${name}-replica2-data`,
  ])
  assert.equal(built.ofType('remoteImage:RemoteImage').map((record) => record.inputs.name).sort(), ['dpage/pgadmin4:9', 'postgres:18'])
  assert.not.ok(built.resources.some((record) => record.type === 'pulumi:providers:docker'), 'everything runs on the local engine')
})

resources('replicas 0 makes a leader that creates no slots, and pgAdmin', async () => {
  const name = fresh('solo')
  const built = await build(name, { replicas: 0 })
  assert.equal(containerNames(built).sort(), [`${name}-leader`, `${name}-pgadmin`])
  assert.is(envOf(built.named('leader')).PGFOLLOW_SLOTS, '')
  assert.equal(await valueOf(built.cluster.replicaUrls), [])
})

for (const replicas of [1, 2, 5]) {
  resources(`replicas ${replicas} makes ${replicas} replica containers, volumes and slots`, async () => {
    const name = fresh(`r${replicas}x`)
    const built = await build(name, { replicas })
    const expected = Array.from({ length: replicas }, (_, i) => infra.replicaName(i))
    assert.equal(built.cluster.nodeNames, ['leader', ...expected])
    assert.is(built.ofType('container:Container').length, replicas + 2)
    assert.is(built.ofType('volume:Volume').length, replicas + 1)
    assert.is(envOf(built.named('leader')).PGFOLLOW_SLOTS, expected.map(infra.slotName).join(' '))
    assert.is((await valueOf(built.cluster.replicaUrls)).length, replicas)
  })
}

resources('pgadmin off leaves out pgAdmin, its image and its password', async () => {
  const name = fresh('nopga')
  const built = await build(name, { pgadmin: false })
  assert.not.ok(containerNames(built).includes(`${name}-pgadmin`))
  assert.equal(built.ofType('remoteImage:RemoteImage').map((record) => record.inputs.name), ['postgres:18'])
  assert.not.ok(built.resources.some((record) => record.name === `${name}-pgadmin-password`))
  assert.is(await valueOf(built.cluster.pgadminUrl), undefined)
})

resources('every child is parented to the component and named after it', async () => {
  const name = fresh('named')
  const built = await build(name)
  for (const record of built.resources) assert.ok(record.name === name || record.name.startsWith(`${name}-`), record.name)
  assert.is(built.named('leader').inputs.name, `${name}-leader`)
  assert.is(built.ofType('network:Network')[0].inputs.name, `${name}-net`)
})

resources.run()

// ---
const replicas = suite('replicas')

replicas("each replica's entrypoint clones through its own slot from the leader's alias", async () => {
  const name = fresh('slots')
  const built = await build(name, { replicas: 3 })
  const entrypoint = infra.containerScript('pgfollow-entrypoint.sh')
  for (let i = 0; i < 3; i++) {
    const node = infra.replicaName(i)
    const record = built.named(node)
    const env = envOf(record)
    assert.is(env.PGFOLLOW_ROLE, 'replica')
    assert.is(env.PGFOLLOW_SLOT, infra.slotName(node))
    assert.is(env.PGFOLLOW_APPLICATION_NAME, node)
    assert.is(env.PGFOLLOW_LEADER_HOST, 'pg-leader')
    assert.is(env.PGFOLLOW_LEADER_PORT, '5432')
    assert.equal(unwrap(record.inputs.entrypoints), [infra.NODE_PATHS.entrypoint])
    const uploaded = uploadsOf(record)[infra.NODE_PATHS.entrypoint]
    assert.is(uploaded.content, entrypoint, 'the uploaded entrypoint is infra/container/pgfollow-entrypoint.sh')
    assert.is(uploaded.permissions, '0755', 'root runs it, then postgres re-runs it')
    assert.equal(unwrap(record.inputs.networksAdvanced)[0].aliases, [`pg-${node}`])
  }
  assert.equal(unwrap(built.named('leader').inputs.networksAdvanced)[0].aliases, ['pg-leader'])
})

replicas('replicas wait for a healthy leader, and pgAdmin for every node', async () => {
  const name = fresh('deps')
  const built = await build(name, { replicas: 2 })
  const urnOf = (suffix) => built.dependsOn(suffix).find((urn) => urn.endsWith(`::${name}-${suffix}`))
  const leaderUrn = (deps) => deps.find((urn) => urn.endsWith(`::${name}-leader`))
  for (const node of ['replica1', 'replica2']) assert.ok(leaderUrn(built.dependsOn(node)), `${node} depends on the leader`)
  for (const node of ['leader', 'replica1', 'replica2']) {
    assert.ok(built.dependsOn('pgadmin').some((urn) => urn.endsWith(`::${name}-${node}`)), `pgAdmin depends on ${node}`)
  }
  assert.not.ok(
    built.dependsOn('leader').some((urn) => new RegExp(`::${name}-(replica\\d+|pgadmin)$`).test(urn)),
    'the leader depends on no other container',
  )
  assert.is(urnOf('nothing'), undefined)
  // `wait` is what makes "depends on" mean "depends on a healthy" node.
  for (const node of ['leader', 'replica1', 'replica2']) {
    const inputs = unwrap(built.named(node).inputs)
    assert.is(inputs.wait, true, `${node} waits for its health check`)
    // The script itself runs for real in tests/infra-entrypoint.test.mjs.
    assert.equal(inputs.healthcheck.tests, ['CMD', infra.NODE_PATHS.healthcheck])
    assert.is(uploadsOf(built.named(node))[infra.NODE_PATHS.healthcheck].content, infra.containerScript('pgfollow-healthcheck.sh'))
    // A replica's health check logs in to read pg_stat_wal_receiver.
    assert.ok(uploadsOf(built.named(node))[`${infra.NODE_PATHS.secretsIn}/postgres_password`], `${node} has the superuser password file`)
  }
})

replicas('containers with fixed names are deleted before they are replaced', () => {
  // Not visible in mock inputs; the component passes it on every container.
  const count = (file) => readFileSync(new URL(`../infra/${file}`, import.meta.url), 'utf8').match(/deleteBeforeReplace: true/g)?.length
  assert.is(count('cluster.ts'), 1, 'node containers')
  assert.is(count('pgadmin.ts'), 1, 'pgAdmin')
  assert.is(count('patroni.ts'), 2, 'etcd and the Patroni nodes')
})

replicas.run()

// ---
const ports = suite('ports')

const publishedPorts = (built) =>
  Object.fromEntries(
    built.ofType('container:Container').map((record) => {
      const [published] = unwrap(record.inputs.ports)
      return [record.name.slice(record.name.lastIndexOf('-') + 1), published]
    }),
  )

ports('the default ports are 5432, 5480, 5490 and pgAdmin 5050, on 127.0.0.1', async () => {
  const built = await build(fresh('ports'))
  const published = publishedPorts(built)
  assert.equal(
    Object.fromEntries(Object.entries(published).map(([node, port]) => [node, port.external])),
    { leader: 5432, replica1: 5480, replica2: 5490, pgadmin: 5050 },
  )
  for (const port of Object.values(published)) assert.is(port.ip, '127.0.0.1')
  assert.is(published.leader.internal, 5432)
  assert.is(published.pgadmin.internal, 80)
})

ports('more replicas than configured ports continue 10 apart, and every port differs', async () => {
  const built = await build(fresh('more'), { replicas: 5 })
  const external = Object.values(publishedPorts(built)).map((port) => port.external)
  assert.equal(external.slice().sort(), [5050, 5432, 5480, 5490, 5500, 5510, 5520])
  assert.is(new Set(external).size, external.length)
})

ports('configured ports, pgAdmin port and bindAddress are used as given', async () => {
  const built = await build(fresh('custom'), { replicas: 3, leaderPort: 6000, replicaPorts: [6001, 6002], pgadminPort: 6050, bindAddress: '0.0.0.0' })
  const published = publishedPorts(built)
  assert.equal([
    published.leader.external,
    published.replica1.external,
    published.replica2.external,
    published.replica3.external,
    published.pgadmin.external,
  ], [6000, 6001, 6002, 6012, 6050])
  for (const port of Object.values(published)) assert.is(port.ip, '0.0.0.0')
  const { leader } = await valueOf(built.cluster.descriptor)
  assert.is(new URL(leader).host, '127.0.0.1:6000', 'a wildcard bind is reached on loopback')
})

ports.run()

// ---
const invalid = suite('invalid config')

const rejects = (args, pattern) => {
  const name = fresh('bad')
  try {
    new infra.PostgresCluster(name, args)
  } catch (error) {
    assert.instance(error, infra.ClusterConfigError)
    assert.ok(pulumi.RunError.isInstance(error), 'Pulumi prints it without a stack trace')
    assert.match(error.message, pattern)
    return error
  }
  assert.unreachable(`accepted ${JSON.stringify(args)}`)
}

invalid('negative or fractional replicas fail and name the key', () => {
  rejects({ replicas: -1 }, /replicas must be a whole number, 0 or more \(got -1\).*pulumi config set replicas/)
  rejects({ replicas: 1.5 }, /replicas must be a whole number/)
})

invalid('duplicate ports fail and name both keys', () => {
  rejects({ leaderPort: 5480 }, /port 5480 is given twice, to leaderPort and to replicaPorts\[0\]/)
  rejects({ replicaPorts: [5480, 5480] }, /port 5480 is given twice, to replicaPorts\[0\] and to replicaPorts\[1\]/)
  rejects({ pgadminPort: 5432 }, /port 5432 is given twice, to leaderPort and to pgadminPort/)
  rejects({ replicaPorts: [70000] }, /replicaPorts\[0\] must be a port number from 1024 to 65535/)
})

invalid('an unknown synchronous mode fails and lists the modes', () => {
  rejects({ synchronous: 'all' }, /synchronous is "all": use one of off, any, first/)
})

invalid('a bad bind address, CIDR, host key, email or image tag fails clearly', () => {
  rejects({ bindAddress: 'localhost' }, /bindAddress must be an IP address/)
  rejects({ allowedCidrs: ['10.0.0.0'] }, /allowedCidrs\[0\] must be a network in CIDR form/)
  rejects({ hosts: { replica3: { docker: 'ssh://x' } } }, /hosts\.replica3 names no node; the nodes are leader, replica1, replica2/)
  rejects({ pgadminEmail: 'admin' }, /pgadminEmail must be an email address/)
  rejects({ postgresImage: 'postgres:latest' }, /cannot tell the PostgreSQL major version from postgresImage "postgres:latest"/)
})

invalid('an invalid config creates no resource at all', async () => {
  const name = fresh('nothing')
  assert.throws(() => new infra.PostgresCluster(name, { replicas: -3 }))
  const built = await build(fresh('after'))
  assert.ok(built.resources.length > 0)
  assert.not.ok(built.resources.some((record) => record.name.startsWith(name)))
})

invalid.run()

// ---
const outputs = suite('outputs')

outputs('leader and replicas are secret URLs in the descriptor shape', async () => {
  const name = fresh('out')
  const built = await build(name)
  const { cluster } = built
  assert.ok(await pulumi.isSecret(cluster.leaderUrl))
  assert.ok(await pulumi.isSecret(cluster.replicaUrls))
  assert.ok(await pulumi.isSecret(cluster.descriptor))
  const descriptor = await valueOf(cluster.descriptor)
  assert.equal(Object.keys(descriptor).sort(), ['leader', 'replicas'])
  const password = generatedPassword(`${name}-postgres-password`)
  const urls = [descriptor.leader, ...descriptor.replicas].map((url) => new URL(url))
  assert.equal(urls.map((url) => url.port), ['5432', '5480', '5490'])
  for (const url of urls) {
    assert.is(url.protocol, 'postgres:')
    assert.is(url.username, 'postgres')
    assert.is(decodeURIComponent(url.password), password)
    assert.is(url.hostname, '127.0.0.1')
    assert.is(url.pathname, '/pgfollow', 'the same database as the local cluster')
  }
  assert.is(await valueOf(cluster.pgadminUrl), 'http://127.0.0.1:5050')
  assert.equal(cluster.nodeNames, ['leader', 'replica1', 'replica2'])
  assert.equal(cluster.containerNames, { leader: `${name}-leader`, replica1: `${name}-replica1`, replica2: `${name}-replica2` })
})

outputs('a configured password is used, URL-encoded, and stays secret', async () => {
  const built = await build(fresh('given'), { postgresPassword: 'p@ss:w/rd' })
  const { leader } = await valueOf(built.cluster.descriptor)
  assert.ok(leader.includes(encodeURIComponent('p@ss:w/rd')))
  assert.is(decodeURIComponent(new URL(leader).password), 'p@ss:w/rd')
  assert.ok(await pulumi.isSecret(built.cluster.leaderUrl))
})

outputs.run()

// ---
const secrets = suite('secrets')

secrets('no generated password appears in any plain input', async () => {
  const name = fresh('leak')
  const built = await build(name)
  const passwords = ['postgres-password', 'replicator-password', 'pgadmin-password'].map((key) => generatedPassword(`${name}-${key}`))
  const everything = JSON.stringify(built.resources.map((record) => unwrap(record.inputs)))
  for (const password of passwords) assert.ok(everything.includes(password), `the test sees ${password} somewhere`)
  for (const record of built.resources) {
    const plain = plainPart(record.inputs)
    for (const password of passwords) assert.not.ok(plain.includes(password), `${password} in plain inputs of ${record.name}`)
  }
})

secrets('configured passwords stay out of plain inputs too', async () => {
  const built = await build(fresh('given'), { postgresPassword: 'superSecret1', replicatorPassword: 'replSecret2', pgadminPassword: 'adminSecret3' })
  for (const record of built.resources) {
    const plain = plainPart(record.inputs)
    for (const password of ['superSecret1', 'replSecret2', 'adminSecret3']) assert.not.ok(plain.includes(password), `${password} in ${record.name}`)
  }
})

secrets('passwords reach containers as files (*_FILE, pgpass), never as environment values', async () => {
  const built = await build(fresh('files'))
  for (const record of built.ofType('container:Container')) {
    for (const entry of unwrap(record.inputs.envs)) assert.not.match(entry, /PASSWORD=/, `${record.name}: ${entry}`)
  }
  const leaderEnv = envOf(built.named('leader'))
  assert.is(leaderEnv.POSTGRES_PASSWORD_FILE, `${infra.NODE_PATHS.secretsDir}/postgres_password`)
  const leaderUploads = uploadsOf(built.named('leader'))
  for (const file of ['postgres_password', 'replicator_password']) {
    assert.is(leaderUploads[`${infra.NODE_PATHS.secretsIn}/${file}`].permissions, '0600')
  }
  assert.ok(unwrap(built.named('leader').inputs.tmpfs)[infra.NODE_PATHS.secretsDir], 'the copies for postgres live on a tmpfs')
  const pgadminEnv = envOf(built.named('pgadmin'))
  assert.is(pgadminEnv.PGADMIN_DEFAULT_PASSWORD_FILE, infra.PGADMIN_PATHS.password)
  assert.is(pgadminEnv.PGPASS_FILE, infra.PGADMIN_PATHS.pgpass)
})

secrets.run()

// ---
const pgadmin = suite('pgAdmin')

/** The upload pgAdmin's wrapper copies to `readAt`. */
const pgadminUpload = (built, readAt) => uploadsOf(built.named('pgadmin'))[infra.pgadminUploadPath(readAt)]

pgadmin('servers.json lists every node in the group pgAdmin keeps, with integer ports, a passfile and sslmode where pgAdmin reads it', async () => {
  const built = await build(fresh('pga'), { replicas: 3 })
  const servers = Object.values(JSON.parse(pgadminUpload(built, infra.PGADMIN_PATHS.serversJson).content).Servers)
  assert.equal(servers.map((server) => server.Name), ['leader', 'replica1', 'replica2', 'replica3'])
  assert.equal(servers.map((server) => server.Host), ['pg-leader', 'pg-replica1', 'pg-replica2', 'pg-replica3'])
  for (const server of servers) {
    // load-servers --replace keeps the first group, "Servers": ours, so no empty group shows above it.
    assert.is(server.Group, 'Servers')
    // pgAdmin ignores the top-level SSLMode when ConnectionParameters is present.
    assert.is(server.SSLMode, undefined)
    assert.is(server.ConnectionParameters.sslmode, 'prefer')
    assert.is(server.Port, 5432)
    assert.ok(Number.isInteger(server.Port))
    assert.is(server.Username, 'postgres')
    assert.is(server.MaintenanceDB, 'pgfollow')
    assert.is(server.ConnectionParameters.passfile, '/.pgpass')
  }
})

pgadmin("the pgpass file has one line per node, and pgAdmin's files are uploaded root-only for the wrapper to hand over", async () => {
  const name = fresh('pgpass')
  const built = await build(name, { replicas: 2 })
  const password = generatedPassword(`${name}-postgres-password`)
  assert.equal(pgadminUpload(built, infra.PGADMIN_PATHS.pgpass).content.trim().split('\n'), [
    `pg-leader:5432:*:postgres:${password}`,
    `pg-replica1:5432:*:postgres:${password}`,
    `pg-replica2:5432:*:postgres:${password}`,
  ])
  for (const readAt of [infra.PGADMIN_PATHS.pgpass, infra.PGADMIN_PATHS.password, infra.PGADMIN_PATHS.serversJson]) {
    const upload = pgadminUpload(built, readAt)
    assert.is(upload.permissions, '0600', readAt)
    // The provider ignores owner (kreuzwerker#996): nothing may rely on it.
    assert.is(upload.owner, undefined, readAt)
  }
  assert.is(pgadminUpload(built, infra.PGADMIN_PATHS.password).content, generatedPassword(`${name}-pgadmin-password`))
  const inputs = built.named('pgadmin').inputs
  assert.is(inputs.user, 'root', 'the wrapper starts as root, then runs pgAdmin as 5050')
  assert.equal(unwrap(inputs.entrypoints), [infra.PGADMIN_PATHS.entrypoint])
  assert.equal(unwrap(inputs.command), ['/entrypoint.sh'])
  assert.ok(unwrap(inputs.tmpfs)[infra.PGADMIN_PATHS.dir], "pgAdmin's copies live on a tmpfs")
})

pgadmin('pgAdmin reloads the list at every start and listens on the configured port', async () => {
  const built = await build(fresh('decl'), { pgadminPort: 5055, pgadminEmail: 'dba@example.org' })
  const env = envOf(built.named('pgadmin'))
  assert.is(env.PGADMIN_REPLACE_SERVERS_ON_STARTUP, 'True')
  assert.is(env.PGADMIN_SERVER_JSON_FILE, infra.PGADMIN_PATHS.serversJson)
  assert.is(env.PGADMIN_DEFAULT_EMAIL, 'dba@example.org')
  assert.is(unwrap(built.named('pgadmin').inputs.ports)[0].external, 5055)
  assert.is(await valueOf(built.cluster.pgadminUrl), 'http://127.0.0.1:5055')
})

pgadmin('pgpass escapes colons and backslashes in a configured password', () => {
  const text = infra.pgpassFile([{ name: 'leader', host: 'pg-leader', port: 5432, comment: '' }], 'postgres', 'a:b\\c')
  assert.is(text, 'pg-leader:5432:*:postgres:a\\:b\\\\c\n')
})

pgadmin.run()

// ---
const settings = suite('replication settings')

settings("every node runs the shared module's replication settings as server flags", async () => {
  const built = await build(fresh('flags'), { replicas: 2 })
  const expected = infra.serverSettings({ listen: '*', replicaNames: ['replica1', 'replica2'], synchronous: 'off', major: 18 })
  for (const node of ['leader', 'replica1', 'replica2']) {
    const command = unwrap(built.named(node).inputs.command)
    assert.equal(command.slice(0, 2), ['docker-entrypoint.sh', 'postgres'])
    const { hba_file: hbaFile, ...flags } = flagsToSettings(command)
    assert.equal(flags, expected, node)
    assert.is(hbaFile, infra.NODE_PATHS.hbaFile)
  }
  assert.equal(built.cluster.settings, expected)
})

for (const mode of ['any', 'first']) {
  settings(`synchronous ${mode} names the replicas' application_names in synchronous_standby_names`, async () => {
    const built = await build(fresh(`sync${mode}`), { replicas: 2, synchronous: mode })
    const flags = flagsToSettings(unwrap(built.named('leader').inputs.command))
    assert.is(flags.synchronous_standby_names, `${mode.toUpperCase()} 1 ("replica1", "replica2")`)
    assert.is(flags.synchronous_commit, 'on')
  })
}

settings("slot hygiene bounds a removed replica's slot, and nodes stop gracefully", async () => {
  const built = await build(fresh('hygiene'))
  const flags = flagsToSettings(unwrap(built.named('leader').inputs.command))
  assert.is(flags.max_slot_wal_keep_size, '1GB')
  assert.is(flags.idle_replication_slot_timeout, '1d')
  for (const node of ['leader', 'replica1', 'replica2']) {
    const inputs = unwrap(built.named(node).inputs)
    assert.is(inputs.stopSignal, 'SIGINT', 'fast shutdown')
    assert.ok(inputs.stopTimeout >= 30)
    assert.ok(inputs.destroyGraceSeconds >= 30)
  }
})

settings('a PostgreSQL 17 image leaves out 18-only settings and keeps PGDATA under the volume', async () => {
  const built = await build(fresh('pg17'), { postgresImage: 'postgres:17.6-alpine' })
  const flags = flagsToSettings(unwrap(built.named('leader').inputs.command))
  assert.is(flags.idle_replication_slot_timeout, undefined)
  assert.is(envOf(built.named('replica1')).PGDATA, '/var/lib/postgresql/17/docker')
  const [volume] = unwrap(built.named('replica1').inputs.volumes)
  assert.is(volume.containerPath, '/var/lib/postgresql')
})

settings('PGDATA of PostgreSQL 18 lives in the volume mounted at /var/lib/postgresql', async () => {
  const built = await build(fresh('pg18'))
  for (const node of ['leader', 'replica1']) {
    assert.is(envOf(built.named(node)).PGDATA, '/var/lib/postgresql/18/docker')
    const [volume] = unwrap(built.named(node).inputs.volumes)
    assert.equal(volume, { volumeName: `${built.cluster.containerNames[node]}-data`, containerPath: '/var/lib/postgresql' })
  }
})

settings('pg_hba admits replication from the cluster network with scram-sha-256 and trusts nobody', async () => {
  const built = await build(fresh('hba'), { allowedCidrs: ['10.9.0.0/16'] })
  const hba = uploadsOf(built.named('leader'))[infra.NODE_PATHS.hbaFile].content
  assert.ok(hba.includes(infra.hbaLines('samenet').split('\n')[1]), 'the shared replication line, for the cluster network')
  assert.match(hba, /^host\s+replication\s+replicator\s+samenet\s+scram-sha-256$/m)
  assert.match(hba, /^host\s+replication\s+replicator\s+10\.9\.0\.0\/16\s+scram-sha-256$/m)
  assert.match(hba, /^host\s+all\s+replicator\s+samenet\s+reject$/m)
  assert.not.match(hba, /trust/)
  assert.is(uploadsOf(built.named('replica1'))[infra.NODE_PATHS.hbaFile].content, hba, 'a promoted replica keeps the same rules')
})

settings("the leader's init script runs the shared SQL files, uploaded unchanged", async () => {
  const built = await build(fresh('sql'))
  const uploads = uploadsOf(built.named('leader'))
  assert.is(uploads[`${infra.NODE_PATHS.sqlDir}/replicator.sql`].content, infra.sqlText('replication/replicator.sql'))
  assert.is(uploads[`${infra.NODE_PATHS.sqlDir}/slot.sql`].content, infra.sqlText('replication/slot.sql'))
  assert.is(uploads[`${infra.NODE_PATHS.sqlDir}/database.sql`].content, infra.sqlText('replication/database.sql'))
  // The image's own CREATE DATABASE would wait for standbys on its init server (synchronous any|first).
  assert.is(envOf(built.named('leader')).POSTGRES_DB, 'postgres')
  assert.is(envOf(built.named('leader')).PGFOLLOW_DATABASE, 'pgfollow')
  assert.is(uploads[infra.NODE_PATHS.initScript].content, infra.containerScript('leader-init.sh'))
  assert.ok(infra.NODE_PATHS.initScript.startsWith('/docker-entrypoint-initdb.d/'))
  assert.is(uploads[infra.NODE_PATHS.initScript].permissions, '0755', 'executed, not sourced into the image entrypoint')
  const env = envOf(built.named('leader'))
  assert.is(env.PGFOLLOW_SQL_DIR, infra.NODE_PATHS.sqlDir)
  assert.is(env.PGFOLLOW_REPLICATOR, 'replicator')
})

settings.run()

// ---
const hosts = suite('nodes on other Docker hosts')

hosts('a replica on another Docker host gets its own provider, network and image, and reaches the leader at its address', async () => {
  const name = fresh('multi')
  const built = await build(name, {
    bindAddress: '0.0.0.0',
    allowedCidrs: ['10.0.0.0/24'],
    hosts: { leader: { address: '10.0.0.11' }, replica2: { docker: 'ssh://me@box2', address: '10.0.0.12' } },
  })
  const [provider] = built.resources.filter((record) => record.type === 'pulumi:providers:docker')
  assert.is(provider.inputs.host, 'ssh://me@box2')
  assert.is(built.ofType('network:Network').length, 2)
  assert.is(built.ofType('remoteImage:RemoteImage').filter((record) => record.inputs.name === 'postgres:18').length, 2)
  assert.ok(built.named('replica2').provider.includes(provider.name), 'replica2 is created through that provider')
  const env = envOf(built.named('replica2'))
  assert.is(env.PGFOLLOW_LEADER_HOST, '10.0.0.11')
  assert.is(env.PGFOLLOW_LEADER_PORT, '5432')
  assert.is(envOf(built.named('replica1')).PGFOLLOW_LEADER_HOST, 'pg-leader')
  const { replicas: urls } = await valueOf(built.cluster.descriptor)
  assert.is(new URL(urls[1]).host, '10.0.0.12:5490')
  const servers = Object.values(JSON.parse(pgadminUpload(built, infra.PGADMIN_PATHS.serversJson).content).Servers)
  assert.equal(servers.map((server) => `${server.Host}:${server.Port}`), ['pg-leader:5432', 'pg-replica1:5432', '10.0.0.12:5490'])
})

hosts('another Docker host without the addresses and networks it needs fails clearly', () => {
  const remote = { replica1: { docker: 'ssh://me@box2', address: '10.0.0.12' } }
  rejects({ hosts: { replica1: { docker: 'ssh://me@box2' } } }, /hosts\.replica1\.docker is set, so hosts\.replica1\.address must say/)
  rejects({ hosts: remote, allowedCidrs: ['10.0.0.0/24'] }, /set hosts\.leader\.address/)
  rejects({ hosts: { ...remote, leader: { address: '10.0.0.11' } }, allowedCidrs: ['10.0.0.0/24'] }, /the leader's port binds to 127\.0\.0\.1/)
  rejects(
    { hosts: { ...remote, leader: { address: '10.0.0.11' } }, bindAddress: '0.0.0.0' },
    /add the address range they connect from to allowedCidrs/,
  )
})

hosts.run()

// ---
const ha = suite('ha: patroni')

ha('etcd, one Patroni node per member from an image built on the postgres image, and pgAdmin', async () => {
  const name = fresh('ha')
  const built = await build(name, { ha: 'patroni' }, infra.PatroniCluster)
  assert.equal(containerNames(built).sort(), [`${name}-etcd`, `${name}-leader`, `${name}-pgadmin`, `${name}-replica1`, `${name}-replica2`])
  const [image] = built.ofType('image:Image')
  assert.is(image.inputs.build.args.BASE_IMAGE, 'postgres:18')
  assert.match(image.inputs.build.dockerfile, /infra\/container\/patroni\.Dockerfile$/)
  assert.ok(readFileSync(image.inputs.build.dockerfile, 'utf8').includes('ARG BASE_IMAGE'), 'the Dockerfile takes the configured image')
  for (const node of ['leader', 'replica1', 'replica2']) assert.is(built.named(node).inputs.image, image.inputs.imageName)
  assert.ok(built.dependsOn('replica1').some((urn) => urn.endsWith(`::${name}-leader`)), 'replicas start after the node that bootstraps')
  assert.ok(built.dependsOn('leader').some((urn) => urn.endsWith(`::${name}-etcd`)), 'nodes start after etcd')
  const published = built.named('replica2').inputs.ports.map((port) => port.external).sort()
  assert.equal(published, [5490, 8010])
})

ha('every node gets the patroni.yml of the shared function the local up --ha runs, passwords only as secrets', async () => {
  const name = fresh('hacfg')
  const built = await build(name, { ha: 'patroni', synchronous: 'any' }, infra.PatroniCluster)
  const plan = built.cluster.plan
  for (const node of plan.nodes) {
    const record = built.named(node.name)
    const upload = uploadsOf(record)['/etc/patroni/patroni.yml']
    assert.is(upload.permissions, '0600')
    assert.not.ok(plainPart(record.inputs.uploads).includes('generated'), 'no password in plain text')
    const config = JSON.parse(upload.content)
    const expected = infra.patroniConfig(
      infra.patroniNodeOptions(plan, node, {
        etcdHost: `${plan.namePrefix}-etcd`,
        superuserPassword: generatedPassword(`${name}-postgres-password`),
        replicatorPassword: generatedPassword(`${name}-replicator-password`),
      }),
    )
    assert.equal(config, expected)
    // What the local HA mode bootstraps, for the same server version: the same DCS settings.
    const local = infra.patroniConfig({ ...infra.patroniNodeOptions(plan, node, { etcdHost: 'x', superuserPassword: 'a', replicatorPassword: 'b' }) })
    assert.equal(config.bootstrap.dcs, local.bootstrap.dcs)
    assert.is(config.bootstrap.dcs.synchronous_mode, true)
    assert.is(config.bootstrap.dcs.postgresql.use_pg_rewind, true)
    assert.is(config.tags.pgfollow_address, `127.0.0.1:${node.port}`, 'clients reach it at its published port')
    assert.ok(config.postgresql.pg_hba.some((line) => /samenet/.test(line)))
  }
})

ha('the descriptor adds the Patroni endpoints, and stays secret', async () => {
  const name = fresh('hadesc')
  const built = await build(name, { ha: 'patroni', pgadmin: false }, infra.PatroniCluster)
  const descriptor = await valueOf(built.cluster.descriptor)
  assert.equal(descriptor.patroni, ['http://127.0.0.1:8008', 'http://127.0.0.1:8009', 'http://127.0.0.1:8010'])
  assert.match(descriptor.leader, /^postgres:\/\/postgres:[^@]+@127\.0\.0\.1:5432\/pgfollow$/)
  assert.ok(await pulumi.isSecret(built.cluster.descriptor))
})

for (
  const [args, error] of [
    [{ ha: 'keepalived' }, /ha is "keepalived"/],
    [{
      hosts: { leader: { address: '10.0.0.1' }, replica1: { docker: 'ssh://b', address: '10.0.0.2' } },
      allowedCidrs: ['10.0.0.0/24'],
      bindAddress: '0.0.0.0',
    }, /one Docker engine/],
    [{ patroniPort: 5480 }, /patroniPort: port 5480/],
  ]
) {
  ha(`rejects ${JSON.stringify(args)}`, () => {
    assert.throws(() => new infra.PatroniCluster(fresh('habad'), { ha: 'patroni', ...args }), error)
  })
}

ha.run()

// ---
const config = suite('config')

const requireFromPulumi = createRequire(createRequire(import.meta.url).resolve('@pulumi/pulumi/package.json'))
const yaml = requireFromPulumi('js-yaml')
const project = yaml.load(readFileSync(new URL('../infra/Pulumi.yaml', import.meta.url), 'utf8'))

config('Pulumi.yaml declares every config key with a description and a default equal to the program default', () => {
  assert.is(project.runtime.name, 'nodejs')
  assert.is(project.runtime.options.typescript, true)
  const declared = project.config
  const keys = [...Object.keys(infra.DEFAULTS), ...infra.SECRET_KEYS, 'namePrefix']
  assert.equal(Object.keys(declared).sort(), keys.sort())
  for (const [key, entry] of Object.entries(declared)) {
    assert.type(entry.description, 'string', `${key} has a description`)
    assert.ok(entry.description.length > 10, key)
    assert.ok('default' in entry, `${key} has a default`)
    // A plain default on a `secret: true` key fails Pulumi's validation.
    assert.not.ok(entry.secret, `${key}: no secret flag next to a default`)
  }
  for (const [key, value] of Object.entries(infra.DEFAULTS)) assert.equal(declared[key].default, value, key)
  for (const key of infra.SECRET_KEYS) assert.is(declared[key].default, '', `${key} defaults to "generate"`)
})

config('readClusterArgs reads each key, wraps passwords as secrets and leaves empty ones to be generated', async () => {
  setConfig(
    {
      replicas: '3',
      replicaPorts: [6001, 6002, 6003],
      synchronous: 'first',
      pgadmin: 'false',
      bindAddress: '0.0.0.0',
      postgresPassword: 'fromConfig',
      replicatorPassword: '',
    },
    ['postgresPassword'],
  )
  try {
    const args = infra.readClusterArgs(new pulumi.Config(), 'staging')
    assert.is(args.replicas, 3)
    assert.equal(args.replicaPorts, [6001, 6002, 6003])
    assert.is(args.synchronous, 'first')
    assert.is(args.pgadmin, false)
    assert.is(args.bindAddress, '0.0.0.0')
    assert.is(args.namePrefix, 'pgfollow-staging')
    assert.ok(await pulumi.isSecret(args.postgresPassword))
    assert.is(await valueOf(args.postgresPassword), 'fromConfig')
    assert.is(args.replicatorPassword, undefined, 'empty means generated')
    assert.is(args.pgadminPassword, undefined)
    assert.is(args.leaderPort, undefined, 'unset keys take the component default')
  } finally {
    setConfig({})
  }
})

config('pgadmin takes on/off as well as true/false', () => {
  for (const [value, expected] of [['off', false], ['on', true], ['false', false], ['true', true]]) {
    setConfig({ pgadmin: value })
    try {
      assert.is(infra.readClusterArgs(new pulumi.Config(), 'dev').pgadmin, expected, value)
    } finally {
      setConfig({})
    }
  }
  setConfig({ pgadmin: 'maybe' })
  try {
    assert.throws(() => infra.readClusterArgs(new pulumi.Config(), 'dev'), /pgadmin is "maybe": use on or off/)
  } finally {
    setConfig({})
  }
})

config('a config value of the wrong shape fails with a message naming the key', () => {
  setConfig({ replicaPorts: '5480' })
  try {
    assert.throws(() => infra.readClusterArgs(new pulumi.Config(), 'dev'), /replicaPorts must be a list/)
  } finally {
    setConfig({})
  }
})

config('index.ts loads the way pulumi up loads it: ts-node type-checks it and it exports the descriptor', () => {
  const started = Date.now()
  const run = spawnSync(process.execPath, [fileURLToPath(new URL('./fixtures/infra-pulumi-run.mjs', import.meta.url)), infraDir], {
    encoding: 'utf8',
    timeout: 180_000,
    env: { ...process.env, PULUMI_CONFIG: JSON.stringify({ 'pgfollow:replicas': '1', 'pgfollow:pgadmin': 'false' }) },
  })
  assert.is(run.status, 0, `the Pulumi language runtime failed:\n${run.stderr}\n${run.stdout}`)
  const result = JSON.parse(run.stdout.trim().split('\n').pop())
  assert.equal(result.containers.sort(), ['pgfollow-leader', 'pgfollow-replica1'])
  const { leader, replicas: replicaUrls, nodes, containers, pgadminUrl } = result.outputs
  assert.ok(leader.secret && replicaUrls.secret, 'leader and replicas are secret stack outputs')
  assert.match(leader.value, /^postgres:\/\/postgres:[^@]+@127\.0\.0\.1:5432\/pgfollow$/)
  assert.is(replicaUrls.value.length, 1)
  assert.equal(nodes.value, ['leader', 'replica1'])
  assert.equal(containers.value, { leader: 'pgfollow-test-leader', replica1: 'pgfollow-test-replica1' })
  assert.is(pgadminUrl, undefined)
  assert.ok(Date.now() - started < 180_000)
})

config.run()

// ---
const scripts = suite('container scripts')

const containerDir = fileURLToPath(new URL('../infra/container/', import.meta.url))
const scriptPaths = readdirSync(containerDir).filter((file) => file.endsWith('.sh')).map((file) => join(containerDir, file))

scripts('the uploaded shell scripts pass sh -n', () => {
  for (const path of scriptPaths) execFileSync('sh', ['-n', path])
})

scripts('the uploaded shell scripts pass shellcheck', () => {
  const found = spawnSync('shellcheck', ['--version'], { encoding: 'utf8' })
  if (found.error && process.env.CI !== 'true') {
    // A fresh machine without the Debian package still passes `npm test`; CI (.ci/run) installs it and fails without it.
    console.log('  SKIPPED shellcheck of infra/container/*.sh: apt-get install shellcheck, then node tests/run.mjs infra.test')
    return
  }
  assert.ok(!found.error, 'shellcheck is missing: apt-get install shellcheck (.ci/run installs it)')
  const run = spawnSync('shellcheck', ['--shell=sh', '--severity=style', ...scriptPaths], { encoding: 'utf8' })
  assert.is(run.status, 0, run.stdout + run.stderr)
})

scripts.run()
