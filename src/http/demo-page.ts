import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'

/**
 * The demo page at / and its two assets under /ui/. Three small files, read once at start and served
 * from memory: no static-file plugin, no file system access per request, nothing a URL can steer
 * to another path.
 *
 * The folder sits beside this module: src/http/ui under tsx and vitest, dist/src/http/ui once built
 * (the build script copies it there, because tsc copies only what it compiles).
 */

const UI_DIR = fileURLToPath(new URL('./ui/', import.meta.url))

/**
 * The page talks only to this server; the preview is an object URL (blob:). No inline script or
 * style, so nothing injected into the page could run.
 */
export const DEMO_PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

interface UiFile {
  readonly body: Buffer
  readonly contentType: string
  readonly etag: string
}

function readUiFile(name: string, contentType: string): UiFile {
  let body: Buffer
  try {
    body = readFileSync(UI_DIR + name)
  } catch (err) {
    throw new Error(`Demo page file ${UI_DIR + name} is missing: run \`npm run build\`, which copies src/http/ui into dist/src/http/.`, {
      cause: err
    })
  }
  return { body, contentType, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` }
}

export function demoPageRoutes(app: FastifyInstance): void {
  const files: Record<string, UiFile> = {
    '/': readUiFile('index.html', 'text/html; charset=utf-8'),
    '/ui/app.js': readUiFile('app.js', 'text/javascript; charset=utf-8'),
    '/ui/style.css': readUiFile('style.css', 'text/css; charset=utf-8')
  }
  for (const [url, file] of Object.entries(files)) {
    // hide: the page is not part of the API, so it stays out of the OpenAPI document.
    app.get(url, { schema: { hide: true } }, async (request, reply) => {
      // Assets keep fixed names, so a browser revalidates each time (a 304 costs a few bytes) rather
      // than pairing a new page with an old script after a deploy.
      void reply
        .header('cache-control', 'no-cache')
        .header('etag', file.etag)
        .header('content-security-policy', DEMO_PAGE_CSP)
        .header('x-content-type-options', 'nosniff')
        .header('referrer-policy', 'no-referrer')
      if (request.headers['if-none-match'] === file.etag) return reply.code(304).send()
      return reply.type(file.contentType).send(file.body)
    })
  }
}
