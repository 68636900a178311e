// Every pass, by id. The order of each optimisation level is in pipeline.ts.

import { cse } from "./cse.ts";
import { dce } from "./dce.ts";
import { foldConstants } from "./fold-constants.ts";
import type { Pass } from "./pass.ts";
import { simplify } from "./simplify.ts";

export const PASSES: Pass[] = [simplify, foldConstants, cse, dce];

export * from "./pass.ts";
