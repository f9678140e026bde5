#!/usr/bin/env node
// "What happens if the leader goes down?" for the local cluster (run with
// `npx zx` or plain `node`):
//   failover.mjs [--dir D | --cluster FILE] [--promote NAME] [--rejoin] [--json]
// lib/cluster/failover.ts does the work: fence the old leader, promote the
// most advanced replica, repoint the others, rewrite the descriptor. A later
// `cluster.mjs up` (or --rejoin here) re-clones the old leader as a replica.
import { existsSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { chalk, echo, parseArgv } from 'zx'
import { loadLibrary, runMain } from './script-runner.mjs'

const USAGE = `Usage: npx zx scripts/failover.mjs [flags]

Promotes a replica of the local cluster to leader: the old leader is stopped
(if it still runs) and fenced so it can never start as a second leader, the
replica that received the most WAL is promoted with pg_promote(), the other
replicas follow it (slot on the new leader, primary_conninfo + reload), and
pgfollow.json and cluster.json name the new leader. Clients using the sql tag
keep reading and write again as soon as the promotion is done: no restart.

Flags
  --dir D            cluster directory (default: the directory of the descriptor)
  --cluster FILE     cluster descriptor (default: $PGFOLLOW_CLUSTER, else .pgfollow/cluster.json)
  --promote NAME     promote this replica instead of the most advanced one
  --rejoin           then bring the old leader back at once, as a replica (re-cloned)
  --json             print one machine-readable result

On a cluster Patroni manages (its descriptor lists "patroni" endpoints, as
\`cluster.mjs up --ha\` and the Pulumi program with ha: patroni write), this
asks Patroni instead: a switchover when the leader runs (no committed write
is lost), a failover otherwise; --promote names the candidate. Patroni
rejoins the old leader as a replica by itself (pg_rewind).

The old leader stays fenced until \`npx zx scripts/cluster.mjs up\` (or
--rejoin) re-clones it from the new leader. For the Docker cluster, see the
README (Operator scripts: failover).`

const STRING_FLAGS = ['dir', 'cluster', 'promote']
const BOOLEAN_FLAGS = ['rejoin', 'json', 'help', 'h']

const lib = await loadLibrary()
const { paint } = lib
const { displayPath } = lib.ops
// zx's default argv guesses types, and `npx zx` puts one more word before the
// script's arguments than `node`: this parse knows both.
const argv = parseArgv(lib.ops.scriptArgs(import.meta.url), { string: STRING_FLAGS, boolean: BOOLEAN_FLAGS })
await runMain(main, lib.pgfollow)

async function main() {
  if (argv.help || argv.h) {
    echo(USAGE)
    return 0
  }
  lib.ops.assertOnlyKnownFlags(argv, [...STRING_FLAGS, ...BOOLEAN_FLAGS])
  const patroni = patroniEndpoints()
  if (patroni) return await viaPatroni(patroni)
  const dir = clusterDir()
  const step = progress()

  const result = await lib.cluster.failover({ dir, promote: argv.promote, onProgress: step })
  step(`${result.promoted} leads; ${result.previous} is fenced`)
  let rejoined = null
  if (argv.rejoin) {
    const up = await lib.cluster.up({ dir, migrate: false, onProgress: step })
    rejoined = up.started
  }
  const status = await lib.cluster.status(dir)

  if (argv.json) {
    echo(JSON.stringify({ ...result, descriptor: redacted(result.descriptor), rejoined, nodes: status.nodes }, null, 2))
    return 0
  }
  echo(
    chalk.green(`Failover done in ${result.seconds.toFixed(1)} s: ${chalk.bold(result.promoted)} is the leader`) +
      chalk.green(
        ` (promoted at ${result.promotedLsn}; ${result.previous} was ${result.previousWasRunning ? 'running and was stopped cleanly' : 'down'}).`,
      ),
  )
  const rows = status.nodes.map((
    node,
  ) => [node.name, node.role, paint(node.state), node.port, node.pid ?? '-', node.lagBytes ?? '-', node.lagMs ?? '-'])
  for (
    const line of lib.ops.formatTable(['NODE', 'ROLE', 'STATE', 'PORT', 'PID', 'LAG BYTES', 'LAG MS'], rows).map((
      line,
      i,
    ) => (i === 0 ? chalk.bold(line) : line))
  ) {
    echo(line)
  }
  if (result.recloned.length > 0) echo(chalk.yellow(`Re-cloned ${result.recloned.join(', ')}: they had WAL ${result.promoted} never received.`))
  if (result.configured.length > 0) echo(chalk.yellow(`${result.configured.join(', ')} was stopped: it follows ${result.promoted} when it starts.`))
  if (rejoined) {
    echo(`${result.previous} is back as a replica of ${result.promoted} (re-cloned).`)
  } else {
    echo(
      `${result.previous} is fenced: \`npx zx scripts/cluster.mjs up${
        dir === defaultDir() ? '' : ` --dir ${displayPath(dir)}`
      }\` brings it back as a replica of ${result.promoted} (re-cloned).`,
    )
  }
  echo(chalk.dim(`Descriptor rewritten: ${displayPath(join(dir, 'cluster.json'))}`))
  return 0
}

/** The Patroni endpoints of the cluster's descriptor, or null when Patroni does not manage it. */
function patroniEndpoints() {
  if (argv.dir !== undefined && argv.cluster !== undefined) throw new lib.pgfollow.ConfigError('Give --dir or --cluster, not both.')
  const file = argv.dir !== undefined ? join(resolve(String(argv.dir)), 'cluster.json') : lib.pgfollow.descriptorPath(argv.cluster)
  if (!existsSync(file)) return null
  return lib.pgfollow.loadDescriptor(file).patroni ?? null
}

/** Patroni moves the leadership; the local descriptor (if any) is rewritten with the new roles. */
async function viaPatroni(endpoints) {
  if (argv.rejoin) throw new lib.pgfollow.ConfigError('--rejoin is for the local cluster: Patroni rejoins the old leader by itself.')
  const step = progress()
  step(`asking Patroni (${endpoints[0]}${endpoints.length > 1 ? ', ...' : ''})`)
  const result = await lib.cluster.patroniSwitchover(endpoints, argv.promote)
  const dir = argv.dir !== undefined ? resolve(String(argv.dir)) : dirname(lib.pgfollow.descriptorPath(argv.cluster))
  const local = existsSync(join(dir, lib.cluster.STATE_FILE))
  if (local) await lib.cluster.recordPatroniRoles(dir)
  if (argv.json) {
    echo(JSON.stringify({ ...result, patroni: endpoints }, null, 2))
    return 0
  }
  echo(
    chalk.green(
      `Patroni ${result.kind} done in ${result.seconds.toFixed(1)} s: ${chalk.bold(result.promoted)} is the leader` +
        (result.previous ? ` (was ${result.previous}; Patroni rejoins it as a replica).` : '.'),
    ),
  )
  if (local) echo(chalk.dim(`Descriptor rewritten: ${displayPath(join(dir, 'cluster.json'))}`))
  return 0
}

/** --dir, else the directory the descriptor is in (the local cluster writes it there). */
function clusterDir() {
  if (argv.dir !== undefined && argv.cluster !== undefined) throw new lib.pgfollow.ConfigError('Give --dir or --cluster, not both.')
  const dir = argv.dir !== undefined ? resolve(String(argv.dir)) : dirname(lib.pgfollow.descriptorPath(argv.cluster))
  if (!existsSync(join(dir, lib.cluster.STATE_FILE))) {
    throw new lib.pgfollow.ConfigError(
      `${displayPath(dir)} holds no local pgfollow cluster (no ${lib.cluster.STATE_FILE}): failover.mjs drives the local cluster. ` +
        'For the Docker cluster, promote a replica as the README describes (Operator scripts: failover).',
    )
  }
  return dir
}

function defaultDir() {
  return resolve(lib.pgfollow.DEFAULT_CLUSTER_DIR)
}

/** One line per step on stderr, with the time since the start. */
function progress() {
  const started = Date.now()
  return (message) => process.stderr.write(chalk.dim(`  ${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s  ${message}\n`))
}

function redacted(descriptor) {
  return { leader: lib.pgfollow.redactUrl(descriptor.leader), replicas: descriptor.replicas.map((url) => lib.pgfollow.redactUrl(url)) }
}
