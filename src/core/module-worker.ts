import { Worker, type WorkerOptions } from 'node:worker_threads'

/**
 * A worker thread running an ES module of this project. Compiled, that is the .js file itself. Run
 * from sources (vitest, tsx) it is a .ts file, and a worker thread does not inherit the parent's
 * TypeScript loader: the thread registers tsx first (a dev dependency, resolved from the working
 * directory, which is the repository root there), then imports the module.
 */
export function startModuleWorker(moduleUrl: URL, options: Omit<WorkerOptions, 'eval'> = {}): Worker {
  if (!moduleUrl.pathname.endsWith('.ts')) return new Worker(moduleUrl, options)
  const source = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(moduleUrl.href)}) })`
  return new Worker(source, { ...options, eval: true })
}

/** `./name.ts` beside the caller when it runs from sources, `./name.js` when compiled. */
export function siblingModule(callerUrl: string, name: string): URL {
  return new URL(`./${name}${callerUrl.endsWith('.ts') ? '.ts' : '.js'}`, callerUrl)
}
