import { readdirSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The real photographs in test/fixtures/photos (see its README.md for sources and licences). */
export const PHOTOS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'photos')

/** Absolute paths of every fixture JPEG, sorted by name so that tests taking the first n are stable. */
export function photoPaths(): string[] {
  return readdirSync(PHOTOS_DIR)
    .filter((name) => name.endsWith('.jpg'))
    .sort()
    .map((name) => join(PHOTOS_DIR, name))
}

/** The bytes of one fixture photo, by file name with or without `.jpg` (e.g. 'chelsea'). */
export async function readPhoto(name: string): Promise<Buffer> {
  return readFile(join(PHOTOS_DIR, name.endsWith('.jpg') ? name : `${name}.jpg`))
}
