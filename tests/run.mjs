// The test runner behind `npm test`:
//   node tests/run.mjs [FILTER...] [--node-only | --deno-only] [--timeout SECONDS]
// Runs every tests/*.test.mjs under Node, then the files marked `// @deno`
// (in their first 5 lines) under Deno, one at a time: each file starts its
// own PostgreSQL servers and these machines have two cores. Each file is a
// plain uvu program; we stream its output and read uvu's summary, because a
// failing `before` hook makes uvu report fewer passes and still exit 0.
// The last line is always `N passed, N failed`.
import { spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { stripVTControlCharacters } from 'node:util'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const testsDir = join(root, 'tests')
const DENO_MARKER = '// @deno'
const GRACE_MS = 5_000

const options = parseArgs(process.argv.slice(2))
const files = readdirSync(testsDir)
  .filter((name) => name.endsWith('.test.mjs'))
  .filter((name) => options.filters.length === 0 || options.filters.some((filter) => name.includes(filter)))
  .sort()
  .map((name) => join(testsDir, name))

const runs = [
  ...(options.deno ? [] : files.map((file) => ({ runtime: 'node', file, command: process.execPath, args: [file] }))),
  ...(options.node
    ? []
    : files.filter(isDenoFile).map((file) => ({ runtime: 'deno', file, command: join(root, 'node_modules', '.bin', 'deno'), args: ['run', '-A', file] }))),
]

let current = null
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (current) killGroup(current, 'SIGTERM')
    process.exit(130)
  })
}

const results = []
for (const run of runs) results.push(await runFile(run))

printSummary(results)
const passed = results.reduce((sum, result) => sum + result.passed, 0)
const failed = results.reduce((sum, result) => sum + result.failed, 0)
if (runs.length === 0) console.log(`No test files match ${options.filters.join(', ') || 'tests/*.test.mjs'}.`)
console.log(`${passed} passed, ${failed} failed`)
process.exitCode = failed > 0 || runs.length === 0 ? 1 : 0

function parseArgs(args) {
  const parsed = { filters: [], node: false, deno: false, timeoutSeconds: Number(process.env.PGFOLLOW_TEST_TIMEOUT || 240) }
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]
    if (arg === '--node-only') parsed.node = true
    else if (arg === '--deno-only') parsed.deno = true
    else if (arg === '--timeout') parsed.timeoutSeconds = Number(args[++i])
    else if (arg.startsWith('--timeout=')) parsed.timeoutSeconds = Number(arg.slice('--timeout='.length))
    else if (arg.startsWith('-')) usage(`Unknown flag ${arg}.`)
    else parsed.filters.push(arg)
  }
  if (parsed.node && parsed.deno) usage('--node-only and --deno-only exclude each other.')
  if (!(parsed.timeoutSeconds > 0)) usage('--timeout takes a number of seconds.')
  return parsed
}

function usage(message) {
  console.error(`${message}\nUsage: node tests/run.mjs [FILTER...] [--node-only | --deno-only] [--timeout SECONDS]`)
  process.exit(2)
}

function isDenoFile(file) {
  return readFileSync(file, 'utf8').split('\n', 5).some((line) => line.trim() === DENO_MARKER)
}

/** Runs one file in its own process group, so a timeout ends it and everything it spawned. */
function runFile(run) {
  const name = relative(root, run.file)
  console.log(`\n▶ ${run.runtime} ${name}`)
  const started = performance.now()
  return new Promise((resolvePromise) => {
    const child = spawn(run.command, run.args, {
      cwd: root,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, DENO_NO_UPDATE_CHECK: '1' },
    })
    current = child
    let output = ''
    child.stdout.on('data', (chunk) => {
      output += chunk
      process.stdout.write(chunk)
    })
    child.stderr.on('data', (chunk) => {
      output += chunk
      process.stderr.write(chunk)
    })
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      console.error(`\n✘ ${name} (${run.runtime}) ran longer than ${options.timeoutSeconds} s: stopping its process group.`)
      killGroup(child, 'SIGTERM')
      setTimeout(() => killGroup(child, 'SIGKILL'), GRACE_MS).unref()
    }, options.timeoutSeconds * 1000)
    const finish = (code, spawnError) => {
      clearTimeout(timer)
      current = null
      const seconds = (performance.now() - started) / 1000
      const result = { ...run, name, seconds, ...judge(output, code, timedOut, spawnError) }
      const mark = result.failed > 0 ? '✘' : '✔'
      console.log(`${mark} ${name} (${run.runtime}): ${result.passed} passed, ${result.failed} failed, ${result.skipped} skipped in ${seconds.toFixed(1)} s${result.note ? ` (${result.note})` : ''}`)
      resolvePromise(result)
    }
    child.on('error', (error) => finish(null, error))
    child.on('close', (code, signal) => finish(code ?? (signal ? 128 : 1)))
  })
}

/** Counts from uvu's summary; a crash, a timeout or a missing summary is a failure. */
function judge(output, code, timedOut, spawnError) {
  if (spawnError) return { passed: 0, failed: 1, skipped: 0, note: `could not start: ${spawnError.message}` }
  const text = stripVTControlCharacters(output)
  const last = (label) => {
    const matches = [...text.matchAll(new RegExp(`^\\s*${label}:\\s+(\\d+)\\s*$`, 'gm'))]
    return matches.length > 0 ? Number(matches[matches.length - 1][1]) : null
  }
  const total = last('Total')
  const passed = last('Passed')
  const skipped = last('Skipped') ?? 0
  if (total === null || passed === null) return { passed: 0, failed: 1, skipped: 0, note: timedOut ? 'timed out' : `no uvu summary, exit code ${code}` }
  let failed = total - passed
  let note = ''
  if (timedOut) note = 'timed out'
  else if (code !== 0 && failed === 0) note = `exit code ${code} after its tests passed`
  if ((timedOut || code !== 0) && failed === 0) failed = 1
  return { passed, failed, skipped, note }
}

function killGroup(child, signal) {
  try {
    process.kill(-child.pid, signal)
  } catch {
    // already gone
  }
}

function printSummary(results) {
  if (results.length === 0) return
  console.log('\nFile                                   Runtime  Passed  Failed  Skipped  Seconds')
  for (const result of results) {
    console.log(
      [
        result.name.padEnd(38),
        result.runtime.padEnd(7),
        String(result.passed).padStart(6),
        String(result.failed).padStart(6),
        String(result.skipped).padStart(7),
        result.seconds.toFixed(1).padStart(8),
      ].join('  '),
    )
  }
  const seconds = results.reduce((sum, result) => sum + result.seconds, 0)
  console.log(`Total time ${seconds.toFixed(1)} s`)
}
