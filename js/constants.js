// Mirrors nodes/ids.py: node ids and server events of the ZErase pack.
export const NODE_IDS = {
  LOAD: "LoadSingleStreamDiT",
  TRAIN: "ZEraseTrain",
  APPLY: "ApplyErasedWeights",
  COMPARE: "ErasureCompare",
};

export const EVENTS = {
  TRAIN: "zerase.train", // {node, step, total, L_er, L_attn, L_pr, lambda, loss}
};

// Add `callback` after any existing method of the same name (other extensions keep theirs).
export function chainCallback(object, property, callback) {
  const previous = object[property];
  object[property] = function (...args) {
    const result = previous?.apply(this, args);
    callback.apply(this, args);
    return result;
  };
}
