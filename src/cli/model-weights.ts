// Loading a model's weights for a command: a tensor that does not fit the model is
// reported at the line of the model file that declared its part, naming the weights file.

import { AesmError } from "../core/diagnostics.ts";
import { type LoadedModel, locateWeightsError } from "../dsl/load.ts";
import { type Weights, loadWeights } from "../weights/index.ts";

export async function loadModelWeights(model: LoadedModel, weightsPath: string): Promise<Weights> {
  try {
    return loadWeights(weightsPath, model.spec);
  } catch (e) {
    throw e instanceof AesmError ? await locateWeightsError(e, model) : e;
  }
}
