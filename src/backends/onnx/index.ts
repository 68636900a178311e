// The ONNX backend: IR ↔ ModelProto, opset-aware in both directions.
export { emitModel, encodeModel, tensorToProto, writeOnnx, type EmitOptions, type ModelProto, type WriteOnnxOptions } from "./emit.ts";
export {
  AUTO_EXTERNAL_THRESHOLD,
  PROTOBUF_LIMIT,
  type ExternalDataOptions,
  type ExternalWriteResult,
  exceedsProtobufLimit,
  readExternalTensorData,
  writeModelWithExternalData,
} from "./external.ts";
export { DEFAULT_OPSET, IR_VERSION_FOR_OPSET, MAX_OPSET, MIN_OPSET, checkOpset, irVersionFor } from "./opsets.ts";
export { decodeModel, readModel, readOnnxFile, tensorFromProto, type ReadOptions } from "./read.ts";
