// Weights: the canonical checkpoint layout, safetensors I/O, validation and seeded init.
// loadWeights / saveWeights are what the CLI and the library entry points call.

import type { ModelSpec } from "../dsl/spec.ts";
import type { Weights } from "./layout.ts";
import { readSafetensorsFile, writeSafetensorsFile } from "./safetensors.ts";
import { validateWeights } from "./validate.ts";

export { MAX_TENSORS, type TensorSlot, type Weights, canonicalLayout, gateSlots, layoutSize, mlpSlots } from "./layout.ts";
export {
  type SafetensorsContents,
  MAX_HEADER_BYTES,
  formatShape,
  readSafetensors,
  readSafetensorsFile,
  writeSafetensors,
  writeSafetensorsFile,
} from "./safetensors.ts";
export { formatFloat, validateWeights } from "./validate.ts";
export {
  GATE_LOGIT_STD,
  MAX_CHECKPOINT_BYTES,
  TOWER_LAYER_GAIN,
  TOWER_LOGIT_STD,
  TOWER_OUT_NORM,
  activationGain,
  calibrateTowers,
  checkCheckpointSize,
  initWeights,
  mixedExperts,
  mixtureGain,
  towerOutNorm,
} from "./init.ts";

/** Read a safetensors checkpoint and check it against the model; every error names `path`. */
export function loadWeights(path: string, spec: ModelSpec): Weights {
  const { tensors } = readSafetensorsFile(path);
  validateWeights(spec, tensors, path);
  return tensors;
}

/** Write weights as an F32 safetensors file, atomically. */
export function saveWeights(path: string, weights: Weights, metadata?: Record<string, string>): void {
  writeSafetensorsFile(path, weights, metadata);
}
