// Every pass, by id. The order of each optimisation level is in pipeline.ts.

import { absorbUnsqueeze } from "./absorb-unsqueeze.ts";
import { additiveMask } from "./additive-mask.ts";
import { argmaxPair } from "./argmax-pair.ts";
import { biasIntoLookup } from "./bias-into-lookup.ts";
import { compactLookups } from "./compact-lookups.ts";
import { contractAsMatmul } from "./contract-as-matmul.ts";
import { cse } from "./cse.ts";
import { dce } from "./dce.ts";
import { foldBatchNorm } from "./fold-batch-norm.ts";
import { flattenConcats } from "./flatten-concats.ts";
import { foldConstants } from "./fold-constants.ts";
import { fuseExperts } from "./fuse-experts.ts";
import { fuseGates } from "./fuse-gates.ts";
import type { Pass } from "./pass.ts";
import { maskPerSet } from "./mask-per-set.ts";
import { mergeContractions } from "./merge-contractions.ts";
import { pruneCalibrated } from "./prune-calibrated.ts";
import { pruneStatic } from "./prune-static.ts";
import { rowConstants } from "./row-constants.ts";
import { selectClosedForm } from "./select-closed-form.ts";
import { simplify } from "./simplify.ts";
import { softmaxFromLog } from "./softmax-from-log.ts";
import { sparseDispatch } from "./sparse-dispatch.ts";
import { stackStreams } from "./stack-streams.ts";
import { streamsBatchFirst } from "./streams-batch-first.ts";
import { streamsBlockDiagonal } from "./streams-block-diagonal.ts";
import { tabulateIndex } from "./tabulate-index.ts";
import { topOneAsArgmax } from "./top-one-as-argmax.ts";
import { toFp16 } from "./to-fp16.ts";

export const PASSES: Pass[] = [
  simplify,
  foldConstants,
  compactLookups,
  cse,
  dce,
  foldBatchNorm,
  fuseExperts,
  fuseGates,
  selectClosedForm,
  additiveMask,
  pruneStatic,
  pruneCalibrated,
  sparseDispatch,
  rowConstants,
  stackStreams,
  absorbUnsqueeze,
  tabulateIndex,
  contractAsMatmul,
  topOneAsArgmax,
  flattenConcats,
  maskPerSet,
  mergeContractions,
  argmaxPair,
  streamsBlockDiagonal,
  biasIntoLookup,
  streamsBatchFirst,
  softmaxFromLog,
  toFp16, // in no level: compile's `precision: "fp16"` runs it after the level's passes
];

export * from "./pass.ts";
