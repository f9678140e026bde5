#!/usr/bin/env node
// Replication lag of the cluster, the proof of concept's LagCheck.ps1 as a
// monitoring check (run with `npx zx` or plain `node`):
//   lagcheck.mjs [--cluster FILE] [--interval 1s] [--once | --count N] [--json]
//                [--watch] [--max-lag-bytes N] [--max-lag-ms N]
// lib/ops/lag.ts does the asking (the leader's view plus every node of the
// descriptor, read by lib/ops/replication.ts as `cluster.mjs status` reads
// it); this file parses flags, paints tables and picks the exit code.
import { chalk, echo, parseArgv } from 'zx'
import { loadLibrary, runMain } from './script-runner.mjs'

const USAGE = `Usage: npx zx scripts/lagcheck.mjs [flags]

Every --interval, a table: the leader (WAL position, replicas connected) and
one row per replica (state, lag in bytes sent/flushed/replayed, replay lag in
ms, WAL retained by its slot).

Flags
  --cluster FILE       cluster descriptor (default: $PGFOLLOW_CLUSTER, else .pgfollow/cluster.json)
  --interval D         time between looks, e.g. 500ms, 1s, 5s (default 1s)
  --once               one look, then exit with the verdict (a monitoring check)
  --count N            N looks, then exit with the last verdict
  --json               one JSON document per look (NDJSON) instead of tables
  --watch              add a sparkline of each replica's replay lag
  --max-lag-bytes N    exit 2 when a replica has more than N bytes left to replay
  --max-lag-ms N       exit 2 when a replica's replay lag is above N ms

Exit codes (Nagios-style): 0 all good; 1 a node is down or unreachable, or a
replica does not follow the leader (not-following: streams from nobody;
wrong-upstream: streams from another node; diverged: has WAL the leader
does not; other-cluster: another system identifier); 2 a replica is beyond --max-lag-*; 3 the check
itself could not run (bad flag, no descriptor). 1 wins over 2. Without --once
or --count it runs until Ctrl-C and exits with the last verdict.`

const STRING_FLAGS = ['cluster', 'interval', 'count', 'max-lag-bytes', 'max-lag-ms']
const BOOLEAN_FLAGS = ['once', 'json', 'watch', 'help', 'h']
const EXIT_UNKNOWN = 3
const SPARK_WIDTH = 30

const { pgfollow, ops, paint } = await loadLibrary()
// zx's default argv guesses types, and `npx zx` puts one more word before the
// script's arguments than `node`: this parse knows both.
const argv = parseArgv(ops.scriptArgs(import.meta.url), { string: STRING_FLAGS, boolean: BOOLEAN_FLAGS })
await runMain(main, pgfollow, EXIT_UNKNOWN)

async function main() {
  if (argv.help || argv.h) {
    echo(USAGE)
    return 0
  }
  ops.assertOnlyKnownFlags(argv, [...STRING_FLAGS, ...BOOLEAN_FLAGS])
  if (argv.once && (argv.watch || argv.count !== undefined)) {
    throw new pgfollow.ConfigError('--once is one look: it does not combine with --watch or --count.')
  }
  const limits = {
    maxLagBytes: argv['max-lag-bytes'] === undefined ? undefined : ops.parseCount(argv['max-lag-bytes'], '--max-lag-bytes'),
    maxLagMs: argv['max-lag-ms'] === undefined ? undefined : ops.parseCount(argv['max-lag-ms'], '--max-lag-ms'),
  }
  const intervalMs = argv.interval === undefined ? 1000 : ops.parseDuration(argv.interval, '--interval')
  const looks = argv.once ? 1 : argv.count === undefined ? Infinity : ops.parseCount(argv.count, '--count', 1)
  const descriptor = pgfollow.loadDescriptor(argv.cluster)

  const probe = new ops.LagProbe(descriptor, { timeoutMs: Math.min(3000, Math.max(1000, intervalMs)) })
  const history = new Map() // replica name -> lag ms of the last looks, for --watch
  const redraw = process.stdout.isTTY && !argv.json && looks > 1
  let stopping = false
  let wake = () => {}
  process.on('SIGINT', () => {
    if (stopping) process.exit(130)
    stopping = true
    wake()
  })

  let verdict = { exitCode: 0, problems: [] }
  const started = Date.now()
  try {
    for (let look = 0; look < looks && !stopping; look++) {
      const snapshot = await probe.snapshot()
      verdict = ops.judgeLag(snapshot, limits)
      for (const replica of snapshot.replicas) {
        const values = history.get(replica.name) ?? []
        values.push(replica.lagMs ?? 0)
        history.set(replica.name, values.slice(-SPARK_WIDTH))
      }
      if (argv.json) echo(JSON.stringify({ ...snapshot, status: verdict.exitCode, problems: verdict.problems }))
      else print(snapshot, verdict, history, { redraw, intervalMs })
      if (look + 1 < looks && !stopping) {
        // Fixed rate: a slow look does not push every later one back.
        const next = started + (look + 1) * intervalMs
        await new Promise((resolve) => {
          const timer = setTimeout(resolve, Math.max(0, next - Date.now()))
          wake = () => (clearTimeout(timer), resolve())
        })
      }
    }
  } finally {
    await probe.end()
  }
  return verdict.exitCode
}

function print(snapshot, verdict, history, { redraw, intervalMs }) {
  const { leader } = snapshot
  const rows = [
    [
      chalk.bold(leader.name),
      'leader',
      paint(leader.state),
      leader.lsn ?? '-',
      '',
      '',
      '',
      '',
      '',
      leader.state === 'down' ? chalk.red(leader.error ?? '') : `${leader.connectedReplicas} replica(s) connected`,
    ],
    ...snapshot.replicas.map((replica) => [
      replica.name,
      'replica',
      paint(replica.state),
      replica.replayLsn ?? '-',
      ops.formatBytes(replica.sentLagBytes),
      ops.formatBytes(replica.flushLagBytes),
      ops.formatBytes(replica.lagBytes),
      ops.formatMs(replica.lagMs),
      ops.formatBytes(replica.retainedBytes),
      note(replica),
    ]),
  ]
  const header = ['NODE', 'ROLE', 'STATE', 'LSN', 'SENT', 'FLUSHED', 'REPLAYED', 'REPLAY LAG', 'RETAINED', '']
  if (argv.watch) {
    header.splice(9, 0, `LAG (last ${SPARK_WIDTH})`)
    rows[0].splice(9, 0, '')
    snapshot.replicas.forEach((replica, i) => {
      const values = history.get(replica.name) ?? []
      const line = ops.sparkline(values, SPARK_WIDTH)
      rows[i + 1].splice(9, 0, `${chalk.cyan(line)} ${chalk.dim('max ' + ops.formatMs(Math.max(0, ...values)))}`)
    })
  }
  const lines = ops.formatTable(header, rows, [4, 5, 6, 7, 8])
  const out = [
    chalk.dim(`${snapshot.time.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}  ${pgfollow.redactUrl(leader.url)}`),
    chalk.bold(lines[0]),
    ...lines.slice(1),
  ]
  if (leader.moved) {
    out.push(chalk.yellow(`${leader.name} leads, not the descriptor's leader: the descriptor is out of date (failover.mjs rewrites it).`))
  }
  for (const orphan of snapshot.orphanSlots) {
    out.push(
      chalk.yellow(
        `Slot ${orphan.slot} (${orphan.active ? 'active' : 'inactive'}) belongs to no replica of the descriptor and retains ${
          ops.formatBytes(orphan.retainedBytes)
        }.`,
      ),
    )
  }
  for (const problem of verdict.problems) out.push((verdict.exitCode === 1 ? chalk.red : chalk.yellow)(problem))
  if (redraw) {
    out.push(chalk.dim(`every ${ops.formatMs(intervalMs)}; Ctrl-C to stop`))
    process.stdout.write('\x1b[H\x1b[2J' + out.join('\n') + '\n')
  } else {
    echo(out.join('\n') + '\n')
  }
}

function note(replica) {
  if (replica.state === 'down') return chalk.red(replica.error ?? 'does not answer')
  if (replica.state === 'leader' || ops.FOLLOW_PROBLEMS.includes(replica.state)) return chalk.red(replica.error)
  const parts = []
  if (replica.syncState && replica.syncState !== 'async') parts.push(replica.syncState)
  if (replica.upstream) parts.push(`from ${replica.upstream}`)
  return chalk.dim(parts.join(', '))
}
