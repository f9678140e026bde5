// Does the tag keep its reads/s in an app that installed it from npm?
// postgres.js 3.4.9's pool queue slows down as a saturated pool ages
// (bench/pool-aging.mjs); the fix must live in pgfollow, since its users get
// an unpatched postgres.js. This packs the repository, installs the tarball
// into a fresh temp app (install scripts on, as a user would), starts a local
// cluster, and runs N readers through the installed tag for D seconds in that
// app. It prints reads/s of the first and the last 10 s; the run passes when
// the last is within 10 % of the first.
//   node bench/consumer-decay.mjs [--duration 60] [--readers 100]   (after npm run build)
// Not in `npm run bench`'s list: it packs and installs, and takes a minute
// and a half; not a test: its verdict depends on a quiet machine.
import { execFile, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { cleanupAll, startCluster } from './helpers.mjs'

const WINDOW_S = 10
const TOLERANCE = 0.1
const root = fileURLToPath(new URL('..', import.meta.url))
const run = promisify(execFile)

const args = process.argv.slice(2)
const flag = (name, fallback) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback)
const durationS = flag('--duration', 60)
const readers = flag('--readers', 100)
if (!(durationS >= 2 * WINDOW_S) || !(readers >= 1)) {
  console.error(`--duration takes seconds (at least ${2 * WINDOW_S}) and --readers a count (at least 1).`)
  process.exit(2)
}

// The app's own program: only what the installed package offers.
const CONSUMER = `import { connect } from 'pgfollow'
const { descriptor, readers, durationS } = JSON.parse(process.env.BENCH)
const sql = connect({ ...descriptor, postgres: { max: 10 } })
const perSecond = []
let reads = 0
let running = true
const loops = Array.from({ length: readers }, async () => {
  while (running) {
    await sql\`select 1\`
    reads++
  }
})
for (let s = 0; s < durationS; s++) {
  const before = reads
  await new Promise((resolve) => setTimeout(resolve, 1000))
  perSecond.push(reads - before)
  process.stderr.write(\`  \${s + 1} s  \${reads - before} reads/s\\n\`)
}
running = false
await Promise.all(loops)
await sql.end()
console.log(JSON.stringify({ perSecond }))
`

const work = mkdtempSync(join(tmpdir(), 'pgfollow-consumer-'))
try {
  console.error('packing the repository (dist/ as built) and installing it into a fresh app')
  const packed = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: root, maxBuffer: 16 << 20 })
  const tarball = join(work, JSON.parse(packed.stdout.slice(packed.stdout.indexOf('[')))[0].filename)
  const app = join(work, 'app')
  mkdirSync(app)
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], { cwd: app })
  writeFileSync(join(app, 'main.mjs'), CONSUMER)

  console.error('starting a leader and one replica')
  const cluster = await startCluster({ replicas: 1, migrate: false })
  console.error(`${readers} readers for ${durationS} s through the installed tag`)
  const child = spawn(process.execPath, ['main.mjs'], {
    cwd: app,
    env: { ...process.env, BENCH: JSON.stringify({ descriptor: cluster.descriptor, readers, durationS }) },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let stdout = ''
  child.stdout.on('data', (chunk) => (stdout += chunk))
  const code = await new Promise((resolve) => child.on('close', resolve))
  if (code !== 0) throw new Error(`the consumer app exited with ${code}`)
  const { perSecond } = JSON.parse(stdout)
  const rate = (seconds) => seconds.reduce((sum, n) => sum + n, 0) / seconds.length
  const first = rate(perSecond.slice(0, WINDOW_S))
  const last = rate(perSecond.slice(-WINDOW_S))
  const change = last / first - 1
  const kept = change >= -TOLERANCE
  console.log(
    JSON.stringify({
      readers,
      durationS,
      firstReadsPerS: Math.round(first),
      lastReadsPerS: Math.round(last),
      change: Number(change.toFixed(3)),
      kept,
    }),
  )
  console.error(
    `first ${WINDOW_S} s: ${Math.round(first)} reads/s, last ${WINDOW_S} s: ${Math.round(last)} reads/s (${(change * 100).toFixed(1)} %): ${
      kept ? 'kept' : `lost more than ${TOLERANCE * 100} %`
    }`,
  )
  process.exitCode = kept ? 0 : 1
} finally {
  await cleanupAll()
  rmSync(work, { recursive: true, force: true })
}
