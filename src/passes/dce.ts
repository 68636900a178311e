// Dead-code elimination: drop nodes whose outputs reach no graph output, and
// constants nobody reads.

import type { Graph, Node } from "../ir/graph.ts";
import { type Pass, bump } from "./pass.ts";

export function eliminateDeadCode(graph: Graph): { nodes: number; constants: number } {
  const live = new Set<Node>();
  const stack = graph.outputs.map((o) => o.value.producer).filter((n): n is Node => n !== null);
  while (stack.length) {
    const n = stack.pop()!;
    if (live.has(n)) continue;
    live.add(n);
    for (const v of n.inputs) if (v.producer && !live.has(v.producer)) stack.push(v.producer);
  }
  const dead = graph.nodes.filter((n) => !live.has(n));
  graph.removeNodes(dead);
  const constants = graph.removeUnusedConstants();
  return { nodes: dead.length, constants };
}

export const dce: Pass = {
  id: "dce",
  summary: "remove nodes and constants that no output depends on",
  run(graph, ctx) {
    const { nodes, constants } = eliminateDeadCode(graph);
    bump(ctx, "nodes-removed", nodes);
    bump(ctx, "constants-removed", constants);
    return { graph, changed: nodes + constants > 0 };
  },
};
