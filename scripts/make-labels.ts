import { writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { IMAGENET_CLASSES } from '@tensorflow-models/mobilenet/dist/imagenet_classes.js'

/**
 * Writes data/imagenet1k-labels.txt: the 1000 ImageNet-1k class names, one per line, line i = class
 * index i (the order every ImageNet-trained ResNet's logits use). The source is the devDependency
 * @tensorflow-models/mobilenet@2.1.1 (Apache-2.0, see data/NOTICE.md); the generated file is
 * committed, so nothing at run time depends on that package.
 *
 *   npx tsx scripts/make-labels.ts
 */

const CLASS_COUNT = 1000
const target = fileURLToPath(new URL('../data/imagenet1k-labels.txt', import.meta.url))

const lines: string[] = []
for (let index = 0; index < CLASS_COUNT; index++) {
  const name = IMAGENET_CLASSES[index]
  if (name === undefined || name.trim() !== name || /[\r\n]/.test(name) || name === '') {
    throw new Error(`class ${index} is missing or not a single trimmed line: ${JSON.stringify(name)}`)
  }
  lines.push(name)
}
if (Object.keys(IMAGENET_CLASSES).length !== CLASS_COUNT) {
  throw new Error(`expected ${CLASS_COUNT} classes, the source has ${Object.keys(IMAGENET_CLASSES).length}`)
}
await writeFile(target, lines.join('\n') + '\n')
console.log(`wrote ${lines.length} labels to ${target}`)
