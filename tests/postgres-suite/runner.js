// Drop-in for postgres.js's tests/test.js (same `t`, `nt`, `ot`, `t.timeout`
// and the same pass rule: a test returns [expected, got] and passes when
// they are ===). Unlike the original, a failure does not skip every later
// test: each one runs and is recorded, so the three runs can be compared
// test by test. Results go to the JSON file named by PGJS_SUITE_RESULT.
import { writeFileSync } from 'node:fs'
import process from 'node:process'
import util from 'node:util'
import { exec } from './bootstrap.js'

// What the suite's tests create and drop again when they pass: after a
// failure they are removed here, so one failure does not fail the tests
// after it with "already exists" (the original runner stops instead).
const LEFTOVERS = [
  "set lock_timeout = '5s'",
  'drop table if exists test, tester, students, x, users, a cascade',
  'drop schema if exists a cascade',
  'drop publication if exists alltables',
].join('; ')

const tests = []
const stray = []
let only = false
let ignored = 0
let done = 0
let chain = Promise.resolve()

export const nt = () => ignored++
export const ot = (...rest) => ((only = true), test(true, ...rest))
export const t = (...rest) => test(false, ...rest)
t.timeout = 5

// A test's leftovers (a rejected query nobody awaited) must not end the run.
process.on('unhandledRejection', (error) => stray.push(describe(error)))
process.on('uncaughtException', (error) => stray.push(describe(error)))

async function test(isOnly, name, options, fn) {
  if (typeof options !== 'object') [fn, options] = [options, {}]
  await 1
  if (only && !isOnly) return
  const entry = { name, status: 'never finished' }
  tests.push(entry)
  chain = chain.then(() => run(entry, fn, (options.timeout || t.timeout) * 1000)).then(() => {
    if (++done === tests.length) finish()
  })
}

async function run(entry, fn, timeoutMs) {
  let timer
  const timeout = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('Timed out')), timeoutMs)))
  const started = performance.now()
  try {
    const result = await Promise.race([timeout, fn()])
    if (!Array.isArray(result)) throw new Error('Test should return result array')
    const [expected, got] = await Promise.race([timeout, Promise.all(result)])
    if (expected !== got) throw new Error(util.inspect(expected) + ' != ' + util.inspect(got))
    entry.status = 'passed'
  } catch (error) {
    entry.status = 'failed'
    entry.error = describe(error)
    try {
      exec('psql', ['-d', 'postgres_js_test', '-c', LEFTOVERS])
    } catch (cleanupError) {
      entry.cleanup = describe(cleanupError)
    }
  } finally {
    clearTimeout(timer)
    entry.ms = Math.round(performance.now() - started)
  }
}

function describe(error) {
  const text = error instanceof Error ? `${error.code ? `[${error.code}] ` : ''}${error.message}` : util.inspect(error)
  return text.slice(0, 400)
}

function finish() {
  const file = process.env.PGJS_SUITE_RESULT
  const summary = { tests, ignored, only, stray }
  if (file) writeFileSync(file, JSON.stringify(summary, null, 2))
  // Pools a test left open (and the tag's health monitor) would keep the process alive.
  setTimeout(() => process.exit(0), 100)
}
