// scripts/load.mjs against a real cluster: a short run reads from every
// replica, writes only on the leader, has no errors, and its counts match the
// rows in the database; sessions read their writes; the report is a
// self-contained SVG. Node only: the script under test is spawned with Node.
import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import postgres from 'postgres'
import { renderLoadReportHtml, renderLoadReportSvg } from 'pgfollow/ops'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { startCluster } from './helpers/cluster.mjs'

const SCRIPT = fileURLToPath(new URL('../scripts/load.mjs', import.meta.url))

function load(args) {
  return new Promise((resolve) => {
    execFile(process.execPath, [SCRIPT, ...args], { env: { ...process.env, NO_COLOR: '1' }, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? error.code : 0, stdout, stderr })
    })
  })
}

/** The --json summary: the last line of stdout. */
const summaryOf = (stdout) => JSON.parse(stdout.trim().split('\n').pop())

// One cluster for the file, started before any suite is queued; the last suite stops it.
const cluster = await startCluster()
const descriptorFile = join(cluster.dir, 'cluster.json')
const leader = postgres(cluster.descriptor.leader, { max: 1, onnotice: () => {} })
const scratch = mkdtempSync(join(tmpdir(), 'pgfollow-load-'))

// ---
const run = suite('load.mjs on a real cluster')

run.after(async () => {
  await leader.end({ timeout: 1 })
  await cluster.stop()
  rmSync(scratch, { recursive: true, force: true })
})

run('a 5 s run reads from every replica, writes on the leader only, and its counts match the database', async () => {
  const report = join(scratch, 'report.svg')
  const { code, stdout, stderr } = await load([
    '--cluster',
    descriptorFile,
    '--duration',
    '5s',
    '--writers',
    '2',
    '--readers',
    '4',
    '--json',
    '--seed',
    '7',
    '--report',
    report,
  ])
  assert.is(code, 0, stderr)
  const summary = summaryOf(stdout)
  for (const key of ['reads', 'writes', 'errors', 'byNode', 'p50Ms', 'p99Ms', 'maxLagMs', 'durationS']) {
    assert.ok(key in summary, `summary has ${key}`)
  }
  assert.is(summary.errors, 0, summary.errorSamples.join('; '))
  assert.ok(summary.durationS >= 5 && summary.durationS < 8, `ran ${summary.durationS} s`)

  // Reads: every replica served some, the leader none, and the per-node counts add up.
  assert.ok(summary.byNode.replica1 > 0 && summary.byNode.replica2 > 0, JSON.stringify(summary.byNode))
  assert.is(summary.byNode.leader, 0, 'no read fell back to the leader')
  assert.is(Object.values(summary.byNode).reduce((sum, n) => sum + n, 0), summary.reads)
  assert.ok(summary.p50Ms > 0 && summary.p99Ms >= summary.p50Ms)

  // Writes: all on the leader, and exactly the rows it holds.
  assert.ok(summary.writes >= 2, `${summary.writes} writes in 5 s with 2 writers`)
  assert.equal(summary.writesByNode, { leader: summary.writes, replica1: 0, replica2: 0 })
  const [rows] =
    await leader`select (select count(*)::int from blogs) as blogs, (select count(*)::int from posts) as posts, (select count(*)::int from comments) as comments`
  assert.equal(rows, { blogs: summary.writes, posts: summary.posts, comments: summary.comments })

  // The summary table goes to stderr with --json, so stdout stays one JSON line.
  assert.is(stdout.trim().split('\n').length, 1)
  assert.match(stderr, /replica1\s+replica\s+[\d,]+\s+\d+%/)

  const svg = readFileSync(report, 'utf8')
  assert.ok(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"') && svg.trimEnd().endsWith('</svg>'), 'a standalone SVG')
  assert.not.match(svg, /<script|href=|@import|url\(/, 'self-contained: nothing to fetch or run')
  for (const name of ['replica1', 'replica2', 'Reads per second', 'Replay lag']) assert.ok(svg.includes(name), `report shows ${name}`)
})

run('with --consistency session every writer reads its blog back', async () => {
  const { code, stdout, stderr } = await load([
    '--cluster',
    descriptorFile,
    '--duration',
    '2s',
    '--writers',
    '2',
    '--readers',
    '2',
    '--consistency',
    'session',
    '--json',
  ])
  assert.is(code, 0, stderr)
  const summary = summaryOf(stdout)
  assert.is(summary.consistency, 'session')
  assert.is(summary.errors, 0, summary.errorSamples.join('; '))
  assert.ok(summary.writes > 0)
  assert.is(summary.staleReads, 0, 'a causal session never misses its own write')
})

run('bad flags are refused with a message that names the flag', async () => {
  const cases = [
    [['--consistency', 'strong'], /--consistency takes one of eventual, session/],
    [['--duration', 'soon'], /--duration takes a duration/],
    [['--readers=1.5'], /--readers takes a whole number/],
    [['--report', 'out.png'], /--report takes a file name ending in \.svg or \.html/],
    [['--wrtiers', '2'], /Unknown flag --wrtiers/],
  ]
  for (const [args, message] of cases) {
    const { code, stderr } = await load(['--cluster', descriptorFile, ...args])
    assert.is(code, 1, args.join(' '))
    assert.match(stderr, message)
  }
})

run.run()

// ---
const report = suite('lib/report.ts')

const tick = (t, roles, reads, lag) => ({
  t,
  seconds: 1,
  reads: Object.values(reads).reduce((a, b) => a + b, 0),
  writes: 2,
  errors: 0,
  readsByNode: reads,
  roles,
  lagMs: lag,
  lagBytes: Object.fromEntries(Object.keys(lag).map((name) => [name, 0])),
  p50Ms: 1,
  p99Ms: 2,
})
const before = { leader: 'leader', replica1: 'replica', replica2: 'replica' }
const after = { leader: 'replica', replica1: 'leader', replica2: 'replica' }
const summary = {
  reads: 300,
  writes: 6,
  posts: 10,
  comments: 20,
  errors: 1,
  staleReads: 0,
  byNode: { leader: 0, replica1: 100, replica2: 200 },
  writesByNode: { leader: 4, replica1: 2 },
  roles: after,
  p50Ms: 1,
  p99Ms: 2,
  writeP50Ms: 3,
  writeP99Ms: 4,
  maxLagMs: 12,
  maxLagBytes: 100,
  durationS: 3,
  readers: 4,
  writers: 2,
  consistency: 'eventual',
  errorSamples: ['boom'],
  ticks: [
    tick(1, before, { leader: 0, replica1: 50, replica2: 50 }, { replica1: 1, replica2: 12 }),
    tick(2, before, { leader: 0, replica1: 50, replica2: 50 }, { replica1: 0, replica2: 3 }),
    tick(3, after, { leader: 0, replica1: 0, replica2: 100 }, { replica2: 0 }),
  ],
}

report('marks a change of leader and names each replica with its largest lag', () => {
  const svg = renderLoadReportSvg(summary)
  assert.ok(svg.includes('leader → replica1'), 'the failover is marked')
  assert.ok(svg.includes('replica2 max 12 ms'))
  assert.ok(svg.includes('replica2 67%'), 'share of the reads in the legend')
  assert.is((svg.match(/<polygon /g) ?? []).length, 3, 'one stacked area per node')
})

report('escapes text, and the HTML page carries the numbers without the ticks', () => {
  const svg = renderLoadReportSvg(summary, { title: 'a <b> & "c"' })
  assert.ok(svg.includes('a &lt;b&gt; &amp; &quot;c&quot;'))
  const html = renderLoadReportHtml(summary)
  assert.ok(html.startsWith('<!doctype html>') && html.includes('<svg'))
  assert.ok(html.includes('&quot;maxLagMs&quot;: 12'))
  assert.not.ok(html.includes('readsByNode'), 'ticks stay out of the summary block')
})

report('an empty run still draws', () => {
  const svg = renderLoadReportSvg({ ...summary, ticks: [], byNode: {}, reads: 0 })
  assert.ok(svg.includes('no data'))
})

report.run()
