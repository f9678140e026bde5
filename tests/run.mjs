// The test runner behind `npm test`:
//   node tests/run.mjs [FILTER...] [--node-only | --deno-only] [--timeout SECONDS] [--jobs N]
// Runs every tests/*.test.mjs under Node, then the files marked `// @deno`
// (in their first 5 lines) under Deno. Each file starts its own PostgreSQL
// servers on free ports, so up to --jobs files (default 3) run at once: most
// of a file's time is spent waiting (for replay, timeouts, npm), not
// computing. A file whose assertions depend on timing (faults under load,
// failover windows) says `// @exclusive` in its first lines and runs with
// nothing else beside it. Each file is a plain uvu program; we read uvu's
// summary, because a failing `before` hook makes uvu report fewer passes and
// still exit 0. Output of a file that runs beside others is printed whole
// when it ends, so files never interleave.
// The last line is always `N passed, N failed`.
// pg_ctl starts each server in a session of its own, out of reach of the
// file's process group, so every file runs with a marker in its environment
// (servers inherit it) and whatever still carries it after the file ends is
// stopped by pid and counted as a failure: tests must stop what they start.
// A file that needs a system tool npm cannot install says so in its first
// lines, `// @needs COMMAND-OR-PATH how to get it`: where it is missing, the
// file is skipped with a line that says so, except on CI (CI=true), where
// .ci/run installs it and a missing tool fails. A test inside a file may print
// a line starting with `SKIPPED ` for the same reason; the summary repeats it.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { stripVTControlCharacters } from 'node:util'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const testsDir = join(root, 'tests')
const DENO_MARKER = '// @deno'
const EXCLUSIVE_MARKER = '// @exclusive'
const GRACE_MS = 5_000
const MARKER = 'PGFOLLOW_TEST_RUN'

const options = parseArgs(process.argv.slice(2))
const files = readdirSync(testsDir)
  .filter((name) => name.endsWith('.test.mjs'))
  .filter((name) => options.filters.length === 0 || options.filters.some((filter) => name.includes(filter)))
  .sort()
  .map((name) => join(testsDir, name))

const runs = [
  ...(options.deno ? [] : files.map((file) => ({ runtime: 'node', file, command: process.execPath, args: [file] }))),
  ...(options.node ? [] : files.filter(isDenoFile).map((file) => ({
    runtime: 'deno',
    file,
    command: join(root, 'node_modules', '.bin', 'deno'),
    args: ['run', '-A', file],
  }))),
]

/** Files running now: { child, marker } each. */
const running = new Set()
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, async () => {
    for (const current of running) {
      killGroup(current.child, 'SIGTERM')
      await stopLeftovers(current.marker)
    }
    process.exit(130)
  })
}

const results = await runAll(runs)

printSummary(results)
const passed = results.reduce((sum, result) => sum + result.passed, 0)
const failed = results.reduce((sum, result) => sum + result.failed, 0)
if (runs.length === 0) console.log(`No test files match ${options.filters.join(', ') || 'tests/*.test.mjs'}.`)
console.log(`${passed} passed, ${failed} failed`)
process.exitCode = failed > 0 || runs.length === 0 ? 1 : 0

function parseArgs(args) {
  const parsed = {
    filters: [],
    node: false,
    deno: false,
    timeoutSeconds: Number(process.env.PGFOLLOW_TEST_TIMEOUT || 240),
    jobs: Number(process.env.PGFOLLOW_TEST_JOBS || 3),
  }
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]
    if (arg === '--node-only') parsed.node = true
    else if (arg === '--deno-only') parsed.deno = true
    else if (arg === '--timeout') parsed.timeoutSeconds = Number(args[++i])
    else if (arg.startsWith('--timeout=')) parsed.timeoutSeconds = Number(arg.slice('--timeout='.length))
    else if (arg === '--jobs') parsed.jobs = Number(args[++i])
    else if (arg.startsWith('--jobs=')) parsed.jobs = Number(arg.slice('--jobs='.length))
    else if (arg.startsWith('-')) usage(`Unknown flag ${arg}.`)
    else parsed.filters.push(arg)
  }
  if (parsed.node && parsed.deno) usage('--node-only and --deno-only exclude each other.')
  if (!(parsed.timeoutSeconds > 0)) usage('--timeout takes a number of seconds.')
  if (!(Number.isInteger(parsed.jobs) && parsed.jobs > 0)) usage('--jobs takes a whole number of files to run at once, e.g. --jobs 1.')
  return parsed
}

function usage(message) {
  console.error(`${message}\nUsage: node tests/run.mjs [FILTER...] [--node-only | --deno-only] [--timeout SECONDS] [--jobs N]`)
  process.exit(2)
}

function isDenoFile(file) {
  return readFileSync(file, 'utf8').split('\n', 5).some((line) => line.trim() === DENO_MARKER)
}

function isExclusive(file) {
  return readFileSync(file, 'utf8').split('\n', 10).some((line) => line.trim() === EXCLUSIVE_MARKER)
}

/**
 * Runs the files in order, up to options.jobs at a time; an exclusive file
 * waits until nothing runs and holds the others back until it ends. Results
 * come back in the order of `runs`.
 */
async function runAll(runs) {
  const results = new Array(runs.length)
  const active = new Set()
  const waitForRoom = async (limit) => {
    while (active.size > limit) await Promise.race(active)
  }
  for (const [index, run] of runs.entries()) {
    const exclusive = options.jobs === 1 || isExclusive(run.file)
    await waitForRoom(exclusive ? 0 : options.jobs - 1)
    const done = runFile(run, index, { streamed: exclusive }).then((result) => {
      results[index] = result
      active.delete(done)
    })
    active.add(done)
    if (exclusive) await done
  }
  await Promise.all(active)
  return results
}

/** The `// @needs` lines of a file whose tool is missing here: [{ tool, how }]. */
function missingNeeds(file) {
  return readFileSync(file, 'utf8').split('\n', 10)
    .map((line) => line.match(/^\/\/ @needs (\S+)\s*(.*)$/))
    .filter(Boolean)
    .map(([, tool, how]) => ({ tool, how }))
    .filter(({ tool }) => tool.startsWith('/') ? !existsSync(tool) : spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0)
}

/**
 * Runs one file in its own process group, so a timeout ends it and
 * everything it spawned. A file running alone streams its output; one
 * beside others prints it whole at its end.
 */
function runFile(run, index, { streamed }) {
  const name = relative(root, run.file)
  const runId = `${process.pid}.${index}`
  const marker = `${MARKER}=${runId}`
  const header = `\n▶ ${run.runtime} ${name}`
  if (streamed) console.log(header)
  const started = performance.now()
  const missing = missingNeeds(run.file)
  if (missing.length > 0) {
    const what = missing.map(({ tool, how }) => `${tool} (${how})`).join(', ')
    if (!streamed) console.log(header)
    if (process.env.CI === 'true') {
      console.error(`✘ ${name} needs ${what}: on CI, .ci/run must install it.`)
      return Promise.resolve({ ...run, name, seconds: 0, passed: 0, failed: 1, skipped: 0, note: `missing ${what}`, skips: [] })
    }
    const line = `SKIPPED ${name} (${run.runtime}): needs ${what}; install it and run \`node tests/run.mjs ${
      name.replace(/^tests\/|\.test\.mjs$/g, '')
    }\``
    console.log(line)
    return Promise.resolve({ ...run, name, seconds: 0, passed: 0, failed: 0, skipped: 1, note: 'skipped', skips: [line] })
  }
  return new Promise((resolvePromise) => {
    const child = spawn(run.command, run.args, {
      cwd: root,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, DENO_NO_UPDATE_CHECK: '1', [MARKER]: runId },
    })
    const current = { child, marker }
    running.add(current)
    let output = ''
    child.stdout.on('data', (chunk) => {
      output += chunk
      if (streamed) process.stdout.write(chunk)
    })
    child.stderr.on('data', (chunk) => {
      output += chunk
      if (streamed) process.stderr.write(chunk)
    })
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      console.error(`\n✘ ${name} (${run.runtime}) ran longer than ${options.timeoutSeconds} s: stopping its process group.`)
      killGroup(child, 'SIGTERM')
      setTimeout(() => killGroup(child, 'SIGKILL'), GRACE_MS).unref()
    }, options.timeoutSeconds * 1000)
    let finished = false
    const finish = async (code, spawnError) => {
      if (finished) return
      finished = true
      clearTimeout(timer)
      running.delete(current)
      if (!streamed) process.stdout.write(`${header}\n${output}`)
      const seconds = (performance.now() - started) / 1000
      const result = { ...run, name, seconds, ...judge(output, code, timedOut, spawnError) }
      const left = await stopLeftovers(marker)
      if (left.length > 0) {
        console.error(`✘ ${name} (${run.runtime}) left ${left.length} process(es) running: ${left.join('; ')}. Stopped them.`)
        result.failed += 1
        result.note = [result.note, 'left processes running'].filter(Boolean).join('; ')
      }
      const mark = result.failed > 0 ? '✘' : '✔'
      console.log(
        `${mark} ${name} (${run.runtime}): ${result.passed} passed, ${result.failed} failed, ${result.skipped} skipped in ${seconds.toFixed(1)} s${
          result.note ? ` (${result.note})` : ''
        }`,
      )
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
  const skips = [...text.matchAll(/^\s*(SKIPPED .*)$/gm)].map((match) => match[1])
  if (total === null || passed === null) {
    return { passed: 0, failed: 1, skipped: 0, skips, note: timedOut ? 'timed out' : `no uvu summary, exit code ${code}` }
  }
  let failed = total - passed
  let note = ''
  if (timedOut) note = 'timed out'
  else if (code !== 0 && failed === 0) note = `exit code ${code} after its tests passed`
  if ((timedOut || code !== 0) && failed === 0) failed = 1
  return { passed, failed, skipped: skipped + skips.length, skips, note }
}

/**
 * Processes whose environment carries this file's marker: its servers (and
 * anything else it detached). Postmasters get an immediate shutdown, which
 * ends their backends too; whatever is still there after the grace is killed.
 */
async function stopLeftovers(marker) {
  const found = markedProcesses(marker)
  if (found.length === 0) return []
  for (const { pid, command } of found) sendSignal(pid, command === 'postgres' ? 'SIGQUIT' : 'SIGKILL')
  const deadline = Date.now() + GRACE_MS
  while (markedProcesses(marker).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  for (const { pid } of markedProcesses(marker)) sendSignal(pid, 'SIGKILL')
  return found.map(({ pid, args }) => `${pid} ${args}`.slice(0, 160))
}

function markedProcesses(marker) {
  if (process.platform !== 'linux') return []
  const found = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue
    try {
      if (!readFileSync(`/proc/${entry}/environ`, 'latin1').split('\0').includes(marker)) continue
      const stat = readFileSync(`/proc/${entry}/stat`, 'latin1')
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
      if (state === 'Z' || state === 'X') continue // exited, waiting to be reaped
      const args = readFileSync(`/proc/${entry}/cmdline`, 'latin1').split('\0').filter(Boolean)
      // Backends have a postmaster parent that the immediate shutdown ends; only postmasters are signalled.
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      const command = args[0]?.split('/').pop() ?? ''
      if (command.startsWith('postgres:') || (command === 'postgres' && isMarked(parent, marker))) continue
      found.push({ pid: Number(entry), command, args: args.join(' ') })
    } catch {
      // gone, or not ours to read
    }
  }
  return found
}

function isMarked(pid, marker) {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(marker)
  } catch {
    return false
  }
}

function sendSignal(pid, name) {
  try {
    process.kill(pid, name)
  } catch {
    // already gone
  }
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
  const skips = results.flatMap((result) => result.skips ?? [])
  if (skips.length > 0) console.log(`\nNot run here (CI runs them):\n${skips.map((line) => `  ${line}`).join('\n')}`)
}
