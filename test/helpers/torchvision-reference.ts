import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'

/** Debian's python3 with python3-torch, -torchvision and -pil (not a pyenv python earlier on PATH). */
export const PYTHON = '/usr/bin/python3'
const SCRIPT = 'test/python/torchvision_preprocess.py'

/**
 * torchvision's `Resize(resize) + CenterCrop(crop) + ToTensor() + Normalize` of each image, as one
 * Float32Array of the images' CHW tensors in order, computed by test/python/torchvision_preprocess.py
 * into a file under `work`.
 */
export async function torchvisionReference(work: string, photos: readonly string[], resize: number, crop: number): Promise<Float32Array> {
  const out = join(work, 'torchvision.f32')
  await promisify(execFile)(PYTHON, [SCRIPT, '--out', out, '--resize', String(resize), '--crop', String(crop), ...photos])
  // Little-endian float32 from the script; every host these run on is little-endian.
  const bytes = await readFile(out)
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
}
