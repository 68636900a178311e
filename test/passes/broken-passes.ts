// Deliberately faulty passes, injected through the library API (and, mocked into the registry,
// through the CLI) to show that verify-each and bisect catch a pass and name it.

import type { Graph, Node } from "../../src/ir/graph.ts";
import type { Pass } from "../../src/passes/pass.ts";

/** The Sigmoid that makes task `task`'s probability, found through the shape ops after it. */
function towerSigmoid(g: Graph, task: string): Node {
  let v = g.outputs.find((o) => o.name === task)?.value;
  while (v?.producer && v.producer.op !== "Sigmoid" && ["Squeeze", "Reshape", "Identity"].includes(v.producer.op)) v = v.producer.inputs[0];
  if (!v?.producer || v.producer.op !== "Sigmoid") throw new Error(`no Sigmoid behind output ${task}`);
  return v.producer;
}

/**
 * Doubles task `task`'s tower output bias: logit' = logit + bias, i.e. x·wᵀ + 2·bias, reading the
 * bias from the lowered graph's constant. A wrong fold of the kind a bias-folding pass could make.
 */
export function towerBiasTimesTwo(task = "ctr"): Pass {
  return {
    id: "tower-bias-x2",
    summary: `(broken on purpose) adds towers.${task}.out.bias a second time`,
    run(g) {
      const sig = towerSigmoid(g, task);
      const bias = g.constants.find((c) => c.name === `towers.${task}.out.bias`);
      if (!bias) throw new Error(`no constant towers.${task}.out.bias`);
      const logit = sig.inputs[0]!;
      const shifted = g.op("Add", [logit, bias], {}, { scope: sig.scope, names: [`${logit.name}.broken`] });
      g.setNodeInput(sig, 0, shifted);
      return { graph: g, changed: true };
    },
  };
}

/** Leaves the graph valid but records a wrong type on a value: the IR verifier must name the pass. */
export const mistypedOutput: Pass = {
  id: "mistyped-output",
  summary: "(broken on purpose) records a wrong shape on the first node's output",
  run(g) {
    const v = g.nodes[0]!.outputs[0]!;
    v.type = { dtype: v.type.dtype, shape: [...v.type.shape, 7] };
    return { graph: g, changed: true };
  },
};

/** Throws from inside run(), as a pass with a bug might. */
export const throwingPass: Pass = {
  id: "throwing-pass",
  summary: "(broken on purpose) throws",
  run() {
    throw new TypeError("cannot read properties of undefined (reading 'inputs')");
  },
};
