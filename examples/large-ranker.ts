// A large AESM² ranker for the benchmark (bench/run.ts): 32 experts per layer, 256 wide, and
// automatic selection of 2 specific + 2 shared experts (k = 4 of 32), so sparse dispatch pays.

import { aesm, categorical, defineModel, dense, gate, mlp } from "aesm";

// Gates as in the reference TensorFlow code: batch norm after the output projection, no bias.
const referenceGate = gate({ batchNorm: true, bias: false });

// Per row, 2 experts specific to its scenario (or task) and 2 shared ones: at most 4 of 32.
const select = aesm({ specific: 2, shared: 2 });

export default defineModel({
  name: "large-ranker",

  // 32 + 32 + 16 + 48 = 128 features wide.
  features: {
    user_id: categorical({ vocab: 5_000, dim: 32 }),
    item_id: categorical({ vocab: 10_000, dim: 32 }),
    query_cat: categorical({ vocab: 500, dim: 16 }),
    stats: dense(48),
  },

  scenarios: {
    page: { values: ["home", "vertical", "search", "cart"], dim: 8, experts: 32, expert: mlp([256]), gate: referenceGate, select },
    search: { values: ["brand", "category", "shop"], dim: 8, experts: 32, expert: mlp([256]), gate: referenceGate, select },
  },

  // One task layer: its experts are shared by both task streams (gates per task).
  taskLayers: { dim: 8, experts: 32, expert: mlp([256]), gate: referenceGate, select },

  tasks: {
    ctr: { tower: mlp([64]) },
    cvr: { tower: mlp([64]) },
  },
});
