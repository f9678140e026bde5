/**
 * The Docker cluster, driven through the Pulumi program in infra/ with the
 * pulumi CLI: `dockerUp` configures the stack, runs `pulumi up` and writes
 * `pulumi stack output --json --show-secrets` as `<dir>/cluster.json`;
 * `dockerDown` runs `pulumi destroy`. Without the Pulumi CLI or a running
 * Docker engine both stop first, with a message that says what to install.
 *
 * Unless PULUMI_BACKEND_URL is set, the stack's state lives in `<dir>/pulumi`
 * (a local backend, no account needed), encrypted with a passphrase kept in
 * `<dir>/pulumi/passphrase` unless PULUMI_CONFIG_PASSPHRASE(_FILE) is set.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { type ClusterDescriptor, DEFAULT_CLUSTER_DIR, DESCRIPTOR_FILE } from '../tag/descriptor.ts'
import { ClusterError, ConfigError } from '../tag/errors.ts'
import { parsePort, parseSynchronousMode, type SynchronousMode } from '../topology.ts'
import { STATE_FILE } from './local.ts'

/** infra/, from lib/cluster (TypeScript) and dist/cluster (built) alike. */
export const INFRA_DIR: string = fileURLToPath(new URL('../../infra/', import.meta.url))
/** Records which stack and backend `dockerUp` used, for `dockerDown`. */
export const DOCKER_STATE_FILE = 'docker.json'
export const DEFAULT_STACK = 'dev'

export interface DockerOptions {
  /** Cluster directory: cluster.json, docker.json and (by default) the Pulumi state. */
  dir?: string
  /** Pulumi stack name (default `dev`; containers are named pgfollow-<stack>-...). */
  stack?: string
  /** Called with each line of progress. */
  onProgress?: (message: string) => void
  /** Environment of the pulumi and docker commands (default: this process's). */
  env?: Record<string, string | undefined>
}

export interface DockerUpOptions extends DockerOptions {
  /** Published ports: the leader's, then the replicas'. */
  ports?: number[]
  replicas?: number
  synchronous?: SynchronousMode | string
}

export interface DockerUpResult {
  dir: string
  /** The descriptor file written: the stack's outputs, mode 0600. */
  file: string
  stack: string
  descriptor: ClusterDescriptor
  pgadminUrl?: string
  nodes: string[]
  containers: Record<string, string>
}

/** Creates or updates the Docker cluster and writes its descriptor. */
export async function dockerUp(options: DockerUpOptions = {}): Promise<DockerUpResult> {
  const dir = resolve(options.dir ?? DEFAULT_CLUSTER_DIR)
  const stack = options.stack ?? DEFAULT_STACK
  const config = stackConfig(options)
  const env = { ...(options.env ?? process.env) }
  await checkDockerPrerequisites(env)
  if (existsSync(join(dir, STATE_FILE))) {
    throw new ConfigError(
      `${dir} holds a local cluster (${STATE_FILE}); its cluster.json would be overwritten. Use another --dir for the Docker cluster, or take the local one down first.`,
    )
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const pulumiEnv = prepareBackend(dir, env)
  const progress = options.onProgress ?? (() => {})
  const pulumi = (args: string[], quiet = false) => runPulumi(args, pulumiEnv, quiet ? () => {} : progress)

  progress(`Selecting Pulumi stack ${stack} in ${INFRA_DIR}`)
  await pulumi(['stack', 'select', '--create', '--stack', stack, '--non-interactive'])
  writeState(dir, { stack, backend: pulumiEnv.PULUMI_BACKEND_URL })
  const pairs = Object.entries(config).flatMap(([key, value]) => ['--plaintext', `${key}=${value}`])
  if (pairs.length > 0) await pulumi(['config', 'set-all', '--stack', stack, ...pairs])
  progress('Running pulumi up (the first run pulls the images)')
  await pulumi(['up', '--yes', '--skip-preview', '--non-interactive', '--stack', stack])
  const { stdout } = await pulumi(['stack', 'output', '--json', '--show-secrets', '--stack', stack], true)
  const outputs = parseOutputs(stdout)
  const file = join(dir, DESCRIPTOR_FILE)
  writeFileSync(file, JSON.stringify(outputs, null, 2) + '\n', { mode: 0o600 })
  chmodSync(file, 0o600) // writeFileSync keeps the mode of an existing file
  progress(`Wrote ${file}`)
  return {
    dir,
    file,
    stack,
    descriptor: { leader: outputs.leader, replicas: outputs.replicas },
    pgadminUrl: typeof outputs.pgadminUrl === 'string' ? outputs.pgadminUrl : undefined,
    nodes: Array.isArray(outputs.nodes) ? (outputs.nodes as string[]) : [],
    containers: (outputs.containers as Record<string, string>) ?? {},
  }
}

/** Destroys the Docker cluster (containers, volumes, network) and removes its descriptor. */
export async function dockerDown(options: DockerOptions = {}): Promise<void> {
  const dir = resolve(options.dir ?? DEFAULT_CLUSTER_DIR)
  const env = { ...(options.env ?? process.env) }
  await checkDockerPrerequisites(env)
  const state = readState(dir)
  const stack = options.stack ?? state?.stack ?? DEFAULT_STACK
  const pulumiEnv = prepareBackend(dir, state?.backend ? { PULUMI_BACKEND_URL: state.backend, ...env } : env)
  const progress = options.onProgress ?? (() => {})
  progress(`Running pulumi destroy on stack ${stack}`)
  await runPulumi(['destroy', '--yes', '--skip-preview', '--non-interactive', '--stack', stack], pulumiEnv, progress)
  // The descriptor described containers that no longer exist.
  if (state) rmSync(join(dir, DESCRIPTOR_FILE), { force: true })
  rmSync(join(dir, DOCKER_STATE_FILE), { force: true })
}

/**
 * Throws one ClusterError naming everything missing: the pulumi CLI on PATH,
 * the docker CLI, a Docker engine that answers `docker info`.
 */
export async function checkDockerPrerequisites(env: Record<string, string | undefined> = process.env): Promise<void> {
  const problems: string[] = []
  if (!existsSync(join(INFRA_DIR, 'Pulumi.yaml'))) {
    // The npm package ships lib/ only: the Pulumi program and its @pulumi/* dependencies stay in the repository.
    problems.push(
      `the Pulumi program: ${INFRA_DIR} is missing. The Docker cluster runs from a clone of the pgfollow repository (npm ci there installs @pulumi/*), not from the npm package.`,
    )
  }
  const pulumi = await runCli('pulumi', ['version'], env)
  if (pulumi.missing) {
    problems.push(
      'the Pulumi CLI: `pulumi` is not on PATH. Install it from https://www.pulumi.com/docs/iac/download-install/ (the npm packages are already installed; the CLI is a separate program).',
    )
  } else if (pulumi.code !== 0) {
    problems.push(`a working Pulumi CLI: \`pulumi version\` failed: ${firstLine(pulumi.stderr || pulumi.stdout)}`)
  }
  const docker = await runCli('docker', ['info', '--format', '{{.ServerVersion}}'], env)
  if (docker.missing) {
    problems.push('a running Docker engine: `docker` is not on PATH. Install Docker Engine (or Docker Desktop) and start it.')
  } else if (docker.code !== 0) {
    problems.push(
      `a running Docker engine: \`docker info\` failed (${
        firstLine(docker.stderr || docker.stdout)
      }). Start the engine, or set DOCKER_HOST to one that runs.`,
    )
  }
  if (problems.length > 0) {
    throw new ClusterError(
      `The Docker cluster needs ${['one thing', 'two things', 'three things'][problems.length - 1]} this machine lacks:\n` +
        problems.map((problem) => `  - ${problem}`).join('\n') +
        '\nWithout --docker, `npx zx scripts/cluster.mjs up` runs the same cluster as local processes.',
    )
  }
}

/** Options -> config keys of infra/Pulumi.yaml, checked before pulumi runs. */
function stackConfig(options: DockerUpOptions): Record<string, string> {
  const config: Record<string, string> = {}
  const ports = options.ports ?? []
  for (const port of ports) parsePort(port, '--ports')
  if (new Set(ports).size !== ports.length) throw new ConfigError(`--ports lists a port twice (${ports.join(',')}); every node needs its own.`)
  const replicas = options.replicas ?? (ports.length > 0 ? ports.length - 1 : undefined)
  if (replicas !== undefined) {
    if (!Number.isInteger(replicas) || replicas < 0) throw new ConfigError(`--replicas must be a whole number, 0 or more (got ${replicas}).`)
    if (ports.length > replicas + 1) {
      throw new ConfigError(`--ports lists ${ports.length} ports for a leader and ${replicas} replicas: give at most ${replicas + 1}.`)
    }
    config.replicas = String(replicas)
  }
  if (ports.length > 0) config.leaderPort = String(ports[0])
  if (ports.length > 1) config.replicaPorts = JSON.stringify(ports.slice(1))
  if (options.synchronous !== undefined) config.synchronous = parseSynchronousMode(options.synchronous, '--synchronous')
  return config
}

/** The pulumi environment: a local backend in <dir>/pulumi and a passphrase, unless the user chose others. */
function prepareBackend(dir: string, env: Record<string, string | undefined>): Record<string, string | undefined> {
  const prepared: Record<string, string | undefined> = { ...env, PULUMI_SKIP_UPDATE_CHECK: 'true' }
  const stateDir = join(dir, 'pulumi')
  if (!prepared.PULUMI_BACKEND_URL) {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 })
    prepared.PULUMI_BACKEND_URL = `file://${stateDir}`
  }
  if (!prepared.PULUMI_CONFIG_PASSPHRASE && !prepared.PULUMI_CONFIG_PASSPHRASE_FILE) {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 })
    const passphraseFile = join(stateDir, 'passphrase')
    if (!existsSync(passphraseFile)) writeFileSync(passphraseFile, randomBytes(24).toString('base64url') + '\n', { mode: 0o600 })
    prepared.PULUMI_CONFIG_PASSPHRASE_FILE = passphraseFile
  }
  return prepared
}

function parseOutputs(stdout: string): Record<string, unknown> & ClusterDescriptor {
  let outputs: Record<string, unknown>
  try {
    outputs = JSON.parse(stdout)
  } catch {
    throw new ClusterError(`\`pulumi stack output --json\` printed no JSON: ${firstLine(stdout)}`)
  }
  if (typeof outputs?.leader !== 'string' || !Array.isArray(outputs.replicas)) {
    throw new ClusterError('The stack has no `leader` and `replicas` outputs: is infra/ the pgfollow program, and did `pulumi up` finish?')
  }
  return outputs as Record<string, unknown> & ClusterDescriptor
}

function writeState(dir: string, state: { stack: string; backend?: string }): void {
  const file = join(dir, DOCKER_STATE_FILE)
  writeFileSync(file, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 })
}

function readState(dir: string): { stack: string; backend?: string } | null {
  try {
    return JSON.parse(readFileSync(join(dir, DOCKER_STATE_FILE), 'utf8'))
  } catch {
    return null
  }
}

/** Runs pulumi in infra/, streaming its lines as progress; a failure quotes its last lines. */
async function runPulumi(args: string[], env: Record<string, string | undefined>, progress: (line: string) => void) {
  const result = await runCli('pulumi', args, env, progress)
  if (result.missing) throw new ClusterError('`pulumi` disappeared from PATH while running.')
  if (result.code !== 0) {
    const tail = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-15).join('\n')
    throw new ClusterError(`\`pulumi ${args.slice(0, 2).join(' ')}\` failed (exit ${result.code}) in ${INFRA_DIR}:\n${tail}`)
  }
  return result
}

interface RunResult {
  code: number | null
  stdout: string
  stderr: string
  missing: boolean
}

function runCli(command: string, args: string[], env: Record<string, string | undefined>, onLine?: (line: string) => void): Promise<RunResult> {
  return new Promise((resolvePromise) => {
    const child = spawn(command, args, { cwd: INFRA_DIR, env: env as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    let pending = ''
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk
      if (!onLine) return
      pending += chunk
      const lines = pending.split('\n')
      pending = lines.pop() ?? ''
      for (const line of lines) if (line.trim()) onLine(line.trimEnd())
    })
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk))
    child.on('error', (error: NodeJS.ErrnoException) => {
      resolvePromise({ code: null, stdout, stderr: stderr || error.message, missing: error.code === 'ENOENT' })
    })
    child.on('close', (code) => {
      if (onLine && pending.trim()) onLine(pending.trimEnd())
      resolvePromise({ code, stdout, stderr, missing: false })
    })
  })
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0] || 'no output'
}
