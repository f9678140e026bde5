/** Port checks: a taken port is a clear error that names the flag to change. */
import { createServer } from 'node:net'
import { ClusterError } from '../tag/errors.ts'

/** Resolves true when nothing listens on 127.0.0.1:port. */
export function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(true)))
  })
}

/** A port the OS considers free right now (for tests and benchmarks). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen({ port: 0, host: '127.0.0.1' }, () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

/** `count` different free ports (two asks in a row may be given the same one). */
export async function freePorts(count: number): Promise<number[]> {
  const ports: number[] = []
  while (ports.length < count) {
    const port = await freePort()
    if (!ports.includes(port)) ports.push(port)
  }
  return ports
}

/** Throws when a port the cluster needs is taken, naming the node and the flag. */
export async function assertPortsFree(entries: { port: number; node: string }[], flag = '--ports'): Promise<void> {
  for (const { port, node } of entries) {
    if (!(await isPortFree(port))) {
      throw new ClusterError(
        `Port ${port} (for ${node}) is already in use on 127.0.0.1. Stop what listens there, or choose other ports with ${flag} L,R1,R2,...`,
      )
    }
  }
}
