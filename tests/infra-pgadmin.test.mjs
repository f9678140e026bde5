// The pgAdmin container as the program configures it, started the way Docker
// would start it, without Docker: the uploads are written root-owned with
// their mode and without their owner (the Docker provider's tar headers
// carry name, mode and size only), the container's user, entrypoint and
// command are run as given, and the image's /entrypoint.sh is a stand-in
// that reads what pgAdmin's entrypoint reads, as whoever it runs as.
// Paths inside the container are rooted in a temp dir.
// Run: node tests/infra-pgadmin.test.mjs   (as root, like the container)
import { spawnSync } from 'node:child_process'
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import process from 'node:process'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { build, envOf, generatedPassword, infra, unwrap, uploadsOf, valueOf } from './fixtures/infra-mocks.mjs'

const PGADMIN_UID = 5050
/** How the image runs without our settings: `USER 5050` and `ENTRYPOINT ["/entrypoint.sh"]` in pgAdmin's Dockerfile. */
const IMAGE = { user: String(PGADMIN_UID), entrypoint: ['/entrypoint.sh'] }
const asRoot = process.getuid() === 0

// What pgAdmin's entrypoint does with the three files before it starts:
// file_env reads PGADMIN_DEFAULT_PASSWORD_FILE (and exits 1 when it cannot),
// setup.py load-servers reads servers.json, and the pgpass file is copied
// into the user's storage directory.
const STAND_IN = `#!/bin/sh
set -eu
out=$PGFOLLOW_TEST_OUT
id -u > "$out/uid"
if [ ! -r "$PGADMIN_DEFAULT_PASSWORD_FILE" ]; then
  echo "error: PGADMIN_DEFAULT_PASSWORD_FILE is set to \\"$PGADMIN_DEFAULT_PASSWORD_FILE\\" but the file does not exist or is not readable" >&2
  exit 1
fi
cat "$PGADMIN_DEFAULT_PASSWORD_FILE" > "$out/password"
cat "$PGADMIN_SERVER_JSON_FILE" > "$out/servers.json"
cp "$PGPASS_FILE" "$out/pgpass"
echo started
`

const ctx = {}
const pgadmin = suite('pgAdmin container, started as Docker would')

pgadmin.before(async () => {
  ctx.name = 'pgasim'
  ctx.built = await build(ctx.name, { replicas: 2 })
  await valueOf(ctx.built.cluster.pgadminUrl)
  ctx.root = mkdtempSync(join(tmpdir(), 'pgfollow-pgadmin-'))
  chmodSync(ctx.root, 0o755)
})

pgadmin.after(() => {
  if (ctx.root) rmSync(ctx.root, { recursive: true, force: true })
})

pgadmin('it starts as root only to hand over; the image entrypoint runs as 5050 and reads its password, servers.json and pgpass', () => {
  if (!asRoot) return console.log('  (skipped: needs root, as the container starts)')
  const result = startContainer(ctx.built.named('pgadmin'))
  assert.is(result.status, 0, result.output)
  assert.match(result.output, /started/)
  assert.is(read('uid').trim(), String(PGADMIN_UID), 'pgAdmin does not run as root')
  assert.is(read('password'), generatedPassword(`${ctx.name}-pgadmin-password`))
  assert.equal(Object.values(JSON.parse(read('servers.json')).Servers).map((server) => server.Name), ['leader', 'replica1', 'replica2'])
  assert.match(read('pgpass'), new RegExp(`^pg-leader:5432:\\*:postgres:${generatedPassword(`${ctx.name}-postgres-password`)}$`, 'm'))
  // pgAdmin's copies: its own, 0600, in a directory only it can enter.
  const dir = inContainer(infra.PGADMIN_PATHS.dir)
  assert.is(statSync(dir).uid, PGADMIN_UID)
  assert.is(statSync(dir).mode & 0o777, 0o700)
  for (const path of [infra.PGADMIN_PATHS.password, infra.PGADMIN_PATHS.pgpass, infra.PGADMIN_PATHS.serversJson]) {
    const stat = statSync(inContainer(path))
    assert.is(stat.uid, PGADMIN_UID, path)
    assert.is(stat.mode & 0o777, 0o600, path)
  }
})

pgadmin('without su-exec or setpriv (pgAdmin images before 9.15) it steps down with Python', () => {
  if (!asRoot) return
  const python = spawnSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).stdout?.trim()
  if (!python) return console.log('  (skipped: no python3 here)')
  // A PATH with the tools the scripts use, and no su-exec or setpriv.
  const bin = join(ctx.root, 'bin')
  mkdirSync(bin, { recursive: true })
  for (const tool of ['sh', 'id', 'mkdir', 'chown', 'chmod', 'cp', 'cat', 'basename', 'cut', 'getent']) {
    const found = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim()
    if (found) symlinkSync(found, join(bin, tool))
  }
  symlinkSync(python, join(bin, 'python3'))
  rmSync(join(ctx.root, 'out'), { recursive: true, force: true })
  const result = startContainer(ctx.built.named('pgadmin'), { path: bin })
  assert.is(result.status, 0, result.output)
  assert.is(read('uid').trim(), String(PGADMIN_UID))
  assert.is(read('password'), generatedPassword(`${ctx.name}-pgadmin-password`))
})

pgadmin('no password is an environment value of the pgAdmin container', () => {
  const env = envOf(ctx.built.named('pgadmin'))
  for (const value of Object.values(env)) {
    assert.not.ok(value.includes(generatedPassword(`${ctx.name}-pgadmin-password`)))
    assert.not.ok(value.includes(generatedPassword(`${ctx.name}-postgres-password`)))
  }
})

pgadmin.run()

// --- helpers

/** Lays the container's files out under ctx.root and runs its entrypoint and command as its user. */
function startContainer(record, { path = process.env.PATH } = {}) {
  const inputs = record.inputs
  const out = join(ctx.root, 'out')
  mkdirSync(out, { recursive: true })
  chownSync(out, PGADMIN_UID, 0)
  // The image: its entrypoint, replaced by the stand-in.
  writeInContainer(IMAGE.entrypoint[0], STAND_IN, 0o755)
  // Docker creates a tmpfs mount point root-owned, with the mode it was given.
  for (const [dir, options] of Object.entries(unwrap(inputs.tmpfs) ?? {})) {
    const mode = /mode=([0-7]+)/.exec(options)
    mkdirSync(inContainer(dir), { recursive: true })
    chmodSync(inContainer(dir), mode ? parseInt(mode[1], 8) : 0o1777)
  }
  // The provider's uploads: name, mode and content; root-owned whatever `owner` says.
  for (const [file, upload] of Object.entries(uploadsOf(record))) {
    writeInContainer(file, upload.content, parseInt(upload.permissions ?? '0644', 8))
  }
  const argv = [...(unwrap(inputs.entrypoints) ?? IMAGE.entrypoint), ...(unwrap(inputs.command) ?? [])].map(rooted)
  const user = unwrap(inputs.user) ?? IMAGE.user
  const env = Object.fromEntries(Object.entries(envOf(record)).map(([key, value]) => [key, rooted(value)]))
  const result = spawnSync(argv[0], argv.slice(1), {
    encoding: 'utf8',
    timeout: 20_000,
    cwd: ctx.root,
    uid: user === 'root' || user === '0' ? 0 : Number(user),
    gid: 0,
    env: { PATH: path, ...env, PGFOLLOW_TEST_OUT: out },
  })
  return { status: result.status, output: `${result.stdout}${result.stderr}${result.error ?? ''}` }
}

/** A value that is a path inside the container, rooted in the temp dir. */
function rooted(value) {
  return typeof value === 'string' && value.startsWith('/') ? inContainer(value) : value
}

function inContainer(path) {
  return join(ctx.root, 'fs', path)
}

function writeInContainer(path, content, mode) {
  const target = inContainer(path)
  mkdirSync(dirname(target), { recursive: true, mode: 0o755 })
  writeFileSync(target, content, { mode })
  chmodSync(target, mode)
}

function read(file) {
  return readFileSync(join(ctx.root, 'out', file), 'utf8')
}
