// Builds safetensors files byte by byte for tests, including broken and hostile ones.

/** 8-byte LE header length (overridable, to lie), the header text, then `data`. */
export function craft(header: string | object, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): Uint8Array {
  const text = typeof header === "string" ? header : JSON.stringify(header);
  const h = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

export function f32Bytes(values: number[]): Uint8Array {
  const out = new Uint8Array(4 * values.length);
  const v = new DataView(out.buffer);
  values.forEach((x, i) => v.setFloat32(4 * i, x, true));
  return out;
}

export function u16Bytes(bits: number[]): Uint8Array {
  const out = new Uint8Array(2 * bits.length);
  const v = new DataView(out.buffer);
  bits.forEach((b, i) => v.setUint16(2 * i, b, true));
  return out;
}

export function f64Bytes(values: number[]): Uint8Array {
  const out = new Uint8Array(8 * values.length);
  const v = new DataView(out.buffer);
  values.forEach((x, i) => v.setFloat64(8 * i, x, true));
  return out;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Run `fn`, expect an AesmError, return its diagnostics for exact comparison. */
export function diagnosticsOf(fn: () => unknown): { code: string; path: string; message: string; file?: string }[] {
  try {
    fn();
  } catch (e) {
    const d = (e as { diagnostics?: unknown }).diagnostics;
    if (!Array.isArray(d)) throw e;
    return d as { code: string; path: string; message: string; file?: string }[];
  }
  throw new Error("expected an AesmError, nothing was thrown");
}
