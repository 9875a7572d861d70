import { chmod, rename } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { startServerProcess } from '../helpers/process.js'
import { removeTempDirs } from '../helpers/tiny-model.js'
import { tinyRepository, waitFor, writeTinyModelFolder } from '../helpers/versioned-models.js'

/**
 * Regression: a model folder or file the server's user may not read (the classic uid mismatch on
 * a host mount) was reported as missing ("config.json: is missing. Fix: Write one with npm run
 * model:add …"), sending people to look for a file that was there. Root reads whatever the mode
 * says, so as root the server runs as nobody; as anyone else, as the test's own user.
 */

const NOBODY = { uid: 65534, gid: 65534 }
const isRoot = process.getuid?.() === 0
const user = isRoot ? NOBODY : undefined
const DENIED = /cannot be read by this process \(permission denied\)\. Fix: Check the owner and mode/

afterAll(removeTempDirs)

interface IndexEntry {
  name: string
  state: string
  reason: string
}

/** A repository of tiny models that `user` can read, as a mounted one it was meant to read. */
async function readableRepository(folders: Record<string, object>): Promise<string> {
  const root = await tinyRepository(folders)
  await chmod(root, 0o755)
  return root
}

describe.skipIf(process.getuid === undefined)('model files the server may not read', () => {
  it('at start-up: a folder it may not enter, and a model file it may not read, are named as unreadable, not missing', async () => {
    const root = await readableRepository({ alpha: {} })
    await chmod(join(root, 'alpha'), 0o000)
    const folder = await startServerProcess(['--model-repository', root, '--provider', 'cpu'], {}, user).catch((e: unknown) => e as Error)
    expect(folder).toBeInstanceOf(Error)
    expect((folder as Error).message).toMatch(/alpha[/\\]config\.json: cannot be read by this process \(permission denied\)/)
    expect((folder as Error).message).not.toMatch(/is missing/)

    await chmod(join(root, 'alpha'), 0o755)
    await chmod(join(root, 'alpha', 'model.onnx'), 0o000)
    const file = await startServerProcess(['--model-repository', root, '--provider', 'cpu'], {}, user).catch((e: unknown) => e as Error)
    expect(file).toBeInstanceOf(Error)
    expect((file as Error).message).toMatch(/alpha[/\\]model\.onnx: cannot be read by this process \(permission denied\)\. Fix: .*uid \d+/)
  })

  it('poll mode: the index gives the reason, and fixing the mode (no file rewritten) loads the model at the next look', async () => {
    const root = await readableRepository({ alpha: {} })
    const server = await startServerProcess(
      ['--model-repository', root, '--provider', 'cpu', '--model-control-mode', 'poll', '--repository-poll-secs', '1'],
      {},
      user
    )
    const index = async (): Promise<IndexEntry[]> =>
      (await (await fetch(`${server.url}/v2/repository/index`, { method: 'POST', body: '{}' })).json()) as IndexEntry[]
    try {
      const staging = await tinyRepository({})
      await writeTinyModelFolder(staging, 'beta')
      await chmod(join(staging, 'beta', 'labels.txt'), 0o000)
      // Renamed into place whole, so the first look sees the folder complete.
      await rename(join(staging, 'beta'), join(root, 'beta'))
      await waitFor('the failed load', async () =>
        (await index()).some((e) => e.name === 'beta' && e.reason !== 'unloaded' && e.reason !== '')
      )
      const failed = (await index()).find((e) => e.name === 'beta')!
      expect(failed.reason).toMatch(/beta[/\\]labels\.txt: /)
      expect(failed.reason).toMatch(DENIED)

      await chmod(join(root, 'beta', 'labels.txt'), 0o644)
      await waitFor('the load after the fix', async () => (await index()).some((e) => e.name === 'beta' && e.state === 'READY'))
    } finally {
      server.child.kill('SIGTERM')
      await server.exited
    }
  })
})
