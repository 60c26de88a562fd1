// Errors of the checkpoint layer. Every error carries a code (for callers that branch on it) and a
// message that names the file and the problem, so a user can fix a checkpoint without a debugger.

export type ModelErrorCode =
  /** config.json: model_type is not one we serve. */
  | 'CONFIG_UNSUPPORTED_MODEL_TYPE'
  /** config.json: a required field is absent or null. */
  | 'CONFIG_MISSING_FIELD'
  /** config.json: a field has the wrong type or an out-of-range value. */
  | 'CONFIG_INVALID_FIELD'
  | 'CONFIG_INVALID_OVERRIDE'
  /** config.json: a feature the engine does not implement (another activation, ...). */
  | 'CONFIG_UNSUPPORTED_FEATURE'
  /** config.json could not be read or is not JSON. */
  | 'CONFIG_UNREADABLE'
  /** A rope_type we cannot compute frequencies for. */
  | 'ROPE_UNSUPPORTED'
  /** A safetensors file ends before its header or its data does. */
  | 'SAFETENSORS_TRUNCATED'
  /** A safetensors header that is not valid JSON or not the expected shape. */
  | 'SAFETENSORS_BAD_HEADER'
  /** A tensor's data_offsets reach past the end of the file. */
  | 'SAFETENSORS_OUT_OF_BOUNDS'
  /** A dtype string that safetensors does not define, or one we cannot hand to the engine. */
  | 'SAFETENSORS_UNKNOWN_DTYPE'
  /** A tensor's byte length does not match its shape and dtype. */
  | 'SAFETENSORS_SHAPE_MISMATCH'
  /** A write that does not follow the declared layout. */
  | 'SAFETENSORS_WRITE'
  /** A slice request outside the tensor. */
  | 'SAFETENSORS_BAD_SLICE'
  /** A tensor the caller asked for is in no file of the checkpoint. */
  | 'TENSOR_MISSING'
  /** model.safetensors.index.json is missing entries, malformed, or names files that do not exist. */
  | 'CHECKPOINT_BAD_INDEX'
  /** No safetensors file in the folder. */
  | 'CHECKPOINT_NO_WEIGHTS'
  /** A weight has a shape or dtype other than the config implies. */
  | 'CHECKPOINT_BAD_WEIGHT'
  /** make-model was given an unknown preset or bad options. */
  | 'PRESET_UNKNOWN'
  | 'MAKE_MODEL_OPTIONS'
  /** The weights one rank would hold do not fit the memory its device has (checked before allocating). */
  | 'MODEL_TOO_LARGE'
  /** config.json names layers the checkpoint has no tensors for. */
  | 'CHECKPOINT_MISSING_LAYERS'
  /** A weight holds NaN or Inf (--check-weights). */
  | 'CHECKPOINT_NON_FINITE';

export class ModelError extends Error {
  constructor(
    readonly code: ModelErrorCode,
    message: string,
    /** The file the problem is in, where there is one. */
    readonly file?: string,
  ) {
    super(message);
    this.name = 'ModelError';
  }
}
