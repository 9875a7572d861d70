import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The project's name as package.json spells it: the V2 server name and the OpenAPI title. */
export const PACKAGE_NAME = 'resnet-serve'

/** The version in the project's package.json, found upward from this module (src/ or dist/src/). */
function readPackageVersion(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string }
      if (pkg.name === PACKAGE_NAME && pkg.version !== undefined) return pkg.version
    } catch {
      // No package.json at this level: keep walking up.
    }
  }
  return '0.0.0'
}

/** Read once, at start. */
export const PACKAGE_VERSION = readPackageVersion()
