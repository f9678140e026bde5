#!/usr/bin/env node
// The benchmarks (npm run bench, or plain `node`):
//   bench.mjs [--quick] [--only ID,...] [--out FILE]
// Starts its own local cluster (seeded with the load script's writer), runs
// the bench/ files one after another on it, prints a Markdown table per
// question and writes every number as JSON (bench/results/latest.json, and
// the tables next to it as latest.md). Each bench file answers one question
// and can also run alone: `node bench/FILE.mjs [--quick]`.
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, relative, resolve } from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { chalk, echo, parseArgv } from 'zx'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const USAGE = `Usage: npm run bench -- [flags]   (or: node scripts/bench.mjs [flags])

Measures the sql tag against raw postgres.js, the proof of concept's
round-robin pools, HAProxy and pgpool-II on a local cluster it starts and removes.
See BENCHMARKS.md for what each question measures and the last results.

Flags
  --quick        one short round of everything (about 2 minutes instead of 9)
  --only IDS     comma-separated question ids: ${'{ids}'}
  --out FILE     results JSON (default bench/results/latest.json; tables go to .md beside it)
  --help`

// Read-only questions first; those that write or bend a replica come later.
const QUESTIONS = [
  'routing-overhead',
  'read-throughput',
  'skew',
  'causal-session',
  'replication-lag',
  'classifier-cost',
  'memory',
  'pool-aging',
  'router-queue',
  'bring-up',
]
const NO_CLUSTER = new Set(['classifier-cost', 'bring-up'])

const argv = parseArgv(process.argv.slice(2), { string: ['only', 'out'], boolean: ['quick', 'help', 'h'] })
const unknown = Object.keys(argv).filter((key) => !['_', 'only', 'out', 'quick', 'help', 'h'].includes(key))
if (argv.help || argv.h || unknown.length > 0 || argv._.length > 0) {
  if (unknown.length > 0 || argv._.length > 0) console.error(chalk.red(`Unknown argument ${[...unknown.map((k) => `--${k}`), ...argv._].join(' ')}.`))
  echo(USAGE.replace('{ids}', QUESTIONS.join(', ')))
  process.exit(argv.help || argv.h ? 0 : 2)
}
const selected = argv.only ? String(argv.only).split(',').map((id) => id.trim()) : QUESTIONS
const wrong = selected.filter((id) => !QUESTIONS.includes(id))
if (wrong.length > 0) {
  console.error(chalk.red(`No question ${wrong.join(', ')}: choose from ${QUESTIONS.join(', ')}.`))
  process.exit(2)
}
const out = resolve(argv.out ?? `${root}/bench/results/latest.json`)
const quick = Boolean(argv.quick)

const [helpers, report, pgpool, haproxy] = await loadBench()
const log = (line) => console.error(chalk.dim(line))
const started = performance.now()
const machine = { ...helpers.machine(), postgresJs: helpers.packageVersion('postgres'), mitata: helpers.packageVersion('mitata') }
const results = []
let cluster = null
try {
  const found = pgpool.findPgpool({ install: selected.includes('read-throughput') })
  machine.pgpool = found.version ?? null
  if (found.skipped) log(`pgpool-II: ${found.skipped}`)
  const foundHaproxy = haproxy.findHaproxy({ install: selected.includes('read-throughput') })
  machine.haproxy = foundHaproxy.version ?? null
  if (foundHaproxy.skipped) log(`HAProxy: ${foundHaproxy.skipped}`)

  if (selected.some((id) => !NO_CLUSTER.has(id))) {
    log('starting a local cluster (leader + 2 replicas) and seeding 2000 blogs…')
    cluster = await helpers.startCluster()
    const seeded = await helpers.seed(cluster.descriptor)
    machine.postgres = await serverVersion(cluster.descriptor.leader)
    machine.data = seeded
    log(`seeded: ${seeded.blogs} blogs, ${seeded.posts} posts, ${seeded.comments} comments`)
  }
  echo(chalk.bold(`pgfollow benchmarks${quick ? ' (quick)' : ''}`))
  echo(report.formatMachine(machine))

  for (const id of QUESTIONS.filter((q) => selected.includes(q))) {
    const module = await import(`../bench/${id}.mjs`)
    log(`\n${module.title}`)
    const questionStarted = performance.now()
    let result
    try {
      result = await module.measure({ cluster, quick, log })
    } catch (error) {
      console.error(chalk.red(error?.stack ?? String(error)))
      result = { id, title: module.title, error: error?.message ?? String(error) }
    }
    result.seconds = helpers.round((performance.now() - questionStarted) / 1000, 1)
    results.push(result)
    echo('\n' + report.formatResults([result]))
    write()
  }
} finally {
  await helpers.cleanupAll()
}
machine.loadAverageAtEnd = helpers.machine().loadAverage
write()
echo(
  chalk.dim(`\n${results.length} question(s) in ${((performance.now() - started) / 1000).toFixed(0)} s; results in ${relative(process.cwd(), out)}`),
)
process.exitCode = results.some((result) => result.error) ? 1 : 0

function write() {
  mkdirSync(dirname(out), { recursive: true })
  const document = { date: new Date().toISOString(), quick, machine, results }
  writeFileSync(out, JSON.stringify(document, null, 2) + '\n')
  writeFileSync(out.replace(/\.json$/, '') + '.md', `Machine: ${report.formatMachine(machine)}\n\n${report.formatResults(results)}\n`)
}

async function serverVersion(url) {
  const { default: postgres } = await import('postgres')
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  try {
    const [{ server_version }] = await sql`show server_version`
    return server_version
  } finally {
    await sql.end({ timeout: 5 })
  }
}

async function loadBench() {
  try {
    return await Promise.all([
      import('../bench/helpers.mjs'),
      import('../bench/report.mjs'),
      import('../bench/pgpool.mjs'),
      import('../bench/haproxy.mjs'),
    ])
  } catch (error) {
    if (error?.code === 'ERR_MODULE_NOT_FOUND' && /dist/.test(error.message)) {
      console.error(chalk.red('pgfollow is not built (no dist/): run `npm run build` first (`npm run bench` does it).'))
      process.exit(1)
    }
    throw error
  }
}
