// A deterministic text form of the IR, compared by pass tests and shown by --print-after:
//   %h3 : f32[batch,64] = MatMul(%h2, %W) {…}  # scope

import type { Attrs } from "./ops.ts";
import type { Graph, Node, Value } from "./graph.ts";
import { formatType } from "./types.ts";

function formatAttrs(attrs: Attrs): string {
  const keys = Object.keys(attrs).sort();
  if (keys.length === 0) return "";
  return ` {${keys.map((k) => `${k}=${JSON.stringify(attrs[k])}`).join(", ")}}`;
}

function ref(v: Value): string {
  return `%${v.name}`;
}

export function printNode(n: Node): string {
  const outs = n.outputs.map((o) => `${ref(o)} : ${formatType(o.type)}`).join(", ");
  const scope = n.scope ? `  # ${n.scope}` : "";
  return `${outs} = ${n.op}(${n.inputs.map(ref).join(", ")})${formatAttrs(n.attrs)}${scope}`;
}

export interface PrintOptions {
  /** Print constants' names and types (default true). */
  constants?: boolean;
  /** Omit node scopes (default false). */
  noScopes?: boolean;
}

export function printGraph(g: Graph, opts: PrintOptions = {}): string {
  const lines: string[] = [];
  lines.push(`graph ${g.name}(${g.inputs.map((v) => `${ref(v)} : ${formatType(v.type)}`).join(", ")}) {`);
  if (opts.constants !== false)
    for (const c of g.constants) lines.push(`  const ${ref(c)} : ${formatType(c.type)}`);
  for (const n of g.nodes) {
    const line = printNode(n);
    lines.push(`  ${opts.noScopes ? line.replace(/ {2}# .*$/, "") : line}`);
  }
  lines.push(`  return ${g.outputs.map((o) => (o.name === o.value.name ? ref(o.value) : `${o.name}=${ref(o.value)}`)).join(", ")}`);
  lines.push("}");
  return lines.join("\n") + "\n";
}
