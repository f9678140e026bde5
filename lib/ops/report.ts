/**
 * The load experiment's report: one self-contained SVG (no scripts, fonts or
 * links to fetch) with reads per second per node, writes per second, and
 * each replica's lag over time; a change of leader (failover) is marked
 * across all panels. `.html` wraps the same SVG with the summary numbers.
 */
import { formatMs } from './cli.ts'
import type { LoadSummary, LoadTick } from './load.ts'

const WIDTH = 880
const LEFT = 70
const RIGHT = 180 // room for the legend
const PALETTE = ['#2563eb', '#16a34a', '#dc2626', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777']

interface Series {
  name: string
  color: string
  values: number[]
  dashed?: boolean
}

interface Panel {
  title: string
  unit: string
  height: number
  series: Series[]
  /** Series drawn as stacked areas: the top edge is the total. */
  stacked?: boolean
}

/** The report as SVG text. */
export function renderLoadReportSvg(summary: LoadSummary, options: { title?: string } = {}): string {
  const ticks = summary.ticks
  const names = nodeNames(ticks)
  const color = (name: string) => PALETTE[names.indexOf(name) % PALETTE.length]
  const rate = (count: number, tick: LoadTick) => (tick.seconds > 0 ? count / tick.seconds : 0)
  const replicas = names.filter((name) => ticks.some((tick) => name in tick.lagMs))
  const panels: Panel[] = [
    {
      title: 'Reads per second, stacked by the node that served them',
      unit: 'reads/s',
      height: 210,
      stacked: true,
      series: names.map((name) => ({ name, color: color(name), values: ticks.map((tick) => rate(tick.readsByNode[name] ?? 0, tick)) })),
    },
    {
      title: 'Writes per second (blog transactions, on the leader)',
      unit: 'writes/s',
      height: 110,
      series: [{ name: 'writes', color: '#374151', values: ticks.map((tick) => rate(tick.writes, tick)) }],
    },
    {
      title: 'Replay lag per replica',
      unit: 'ms',
      height: 150,
      series: replicas.map((name) => ({ name, color: color(name), values: ticks.map((tick) => tick.lagMs[name] ?? 0) })),
    },
  ]

  const header = 96
  const gap = 46
  const height = header + panels.reduce((sum, panel) => sum + panel.height + gap, 0) + 10
  const times = ticks.map((tick) => tick.t)
  const tMax = Math.max(1, ...times)
  const x = (t: number) => LEFT + (t / tMax) * (WIDTH - LEFT - RIGHT)
  const leaderChanges = leaderMoves(ticks)

  const parts: string[] = []
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="system-ui, -apple-system, 'Segoe UI', sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="${LEFT}" y="28" font-size="17" font-weight="600" fill="#111827">${escape(options.title ?? defaultTitle(summary))}</text>`,
    `<text x="${LEFT}" y="50" fill="#4b5563">${escape(summaryLine(summary))}</text>`,
  )

  let top = header
  for (const panel of panels) {
    const bottom = top + panel.height
    const totals = ticks.map((_, i) => panel.series.reduce((sum, series) => sum + series.values[i], 0))
    const max = niceMax(Math.max(0, ...(panel.stacked ? totals : panel.series.flatMap((series) => series.values))))
    const y = (value: number) => bottom - (value / max) * panel.height
    parts.push(`<text x="${LEFT}" y="${top - 10}" font-weight="600" fill="#1f2937">${escape(panel.title)}</text>`)
    for (let i = 0; i <= 4; i++) {
      const value = (max / 4) * i
      const lineY = y(value).toFixed(1)
      parts.push(
        `<line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${lineY}" y2="${lineY}" stroke="${i === 0 ? '#9ca3af' : '#e5e7eb'}"/>`,
        `<text x="${LEFT - 6}" y="${lineY}" dy="4" text-anchor="end" fill="#6b7280">${escape(formatValue(value))}</text>`,
      )
    }
    parts.push(`<text x="${WIDTH - RIGHT + 8}" y="${bottom}" fill="#6b7280">${escape(panel.unit)}</text>`)
    for (const t of timeTicks(tMax)) {
      parts.push(
        `<line x1="${x(t).toFixed(1)}" x2="${x(t).toFixed(1)}" y1="${bottom}" y2="${bottom + 4}" stroke="#9ca3af"/>`,
        `<text x="${x(t).toFixed(1)}" y="${bottom + 16}" text-anchor="middle" fill="#6b7280">${t} s</text>`,
      )
    }
    for (const change of leaderChanges) {
      const changeX = x(change.t).toFixed(1)
      parts.push(`<line x1="${changeX}" x2="${changeX}" y1="${top}" y2="${bottom}" stroke="#f59e0b" stroke-dasharray="4 3"/>`)
      if (panel === panels[0]) parts.push(`<text x="${changeX}" y="${top + 12}" dx="4" fill="#b45309">leader → ${escape(change.leader)}</text>`)
    }
    if (panel.series.length === 0 || ticks.length === 0) {
      parts.push(`<text x="${(LEFT + WIDTH - RIGHT) / 2}" y="${top + panel.height / 2}" text-anchor="middle" fill="#9ca3af">no data</text>`)
    }
    const below = ticks.map(() => 0)
    panel.series.forEach((series, index) => {
      const base = [...below]
      const topValues = series.values.map((value, i) => (panel.stacked ? base[i] + value : value))
      if (panel.stacked) topValues.forEach((value, i) => (below[i] = value))
      const upper = topValues.map((value, i) => `${x(times[i]).toFixed(1)},${y(value).toFixed(1)}`)
      if (upper.length === 1) upper.unshift(`${x(0).toFixed(1)},${y(topValues[0]).toFixed(1)}`)
      if (panel.stacked && upper.length > 0) {
        const lower = base.map((value, i) => `${x(times[i]).toFixed(1)},${y(value).toFixed(1)}`).reverse()
        if (lower.length === 1) lower.push(`${x(0).toFixed(1)},${y(base[0]).toFixed(1)}`)
        parts.push(`<polygon fill="${series.color}" fill-opacity="0.35" stroke="none" points="${[...upper, ...lower].join(' ')}"/>`)
      }
      parts.push(
        `<polyline fill="none" stroke="${series.color}" stroke-width="2" stroke-linejoin="round"${
          series.dashed ? ' stroke-dasharray="5 3"' : ''
        } points="${upper.join(' ')}"/>`,
      )
      const legendY = top + 14 + index * 18
      parts.push(
        `<line x1="${WIDTH - RIGHT + 10}" x2="${WIDTH - RIGHT + 28}" y1="${legendY - 4}" y2="${
          legendY - 4
        }" stroke="${series.color}" stroke-width="3"/>`,
        `<text x="${WIDTH - RIGHT + 34}" y="${legendY}" fill="#1f2937">${escape(legendText(series, summary, panel.unit))}</text>`,
      )
    })
    top = bottom + gap
  }
  parts.push('</svg>')
  return parts.join('\n') + '\n'
}

/** The same report as a standalone HTML page, with the summary numbers under the chart. */
export function renderLoadReportHtml(summary: LoadSummary, options: { title?: string } = {}): string {
  const title = options.title ?? defaultTitle(summary)
  const { ticks: _ticks, ...numbers } = summary
  return [
    '<!doctype html>',
    '<html lang="en"><head><meta charset="utf-8">',
    `<title>${escape(title)}</title>`,
    '<style>body{font-family:system-ui,sans-serif;margin:2rem;color:#111827}pre{background:#f3f4f6;padding:1rem;overflow:auto}</style>',
    '</head><body>',
    renderLoadReportSvg(summary, options),
    `<h2>Summary</h2><pre>${escape(JSON.stringify(numbers, null, 2))}</pre>`,
    '</body></html>',
    '',
  ].join('\n')
}

/** Node names in the order the tag lists them (leader, replica1, ...). */
function nodeNames(ticks: LoadTick[]): string[] {
  const names: string[] = []
  for (const tick of ticks) for (const name of Object.keys(tick.roles)) if (!names.includes(name)) names.push(name)
  return names
}

/** Where writes moved: at the start of the interval in which the tag saw a new leader. */
function leaderMoves(ticks: LoadTick[]): { t: number; leader: string }[] {
  const moves: { t: number; leader: string }[] = []
  let previous: string | undefined
  for (const tick of ticks) {
    const leader = Object.entries(tick.roles).find(([, role]) => role === 'leader')?.[0]
    if (previous !== undefined && leader !== undefined && leader !== previous) moves.push({ t: Math.max(0, tick.t - tick.seconds), leader })
    if (leader !== undefined) previous = leader
  }
  return moves
}

function legendText(series: Series, summary: LoadSummary, unit: string): string {
  if (unit === 'reads/s') {
    const share = summary.reads > 0 ? Math.round(((summary.byNode[series.name] ?? 0) / summary.reads) * 100) : 0
    return `${series.name} ${share}%`
  }
  if (unit === 'ms') return `${series.name} max ${formatMs(Math.max(0, ...series.values))}`
  return series.name
}

function defaultTitle(summary: LoadSummary): string {
  return `pgfollow load: ${
    summary.durationS.toFixed(0)
  } s, ${summary.writers} writers, ${summary.readers} readers, ${summary.consistency} consistency`
}

function summaryLine(summary: LoadSummary): string {
  const perSecond = summary.durationS > 0 ? Math.round(summary.reads / summary.durationS) : 0
  return [
    `${summary.reads.toLocaleString('en-US')} reads (${perSecond.toLocaleString('en-US')}/s)`,
    `${summary.writes} writes`,
    `p50 ${formatMs(summary.p50Ms)}`,
    `p99 ${formatMs(summary.p99Ms)}`,
    `${summary.errors} errors`,
    `max lag ${formatMs(summary.maxLagMs)}`,
  ].join(' · ')
}

/** The top of an axis with four gridlines at round numbers (steps of 1, 2, 2.5 or 5 times a power of ten). */
function niceMax(value: number): number {
  if (!(value > 0)) return 1
  const rough = value / 4
  const power = 10 ** Math.floor(Math.log10(rough))
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= rough) return 4 * step * power
  return 40 * power
}

/** A step of 1, 2, 2.5 or 5 times a power of ten, at least the value. */
function niceStep(value: number): number {
  if (!(value > 0)) return 1
  const power = 10 ** Math.floor(Math.log10(value))
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power
  return 10 * power
}

function timeTicks(tMax: number): number[] {
  const step = niceStep(tMax / 6)
  const ticks: number[] = []
  for (let t = 0; t <= tMax + 1e-9; t += step) ticks.push(Math.round(t * 100) / 100)
  return ticks
}

function formatValue(value: number): string {
  if (value >= 1000) return `${Number((value / 1000).toFixed(2))}k`
  return String(Number(value.toFixed(2)))
}

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}
