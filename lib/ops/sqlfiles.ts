/**
 * SQL lives in sql/, never inlined as long template strings. This
 * module finds it from lib/ops/ (Deno) and from dist/ops/ (Node) alike, since
 * both sit two levels below sql/, and renders the psql variables the files use, so the
 * same file runs under psql in a container and through postgres.js here.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const cache = new Map<string, string>()

/** Absolute path of a file under sql/, e.g. `sqlPath('migrations')`. */
export function sqlPath(relative: string): string {
  return fileURLToPath(new URL(`../../sql/${relative}`, import.meta.url))
}

/** Text of a file under sql/, read once per process. */
export function sqlText(relative: string): string {
  let text = cache.get(relative)
  if (text === undefined) {
    text = readFileSync(sqlPath(relative), 'utf8')
    cache.set(relative, text)
  }
  return text
}

/** A string as an SQL literal: quotes doubled, E'' form when it has a backslash. */
export function quoteLiteral(value: string): string {
  const body = value.replace(/'/g, "''")
  return value.includes('\\') ? `E'${body.replace(/\\/g, '\\\\')}'` : `'${body}'`
}

/** A string as an SQL identifier. */
export function quoteIdentifier(value: string): string {
  return `"${value.replace(/"/g, '""')}"`
}

/**
 * Replaces psql's `:'name'` (literal) and `:"name"` (identifier) variables.
 * A variable the file uses but the caller did not give is an error, not an
 * empty string, so a typo cannot create a role without a password.
 */
export function renderPsqlVariables(text: string, variables: Record<string, string>): string {
  return text.replace(/:(['"])([A-Za-z_][A-Za-z0-9_]*)\1/g, (_match, quote: string, name: string) => {
    const value = variables[name]
    if (value === undefined) throw new Error(`SQL variable "${name}" has no value`)
    return quote === "'" ? quoteLiteral(value) : quoteIdentifier(value)
  })
}
