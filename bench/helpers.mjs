// What every bench file shares: a throw-away local cluster, seeding, the
// throughput harness, statistics, mitata rounds and cleanup on exit. Each
// bench file answers one question with `export async function measure(ctx)`;
// scripts/bench.mjs runs them all on one cluster, and `node bench/FILE.mjs`
// runs one on its own cluster.
import { execFileSync, spawn } from 'node:child_process'
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import process from 'node:process'
import { percentile } from 'pgfollow/ops'
import { constants as perfConstants, PerformanceObserver } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { run } from 'mitata'
import postgres from 'postgres'
import { parseLsn } from 'pgfollow'
import { seededRandom, waitForReplay, writeBlog } from 'pgfollow/ops'
import { destroy, freePorts, nodePaths, nodePid, up } from 'pgfollow/cluster'

// -----------------------------------------------------------------------------
// Cleanup: every cluster, pgpool and child we start is stopped by its pid,
// on the normal path and on Ctrl-C alike.

const cleanups = new Set()

/** Registers an async stop function; returns a function that runs it once and unregisters it. */
export function onCleanup(stop) {
  let done = null
  const once = () => {
    cleanups.delete(once)
    done ??= Promise.resolve().then(stop)
    return done
  }
  cleanups.add(once)
  return once
}

export async function cleanupAll() {
  // Newest first: pgpool before the cluster it fronts.
  for (const stop of [...cleanups].reverse()) await stop().catch((error) => console.error(`cleanup: ${error.message}`))
}

let signalled = false
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    if (signalled) process.exit(130)
    signalled = true
    console.error(`\n${signal}: stopping what the bench started…`)
    cleanupAll().finally(() => process.exit(130))
  })
}

// -----------------------------------------------------------------------------
// Cluster

/** Settings of every bench cluster: room for pgpool's 100+ children on each node. */
export const BENCH_SETTINGS = { max_connections: '300' }

/**
 * A leader and `replicas` streaming replicas in a temp dir on free ports,
 * migrated. The parent dir is opened (755) because as root the servers run
 * as an unprivileged user that must reach its data dir.
 */
export async function startCluster({ replicas = 2, settings = {}, migrate = true } = {}) {
  const parent = mkdtempSync(join(os.tmpdir(), 'pgfollow-bench-'))
  chmodSync(parent, 0o755)
  const dir = join(parent, 'cluster')
  const removeDir = () => rmSync(parent, { recursive: true, force: true })
  const stop = onCleanup(async () => {
    await destroy(dir).catch(() => {})
    removeDir()
  })
  const ports = await freePorts(replicas + 1)
  try {
    const result = await up({ dir, ports, replicas, migrate, settings: { ...BENCH_SETTINGS, ...settings } })
    return {
      dir,
      parent,
      ports,
      descriptor: result.descriptor,
      pid: (name) => nodePid(dir, name),
      dataDir: (name) => nodePaths(dir, name).dataDir,
      stop,
    }
  } catch (error) {
    await stop()
    throw error
  }
}

/**
 * Seeds the blog model with the load script's writer (seeded, so every run
 * reads the same data) up to `blogs` blogs (about 3 posts and 7 comments
 * each: pages at offsets up to 1000 all return rows), then waits until the
 * replicas have replayed it.
 */
export async function seed(descriptor, { blogs = 2000, writers = 4, seedValue = 20240601 } = {}) {
  const leader = postgres(descriptor.leader, { max: writers, onnotice: () => {} })
  try {
    const [{ count }] = await leader`select count(*)::int as count from blogs`
    let started = count
    let written = 0
    const random = seededRandom(seedValue)
    await Promise.all(
      Array.from({ length: writers }, async () => {
        while (started < blogs) {
          started++
          await writeBlog(leader, random)
          written++
        }
      }),
    )
    await leader`analyze`
    const [{ lsn }] = await leader`select pg_current_wal_lsn()::text as lsn`
    await waitForReplay(descriptor.replicas, parseLsn(lsn), 60_000)
    const [totals] =
      await leader`select (select count(*) from blogs)::int as blogs, (select count(*) from posts)::int as posts, (select count(*) from comments)::int as comments`
    return { written, ...totals }
  } finally {
    await leader.end({ timeout: 5 })
  }
}

// -----------------------------------------------------------------------------
// Statistics

export function median(values) {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b)
  if (sorted.length === 0) return NaN
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/** Nearest-rank percentile of an ascending array: the toolkit's, which the scripts use too. */
export { percentile }

/** Latencies (ms) → p50/p90/p99/max, sorting a copy. */
export function latencySummary(latencies) {
  const sorted = Float64Array.from(latencies).sort()
  return {
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1] : NaN,
    count: sorted.length,
  }
}

/** Median of each numeric field over repeated results; `runs` keeps the raw values. */
export function medianOf(results, fields) {
  const out = { runs: results.length }
  for (const field of fields) out[field] = median(results.map((result) => result[field]))
  out.samples = Object.fromEntries(fields.map((field) => [field, results.map((result) => round(result[field], 3))]))
  return out
}

export function round(value, digits = 2) {
  if (!Number.isFinite(value)) return value
  const f = 10 ** digits
  return Math.round(value * f) / f
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// -----------------------------------------------------------------------------
// Throughput harness

const THROUGHPUT_CHILD = fileURLToPath(new URL('./throughput-child.mjs', import.meta.url))

/**
 * `readers` concurrent loops call `read()` as fast as it answers. Nothing is
 * counted during the warm-up; then for `durationMs` every completed read is
 * counted and its latency (ms) kept. A failed read counts as an error, not a read.
 */
export async function throughput({ readers, warmupMs, durationMs, read, windowMs = 0 }) {
  const latencies = []
  // Reads/s per window of `windowMs` (when given): does a run keep its pace?
  const windows = []
  let counting = false
  let stopped = false
  let reads = 0
  let errors = 0
  let firstError = null
  const loop = async () => {
    while (!stopped) {
      const start = performance.now()
      try {
        await read()
        if (counting) {
          latencies.push(performance.now() - start)
          reads++
        }
      } catch (error) {
        if (counting) errors++
        firstError ??= error
        await sleep(1)
      }
    }
  }
  // Full (mark-compact) collections while counting: a run that keeps promoting short-lived objects shows here.
  let majorGcs = 0
  const gcObserver = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) if (counting && entry.detail?.kind !== perfConstants.NODE_PERFORMANCE_GC_MINOR) majorGcs++
  })
  gcObserver.observe({ entryTypes: ['gc'] })
  const loops = Array.from({ length: readers }, loop)
  await sleep(warmupMs)
  counting = true
  const started = performance.now()
  const cpuStarted = process.cpuUsage()
  if (windowMs > 0) {
    for (let at = 0; at < durationMs; at += windowMs) {
      const before = reads
      const windowStarted = performance.now()
      await sleep(Math.min(windowMs, durationMs - at))
      windows.push(round((reads - before) / ((performance.now() - windowStarted) / 1000), 0))
    }
  } else {
    await sleep(durationMs)
  }
  counting = false
  const cpu = process.cpuUsage(cpuStarted)
  const seconds = (performance.now() - started) / 1000
  stopped = true
  await Promise.all(loops)
  gcObserver.disconnect()
  const summary = latencySummary(latencies)
  // Client CPU per read (this process only: user + system µs): what the client side costs, whatever the neighbours do.
  const cpuUsPerRead = (cpu.user + cpu.system) / Math.max(1, reads)
  return {
    readsPerSecond: reads / seconds,
    reads,
    errors,
    p50: summary.p50,
    p99: summary.p99,
    max: summary.max,
    cpuUsPerRead,
    majorGcs,
    windows,
    firstError: firstError?.message ?? null,
  }
}

/**
 * Runs every variant `repeats` times, interleaved (A B C, B C A, …) so that a
 * noisy neighbour hurts every variant alike, and reports medians per variant.
 * A variant is `{ name, setup }`: each run is a fresh Node process
 * (throughput-child.mjs) that calls `openVariant(name, setup)` from `module`
 * (the bench file's URL; `setup` must survive JSON) and resolves with
 * `{ read, close }`. A process per run means fresh pools (postgres.js 3.4.9
 * pools age, BENCHMARKS.md) and, above all, a fresh JIT: in one process the
 * variant measured second inherits code V8 optimised for the first.
 */
export async function compareThroughput(variants, { module, repeats, readers, warmupMs, durationMs, windowMs = 0, cpuOf = {}, log = () => {} }) {
  const results = new Map(variants.map((variant) => [variant.name, []]))
  for (let round = 0; round < repeats; round++) {
    for (let i = 0; i < variants.length; i++) {
      const variant = variants[(i + round) % variants.length]
      const spec = { module, variant: variant.name, setup: variant.setup ?? {}, readers, warmupMs, durationMs, windowMs }
      const before = Object.fromEntries(Object.entries(cpuOf).map(([name, read]) => [name, read()]))
      const result = await runNodeJson(THROUGHPUT_CHILD, [], { env: { PGFOLLOW_BENCH_RUN: JSON.stringify(spec) } })
      // Other processes' CPU (servers, pgpool) per read, over the whole run: reads are counted
      // only after the warm-up, so scale them to the run's length (connecting and closing are in too).
      const readsInRun = result.reads * (warmupMs + durationMs) / durationMs
      for (const [name, read] of Object.entries(cpuOf)) {
        const after = read()
        result[`${name}CpuUsPerRead`] = before[name] === null || after === null ? null : ((after - before[name]) * 1e6) / readsInRun
      }
      log(
        `  ${variant.name} run ${round + 1}/${repeats}: ${result.readsPerSecond.toFixed(0)} reads/s, p50 ${result.p50.toFixed(2)} ms, p99 ${
          result.p99.toFixed(2)
        } ms, client CPU ${result.cpuUsPerRead.toFixed(1)} µs/read, ${result.majorGcs} major GCs${
          result.errors ? `, ${result.errors} errors (${result.firstError})` : ''
        }`,
      )
      results.get(variant.name).push(result)
    }
  }
  const summary = Object.fromEntries(
    variants.map((variant) => {
      const runs = results.get(variant.name)
      return [variant.name, {
        ...medianOf(runs, [
          'readsPerSecond',
          'p50',
          'p99',
          'max',
          'errors',
          'cpuUsPerRead',
          'majorGcs',
          ...Object.keys(cpuOf).map((name) => `${name}CpuUsPerRead`),
        ]),
        firstError: runs.find((r) => r.firstError)?.firstError ?? null,
        windows: runs.map((r) => r.windows),
        // What each run's close() reported (per-replica shares and the like), in run order.
        extras: runs.map((r) => r.extra),
      }]
    }),
  )
  // Round r of every variant ran back to back: pair them for ratios.
  const perRound = Array.from(
    { length: repeats },
    (_, r) => Object.fromEntries(variants.map((variant) => [variant.name, results.get(variant.name)[r]])),
  )
  return Object.defineProperty(summary, 'perRound', { value: perRound, enumerable: false })
}

// -----------------------------------------------------------------------------
// mitata

/**
 * Registers benchmarks with `register(round)` and runs mitata `rounds`
 * times with `format: 'json'`, keeping per round and benchmark name mitata's
 * avg, p50 and p99 (ns). Several rounds with the order flipped each time
 * resist a noisy neighbour better than one long run; compare variants with
 * `pairedRatio`, which pairs them within a round.
 */
export async function mitataRounds(rounds, register, { log = () => {} } = {}) {
  const perRound = []
  for (let r = 0; r < rounds; r++) {
    register(r)
    let json = ''
    await run({ format: 'json', print: (text) => (json += text) })
    const { benchmarks } = JSON.parse(json)
    const stats = {}
    for (const trial of benchmarks) {
      for (const one of trial.runs) {
        if (one.error) throw new Error(`${one.name}: ${one.error.message ?? one.error}`)
        stats[one.name] = { avg: one.stats.avg, p50: one.stats.p50, p99: one.stats.p99, samples: one.stats.samples?.length ?? one.stats.ticks }
      }
    }
    log(`  round ${r + 1}/${rounds}: ${Object.entries(stats).map(([name, s]) => `${name} p50 ${formatNs(s.p50)}`).join(', ')}`)
    perRound.push(stats)
  }
  const names = Object.keys(perRound[0])
  const stats = Object.fromEntries(
    names.map((name) => [
      name,
      {
        avgNs: median(perRound.map((round) => round[name].avg)),
        p50Ns: median(perRound.map((round) => round[name].p50)),
        p99Ns: median(perRound.map((round) => round[name].p99)),
        roundsP50Ns: perRound.map((round) => round[name].p50),
      },
    ]),
  )
  return { stats, perRound }
}

/**
 * Serial latency by strict alternation: call i runs every variant once, in
 * reversed order on odd i, so all variants see the same neighbours within
 * microseconds of each other. On a shared machine this is the steadier
 * estimate of a ratio; mitata's rounds measure each variant for ~0.7 s in
 * turn. Returns p50/p99 (µs) per variant name.
 */
export async function alternate(variants, { calls }) {
  const latencies = variants.map(() => new Float64Array(calls))
  for (let i = 0; i < calls; i++) {
    for (let j = 0; j < variants.length; j++) {
      const k = i % 2 ? variants.length - 1 - j : j
      const started = performance.now()
      await variants[k].call()
      latencies[k][i] = (performance.now() - started) * 1000
    }
  }
  return Object.fromEntries(
    variants.map((variant, k) => {
      const sorted = latencies[k].sort()
      return [variant.name, { p50Us: percentile(sorted, 50), p99Us: percentile(sorted, 99), calls }]
    }),
  )
}

/** Median over rounds of candidate/baseline for one field, each pair taken from the same round. */
export function pairedRatio(perRound, baseline, candidate, field) {
  return median(perRound.map((round) => round[candidate][field] / round[baseline][field]))
}

export function formatNs(ns) {
  if (!Number.isFinite(ns)) return String(ns)
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(2)} ms`
  if (ns >= 1e3) return `${(ns / 1e3).toFixed(1)} µs`
  return `${ns.toFixed(0)} ns`
}

// -----------------------------------------------------------------------------
// Machine and child processes

export function machine() {
  const cpus = os.cpus()
  return {
    cores: cpus.length,
    cpu: cpus[0]?.model ?? 'unknown',
    memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    node: process.version,
    os: `${os.type()} ${os.release()}`,
    loadAverage: os.loadavg().map((v) => round(v, 2)),
  }
}

/** The version of an installed npm package, read from its package.json. */
export function packageVersion(name) {
  try {
    let dir = dirname(fileURLToPath(import.meta.resolve(name)))
    while (dir !== dirname(dir)) {
      const file = join(dir, 'package.json')
      if (existsSync(file)) {
        const pkg = JSON.parse(readFileSync(file, 'utf8'))
        if (pkg.name === name) return pkg.version
      }
      dir = dirname(dir)
    }
  } catch {
    // not installed
  }
  return null
}

/** Runs `node script args` and resolves with its last stdout line parsed as JSON. */
export function runNodeJson(script, args = [], { env } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--expose-gc', script, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
    const stop = onCleanup(() => {
      if (child.exitCode === null) child.kill('SIGTERM')
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (chunk) => (out += chunk))
    child.stderr.on('data', (chunk) => (err += chunk))
    child.on('error', reject)
    child.on('close', (code) => {
      stop()
      const last = out.trim().split('\n').pop()
      if (code !== 0) return reject(new Error(`${script} exited ${code}: ${err.trim() || out.trim()}`))
      try {
        resolve(JSON.parse(last))
      } catch {
        reject(new Error(`${script} printed no JSON: ${out.trim()} ${err.trim()}`))
      }
    })
  })
}

let clockTicks = null

/**
 * CPU seconds a process and all its descendants have used so far, those
 * still running and those already reaped (from /proc, so Linux only; null
 * elsewhere or when the process is gone).
 */
export function processTreeCpuSeconds(pid) {
  clockTicks ??= clockTicksPerSecond()
  const ticks = treeTicks(pid)
  return ticks === null ? null : ticks / clockTicks
}

function treeTicks(pid) {
  let stat
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  // Fields after the command name (which may hold spaces): utime, stime, cutime, cstime are the 12th to 15th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  let ticks = Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])
  for (const child of childPids(pid)) ticks += treeTicks(child) ?? 0
  return ticks
}

function clockTicksPerSecond() {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })) || 100
  } catch {
    return 100 // Linux's usual USER_HZ
  }
}

/** The child pids of a process (from /proc), for renice and the like. */
export function childPids(pid) {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  } catch {
    return []
  }
}

// -----------------------------------------------------------------------------
// Running one bench file on its own

/** Whether the module at `url` is the program node was started with. */
export function isMain(url) {
  return process.argv[1] && fileURLToPath(url) === process.argv[1]
}

/**
 * `node bench/FILE.mjs [--quick] [--cluster FILE]`: one question, on a
 * cluster of its own (or on the descriptor FILE names, seeded if needed, for
 * the questions that only read), JSON on stdout, progress on stderr.
 */
export async function standalone(measure, { cluster: needs = 'local' } = {}) {
  const args = process.argv.slice(2)
  const quick = args.includes('--quick')
  const clusterFile = args.includes('--cluster') ? args[args.indexOf('--cluster') + 1] : null
  let cluster = null
  try {
    if (clusterFile && needs === 'any') {
      cluster = { descriptor: JSON.parse(readFileSync(clusterFile, 'utf8')) }
      await seed(cluster.descriptor)
    } else if (needs !== 'none') {
      if (clusterFile) console.error(`${clusterFile} is not used: this question writes to or bends a replica, so it starts a cluster of its own.`)
      cluster = await startCluster()
      await seed(cluster.descriptor)
    }
    const result = await measure({ cluster, quick, log: (line) => console.error(line) })
    console.log(JSON.stringify(result, null, 2))
  } finally {
    await cleanupAll()
  }
}
