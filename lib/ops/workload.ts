/**
 * The proof of concept's workload, shared by scripts/load.mjs, the
 * benchmarks and the fault tests: writers create a blog with posts and
 * comments in one transaction; readers page posts with their comments.
 */
import { sqlText } from './sqlfiles.ts'

/** The subset of a sql tag the workload needs: any postgres.js tag, or ours. */
export interface WorkloadSql {
  begin<T>(fn: (tx: any) => Promise<T>): Promise<any>
  unsafe(text: string, args?: any[], options?: any): Promise<any>
}

export interface WrittenBlog {
  blogId: number
  posts: number
  comments: number
}

type Random = () => number

const between = (random: Random, low: number, high: number) => low + Math.floor(random() * (high - low + 1))

/** One writer step: a blog, 1-5 posts, 0-5 comments each, in one transaction. */
export function writeBlog(sql: WorkloadSql, random: Random = Math.random): Promise<WrittenBlog> {
  return sql.begin(async (tx) => {
    const [blog] = await tx`insert into blogs (url) values (${`https://blog.example/${between(random, 1, 1e9)}`}) returning id`
    const postCount = between(random, 1, 5)
    const posts = await tx`insert into posts ${
      tx(
        Array.from(
          { length: postCount },
          (_, i) => ({ blog_id: blog.id, title: `Post ${i + 1}`, content: 'Lorem ipsum '.repeat(between(random, 1, 20)) }),
        ),
      )
    } returning id`
    const comments = posts.flatMap((post: { id: number }) =>
      Array.from({ length: between(random, 0, 5) }, (_, i) => ({ post_id: post.id, author: `reader${i}`, content: 'Nice post.' }))
    )
    if (comments.length > 0) await tx`insert into comments ${tx(comments)}`
    return { blogId: Number(blog.id), posts: postCount, comments: comments.length }
  })
}

/** Which posts one reader step reads. */
export interface Page {
  offset: number
  limit: number
}

/** The reader's page bounds: offset 1-1000, limit 1-20, as in the proof of concept. */
export function randomPage(random: Random = Math.random): Page {
  return { offset: between(random, 1, 1000), limit: between(random, 1, 20) }
}

/** One reader step: a page of posts with their comments (one row per comment). */
export function readPage(sql: WorkloadSql, page: Page = randomPage()): Promise<unknown[]> {
  return sql.unsafe(sqlText('queries/workload-read-page.sql'), [page.offset, page.limit], { prepare: true })
}

/** A seeded random source, so runs (and benchmarks) are repeatable. */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0 || 1
  return () => {
    // xorshift32: fast and good enough to spread pages and sizes.
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return (state >>> 0) / 4294967296
  }
}
