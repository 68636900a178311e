// The IR graph: SSA values that know their producer and users, nodes with ONNX-like
// ops, constants (initialisers). The graph mutates only through its own methods.

import { InvariantError, invariant } from "../core/diagnostics.ts";
import type { Tensor } from "../core/tensor.ts";
import { inferTypes } from "./infer.ts";
import type { Attrs, OpKind } from "./ops.ts";
import type { ValueType } from "./types.ts";

export class Value {
  /** Producing node; null for graph inputs and constants. */
  producer: Node | null = null;
  /** Data of a constant (initialiser); null otherwise. */
  data: Tensor | null = null;
  isInput = false;
  /** Nodes reading this value (each once, even if it reads it twice). */
  readonly users = new Set<Node>();
  constructor(
    readonly id: number,
    public name: string,
    public type: ValueType,
  ) {}
  get isConstant(): boolean {
    return this.data !== null;
  }
}

export class Node {
  constructor(
    readonly id: number,
    readonly op: OpKind,
    public inputs: Value[],
    public outputs: Value[],
    public attrs: Attrs,
    /** Where the node comes from (`scenario_layers.page.0.experts.1`), for names, stats and errors. */
    public scope: string,
  ) {}
}

export interface GraphOutput {
  name: string;
  value: Value;
}

export interface AddNodeOptions {
  scope?: string;
  /** Base names for the outputs (made unique). */
  names?: string[];
}

export class Graph {
  readonly inputs: Value[] = [];
  readonly constants: Value[] = [];
  readonly outputs: GraphOutput[] = [];
  nodes: Node[] = [];
  /** Free-form key/value metadata carried to the ONNX model's metadata_props. */
  metadata: Record<string, string> = {};
  private nextId = 0;
  private readonly names = new Set<string>();

  constructor(public name: string) {}

  /** A name not yet used in this graph, derived from `base`. */
  uniqueName(base: string): string {
    if (!this.names.has(base)) {
      this.names.add(base);
      return base;
    }
    for (let i = 1; ; i++) {
      const n = `${base}_${i}`;
      if (!this.names.has(n)) {
        this.names.add(n);
        return n;
      }
    }
  }

  private newValue(name: string, type: ValueType): Value {
    return new Value(this.nextId++, this.uniqueName(name), type);
  }

  addInput(name: string, type: ValueType): Value {
    invariant(!this.names.has(name), `graph input name ${name} already used`);
    const v = this.newValue(name, type);
    v.isInput = true;
    this.inputs.push(v);
    return v;
  }

  addConstant(name: string, data: Tensor): Value {
    const v = this.newValue(name, { dtype: data.dtype, shape: [...data.shape] });
    v.data = data;
    this.constants.push(v);
    return v;
  }

  /** Append a node; output types come from shape inference. Returns its outputs. */
  addNode(op: OpKind, inputs: Value[], attrs: Attrs = {}, opts: AddNodeOptions = {}): Value[] {
    const types = inferTypes(op, inputs.map((v) => v.type), attrs, () => opts.scope ?? "");
    const node = new Node(this.nextId++, op, [...inputs], [], attrs, opts.scope ?? "");
    node.outputs = types.map((t, i) => {
      const v = this.newValue(opts.names?.[i] ?? `t${this.nextId}`, t);
      v.producer = node;
      return v;
    });
    for (const v of inputs) v.users.add(node);
    this.nodes.push(node);
    return node.outputs;
  }

  /** Single-output convenience over addNode. */
  op(op: OpKind, inputs: Value[], attrs: Attrs = {}, opts: AddNodeOptions = {}): Value {
    const outs = this.addNode(op, inputs, attrs, opts);
    invariant(outs.length === 1, `${op} has ${outs.length} outputs; use addNode`);
    return outs[0]!;
  }

  setOutput(name: string, value: Value): void {
    invariant(!this.outputs.some((o) => o.name === name), `graph output ${name} set twice`);
    this.outputs.push({ name, value });
  }

  /** Every reader of `from` (nodes and graph outputs) reads `to` instead. */
  replaceAllUsesWith(from: Value, to: Value): void {
    if (from === to) return;
    for (const node of [...from.users]) {
      node.inputs = node.inputs.map((v) => (v === from ? to : v));
      to.users.add(node);
    }
    from.users.clear();
    for (const o of this.outputs) if (o.value === from) o.value = to;
  }

  /** Give `v` a name no other value has (e.g. a graph output's name, once its old producer is gone). */
  renameValue(v: Value, name: string): void {
    if (v.name === name) return;
    invariant(!this.names.has(name), `value name ${name} already used`);
    this.names.delete(v.name);
    this.names.add(name);
    v.name = name;
  }

  /** Whether a value or input of this graph has this name. */
  hasName(name: string): boolean {
    return this.names.has(name);
  }

  /** Replace one input of one node. */
  setNodeInput(node: Node, index: number, value: Value): void {
    const old = node.inputs[index];
    invariant(old !== undefined, `node ${node.op}#${node.id} has no input ${index}`);
    node.inputs[index] = value;
    value.users.add(node);
    if (!node.inputs.includes(old)) old.users.delete(node);
  }

  isGraphOutput(v: Value): boolean {
    return this.outputs.some((o) => o.value === v);
  }

  /** Remove nodes whose outputs nobody reads. Removal of a node still in use throws and changes nothing. */
  removeNodes(dead: Iterable<Node>): void {
    const set = new Set(dead);
    for (const n of set)
      for (const out of n.outputs) {
        if (this.isGraphOutput(out)) throw new InvariantError(`cannot remove ${n.op}#${n.id}: ${out.name} is a graph output`);
        for (const u of out.users)
          if (!set.has(u)) throw new InvariantError(`cannot remove ${n.op}#${n.id}: ${out.name} is read by ${u.op}#${u.id}`);
      }
    for (const n of set) {
      for (const v of n.inputs) v.users.delete(n);
      for (const out of n.outputs) this.names.delete(out.name);
    }
    this.nodes = this.nodes.filter((n) => !set.has(n));
  }

  /** Drop constants that no node and no output reads. */
  removeUnusedConstants(): number {
    const keep = this.constants.filter((c) => c.users.size > 0 || this.isGraphOutput(c));
    const removed = this.constants.length - keep.length;
    for (const c of this.constants) if (!keep.includes(c)) this.names.delete(c.name);
    this.constants.splice(0, this.constants.length, ...keep);
    return removed;
  }

  /** Reorder nodes so every node follows its inputs' producers (stable for already-sorted graphs). */
  toposort(): void {
    const placed = new Set<Node>();
    const order: Node[] = [];
    const visit = (n: Node, stack: Set<Node>) => {
      if (placed.has(n)) return;
      if (stack.has(n)) throw new InvariantError(`cycle through ${n.op}#${n.id}`);
      stack.add(n);
      for (const v of n.inputs) if (v.producer) visit(v.producer, stack);
      stack.delete(n);
      placed.add(n);
      order.push(n);
    };
    for (const n of this.nodes) visit(n, new Set());
    this.nodes = order;
  }

  /** Number of scalar parameters held in float constants. */
  parameterCount(): number {
    let n = 0;
    for (const c of this.constants) if (c.users.size > 0 || this.isGraphOutput(c)) n += c.data!.data.length;
    return n;
  }

  /** A deep copy of the structure; constant data is shared (constants are immutable). */
  clone(): Graph {
    const g = new Graph(this.name);
    g.metadata = { ...this.metadata };
    const map = new Map<Value, Value>();
    const copyValue = (v: Value): Value => {
      const c = new Value(v.id, v.name, { dtype: v.type.dtype, shape: [...v.type.shape] });
      c.data = v.data;
      c.isInput = v.isInput;
      g.names.add(v.name);
      map.set(v, c);
      return c;
    };
    for (const v of this.inputs) g.inputs.push(copyValue(v));
    for (const v of this.constants) g.constants.push(copyValue(v));
    for (const n of this.nodes) {
      const inputs = n.inputs.map((v) => {
        const m = map.get(v);
        invariant(m, `clone: ${v.name} used before definition`);
        return m;
      });
      const node = new Node(n.id, n.op, inputs, [], structuredClone(n.attrs), n.scope);
      node.outputs = n.outputs.map((o) => {
        const c = copyValue(o);
        c.producer = node;
        return c;
      });
      for (const v of inputs) v.users.add(node);
      g.nodes.push(node);
    }
    for (const o of this.outputs) g.outputs.push({ name: o.name, value: map.get(o.value)! });
    g.nextId = this.nextId;
    return g;
  }
}
