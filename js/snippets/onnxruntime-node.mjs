// node onnxruntime-node.mjs BUNDLE "a gripping film" "dull and long"   (BUNDLE: a `bertpress export` folder)
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { AutoTokenizer, env } from '@huggingface/transformers';

const [dir, ...texts] = process.argv.slice(2);
const meta = JSON.parse(readFileSync(path.join(dir, 'bertpress.json'), 'utf8'));
env.allowRemoteModels = false; // the tokenizer comes from the bundle, never from the hub
env.localModelPath = path.dirname(path.resolve(dir));
const tokenizer = await AutoTokenizer.from_pretrained(path.basename(path.resolve(dir)));
// js_session_options keeps ONNX Runtime from re-fusing what the export left out (SkipLayerNormalization)
const session = await ort.InferenceSession.create(path.join(dir, 'model.onnx'), meta.details.model.js_session_options);

const enc = tokenizer(texts, { padding: true, truncation: true, max_length: meta.max_length });
const feed = {};
for (const name of session.inputNames) feed[name] = new ort.Tensor('int64', enc[name].data, enc[name].dims);
const { logits } = await session.run(feed);
const n = meta.labels.length;
texts.forEach((text, i) => {
  const row = Array.from(logits.data.slice(i * n, (i + 1) * n));
  console.log(JSON.stringify({ text, label: meta.labels[row.indexOf(Math.max(...row))], logits: row }));
});
