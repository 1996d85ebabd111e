// The page's classifier: transformers.js's text-classification pipeline on the model in ./model,
// with onnxruntime-web's wasm files from ./vendor. Everything it fetches is in this folder.
import { env, pipeline } from './vendor/transformers.min.js';

const $ = (id) => document.getElementById(id);
const here = (path) => new URL(path, location.href).href;

async function main() {
  // What the export recorded: labels, dtype (model file), session options, wasm file names.
  const meta = await (await fetch(here('bertpress.json'))).json();
  const web = meta.details.web;
  env.allowRemoteModels = false; // never the Hugging Face hub
  env.allowLocalModels = true;
  // A path, not a URL: transformers.js 4.3.2 skips its local-file lookup for http(s) URLs.
  env.localModelPath = new URL('./', location.href).pathname;
  env.backends.onnx.wasm.wasmPaths = { mjs: here(web.wasm.mjs), wasm: here(web.wasm.wasm) };
  env.backends.onnx.wasm.proxy = false;
  const classify = await pipeline('text-classification', web.model_dir, {
    dtype: web.dtype,
    device: web.device,
    // e.g. keep ONNX Runtime from re-fusing SkipLayerNormalization, which the export left out
    session_options: web.session_options,
  });
  // A sentence-pair model (bertpress.json columns.text_pair, e.g. MRPC) takes two texts. transformers.js
  // 4.3's text-classification pipeline takes single texts only, so a pair goes through its tokenizer
  // (text_pair: [CLS] a [SEP] b [SEP], token types 0/1, as in Python) and model, then a softmax here.
  const pairs = Boolean(meta.columns && meta.columns.text_pair);
  const rank = async (text, textPair) => {
    if (!pairs) return classify(text, { top_k: null });
    const inputs = classify.tokenizer(text, { text_pair: textPair, padding: true, truncation: true });
    const row = Array.from((await classify.model(inputs)).logits.data);
    const top = Math.max(...row);
    const exps = row.map((x) => Math.exp(x - top));
    const sum = exps.reduce((a, b) => a + b, 0);
    return exps.map((e, i) => ({ label: meta.labels[i], score: e / sum })).sort((a, b) => b.score - a.score);
  };
  if (pairs) {
    $('text_pair').hidden = false;
    $('text').placeholder = `First text (${meta.columns.text})`;
    $('text_pair').placeholder = `Second text (${meta.columns.text_pair})`;
  }
  const times = [];
  $('status').textContent = `ready: ${meta.labels.length} labels, ${web.dtype} model, ` +
    `transformers.js ${web.runtime['@huggingface/transformers']}, onnxruntime-web ${web.runtime['onnxruntime-web']}`;
  $('text').disabled = $('text_pair').disabled = $('classify').disabled = false;
  $('text').focus();
  $('form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = $('text').value.trim();
    const textPair = $('text_pair').value.trim();
    if (!text || (pairs && !textPair)) return;
    $('classify').disabled = true;
    try {
      const t0 = performance.now();
      const ranked = await rank(text, textPair);
      const ms = performance.now() - t0;
      times.push(ms);
      show(ranked, ms, times);
    } catch (err) {
      fail(err);
    } finally {
      $('classify').disabled = false;
    }
  });
}

function show(ranked, ms, times) {
  $('label').textContent = ranked[0].label;
  $('label').className = '';
  $('scores').replaceChildren(...ranked.map(({ label, score }) => {
    const row = document.createElement('div');
    row.className = 'row';
    row.dataset.label = label;
    row.dataset.score = String(score);
    row.innerHTML = '<span></span><div class="bar"><div></div></div><span class="score"></span>';
    row.children[0].textContent = label;
    row.children[1].firstChild.style.width = `${(100 * score).toFixed(1)}%`;
    row.children[2].textContent = score.toFixed(4);
    return row;
  }));
  // The first call also warms ONNX Runtime up; the median is over the calls after it.
  const warm = [...times.slice(1)].sort((a, b) => a - b);
  const median = warm.length ? ` · median ${warm[Math.floor((warm.length - 1) / 2)].toFixed(1)} ms over ` +
    `${warm.length} call(s) after the first` : ' (first call, includes warm-up)';
  $('latency').textContent = `${ms.toFixed(1)} ms this call${median}`;
  const result = $('result');
  result.dataset.ms = String(ms);
  result.dataset.calls = String(times.length);
}

function fail(err) {
  $('status').textContent = `error: ${err?.message ?? err}`;
  $('status').dataset.error = '1';
  console.error(err);
}

main().catch(fail);
