// A two-level search ranker in the AESM² setting (MODEL.md): page → search scenarios, CTR and CVR
// tasks, automatic expert selection everywhere. search-ranker.json is the same model as JSON.

import { aesm, categorical, defineModel, dense, gate, mlp } from "aesm";

// Gates as in the reference TensorFlow code: batch norm after the output projection, so no bias.
const referenceGate = gate({ batchNorm: true, bias: false });

export default defineModel({
  name: "search-ranker",

  // Inputs, concatenated in this order into x0 (8 + 8 + 4 + 6 = 26 wide).
  // Categorical ids outside [0, vocab) read a zero embedding.
  features: {
    user_id: categorical({ vocab: 1000, dim: 8 }),
    item_id: categorical({ vocab: 5000, dim: 8 }),
    query_cat: categorical({ vocab: 50, dim: 4 }),
    stats: dense(6),
  },

  // Scenario levels, outermost first: each row carries one value per level. Each level has one
  // gate per value; `dim` is the width of the level's indicator embedding.
  scenarios: {
    page: {
      values: ["home", "vertical"],
      dim: 4,
      layers: 1, // stacked expert layers at this level (the default)
      experts: 6,
      expert: mlp([32]), // relu, bias, no batch norm: the defaults
      gate: referenceGate,
      // Per row: the 1 expert most specific to its page, plus the 1 most shared across pages.
      select: aesm({ specific: 1, shared: 1 }),
    },
    search: {
      values: ["brand", "category", "shop"],
      dim: 4,
      experts: 8,
      // Experts with batch norm, as in the reference code; bias off since BN shifts anyway.
      expert: mlp([32], { batchNorm: true, bias: false }),
      gate: referenceGate,
      select: aesm({ specific: 2, shared: 1 }),
    },
  },

  // Multi-task part: two layers whose gates (one per task) are shared by the task streams.
  taskLayers: {
    dim: 4, // task embedding width
    layers: 2,
    experts: 6,
    expert: mlp([16]),
    gate: referenceGate,
    select: aesm({ specific: 1, shared: 1 }),
  },

  // One output probability per task: tower MLP, then Linear(→1) and a sigmoid.
  tasks: {
    ctr: { tower: mlp([16]) },
    cvr: { tower: mlp([16]) },
  },

  // Inference batch norm epsilon (the reference's TensorFlow default).
  batchNorm: { eps: 1e-3 },
});
