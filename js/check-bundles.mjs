// node check-bundles.mjs CASES.json
// For each case {dir, model, tjs_dir, texts, feed: {name: {data: [...], dims: [...]}}}: the logits of the bundle's
// model file under onnxruntime-node and onnxruntime-web (its wasm build, run in Node), each with
// and without the session options bertpress.json asks for, and transformers.js's own tokenizer
// ids for the case's texts. Prints {dir: {...}} as JSON; tests/test_js.py compares with Python.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as ortNode from 'onnxruntime-node';
import * as ortWeb from 'onnxruntime-web';
import { AutoModelForSequenceClassification, AutoTokenizer, env } from '@huggingface/transformers';

ortWeb.env.wasm.numThreads = 1; // no worker threads: Node runs the wasm build on this thread
env.allowRemoteModels = false;
const cases = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const out = {};
for (const c of cases) {
  const meta = JSON.parse(readFileSync(path.join(c.dir, 'bertpress.json'), 'utf8'));
  const opts = meta.details.model.js_session_options;
  const file = path.join(c.dir, c.model);
  const res = { versions: { 'onnxruntime-node': ortNode.env.versions?.node, 'onnxruntime-web': ortWeb.env.versions?.web } };
  for (const [name, ort] of [['ort_node', ortNode], ['ort_web', ortWeb]]) {
    for (const [variant, options] of [['', opts], ['_plain', {}]]) {
      const extra = {};
      if (name === 'ort_node' && c.optimized_dir) {
        // the graph ORT actually runs, for the test to check which fusions these options left out
        extra.optimizedModelFilePath = path.join(c.optimized_dir, `node${variant || '_ours'}.onnx`);
      }
      const session = await ort.InferenceSession.create(name === 'ort_web' ? readFileSync(file) : file,
        { ...options, ...extra });
      const feed = {};
      for (const n of session.inputNames) {
        feed[n] = new ort.Tensor('int64', BigInt64Array.from(c.feed[n].data, BigInt), c.feed[n].dims);
      }
      const { logits } = await session.run(feed);
      res[name + variant] = { data: Array.from(logits.data), dims: logits.dims };
      await session.release();
    }
  }
  // transformers.js: its tokenizer on the texts, and its model class on the layout (onnx/, dtype)
  // (its file lookups are memoized by model id, not by localModelPath: give each case its own name)
  const tjsDir = path.resolve(c.dir, c.tjs_dir ?? '.');
  env.localModelPath = path.dirname(tjsDir);
  const id = path.basename(tjsDir);
  const tokenizer = await AutoTokenizer.from_pretrained(id);
  const enc = tokenizer(c.texts, { padding: true, truncation: true, max_length: meta.max_length });
  res.tjs_ids = { data: Array.from(enc.input_ids.data, Number), dims: enc.input_ids.dims };
  const model = await AutoModelForSequenceClassification.from_pretrained(id, { session_options: opts });
  const { logits } = await model(enc);
  res.tjs_logits = { data: Array.from(logits.data), dims: logits.dims };
  await model.dispose();
  out[c.dir] = res;
}
console.log(JSON.stringify(out));
