// node transformers.mjs BUNDLE "a gripping film" "dull and long"   (BUNDLE: a `bertpress export` folder)
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { env, pipeline } from '@huggingface/transformers';

const [dir, ...texts] = process.argv.slice(2);
const meta = JSON.parse(readFileSync(path.join(dir, 'bertpress.json'), 'utf8'));
env.allowRemoteModels = false; // local files only, never the hub
env.localModelPath = path.dirname(path.resolve(dir));
// config.json tells transformers.js which file to load (dtype fp32: onnx/model.onnx, q8: onnx/model_quantized.onnx)
const classify = await pipeline('text-classification', path.basename(path.resolve(dir)), {
  session_options: meta.details.model.js_session_options,
});
for (const text of texts) {
  console.log(JSON.stringify({ text, ranked: await classify(text, { top_k: null }) }));
}
