// The IR verifier (lint): SSA and topological order, consistent use lists, unique
// names, recorded types equal to inferred types. Failures name the node and show the graph.

import { InvariantError } from "../core/diagnostics.ts";
import { numel } from "../core/tensor.ts";
import type { Graph, Node, Value } from "./graph.ts";
import { inferTypes } from "./infer.ts";
import { printGraph, printNode } from "./print.ts";
import { formatType, sameType } from "./types.ts";

export class VerifyError extends InvariantError {
  constructor(
    message: string,
    readonly graphText: string,
  ) {
    super(message);
    this.name = "VerifyError";
  }
}

export function verifyGraph(g: Graph, context = ""): void {
  const fail = (msg: string, node?: Node): never => {
    const where = node ? ` at ${printNode(node)}` : "";
    const text = printGraph(g);
    const shown = text.length > 20000 ? text.slice(0, 20000) + "\n…" : text;
    throw new VerifyError(`IR verification failed${context ? ` after ${context}` : ""}: ${msg}${where}\n${shown}`, text);
  };
  const defined = new Set<Value>();
  const names = new Set<string>();
  const define = (v: Value) => {
    if (defined.has(v)) fail(`value %${v.name} defined twice`);
    if (names.has(v.name)) fail(`name %${v.name} used by two values`);
    defined.add(v);
    names.add(v.name);
  };
  for (const v of g.inputs) {
    if (!v.isInput || v.producer || v.data) fail(`graph input %${v.name} is not a plain input`);
    define(v);
  }
  for (const c of g.constants) {
    if (!c.data || c.producer) fail(`constant %${c.name} has no data`);
    if (c.data!.dtype !== c.type.dtype || numel(c.data!.shape) !== c.data!.data.length)
      fail(`constant %${c.name} data does not match ${formatType(c.type)}`);
    if (c.type.shape.some((d, i) => d !== c.data!.shape[i]) || c.type.shape.length !== c.data!.shape.length)
      fail(`constant %${c.name} type ${formatType(c.type)} differs from its data shape [${c.data!.shape}]`);
    define(c);
  }
  const inGraph = new Set(g.nodes);
  for (const n of g.nodes) {
    for (const v of n.inputs) {
      if (!defined.has(v)) fail(`input %${v.name} is not defined before use`, n);
      if (!v.users.has(n)) fail(`use list of %${v.name} misses this node`, n);
    }
    let inferred;
    try {
      inferred = inferTypes(n.op, n.inputs.map((v) => v.type), n.attrs);
    } catch (e) {
      fail((e as Error).message, n);
    }
    if (inferred!.length !== n.outputs.length) fail(`has ${n.outputs.length} outputs, op gives ${inferred!.length}`, n);
    n.outputs.forEach((o, i) => {
      if (o.producer !== n) fail(`output %${o.name} does not point back to its producer`, n);
      if (!sameType(o.type, inferred![i]!)) fail(`output %${o.name} is ${formatType(o.type)}, inference gives ${formatType(inferred![i]!)}`, n);
      define(o);
    });
  }
  for (const v of defined)
    for (const u of v.users) if (!inGraph.has(u)) fail(`%${v.name} lists a user that is not in the graph (${u.op}#${u.id})`);
  const outNames = new Set<string>();
  for (const o of g.outputs) {
    if (!defined.has(o.value)) fail(`graph output ${o.name} reads undefined %${o.value.name}`);
    if (outNames.has(o.name)) fail(`graph output ${o.name} declared twice`);
    outNames.add(o.name);
  }
}
