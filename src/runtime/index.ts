// Runtime: onnxruntime-node sessions over compiled models.
export { openSession, providerUnavailableMessage, type ModelSession, type Provider, type SessionOptions } from "./session.ts";
