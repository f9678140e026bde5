// Markdown tables from the results of the bench files: what scripts/bench.mjs
// prints and writes next to the JSON, and what BENCHMARKS.md quotes.

const pct = (ratio) => (Number.isFinite(ratio) ? `${ratio >= 0 ? '+' : ''}${(ratio * 100).toFixed(1)} %` : 'n/a')
const x = (ratio) => (Number.isFinite(ratio) ? `${ratio.toFixed(2)}×` : 'n/a')
const num = (
  value,
  digits = 0,
) => (Number.isFinite(value) ? value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : 'n/a')
const mark = (met) => (met ? 'met' : '**missed**')

function table(headers, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n')
}

const formatters = {
  'routing-overhead': (r) =>
    [
      `Same replica, pool max ${r.setup.poolMax} on both sides. Serial latency: ${r.setup.serialRounds} rounds, each with fresh pools and strictly alternating calls, raw calls on the tag's own pool for the replica (one connection, one backend for both); p50s are medians over rounds, the overhead is the median of the per-round tag/raw p50 ratios, and the control is raw postgres.js on a pool of its own (what a second connection alone does to the comparison). mitata's p50s (one pair of pools, median of rounds, order flipped each round) beside it. Reads/s cost = 1 − tag/raw, median over rounds of back-to-back runs, each run a fresh process.`,
      '',
      table(
        [
          'query',
          'raw p50',
          'tag p50',
          'raw p99',
          'tag p99',
          'latency overhead',
          'control (raw vs raw)',
          'mitata raw / tag p50',
          'mitata overhead',
        ],
        r.latency.map((row) => [
          row.query,
          `${num(row.rawP50Us, 1)} µs`,
          `${num(row.tagP50Us, 1)} µs`,
          `${num(row.rawP99Us, 0)} µs`,
          `${num(row.tagP99Us, 0)} µs`,
          pct(row.overhead),
          pct(row.controlOverhead),
          `${num(row.mitata.rawP50Us, 1)} / ${num(row.mitata.tagP50Us, 1)} µs`,
          pct(row.mitata.overhead),
        ]),
      ),
      '',
      table(
        [
          `query, ${r.setup.readers} readers`,
          'raw reads/s',
          'tag reads/s',
          'raw p99',
          'tag p99',
          'throughput cost',
          'control (raw vs raw)',
          'client CPU per read, raw / tag',
          'CPU ratio',
        ],
        r.throughput.map((row) => [
          row.query,
          num(row.rawReadsPerSecond),
          num(row.tagReadsPerSecond),
          `${num(row.rawP99Ms, 1)} ms`,
          `${num(row.tagP99Ms, 1)} ms`,
          pct(row.overhead),
          pct(row.controlOverhead),
          `${num(row.rawCpuUsPerRead, 1)} / ${num(row.tagCpuUsPerRead, 1)} µs`,
          x(row.cpuRatio),
        ]),
      ),
      '',
      `Target (under ${r.target.limit * 100} %): ${mark(r.target.met)} — worst ${pct(r.target.worst)}.`,
      ...(r.cpuTarget ? [`CPU target (${r.cpuTarget.description}): ${mark(r.cpuTarget.met)} — worst ${x(r.cpuTarget.worst)}.`] : []),
    ].join('\n'),

  'read-throughput': (r) =>
    [
      table(
        ['variant', 'reads/s', 'p50', 'p99', 'max', 'vs tag', 'CPU per read: client / servers / proxy', 'errors'],
        r.rows.map((
          row,
        ) => [
          row.label,
          num(row.readsPerSecond),
          `${num(row.p50Ms, 1)} ms`,
          `${num(row.p99Ms, 1)} ms`,
          `${num(row.maxMs, 0)} ms`,
          x(row.ratioToTag),
          [row.clientCpuUsPerRead, row.serversCpuUsPerRead, row.pgpoolCpuUsPerRead ?? row.haproxyCpuUsPerRead].map((
            us,
          ) => (us === null || us === undefined || Number.isNaN(us) ? '–' : num(us, 0))).join(' / ') + ' µs',
          num(row.errors),
        ]),
      ),
      '',
      ...r.targets.map((t) => (t.skipped ? `- ${t.description}: skipped (${t.skipped})` : `- ${t.description}: ${x(t.ratio)} → ${mark(t.met)}`)),
    ].join('\n'),

  'causal-session': (r) =>
    [
      table(
        ['', 'plain tag', 'causal session', 'session / plain'],
        [
          ['write p50 (insert … returning), alternating', `${num(r.write.plainP50Us, 0)} µs`, `${num(r.write.sessionP50Us, 0)} µs`, x(r.write.ratio)],
          ['write p99', `${num(r.write.plainP99Us, 0)} µs`, `${num(r.write.sessionP99Us, 0)} µs`, ''],
          [
            'write p50, mitata (median of rounds)',
            `${num(r.write.mitata.plainP50Us, 0)} µs`,
            `${num(r.write.mitata.sessionP50Us, 0)} µs`,
            x(r.write.mitata.ratio),
          ],
          [
            'first read after the write, p50',
            `${num(r.firstRead.plain.p50Ms, 2)} ms`,
            `${num(r.firstRead.session.p50Ms, 2)} ms`,
            x(r.firstRead.session.p50Ms / r.firstRead.plain.p50Ms),
          ],
          ['first read after the write, p90', `${num(r.firstRead.plain.p90Ms, 2)} ms`, `${num(r.firstRead.session.p90Ms, 2)} ms`, ''],
          ['first read after the write, p99', `${num(r.firstRead.plain.p99Ms, 2)} ms`, `${num(r.firstRead.session.p99Ms, 2)} ms`, ''],
          [
            '… that missed the write',
            `${r.firstRead.plain.staleReads} of ${r.firstRead.plain.reads}`,
            `${r.firstRead.session.staleReads} of ${r.firstRead.session.reads}`,
            '',
          ],
          ['… served by leader / replicas', servedBy(r.firstRead.plain.byNode), servedBy(r.firstRead.session.byNode), ''],
        ],
      ),
      '',
      `Floor: a committed write is visible on a replica after p50 ${num(r.floor.p50Ms, 2)} ms, p90 ${num(r.floor.p90Ms, 2)} ms, p99 ${
        num(r.floor.p99Ms, 2)
      } ms (${r.floor.writes} writes, raw connections polling).`,
      `- ${r.target.description}: ${x(r.target.ratio)} → ${mark(r.target.met)}`,
    ].join('\n'),

  skew: (r) =>
    r.scenarios
      .map((s) =>
        [
          `**${s.scenario}** (${s.how})`,
          '',
          table(
            ['variant', 'reads/s', 'p50', 'p99', 'max', 'replica2 share'],
            s.rows.map((
              row,
            ) => [
              row.balance === 'raw-round-robin' ? 'raw postgres.js round-robin' : `tag, balance ${row.balance}`,
              num(row.readsPerSecond),
              `${num(row.p50Ms, 1)} ms`,
              `${num(row.p99Ms, 1)} ms`,
              `${num(row.maxMs, 0)} ms`,
              `${num(row.replica2Share * 100, 1)} %`,
            ]),
          ),
          '',
          `least-busy / round-robin: reads/s ${x(s.leastBusyOverRoundRobin.readsPerSecond)}, p99 ${x(s.leastBusyOverRoundRobin.p99)}`,
          ...(s.target ? [`- ${s.target.description}: p99 ${x(s.target.p99)}, reads/s ${x(s.target.readsPerSecond)} → ${mark(s.target.met)}`] : []),
        ].join('\n')
      )
      .join('\n\n'),

  'classifier-cost': (r) =>
    [
      table(
        ['statement', 'chars', 'classifier says', 'classifyStatement p50', '+ catalog p50', 'naive regex says', 'naive regex p50'],
        r.rows.map((
          row,
        ) => [
          row.statement,
          num(row.chars),
          `${row.kind} (${row.reason})`,
          `${num(row.classifyUs, 2)} µs`,
          row.withCatalogUs === undefined ? '' : `${num(row.withCatalogUs, 2)} µs`,
          row.naiveSays,
          `${num(row.naiveUs * 1000, 0)} ns`,
        ]),
      ),
      ...(r.sites ? ['', table(['Router.kindOf, once cached', 'p50'], r.sites.map((row) => [row.site, `${num(row.kindOfNs, 0)} ns`]))] : []),
    ].join('\n'),

  memory: (r) =>
    [
      table(
        ['variant', 'RSS before pools', 'peak growth', 'growth kept after GC', 'JS heap kept'],
        r.rows.map((
          row,
        ) => [
          row.variant,
          `${num(row.rssBeforeMiB, 1)} MiB`,
          `+${num(row.peakDeltaMiB, 1)} MiB`,
          `+${num(row.retainedDeltaMiB, 1)} MiB`,
          `+${num(row.heapUsedDeltaMiB, 1)} MiB`,
        ]),
      ),
      '',
      `Tag − raw: peak ${num(r.tagMinusRaw.peakMiB, 1)} MiB, after GC ${
        num(r.tagMinusRaw.retainedMiB, 1)
      } MiB (${r.setup.readers} readers, ${r.setup.seconds} s, median of ${r.setup.repeats}).`,
    ].join('\n'),

  'bring-up': (r) =>
    [
      `Median ${num(r.medianSeconds, 2)} s (min ${num(r.minSeconds, 2)}, max ${num(r.maxSeconds, 2)}; ${r.setup.runs} runs: ${
        r.samplesSeconds.join(', ')
      } s).`,
      '',
      table(['phase', 'median'], Object.entries(r.phasesMedianSeconds).map(([phase, s]) => [phase, `${num(s, 2)} s`])),
    ].join('\n'),

  'replication-lag': (r) =>
    table(
      ['load', 'writes/s', 'reads/s', 'lag p50', 'lag p99', 'lag max', 'samples'],
      r.rows.map((row) => [
        row.load,
        num(row.writesPerSecond, 1),
        num(row.readsPerSecond),
        `${num(row.lagBytes.p50)} B / ${num(row.lagMs.p50, 1)} ms`,
        `${num(row.lagBytes.p99)} B / ${num(row.lagMs.p99, 1)} ms`,
        `${num(row.lagBytes.max)} B / ${num(row.lagMs.max, 1)} ms`,
        num(row.samples),
      ]),
    ),

  'router-queue': (r) =>
    [
      table(
        ['variant', ...r.decay[0].windows.map((_, i) => `${(i + 1) * r.setup.windowSeconds} s`), 'last / first'],
        r.decay.map((row) => [row.variant, ...row.windows.map((v) => num(v)), x(row.lastOverFirst)]),
      ),
      table(
        ['variant', 'reads/s', 'p50', 'p99', 'client µs/read', '× raw (max 10)'],
        r.limits.map((
          row,
        ) => [
          row.variant,
          num(row.readsPerSecond),
          `${num(row.p50Ms, 2)} ms`,
          `${num(row.p99Ms, 2)} ms`,
          num(row.clientCpuUsPerRead, 1),
          x(row.overRawMax10),
        ]),
      ),
    ].join('\n\n'),

  'pool-aging': (r) =>
    table(
      [`${r.setup.windowSeconds} s window`, ...r.concurrentReadsPerSecond.map((_, i) => `${i + 1}`), 'last / first'],
      [
        ['select 1, 100 readers: reads/s', ...r.concurrentReadsPerSecond.map((v) => num(v)), x(r.lastOverFirst.concurrent)],
        ['select 1, serial: median µs', ...r.serialMedianUs.map((v) => num(v, 1)), x(r.lastOverFirst.serial)],
      ],
    ),
}

function servedBy(byNode) {
  const leader = byNode.leader ?? 0
  const replicas = Object.entries(byNode)
    .filter(([name]) => name !== 'leader')
    .reduce((sum, [, n]) => sum + n, 0)
  return `${leader} / ${replicas}`
}

/** One section per result, in order, as Markdown. */
export function formatResults(results) {
  return results
    .map((result) => {
      if (result.error) return `### ${result.title}\n\nFailed: ${result.error}`
      const format = formatters[result.id]
      return `### ${result.title}\n\n${format ? format(result) : '```json\n' + JSON.stringify(result, null, 2) + '\n```'}`
    })
    .join('\n\n')
}

/** The machine line BENCHMARKS.md and the console start with. */
export function formatMachine(m) {
  return `${m.cores} cores (${m.cpu}), ${m.memoryGiB} GiB, Node ${m.node}, ${m.os}, PostgreSQL ${m.postgres ?? '?'}, postgres.js ${
    m.postgresJs ?? '?'
  }, ${m.pgpool ?? 'pgpool-II not found'}, ${m.haproxy ?? 'HAProxy not found'}; load average at start ${m.loadAverage.join(' ')}`
}
