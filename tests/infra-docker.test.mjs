// lib/cluster/docker.ts, the `--docker` side of scripts/cluster.mjs. There is
// no Pulumi CLI or Docker engine here, so the tests put stand-ins on PATH:
// none at all (the message must say what to install), a docker whose engine
// is down, and a fake pulumi that records its calls and prints stack outputs.
// Run: node tests/infra-docker.test.mjs
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import process from 'node:process'
import { tsImport } from 'tsx/esm/api'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'

const { dockerUp, dockerDown, checkDockerPrerequisites, INFRA_DIR } = await tsImport('../lib/cluster/docker.ts', import.meta.url)

const OUTPUTS = {
  leader: 'postgres://postgres:s3cret@127.0.0.1:5432/postgres',
  replicas: ['postgres://postgres:s3cret@127.0.0.1:5480/postgres'],
  pgadminUrl: 'http://127.0.0.1:5050',
  nodes: ['leader', 'replica1'],
  containers: { leader: 'pgfollow-dev-leader', replica1: 'pgfollow-dev-replica1' },
}

let root
const fresh = () => mkdtempSync(join(root, 'case-'))

/** A directory of stand-in commands: name -> shell script body. */
function binDir(commands) {
  const dir = join(fresh(), 'bin')
  mkdirSync(dir)
  for (const [name, body] of Object.entries(commands)) {
    writeFileSync(join(dir, name), `#!/bin/sh\n${body}\n`)
    chmodSync(join(dir, name), 0o755)
  }
  return dir
}

const dockerRunning = 'echo 27.0.0'
const dockerStopped = 'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2; exit 1'
/** Records each call (cwd, backend, args) and answers `stack output` with OUTPUTS. */
const fakePulumi = (log) => `
printf '%s|%s|%s\\n' "$PWD" "$PULUMI_BACKEND_URL" "$*" >> '${log}'
case "$1" in
  version) echo v3.200.0 ;;
  up) echo " +  docker:index:Container pgfollow-leader created"; echo "Resources: 9 created" ;;
  stack) if [ "$2" = output ]; then echo '${JSON.stringify(OUTPUTS)}'; fi ;;
esac
`

/** uvu 0.5 has no assert.rejects. */
async function rejects(run, pattern) {
  try {
    await run()
  } catch (error) {
    assert.match(error.message, pattern)
    return error
  }
  assert.unreachable(`expected a rejection matching ${pattern}`)
}

const docker = suite('docker cluster driver')

docker.before(() => {
  root = mkdtempSync(join(tmpdir(), 'pgfollow-docker-'))
})

docker.after(() => {
  rmSync(root, { recursive: true, force: true })
})

docker('without the Pulumi CLI or Docker it stops and says what to install', async () => {
  const dir = join(fresh(), 'cluster')
  const env = { ...process.env, PATH: binDir({}) }
  try {
    await dockerUp({ dir, env })
    assert.unreachable('dockerUp went on without pulumi and docker')
  } catch (error) {
    assert.is(error.code, 'PGFOLLOW_CLUSTER')
    assert.match(error.message, /needs two things this machine lacks/)
    assert.match(error.message, /the Pulumi CLI: `pulumi` is not on PATH\. Install it from https:\/\/www\.pulumi\.com\//)
    assert.match(error.message, /a running Docker engine: `docker` is not on PATH\. Install Docker Engine/)
    assert.match(error.message, /Without --docker/)
  }
  assert.not.ok(existsSync(dir), 'nothing was written')
  await rejects(() => dockerDown({ dir, env }), /Pulumi CLI/)
})

docker('with the CLI but a stopped engine, the message names the engine and quotes docker', async () => {
  const env = { ...process.env, PATH: binDir({ pulumi: 'echo v3.200.0', docker: dockerStopped }) }
  try {
    await checkDockerPrerequisites(env)
    assert.unreachable()
  } catch (error) {
    assert.match(error.message, /needs one thing/)
    assert.match(error.message, /`docker info` failed \(Cannot connect to the Docker daemon/)
    assert.not.match(error.message, /Pulumi CLI/)
  }
})

docker('dockerUp drives infra/ with the pulumi CLI and writes the stack outputs as cluster.json, mode 0600', async () => {
  const base = fresh()
  const log = join(base, 'calls.log')
  const dir = join(base, 'cluster')
  const env = { ...process.env, PATH: `${binDir({ pulumi: fakePulumi(log), docker: dockerRunning })}:/usr/bin:/bin` }
  delete env.PULUMI_BACKEND_URL
  delete env.PULUMI_CONFIG_PASSPHRASE
  delete env.PULUMI_CONFIG_PASSPHRASE_FILE
  const progress = []
  const result = await dockerUp({ dir, env, ports: [6432, 6480, 6490], synchronous: 'any', onProgress: (line) => progress.push(line) })

  const calls = readFileSync(log, 'utf8').trim().split('\n').map((line) => line.split('|'))
  for (const [cwd] of calls) assert.is(cwd.replace(/\/$/, ''), INFRA_DIR.replace(/\/$/, ''), 'pulumi runs in infra/')
  const args = calls.map(([, , line]) => line).filter((line) => line !== 'version')
  assert.equal(args, [
    'stack select --create --stack dev --non-interactive',
    'config set-all --stack dev --plaintext replicas=2 --plaintext leaderPort=6432 --plaintext replicaPorts=[6480,6490] --plaintext synchronous=any',
    'up --yes --skip-preview --non-interactive --stack dev',
    'stack output --json --show-secrets --stack dev',
  ])
  const driving = calls.filter(([, , line]) => line !== 'version')
  assert.ok(driving.every(([, backend]) => backend === `file://${join(dir, 'pulumi')}`), 'a local backend in <dir>/pulumi')
  assert.is(statSync(join(dir, 'pulumi', 'passphrase')).mode & 0o777, 0o600)

  const file = join(dir, 'cluster.json')
  assert.is(result.file, file)
  assert.is(statSync(file).mode & 0o777, 0o600)
  assert.equal(JSON.parse(readFileSync(file, 'utf8')), OUTPUTS)
  assert.equal(result.descriptor, { leader: OUTPUTS.leader, replicas: OUTPUTS.replicas })
  assert.is(result.pgadminUrl, 'http://127.0.0.1:5050')
  assert.equal(result.nodes, ['leader', 'replica1'])
  assert.ok(progress.some((line) => line.includes('pgfollow-leader created')), 'pulumi up output is streamed as progress')
  assert.ok(progress.every((line) => !line.includes('s3cret')), 'progress never shows the outputs')
})

docker('dockerDown destroys the same stack and removes the descriptor', async () => {
  const base = fresh()
  const log = join(base, 'calls.log')
  const dir = join(base, 'cluster')
  const env = { ...process.env, PATH: `${binDir({ pulumi: fakePulumi(log), docker: dockerRunning })}:/usr/bin:/bin` }
  await dockerUp({ dir, env, stack: 'ci' })
  await dockerDown({ dir, env })
  const last = readFileSync(log, 'utf8').trim().split('\n').pop().split('|')[2]
  assert.is(last, 'destroy --yes --skip-preview --non-interactive --stack ci')
  assert.not.ok(existsSync(join(dir, 'cluster.json')))
  assert.not.ok(existsSync(join(dir, 'docker.json')))
})

docker('bad options fail before pulumi runs', async () => {
  const base = fresh()
  const log = join(base, 'calls.log')
  const env = { ...process.env, PATH: `${binDir({ pulumi: fakePulumi(log), docker: dockerRunning })}:/usr/bin:/bin` }
  await rejects(() => dockerUp({ dir: join(base, 'a'), env, synchronous: 'all' }), /--synchronous is "all": use one of off, any, first/)
  await rejects(() => dockerUp({ dir: join(base, 'b'), env, ports: [5432, 5432] }), /--ports lists a port twice/)
  await rejects(() => dockerUp({ dir: join(base, 'c'), env, ports: [5432, 5480, 5490], replicas: 1 }), /3 ports for a leader and 1 replicas/)
  assert.not.ok(existsSync(log), 'pulumi was never called')
})

docker('a failing pulumi up quotes its last lines', async () => {
  const base = fresh()
  const pulumi = `case "$1" in up) echo "error: docker:index:Container pgfollow-leader: port is already allocated" >&2; exit 255 ;; esac`
  const env = { ...process.env, PATH: `${binDir({ pulumi, docker: dockerRunning })}:/usr/bin:/bin` }
  await rejects(() => dockerUp({ dir: join(base, 'cluster'), env }), /`pulumi up --yes` failed \(exit 255\)[\s\S]*port is already allocated/)
})

docker.run()
