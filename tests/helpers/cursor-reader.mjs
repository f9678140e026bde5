// Child process of the bounded-memory cursor test: run with a small heap
// cap, it reads a whole table from a replica through `.cursor(batch)` and
// prints one JSON line with what it read and its peak memory. Reading into
// an array instead would die of "heap out of memory" under the same cap.
// Input on stdin (keeps the password off the command line):
// { "descriptor": {...}, "table": "name", "batch": 1000 }; with "mode": "all"
// it reads the same rows in one array instead (the control: it should die).
import process from 'node:process'
import { connect } from 'pgfollow'

let input = ''
for await (const chunk of process.stdin) input += chunk
const { descriptor, table, batch, mode = 'cursor' } = JSON.parse(input)

const sql = connect({ ...descriptor, monitorInterval: 200 })
const start = process.memoryUsage()
let peakRss = start.rss
let peakHeap = start.heapUsed
const sample = () => {
  const now = process.memoryUsage()
  peakRss = Math.max(peakRss, now.rss)
  peakHeap = Math.max(peakHeap, now.heapUsed)
}
const timer = setInterval(sample, 10)
const started = performance.now()
let rows = 0
let payload = 0
let lastId = 0
let ordered = true
const ports = new Set()
const query = sql.replica`select id, pad, inet_server_port() as port from ${sql(table)} order by id`
const batches = mode === 'all' ? [await query] : query.cursor(batch)
for await (const rowsOfBatch of batches) {
  for (const row of rowsOfBatch) {
    rows++
    payload += row.pad.length
    ordered &&= row.id > lastId
    lastId = row.id
  }
  ports.add(rowsOfBatch[0].port)
  sample()
}
clearInterval(timer)
sample()
const ms = performance.now() - started
await sql.end({ timeout: 1 })
console.log(JSON.stringify({ rows, payload, ordered, ports: [...ports], ms, startRss: start.rss, peakRss, startHeap: start.heapUsed, peakHeap }))
