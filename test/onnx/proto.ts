// Test-side views of decoded ONNX protos: protobufjs types every field optional; tests
// that read a model they just built want plain required fields.

import onnxProto from "onnx-proto";
import type { ModelProto } from "../../src/backends/onnx/index.ts";

type DeepRequired<T> = T extends Uint8Array
  ? Uint8Array
  : T extends (infer U)[]
    ? DeepRequired<U>[]
    : T extends object
      ? { [K in keyof T]-?: DeepRequired<NonNullable<T[K]>> }
      : T;

export type StrictModel = DeepRequired<onnxProto.onnx.IModelProto>;
export type StrictGraph = StrictModel["graph"];
export type StrictNode = StrictGraph["node"][number];

/** The model as it is written and read back: every repeated field present, scalars defaulted. */
export function decoded(m: ModelProto): StrictModel {
  const { onnx } = onnxProto;
  return onnx.ModelProto.decode(onnx.ModelProto.encode(m).finish()) as unknown as StrictModel;
}

export const num = (x: unknown): number => (typeof x === "number" ? x : (x as { toNumber(): number }).toNumber());
