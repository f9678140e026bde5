// @deno
// The import rule of docs/ARCHITECTURE.md, checked on the source: every
// import in lib/** and infra/*.ts is read (static, dynamic and re-exports)
// and judged by the layer of the importing file. Also: the tag reads no
// files at run time, except the ones the user names.
import { readdirSync, readFileSync } from 'node:fs'
import { builtinModules } from 'node:module'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'

const root = fileURLToPath(new URL('..', import.meta.url))

/** Modules of the tag that carry no connection state: the cluster may share them. */
const TAG_LEAVES = ['lib/tag/errors.ts', 'lib/tag/descriptor.ts', 'lib/tag/lsn.ts', 'lib/tag/queries.ts', 'lib/tag/patroni-view.ts']

/** Which layers each layer may import (its own layer always). Packages and node: builtins are listed apart. */
const RULES = {
  tag: { layers: [], packages: ['postgres'] },
  topology: { layers: [], files: ['lib/tag/descriptor.ts', 'lib/tag/errors.ts'], packages: [] },
  ops: { layers: ['tag', 'topology'], packages: ['postgres'] },
  cluster: { layers: ['ops', 'topology'], files: TAG_LEAVES, packages: ['postgres'] },
  infra: { layers: ['topology'], files: ['lib/ops/sqlfiles.ts'], packages: ['@pulumi/pulumi', '@pulumi/docker', '@pulumi/random'] },
}

/** Files of the tag that may touch the file system, and why. */
const TAG_FILE_READERS = {
  'lib/tag/descriptor.ts': "reads the descriptor file the user points at (connect('file.json'), PGFOLLOW_CLUSTER)",
  'lib/tag/tag.ts': "sql.file(path): postgres.js's API, the user's own SQL file",
}

function layerOf(file) {
  if (file.startsWith('lib/tag/')) return 'tag'
  if (file === 'lib/topology.ts') return 'topology'
  if (file.startsWith('lib/ops/')) return 'ops'
  if (file.startsWith('lib/cluster/')) return 'cluster'
  if (file.startsWith('infra/')) return 'infra'
  return 'outside'
}

function sourceFiles(dir, recursive) {
  return readdirSync(join(root, dir), { withFileTypes: true, recursive })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => relative(root, join(entry.parentPath ?? entry.path, entry.name)))
    .sort()
}

/** Every module specifier a file imports: `import ... from`, `export ... from`, `import '...'` and `import('...')`. */
function importsOf(text) {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '')
  const specifiers = []
  for (const match of code.matchAll(/(?:^|[\s;])(?:import|export)\s[^'"`;]*?from\s*['"]([^'"]+)['"]/g)) specifiers.push(match[1])
  for (const match of code.matchAll(/(?:^|[\s;])import\s*['"]([^'"]+)['"]/g)) specifiers.push(match[1])
  for (const match of code.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) specifiers.push(match[1])
  return specifiers
}

/** Why an import breaks the rule, or null. */
function violation(file, specifier) {
  const layer = layerOf(file)
  const rule = RULES[layer]
  if (specifier.startsWith('node:') || builtinModules.includes(specifier)) return null
  if (!specifier.startsWith('.')) {
    return rule.packages.includes(specifier) ? null : `${layer} may use the packages ${rule.packages.join(', ') || '(none)'}, not ${specifier}`
  }
  const target = relative(root, resolve(root, dirname(file), specifier))
  const targetLayer = layerOf(target)
  if (targetLayer === layer) return null
  if (rule.layers.includes(targetLayer) || rule.files?.includes(target)) return null
  return `${layer} may not import ${target} (${targetLayer})`
}

const files = [...sourceFiles('lib', true), ...sourceFiles('infra', false)]

const rule = suite('import rule')

rule('the check sees every kind of import', () => {
  const text = [
    "import a from './a.ts'",
    "import type { B } from './b.ts'",
    "export { c } from './c.ts'",
    "import './d.ts'",
    "const e = await import('./e.ts')",
    '// import nothing from "./comment.ts"',
  ].join('\n')
  assert.equal(importsOf(text), ['./a.ts', './b.ts', './c.ts', './d.ts', './e.ts'])
})

rule('the check flags what the rule forbids', () => {
  assert.ok(violation('lib/tag/router.ts', '../ops/lag.ts'))
  assert.ok(violation('lib/tag/router.ts', '../topology.ts'))
  assert.ok(violation('lib/tag/router.ts', 'zx'))
  assert.ok(violation('lib/ops/lag.ts', '../cluster/local.ts'))
  assert.ok(violation('lib/cluster/local.ts', '../tag/router.ts'))
  assert.ok(violation('infra/cluster.ts', '../lib/tag/connect.ts'))
  assert.is(violation('lib/cluster/local.ts', '../tag/errors.ts'), null)
  assert.is(violation('lib/ops/load.ts', '../tag/tag.ts'), null)
})

rule('it reads every layer', () => {
  const layers = new Set(files.map(layerOf))
  for (const layer of Object.keys(RULES)) assert.ok(layers.has(layer), `found files of ${layer}`)
  assert.not.ok(layers.has('outside'))
})

rule('lib/** and infra/ keep the import rule of docs/ARCHITECTURE.md', () => {
  const problems = []
  for (const file of files) {
    for (const specifier of importsOf(readFileSync(join(root, file), 'utf8'))) {
      const problem = violation(file, specifier)
      if (problem) problems.push(`${file}: ${problem}`)
    }
  }
  assert.equal(problems, [], problems.join('\n'))
})

rule('the tag reads no files at run time, except the ones the user names', () => {
  const readers = files
    .filter((file) => layerOf(file) === 'tag')
    .filter((file) => importsOf(readFileSync(join(root, file), 'utf8')).some((specifier) => /^(node:)?fs(\/|$)/.test(specifier)))
  assert.equal(readers, Object.keys(TAG_FILE_READERS).sort())
  // A module that finds files next to itself breaks once bundled or installed.
  for (const file of files.filter((file) => layerOf(file) === 'tag')) {
    assert.not.match(readFileSync(join(root, file), 'utf8'), /import\.meta\.(url|dirname|filename)/, `${file} locates nothing on disk`)
  }
})

rule.run()
