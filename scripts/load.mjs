#!/usr/bin/env node
// The proof of concept's load program, through the sql tag (run with `npx zx`
// or plain `node`):
//   load.mjs [--cluster FILE] [--writers 2] [--readers 100] [--duration 30s]
//            [--consistency eventual|session] [--balance round-robin|random|least-busy]
//            [--report FILE.svg|.html] [--json] [--seed N]
// lib/load.ts runs and measures the workload, lib/report.ts draws the
// report; this file parses flags and talks to the terminal.
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, extname, resolve } from 'node:path'
import { chalk, echo, parseArgv } from 'zx'
import { loadLibrary, runMain } from './script-runner.mjs'

const USAGE = `Usage: npx zx scripts/load.mjs [flags]

The proof of concept's workload: writers create a blog with posts and
comments in one transaction, read it back, and sleep 100-2000 ms; readers
page posts with their comments (offset 1-1000, limit 1-20) in a loop. All
through the sql tag: reads go to replicas, writes to the leader.

Flags
  --cluster FILE          cluster descriptor (default: $PGFOLLOW_CLUSTER, else .pgfollow/cluster.json)
  --writers N             concurrent writers (default 2)
  --readers N             concurrent readers (default 100)
  --duration D            e.g. 30s or 2m (default: until Ctrl-C)
  --consistency MODE      eventual (default) or session: every worker holds a causal
                          session, so a writer always reads its blog back
  --balance POLICY        round-robin (default), random or least-busy
  --report FILE           write a chart of throughput per node and lag per replica
                          (.svg, or .html with the summary numbers)
  --json                  print one JSON summary line on stdout (the table goes to stderr)
  --seed N                seed the workers' random choices (default: the clock)

A live line shows reads/s, writes/s, each node's share of the reads, p50/p99
read latency, errors and the highest replica lag. Ctrl-C stops the load and
prints the summary; twice exits at once.`

const STRING_FLAGS = ['cluster', 'writers', 'readers', 'duration', 'consistency', 'balance', 'report', 'seed']
const BOOLEAN_FLAGS = ['json', 'help', 'h']

const { pgfollow, ops } = await loadLibrary()
const { displayPath } = ops
// zx's default argv guesses types, and `npx zx` puts one more word before the
// script's arguments than `node`: this parse knows both.
const argv = parseArgv(ops.scriptArgs(import.meta.url), { string: STRING_FLAGS, boolean: BOOLEAN_FLAGS })
let droppedWrites = 0
process.on('uncaughtException', (error) => {
  // postgres.js 3.4.9 may flush a buffered write after a dead node's socket
  // closed, from a setImmediate (porsager/postgres#1154, #1208): nobody can
  // catch it and it would end the experiment. The statement was already
  // rejected (and the tag retried or counted it), so note it and go on.
  // Anything else is a bug: print it and exit as Node would.
  if (
    error instanceof TypeError && /reading 'write'/.test(error.message) &&
    /nextWrite[\s\S]*postgres\/src\/connection\.js|postgres\/src\/connection\.js[\s\S]*nextWrite/.test(error.stack ?? '')
  ) {
    if (droppedWrites++ === 0) process.stderr.write(chalk.yellow('\npostgres.js wrote to a closed socket (porsager/postgres#1154); continuing.\n'))
    return
  }
  console.error(chalk.red(error?.stack ?? String(error)))
  process.exit(1)
})
await runMain(main, pgfollow)

async function main() {
  if (argv.help || argv.h) {
    echo(USAGE)
    return 0
  }
  ops.assertOnlyKnownFlags(argv, [...STRING_FLAGS, ...BOOLEAN_FLAGS])
  const writers = argv.writers === undefined ? 2 : ops.parseCount(argv.writers, '--writers')
  const readers = argv.readers === undefined ? 100 : ops.parseCount(argv.readers, '--readers')
  if (writers + readers === 0) throw new pgfollow.ConfigError('--writers 0 and --readers 0 leave nothing to run.')
  const durationMs = argv.duration === undefined ? undefined : ops.parseDuration(argv.duration, '--duration')
  const consistency = argv.consistency === undefined ? 'eventual' : ops.parseChoice(argv.consistency, '--consistency', ops.CONSISTENCIES)
  const balance = argv.balance === undefined ? 'round-robin' : ops.parseChoice(argv.balance, '--balance', pgfollow.BALANCES)
  const seed = argv.seed === undefined ? undefined : ops.parseCount(argv.seed, '--seed')
  const report = argv.report === undefined ? undefined : reportPath(argv.report)

  const descriptor = pgfollow.loadDescriptor(argv.cluster)
  const sql = pgfollow.connect({ ...descriptor, balance })
  // Lag as lagcheck measures it, and the nodes' own names (right after a failover too).
  const probe = new ops.LagProbe(descriptor, { timeoutMs: 1000 })
  const live = liveLine()
  let run
  try {
    await preflight(sql)
    const what = `${writers} writer(s), ${readers} reader(s), ${consistency} consistency, ${balance}`
    process.stderr.write(chalk.dim(`Load: ${what}, ${durationMs ? `for ${ops.formatMs(durationMs)}` : 'until Ctrl-C'}.\n`))
    run = ops.runLoad({ sql, probe, writers, readers, durationMs, consistency, seed, onTick: (tick) => live.tick(tick) })
    live.start()
    // Ctrl-C (or SIGTERM, which npm start sends) stops cleanly; a second Ctrl-C quits at once.
    let interrupted = false
    const onSignal = (signal) => {
      if (interrupted) {
        if (signal === 'SIGINT') process.exit(130)
        return
      }
      interrupted = true
      live.note('stopping: workers finish their statement in flight (Ctrl-C again to quit at once)')
      run.stop()
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
    const summary = await run.done
    live.stop()
    if (report) {
      mkdirSync(dirname(report), { recursive: true })
      const render = extname(report) === '.html' ? ops.renderLoadReportHtml : ops.renderLoadReportSvg
      writeFileSync(report, render(summary))
    }
    printSummary(summary, report)
    return 0
  } finally {
    live.stop()
    await Promise.all([sql.end({ timeout: 5 }), probe.end()])
  }
}

/** The tables must exist, or every statement fails the same way: say so once. */
async function preflight(sql) {
  try {
    await sql.leader`select 1 from posts limit 1`
  } catch (error) {
    if (error?.code === '42P01') {
      throw new pgfollow.ConfigError(
        'The blog tables do not exist on this cluster: run `npx zx scripts/migrate.mjs` first (`cluster.mjs up` migrates too).',
      )
    }
    throw error
  }
  await sql.refresh() // roles and lag known before the first tick
}

function reportPath(value) {
  const path = resolve(String(value))
  if (value === true || !['.svg', '.html'].includes(extname(path))) {
    throw new pgfollow.ConfigError(`--report takes a file name ending in .svg or .html, not "${value === true ? '' : value}".`)
  }
  return path
}

/**
 * Progress on stderr, so stdout stays clean for --json: on a terminal one
 * line redrawn in place (every 250 ms, numbers from the last tick); else a
 * line every 5 s.
 */
function liveLine() {
  const tty = process.stderr.isTTY && !process.env.CI
  const frames = '⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏'
  let frame = 0
  let timer = null
  let last = null
  let shown = false
  let lastPrinted = 0
  const draw = () => {
    if (!last) return
    let line = `${chalk.cyan(frames[frame++ % frames.length])} ${describeTick(last)}`
    // A line wider than the terminal wraps, and \r would then redraw only its last part.
    const columns = process.stderr.columns || Infinity
    if (ops.stripAnsi(line).length >= columns) line = ops.stripAnsi(line).slice(0, columns - 1)
    process.stderr.write(`\r\x1b[2K${line}`)
    shown = true
  }
  return {
    start() {
      if (tty) timer = setInterval(draw, 250)
    },
    tick(tick) {
      last = tick
      if (tty) return draw()
      if (tick.t - lastPrinted >= 5) {
        lastPrinted = tick.t
        process.stderr.write(`  ${describeTick(tick)}\n`)
      }
    },
    note(message) {
      if (shown) process.stderr.write('\r\x1b[2K')
      process.stderr.write(chalk.yellow(message) + '\n')
    },
    stop() {
      if (timer) clearInterval(timer)
      timer = null
      if (shown) process.stderr.write('\r\x1b[2K')
      shown = false
    },
  }
}

function describeTick(tick) {
  const rate = (count) => Math.round(count / (tick.seconds || 1)).toLocaleString('en-US')
  const reads = Object.values(tick.readsByNode).reduce((sum, n) => sum + n, 0)
  const shares = Object.entries(tick.readsByNode)
    .map(([name, n]) => `${name} ${reads > 0 ? Math.round((n / reads) * 100) : 0}%`)
    .join(' ')
  const lag = Math.max(0, ...Object.values(tick.lagMs))
  return [
    chalk.dim(`${tick.t.toFixed(0).padStart(3)} s`),
    `reads ${chalk.bold(rate(tick.reads))}/s`,
    `writes ${chalk.bold((tick.writes / (tick.seconds || 1)).toFixed(1))}/s`,
    shares,
    `p50 ${ops.formatMs(tick.p50Ms)} p99 ${ops.formatMs(tick.p99Ms)}`,
    `errors ${tick.errors > 0 ? chalk.red(tick.errors) : 0}`,
    `max lag ${ops.formatMs(lag)}`,
  ].join('  ')
}

function printSummary(summary, report) {
  const out = argv.json ? (text) => process.stderr.write(text + '\n') : (text) => echo(text)
  const names = Object.keys(summary.roles)
  const maxLag = (name) => Math.max(0, ...summary.ticks.map((tick) => tick.lagMs[name] ?? 0))
  const rows = names.map((name) => [
    name,
    summary.roles[name],
    (summary.byNode[name] ?? 0).toLocaleString('en-US'),
    `${summary.reads > 0 ? Math.round(((summary.byNode[name] ?? 0) / summary.reads) * 100) : 0}%`,
    (summary.writesByNode[name] ?? 0).toLocaleString('en-US'),
    summary.roles[name] === 'replica' ? ops.formatMs(maxLag(name)) : '-',
  ])
  const lines = ops.formatTable(['NODE', 'ROLE', 'READS', 'SHARE', 'WRITES', 'MAX LAG'], rows, [2, 3, 4, 5])
  const perSecond = (n) => (summary.durationS > 0 ? n / summary.durationS : 0)
  out('')
  out(chalk.bold(lines[0]))
  for (const line of lines.slice(1)) out(line)
  out(
    `${chalk.bold(summary.reads.toLocaleString('en-US'))} reads (${Math.round(perSecond(summary.reads)).toLocaleString('en-US')}/s), ` +
      `${chalk.bold(summary.writes)} writes (${perSecond(summary.writes).toFixed(1)}/s; ${summary.posts} posts, ${summary.comments} comments) ` +
      `in ${summary.durationS.toFixed(1)} s; ${summary.errors > 0 ? chalk.red(`${summary.errors} errors`) : '0 errors'}.`,
  )
  out(
    `Read latency p50 ${ops.formatMs(summary.p50Ms)}, p99 ${ops.formatMs(summary.p99Ms)}; ` +
      `write (one blog transaction) p50 ${ops.formatMs(summary.writeP50Ms)}, p99 ${ops.formatMs(summary.writeP99Ms)}. ` +
      `Max replica lag ${ops.formatMs(summary.maxLagMs)}.`,
  )
  const staleNote = summary.consistency === 'session'
    ? 'sessions read their writes'
    : 'replicas had not replayed them yet; --consistency session prevents that'
  out(
    `Read-backs that missed the blog just written: ${summary.staleReads}${
      summary.staleReads > 0 || summary.consistency === 'session' ? ` (${staleNote})` : ''
    }.`,
  )
  for (const message of summary.errorSamples) out(chalk.red(`  error: ${message}`))
  if (report) out(`Report: ${displayPath(report)}`)
  if (argv.json) {
    const { ticks: _ticks, errorSamples, ...numbers } = summary
    echo(
      JSON.stringify({
        reads: numbers.reads,
        writes: numbers.writes,
        errors: numbers.errors,
        byNode: numbers.byNode,
        p50Ms: numbers.p50Ms,
        p99Ms: numbers.p99Ms,
        maxLagMs: numbers.maxLagMs,
        durationS: numbers.durationS,
        ...numbers,
        errorSamples,
        report: report ?? null,
      }),
    )
  }
}
