import { readdir, readFile } from 'node:fs/promises'
import { pathToFileURL } from 'node:url'
import { validate } from 'dockerfile-utils'

/**
 * Offline lint of Dockerfile and Dockerfile.* (`npm run lint:docker`, and a test). Hadolint cannot
 * be installed here; dockerfile-utils (the parser behind the VS Code Docker extension) can.
 *
 * 1. Every dockerfile-utils diagnostic fails, warnings included: its warnings are things Docker
 *    itself warns about or drops (duplicate CMD/ENTRYPOINT/HEALTHCHECK, JSON in single quotes,
 *    empty continuation lines, deprecated MAINTAINER), none of them a matter of taste.
 * 2. The rules this service's images rely on, checked on the final stage: a non-root USER, EXPOSE
 *    8080 and 9000, HEALTHCHECK in exec form on /health/ready, VOLUME /models, ENTRYPOINT in exec
 *    form starting node (so node is PID 1 and gets SIGTERM; a shell form would swallow it); and in
 *    every stage, .npmrc copied with the lockfile (it skips onnxruntime-node's download) and a
 *    guard after `npm ci` (npm 10 has exited 0 with no node_modules).
 */

interface Instruction {
  readonly keyword: string
  readonly args: string
  readonly line: number
}

/** Instructions with continuation lines joined and comment lines dropped, as Docker reads them. */
export function instructions(text: string): Instruction[] {
  const out: Instruction[] = []
  let current: { text: string; line: number } | undefined
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim()
    if (line.startsWith('#') || (line === '' && current === undefined)) return
    const continued = line.endsWith('\\')
    const body = continued ? line.slice(0, -1) : line
    if (current === undefined) current = { text: body, line: i + 1 }
    else current.text += ` ${body}`
    if (!continued) {
      const [keyword = '', ...rest] = current.text.trim().split(/\s+/)
      out.push({ keyword: keyword.toUpperCase(), args: rest.join(' '), line: current.line })
      current = undefined
    }
  })
  return out
}

function isExecForm(args: string): string[] | undefined {
  try {
    const parsed: unknown = JSON.parse(args)
    return Array.isArray(parsed) && parsed.every((a) => typeof a === 'string') ? parsed : undefined
  } catch {
    return undefined
  }
}

/** LSP's DiagnosticSeverity.Error; the enum is only a type re-export in dockerfile-utils. */
const SEVERITY_ERROR = 1

export function lintDockerfile(text: string): string[] {
  const problems: string[] = []
  for (const d of validate(text)) {
    const level = d.severity === SEVERITY_ERROR ? 'error' : 'warning'
    problems.push(`line ${d.range.start.line + 1}: ${level}: ${d.message}`)
  }

  const all = instructions(text)
  const stages: Instruction[][] = []
  for (const ins of all) {
    if (ins.keyword === 'FROM') stages.push([])
    stages.at(-1)?.push(ins)
  }
  for (const stage of stages) {
    for (const ins of stage) {
      if (ins.keyword === 'COPY' && /\bpackage-lock\.json\b/.test(ins.args) && !/(^|\s)\.npmrc(\s|$)/.test(ins.args)) {
        problems.push(`line ${ins.line}: the lockfile is copied without .npmrc (it keeps onnxruntime-node's postinstall from downloading)`)
      }
      if (ins.keyword === 'RUN' && /\bnpm ci\b/.test(ins.args) && !/require\.resolve\('fastify'\)/.test(ins.args)) {
        problems.push(`line ${ins.line}: npm ci without a guard such as node -e "require.resolve('fastify')" in the same RUN`)
      }
    }
  }

  const final = stages.at(-1) ?? []
  const last = (keyword: string): Instruction | undefined => final.filter((i) => i.keyword === keyword).at(-1)
  const user = last('USER')
  if (user === undefined || /^(root|0)(:|$)/.test(user.args)) problems.push('final stage: no non-root USER')
  const exposed = final.filter((i) => i.keyword === 'EXPOSE').flatMap((i) => i.args.split(/\s+/).map((p) => p.replace(/\/tcp$/, '')))
  for (const port of ['8080', '9000']) if (!exposed.includes(port)) problems.push(`final stage: port ${port} is not exposed`)
  const health = last('HEALTHCHECK')
  const healthCmd = health === undefined ? undefined : isExecForm(health.args.slice(health.args.indexOf('CMD') + 3).trim())
  if (healthCmd === undefined || !healthCmd.join(' ').includes('/health/ready'))
    problems.push('final stage: no HEALTHCHECK CMD [...] (exec form) on /health/ready')
  if (!final.some((i) => i.keyword === 'VOLUME' && /["\s[]?\/models["\s\]]?/.test(` ${i.args} `)))
    problems.push('final stage: /models is not a VOLUME')
  const entrypoint = last('ENTRYPOINT')
  const exec = entrypoint === undefined ? undefined : isExecForm(entrypoint.args)
  if (exec?.[0] !== 'node') problems.push('final stage: ENTRYPOINT must be the exec form starting node (node as PID 1 receives SIGTERM)')
  return problems
}

export async function lintDockerfiles(dir = '.'): Promise<Map<string, string[]>> {
  const results = new Map<string, string[]>()
  const names = (await readdir(dir)).filter((n) => n === 'Dockerfile' || n.startsWith('Dockerfile.')).sort()
  for (const name of names) results.set(name, lintDockerfile(await readFile(`${dir}/${name}`, 'utf8')))
  return results
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const results = await lintDockerfiles()
  let failed = results.size === 0
  if (failed) console.error('lint:docker: no Dockerfile found')
  for (const [name, problems] of results) {
    for (const p of problems) console.error(`✗ ${name} ${p}`)
    if (problems.length > 0) failed = true
    else console.log(`lint:docker: ${name} ok (dockerfile-utils, no diagnostics; service rules)`)
  }
  process.exit(failed ? 1 : 0)
}
