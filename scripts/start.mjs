#!/usr/bin/env node
// `npm start`: the whole experiment on the embedded default cluster (run with
// `npx zx` or plain `node`):
//   start.mjs [--dir D] [--ports L,R1,R2] [load.mjs flags...]
// 1. cluster.mjs up (creates .pgfollow on 5432/5480/5490, or starts it),
// 2. migrate.mjs, 3. load.mjs for 30 s with the live line and a report,
// 4. lagcheck.mjs --once. Each step is the script an operator would run by
// hand; this file only sequences them. The cluster stays up afterwards.
import { join, resolve } from 'node:path'
import { $, chalk, echo, parseArgv } from 'zx'
import { loadLibrary } from './script-runner.mjs'

const USAGE = `Usage: npm start [-- [--dir D] [--ports L,R1,R2] [load.mjs flags]]

Runs the experiment end to end: the local cluster up (created on ports
5432, 5480, 5490 if needed), migrations, the proof of concept's load for
30 s with a live line, its summary, the SVG report (D/report.svg) and a lag
check. Ctrl-C stops the load cleanly; the cluster stays up either way
(\`npx zx scripts/lagcheck.mjs --watch\` to look at it, \`npm run stop\` to stop it).

  --dir D             cluster directory (default .pgfollow)
  --ports L,R1,R2     ports for a new cluster (default 5432,5480,5490)
  any other flag goes to load.mjs (default --duration 30s --report D/report.svg),
  e.g. npm start -- --duration 10s --readers 20 --consistency session`

const here = new URL('.', import.meta.url).pathname
const script = (name) => join(here, name)
const { ops } = await loadLibrary()
const { displayPath } = ops
const args = ops.scriptArgs(import.meta.url)
const argv = parseArgv(args, { string: ['dir', 'ports'], boolean: ['help', 'h'] })

if (argv.help || argv.h) {
  echo(USAGE)
  process.exit(0)
}

const dir = resolve(argv.dir === undefined ? '.pgfollow' : String(argv.dir))
const descriptor = join(dir, 'cluster.json')
const loadArgs = withoutClusterFlags(args)
if (!loadArgs.some((arg) => arg === '--duration' || arg.startsWith('--duration='))) loadArgs.push('--duration', '30s')
if (!loadArgs.some((arg) => arg === '--report' || arg.startsWith('--report='))) loadArgs.push('--report', join(dir, 'report.svg'))

// A terminal's Ctrl-C reaches every step by itself (same process group);
// a signal sent to this process alone is passed on as SIGTERM, which the
// steps treat like a first Ctrl-C. Either way: no new step starts.
let interrupted = false
let current = null
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    interrupted = true
    current?.kill('SIGTERM')
  })
}

const started = Date.now()
const run = async (title, file, fileArgs) => {
  echo(chalk.bold.cyan(`\n▶ ${title}`))
  current = $({ stdio: 'inherit', nothrow: true })`node ${script(file)} ${fileArgs}`
  const result = await current
  current = null
  return result.exitCode ?? 1
}

let code = await run('Cluster', 'cluster.mjs', ['up', '--dir', dir, ...(argv.ports === undefined ? [] : ['--ports', String(argv.ports)])])
if (code === 0 && !interrupted) code = await run('Migrations', 'migrate.mjs', ['--cluster', descriptor])
if (code === 0 && !interrupted) code = await run('Load (Ctrl-C to stop early)', 'load.mjs', ['--cluster', descriptor, ...loadArgs])
if (code === 0) await run('Replication lag now', 'lagcheck.mjs', ['--once', '--cluster', descriptor])

if (code === 0) {
  const shown = displayPath(dir)
  const isDefault = dir === resolve('.pgfollow')
  const hints = [
    [`npx zx scripts/lagcheck.mjs --watch${isDefault ? '' : ` --cluster ${displayPath(descriptor)}`}`, 'lag, live'],
    [`npx zx scripts/failover.mjs${isDefault ? '' : ` --dir ${shown}`}`, 'what if the leader goes down?'],
    [`npm run stop${isDefault ? '' : ` -- --dir ${shown}`}`, 'stop it (the data is kept)'],
  ]
  const width = Math.max(...hints.map(([command]) => command.length))
  echo(chalk.green(`\nDone in ${((Date.now() - started) / 1000).toFixed(0)} s. The cluster in ${shown} stays up:`))
  for (const [command, what] of hints) echo(`  ${command.padEnd(width)}  ${chalk.dim(what)}`)
}
process.exitCode = code

/** The arguments for load.mjs: everything but --dir, --ports and their values. */
function withoutClusterFlags(list) {
  const out = []
  for (let i = 0; i < list.length; i++) {
    if (list[i] === '--dir' || list[i] === '--ports') i++
    else if (!list[i].startsWith('--dir=') && !list[i].startsWith('--ports=')) out.push(list[i])
  }
  return out
}
