// node matmul-integer.mjs CASE.json
// One MatMulInteger (uint8 activations x int8 weights, the dynamic-int8 product) under
// onnxruntime-node and onnxruntime-web's wasm build; prints each one's int32 output as JSON for
// tests/test_js.py to compare with exact integer arithmetic.
import { readFileSync } from 'node:fs';
import * as ortNode from 'onnxruntime-node';
import * as ortWeb from 'onnxruntime-web';

ortWeb.env.wasm.numThreads = 1;
const c = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const out = {};
for (const [name, ort] of [['ort_node', ortNode], ['ort_web', ortWeb]]) {
  const session = await ort.InferenceSession.create(readFileSync(c.model));
  const { y } = await session.run({ x: new ort.Tensor('uint8', Uint8Array.from(c.x), c.dims) });
  out[name] = Array.from(y.data);
}
console.log(JSON.stringify(out));
