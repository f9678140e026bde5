// Question 5a: what does the routing classifier cost per statement? The
// tag classifies a statement once per call site (tagged templates) or per
// text (unsafe) and caches the result, so this is the price of the first
// execution; every later one is a cache lookup (inside question 1's numbers).
// Baseline: the naive router's test, a regex on the first word. Candidates:
// the text alone, and with a catalog the size of a fresh PostgreSQL 18's
// (2,800 function names, 170 volatile ones that send statements to the
// leader; its 74 operator symbols plus 20 users', 5 of them volatile). Then what a call site costs once cached (Router.kindOf), plain
// and with an identifier, which puts a name into the text.
import { bench, do_not_optimize, group, summary } from 'mitata'
import { classifyStatement } from 'pgfollow'
import { COMMON_FUNCTIONS, COMMON_OPERATORS } from '../dist/tag/classify.js'
import { Router } from '../dist/tag/router.js'
import { normalizeOptions } from '../dist/tag/options.js'
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

/** A catalog as large as a fresh server's: every name and operator the statements use is known, none is volatile. */
const CATALOG = {
  functions: new Set([...COMMON_FUNCTIONS, ...Array.from({ length: 2_800 }, (_, i) => `builtin_${i}`)]),
  leaderNames: new Map(Array.from({ length: 170 }, (_, i) => [`volatile_${i}`, 'volatile'])),
  operators: new Set([...COMMON_OPERATORS, ...Array.from({ length: 20 }, (_, i) => `#${'@'.repeat(i + 1)}`)]),
  leaderOperators: new Map(Array.from({ length: 5 }, (_, i) => [`#${'@'.repeat(i + 1)}`, 'volatile'])),
}

export async function measure({ quick, log }) {
  // Nothing listens there: the router only renders and classifies (its catalog stays unloaded).
  const router = new Router(normalizeOptions({ leader: 'postgres://bench@127.0.0.1:9/bench', replicas: [], connectTimeout: 200 }))
  const tag = router.factory
  const site = tag`select p.id, p.title from posts p where p.blog_id = ${1} order by p.id limit ${10}`
  const namedSite = tag`select ${tag('title')} from posts where id = ${1}`
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
            bench(`classifyStatement + catalog: ${name}`, function* () {
              yield { [0]: () => text, bench: (t) => do_not_optimize(classifyStatement(t, CATALOG)) }
            })
          }))
      }
      group('cached call site', () => {
        // The statements are made once: a postgres.js query is a promise, and
        // mitata would await (run) one handed over as a parameter.
        bench('kindOf: cached call site', () => do_not_optimize(router.kindOf(site)))
        bench('kindOf: call site with sql(name)', () => do_not_optimize(router.kindOf(namedSite)))
      })
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
    withCatalogUs: round(stats[`classifyStatement + catalog: ${name}`].p50Ns / 1e3, 3),
    naiveUs: round(stats[`naive regex: ${name}`].p50Ns / 1e3, 3),
  }))
  const sites = ['kindOf: cached call site', 'kindOf: call site with sql(name)'].map((name) => ({
    site: name.slice('kindOf: '.length),
    kindOfNs: round(stats[name].p50Ns, 0),
  }))
  await router.end({ timeout: 0 })
  return { id, title, setup: { rounds: perRound.length }, rows, sites }
}

if (isMain(import.meta.url)) await standalone(measure, { cluster: 'none' })
