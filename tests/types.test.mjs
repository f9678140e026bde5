// The published types: TypeScript code written for postgres.js, and clients
// built on it (Drizzle, Kysely), must type-check against pgfollow's tag.
// tsc compiles the fixtures in tests/fixtures/types/ against the built
// declarations (dist/, as `import 'pgfollow'` resolves them), including a
// fixture of `@ts-expect-error` lines that fail if the types degrade.
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { test } from 'uvu'
import * as assert from 'uvu/assert'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const fixtures = join(root, 'tests', 'fixtures', 'types')
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')

function compile(args) {
  return new Promise((resolve) => {
    execFile(process.execPath, [tsc, ...args], { cwd: root }, (error, stdout, stderr) => {
      resolve({ code: error ? (error.code ?? 1) : 0, output: `${stdout}${stderr}` })
    })
  })
}

test('the fixtures type-check: postgres.js usage, row generics, Drizzle and Kysely on the tag and on a session', async () => {
  const result = await compile(['--noEmit', '-p', join(fixtures, 'tsconfig.json')])
  assert.is(result.code, 0, result.output)
})

test('the check can fail: a wrong row type is reported', async () => {
  // A copy of the fixture settings next to a file with one error, so a broken harness (nothing compiled) shows.
  const dir = mkdtempSync(join(fixtures, '.broken-'))
  try {
    writeFileSync(
      join(dir, 'broken.ts'),
      "import type { PgfollowSql } from 'pgfollow'\n" +
        'export async function f(sql: PgfollowSql) {\n' +
        '  const rows = await sql<{ id: number }[]>`select 1 as id`\n' +
        '  const id: string = rows[0].id\n' +
        '  return id\n' +
        '}\n',
    )
    writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ extends: '../tsconfig.json', include: ['*.ts'] }))
    const result = await compile(['--noEmit', '-p', join(dir, 'tsconfig.json')])
    assert.is.not(result.code, 0, 'tsc accepted a string typed as a number')
    assert.match(result.output, /broken\.ts.*TS2322/)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test.run()
