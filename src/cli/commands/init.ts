// `aesm init <name>`: scaffolds `<name>.ts`, a model file that type-checks and compiles as is,
// with a comment on every option, so a new model starts from something that works.

import { basename } from "node:path";
import type { Command } from "commander";
import { writeFileExclusive } from "../../core/atomic.ts";
import { userError } from "../../core/diagnostics.ts";
import type { CommandContext } from "../io.ts";

/** The model's own name (parse.ts): it is recorded in the ONNX and may become a file name. */
const MODEL_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

/** The scaffold for a model called `name`, at `file` (used in the next-steps comment). */
export function modelTemplate(name: string, file: string): string {
  const stem = file.replace(/\.ts$/, "");
  return `// ${name}: a multi-scenario, multi-task mixture-of-experts ranker (AESM² family).
// Scaffolded by \`aesm init\`; every option is shown with a comment. The full reference is
// docs/model-files.md in the aesm package. Next steps:
//   npx aesm init-weights ${file} --seed 1 -o ${stem}.safetensors     (or bring a trained checkpoint)
//   npx aesm compile ${file} -w ${stem}.safetensors -o ${stem}.onnx --emit-client ${stem}.client.ts
//   npx aesm parity ${file} -w ${stem}.safetensors --onnx ${stem}.onnx
//   npx aesm inspect ${file}

// The other builders, topK and fixed, are imported the same way when a policy needs them.
import { aesm, all, categorical, defineModel, dense, gate, mlp } from "aesm";

export default defineModel({
  // Recorded in the compiled ONNX's metadata. Letters, digits, "_", "." and "-".
  name: ${JSON.stringify(name)},

  // Inputs, concatenated in this order into x0; each name becomes an ONNX input.
  //   categorical({ vocab, dim })  an integer id per row, looked up in a [vocab, dim] table
  //                                (ids outside [0, vocab) read a zero embedding)
  //   dense(dim)                   a vector of \`dim\` numbers per row
  features: {
    user_id: categorical({ vocab: 10_000, dim: 8 }),
    item_id: categorical({ vocab: 50_000, dim: 8 }),
    context: dense(4),
  },

  // Scenario levels, outermost first; each row carries one value per level, and each level
  // becomes an ONNX input (the value's index).
  scenarios: {
    page: {
      values: ["home", "search"], // at least 2; one gate per value
      dim: 4, // width of the level's indicator embedding
      layers: 1, // stacked expert layers at this level (default 1)
      experts: 4, // experts per layer
      // mlp(units, { act, batchNorm, bias }): one Linear per entry of units, then batch norm if
      // batchNorm (default false), then act: "relu" (default), "tanh", "leaky_relu", "gelu",
      // "sigmoid" or "none". bias defaults to !batchNorm. All experts share the output width.
      expert: mlp([32]),
      // gate({ units, act, batchNorm, bias }): optional hidden units, then Linear(→ experts).
      // Defaults: no hidden units, no batch norm, bias. The reference TF code uses
      // gate({ batchNorm: true, bias: false }).
      gate: gate(),
      // How each row mixes the experts:
      //   aesm({ specific, shared })  AESM²: the \`specific\` experts most specific to the row's
      //                               value plus the \`shared\` most shared ones (optional: eps,
      //                               mask: "reference" to reproduce the TF code's masking)
      //   all()                       MMoE: softmax over every expert
      //   topK(k)                     softmax over the k largest gate logits
      //   fixed({ specific: { home: [0], search: [1] }, shared: [2, 3] })   PLE/CGC-style
      select: aesm({ specific: 1, shared: 1 }),
    },
  },

  // Multi-task layers over the scenario layers' output (optional: remove, or set to null, and
  // the towers read the last scenario layer directly). One gate per task, shared by every task's
  // stream; \`dim\` is the task embedding's width; \`fixed\` keys here are task names.
  taskLayers: {
    dim: 4,
    layers: 1,
    experts: 4,
    expert: mlp([16]),
    select: all(),
  },

  // One output probability per task (an ONNX output each): tower MLP, Linear(→1), sigmoid.
  // mlp([]) means no hidden layer.
  tasks: {
    ctr: { tower: mlp([16]) },
    cvr: { tower: mlp([16]) },
  },

  // Inference batch norm epsilon (default 1e-3, the TensorFlow reference's).
  batchNorm: { eps: 1e-3 },
});
`;
}

/** `<name>` → `<name>.ts` (a given `.ts` is kept); the model is named after the file. */
export function scaffoldPath(name: string): { file: string; modelName: string } {
  const file = name.endsWith(".ts") ? name : `${name}.ts`;
  return { file, modelName: basename(file, ".ts") };
}

export function registerInit(program: Command, { io }: CommandContext): void {
  program
    .command("init")
    .description("scaffold a model file <name>.ts that compiles as is, with every option commented")
    .argument("<name>", "model name, or a path without .ts (models/ranker → models/ranker.ts)")
    .action((name: string) => {
      const { file, modelName } = scaffoldPath(name);
      if (!MODEL_NAME.test(modelName))
        throw userError("AESM1040", "name", `invalid model name ${JSON.stringify(modelName)}: model names must match ${MODEL_NAME}`);
      // never an overwrite, even in a race; a failed or killed run leaves no file, or a whole one
      writeFileExclusive(file, modelTemplate(modelName, file), () =>
        userError("AESM4006", "", "already exists; aesm init never overwrites a file (choose another name or remove it)", file),
      );
      io.out(`wrote ${file}: model ${JSON.stringify(modelName)}; next: npx aesm inspect ${file}\n`);
    });
}
