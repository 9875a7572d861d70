// The demo page: pick or drop an image, POST it raw to /classify, show the top five as bars.
// Plain DOM, no build step; the page's CSP forbids inline code and other origins.

const TOP_K = 5

const form = document.getElementById('classify-form')
const modelSelect = document.getElementById('model-select')
const imageInput = document.getElementById('image-input')
const dropZone = document.getElementById('drop-zone')
const preview = document.getElementById('preview')
const resultRegion = document.getElementById('result')
const statusLine = document.getElementById('status')
const errorLine = document.getElementById('error')
const answer = document.getElementById('answer')
const syntheticWarning = document.getElementById('synthetic-warning')
const predictionList = document.getElementById('predictions')

// The plain file input and submit button are the no-JavaScript fallback; from here on the drop zone
// (a button, so keyboard users reach it) opens the picker, and choosing a file classifies it.
document.documentElement.classList.add('js')
dropZone.hidden = false
imageInput.tabIndex = -1

let currentFile
let previewUrl
// Only the latest request may paint the result; an earlier one still in flight is aborted.
let inFlight

/** Percent for people: one decimal from 1 %, two below, so near-uniform synthetic answers still differ. */
function formatPercent(probability) {
  const percent = probability * 100
  return `${percent.toFixed(percent >= 1 ? 1 : 2)} %`
}

function formatMs(ms) {
  return `${ms.toFixed(ms >= 10 ? 0 : 1)} ms`
}

async function loadModels() {
  let listing
  try {
    const response = await fetch('/models', { headers: { accept: 'application/json' } })
    if (!response.ok) return
    listing = await response.json()
  } catch {
    // Keep "Server default": classifying still works without the list.
    return
  }
  const options = listing.models
    .filter((model) => model.ready)
    .map((model) => {
      const option = document.createElement('option')
      option.value = model.name
      option.textContent = `${model.name} (version ${model.version}${model.synthetic ? ', synthetic weights' : ''})`
      option.selected = model.default
      return option
    })
  if (options.length > 0) modelSelect.replaceChildren(...options)
}

function showPreview(file) {
  if (previewUrl !== undefined) URL.revokeObjectURL(previewUrl)
  previewUrl = URL.createObjectURL(file)
  preview.src = previewUrl
  preview.alt = `Preview of ${file.name}`
  preview.hidden = false
}

function showError(code, message) {
  answer.hidden = true
  statusLine.textContent = ''
  errorLine.replaceChildren()
  const codeElement = document.createElement('code')
  codeElement.textContent = code
  errorLine.append('Error ', codeElement, `: ${message}`)
  errorLine.hidden = false
}

function showAnswer(result) {
  errorLine.hidden = true
  statusLine.textContent = `Top ${result.predictions.length} labels for ${currentFile.name}:`
  syntheticWarning.textContent = result.synthetic ? (result.warning ?? 'This model has synthetic weights: the labels mean nothing.') : ''
  syntheticWarning.hidden = !result.synthetic
  document.getElementById('model-name').textContent = result.model
  document.getElementById('model-version').textContent = result.version
  predictionList.replaceChildren(
    ...result.predictions.map((prediction) => {
      const item = document.createElement('li')
      item.dataset.index = String(prediction.index)
      const label = document.createElement('span')
      label.className = 'label'
      label.textContent = prediction.label
      const bar = document.createElement('span')
      bar.className = 'bar'
      bar.setAttribute('aria-hidden', 'true')
      const fill = document.createElement('span')
      fill.className = 'fill'
      // CSSOM writes are allowed under a CSP without 'unsafe-inline'; style attributes are not.
      fill.style.width = `${Math.min(100, prediction.probability * 100)}%`
      bar.append(fill)
      const percent = document.createElement('span')
      percent.className = 'percent'
      percent.textContent = formatPercent(prediction.probability)
      item.append(label, bar, percent)
      return item
    })
  )
  const timings = result.timings
  document.getElementById('timing-queue').textContent = formatMs(timings.queueMs)
  document.getElementById('timing-preprocess').textContent = formatMs(timings.preprocessMs)
  document.getElementById('timing-inference').textContent = formatMs(timings.inferenceMs)
  document.getElementById('timing-total').textContent = formatMs(timings.totalMs)
  document.getElementById('batch-size').textContent = String(result.batchSize)
  answer.hidden = false
}

async function classify() {
  if (currentFile === undefined) return
  inFlight?.abort()
  const request = new AbortController()
  inFlight = request
  const query = new URLSearchParams({ topk: String(TOP_K) })
  if (modelSelect.value !== '') query.set('model', modelSelect.value)
  // The server decides what the bytes are; a browser that cannot name the type sends it as octets.
  const contentType = currentFile.type.startsWith('image/') ? currentFile.type : 'application/octet-stream'
  resultRegion.setAttribute('aria-busy', 'true')
  statusLine.textContent = `Classifying ${currentFile.name}…`
  try {
    const response = await fetch(`/classify?${query}`, {
      method: 'POST',
      headers: { 'content-type': contentType },
      body: currentFile,
      signal: request.signal
    })
    const body = await response.json().catch(() => undefined)
    if (inFlight !== request) return
    if (response.ok && body !== undefined) showAnswer(body)
    else showError(body?.code ?? `HTTP ${response.status}`, body?.message ?? response.statusText)
  } catch (err) {
    if (inFlight !== request) return
    showError('NETWORK', err instanceof Error ? err.message : String(err))
  } finally {
    if (inFlight === request) resultRegion.removeAttribute('aria-busy')
  }
}

function choose(file) {
  if (file === undefined) return
  currentFile = file
  showPreview(file)
  void classify()
}

dropZone.addEventListener('click', () => imageInput.click())
// A file the browser cannot draw would show a broken image; the server's error says what is wrong.
preview.addEventListener('error', () => {
  preview.hidden = true
})
imageInput.addEventListener('change', () => choose(imageInput.files?.[0]))
modelSelect.addEventListener('change', () => void classify())
form.addEventListener('submit', (event) => {
  event.preventDefault()
  void classify()
})

for (const type of ['dragenter', 'dragover']) {
  dropZone.addEventListener(type, (event) => {
    event.preventDefault()
    dropZone.classList.add('dragging')
  })
}
dropZone.addEventListener('dragleave', () => dropZone.classList.remove('dragging'))
dropZone.addEventListener('drop', (event) => {
  event.preventDefault()
  dropZone.classList.remove('dragging')
  choose(event.dataTransfer?.files?.[0])
})

void loadModels()
