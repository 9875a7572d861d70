import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { VERSION_NAME, type VersionPolicy } from './model-config.js'
import {
  folderNames,
  labelsFile,
  readModelFolder,
  RepositoryError,
  shownPath,
  type ConfigAmendment,
  type ModelFolder
} from './repository.js'

/**
 * Model versions, laid out as Triton lays them out: `models/<name>/config.json` (and labels.txt)
 * beside numbered folders `models/<name>/<n>/model.onnx`. A folder without numbered sub-folders
 * is one version, config.json's `version`. config.json's `versionPolicy` chooses which numbered
 * versions are served (default: the newest one, as Triton).
 */

/** The numbered version folders of a model folder, ascending. */
export async function versionFolders(dir: string): Promise<number[]> {
  let dirents
  try {
    dirents = await readdir(dir, { withFileTypes: true })
  } catch {
    return []
  }
  return (
    await folderNames(
      dir,
      dirents.filter((d) => VERSION_NAME.test(d.name))
    )
  )
    .map(Number)
    .sort((a, b) => a - b)
}

export interface VersionSelection {
  /** Versions to serve, newest first. */
  readonly selected: readonly number[]
  /** Versions a `specific` policy names that have no folder. */
  readonly missing: readonly number[]
}

/** Pure: which of the available versions a policy serves. No policy: the newest one. */
export function selectVersions(available: readonly number[], policy: VersionPolicy | undefined): VersionSelection {
  const newestFirst = [...new Set(available)].sort((a, b) => b - a)
  if (policy === undefined) return { selected: newestFirst.slice(0, 1), missing: [] }
  if ('all' in policy) return { selected: newestFirst, missing: [] }
  if ('latest' in policy) return { selected: newestFirst.slice(0, policy.latest.numVersions), missing: [] }
  const wanted = new Set(policy.specific.versions)
  return {
    selected: newestFirst.filter((v) => wanted.has(v)),
    missing: [...wanted].filter((v) => !newestFirst.includes(v)).sort((a, b) => a - b)
  }
}

export interface PlannedVersion {
  readonly version: string
  /** Where its model file is: the version folder, or the model folder itself. */
  readonly dir: string
}

export interface ModelVersionPlan {
  readonly folder: ModelFolder
  /** The versions to serve, newest first. */
  readonly versions: readonly PlannedVersion[]
}

/** Reads a model folder's config.json (amended by `amend`, when given) and decides which versions to serve; nothing is opened yet. */
export async function planModelVersions(root: string, name: string, amend?: ConfigAmendment): Promise<ModelVersionPlan> {
  const folder = await readModelFolder(root, name, amend)
  const folders = await versionFolders(folder.dir)
  // Without numbered folders the model folder is one version, config.json's; a specific policy must name it too.
  const flat = folders.length === 0
  const { selected, missing } = selectVersions(flat ? [Number(folder.config.version)] : folders, folder.config.versionPolicy)
  if (missing.length > 0) {
    const [problem, fix] = flat
      ? [
          `but the folder has no numbered version folders: it is one version, config.json's version (${folder.config.version}).`,
          `List version ${folder.config.version}, or put each version's model file in a numbered folder (${join(name, String(missing[0]))}/model.onnx).`
        ]
      : [
          `which has no folder (the folders are ${folders.join(', ')}).`,
          `Add the folder ${join(name, String(missing[0]))}/ with its model file, or list only existing versions.`
        ]
    throw new RepositoryError(
      name,
      shownPath(folder.dir, 'config.json'),
      `versionPolicy.specific names version ${missing.join(', ')}, ${problem}`,
      fix
    )
  }
  if (flat) return { folder, versions: [{ version: folder.config.version, dir: folder.dir }] }
  return { folder, versions: selected.map((v) => ({ version: String(v), dir: join(folder.dir, String(v)) })) }
}

/**
 * What a served version depends on: the configuration it was read with (a load's config parameter
 * changes it without touching a file), and as sizes and modification times config.json, its labels
 * and its model file. Two equal fingerprints mean a reload may keep the version's open sessions.
 */
export async function versionFingerprint(plan: ModelVersionPlan, version: PlannedVersion): Promise<string> {
  const { folder } = plan
  const files = await filesFingerprint([
    join(folder.dir, 'config.json'),
    await labelsFile(folder, version.dir),
    join(version.dir, folder.config.file)
  ])
  return `${JSON.stringify(folder.config)}\n${files}`
}

/**
 * A model folder's files two levels deep (the folder and its version folders), as names, sizes,
 * modification times, owners and modes: a change is a version folder added or removed, a file
 * replaced or rewritten, or access to one changed. Undefined when the folder is gone or unreadable.
 */
export async function folderFingerprint(dir: string): Promise<string | undefined> {
  let dirents
  try {
    dirents = await readdir(dir, { withFileTypes: true })
  } catch {
    return undefined
  }
  const paths: string[] = []
  const folders = new Set(await folderNames(dir, dirents))
  for (const d of dirents) {
    if (d.name.startsWith('.')) continue
    if (folders.has(d.name)) {
      if (!VERSION_NAME.test(d.name)) continue
      paths.push(join(dir, d.name))
      try {
        for (const f of await readdir(join(dir, d.name))) if (!f.startsWith('.')) paths.push(join(dir, d.name, f))
      } catch {
        // removed while being read: the next look sees the change
      }
    } else {
      paths.push(join(dir, d.name))
    }
  }
  return filesFingerprint(paths.sort())
}

async function filesFingerprint(paths: readonly string[]): Promise<string> {
  const parts = await Promise.all(
    paths.map(async (path) => {
      try {
        // stat follows links: a model.onnx that links elsewhere changes when its target does.
        // Owner and mode too: a load refused for permissions is tried again once they are fixed.
        const s = await stat(path)
        return s.isDirectory() ? `${path}/:${s.mode}:${s.uid}:${s.gid}` : `${path}:${s.size}:${s.mtimeMs}:${s.mode}:${s.uid}:${s.gid}`
      } catch {
        return `${path}:-`
      }
    })
  )
  return parts.join('\n')
}
