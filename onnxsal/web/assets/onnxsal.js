// onnxsal in the browser: saliency maps of an exported explainer on onnxruntime-web.
// load(base) -> explainer; preprocess(image, meta) -> tensor; explain(explainer, tensor,
// options) -> map; render(map, explainer, options) -> ImageData. The gradient graphs come
// from `onnxsal export --web`; input x gradient, SmoothGrad and Integrated Gradients are
// loops over the vanilla graph with the Python methods' semantics.

const ort = () => globalThis.ort;

// options.threads: WASM threads (they need a cross-origin isolated page; default: the
// runtime's choice).
export async function load(base = ".", options = {}) {
  const root = base.endsWith("/") ? base : base + "/";
  const meta = await (await fetch(root + "onnxsal.json")).json();
  const runtime = new URL(meta.runtime.base, new URL(root, location.href)).href;
  ort().env.wasm.wasmPaths = runtime;
  if (options.threads) ort().env.wasm.numThreads = options.threads;
  const provider = (await webgpuWorks()) ? "webgpu" : "wasm";
  // the graphs' weights, shared by all of them: fetched once
  const weights = meta.weights
    ? new Uint8Array(await (await fetch(root + meta.weights)).arrayBuffer())
    : null;
  return { root, meta, provider, weights, sessions: {} };
}

async function webgpuWorks() {
  try {
    return !!(navigator.gpu && (await navigator.gpu.requestAdapter()));
  } catch {
    return false;
  }
}

async function session(ex, method) {
  if (!ex.sessions[method]) {
    const url = ex.root + ex.meta.graphs[method];
    const externalData = ex.weights ? [{ path: ex.meta.weights, data: ex.weights }] : undefined;
    try {
      ex.sessions[method] = await ort().InferenceSession.create(url, {
        executionProviders: [ex.provider],
        externalData,
      });
    } catch (err) {
      if (ex.provider === "wasm") throw err;
      ex.provider = "wasm"; // WebGPU could not take this graph: the CPU can
      ex.sessions[method] = await ort().InferenceSession.create(url, {
        executionProviders: ["wasm"],
        externalData,
      });
    }
  }
  return ex.sessions[method];
}

// A picture (img, canvas, ImageBitmap) -> Float32Array in the model's layout (NCHW or
// NHWC), as the recorded preprocessing says (centre crop, resize by the browser, scale,
// mean, std).
export function preprocess(image, meta) {
  const p = meta.preprocess;
  const [h, w] = p.size;
  const iw = image.naturalWidth || image.width, ih = image.naturalHeight || image.height;
  let sx = 0, sy = 0, sw = iw, sh = ih;
  if (p.crop) {
    const side = p.crop * Math.min(iw, ih);
    sx = (iw - side) / 2; sy = (ih - side) / 2; sw = side; sh = side;
  }
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "white";
  ctx.fillRect(0, 0, w, h);
  ctx.drawImage(image, sx, sy, sw, sh, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const order = p.channel_order === "L" ? [-1] : p.channel_order === "BGR" ? [2, 1, 0] : [0, 1, 2];
  const c = order.length, last = meta.layout === "NHWC";
  const out = new Float32Array(c * h * w);
  order.forEach((source, k) => {
    const mean = p.mean[k % p.mean.length], std = p.std[k % p.std.length];
    for (let i = 0; i < h * w; i++) {
      const v = source < 0
        ? 0.299 * rgba[4 * i] + 0.587 * rgba[4 * i + 1] + 0.114 * rgba[4 * i + 2]
        : rgba[4 * i + source];
      out[last ? i * c + k : k * h * w + i] = (v * p.scale - mean) / std;
    }
  });
  return out;
}

async function gradient(ex, graph, x, target) {
  const s = await session(ex, graph);
  const shape = ex.meta.shape;
  const feeds = {
    [ex.meta.input]: new (ort().Tensor)("float32", x, shape),
    target: new (ort().Tensor)("int64", BigInt64Array.from([BigInt(target)]), [1]),
  };
  const out = await s.run(feeds);
  return {
    attribution: out.attribution.data,
    score: out.score.data[0],
    target: Number(out.target_index.data[0]),
    logits: out.unit_scores.data,
  };
}

// Standard normal draws from a seeded generator (mulberry32 + Box-Muller).
export function normals(count, seed = 0) {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Float64Array(count);
  for (let i = 0; i < count; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - uniform())), phi = 2 * Math.PI * uniform();
    out[i] = r * Math.cos(phi);
    if (i + 1 < count) out[i + 1] = r * Math.sin(phi);
  }
  return out;
}

// The map of `method` for one preprocessed input. options: target (class index; -1 or
// absent: the top class), samples/noise/seed/draws (SmoothGrad: draws = the standard
// normal samples, samples x size, to replay a given run), steps (Integrated Gradients,
// zero baseline, trapezoid rule).
export async function explain(ex, x, options = {}) {
  const method = options.method || "vanilla";
  const started = performance.now();
  let target = options.target ?? -1;
  let result;
  if (ex.meta.graphs[method]) {
    result = await gradient(ex, method, x, target);
  } else if (method === "input_x_gradient") {
    result = await gradient(ex, "vanilla", x, target);
    result.attribution = result.attribution.map((g, i) => g * x[i]);
  } else if (method === "smoothgrad") {
    const first = await gradient(ex, "vanilla", x, target);
    const n = options.samples ?? 50, level = options.noise ?? 0.15;
    let lo = Infinity, hi = -Infinity;
    for (const v of x) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    const sigma = level * (hi - lo);
    const draws = options.draws ?? normals(n * x.length, options.seed ?? 0);
    const sum = new Float64Array(x.length);
    for (let k = 0; k < n; k++) {
      const noisy = x.map((v, i) => v + sigma * draws[k * x.length + i]);
      const g = (await gradient(ex, "vanilla", noisy, first.target)).attribution;
      for (let i = 0; i < x.length; i++) sum[i] += g[i];
    }
    result = { ...first, attribution: Float32Array.from(sum, (v) => v / n) };
  } else if (method === "integrated_gradients") {
    const steps = options.steps ?? 50;
    const first = await gradient(ex, "vanilla", x, target);
    const sum = new Float64Array(x.length);
    for (let k = 0; k < steps; k++) {
      const a = k / (steps - 1), weight = (k === 0 || k === steps - 1 ? 0.5 : 1) / (steps - 1);
      const g = (await gradient(ex, "vanilla", x.map((v) => a * v), first.target)).attribution;
      for (let i = 0; i < x.length; i++) sum[i] += weight * g[i];
    }
    result = { ...first, attribution: Float32Array.from(sum, (v, i) => v * x[i]) };
  } else {
    throw new Error(`unknown method ${method}; the page knows ${Object.keys(ex.meta.methods)}`);
  }
  return { ...result, method, provider: ex.provider, ms: performance.now() - started };
}

function percentile(values, q) {
  const sorted = Float64Array.from(values).sort();
  const pos = (q / 100) * (sorted.length - 1), lo = Math.floor(pos), hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

// The map as the Python pictures draw it on its own: unsigned maps |a| summed over channels
// from their minimum to their 99th percentile (grey); signed maps summed, over the 99th
// percentile of their magnitude, white at zero (red-blue). Returns values in [0, 1].
export function displayMap(attribution, ex, method) {
  const last = ex.meta.layout === "NHWC";
  const [, a, b, d] = ex.meta.shape;
  const [c, h, w] = last ? [d, a, b] : [a, b, d];
  const signed = ex.meta.methods[method]?.signed;
  const m = new Float64Array(h * w);
  for (let k = 0; k < c; k++) {
    for (let i = 0; i < h * w; i++) {
      const v = attribution[last ? i * c + k : k * h * w + i];
      m[i] += signed ? v : Math.abs(v);
    }
  }
  const out = new Float64Array(h * w);
  if (signed) {
    const span = percentile(m.map(Math.abs), 99);
    for (let i = 0; i < m.length; i++) {
      out[i] = span > 0 ? (Math.max(-1, Math.min(1, m[i] / span)) + 1) / 2 : 0.5;
    }
  } else {
    let low = Infinity;
    for (const v of m) low = Math.min(low, v);
    let span = percentile(m, 99) - low;
    if (!(span > 0)) span = Math.max(...m) - low;
    for (let i = 0; i < m.length; i++) {
      out[i] = span > 0 ? Math.max(0, Math.min(1, (m[i] - low) / span)) : 0;
    }
  }
  return { values: out, width: w, height: h, signed };
}

// ImageData of a display map through the exported colormap table; with overlay (an
// ImageData of the picture at the map's size) the overlay colours over it, weighted by
// the map (alpha 0.6), as the Python overlay does.
export function render(display, ex, { overlay = null, alpha = 0.6 } = {}) {
  const table = overlay ? ex.meta.colormaps.overlay
    : display.signed ? ex.meta.colormaps.diverging : ex.meta.colormaps.saliency;
  const image = new ImageData(display.width, display.height);
  display.values.forEach((v, i) => {
    const rgb = table[Math.max(0, Math.min(255, Math.round(v * 255)))];
    for (let k = 0; k < 3; k++) {
      const base = overlay ? overlay.data[4 * i + k] : 0;
      const weight = overlay ? alpha * v : 1;
      image.data[4 * i + k] = Math.round(base * (1 - weight) + rgb[k] * weight);
    }
    image.data[4 * i + 3] = 255;
  });
  return image;
}

export function top(logits, labels, k = 5) {
  const max = Math.max(...logits);
  const exp = Array.from(logits, (v) => Math.exp(v - max));
  const total = exp.reduce((a, b) => a + b, 0);
  return exp.map((e, i) => ({ index: i, label: labels?.[i] ?? String(i), probability: e / total }))
    .sort((a, b) => b.probability - a.probability).slice(0, k);
}
