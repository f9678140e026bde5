// Question 5a: what does the routing classifier cost per statement? The
// tag classifies a statement once per call site (tagged templates) or per
// text (unsafe) and caches the result, so this is the price of the first
// execution; every later one is a cache lookup (inside question 1's numbers).
// Baseline: the naive router's test, a regex on the first word.
import { bench, do_not_optimize, group, summary } from 'mitata'
import { classifyStatement } from 'pgfollow'
import { readFileSync } from 'node:fs'
import { isMain, mitataRounds, round, standalone } from './helpers.mjs'

export const id = 'classifier-cost'
export const title = '5a. Classifier cost per statement (first execution; later ones are cached)'

const READER_QUERY = readFileSync(new URL('../sql/queries/workload-read-page.sql', import.meta.url), 'utf8')
const LONG_SELECT = `select p.id, p.title, b.url, count(c.id) as comments, max(c.created_at) as last_comment
from posts p join blogs b on b.id = p.blog_id left join comments c on c.post_id = p.id
where p.created_at > now() - interval '7 days' and b.url like $1 and p.title <> 'for update'
  and exists (select 1 from comments x where x.post_id = p.id and x.author = $2)
group by p.id, p.title, b.url having count(c.id) > $3
order by comments desc, p.id limit 50 -- a comment with insert and delete in it
`.repeat(3)

export const STATEMENTS = {
  'select 1': 'select 1',
  'reader query': READER_QUERY,
  'insert … returning': 'insert into blogs (url) values ($1) returning id',
  'select … for update': 'select * from posts where id = $1 for update',
  'with … delete (write CTE)': 'with moved as (delete from posts where id = $1 returning *) select * from moved',
  'long select (joins, subquery, ×3)': LONG_SELECT,
}

const NAIVE = /^\s*(select|with)\b/i

export async function measure({ quick, log }) {
  const { stats, perRound } = await mitataRounds(
    quick ? 1 : 3,
    () => {
      for (const [name, text] of Object.entries(STATEMENTS)) {
        group(name, () =>
          summary(() => {
            bench(`naive regex: ${name}`, function* () {
              yield { [0]: () => text, bench: (t) => do_not_optimize(NAIVE.test(t)) }
            }).baseline()
            bench(`classifyStatement: ${name}`, function* () {
              yield { [0]: () => text, bench: (t) => do_not_optimize(classifyStatement(t)) }
            })
          }))
      }
    },
    { log },
  )
  const rows = Object.entries(STATEMENTS).map(([name, text]) => ({
    statement: name,
    chars: text.length,
    kind: classifyStatement(text).kind,
    reason: classifyStatement(text).reason,
    naiveSays: NAIVE.test(text) ? 'read' : 'write',
    classifyUs: round(stats[`classifyStatement: ${name}`].p50Ns / 1e3, 3),
    naiveUs: round(stats[`naive regex: ${name}`].p50Ns / 1e3, 3),
  }))
  return { id, title, setup: { rounds: perRound.length }, rows }
}

if (isMain(import.meta.url)) await standalone(measure, { cluster: 'none' })
